"""Seeded video pairs and a real clip with degraded copies, shared by the PSNR/SSIM/LPIPS tests."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision.transforms.functional as TF


def video_pair(seed: int, b: int = 2, t: int = 3, size: int = 24, noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(preds, target) float in [0, 1], (B, T, 3, size, size): target plus clipped noise."""
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(b, t, 3, size, size, generator=g)
    preds = (target + noise * torch.randn(target.shape, generator=g)).clamp(0, 1)
    return preds, target


def real_clip(shared_data: Path, frames: int = 6, size: int = 128) -> torch.Tensor:
    """(1, T, 3, size, size) float [0, 1]: the first frames of a real talking-face clip."""
    from datamodules.media import read_video

    video = torch.from_numpy(read_video(shared_data / "clips" / "man.mp4", end=frames / 25))  # (T, H, W, 3)
    video = video[:frames].permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W)
    return TF.resize(video, [size, size], antialias=True).clamp(0, 1).unsqueeze(0)


def degraded(clip: torch.Tensor, kind: str, strength: float) -> torch.Tensor:
    """``clip`` (1, T, 3, H, W) with gaussian noise (std ``strength``) or gaussian blur (sigma)."""
    if kind == "noise":
        g = torch.Generator().manual_seed(7)
        return (clip + strength * torch.randn(clip.shape, generator=g)).clamp(0, 1)
    kernel = 2 * int(3 * strength) + 1
    return TF.gaussian_blur(clip[0], [kernel, kernel], [strength, strength]).unsqueeze(0)
