"""Frechet Audio Distance metric class (VGGish 128-d patch embeddings, float64 running sums)."""

from __future__ import annotations

import warnings
from typing import Any

from torch import Tensor, nn

from metrics.audio_features import VGGISH_DIM, AudioInput, VGGishEmbedder
from metrics.frechet import FrechetDistance, Stats
from metrics.functional.fad import _fad_compute, _fad_update


class FrechetAudioDistance(FrechetDistance):
    """FAD: Frechet distance between Gaussians of VGGish patch embeddings of real and
    generated audio (no final ReLU, no PCA; all 0.96 s patches pooled; covariance N - 1).

    ``update(audio, real)``: ``(B, S)`` float in [-1, 1] at ``sample_rate`` or a list of
    ``(S_i,)``; ``real`` says which set. Clips shorter than one patch (0.985 s), silent or
    broken are excluded, counted in ``num_excluded`` and named in a warning.

    Args:
        feature_extractor: ``(P, 1, 96, 64)`` log-mel patches -> ``(P, D)``; frozen VGGish with
            the registry's ``vggish`` weights by default.
        feature_dim: ``D`` of ``feature_extractor`` (128 for VGGish).
        sample_rate: Hz of the audio given to ``update``.
        reset_real_features: if False, ``reset()`` keeps the real-set statistics.
        extract_batch_size: patches per forward pass.
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(96 * 64, 8))
        >>> fad = FrechetAudioDistance(feature_extractor=net, feature_dim=8)
        >>> fad.update((0.1 * torch.randn(2, 16000 * 3)).clamp(-1, 1), real=True)
        >>> fad.update((0.3 * torch.randn(2, 16000 * 3)).clamp(-1, 1), real=False)
        >>> bool(fad.compute() > 0)
        True
    """

    def __init__(
        self,
        feature_extractor: nn.Module | None = None,
        feature_dim: int = VGGISH_DIM,
        sample_rate: int = 16_000,
        reset_real_features: bool = True,
        extract_batch_size: int = 64,
        **kwargs: Any,
    ) -> None:
        extractor = feature_extractor if feature_extractor is not None else VGGishEmbedder()
        super().__init__(extractor, feature_dim, reset_real_features, **kwargs)
        self.sample_rate, self.extract_batch_size = sample_rate, extract_batch_size

    def update(self, audio: AudioInput, real: bool) -> None:
        """Add the patch-embedding statistics of ``audio`` to the real or fake set."""
        (total, outer, num), excluded = _fad_update(audio, self.feature_extractor, self.sample_rate, self.extract_batch_size)
        self.num_excluded += len(excluded)
        for index, reason in excluded:
            warnings.warn(f"FAD: clip {index} excluded: {reason}", stacklevel=3)
        if num:
            self._add_stats((total, outer, num), real)

    def _distance(self, real: Stats, fake: Stats) -> Tensor:
        return _fad_compute(real, fake)
