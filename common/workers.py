"""Worker processes that end with the process that started them.

A process pool's workers wait for their next task on a pipe that their siblings also hold
open, so when the parent is killed (``kill -9``, the OOM killer) they never see it close:
they stay behind, idle, each holding its libraries' memory. :func:`exit_with_parent`, run as
the pool's initializer, ends such a worker as soon as its parent is gone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def exit_with_parent(parent_pid: int, poll_seconds: float = 1.0, kernel_signal: bool = True) -> None:
    """End this process when the process ``parent_pid`` (the one that started it) ends.

    On Linux the kernel sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``);
    elsewhere a daemon thread checks every ``poll_seconds`` whether the parent is still the
    parent (an orphan is adopted by another process) and exits if not.

    Args:
        parent_pid: ``os.getpid()`` of the parent, taken there and passed in (``initargs``),
            so that a parent which died before this call is noticed too.
        poll_seconds: interval of the fallback's check.
        kernel_signal: use Linux's signal where it exists. Linux sends it when the parent
            *thread* that started this process ends, so a pool that outlives the thread which
            started it (a process-wide pool started by whichever thread used it first) passes
            False and relies on the check.

    Example::

        ProcessPoolExecutor(2, initializer=exit_with_parent, initargs=(os.getpid(),))
    """
    if kernel_signal and _set_parent_death_signal(signal.SIGKILL):
        if os.getppid() != parent_pid:  # the parent died before the signal was set
            os._exit(1)
        return
    watcher = threading.Thread(target=_watch_parent, args=(parent_pid, poll_seconds), name="exit-with-parent",
                               daemon=True)
    watcher.start()


def _set_parent_death_signal(signum: int) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent ends; False where unsupported.

    Linux sends it when the parent *thread* that started this process ends: a pool used in
    a ``with`` block starts its workers from the thread that owns it, which outlives them.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0:
            return True
        log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as err:
        log.debug("prctl not available: %s", err)
    return False


def _watch_parent(parent_pid: int, poll_seconds: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(poll_seconds)
    os._exit(1)  # no cleanup: a half-written clip folder is removed by the next run
