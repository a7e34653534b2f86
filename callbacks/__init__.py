"""Training callbacks of nfy: sample rendering to TensorBoard and generative-metric evaluation."""

from callbacks.metrics_callback import GenerativeMetricsCallback
from callbacks.sample_callback import SampleCallback

__all__ = ["GenerativeMetricsCallback", "SampleCallback"]
