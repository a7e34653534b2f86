"""STOI and extended STOI (ESTOI), computed by ``pystoi``.

Taal et al., "An Algorithm for Intelligibility Prediction of Time-Frequency Weighted Noisy
Speech", IEEE TASLP 2011; Jensen & Taal, "An Algorithm for Predicting the Intelligibility of
Speech Masked by Modulated Noise Maskers", IEEE TASLP 2016 (``extended=True``).

pystoi resamples to 10 kHz, removes silent frames and, when fewer than 30 frames are left,
warns and returns 1e-5. We do not let that pseudo-score through: such clips (and silent,
non-finite or length-mismatched ones) raise :class:`MetricInputError` here and are excluded
and counted in the metric classes.

pystoi runs many small numpy steps with the GIL held, so batches of several clips are scored
in the shared process pool of :mod:`metrics.functional.parallel` (one process per core).
"""

from __future__ import annotations

import warnings

import numpy as np
from pystoi import stoi as _pystoi
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
from metrics.functional.parallel import score_valid


def _stoi_one(pred: np.ndarray, target: np.ndarray, sample_rate: int, extended: bool, metric: str) -> float:
    """pystoi on one pair; its "not enough frames" fallback becomes an error, not 1e-5."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = _pystoi(target, pred, sample_rate, extended=extended)
    for warning in caught:
        if "Not enough STFT frames" in str(warning.message):
            raise MetricInputError(metric, "fewer than 30 non-silent 25.6 ms frames (pystoi would return 1e-5)")
    return value


def _stoi_job(args: tuple[np.ndarray, np.ndarray, int, bool]) -> float | str:
    """Score one pair (in a worker process); returns the score or why it was not scored."""
    pred, target, sample_rate, extended = args
    metric = "ESTOI" if extended else "STOI"
    _, values, failed = score_each([0], lambda _: _stoi_one(pred, target, sample_rate, extended, metric), metric)
    return values[0] if values else failed[0][1]


def _stoi_update(
    preds: AudioInput,
    target: AudioInput,
    sample_rate: int,
    extended: bool = False,
    target_sample_rate: int | None = None,
    num_workers: int | None = None,
) -> tuple[Tensor, Excluded]:
    """Score every pair that can be scored, over ``num_workers`` processes (default: the cores).

    Returns:
        float64 ``(N_ok,)`` scores in clip order, and ``(index, reason)`` of the excluded clips.
    """
    metric = "ESTOI" if extended else "STOI"
    check_sample_rate(metric, sample_rate, (), target_sample_rate)
    pred_clips, target_clips = paired_clips(metric, preds, target)
    problems = [pair_problem(p, t, equal_length=True) for p, t in zip(pred_clips, target_clips)]
    valid, excluded = split_valid(problems)
    jobs = [(pred_clips[i], target_clips[i], sample_rate, extended) for i in valid]
    return score_valid(_stoi_job, jobs, valid, excluded, num_workers)


def _stoi_compute(scores: Tensor) -> Tensor:
    """Mean over clips of the per-clip scores ``(N,)``."""
    return scores.mean()


def short_time_objective_intelligibility(
    preds: AudioInput,
    target: AudioInput,
    sample_rate: int = 16_000,
    extended: bool = False,
    num_workers: int | None = None,
) -> Tensor:
    """Per-clip STOI (or ESTOI with ``extended=True``) of ``preds`` against ``target``.

    Args:
        preds: ``(B, S)`` float in [-1, 1] (or a list of ``(S_i,)``), the degraded speech.
        target: same shape, the clean reference.
        sample_rate: Hz of both signals (pystoi resamples to 10 kHz).
        extended: ESTOI instead of STOI.
        num_workers: processes for batches of 2 or more clips (default: up to 2 cores);
            1 scores in-process.

    Returns:
        float64 ``(B,)``, STOI in about [0, 1] (ESTOI can be slightly negative); higher is better.

    Raises:
        MetricInputError: a clip is silent, non-finite, out of range, too short, or its
            lengths differ; the message names the clip index.

    Example:
        >>> import torch
        >>> target = torch.randn(1, 16000).clamp(-1, 1) * 0.5
        >>> short_time_objective_intelligibility(target, target).round(decimals=4)
        tensor([1.], dtype=torch.float64)
    """
    scores, excluded = _stoi_update(preds, target, sample_rate, extended, num_workers=num_workers)
    raise_first("ESTOI" if extended else "STOI", excluded)
    return scores


def extended_short_time_objective_intelligibility(
    preds: AudioInput, target: AudioInput, sample_rate: int = 16_000, num_workers: int | None = None
) -> Tensor:
    """Per-clip ESTOI; see :func:`short_time_objective_intelligibility`."""
    return short_time_objective_intelligibility(preds, target, sample_rate, extended=True, num_workers=num_workers)
