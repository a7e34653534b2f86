"""Per-clip reference metrics of generated videos against ground truth: PSNR, SSIM, LPIPS.

Each is computed per frame, averaged over the frames of a clip, then averaged over clips
(as talking-face papers report them; see :mod:`metrics.functional.image_quality`). The
per-clip values stay available through :meth:`per_clip` (``"cat"`` state) for per-clip CSVs.

Inputs to ``update(preds, target)``: (B, T, 3, H, W) RGB, ``uint8`` 0-255 or float in [0, 1],
equal shapes (a mismatch raises :class:`~metrics.errors.MetricInputError`). A pair with
NaN/inf or out-of-range values is excluded (``num_excluded``) with a warning naming its index.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Union

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from common.frozen import KeepsChildrenFrozen, freeze
from metrics.functional.image_quality import (
    PSNR_CAP_DB,
    _check_pair,
    _pair_problem,
    frame_psnr,
    lpips_network,
    video_lpips,
    video_ssim,
)

_PerClipMetric = Union["VideoPSNR", "VideoSSIM", "VideoLPIPS"]


def _add_clip_states(metric: Metric) -> None:
    metric.add_state("clip_scores", [], dist_reduce_fx="cat")
    metric.add_state("num_excluded", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")


def _valid_pairs(metric: _PerClipMetric, preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor] | None:
    """The valid pairs of (B, T, 3, H, W) ``preds``/``target`` (``None`` if none); count and warn the others."""
    name = type(metric).__name__
    _check_pair(preds, target, name)
    keep = []
    for index in range(preds.shape[0]):
        problem = _pair_problem(preds[index], target[index])
        if problem is None:
            keep.append(index)
        else:
            warnings.warn(f"{name}: clip {index} of the batch excluded: {problem}", UserWarning)
    metric.num_excluded += preds.shape[0] - len(keep)
    if not keep:
        return None
    if len(keep) < preds.shape[0]:  # indexing copies: only when a clip is dropped
        preds, target = preds[keep], target[keep]
    return preds, target


def _update_clips(metric: _PerClipMetric, preds: Tensor, target: Tensor, score_fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Score the valid pairs of (B, T, 3, H, W) ``preds``/``target``; count and warn the others."""
    pairs = _valid_pairs(metric, preds, target)
    if pairs is not None:
        metric.clip_scores.append(score_fn(*pairs))  # (B',) float64


def _mean_of_clips(metric: _PerClipMetric) -> Tensor:
    # a list of per-update tensors, or one tensor once torchmetrics has synchronised the processes
    scores = metric.clip_scores if isinstance(metric.clip_scores, Tensor) else (
        dim_zero_cat(metric.clip_scores) if metric.clip_scores else torch.zeros(0))
    if scores.numel() == 0:
        raise RuntimeError(f"{type(metric).__name__}.compute() called before any clip was scored")
    return scores.mean()


class VideoPSNR(Metric):
    """Mean over clips of the per-clip mean of per-frame PSNR (dB, data range 1 after scaling).

    Infinite PSNR convention: a frame identical to its target has PSNR ``inf``. The mean that
    :meth:`compute` returns caps every frame at ``max_db`` first (100 dB by default, the cap of
    libvpx's ``MAX_PSNR`` and of x264), so one identical frame adds 100 dB to its clip's mean
    instead of making every mean ``inf``. :meth:`per_clip` keeps the uncapped values.

    Args:
        max_db: per-frame cap of the aggregate in dB; ``None`` averages uncapped values (then
            one identical frame makes the result ``inf``).

    Example:
        >>> import torch
        >>> metric = VideoPSNR()
        >>> x = torch.full((2, 3, 3, 16, 16), 0.5)
        >>> metric.update(x + 0.1, x)
        >>> metric.compute().round(decimals=2)
        tensor(20., dtype=torch.float64)
    """

    clip_scores: list[Tensor]
    capped_scores: list[Tensor]
    num_excluded: Tensor

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0

    def __init__(self, max_db: float | None = PSNR_CAP_DB, **kwargs) -> None:
        super().__init__(**kwargs)
        if max_db is not None and not (isinstance(max_db, (int, float)) and 0 < max_db < math.inf):
            raise ValueError(f"max_db must be a positive number of dB or None, got {max_db!r}")
        self.max_db = max_db
        _add_clip_states(self)
        self.add_state("capped_scores", [], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add the per-clip PSNR of ``preds`` against ``target`` (B, T, 3, H, W)."""
        pairs = _valid_pairs(self, preds, target)
        if pairs is None:
            return
        frames = frame_psnr(*pairs)  # (B', T) float64
        self.clip_scores.append(frames.mean(dim=1))
        self.capped_scores.append((frames if self.max_db is None else frames.clamp(max=self.max_db)).mean(dim=1))

    def compute(self) -> Tensor:
        """Mean over clips of the capped per-clip PSNR (float64 scalar)."""
        _mean_of_clips(self)  # raises before any clip
        return dim_zero_cat(self.capped_scores).mean()

    def per_clip(self, capped: bool = False) -> Tensor:
        """(N,) float64 per-clip PSNR, in update order (rank order after a DDP sync).

        Args:
            capped: the values :meth:`compute` averages (frames capped at ``max_db``) instead
                of the plain per-clip means (``inf`` for a clip with an identical frame).
        """
        return dim_zero_cat(self.capped_scores if capped else self.clip_scores)


class VideoSSIM(Metric):
    """Mean over clips of the per-clip mean of per-frame SSIM (gaussian 11x11, sigma 1.5).

    Example:
        >>> import torch
        >>> metric = VideoSSIM()
        >>> x = torch.rand(2, 3, 3, 16, 16)
        >>> metric.update(x, x)
        >>> metric.compute().round(decimals=4)
        tensor(1., dtype=torch.float64)
    """

    clip_scores: list[Tensor]
    num_excluded: Tensor

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = -1.0
    plot_upper_bound = 1.0

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        _add_clip_states(self)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add the per-clip SSIM of ``preds`` against ``target`` (B, T, 3, H, W)."""
        _update_clips(self, preds, target, video_ssim)

    def compute(self) -> Tensor:
        """Mean SSIM over clips (float64 scalar)."""
        return _mean_of_clips(self)

    def per_clip(self) -> Tensor:
        """(N,) float64 per-clip SSIM, in update order (rank order after a DDP sync)."""
        return dim_zero_cat(self.clip_scores)


class VideoLPIPS(KeepsChildrenFrozen, Metric):
    """Mean over clips of the per-clip mean of per-frame LPIPS (v0.1, AlexNet, inputs [-1, 1]).

    Args:
        net: LPIPS network taking two (N, 3, H, W) batches in [-1, 1] and returning (N, 1, 1, 1);
            ``None`` builds :func:`~metrics.functional.image_quality.lpips_network` (AlexNet
            backbone from the registry entry ``alexnet_lpips``).
        batch_size: frames per forward pass.
    """

    clip_scores: list[Tensor]
    num_excluded: Tensor

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0
    frozen_children = ("net",)  # dropout in its linear heads

    def __init__(self, net: nn.Module | None = None, batch_size: int = 32, **kwargs) -> None:
        super().__init__(**kwargs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.net = freeze(net if net is not None else lpips_network())
        self.batch_size = batch_size
        _add_clip_states(self)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add the per-clip LPIPS of ``preds`` against ``target`` (B, T, 3, H, W)."""
        _update_clips(self, preds, target, lambda p, g: video_lpips(p, g, self.net, self.batch_size))

    def compute(self) -> Tensor:
        """Mean LPIPS over clips (float64 scalar)."""
        return _mean_of_clips(self)

    def per_clip(self) -> Tensor:
        """(N,) float64 per-clip LPIPS, in update order (rank order after a DDP sync)."""
        return dim_zero_cat(self.clip_scores)
