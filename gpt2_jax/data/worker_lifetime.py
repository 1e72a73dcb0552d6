"""Worker processes that die with their parent, even when the parent is killed with SIGKILL.

`data prepare` cleans and tokenizes in spawned worker processes (prepare.py). When the parent
is killed, a ProcessPoolExecutor's workers are not told: they were seen running on with
parent 1, writing more shards into a directory nobody owns any more. Each worker therefore
(1) asks Linux to send it SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG; checked once
after the call, since the parent may already be gone), and (2) watches its parent id in a
daemon thread, which also covers other Unixes and a parent thread that exits early (PDEATHSIG
follows the thread that forked). Workers ignore SIGINT: a Ctrl-C reaches the whole process
group, and the parent alone decides how to stop (without one traceback per worker).

References:
  prctl(2) (Linux man-pages), PR_SET_PDEATHSIG; getppid(2).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from typing import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_SECONDS = 0.5


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_SECONDS)
    os._exit(1)  # the parent is gone: nobody will read what this worker makes


def die_with_parent(parent_pid: int) -> None:
    """Call first thing in a worker process started by `parent_pid`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watcher thread below still ends the worker
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), daemon=True, name="gpt2_jax-parent-watch").start()


def start_worker(parent_pid: int, initializer: Callable, initargs: tuple) -> None:
    """A pool initializer: `die_with_parent`, then the real initializer."""
    die_with_parent(parent_pid)
    initializer(*initargs)
