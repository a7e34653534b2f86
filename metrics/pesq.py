"""Wide-band PESQ metric class (``pesq`` package underneath); per-clip scores are kept."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from metrics.audio_features import AudioInput, PerClipAudioMetric
from metrics.errors import MetricInputError
from metrics.functional.pesq import _pesq_update


class WidebandPESQ(PerClipAudioMetric):
    """Wide-band PESQ (ITU-T P.862.2), mean MOS-LQO over clips.

    Args:
        sample_rate: must be 16000 (wide-band mode).
        num_workers: processes used for batches of 2+ clips (default: up to 2 cores; 1 scores
            in-process).
        kwargs: torchmetrics ``Metric`` options.

    ``update(preds, target)``: ``(B, S)`` float in [-1, 1] at 16 kHz (or lists of
    ``(S_i,)``), equal lengths per pair. Silent clips (``NoUtterancesError``) and other
    unscorable clips are excluded, counted in ``num_excluded`` and named in a warning.

    Raises:
        MetricInputError: ``sample_rate`` is not 16000.

    Example:
        >>> import torch
        >>> metric = WidebandPESQ()
        >>> clean = torch.sin(torch.arange(16000) * 0.05)[None] * 0.5
        >>> metric.update(clean, clean)
        >>> round(float(metric.compute()), 3)
        4.644
    """

    higher_is_better = True
    plot_lower_bound = 1.0
    plot_upper_bound = 4.644
    metric_name = "PESQ"

    def __init__(self, sample_rate: int = 16_000, num_workers: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if sample_rate != 16_000:
            raise MetricInputError("PESQ", f"sample_rate={sample_rate}: wide-band PESQ needs 16000 Hz audio")
        self.sample_rate = sample_rate
        self.num_workers = num_workers

    def update(self, preds: AudioInput, target: AudioInput) -> None:
        """Score each pair of clips; see the class docstring for shapes."""
        scores, excluded = _pesq_update(preds, target, self.sample_rate, self.num_workers)
        self._record(scores, excluded)

    def compute(self) -> Tensor:
        """Mean score over the scored clips (NaN with a warning when none was scored)."""
        return self._mean()
