"""STOI and ESTOI metric classes (pystoi underneath); per-clip scores are kept for the CSV."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from metrics.audio_features import AudioInput, PerClipAudioMetric
from metrics.functional.intelligibility import _stoi_update


class STOI(PerClipAudioMetric):
    """Short-Time Objective Intelligibility, mean over clips (pystoi, Taal et al. 2011).

    Args:
        sample_rate: Hz of the audio given to ``update`` (default 16 kHz).
        num_workers: processes scoring the clips of an update (default: up to 2 cores; 1 scores
            in-process); the pool is kept for later updates.
        kwargs: torchmetrics ``Metric`` options.

    ``update(preds, target)``: ``(B, S)`` float in [-1, 1] (or lists of ``(S_i,)``), equal
    lengths per pair. Clips that cannot be scored are excluded, counted in ``num_excluded``
    and named in a warning. ``compute()``: float64 scalar; :meth:`per_clip`: ``(N,)``.

    Example:
        >>> import torch
        >>> metric = STOI()
        >>> clean = torch.randn(2, 16000).clamp(-1, 1) * 0.5
        >>> metric.update(clean + 0.05 * torch.randn(2, 16000), clean)
        >>> bool(0.0 < metric.compute() < 1.0)
        True
    """

    higher_is_better = True
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0
    metric_name = "STOI"

    def __init__(self, sample_rate: int = 16_000, num_workers: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sample_rate = sample_rate
        self.num_workers = num_workers

    def update(self, preds: AudioInput, target: AudioInput) -> None:
        """Score each pair of clips; see the class docstring for shapes."""
        scores, excluded = _stoi_update(preds, target, self.sample_rate, extended=False, num_workers=self.num_workers)
        self._record(scores, excluded)

    def compute(self) -> Tensor:
        """Mean score over the scored clips (NaN with a warning when none was scored)."""
        return self._mean()


class ESTOI(PerClipAudioMetric):
    """Extended STOI (Jensen & Taal 2016; pystoi ``extended=True``), mean over clips.

    Same arguments, inputs and states as :class:`STOI`; scores lie in about [-0.1, 1].
    """

    higher_is_better = True
    plot_lower_bound = -0.1
    plot_upper_bound = 1.0
    metric_name = "ESTOI"

    def __init__(self, sample_rate: int = 16_000, num_workers: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sample_rate = sample_rate
        self.num_workers = num_workers

    def update(self, preds: AudioInput, target: AudioInput) -> None:
        """Score each pair of clips; see :class:`STOI` for shapes."""
        scores, excluded = _stoi_update(preds, target, self.sample_rate, extended=True, num_workers=self.num_workers)
        self._record(scores, excluded)

    def compute(self) -> Tensor:
        """Mean score over the scored clips (NaN with a warning when none was scored)."""
        return self._mean()
