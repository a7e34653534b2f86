"""FID over all frames of a set of videos (torchmetrics ``FrechetInceptionDistance`` underneath).

Every frame of every clip is one sample. The default network is pytorch-fid's Inception-v3
(bilinear resize to 299 without antialias, inputs mapped to [-1, 1]; see
:mod:`metrics.features.inception`), so values match pytorch-fid on the same frames; the
covariance divides by N - 1 and the matrix square root is taken through eigenvalues (as
torchmetrics does). FID is biased by the sample count: compare only at equal N, and below
2048 frames the 2048-d covariance is rank-deficient.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance

from common.frozen import KeepsChildrenFrozen, freeze
from metrics.features.inception import FIDInceptionV3
from metrics.functional.video import (
    check_video,
    chunks,
    to_unit_float,
    valid_clip_indices,
)


class VideoFID(KeepsChildrenFrozen, FrechetInceptionDistance):
    """Frechet Inception Distance between the frames of real and generated videos.

    Inputs to ``update(videos, real)``: ``videos`` (B, T, 3, H, W) RGB, ``uint8`` 0-255 or
    float in [0, 1]. Clips with NaN/inf or out-of-range values are excluded (``num_excluded``)
    with a warning naming the clip index.

    Args:
        feature_extractor: maps (N, 3, H, W) frames in [0, 1] to (N, D) features; ``None`` loads
            :class:`~metrics.features.inception.FIDInceptionV3` from the registry. It is frozen:
            put in eval mode and kept there, its parameters without gradients.
        reset_real_features: if False, ``reset()`` keeps the real-set statistics.
        extract_batch_size: frames per forward pass of the network.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
        >>> fid = VideoFID(feature_extractor=net)
        >>> fid.update(torch.rand(2, 8, 3, 16, 16), real=True)
        >>> fid.update(torch.rand(2, 8, 3, 16, 16) * 0.5, real=False)
        >>> bool(fid.compute() > 0)
        True
    """

    num_excluded: Tensor

    higher_is_better = False
    is_differentiable = False
    full_state_update = False
    plot_lower_bound = 0.0
    frozen_children = ("inception",)  # torchmetrics' name for the feature network

    def __init__(
        self,
        feature_extractor: nn.Module | None = None,
        reset_real_features: bool = True,
        extract_batch_size: int = 64,
        **kwargs,
    ) -> None:
        if extract_batch_size < 1:
            raise ValueError(f"extract_batch_size must be >= 1, got {extract_batch_size}")
        extractor = feature_extractor if feature_extractor is not None else FIDInceptionV3()
        # frozen before torchmetrics runs its dummy forward (BatchNorm in train mode needs N > 1)
        extractor = freeze(extractor)
        # normalize=True: a dummy [0, 1] float frame infers D when the net has no num_features.
        super().__init__(feature=extractor, reset_real_features=reset_real_features, normalize=True, **kwargs)
        self.extract_batch_size = extract_batch_size
        self.add_state("num_excluded", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, videos: Tensor, real: bool) -> None:  # type: ignore[override]
        """Add the features of every frame of ``videos`` (B, T, 3, H, W) to the real or fake set."""
        check_video(videos, "VideoFID")
        keep = valid_clip_indices(videos, "VideoFID", 1, warn=lambda m: warnings.warn(m, UserWarning))
        self.num_excluded += videos.shape[0] - len(keep)
        if not keep:
            return
        if len(keep) < videos.shape[0]:  # indexing copies the batch: only when a clip is dropped
            videos = videos[keep]
        frames = videos.flatten(0, 1)  # (B'*T, 3, H, W)
        for part in chunks(frames.shape[0], self.extract_batch_size):
            super().update(to_unit_float(frames[part]), real)  # (n, 3, H, W) in [0, 1]
