"""Lip-sync error (LSE-D, LSE-C) with SyncNet, as computed by joonson/syncnet_python.

Prajwal et al. ("A Lip Sync Expert Is All You Need", Wav2Lip, 2020) report SyncNet's mean
distance and confidence as LSE-D and LSE-C. The steps follow ``SyncNetInstance.evaluate``:

1. audio: 13 MFCCs with ``python_speech_features`` defaults (25 ms windows every 10 ms, 26
   filters, c0 replaced by the log frame energy) on int16-scale samples at 16 kHz, so 4 MFCC
   frames per video frame at 25 fps;
2. video: 224x224 face crops, BGR, 0-255; ``T' = min(T, floor(S / 640))`` usable frames and
   ``T' - 5`` windows of 5 frames (the reference stops one window short; kept for parity);
3. embeddings of every 5-frame window and of the matching 20 MFCC frames;
4. distances between video window ``i`` and audio window ``i + k`` for offsets ``k`` in
   ``-15..+15`` (audio embeddings zero-padded at both ends), averaged over windows per offset;
5. LSE-D = min over offsets, LSE-C = median - min, AV offset = 15 - argmin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metrics.errors import MetricInputError

FPS = 25
SAMPLE_RATE = 16_000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MFCC_PER_FRAME = 4
WINDOW = 5  # video frames per SyncNet window (0.2 s)
CROP_SIZE = 224
VSHIFT = 15
MIN_FRAMES = WINDOW + 1  # the reference loop yields no window below this


class SyncScore(NamedTuple):
    """SyncNet's verdict for one clip (floats) or a batch (``(B,)`` tensors)."""

    lse_d: float | Tensor
    lse_c: float | Tensor
    offset: int | Tensor


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def syncnet_mfcc(wav: np.ndarray | Tensor, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """MFCCs as SyncNet's reference computes them.

    Args:
        wav: ``(S,)`` float samples in [-1, 1] at 16 kHz; scaled to int16 values first, since
            the reference reads a 16-bit wav and c0 (log energy) depends on the scale.
        sample_rate: must be 16000.

    Returns:
        float32 ``(13, F)``, ``F`` = number of 10 ms frames.

    Raises:
        MetricInputError: wrong sample rate or fewer samples than one 25 ms window.
    """
    import python_speech_features

    if sample_rate != SAMPLE_RATE:
        raise MetricInputError("LSE", f"sample_rate={sample_rate}: SyncNet needs 16000 Hz audio")
    wav = wav.detach().cpu().double().numpy() if isinstance(wav, Tensor) else np.asarray(wav, np.float64)
    if wav.ndim != 1 or wav.size < 400:
        raise MetricInputError("LSE", f"audio must be (S,) with S >= 400 samples, got shape {wav.shape}")
    pcm = np.clip(np.round(wav * 32768.0), -32768, 32767)  # as FFmpeg's pcm_s16le
    mfcc = python_speech_features.mfcc(pcm, sample_rate)  # (F, 13)
    return torch.from_numpy(mfcc.T.astype(np.float32))  # (13, F)


def to_bgr255(video: Tensor) -> Tensor:
    """``(T, 3, H, W)`` RGB uint8 0-255 or float [0, 1] -> float32 BGR 0-255, same shape."""
    if video.ndim != 4 or video.shape[1] != 3:
        raise MetricInputError("LSE", f"video must be (T, 3, H, W) RGB, got shape {tuple(video.shape)}")
    if video.dtype == torch.uint8:
        frames = video.float()
    else:
        if not torch.isfinite(video).all():
            raise MetricInputError("LSE", "video contains non-finite values")
        if video.min() < 0 or video.max() > 1:
            raise MetricInputError(
                "LSE", f"float video must lie in [0, 1], got [{float(video.min()):.3g}, {float(video.max()):.3g}]"
            )
        frames = video.float() * 255.0
    return frames.flip(1)  # RGB -> BGR


def usable_frames(num_frames: int, num_samples: int, min_frames: int = MIN_FRAMES) -> int:
    """Frames covered by both streams, ``min(T, floor(S / 640))``.

    Raises:
        MetricInputError: fewer than ``min_frames`` (the clip is shorter than SyncNet's window).
    """
    length = min(num_frames, num_samples // SAMPLES_PER_FRAME)
    if length < min_frames:
        raise MetricInputError(
            "LSE",
            f"clip too short for SyncNet: {num_frames} frames and {num_samples} samples give {length} "
            f"usable frames, need at least {min_frames} ({WINDOW}-frame window)",
        )
    return length


# --------------------------------------------------------------------------------------------
# Embeddings and the offset search
# --------------------------------------------------------------------------------------------


def syncnet_embeddings(
    net: nn.Module, crops: Tensor, mfcc: Tensor, length: int, batch_size: int = 20
) -> tuple[Tensor, Tensor]:
    """Embed every 5-frame window and its 20 MFCC frames.

    Args:
        net: a :class:`metrics.syncnet.SyncNet` (``forward_lip``/``forward_aud``).
        crops: ``(T, 3, 224, 224)`` float32 BGR 0-255 face crops.
        mfcc: ``(13, F)`` float32 from :func:`syncnet_mfcc`.
        length: usable frames (:func:`usable_frames`).
        batch_size: windows per forward pass (the reference uses 20).

    Returns:
        ``(N, D)`` video and ``(N, D)`` audio embeddings, ``N = length - 5``.
    """
    device = next(net.parameters()).device
    video_feats, audio_feats = [], []
    starts = range(length - WINDOW)
    for i in range(0, len(starts), batch_size):
        idx = starts[i : i + batch_size]
        lips = torch.stack([crops[v : v + WINDOW] for v in idx])  # (n, 5, 3, 224, 224)
        lips = lips.permute(0, 2, 1, 3, 4)  # (n, 3, 5, 224, 224)
        cc = torch.stack([mfcc[:, v * MFCC_PER_FRAME : v * MFCC_PER_FRAME + 20] for v in idx])  # (n, 13, 20)
        video_feats.append(net.forward_lip(lips.to(device)).float().cpu())
        audio_feats.append(net.forward_aud(cc[:, None].to(device)).float().cpu())
    return torch.cat(video_feats), torch.cat(audio_feats)


def offset_distances(video_emb: Tensor, audio_emb: Tensor, vshift: int = VSHIFT) -> Tensor:
    """Distance of each video window to the audio windows at offsets ``-vshift..+vshift``.

    Audio embeddings are zero-padded by ``vshift`` at both ends, as in the reference, and
    distances use ``F.pairwise_distance`` (its ``eps=1e-6`` included).

    Args:
        video_emb: ``(N, D)``.
        audio_emb: ``(N, D)``.
        vshift: largest offset in frames.

    Returns:
        ``(N, 2 * vshift + 1)`` distances; column ``k`` is offset ``k - vshift``.
    """
    n = video_emb.shape[0]
    padded = F.pad(audio_emb, (0, 0, vshift, vshift))  # (N + 2v, D)
    win = 2 * vshift + 1
    index = torch.arange(n)[:, None] + torch.arange(win)[None]  # (N, 2v+1)
    shifted = padded[index]  # (N, 2v+1, D)
    return F.pairwise_distance(video_emb[:, None].expand_as(shifted), shifted)  # (N, 2v+1), norm over D


def _lse_compute(distances: Tensor, vshift: int = VSHIFT) -> SyncScore:
    """LSE-D, LSE-C and the AV offset from ``(N, 2 * vshift + 1)`` framewise distances."""
    mean_dist = distances.mean(0)  # (2v+1,)
    min_val, min_idx = torch.min(mean_dist, 0)
    conf = torch.median(mean_dist) - min_val
    return SyncScore(float(min_val), float(conf), int(vshift - min_idx))


def _lse_update(
    net: nn.Module,
    crops: Tensor,
    wav: np.ndarray | Tensor,
    vshift: int = VSHIFT,
    min_frames: int = MIN_FRAMES,
    batch_size: int = 20,
) -> SyncScore:
    """Score one clip of face crops against its audio.

    Args:
        net: SyncNet.
        crops: ``(T, 3, 224, 224)`` RGB face crops, uint8 or float in [0, 1].
        wav: ``(S,)`` float audio in [-1, 1] at 16 kHz.
        vshift: largest offset searched, in frames.
        min_frames: shortest clip scored (the original pipeline drops face tracks under 100).
        batch_size: windows per forward pass.

    Raises:
        MetricInputError: crops not 224x224, audio/video too short, silent audio, bad values.
    """
    if crops.ndim != 4 or tuple(crops.shape[-2:]) != (CROP_SIZE, CROP_SIZE):
        raise MetricInputError(
            "LSE", f"face crops must be (T, 3, 224, 224), got {tuple(crops.shape)}; crop with metrics.facecrop"
        )
    wav_t = torch.as_tensor(np.asarray(wav) if not isinstance(wav, Tensor) else wav)
    if not torch.isfinite(wav_t).all():
        raise MetricInputError("LSE", "audio contains non-finite samples")
    if wav_t.abs().max() < 1e-4:
        raise MetricInputError("LSE", "audio is silent (peak below 1e-4)")
    length = usable_frames(crops.shape[0], wav_t.shape[-1], min_frames)
    mfcc = syncnet_mfcc(wav_t)
    video_emb, audio_emb = syncnet_embeddings(net, to_bgr255(crops), mfcc, length, batch_size)
    return _lse_compute(offset_distances(video_emb, audio_emb, vshift), vshift)


def lip_sync_error(
    crops: Tensor | Sequence[Tensor],
    wavs: Tensor | Sequence[Tensor],
    net: nn.Module | None = None,
    vshift: int = VSHIFT,
    min_frames: int = MIN_FRAMES,
) -> SyncScore:
    """Per-clip LSE-D, LSE-C and AV offset.

    Args:
        crops: ``(B, T, 3, 224, 224)`` RGB face crops (uint8, or float in [0, 1]) or a list of
            ``(T_i, 3, 224, 224)``; crop full frames with :func:`metrics.facecrop.crop_faces`.
        wavs: ``(B, S)`` float audio in [-1, 1] at 16 kHz, or a list of ``(S_i,)``.
        net: SyncNet; ``None`` loads the registry's ``syncnet_v2.model``.
        vshift: largest offset searched, in frames (15 in the reference).
        min_frames: shortest clip scored.

    Returns:
        :class:`SyncScore` of ``(B,)`` tensors: LSE-D (float64), LSE-C (float64), offset (int64).

    Raises:
        MetricInputError: for the first clip that cannot be scored.
    """
    if net is None:
        from metrics.syncnet import load_syncnet

        net = load_syncnet()
    if len(crops) != len(wavs):
        raise MetricInputError("LSE", f"got {len(crops)} videos but {len(wavs)} audio clips")
    scores = [_lse_update(net, c, w, vshift, min_frames) for c, w in zip(crops, wavs)]
    return SyncScore(
        torch.tensor([s.lse_d for s in scores], dtype=torch.float64),
        torch.tensor([s.lse_c for s in scores], dtype=torch.float64),
        torch.tensor([s.offset for s in scores], dtype=torch.long),
    )
