"""STOI / ESTOI: equal to pystoi on the same seeded signals; bad clips are excluded, not zeroed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pystoi import stoi as reference_stoi

from metrics.errors import MetricInputError
from metrics.functional.intelligibility import (
    extended_short_time_objective_intelligibility,
    short_time_objective_intelligibility,
)
from metrics.intelligibility import ESTOI, STOI
from tests.metrics._audio_pairs import speechlike_pair
from tests.metrics.tester import check_metric_contract

ATOL = 1e-10  # same pystoi call on the same float64 samples: equal up to rounding


def _reference(preds: torch.Tensor, target: torch.Tensor, extended: bool) -> list[float]:
    return [
        reference_stoi(t.double().numpy(), p.double().numpy(), 16_000, extended=extended)
        for p, t in zip(preds, target)
    ]


@pytest.mark.parametrize("extended", [False, True])
def test_per_clip_equals_pystoi(extended: bool) -> None:
    preds, target = speechlike_pair(3, 24_000, seed=1)
    ours = short_time_objective_intelligibility(preds, target, 16_000, extended=extended)
    np.testing.assert_allclose(ours.numpy(), _reference(preds, target, extended), atol=ATOL)
    # the scores are informative, not a constant: clean vs itself is 1, noisy is below
    assert ours.max() < 0.999
    same = short_time_objective_intelligibility(target, target, 16_000, extended=extended)
    np.testing.assert_allclose(same.numpy(), 1.0, atol=1e-6)


def test_other_sample_rate_equals_pystoi() -> None:
    preds, target = speechlike_pair(1, 16_000, seed=2)
    ours = short_time_objective_intelligibility(preds, target, sample_rate=8_000)
    expected = reference_stoi(target[0].double().numpy(), preds[0].double().numpy(), 8_000)
    np.testing.assert_allclose(ours.numpy(), [expected], atol=ATOL)


@pytest.mark.parametrize("metric_class,extended", [(STOI, False), (ESTOI, True)])
def test_metric_contract_and_mean_of_reference(metric_class, extended: bool) -> None:
    batches = [speechlike_pair(2, 16_000, seed) for seed in (3, 4, 5)]
    expected = np.mean([v for p, t in batches for v in _reference(p, t, extended)])
    total = check_metric_contract(lambda: metric_class(), batches, atol=ATOL, expected=expected)
    assert 0.0 < float(total) < 1.0


def test_variable_length_list_input() -> None:
    (p1, t1), (p2, t2) = speechlike_pair(1, 16_000, 6), speechlike_pair(1, 20_000, 7)
    ours = short_time_objective_intelligibility([p1[0], p2[0]], [t1[0], t2[0]])
    expected = _reference(p1, t1, False) + _reference(p2, t2, False)
    np.testing.assert_allclose(ours.numpy(), expected, atol=ATOL)


def test_bad_clips_are_excluded_and_counted() -> None:
    preds, target = speechlike_pair(4, 16_000, seed=8)
    target[1] = 0.0  # silent reference: pystoi would warn and return 1e-5
    preds[2, 10] = float("nan")
    metric = STOI()
    with pytest.warns(UserWarning) as record:
        metric.update(preds, target)
    messages = " ".join(str(w.message) for w in record)
    assert "clip 1 excluded: target is silent" in messages
    assert "clip 2 excluded: preds contains 1 non-finite" in messages
    assert int(metric.num_excluded) == 2
    np.testing.assert_allclose(
        metric.per_clip().numpy(), _reference(preds[[0, 3]], target[[0, 3]], False), atol=ATOL
    )


def test_functional_raises_naming_the_clip() -> None:
    preds, target = speechlike_pair(2, 16_000, seed=9)
    with pytest.raises(MetricInputError, match="clip 1: preds has 16000 samples but target has 15000"):
        short_time_objective_intelligibility([preds[0], preds[1]], [target[0], target[1, :15_000]])
    # under 30 non-silent frames pystoi returns 1e-5; we refuse instead
    with pytest.raises(MetricInputError, match="fewer than 30"):
        extended_short_time_objective_intelligibility(preds[:, :4_000], target[:, :4_000])


def test_all_excluded_gives_nan_with_warning() -> None:
    metric = STOI()
    with pytest.warns(UserWarning):
        metric.update(torch.zeros(1, 16_000), torch.zeros(1, 16_000))
    with pytest.warns(UserWarning, match="no clip was scored"):
        assert torch.isnan(metric.compute())


def test_library_failure_on_one_clip_excludes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import metrics.functional.intelligibility as functional

    preds, target = speechlike_pair(3, 16_000, seed=10)

    def flaky(x, y, fs, extended=False):  # fails on the second clip only
        if np.allclose(x, target[1].double().numpy()):
            raise ValueError("cannot handle this clip")
        return reference_stoi(x, y, fs, extended=extended)

    monkeypatch.setattr(functional, "_pystoi", flaky)
    metric = STOI(num_workers=1)  # the patch exists in this process only
    with pytest.warns(UserWarning, match="clip 1 excluded: STOI failed: ValueError: cannot handle this clip"):
        metric.update(preds, target)
    assert int(metric.num_excluded) == 1 and metric.per_clip().shape == (2,)
