"""Blocks shared by the NFY networks: pretrained loading with one clear error, token pooling,
per-frame audio windows and the reference mel of the voice profile."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from speechbrain.lobes.models.HifiGAN import mel_spectrogram
from torch import nn

from datamodules.conventions import (
    F_MAX,
    F_MIN,
    HOP_LENGTH,
    MEL_FRAMES_PER_VIDEO_FRAME,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    WIN_LENGTH,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class PretrainedNotFoundError(OSError):
    """A pretrained part (hub id or local path) could not be loaded, typically offline without files."""

    def __init__(self, part: str, source: str, reason: str) -> None:
        self.part, self.source, self.reason = part, source, reason
        super().__init__(
            f"cannot load the pretrained {part} from {source!r}: {reason}. Give a local folder that holds "
            f"its files, or make the hub id {source!r} reachable/cached (HF_HUB_OFFLINE=1 allows only cached "
            f"files), or pass None for a random-init model built from the size arguments."
        )


def load_pretrained(part: str, source: str, loader: Callable[..., T], **kwargs: Any) -> T:
    """Call ``loader(source, **kwargs)`` (a ``from_pretrained``), turning any failure into one clear error.

    Args:
        part: human name of the component (``"Wav2Vec2 audio profile encoder"``), used in the error.
        source: hub id or local path.
        loader: e.g. ``Wav2Vec2Model.from_pretrained``.

    Raises:
        PretrainedNotFoundError: naming ``part`` and ``source`` when the files are absent or unreadable.
    """
    try:
        return loader(source, **kwargs)
    except (OSError, ValueError) as error:  # HF raises OSError/ValueError subclasses
        raise PretrainedNotFoundError(part, source, f"{type(error).__name__}: {error}".split("\n")[0]) from error


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients into ``module`` and keep it in eval mode (pretrained feature extractors)."""
    module.requires_grad_(False)
    module.eval()
    return module


def pool_tokens(features: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Average-pool a sequence (B, T, D) to (B, num_tokens, D) over equal time spans."""
    pooled = nn.functional.adaptive_avg_pool1d(features.transpose(1, 2), num_tokens)  # (B, D, N)
    return pooled.transpose(1, 2)  # (B, N, D)


def reference_mel(wav: torch.Tensor) -> torch.Tensor:
    """Log-mel of a waveform with the conventions of ``datamodules/conventions.py``.

    The settings of speechbrain's 16 kHz LibriTTS HiFi-GAN recipe (magnitude, slaney norm and scale,
    log dynamic range compression), computed with that recipe's own function.

    Args:
        wav: (B, S) float32 in [-1, 1] at 16 kHz.

    Returns:
        (B, 80, S // 256 + 1) float32 log-mel.
    """
    return mel_spectrogram(
        sample_rate=SAMPLE_RATE, hop_length=HOP_LENGTH, win_length=WIN_LENGTH, n_fft=N_FFT, n_mels=N_MELS,
        f_min=F_MIN, f_max=F_MAX, power=1, normalized=False, norm="slaney", mel_scale="slaney",
        compression=True, audio=wav,
    )


FRAME_WINDOW: int = math.ceil(MEL_FRAMES_PER_VIDEO_FRAME)  # 3 mel frames cover one video frame (2.5)


def frame_windows(hidden: torch.Tensor, first_mel: torch.Tensor, num_frames: int,
                  lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Per-video-frame windows of per-mel-frame states: 2.5 mel frames per video frame.

    Frame ``f`` of the window gets mel frames ``first_mel + floor(2.5 f) .. + 2`` (3 frames), clamped
    to the valid frames of each row (so a window past the speech repeats its last state).

    Args:
        hidden: (B, T, D) decoder states, one per mel frame.
        first_mel: (B,) int64 mel index of the window's first video frame.
        num_frames: F video frames in the window.
        lengths: (B,) valid mel frames per row; ``None`` means all T.

    Returns:
        (B, F, 3, D) states.
    """
    b, t, _ = hidden.shape
    offsets = torch.floor(torch.arange(num_frames, device=hidden.device) * MEL_FRAMES_PER_VIDEO_FRAME).long()
    index = first_mel[:, None, None] + offsets[None, :, None] + torch.arange(FRAME_WINDOW, device=hidden.device)
    last = (lengths if lengths is not None else torch.full((b,), t, device=hidden.device)) - 1  # (B,)
    index = torch.minimum(index.clamp(min=0), last.clamp(min=0)[:, None, None])  # (B, F, 3)
    gathered = torch.gather(hidden, 1, index.reshape(b, -1, 1).expand(-1, -1, hidden.shape[-1]))  # (B, F*3, D)
    return gathered.reshape(b, num_frames, FRAME_WINDOW, -1)  # (B, F, 3, D)
