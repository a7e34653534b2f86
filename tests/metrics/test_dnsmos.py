"""DNSMOS: equal to speechmos's own ``dnsmos.run`` on the same audio; bad clips excluded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from speechmos import dnsmos as speechmos_dnsmos

import metrics.functional.dnsmos as functional
from metrics.dnsmos import DNSMOS
from metrics.errors import MetricInputError
from metrics.functional.dnsmos import KEYS, deep_noise_suppression_mean_opinion_score
from tests.metrics.tester import check_metric_contract

ATOL = 1e-5  # same ONNX models and code; only the ONNX thread count differs
SECONDS = 4.6  # tiled once to 9.2 s: one 9.01 s window per clip keeps the test fast


def _voiced(batch: int, seed: int, seconds: float = SECONDS) -> torch.Tensor:
    """Harmonic 'vowels' with a syllable envelope plus a little noise, (B, S) in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16_000)) / 16_000
    f0 = 120.0 + 80.0 * torch.rand(batch, 1, generator=gen)  # (B, 1)
    harmonics = sum(torch.sin(2 * torch.pi * k * f0 * t) / k for k in range(1, 8))  # (B, S)
    envelope = (0.5 * (1 + torch.sin(2 * torch.pi * 3.0 * t))) ** 2  # (S,)
    noise = 0.01 * torch.randn(batch, t.numel(), generator=gen)
    return (0.2 * envelope * harmonics + noise).clamp(-1, 1).float()


def _reference(audio: torch.Tensor) -> np.ndarray:
    rows = []
    for clip in audio:
        result = speechmos_dnsmos.run(clip.numpy(), 16_000)
        rows.append([result["ovrl_mos"], result["sig_mos"], result["bak_mos"], result["p808_mos"]])
    return np.array(rows, np.float64)


def test_per_clip_equals_speechmos_run() -> None:
    audio = _voiced(2, seed=1)
    ours = deep_noise_suppression_mean_opinion_score(audio)
    assert ours.shape == (2, 4)
    np.testing.assert_allclose(ours.numpy(), _reference(audio), atol=ATOL)
    assert ((ours > 1.0) & (ours < 5.0)).all()


def test_short_clip_is_tiled_like_speechmos() -> None:
    audio = _voiced(1, seed=2, seconds=2.3)  # 2.3 -> 4.6 -> 9.2 s
    np.testing.assert_allclose(deep_noise_suppression_mean_opinion_score(audio).numpy(), _reference(audio), atol=ATOL)


def test_metric_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    cache: dict = {}
    score = functional._dnsmos_one

    def cached(wav, personalized, num_threads):  # the contract re-scores the same clips
        key = (wav.tobytes(), personalized)
        if key not in cache:
            cache[key] = score(wav, personalized, num_threads)
        return cache[key]

    monkeypatch.setattr(functional, "_dnsmos_one", cached)
    batches = [(_voiced(1, seed),) for seed in (3, 4)]
    reference = _reference(torch.cat([b[0] for b in batches])).mean(0)
    expected = {key: reference[i] for i, key in enumerate(KEYS)}
    total = check_metric_contract(DNSMOS, batches, atol=ATOL, expected=expected)
    assert set(total) == set(KEYS)


def test_bad_clips_are_excluded_and_rates_refused() -> None:
    audio = torch.cat([_voiced(1, seed=5), torch.zeros(1, int(SECONDS * 16_000))])
    metric = DNSMOS()
    with pytest.warns(UserWarning, match="clip 1 excluded: preds is silent"):
        metric.update(audio)
    assert int(metric.num_excluded) == 1 and metric.per_clip().shape == (1, 4)
    with pytest.raises(MetricInputError, match="sample_rate=22050"):
        DNSMOS(sample_rate=22_050)
    with pytest.raises(MetricInputError, match=r"clip 0: preds peaks at 1.5"):
        deep_noise_suppression_mean_opinion_score(torch.full((1, 16_000), 1.5))
