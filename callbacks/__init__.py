"""Training callbacks of nfy: sample rendering (and, beside it, generative-metric evaluation)."""

from callbacks.sample_callback import SampleCallback

__all__ = ["SampleCallback"]
