"""DNSMOS P.835 (+ P.808): a non-intrusive predicted MOS, computed by ``speechmos``.

Reddy et al., "DNSMOS P.835: A Non-Intrusive Perceptual Objective Speech Quality Metric to
Evaluate Noise Suppressors", ICASSP 2022. ``speechmos`` 0.0.1.1 ships Microsoft's ONNX models
(``dnsmos_models/sig_bak_ovr.onnx`` and ``model_v8.onnx``) and their scoring code: clips are
tiled (repeated) up to 9.01 s, scored on 9.01 s windows every 1 s, the P.835 raw outputs are
mapped through Microsoft's polynomials, and the windows are averaged. We reuse that code as is,
only opening the ONNX sessions with a bounded thread count.

Input: 16 kHz mono in [-1, 1]; silent, non-finite or out-of-range clips are refused.
Output per clip: ``(overall, signal, background, p808)`` MOS, each in about [1, 5].
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from metrics.audio_features import (
    AudioInput,
    Excluded,
    as_clip_list,
    check_sample_rate,
    raise_first,
    signal_problem,
    split_valid,
)

METRIC = "DNSMOS"
KEYS = ("overall", "sig", "bak", "p808")
"""Order of the 4 columns of the per-clip scores."""
_SPEECHMOS_KEYS = ("ovrl_mos", "sig_mos", "bak_mos", "p808_mos")
MIN_SAMPLES = 1_600
"""0.1 s: shorter clips would be tiled from almost nothing."""


@lru_cache(maxsize=4)
def _scorer(personalized: bool, num_threads: int):
    """speechmos's DNSMOS scorer over the ONNX files in its wheel, with bounded threads."""
    import onnxruntime as ort
    from speechmos import dnsmos as speechmos_dnsmos

    root = Path(speechmos_dnsmos.__file__).parent
    primary = root / ("pdnsmos_models" if personalized else "dnsmos_models") / "sig_bak_ovr.onnx"
    p808 = root / "dnsmos_models" / "model_v8.onnx"
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    # speechmos.dnsmos.DNSMOS opens sessions with onnxruntime's defaults (every core); build the
    # same object with our sessions so its scoring code (tiling, mel, polynomials) runs unchanged
    scorer = speechmos_dnsmos.DNSMOS.__new__(speechmos_dnsmos.DNSMOS)
    scorer.primary_model_path = str(primary)
    scorer.onnx_sess = ort.InferenceSession(str(primary), options, providers=["CPUExecutionProvider"])
    scorer.p808_onnx_sess = ort.InferenceSession(str(p808), options, providers=["CPUExecutionProvider"])
    return scorer


def _dnsmos_one(wav: np.ndarray, personalized: bool, num_threads: int) -> list[float]:
    result = _scorer(personalized, num_threads)(wav.astype(np.float32), 16_000, personalized)
    return [float(result[key]) for key in _SPEECHMOS_KEYS]


def _dnsmos_update(
    preds: AudioInput,
    sample_rate: int = 16_000,
    personalized: bool = False,
    num_threads: int = 1,
) -> tuple[Tensor, Excluded]:
    """Score every clip that can be scored.

    Returns:
        float64 ``(N_ok, 4)`` (overall, sig, bak, p808) in clip order, and ``(index, reason)``
        of the excluded clips.
    """
    check_sample_rate(METRIC, sample_rate, (16_000,))
    clips = as_clip_list(preds, METRIC, "preds")
    valid, excluded = split_valid([signal_problem(c, "preds", MIN_SAMPLES) for c in clips])
    rows = [_dnsmos_one(clips[i], personalized, num_threads) for i in valid]
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, len(KEYS)), excluded


def _dnsmos_compute(scores: Tensor) -> dict[str, Tensor]:
    """Mean over clips of each column of ``scores`` ``(N, 4)``."""
    means = scores.mean(0)
    return {key: means[i] for i, key in enumerate(KEYS)}


def deep_noise_suppression_mean_opinion_score(
    preds: AudioInput,
    sample_rate: int = 16_000,
    personalized: bool = False,
    num_threads: int = 1,
) -> Tensor:
    """Per-clip DNSMOS of ``preds``.

    Args:
        preds: ``(B, S)`` float in [-1, 1] at 16 kHz, or a list of ``(S_i,)``.
        sample_rate: must be 16000.
        personalized: the personalised DNSMOS model (penalises interfering talkers).
        num_threads: ONNX Runtime intra-op threads.

    Returns:
        float64 ``(B, 4)``: overall, signal, background and P.808 MOS in about [1, 5];
        higher is better.

    Raises:
        MetricInputError: wrong sample rate, or a silent, too short, non-finite or
            out-of-range clip (names the clip).
    """
    scores, excluded = _dnsmos_update(preds, sample_rate, personalized, num_threads)
    raise_first(METRIC, excluded)
    return scores
