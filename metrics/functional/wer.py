"""Word error rate after Whisper's English text normaliser (``jiwer`` + ``whisper-normalizer``).

jiwer scores the strings it is given: ``wer("Hello world.", "hello world") == 1.0``. Both
sides are therefore normalised first with Whisper's ``EnglishTextNormalizer`` (lower case,
punctuation removed, spelled-out numbers and British spellings standardised, contractions
expanded), as Whisper's own evaluations do.

Two aggregates exist and they differ: the **corpus WER** pools errors over all utterances,
``sum(S + D + I) / sum(N_ref)`` (what ``jiwer.wer`` on lists returns, and what we report);
the **per-utterance WER** ``(S + D + I) / N_ref`` is kept for the per-clip CSV.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import jiwer
import torch
from torch import Tensor

from metrics.audio_features import Excluded, raise_first
from metrics.errors import MetricInputError

METRIC = "WER"


@lru_cache(maxsize=1)
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize_transcript(text: str) -> str:
    """Whisper's English normalisation of ``text`` (``"I'VE seen Mr. Smith"`` -> ``"i have seen mister smith"``)."""
    return " ".join(_normalizer()(text).split())


def _check_texts(preds: Sequence[str], target: Sequence[str]) -> None:
    for name, texts in (("preds", preds), ("target", target)):
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise MetricInputError(METRIC, f"{name} must be a list of strings, got {type(texts).__name__}")
    if len(preds) != len(target):
        raise MetricInputError(METRIC, f"got {len(preds)} hypotheses but {len(target)} references")


def _wer_update(preds: Sequence[str], target: Sequence[str]) -> tuple[Tensor, Tensor, Excluded]:
    """Word errors and reference lengths per utterance, after normalisation.

    Args:
        preds: hypotheses (recogniser output), one string per utterance.
        target: reference transcripts, same length.

    Returns:
        ``errors`` float64 ``(N_ok,)`` (S + D + I), ``ref_words`` float64 ``(N_ok,)``, and
        ``(index, reason)`` for references that are empty after normalisation (WER undefined).
    """
    _check_texts(preds, target)
    errors, words, excluded = [], [], []
    for i, (hyp, ref) in enumerate(zip(preds, target)):
        ref_n, hyp_n = normalize_transcript(ref), normalize_transcript(hyp)
        if not ref_n:
            excluded.append((i, f"reference {ref!r} is empty after normalisation: WER is undefined"))
            continue
        # jiwer cannot align an empty hypothesis; every reference word is then a deletion
        out = jiwer.process_words(ref_n, hyp_n) if hyp_n else None
        errors.append(len(ref_n.split()) if out is None else out.substitutions + out.deletions + out.insertions)
        words.append(len(ref_n.split()))
    return torch.tensor(errors, dtype=torch.float64), torch.tensor(words, dtype=torch.float64), excluded


def _wer_compute(errors: Tensor, ref_words: Tensor) -> Tensor:
    """Corpus WER: errors pooled over utterances, ``sum(errors) / sum(ref_words)``."""
    return errors.sum() / ref_words.sum()


def normalized_word_error_rate(preds: Sequence[str], target: Sequence[str]) -> Tensor:
    """Corpus WER of ``preds`` against ``target`` after Whisper's English normalisation.

    Args:
        preds: hypotheses, one string per utterance.
        target: references, same length.

    Returns:
        float64 scalar >= 0 (can exceed 1 with insertions); lower is better.

    Raises:
        MetricInputError: lengths differ, non-string input, or a reference that is empty
            after normalisation (names the utterance).

    Example:
        >>> float(normalized_word_error_rate(["Hello, world!"], ["hello world"]))
        0.0
    """
    errors, words, excluded = _wer_update(preds, target)
    raise_first(METRIC, excluded)
    return _wer_compute(errors, words)


def normalized_word_error_rate_per_utterance(preds: Sequence[str], target: Sequence[str]) -> Tensor:
    """Per-utterance WER ``(S + D + I) / N_ref`` after normalisation, float64 ``(N,)``."""
    errors, words, excluded = _wer_update(preds, target)
    raise_first(METRIC, excluded)
    return errors / words
