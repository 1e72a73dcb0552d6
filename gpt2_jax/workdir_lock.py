"""One writer per directory: an OS file lock held for the life of a run.

Two `gpt2-jax train` runs in one workdir interleave their checkpoints and metrics (both
"succeed", one's state is lost), and two `data prepare` runs into one output race on the
staging files. `hold(directory)` takes an exclusive `flock` on `DIRECTORY/.gpt2_jax.lock`
without waiting; a second holder is refused at once with the first one's pid and host, which
the holder writes into the lock file. The kernel releases a flock when its file descriptor is
closed, which happens on every exit, SIGKILL included: a lock left behind by a crash is stale
by construction and the next run simply takes it (the file itself stays; its content is only
a hint). flock on NFS is emulated with POSIX locks by Linux (since 2.6.12), so it also works
across the hosts of a shared file system where the server supports locking.

References:
  flock(2) (Linux man-pages): locks are associated with an open file description and released
  when all its descriptors are closed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pathlib
import socket
import time
from typing import Iterator

LOCK_NAME = ".gpt2_jax.lock"


class BusyError(RuntimeError):
    """Another process holds the directory's lock; the message names it."""


def _holder(path: pathlib.Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on host {info['host']} ({info.get('what', 'a run')}, started {info.get('since', '?')})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its pid is not recorded yet)"


@contextlib.contextmanager
def hold(directory: str | os.PathLike, what: str) -> Iterator[pathlib.Path]:
    """Holds the exclusive lock of `directory` (created if missing) for the block; raises
    BusyError at once if another process holds it. `what` names this run in the lock file."""
    directory = pathlib.Path(directory)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise BusyError(f"{str(directory)!r} is in use by {_holder(path)}; wait for it to finish, stop it, "
                            f"or choose another directory") from None

        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode() + b"\n", 0)
        yield path
    finally:
        if created and os.listdir(directory) == [LOCK_NAME]:  # nothing was written: leave nothing behind
            with contextlib.suppress(OSError):
                path.unlink()
                directory.rmdir()
        os.close(fd)  # releases the lock (the kernel does the same on any exit)
