"""Frechet Audio Distance metric class (VGGish 128-d patch embeddings, float64 running sums)."""

from __future__ import annotations

import warnings
from copy import deepcopy
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from metrics.audio_features import VGGISH_DIM, AudioInput, VGGishEmbedder
from metrics.functional.fad import _fad_compute, _fad_update


class FrechetAudioDistance(Metric):
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

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0

    def __init__(
        self,
        feature_extractor: nn.Module | None = None,
        feature_dim: int = VGGISH_DIM,
        sample_rate: int = 16_000,
        reset_real_features: bool = True,
        extract_batch_size: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        extractor = feature_extractor if feature_extractor is not None else VGGishEmbedder()
        self.feature_extractor = extractor.eval().requires_grad_(False)
        self.sample_rate, self.reset_real_features = sample_rate, reset_real_features
        self.extract_batch_size = extract_batch_size
        for side in ("real", "fake"):
            self.add_state(f"{side}_features_sum", torch.zeros(feature_dim, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(
                f"{side}_features_cov_sum", torch.zeros(feature_dim, feature_dim, dtype=torch.float64), dist_reduce_fx="sum"
            )
            self.add_state(f"{side}_features_num_samples", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_excluded", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def train(self, mode: bool = True) -> FrechetAudioDistance:
        """Keep the feature extractor frozen in eval mode."""
        super().train(mode)
        self.feature_extractor.eval()
        return self

    def update(self, audio: AudioInput, real: bool) -> None:
        """Add the patch-embedding statistics of ``audio`` to the real or fake set."""
        (total, outer, num), excluded = _fad_update(audio, self.feature_extractor, self.sample_rate, self.extract_batch_size)
        self.num_excluded += len(excluded)
        for index, reason in excluded:
            warnings.warn(f"FAD: clip {index} excluded: {reason}", stacklevel=3)
        if num == 0:
            return
        side = "real" if real else "fake"
        setattr(self, f"{side}_features_sum", getattr(self, f"{side}_features_sum") + total)
        setattr(self, f"{side}_features_cov_sum", getattr(self, f"{side}_features_cov_sum") + outer)
        setattr(self, f"{side}_features_num_samples", getattr(self, f"{side}_features_num_samples") + num)

    def compute(self) -> Tensor:
        """FAD as a float64 scalar."""
        real = (self.real_features_sum, self.real_features_cov_sum, self.real_features_num_samples)
        fake = (self.fake_features_sum, self.fake_features_cov_sum, self.fake_features_num_samples)
        return _fad_compute(real, fake)

    def reset(self) -> None:
        """Reset the states; the real-set statistics survive when ``reset_real_features=False``."""
        keep = {n: deepcopy(getattr(self, n)) for n in self._defaults if n.startswith("real_")}
        super().reset()
        if not self.reset_real_features:
            for name, value in keep.items():
                setattr(self, name, value)
