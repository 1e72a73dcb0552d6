"""One line for an operating-system error a user can cause: which path, what went wrong, the fix.

A full disk, a read-only mount, a missing permission or a path of the wrong kind are not bugs:
the command line (cli.py) turns any OSError that reaches it into `error: PATH: WHAT; FIX`
instead of a traceback. The fix depends only on the errno.

References:
  errno(3) (Linux man-pages): ENOSPC, EDQUOT, EROFS, EACCES, EPERM, EISDIR, ENOTDIR, EEXIST,
  ENOTEMPTY, ENOENT, ENAMETOOLONG.
"""

from __future__ import annotations

import errno
import os
import re

_FIXES = {
    errno.ENOSPC: "the disk is full; free space or choose a path on another disk",
    errno.EDQUOT: "the disk quota is used up; free space or choose a path on another disk",
    errno.EROFS: "the file system is read-only; choose a writable path",
    errno.EACCES: "permission denied; choose a path you can write or fix its permissions",
    errno.EPERM: "operation not permitted; choose a path you can write or fix its permissions",
    errno.EISDIR: "it is a directory; give a file path",
    errno.ENOTDIR: "a part of the path is a file, not a directory; fix the path",
    errno.EEXIST: "it already exists; choose a new path or remove it",
    errno.ENOTEMPTY: "the directory is not empty; choose a new path or empty it",
    errno.ENOENT: "no such file or directory; check the path",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
}


def describe(error: OSError) -> str:
    """`PATH: what happened; the fix` (without the `error: ` prefix)."""
    paths = [p for p in (error.filename, error.filename2) if p not in (None, "")]
    where = " -> ".join(repr(str(p)) for p in paths) or "(no path given)"
    what = error.strerror or str(error) or type(error).__name__
    fix = _FIXES.get(error.errno, "check the path and the file system")
    return f"{where}: {what}; {fix}"


# How libraries that are not Python report an OS error in their messages: Rust's io::Error
# (safetensors: "... (os error 28)"), TensorStore ("[os_error_code='28']"), and Python's own str().
_ERRNO_IN_TEXT = re.compile(r"os error (\d+)|os_error_code='(\d+)'|\[Errno (\d+)\]")


def errno_in_message(error: BaseException) -> int | None:
    m = _ERRNO_IN_TEXT.search(str(error))
    return int(next(g for g in m.groups() if g)) if m else None


def find_os_error(error: BaseException, path=None) -> OSError | None:
    """The OSError `error` is, or was caused by (libraries wrap them), if any; an error whose
    message carries an errno (see `errno_in_message`) becomes one, naming `path`."""
    seen, current = 0, error
    while current is not None and seen < 10:
        if isinstance(current, OSError) and current.errno is not None:
            return current
        code = errno_in_message(current)
        if code is not None:
            return OSError(code, f"{os.strerror(code)} ({type(current).__name__})", None if path is None else str(path))
        current, seen = current.__cause__ or current.__context__, seen + 1
    return None


def check_writable(path, *, directory: bool) -> None:
    """Raises the OSError that writing `path` (a directory, or else a file) would raise later,
    now, before the work starts: a path of the wrong kind, or a parent that is a file, is
    read-only or is not writable by this user."""
    import pathlib

    path = pathlib.Path(path)
    if path.exists():
        if directory and not path.is_dir():
            raise OSError(errno.ENOTDIR, "exists and is not a directory", str(path))
        if not directory and path.is_dir():
            raise OSError(errno.EISDIR, "is a directory", str(path))
        target = path if directory else path.parent
    else:
        target = path.parent
        while not target.exists() and target != target.parent:
            target = target.parent
        if not target.is_dir():
            raise OSError(errno.ENOTDIR, "a part of the path is a file", str(target))
    if not os.access(target, os.W_OK | os.X_OK):
        probe = errno.EROFS if _read_only(target) else errno.EACCES
        raise OSError(probe, os.strerror(probe), str(target))


def _read_only(path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False
