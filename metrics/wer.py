"""Normalised word error rate metric class (corpus WER; per-utterance values kept)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from metrics.functional.wer import _wer_compute, _wer_update


class NormalizedWER(Metric):
    """Corpus word error rate after Whisper's English normaliser (jiwer underneath).

    ``compute()`` returns the **corpus WER** (errors pooled over all utterances, as
    ``jiwer.wer`` on lists); :meth:`per_clip` returns each utterance's WER for the CSV.
    Speech is turned into text first by a recogniser from :mod:`metrics.asr`.

    States: ``errors`` and ``ref_words`` (lists, ``cat``), float64 per utterance;
    ``num_excluded`` (``sum``): utterances whose reference is empty after normalisation.

    ``update(preds, target)``: lists of strings (hypotheses, references).

    Example:
        >>> metric = NormalizedWER()
        >>> metric.update(["Hello world!", "it's fine"], ["hello, world", "it is not fine"])
        >>> round(float(metric.compute()), 3)  # 1 deletion over 6 reference words
        0.167
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("errors", default=[], dist_reduce_fx="cat")
        self.add_state("ref_words", default=[], dist_reduce_fx="cat")
        self.add_state("num_excluded", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], target: Sequence[str]) -> None:
        """Count word errors of each hypothesis against its reference."""
        errors, words, excluded = _wer_update(preds, target)
        self.errors.append(errors)
        self.ref_words.append(words)
        self.num_excluded += len(excluded)
        for index, reason in excluded:
            warnings.warn(f"WER: utterance {index} excluded: {reason}", stacklevel=3)

    def _gathered(self) -> tuple[Tensor, Tensor]:
        if isinstance(self.errors, Tensor):
            return self.errors, self.ref_words
        if not self.errors:
            return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
        return dim_zero_cat(self.errors), dim_zero_cat(self.ref_words)

    def per_clip(self) -> Tensor:
        """WER of every scored utterance, float64 ``(N,)``, in update order."""
        errors, words = self._gathered()
        return errors / words

    def compute(self) -> Tensor:
        """Corpus WER over all scored utterances (NaN with a warning when there is none)."""
        errors, words = self._gathered()
        if words.numel() == 0:
            warnings.warn("WER: no utterance was scored; returning NaN")
            return torch.tensor(float("nan"), dtype=torch.float64)
        return _wer_compute(errors, words)
