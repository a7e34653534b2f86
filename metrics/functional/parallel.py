"""One process pool kept alive across metric updates, for per-clip library calls.

``pesq`` (ITU C code called with the GIL held) and ``pystoi`` (many small numpy steps) score
one clip at a time and cannot use a second core from threads. Clips are therefore scored in
worker processes, one per core. Starting workers costs about as much as scoring a few
seconds of speech, so the pool is started on first use and reused by every later update
(the start-up is paid once per process, like loading a model); it is shut down at exit.

Workers are forked (POSIX): they inherit the imported libraries and only run numpy and C
code on the arrays they are sent. A pool inherited by a forked child (e.g. a DataLoader
worker) is not reused there; a new one is started in that process.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

import torch
from torch import Tensor

Job = TypeVar("Job")
Result = TypeVar("Result")

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_key: tuple[int, int] | None = None  # (owner pid, workers)


def default_workers() -> int:
    """Cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _init_worker(owner_pid: int) -> None:
    """Pool initializer: one BLAS thread per worker, and the worker ends with its owner.

    pystoi's many small matrix products run several times faster on one BLAS thread than on
    threads that wait for each other (and for the other workers' cores). Without the second
    part, a killed owner would leave its workers idle forever (their task pipe never closes).
    """
    from threadpoolctl import threadpool_limits

    from common.workers import exit_with_parent

    threadpool_limits(limits=1)
    # the pool lives as long as the process, not as the thread that happened to start it
    exit_with_parent(owner_pid, kernel_signal=False)


def _shared_pool(num_workers: int) -> ProcessPoolExecutor:
    global _pool, _pool_key
    key = (os.getpid(), num_workers)
    with _lock:
        if _pool is None or _pool_key != key:
            if _pool is not None and _pool_key is not None and _pool_key[0] == key[0]:
                _pool.shutdown(wait=False, cancel_futures=True)
            context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
            _pool, _pool_key = ProcessPoolExecutor(max_workers=num_workers, mp_context=context,
                                                   initializer=_init_worker, initargs=(os.getpid(),)), key
        return _pool


def shutdown_pool() -> None:
    """Stop the shared workers now (they are otherwise stopped at interpreter exit)."""
    global _pool, _pool_key
    with _lock:
        if _pool is not None and _pool_key is not None and _pool_key[0] == os.getpid():
            _pool.shutdown(wait=True, cancel_futures=True)
        _pool, _pool_key = None, None


def map_jobs(fn: Callable[[Job], Result], jobs: Sequence[Job], num_workers: int) -> list[Result]:
    """``[fn(job) for job in jobs]``, spread over ``num_workers`` processes when that helps.

    Args:
        fn: a module-level (picklable) function that returns its errors as values; an
            exception raised inside a worker would stop the whole map.
        jobs: picklable arguments, one per clip.
        num_workers: processes; 1 (or a single job) runs in this process.

    Returns:
        The results in the order of ``jobs``.
    """
    if num_workers <= 1 or len(jobs) < 2:
        return [fn(job) for job in jobs]
    try:
        return list(_shared_pool(num_workers).map(fn, jobs))
    except BrokenProcessPool:  # a worker was killed (e.g. out of memory): start afresh once
        shutdown_pool()
        return list(_shared_pool(num_workers).map(fn, jobs))


def score_valid(fn: Callable[[Job], float | str], jobs: Sequence[Job], valid: Sequence[int],
                excluded: list[tuple[int, str]], num_workers: int | None) -> tuple[Tensor, list[tuple[int, str]]]:
    """Score the clips ``valid`` (one job each) and gather their scores and exclusions.

    Args:
        fn: per-clip scorer returning a float, or a string that says why the clip is excluded.
        jobs: one per entry of ``valid``.
        valid: clip indices of ``jobs``.
        excluded: ``(index, reason)`` already excluded before scoring; extended in place.
        num_workers: processes (``None``: :func:`default_workers`).

    Returns:
        float64 ``(N_ok,)`` scores in clip order and the sorted ``(index, reason)`` exclusions.
    """
    results = map_jobs(fn, jobs, default_workers() if num_workers is None else num_workers)
    values = []
    for i, result in zip(valid, results):
        if isinstance(result, str):
            excluded.append((i, result))
        else:
            values.append(result)
    return torch.tensor(values, dtype=torch.float64), sorted(excluded)
