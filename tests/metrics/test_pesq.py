"""Wide-band PESQ: equal to the ``pesq`` package; silent clips excluded, never scored 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pesq import pesq as reference_pesq

from metrics.errors import MetricInputError
from metrics.functional.pesq import wideband_pesq
from metrics.pesq import WidebandPESQ
from tests.metrics.tester import check_metric_contract

ATOL = 1e-6  # the same C code on the same float32 samples


def _speechlike(batch: int, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16_000
    envelope = (0.5 * (1 + torch.sin(2 * torch.pi * 2.0 * t))) ** 2 + 0.02  # (S,) syllable-like
    clean = 0.3 * envelope * torch.randn(batch, samples, generator=gen)  # (B, S)
    noisy = clean + 0.03 * torch.randn(batch, samples, generator=gen)  # (B, S)
    return noisy.clamp(-1, 1), clean.clamp(-1, 1)


def _reference(preds: torch.Tensor, target: torch.Tensor) -> list[float]:
    return [reference_pesq(16_000, t.numpy(), p.numpy(), "wb") for p, t in zip(preds, target)]


@pytest.mark.parametrize("num_workers", [1, 2])
def test_per_clip_equals_pesq_package(num_workers: int) -> None:
    preds, target = _speechlike(4, 24_000, seed=1)  # 4 clips: the pool is used with 2 workers
    ours = wideband_pesq(preds, target, num_workers=num_workers)
    np.testing.assert_allclose(ours.numpy(), _reference(preds, target), atol=ATOL)
    assert float(ours.max()) < 4.5  # degraded speech scores below the 4.644 ceiling
    np.testing.assert_allclose(wideband_pesq(target[:1], target[:1]).numpy(), [4.644], atol=1e-3)


def test_metric_contract_and_mean_of_reference() -> None:
    batches = [_speechlike(1, 16_000, seed) for seed in (2, 3, 4)]
    expected = np.mean([v for p, t in batches for v in _reference(p, t)])
    check_metric_contract(lambda: WidebandPESQ(num_workers=1), batches, atol=ATOL, expected=expected)


def test_silent_clips_are_excluded_not_zero() -> None:
    preds, target = _speechlike(3, 16_000, seed=5)
    target[1] = 0.0
    preds[2] = 0.0
    metric = WidebandPESQ(num_workers=1)
    with pytest.warns(UserWarning) as record:
        metric.update(preds, target)
    messages = " ".join(str(w.message) for w in record)
    assert "clip 1 excluded: target is silent" in messages
    assert "clip 2 excluded: preds is silent" in messages
    assert int(metric.num_excluded) == 2
    np.testing.assert_allclose(metric.per_clip().numpy(), _reference(preds[:1], target[:1]), atol=ATOL)


def test_no_utterances_error_of_pesq_excludes_the_clip(monkeypatch: pytest.MonkeyPatch) -> None:
    # PESQ aligns levels, so only all-zero input makes the ITU code give up; switch our own
    # silence check off to show that pesq's NoUtterancesError itself excludes the clip too
    import metrics.functional.pesq as functional

    monkeypatch.setattr(functional, "pair_problem", lambda *args, **kwargs: None)
    preds, target = _speechlike(2, 16_000, seed=6)
    target[0] = 0.0
    with pytest.raises(Exception, match="No utterances"):
        reference_pesq(16_000, target[0].numpy(), preds[0].numpy(), "wb")
    scores, excluded = functional._pesq_update(preds, target, num_workers=1)
    assert [index for index, _ in excluded] == [0]
    assert "NoUtterancesError" in excluded[0][1]
    np.testing.assert_allclose(scores.numpy(), _reference(preds[1:], target[1:]), atol=ATOL)


def test_bad_rates_and_lengths_raise_clearly() -> None:
    with pytest.raises(MetricInputError, match="sample_rate=8000"):
        WidebandPESQ(sample_rate=8_000)
    preds, target = _speechlike(1, 16_000, seed=6)
    with pytest.raises(MetricInputError, match="preds are at 16000 Hz but target at 22050 Hz"):
        from metrics.functional.pesq import _pesq_update

        _pesq_update(preds, target, 16_000, target_sample_rate=22_050)
    with pytest.raises(MetricInputError, match="clip 0: preds has 16000 samples but target has 12000"):
        wideband_pesq(preds, target[:, :12_000])
