"""Errors shared by every metric in :mod:`metrics`."""

from __future__ import annotations


class MetricInputError(ValueError):
    """One clip (or one pair of clips) cannot be scored by a metric.

    Raised for inputs a metric must refuse rather than score: mismatched lengths, different
    sample rates, silent audio, a video shorter than the metric's window, NaN/inf values.
    Batched updates catch it per clip, count the clip in ``num_excluded`` and warn with the
    clip index, so one bad clip never turns into a silent zero.

    Args:
        metric: name of the metric refusing the input, e.g. ``"VideoSSIM"``.
        reason: what was received and what was expected.
    """

    def __init__(self, metric: str, reason: str) -> None:
        self.metric = metric
        self.reason = reason
        super().__init__(f"{metric}: {reason}")

    def __reduce__(self):  # keeps the two-argument signature picklable (DataLoader workers)
        return (type(self), (self.metric, self.reason))
