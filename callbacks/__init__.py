"""Training callbacks of nfy: sample rendering, generative-metric evaluation, checkpoints and resumes."""

from callbacks.checkpoint import LastStateCheckpoint, ResumeLimitsCallback
from callbacks.metrics_callback import GenerativeMetricsCallback
from callbacks.sample_callback import SampleCallback

__all__ = ["GenerativeMetricsCallback", "LastStateCheckpoint", "ResumeLimitsCallback", "SampleCallback"]
