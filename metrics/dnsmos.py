"""DNSMOS metric class (speechmos's ONNX models and scoring underneath); per-clip rows kept."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from metrics.audio_features import AudioInput, PerClipAudioMetric
from metrics.errors import MetricInputError
from metrics.functional.dnsmos import KEYS, _dnsmos_compute, _dnsmos_update


class DNSMOS(PerClipAudioMetric):
    """Predicted MOS (DNSMOS P.835 + P.808), averaged over clips.

    A no-reference estimate of speech quality, useful next to the paper's human MOS.

    Args:
        sample_rate: must be 16000 (the models are trained at 16 kHz).
        personalized: use the personalised P.835 model.
        num_threads: ONNX Runtime intra-op threads.
        kwargs: torchmetrics ``Metric`` options.

    ``update(preds)``: ``(B, S)`` float in [-1, 1] at 16 kHz or a list of ``(S_i,)``.
    ``compute()``: dict ``{"overall", "sig", "bak", "p808"}`` of float64 means;
    :meth:`per_clip`: ``(N, 4)`` in that column order. Silent or broken clips are excluded,
    counted in ``num_excluded`` and named in a warning.

    Raises:
        MetricInputError: ``sample_rate`` is not 16000.
    """

    higher_is_better = True
    plot_lower_bound = 1.0
    plot_upper_bound = 5.0
    metric_name = "DNSMOS"
    keys = KEYS

    def __init__(self, sample_rate: int = 16_000, personalized: bool = False, num_threads: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if sample_rate != 16_000:
            raise MetricInputError("DNSMOS", f"sample_rate={sample_rate}: the DNSMOS models need 16000 Hz audio")
        self.sample_rate = sample_rate
        self.personalized = personalized
        self.num_threads = num_threads

    def update(self, preds: AudioInput) -> None:
        """Score each clip; see the class docstring for shapes."""
        scores, excluded = _dnsmos_update(preds, self.sample_rate, self.personalized, self.num_threads)
        self._record(scores, excluded)

    def compute(self) -> dict[str, Tensor]:
        """Mean overall/sig/bak/p808 MOS over the scored clips (NaN when none was scored)."""
        means = self._mean()
        if means.ndim == 0:  # nothing scored
            return {key: means for key in KEYS}
        return _dnsmos_compute(self.per_clip())
