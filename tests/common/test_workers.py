"""exit_with_parent: a worker ends when the process that started it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# the worker: arms exit_with_parent (Linux's parent-death signal, or the polling fallback), then idles
WORKER = ("import os, sys, time; import common.workers as w\n"
          "if sys.argv[1] == 'poll': w._set_parent_death_signal = lambda signum: False\n"
          "w.exit_with_parent(os.getppid(), poll_seconds=0.1); print('ready', flush=True); time.sleep(60)")
# the parent: starts the worker, says its pid once it is armed, then idles until killed
PARENT = ("import subprocess, sys, time\n"
          "child = subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE, text=True)\n"
          "child.stdout.readline(); print(child.pid, flush=True); time.sleep(60)")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper has ended)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process states from /proc (Linux)")
@pytest.mark.parametrize("mode", ["prctl", "poll"])
def test_worker_exits_when_its_parent_is_killed(mode: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, WORKER, mode], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    assert _alive(worker)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 3
    while time.time() < deadline and _alive(worker):
        time.sleep(0.05)
    still = _alive(worker)
    if still:
        os.kill(worker, signal.SIGKILL)
    assert not still, f"worker {worker} outlived its killed parent ({mode})"
