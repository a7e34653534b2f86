"""Frechet Video Motion Distance (FVMD) with an injectable point tracker.

Every clip is resized to 256x256 (bilinear, antialiased as torchvision's ``Resize``), cut into
all 16-frame windows with stride 1 (the official dataset sampling; ``window_stride``), each window tracked by
PIPs++ on a 20x20 grid, and turned into a 1024-d motion feature (velocity and
"acceleration" orientation histograms; see :mod:`metrics.functional.fvmd`). Samples of the
two Gaussians are windows, not clips. The official code runs on CUDA only; this runs on any
device.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metrics.features.pips import PIPS_SIZE, PipsTracker
from metrics.frechet import FrechetDistance, Stats
from metrics.functional.fvmd import FVMD_FRAMES, _fvmd_compute, _fvmd_update
from metrics.functional.video import (
    check_video,
    chunks,
    to_unit_float,
    valid_clip_indices,
)

FEATURE_DIM = 1024


def fvmd_windows(clip: Tensor, window: int = FVMD_FRAMES, stride: int = 1, size: int = PIPS_SIZE) -> Tensor:
    """(T, 3, H, W) clip in [0, 1] -> (num_windows, window, 3, size, size) float 0-255."""
    frames = F.interpolate(clip.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    frames = (frames * 255.0).clamp(0, 255)  # (T, 3, S, S), PIPs++ takes 0-255
    return frames.unfold(0, window, stride).permute(0, 4, 1, 2, 3)  # (N_w, window, 3, S, S)


class FrechetVideoMotionDistance(FrechetDistance):
    """FVMD between real and generated videos.

    Inputs to ``update(videos, real)``: ``videos`` (B, T, 3, H, W) RGB, ``uint8`` 0-255 or float
    in [0, 1], T >= 16. Shorter or corrupt clips are excluded (``num_excluded``) with a warning.

    Args:
        tracker: maps (W, 16, 3, 256, 256) windows with values 0-255 to (W, 16, 400, 2) point
            tracks; ``None`` builds :class:`~metrics.features.pips.PipsTracker` (needs the PIPs++
            code and weights, see that module). It is frozen: put in eval mode and kept there,
            its parameters without gradients.
        window_stride: frames between consecutive 16-frame windows: 1 as the official code (its
            published values need it); 16 tracks disjoint windows only, about 16x faster, an
            approximation that does not reproduce published FVMD values.
        acceleration_from: ``"positions"`` (official behaviour, default) or ``"velocity"``.
        reset_real_features: if False, ``reset()`` keeps the real-set statistics.
        track_batch_size: windows per tracker call.

    Example:
        >>> import torch
        >>> from metrics.features.pips import grid_points
        >>> class Still(torch.nn.Module):  # a tracker that sees brightness as motion
        ...     def forward(self, w):
        ...         shift = w.mean(dim=(2, 3, 4))[..., None, None] / 8  # (W, 16, 1, 1)
        ...         return grid_points(400, 256, 256) + shift
        >>> fvmd = FrechetVideoMotionDistance(tracker=Still())
        >>> fvmd.update(torch.rand(1, 18, 3, 32, 32), real=True)
        >>> fvmd.update(torch.rand(1, 18, 3, 32, 32) ** 2, real=False)
        >>> bool(fvmd.compute() > 0)
        True
    """

    def __init__(
        self,
        tracker: nn.Module | None = None,
        window_stride: int = 1,
        acceleration_from: str = "positions",
        reset_real_features: bool = True,
        track_batch_size: int = 4,
        **kwargs,
    ) -> None:
        if window_stride < 1 or track_batch_size < 1 or acceleration_from not in ("positions", "velocity"):
            raise ValueError(
                f"window_stride and track_batch_size must be >= 1 and acceleration_from 'positions' or "
                f"'velocity'; got {window_stride}, {track_batch_size}, {acceleration_from!r}"
            )
        super().__init__(tracker if tracker is not None else PipsTracker(), FEATURE_DIM, reset_real_features, **kwargs)
        self.window_stride, self.acceleration_from = window_stride, acceleration_from
        self.track_batch_size = track_batch_size

    @property
    def tracker(self) -> nn.Module:
        """The frozen point tracker (the base class's ``feature_extractor``)."""
        return self.feature_extractor

    def update(self, videos: Tensor, real: bool) -> None:
        """Track every 16-frame window of ``videos`` (B, T, 3, H, W) and add its motion features."""
        check_video(videos, "FrechetVideoMotionDistance")
        keep = valid_clip_indices(
            videos, "FrechetVideoMotionDistance", FVMD_FRAMES, warn=lambda m: warnings.warn(m, UserWarning)
        )
        self.num_excluded += videos.shape[0] - len(keep)
        for index in keep:
            windows = fvmd_windows(to_unit_float(videos[index]), stride=self.window_stride)  # (N_w, 16, 3, 256, 256)
            for part in chunks(windows.shape[0], self.track_batch_size):
                with torch.no_grad():
                    tracks = self.tracker(windows[part])  # (w, 16, 400, 2)
                self._add_stats(_fvmd_update(tracks, self.acceleration_from), real)

    def _distance(self, real: Stats, fake: Stats) -> Tensor:
        return _fvmd_compute(real, fake)
