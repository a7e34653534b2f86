"""Seeded video pairs and a real clip with degraded copies, shared by the PSNR/SSIM/LPIPS tests."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF


def video_pair(seed: int, b: int = 2, t: int = 3, size: int = 24, noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(preds, target) float in [0, 1], (B, T, 3, size, size): target plus clipped noise."""
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(b, t, 3, size, size, generator=g)
    preds = (target + noise * torch.randn(target.shape, generator=g)).clamp(0, 1)
    return preds, target


@functools.lru_cache(maxsize=2)
def _decode_small(path: Path) -> torch.Tensor:
    """All frames of ``path``, 4x4-block averaged: (T, 3, H/4, W/4) float [0, 1].

    The whole clip is decoded (the shortest one, 80 frames): stopping the threaded decoder
    early inside ``read_video(end=...)`` was seen to hang on a loaded machine.
    """
    from datamodules.media import iter_video_frames

    def shrink(image: np.ndarray) -> np.ndarray:
        h, w, _ = image.shape
        return image.reshape(h // 4, 4, w // 4, 4, 3).mean(axis=(1, 3), dtype=np.float32)

    frames = np.stack(list(iter_video_frames(path, transform=shrink)))  # (T, H/4, W/4, 3)
    return torch.from_numpy(frames).permute(0, 3, 1, 2) / 255.0


def real_clip(shared_data: Path, frames: int = 6) -> torch.Tensor:
    """(1, T, 3, 128, 128) float [0, 1]: the first frames of a real talking-face clip."""
    return _decode_small(shared_data / "clips" / "kid_1.mp4")[:frames].clamp(0, 1).unsqueeze(0)


def degraded(clip: torch.Tensor, kind: str, strength: float) -> torch.Tensor:
    """``clip`` (1, T, 3, H, W) with gaussian noise (std ``strength``) or gaussian blur (sigma)."""
    if kind == "noise":
        g = torch.Generator().manual_seed(7)
        return (clip + strength * torch.randn(clip.shape, generator=g)).clamp(0, 1)
    kernel = 2 * int(3 * strength) + 1
    return TF.gaussian_blur(clip[0], [kernel, kernel], [strength, strength]).unsqueeze(0)
