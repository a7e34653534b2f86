"""Seeded speech-like audio pairs, shared by the STOI tests and the worker-pool tests."""

from __future__ import annotations

import torch


def speechlike_pair(batch: int, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Amplitude-modulated noise (speech-like envelope) and a noisier copy: (noisy, clean), (B, S) in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16_000
    envelope = 0.5 * (1 + torch.sin(2 * torch.pi * 3.0 * t)) + 0.05  # (S,)
    clean = 0.3 * envelope * torch.randn(batch, samples, generator=gen)  # (B, S)
    noisy = clean + 0.05 * torch.randn(batch, samples, generator=gen)  # (B, S)
    return noisy.clamp(-1, 1), clean.clamp(-1, 1)
