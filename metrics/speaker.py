"""Speaker similarity metric class (resemblyzer embeddings); per-clip cosines kept."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from common.frozen import KeepsChildrenFrozen, freeze
from metrics.audio_features import AudioInput, PerClipAudioMetric
from metrics.functional.speaker import _speaker_similarity_update, default_encoder


class SpeakerSimilarity(KeepsChildrenFrozen, PerClipAudioMetric):
    """Mean cosine similarity of resemblyzer speaker embeddings, generated vs reference voice.

    Args:
        sample_rate: Hz of the audio given to ``update``.
        encoder: a resemblyzer ``VoiceEncoder`` (frozen, eval); the pretrained one shipped
            with resemblyzer by default, on the metric's device.
        kwargs: torchmetrics ``Metric`` options.

    ``update(preds, target)``: ``(B, S)`` float in [-1, 1] or lists of ``(S_i,)``; the two
    clips of a pair may differ in length. ``compute()``: float64 mean in [0, 1];
    :meth:`per_clip`: ``(N,)``. Unscorable clips are excluded, counted and named in a warning.
    """

    higher_is_better = True
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0
    metric_name = "SpeakerSimilarity"
    frozen_children = ("encoder",)

    def __init__(self, sample_rate: int = 16_000, encoder: nn.Module | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sample_rate = sample_rate
        self.encoder = freeze(encoder) if encoder is not None else None

    def update(self, preds: AudioInput, target: AudioInput) -> None:
        """Score each pair of clips; see the class docstring for shapes."""
        scores, excluded = _speaker_similarity_update(preds, target, self.sample_rate, self._encoder())
        self._record(scores, excluded)

    def _encoder(self) -> nn.Module:
        """The encoder, on the metric's device (``.to(device)`` moves an injected one with the metric)."""
        if self.encoder is None:
            return default_encoder(str(self.device))
        # resemblyzer's VoiceEncoder sends its inputs to the device it was built on: keep that
        # where its weights are now
        weight = next(self.encoder.parameters(), None)
        if weight is not None and hasattr(self.encoder, "device"):
            self.encoder.device = weight.device
        return self.encoder

    def compute(self) -> Tensor:
        """Mean cosine over the scored clips (NaN with a warning when none was scored)."""
        return self._mean()
