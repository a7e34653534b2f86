"""Speaker similarity: equal to resemblyzer's own preprocessing + embedding + dot product."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from resemblyzer import VoiceEncoder, preprocess_wav

from metrics.errors import MetricInputError
from metrics.functional.speaker import speaker_similarity
from metrics.speaker import SpeakerSimilarity
from tests.metrics.tester import check_metric_contract

ATOL = 1e-5  # same encoder and preprocessing; float32 embeddings


def _voice(batch: int, seed: int, seconds: float = 2.0) -> torch.Tensor:
    """Harmonic 'vowels' at a random pitch with a syllable envelope, (B, S) in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16_000)) / 16_000
    f0 = 100.0 + 150.0 * torch.rand(batch, 1, generator=gen)  # (B, 1)
    weights = torch.rand(batch, 8, generator=gen)  # (B, 8) timbre
    harmonics = sum(weights[:, k - 1 : k] * torch.sin(2 * torch.pi * k * f0 * t) / k for k in range(1, 9))
    envelope = (0.5 * (1 + torch.sin(2 * torch.pi * 4.0 * t))) ** 2  # (S,)
    return (0.3 * envelope * harmonics + 0.005 * torch.randn(batch, t.numel(), generator=gen)).clamp(-1, 1)


@pytest.fixture(scope="module")
def encoder() -> VoiceEncoder:
    return VoiceEncoder("cpu", verbose=False)


def _reference(encoder: VoiceEncoder, preds: torch.Tensor, target: torch.Tensor) -> list[float]:
    embed = lambda wav: encoder.embed_utterance(preprocess_wav(wav.numpy().astype(np.float32)))
    return [float(embed(p) @ embed(t)) for p, t in zip(preds, target)]


def test_per_clip_equals_resemblyzer(encoder: VoiceEncoder) -> None:
    preds, target = _voice(2, seed=1), _voice(2, seed=2, seconds=3.0)  # lengths may differ
    ours = speaker_similarity(list(preds), list(target), encoder=encoder)
    np.testing.assert_allclose(ours.numpy(), _reference(encoder, preds, target), atol=ATOL)
    assert ((ours > 0) & (ours < 1)).all()
    same = speaker_similarity(preds, preds, encoder=encoder)
    np.testing.assert_allclose(same.numpy(), 1.0, atol=1e-5)


def test_metric_contract(encoder: VoiceEncoder) -> None:
    batches = [(_voice(1, seed), _voice(1, seed + 10)) for seed in (3, 4)]
    expected = np.mean([v for p, t in batches for v in _reference(encoder, p, t)])
    check_metric_contract(lambda: SpeakerSimilarity(encoder=encoder), batches, atol=ATOL, expected=expected)


def test_encoder_stays_frozen(encoder: VoiceEncoder) -> None:
    metric = SpeakerSimilarity(encoder=encoder).train()
    assert not metric.encoder.training
    assert not any(p.requires_grad for p in metric.encoder.parameters())


def test_bad_clips_are_excluded(encoder: VoiceEncoder) -> None:
    preds, target = _voice(3, seed=5), _voice(3, seed=6)
    preds[1] = 0.0
    target[2, :] = 0.0
    target[2, :2_000] = 0.3  # 1/8 s of a DC step: nothing voiced survives resemblyzer's VAD
    metric = SpeakerSimilarity(encoder=encoder)
    with pytest.warns(UserWarning) as record:
        metric.update(preds, target)
    messages = " ".join(str(w.message) for w in record)
    assert "clip 1 excluded: preds is silent" in messages
    assert "clip 2 excluded" in messages
    assert int(metric.num_excluded) == 2
    np.testing.assert_allclose(metric.per_clip().numpy(), _reference(encoder, preds[:1], target[:1]), atol=ATOL)
    with pytest.raises(MetricInputError, match="clip 0: target has 100 samples"):
        speaker_similarity(preds[:1], target[:1, :100], encoder=encoder)
