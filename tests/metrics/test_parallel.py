"""The shared process pool: same results and exclusions as in-process scoring, one pool reused."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from metrics.functional import parallel
from metrics.functional.intelligibility import _stoi_update
from metrics.functional.pesq import _pesq_update
from tests.metrics.test_stoi import _speechlike


def _pid_of_square(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def test_map_keeps_order_runs_in_workers_and_reuses_the_pool() -> None:
    results = parallel.map_jobs(_pid_of_square, list(range(6)), num_workers=2)
    assert [r for r, _ in results] == [x * x for x in range(6)]
    assert os.getpid() not in {pid for _, pid in results}
    pool = parallel._shared_pool(2)
    parallel.map_jobs(_pid_of_square, [1, 2], num_workers=2)
    assert parallel._shared_pool(2) is pool


def test_one_worker_or_one_job_stays_in_process() -> None:
    assert parallel.map_jobs(_pid_of_square, [1, 2], num_workers=1) == [(1, os.getpid()), (4, os.getpid())]
    assert parallel.map_jobs(_pid_of_square, [3], num_workers=2) == [(9, os.getpid())]


@pytest.mark.parametrize("extended", [False, True])
def test_stoi_pool_equals_in_process_with_exclusions(extended: bool) -> None:
    preds, target = _speechlike(4, 16_000, seed=3)
    target[1] = 0.0  # silent: excluded before scoring
    preds[2, 1_600:], target[2, 1_600:] = 0.0, 0.0  # 0.1 s of sound: pystoi finds too few frames
    pooled = _stoi_update(preds, target, 16_000, extended, num_workers=2)
    local = _stoi_update(preds, target, 16_000, extended, num_workers=1)
    # equal up to float rounding: BLAS may split pystoi's sums differently in a worker process
    np.testing.assert_allclose(pooled[0].numpy(), local[0].numpy(), rtol=1e-12, atol=0)
    assert pooled[1] == local[1] and [i for i, _ in pooled[1]] == [1, 2]
    assert "fewer than 30 non-silent" in pooled[1][1][1]


def test_pesq_pool_equals_in_process_with_exclusions() -> None:
    preds, target = _speechlike(3, 16_000, seed=4)
    preds[1] = torch.zeros(16_000)
    pooled = _pesq_update(preds, target, num_workers=2)
    local = _pesq_update(preds, target, num_workers=1)
    np.testing.assert_array_equal(pooled[0].numpy(), local[0].numpy())
    assert pooled[1] == local[1] and [i for i, _ in pooled[1]] == [1]
