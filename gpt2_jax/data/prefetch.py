"""An ordered, bounded, background producer: `f(start), f(start + 1), ...` computed ahead by threads.

The TensorFlow-free input path. The loader's batches are pure functions of the step, so the
pipeline is just "compute the next few steps while the accelerator runs this one". Worker
threads evaluate `produce(step)` for the steps ahead; results come back strictly in step order
(so the sequence is the tf.data path's, element for element), at most `depth` steps are in
flight (bounded memory), and an exception in a worker is raised, with its own type, when the
consumer reaches that step. numpy's copies release the GIL, so a thread or two keep up with a
train step, as tf.data's private pool does.

The iterator owns its threads: closing it (or garbage-collecting it, or interpreter exit, since
the workers are daemons) stops them without waiting for the rest of the infinite stream.

References:
  Python `concurrent.futures` (ordered futures); tf.data `prefetch` semantics (buffer of ready elements).
"""

from __future__ import annotations

import collections
import concurrent.futures
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")


class Prefetcher(Iterator[T]):
    """Iterator over `produce(start), produce(start + 1), ...` computed by `threads` daemon
    threads, at most `depth` steps ahead of the consumer."""

    def __init__(self, produce: Callable[[int], T], start: int, *, threads: int = 2, depth: int = 2):
        if threads < 1 or depth < 1:
            raise ValueError(f"threads={threads} and depth={depth} must be >= 1")
        self._produce = produce
        self._next_step = start
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="gpt2_jax-prefetch")
        self._pending: collections.deque[concurrent.futures.Future] = collections.deque()
        self._depth = depth + threads  # ready buffer + those being computed, as tf.data map + prefetch
        self._closed = False

    def _fill(self) -> None:
        while len(self._pending) < self._depth:
            self._pending.append(self._pool.submit(self._produce, self._next_step))
            self._next_step += 1

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        self._fill()
        try:
            return self._pending.popleft().result()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stops the workers; steps not yet started are dropped."""
        if not self._closed:
            self._closed = True
            for future in self._pending:
                future.cancel()
            self._pending.clear()
            self._pool.shutdown(wait=False, cancel_futures=True)

    def __del__(self):
        self.close()
