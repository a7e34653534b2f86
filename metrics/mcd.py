"""Mel cepstral distortion classes: the standard MCD and the paper-compatible MFCC distance.

See :mod:`metrics.functional.mcd` for both definitions and how they relate to pymcd and
mel-cepstral-distance. Report :class:`MelCepstralDistortion`; use :class:`PaperMFCCDistance`
only next to the paper's numbers.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from metrics.audio_features import AudioInput, PerClipAudioMetric
from metrics.functional.mcd import Align, _mcd_update


class MelCepstralDistortion(PerClipAudioMetric):
    """Standard MCD in dB (Kubichek; Kominek & Black): WORLD mel-cepstra, ``c_0`` excluded,
    ``(10/ln10) * sqrt(2 * sum (c_d - c'_d)^2)`` over DTW-aligned frames, mean over clips.

    Args:
        sample_rate: Hz of the audio given to ``update``.
        align: ``"dtw"`` (default) or ``"pad"``.
        kwargs: torchmetrics ``Metric`` options.

    ``update(preds, target)``: ``(B, S)`` float in [-1, 1] or lists of ``(S_i,)`` (lengths
    may differ). ``compute()``: float64 mean dB; :meth:`per_clip`: ``(N,)``.
    """

    higher_is_better = False
    plot_lower_bound = 0.0
    plot_upper_bound = 15.0
    metric_name = "MCD"

    def __init__(self, sample_rate: int = 16_000, align: Align = "dtw", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if align not in ("dtw", "pad"):
            raise ValueError(f"{self.metric_name}: align must be 'dtw' or 'pad', got {align!r}")
        self.sample_rate = sample_rate
        self.align = align

    def update(self, preds: AudioInput, target: AudioInput) -> None:
        """Score each pair of clips; see the class docstring for shapes."""
        scores, excluded = _mcd_update(preds, target, self.sample_rate, False, self.align)
        self._record(scores, excluded)

    def compute(self) -> Tensor:
        """Mean over the scored clips (NaN with a warning when none was scored)."""
        return self._mean()


class PaperMFCCDistance(PerClipAudioMetric):
    """The paper's "MCD" convention: plain Euclidean distance between librosa MFCCs (dB power
    mel over 128 bands, orthonormal DCT, 13 coefficients with ``c_0``, no dB factor) over
    DTW-aligned frames, mean over clips. About 8-13x the standard MCD; for the paper's tables
    only.

    Args:
        sample_rate: Hz of the audio given to ``update``.
        n_mfcc: librosa MFCCs kept (13).
        kwargs: torchmetrics ``Metric`` options.
    """

    higher_is_better = False
    plot_lower_bound = 0.0
    plot_upper_bound = 150.0
    metric_name = "PaperMFCCDistance"

    def __init__(self, sample_rate: int = 16_000, n_mfcc: int = 13, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sample_rate = sample_rate
        self.n_mfcc = n_mfcc

    def update(self, preds: AudioInput, target: AudioInput) -> None:
        """Score each pair of clips; shapes as :class:`MelCepstralDistortion`."""
        scores, excluded = _mcd_update(preds, target, self.sample_rate, True, "dtw", self.n_mfcc)
        self._record(scores, excluded)

    def compute(self) -> Tensor:
        """Mean over the scored clips (NaN with a warning when none was scored)."""
        return self._mean()
