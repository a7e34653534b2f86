"""Mel cepstral distortion (standard) and the paper-compatible MFCC distance.

Two numbers share the name "MCD" in the literature; they differ by an order of magnitude, so
they get different names here:

**Standard MCD** (:func:`mel_cepstral_distortion`; Kubichek 1993, Kominek & Black 2008):
mel-cepstra ``c_1..c_D`` of the WORLD spectral envelope (``pyworld`` CheapTrick, 5 ms frames,
``pysptk.mcep``, frequency warping ``alpha`` for the sample rate), frames aligned by exact DTW
on ``c_1..c_D``, and per aligned frame ``(10 / ln 10) * sqrt(2 * sum_{d>=1} (c_d - c'_d)^2)``,
averaged over the path. ``c_0`` (energy) is excluded. Typical values: 4-10 dB.

**Paper MFCC distance** (:func:`paper_mfcc_distance`): plain Euclidean distance between
librosa-style MFCCs (``librosa.feature.mfcc``: power mel spectrogram over 128 mels in dB,
orthonormal DCT-II, ``c_0`` included, no ``10/ln10*sqrt(2)`` factor), averaged over DTW-aligned
frames. This is the convention whose values (44-140) the paper reports; use it only to
compare with the paper's tables.

How the reference packages differ (and how ours is configured to equal them, see the tests):

- ``mel-cepstral-distance`` (``compare_mfccs(s, D)``): distance over ``c_s..c_{D-1}``, DTW on
  the same coefficients, **no** ``10/ln10*sqrt(2)`` factor: ours with ``first=s``,
  ``scale=1``.
- ``pymcd`` (``Calculate_MCD``): WORLD + ``pysptk.mcep`` (order 13, ``alpha=0.65`` at 22.05 kHz),
  DTW (``fastdtw``, radius 1: approximate) on ``c_1..``, but the distance **includes**
  ``c_0``, with the factor: ours with ``first=0, align_first=1`` (and ``align="pad"`` for its
  ``"plain"`` mode).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from metrics.audio_features import (
    AudioInput,
    Excluded,
    check_sample_rate,
    pair_problem,
    paired_clips,
    raise_first,
    score_each,
    split_valid,
)
from metrics.errors import MetricInputError

MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)  # 6.1418...: dB per unit cepstral distance
FRAME_PERIOD_MS = 5.0
MIN_SAMPLES = 1_600
"""0.1 s at 16 kHz: a handful of frames at the very least."""
Align = Literal["dtw", "pad"]


# --------------------------------------------------------------------------------------------
# Front ends
# --------------------------------------------------------------------------------------------


def warping_alpha(sample_rate: int) -> float:
    """All-pass warping constant approximating the mel scale at ``sample_rate`` (0.41 at 16 kHz)."""
    import pysptk

    return float(pysptk.util.mcepalpha(sample_rate))


def mel_cepstrum(
    wav: np.ndarray,
    sample_rate: int = 16_000,
    order: int = 13,
    alpha: float | None = None,
    fft_size: int = 512,
    frame_period: float = FRAME_PERIOD_MS,
) -> np.ndarray:
    """Mel-cepstrum of the WORLD spectral envelope (the front end of standard MCD and pymcd).

    Args:
        wav: ``(S,)`` float samples in [-1, 1].
        sample_rate: Hz.
        order: cepstral order; ``order + 1`` coefficients including ``c_0``.
        alpha: frequency warping; :func:`warping_alpha` of the rate by default (pymcd: 0.65).
        fft_size: CheapTrick FFT size.
        frame_period: ms between frames.

    Returns:
        float64 ``(T, order + 1)``.
    """
    import pysptk
    import pyworld

    x = np.ascontiguousarray(wav, dtype=np.float64)
    f0, times = pyworld.dio(x, sample_rate, frame_period=frame_period)
    f0 = pyworld.stonemask(x, f0, times, sample_rate)
    envelope = pyworld.cheaptrick(x, f0, times, sample_rate, fft_size=fft_size)  # (T, fft/2+1)
    alpha = warping_alpha(sample_rate) if alpha is None else alpha
    return pysptk.sptk.mcep(envelope, order=order, alpha=alpha, maxiter=0, etype=1, eps=1.0e-8, min_det=0.0, itype=3)


def librosa_mfcc(wav: np.ndarray, sample_rate: int = 16_000, n_mfcc: int = 13, n_mels: int = 128) -> np.ndarray:
    """librosa's default MFCCs (dB power mel over ``n_mels`` bands, orthonormal DCT-II).

    Returns:
        float64 ``(T, n_mfcc)``, 512-sample hops.
    """
    import librosa

    mfcc = librosa.feature.mfcc(y=np.asarray(wav, np.float32), sr=sample_rate, n_mfcc=n_mfcc, n_mels=n_mels)
    return mfcc.T.astype(np.float64)  # (T, n_mfcc)


# --------------------------------------------------------------------------------------------
# Distance stage
# --------------------------------------------------------------------------------------------


def dtw_path(ref: np.ndarray, syn: np.ndarray) -> np.ndarray:
    """Exact DTW path (librosa, Euclidean, steps (1,1), (1,0), (0,1)) between ``(T1, D)`` and ``(T2, D)``.

    Returns:
        int ``(L, 2)`` index pairs in time order.
    """
    import librosa

    _, path = librosa.sequence.dtw(X=ref.T, Y=syn.T, metric="euclidean")  # path: end -> start
    return path[::-1]


def cepstral_distance(
    ref: np.ndarray,
    syn: np.ndarray,
    first: int = 1,
    scale: float = MCD_SCALE,
    align: Align = "dtw",
    align_first: int | None = None,
) -> float:
    """Mean per-frame Euclidean distance between two cepstral sequences, times ``scale``.

    Args:
        ref: ``(T1, D)`` reference cepstra.
        syn: ``(T2, D)`` synthesised cepstra.
        first: first coefficient in the distance (1 = ``c_0`` excluded, the standard).
        scale: ``10/ln10*sqrt(2)`` for dB MCD, 1 for a plain distance.
        align: ``"dtw"`` (exact DTW) or ``"pad"`` (zero-pad the shorter one, frame by frame).
        align_first: first coefficient the DTW looks at (default ``first``).

    Returns:
        The distance (>= 0).
    """
    if align == "dtw":
        start = first if align_first is None else align_first
        path = dtw_path(ref[:, start:], syn[:, start:])  # (L, 2)
        ref, syn = ref[path[:, 0]], syn[path[:, 1]]
    elif align == "pad":
        frames = max(len(ref), len(syn))
        ref = np.pad(ref, ((0, frames - len(ref)), (0, 0)))
        syn = np.pad(syn, ((0, frames - len(syn)), (0, 0)))
    else:
        raise ValueError(f"align must be 'dtw' or 'pad', got {align!r}")
    per_frame = np.linalg.norm(ref[:, first:] - syn[:, first:], axis=1)  # (L,)
    return float(scale * per_frame.mean())


# --------------------------------------------------------------------------------------------
# Metric cores
# --------------------------------------------------------------------------------------------


def _mcd_pair(pred: np.ndarray, target: np.ndarray, sample_rate: int, paper: bool, align: Align, n_mfcc: int) -> float:
    if paper:
        ref, syn = librosa_mfcc(target, sample_rate, n_mfcc), librosa_mfcc(pred, sample_rate, n_mfcc)
        return cepstral_distance(ref, syn, first=0, scale=1.0, align=align)
    ref, syn = mel_cepstrum(target, sample_rate), mel_cepstrum(pred, sample_rate)
    if min(len(ref), len(syn)) < 2:
        raise MetricInputError("MCD", f"only {min(len(ref), len(syn))} cepstral frames")
    return cepstral_distance(ref, syn, first=1, scale=MCD_SCALE, align=align)


def _mcd_update(
    preds: AudioInput,
    target: AudioInput,
    sample_rate: int = 16_000,
    paper: bool = False,
    align: Align = "dtw",
    n_mfcc: int = 13,
) -> tuple[Tensor, Excluded]:
    """Per-clip standard MCD (``paper=False``) or paper MFCC distance (``paper=True``, with
    ``n_mfcc`` librosa coefficients).

    Returns:
        float64 ``(N_ok,)`` in clip order, and ``(index, reason)`` of the excluded clips.
    """
    metric = "PaperMFCCDistance" if paper else "MCD"
    check_sample_rate(metric, sample_rate, ())
    pred_clips, target_clips = paired_clips(metric, preds, target)
    problems = [pair_problem(p, t, False, MIN_SAMPLES) for p, t in zip(pred_clips, target_clips)]
    valid, excluded = split_valid(problems)
    _, values, failed = score_each(
        valid, lambda i: _mcd_pair(pred_clips[i], target_clips[i], sample_rate, paper, align, n_mfcc), metric
    )
    return torch.tensor(values, dtype=torch.float64), sorted(excluded + failed)


def _mcd_compute(scores: Tensor) -> Tensor:
    """Mean over clips of the per-clip distances ``(N,)``."""
    return scores.mean()


def mel_cepstral_distortion(
    preds: AudioInput, target: AudioInput, sample_rate: int = 16_000, align: Align = "dtw"
) -> Tensor:
    """Per-clip standard MCD in dB (``c_0`` excluded, ``10/ln10*sqrt(2)``, DTW-aligned).

    Args:
        preds: ``(B, S)`` float in [-1, 1] (or a list of ``(S_i,)``): synthesised speech.
        target: reference speech; lengths may differ (DTW aligns them).
        sample_rate: Hz of both.
        align: ``"dtw"`` or ``"pad"``.

    Returns:
        float64 ``(B,)`` >= 0 dB; lower is better (typically 4-10 dB between two voices).

    Raises:
        MetricInputError: a silent, too short, non-finite or out-of-range clip (names it).
    """
    scores, excluded = _mcd_update(preds, target, sample_rate, False, align)
    raise_first("MCD", excluded)
    return scores


def paper_mfcc_distance(
    preds: AudioInput, target: AudioInput, sample_rate: int = 16_000, n_mfcc: int = 13
) -> Tensor:
    """Per-clip paper-compatible MFCC distance (plain Euclidean, librosa MFCCs, ``c_0`` in).

    Same arguments and errors as :func:`mel_cepstral_distortion`, plus ``n_mfcc`` (librosa
    coefficients kept; 13 by default, the usual choice in MCD scripts built on librosa).
    Values are about 8-13x the standard MCD (44-140 in the paper). For comparisons with the
    paper's tables only.

    Returns:
        float64 ``(B,)`` >= 0; lower is better.
    """
    scores, excluded = _mcd_update(preds, target, sample_rate, True, "dtw", n_mfcc)
    raise_first("PaperMFCCDistance", excluded)
    return scores
