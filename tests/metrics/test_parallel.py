"""The shared process pool: same results and exclusions as in-process scoring, one pool reused."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from metrics.functional import parallel
from metrics.functional.intelligibility import _stoi_update
from metrics.functional.pesq import _pesq_update
from tests.metrics._audio_pairs import speechlike_pair


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
    preds, target = speechlike_pair(4, 16_000, seed=3)
    target[1] = 0.0  # silent: excluded before scoring
    preds[2, 1_600:], target[2, 1_600:] = 0.0, 0.0  # 0.1 s of sound: pystoi finds too few frames
    pooled = _stoi_update(preds, target, 16_000, extended, num_workers=2)
    local = _stoi_update(preds, target, 16_000, extended, num_workers=1)
    # equal up to float rounding: BLAS may split pystoi's sums differently in a worker process
    np.testing.assert_allclose(pooled[0].numpy(), local[0].numpy(), rtol=1e-12, atol=0)
    assert pooled[1] == local[1] and [i for i, _ in pooled[1]] == [1, 2]
    assert "fewer than 30 non-silent" in pooled[1][1][1]


def test_pesq_pool_equals_in_process_with_exclusions() -> None:
    preds, target = speechlike_pair(3, 16_000, seed=4)
    preds[1] = torch.zeros(16_000)
    pooled = _pesq_update(preds, target, num_workers=2)
    local = _pesq_update(preds, target, num_workers=1)
    np.testing.assert_array_equal(pooled[0].numpy(), local[0].numpy())
    assert pooled[1] == local[1] and [i for i, _ in pooled[1]] == [1]


# a process that starts the shared pool, prints its workers' pids, then idles until killed
_POOL_OWNER = ("import os, time\n"
               "from metrics.functional import parallel\n"
               "from tests.metrics.test_parallel import _pid_of_square\n"
               "pids = {pid for _, pid in parallel.map_jobs(_pid_of_square, list(range(8)), num_workers=2)}\n"
               "print(*sorted(pids), flush=True); time.sleep(60)")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isfile("/proc/self/stat"), reason="reads process states from /proc (Linux)")
def test_workers_exit_when_the_owner_is_killed() -> None:
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    owner = subprocess.Popen([sys.executable, "-c", _POOL_OWNER], cwd=repo, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(repo)})
    workers = [int(pid) for pid in owner.stdout.readline().split()]
    assert workers and all(_alive(pid) for pid in workers)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    deadline = time.time() + 5
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    left = [pid for pid in workers if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"pool workers {left} outlived the killed process that owned them"
