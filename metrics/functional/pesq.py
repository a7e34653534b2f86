"""Wide-band PESQ (ITU-T P.862.2) at 16 kHz, computed by the ``pesq`` package.

``pesq`` normalises both signals by their joint peak and runs the ITU C code. It raises
``NoUtterancesError`` when it finds no speech (e.g. all-zero input): such a clip is reported
as excluded, never scored 0. Identical inputs score 4.644 (wb).

PESQ costs about 0.02 s of CPU per second of speech and the ITU code holds the GIL, so
batches of several clips are scored in the shared process pool of
:mod:`metrics.functional.parallel` (one process per core, ``num_workers``), started on first
use and kept for later updates.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from metrics.audio_features import (
    AudioInput,
    Excluded,
    check_sample_rate,
    pair_problem,
    paired_clips,
    raise_first,
    split_valid,
)
from metrics.functional.parallel import score_valid

METRIC = "PESQ"
MIN_SAMPLES = 4_000
"""The ITU code needs at least 1/4 s of signal at 16 kHz (``BufferTooShortError`` below)."""


def _pesq_one(args: tuple[np.ndarray, np.ndarray, int]) -> float | str:
    """Score one pair; returns the score or the ``pesq`` error as text (picklable)."""
    from pesq import PesqError, pesq

    target, pred, sample_rate = args
    try:
        return float(pesq(sample_rate, target, pred, "wb"))
    except PesqError as err:  # NoUtterancesError, BufferTooShortError, ... from the C code
        return f"pesq raised {type(err).__name__}: {err}"


def _pesq_update(
    preds: AudioInput,
    target: AudioInput,
    sample_rate: int = 16_000,
    num_workers: int | None = None,
    target_sample_rate: int | None = None,
) -> tuple[Tensor, Excluded]:
    """Score every pair that can be scored.

    Returns:
        float64 ``(N_ok,)`` wide-band MOS-LQO in clip order, and ``(index, reason)`` of the
        excluded clips.
    """
    check_sample_rate(METRIC, sample_rate, (16_000,), target_sample_rate)
    pred_clips, target_clips = paired_clips(METRIC, preds, target)
    problems = [pair_problem(p, t, True, MIN_SAMPLES) for p, t in zip(pred_clips, target_clips)]
    valid, excluded = split_valid(problems)
    jobs = [(target_clips[i], pred_clips[i], sample_rate) for i in valid]
    return score_valid(_pesq_one, jobs, valid, excluded, num_workers)


def _pesq_compute(scores: Tensor) -> Tensor:
    """Mean over clips of the per-clip scores ``(N,)``."""
    return scores.mean()


def wideband_pesq(
    preds: AudioInput,
    target: AudioInput,
    sample_rate: int = 16_000,
    num_workers: int | None = None,
) -> Tensor:
    """Per-clip wide-band PESQ of ``preds`` (degraded) against ``target`` (reference).

    Args:
        preds: ``(B, S)`` float in [-1, 1] at 16 kHz (or a list of ``(S_i,)``).
        target: same shape, the clean reference.
        sample_rate: must be 16000 (wide-band PESQ).
        num_workers: processes for batches of 2 or more clips (default: up to 2 cores);
            1 scores in-process.

    Returns:
        float64 ``(B,)`` MOS-LQO in [1.04, 4.644]; higher is better.

    Raises:
        MetricInputError: wrong sample rate, or a clip that is silent (``NoUtterancesError``),
            too short, non-finite, out of range or of mismatched length (names the clip).

    Example:
        >>> import torch
        >>> clean = torch.sin(torch.arange(16000) * 0.05)[None] * 0.5
        >>> wideband_pesq(clean, clean).round(decimals=3)
        tensor([4.6440], dtype=torch.float64)
    """
    scores, excluded = _pesq_update(preds, target, sample_rate, num_workers)
    raise_first(METRIC, excluded)
    return scores
