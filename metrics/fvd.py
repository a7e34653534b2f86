"""Frechet Video Distance and Kernel Video Distance on I3D features (StyleGAN-V protocol).

Each clip contributes one 16-frame window (its first 16 frames), resized straight to 224x224
and scaled to [-1, 1] (:func:`metrics.features.i3d.preprocess_i3d`), embedded by I3D into
400-d logits. FVD fits one Gaussian per set; **the covariance divides by N** (``ddof=0``) as
StyleGAN-V does (TATS divides by N - 1: pass ``ddof=1`` to match it). KVD is the unbiased
MMD^2 with the cubic polynomial kernel on the whole sets. The paper protocol ``fvd2048_16f``
uses 2048 real and 2048 fake clips; values are only comparable at equal N.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from common.frozen import KeepsChildrenFrozen, freeze
from metrics.features.i3d import I3D_FRAMES, I3DFeatureExtractor, preprocess_i3d
from metrics.frechet import FrechetDistance, Stats
from metrics.functional.frechet import _frechet_compute, _mean_cov
from metrics.functional.kernel import _kernel_distance_compute
from metrics.functional.video import (
    check_video,
    chunks,
    to_unit_float,
    valid_clip_indices,
)


def _i3d_features(
    metric: FrechetVideoDistance | KernelVideoDistance, videos: Tensor, extractor: nn.Module, num_frames: int, batch_size: int
) -> Tensor | None:
    """Validated (B, T, 3, H, W) videos -> (B', D) float64 features of the usable clips.

    Clips that are too short or carry bad values are counted in ``metric.num_excluded``.
    """
    name = type(metric).__name__
    check_video(videos, name)
    keep = valid_clip_indices(videos, name, num_frames, warn=lambda m: warnings.warn(m, UserWarning))
    metric.num_excluded += videos.shape[0] - len(keep)
    if not keep:
        return None
    clips = videos[keep] if len(keep) < videos.shape[0] else videos  # (B', T, 3, H, W); indexing copies
    parts = []
    for part in chunks(clips.shape[0], batch_size):
        x = preprocess_i3d(to_unit_float(clips[part]), num_frames)  # (b, 3, 16, 224, 224) in [-1, 1]
        parts.append(extractor(x).reshape(x.shape[0], -1).to(torch.float64))  # (b, D)
    return torch.cat(parts)


def _feature_dim(extractor: nn.Module, num_frames: int) -> int:
    """Feature size of ``extractor``: its ``num_features`` or one dummy forward."""
    declared = getattr(extractor, "num_features", None)
    if isinstance(declared, int):
        return declared
    with torch.no_grad():
        dummy = torch.zeros(1, 3, num_frames, 224, 224)
        return int(extractor(dummy).reshape(1, -1).shape[1])


class FrechetVideoDistance(FrechetDistance):
    """FVD: Frechet distance between I3D feature Gaussians of real and generated clips.

    Inputs to ``update(videos, real)``: ``videos`` (B, T, 3, H, W) RGB, ``uint8`` 0-255 or float
    in [0, 1], T >= ``num_frames``; ``real`` says which set they belong to. Clips shorter than
    ``num_frames`` or with out-of-range values are excluded (``num_excluded``) with a warning.

    Args:
        feature_extractor: maps (B, 3, T, 224, 224) in [-1, 1] to (B, D); ``None`` loads the
            I3D TorchScript from the registry (``i3d_fvd``). It is frozen: put in eval mode
            and kept there, its parameters without gradients.
        num_frames: frames per clip fed to the network (16 as in ``fvd2048_16f``).
        ddof: covariance divisor N - ddof; 0 (default) as StyleGAN-V, 1 as TATS.
        reset_real_features: if False, ``reset()`` keeps the real-set statistics.
        extract_batch_size: clips per forward pass of the network.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten())
        >>> fvd = FrechetVideoDistance(feature_extractor=net)
        >>> fvd.update(torch.rand(4, 16, 3, 32, 32), real=True)
        >>> fvd.update(torch.rand(4, 16, 3, 32, 32) * 0.5, real=False)
        >>> bool(fvd.compute() > 0)
        True
    """

    def __init__(
        self,
        feature_extractor: nn.Module | None = None,
        num_frames: int = I3D_FRAMES,
        ddof: int = 0,
        reset_real_features: bool = True,
        extract_batch_size: int = 8,
        **kwargs,
    ) -> None:
        if num_frames < 1 or ddof not in (0, 1) or extract_batch_size < 1:
            raise ValueError(
                f"num_frames must be >= 1, ddof 0 or 1, extract_batch_size >= 1; got "
                f"{num_frames}, {ddof}, {extract_batch_size}"
            )
        # frozen before the dummy forward that may size its features (BatchNorm in train mode needs N > 1)
        extractor = freeze(feature_extractor if feature_extractor is not None else I3DFeatureExtractor())
        super().__init__(extractor, _feature_dim(extractor, num_frames), reset_real_features, **kwargs)
        self.num_frames, self.ddof, self.extract_batch_size = num_frames, ddof, extract_batch_size

    def update(self, videos: Tensor, real: bool) -> None:
        """Add the I3D statistics of ``videos`` (B, T, 3, H, W) to the real or fake set."""
        features = _i3d_features(self, videos, self.feature_extractor, self.num_frames, self.extract_batch_size)
        if features is not None:
            self._add_features(features, real)

    def _distance(self, real: Stats, fake: Stats) -> Tensor:
        return _frechet_compute(*_mean_cov(*real, self.ddof), *_mean_cov(*fake, self.ddof))


class KernelVideoDistance(KeepsChildrenFrozen, Metric):
    """KVD: unbiased MMD^2 (cubic polynomial kernel, gamma = 1/D, coef0 = 1) on I3D features.

    Same inputs, preprocessing and exclusions as :class:`FrechetVideoDistance`. Features are
    kept (``"cat"`` states) because the kernel estimator needs every pair.

    Args:
        feature_extractor: as in :class:`FrechetVideoDistance`.
        num_frames: frames per clip fed to the network.
        reset_real_features: if False, ``reset()`` keeps the real features.
        extract_batch_size: clips per forward pass of the network.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten())
        >>> kvd = KernelVideoDistance(feature_extractor=net)
        >>> kvd.update(torch.rand(4, 16, 3, 32, 32), real=True)
        >>> kvd.update(torch.rand(4, 16, 3, 32, 32) * 0.5, real=False)
        >>> bool(kvd.compute() > 0)
        True
    """

    real_features: list[Tensor]
    fake_features: list[Tensor]
    num_excluded: Tensor

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    frozen_children = ("feature_extractor",)

    def __init__(
        self,
        feature_extractor: nn.Module | None = None,
        num_frames: int = I3D_FRAMES,
        reset_real_features: bool = True,
        extract_batch_size: int = 8,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if num_frames < 1 or extract_batch_size < 1:
            raise ValueError(f"num_frames and extract_batch_size must be >= 1, got {num_frames}, {extract_batch_size}")
        extractor = feature_extractor if feature_extractor is not None else I3DFeatureExtractor()
        self.feature_extractor = freeze(extractor)
        self.num_frames, self.extract_batch_size = num_frames, extract_batch_size
        self.reset_real_features = reset_real_features
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")
        self.add_state("num_excluded", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, videos: Tensor, real: bool) -> None:
        """Store the I3D features of ``videos`` (B, T, 3, H, W) in the real or fake set."""
        features = _i3d_features(self, videos, self.feature_extractor, self.num_frames, self.extract_batch_size)
        if features is not None:
            (self.real_features if real else self.fake_features).append(features)

    def compute(self) -> Tensor:
        """KVD as a float64 scalar (may be slightly negative: unbiased estimator)."""
        return _kernel_distance_compute(dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features))

    def reset(self) -> None:
        """Reset the states; the real features survive when ``reset_real_features=False``."""
        kept = list(self.real_features)
        super().reset()
        if not self.reset_real_features:
            self.real_features = kept
