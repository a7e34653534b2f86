"""Input handling shared by the video metrics: dtype/range checks and per-clip validation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from metrics.errors import MetricInputError

log = logging.getLogger(__name__)


def check_video(video: Tensor, metric: str, name: str = "videos") -> None:
    """Raise :class:`MetricInputError` unless ``video`` is a ``(B, T, 3, H, W)`` RGB batch.

    Accepted: ``uint8`` 0-255, or a floating dtype with values in [0, 1].
    """
    if not isinstance(video, Tensor) or video.dim() != 5 or video.shape[2] != 3:
        shape = tuple(video.shape) if isinstance(video, Tensor) else type(video).__name__
        raise MetricInputError(metric, f"{name} must be a (B, T, 3, H, W) RGB tensor, got {shape}")
    if video.dtype != torch.uint8 and not video.is_floating_point():
        raise MetricInputError(metric, f"{name} must be uint8 0-255 or float in [0, 1], got {video.dtype}")


def clip_problem(clip: Tensor, min_frames: int = 1) -> str | None:
    """Why one ``(T, 3, H, W)`` clip cannot be scored, or ``None`` when it can."""
    if clip.shape[0] < min_frames:
        return f"has {clip.shape[0]} frames, needs at least {min_frames}"
    if clip.is_floating_point():
        if not torch.isfinite(clip).all():
            return "contains NaN or inf values"
        low, high = clip.min().item(), clip.max().item()
        if low < 0.0 or high > 1.0:
            return f"float values must lie in [0, 1], got [{low:.4g}, {high:.4g}] (pass uint8 for 0-255)"
    return None


def to_unit_float(video: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``uint8`` 0-255 or float [0, 1] -> float in [0, 1] (same shape)."""
    if video.dtype == torch.uint8:
        return video.to(dtype) / 255.0
    return video.to(dtype)


def valid_clip_indices(
    videos: Tensor, metric: str, min_frames: int, warn: Callable[[str], None] | None = None
) -> list[int]:
    """Indices of the clips of ``videos`` (B, T, 3, H, W) that can be scored; warns for the rest."""
    keep = []
    for index in range(videos.shape[0]):
        problem = clip_problem(videos[index], min_frames)
        if problem is None:
            keep.append(index)
        else:
            message = f"{metric}: clip {index} of the batch excluded: {problem}"
            (warn or log.warning)(message)
    return keep


def chunks(total: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` items covering ``range(total)``."""
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))
