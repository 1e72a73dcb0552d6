"""Stopping a run cleanly: SIGTERM, SIGINT or a multi-host preemption notice end training at
the next step boundary, with a checkpoint.

Schedulers that reclaim machines (TPU VMs and spot instances, SLURM's `--signal`, Kubernetes)
send SIGTERM and wait a grace period before SIGKILL. `StopRequest` turns the signal into a flag
that the training loop reads between steps: the step in flight finishes, the loop saves a
checkpoint, waits until it is final, says so and returns.

One process: Python handlers for SIGTERM and SIGINT. A second SIGINT raises KeyboardInterrupt
at once, for a user who will not wait for the checkpoint. Handlers can only be installed from
the main thread; elsewhere (a notebook's worker thread) signals keep their default behaviour.

Several processes must stop at the same step, or the step's collectives and the checkpoint's
barriers would hang. JAX's preemption service (started by `jax.distributed.initialize`) catches
SIGTERM in C++ on whichever host receives it, agrees with the other hosts on a step through the
coordination service, and `reached_preemption_sync_point(step)` turns true on every host at
that step. So with the service running, SIGTERM is left to JAX (a Python handler would replace
its handler); with several processes SIGINT keeps Python's default (KeyboardInterrupt, no
checkpoint), since one process's Ctrl-C cannot be agreed on without a collective every step.

References:
  jax.experimental.multihost_utils.reached_preemption_sync_point
  https://docs.python.org/3/library/signal.html (handlers run in the main thread, between bytecodes)
"""

from __future__ import annotations

import signal
import threading
import time

import jax


def _jax_preemption_service() -> bool:
    """Whether JAX's preemption sync manager is running (multi-process runs)."""
    if not jax.distributed.is_initialized():
        return False
    try:
        from jax._src import distributed as jax_distributed
    except ImportError:  # pragma: no cover - layout of a future JAX
        return False
    return getattr(jax_distributed.global_state, "preemption_sync_manager", None) is not None


class StopRequest:
    """Context manager: installs the handlers, restores the previous ones on exit.

    The loop calls `should_stop(step)` after every step (on every process, with the same step);
    `reason` names what asked to stop and `signal_step` is the last step boundary the loop had
    passed when a signal arrived (None for the multi-host sync point)."""

    def __init__(self):
        self.reason: str | None = None
        self.signal_step: int | None = None
        self.signal_time: float | None = None
        self.handled: tuple[str, ...] = ()  # what this process turns into a clean stop
        self._step = 0
        self._previous: dict[int, object] = {}
        self._sync = False

    def __enter__(self) -> "StopRequest":
        self._sync = _jax_preemption_service()
        wanted = []
        if not self._sync:
            wanted.append(signal.SIGTERM)
        if jax.process_count() == 1:
            wanted.append(signal.SIGINT)
        if threading.current_thread() is threading.main_thread():
            for sig in wanted:
                self._previous[sig] = signal.signal(sig, self._handle)
        self.handled = tuple(signal.Signals(s).name for s in self._previous)
        if self._sync:
            self.handled += ("SIGTERM (JAX preemption sync point)",)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without waiting for the checkpoint
        if self.reason is None:
            self.reason, self.signal_step, self.signal_time = signal.Signals(signum).name, self._step, time.time()

    def should_stop(self, step: int) -> bool:
        """True at the first step boundary after a stop was requested (on every process alike)."""
        self._step = step
        if self._sync:
            from jax.experimental import multihost_utils

            if multihost_utils.reached_preemption_sync_point(step):
                if self.reason is None:  # when the notice came is known to JAX only
                    self.reason = "preemption notice (SIGTERM, JAX preemption sync point)"
                return True
        return self.reason is not None  # with several processes, only the sync point sets it
