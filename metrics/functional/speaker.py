"""Speaker similarity: cosine of resemblyzer (GE2E) speaker embeddings.

Wan et al., "Generalized End-to-End Loss for Speaker Verification", ICASSP 2018; the encoder
and its weights ship in ``resemblyzer`` 0.1.4 (``pretrained.pt``, 256-d, 16 kHz). Each clip is
prepared as resemblyzer prescribes (``preprocess_wav``: volume normalised to -30 dBFS, long
silences trimmed by WebRTC VAD), embedded with ``VoiceEncoder.embed_utterance`` (L2-normalised
mean of 1.6 s partial embeddings), and the score is the dot product of the two unit vectors.
The embeddings pass a ReLU, so the cosine lies in [0, 1]; higher means more alike voices.

Not a metric of the paper: it checks that the generated voice kept the voice profile.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor, nn

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

METRIC = "SpeakerSimilarity"
MIN_SAMPLES = 4_000
"""0.25 s at 16 kHz: shorter clips hold too little voice for an embedding."""


@lru_cache(maxsize=2)
def default_encoder(device: str = "cpu") -> nn.Module:
    """resemblyzer's pretrained ``VoiceEncoder`` (weights from its wheel), in eval mode."""
    from resemblyzer import VoiceEncoder

    return VoiceEncoder(device, verbose=False).eval()


def speaker_embedding(wav: np.ndarray, sample_rate: int = 16_000, encoder: nn.Module | None = None) -> np.ndarray:
    """256-d unit-norm speaker embedding of one clip.

    Args:
        wav: ``(S,)`` float samples in [-1, 1].
        sample_rate: Hz of ``wav``; resampled to 16 kHz by resemblyzer when different.
        encoder: a resemblyzer ``VoiceEncoder``; the pretrained one by default.

    Returns:
        float32 ``(256,)`` with L2 norm 1.

    Raises:
        MetricInputError: nothing is left after resemblyzer's silence trimming.
    """
    from resemblyzer import preprocess_wav

    encoder = encoder if encoder is not None else default_encoder()
    wav = np.asarray(wav, np.float32)
    prepared = preprocess_wav(wav, source_sr=None if sample_rate == 16_000 else sample_rate)
    if prepared.size < MIN_SAMPLES:
        raise MetricInputError(METRIC, f"only {prepared.size} samples of voice left after trimming silences")
    return encoder.embed_utterance(prepared)


def _speaker_similarity_update(
    preds: AudioInput,
    target: AudioInput,
    sample_rate: int = 16_000,
    encoder: nn.Module | None = None,
) -> tuple[Tensor, Excluded]:
    """Cosine similarity of every pair that can be scored.

    Returns:
        float64 ``(N_ok,)`` in [0, 1] in clip order, and ``(index, reason)`` of the excluded clips.
    """
    check_sample_rate(METRIC, sample_rate, ())
    pred_clips, target_clips = paired_clips(METRIC, preds, target)
    # lengths may differ: the voices are compared, not the samples
    problems = [pair_problem(p, t, False, MIN_SAMPLES) for p, t in zip(pred_clips, target_clips)]
    valid, excluded = split_valid(problems)

    def cosine(i: int) -> float:
        a = speaker_embedding(pred_clips[i], sample_rate, encoder)  # (256,)
        b = speaker_embedding(target_clips[i], sample_rate, encoder)  # (256,)
        return float(np.dot(a, b))

    _, values, failed = score_each(valid, cosine, METRIC)
    return torch.tensor(values, dtype=torch.float64), sorted(excluded + failed)


def _speaker_similarity_compute(scores: Tensor) -> Tensor:
    """Mean over clips of the per-clip cosines ``(N,)``."""
    return scores.mean()


def speaker_similarity(
    preds: AudioInput,
    target: AudioInput,
    sample_rate: int = 16_000,
    encoder: nn.Module | None = None,
) -> Tensor:
    """Per-clip cosine similarity of the speakers of ``preds`` and ``target``.

    Args:
        preds: ``(B, S)`` float in [-1, 1] (or a list of ``(S_i,)``): generated speech.
        target: the reference voice (e.g. the 2 s voice profile); lengths may differ.
        sample_rate: Hz of both.
        encoder: a resemblyzer ``VoiceEncoder``; the pretrained one by default.

    Returns:
        float64 ``(B,)`` in [0, 1]; higher means more alike voices.

    Raises:
        MetricInputError: a silent, too short, non-finite or out-of-range clip (names it).
    """
    scores, excluded = _speaker_similarity_update(preds, target, sample_rate, encoder)
    raise_first(METRIC, excluded)
    return scores
