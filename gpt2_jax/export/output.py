"""All-or-nothing outputs: a file or directory appears complete under its name, or not at all.

Exports run for minutes at 124M-1.5B parameters; an interrupted one must not leave a file that
a loader would accept. Writers get a temporary sibling path (same directory, so the final
`os.replace` is an atomic rename on one file system) and the result is moved into place only
when the writer returns. An existing output is refused unless `force`; when forced, the old
output is removed only after the new one is complete.

References:
  POSIX rename(2): atomic replacement within one file system.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile
from typing import Iterator

from gpt2_jax.export.names import ExportError


def check_new_output(path: str | os.PathLike, force: bool) -> pathlib.Path:
    """Refuses an existing output (a file, or a non-empty directory) unless `force`."""
    path = pathlib.Path(path)
    if path.exists() and not force and (path.is_file() or any(path.iterdir())):
        what = "a file" if path.is_file() else "a directory that is not empty"
        raise ExportError(f"output {str(path)!r} already exists ({what}); choose a new path or pass --force to replace it")
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, directory: bool, force: bool = False) -> Iterator[pathlib.Path]:
    """Yields a temporary path (a new empty directory when `directory`, else a file name that does
    not exist yet) that replaces `path` when the block succeeds; removed on any failure."""
    path = check_new_output(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; a model is ordinary data
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = pathlib.Path(name)
        tmp.unlink()  # writers create the file themselves (some libraries refuse an existing one)
    try:
        yield tmp
        if not tmp.exists():
            raise ExportError(f"internal error: the writer for {str(path)!r} produced nothing")
        if not directory:
            tmp.chmod(0o644)
        _replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _replace(new: pathlib.Path, path: pathlib.Path) -> None:
    if not path.exists():
        os.replace(new, path)
        return
    if path.is_file() and new.is_file():
        os.replace(new, path)
        return
    # A directory (or a type change) cannot be renamed over in one step: move the old one aside
    # first, so that at every moment `path` is either the old output or the new one.
    old = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.replace(path, old / "x")
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old / "x", path)
        raise
    finally:
        _remove(old)


def _remove(p: pathlib.Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)
