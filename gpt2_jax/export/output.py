"""All-or-nothing outputs: a file or directory appears complete under its name, or not at all.

Exports run for minutes at 124M-1.5B parameters; an interrupted one must not leave a file that
a loader would accept. Writers get a temporary sibling path (same directory, so the final
`os.replace` is an atomic rename on one file system) and the result is moved into place only
when the writer returns. An existing output is refused unless `force`; when forced, the old
output is removed only after the new one is complete.

`--force` replaces only what this tool wrote. A directory output carries a marker file
(`MARKER`); a forced directory must carry it and hold nothing the new output does not also
have, so a folder with the user's own files is never replaced. A one-file output may replace
only a file that its format's `sniff` recognises. `.`, `..`, `/`, the home directory and any
directory that holds the current one are refused outright. A path ending in a file suffix is
refused for a directory format (`--out model.onnx` would otherwise be a folder). Temporary
siblings left by a killed run (`.NAME.*.tmp` / `.old`) are removed by the next run once they
have not changed for `STALE_SECONDS`, and reported (not touched) before that, since another
export may still be writing them.

References:
  POSIX rename(2): atomic replacement within one file system.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Callable, Iterator

from gpt2_jax.export.names import ExportError
from gpt2_jax.os_errors import find_os_error


MARKER = ".gpt2_jax-output"
FILE_SUFFIXES = (".safetensors", ".gguf", ".bin", ".onnx", ".pb", ".json", ".npz", ".pt", ".pth", ".h5", ".ckpt", ".txt")
STALE_SECONDS = 600


def refuse_unsafe_target(path: str | os.PathLike, error: type[Exception] = ExportError) -> pathlib.Path:
    """Refuses an output path that names `/`, the home directory, or the current directory or
    one holding it (`''`, `.`, `..`): replacing those would destroy what the user works in."""
    path = pathlib.Path(path)
    resolved, cwd = path.resolve(), pathlib.Path.cwd().resolve()
    if str(path) in ("", ".") or resolved == pathlib.Path(resolved.anchor) or resolved == pathlib.Path.home().resolve() \
            or cwd == resolved or resolved in cwd.parents:
        raise error(f"output {str(path)!r} ({resolved}) is the root, the home directory or holds the current "
                    f"directory; give a new path such as ./out/model")
    return path


def check_new_output(path: str | os.PathLike, force: bool, *, directory: bool | None = None,
                     sniff: Callable[[pathlib.Path], bool] | None = None, what: str = "") -> pathlib.Path:
    """Refuses an existing output (a file, or a non-empty directory) unless `force`, and with
    `force` anything this tool did not write (see the module docstring). `directory` says which
    kind the format writes (None: not known here); `sniff` recognises the format's own files."""
    path = refuse_unsafe_target(path)
    kind = f" ({what})" if what else ""
    if directory and path.suffix.lower() in FILE_SUFFIXES:
        raise ExportError(f"--out {str(path)!r} ends in {path.suffix!r}, a file name, but this format{kind} writes a "
                          f"directory; give a directory name such as {str(path.with_suffix(''))!r}")
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return path
    if not force:
        what_is = "a file" if path.is_file() else "a directory that is not empty"
        raise ExportError(f"output {str(path)!r} already exists ({what_is}); choose a new path or pass --force to replace it")
    refuse = f"--force replaces only an output of the same format written by gpt2-jax; remove {str(path)!r} yourself " \
             f"or choose a new path"
    if directory is False and not path.is_file():
        raise ExportError(f"output {str(path)!r} is a directory but this format{kind} writes one file; {refuse}")
    if directory is False and sniff is not None and not sniff(path):
        raise ExportError(f"output {str(path)!r} is not a file of this format{kind}; {refuse}")
    if directory and not path.is_dir():
        raise ExportError(f"output {str(path)!r} is a file but this format{kind} writes a directory; {refuse}")
    if directory and not (path / MARKER).is_file():
        raise ExportError(f"output {str(path)!r} is a directory not written by gpt2-jax (it has no {MARKER}); {refuse}")
    return path


def _clean_leftovers(path: pathlib.Path) -> None:
    """Removes `.NAME.*.tmp`/`.old` siblings of `path` left by a killed run (see STALE_SECONDS)."""
    for left in list(path.parent.glob(f".{path.name}.*.tmp")) + list(path.parent.glob(f".{path.name}.*.old")):
        try:
            age = time.time() - max([left.lstat().st_mtime] + [p.lstat().st_mtime for p in left.rglob("*")])
        except OSError:
            continue
        if age >= STALE_SECONDS:
            _remove(left)
            print(f"note: removed {str(left)!r}, left by an interrupted run", file=sys.stderr)
        else:
            print(f"warning: {str(left)!r} is a temporary output of another run (changed {age:.0f} s ago); "
                  f"if none is running, delete it", file=sys.stderr)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, directory: bool, force: bool = False) -> Iterator[pathlib.Path]:
    """Yields a temporary path (a new empty directory when `directory`, else a file name that does
    not exist yet) that replaces `path` when the block succeeds; removed on any failure."""
    path = check_new_output(path, force, directory=directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(path)
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
        if directory:
            (tmp / MARKER).write_text("written by gpt2-jax; `--force` may replace this directory\n")
            _check_replaceable(tmp, path)
        else:
            tmp.chmod(0o644)
        _replace(tmp, path)
    except BaseException as e:
        _remove(tmp)
        os_error = None if isinstance(e, OSError) else find_os_error(e, path)
        if os_error is not None:  # a library's own error type for a full disk: reported as the OSError it is
            raise os_error from e
        raise


def _check_replaceable(new: pathlib.Path, path: pathlib.Path) -> None:
    """A forced directory must hold nothing that the new output does not also have (the
    format's own files): anything else is the user's and stays."""
    if not path.is_dir():
        return
    foreign = sorted({p.name for p in path.iterdir()} - {p.name for p in new.iterdir()})
    if foreign:
        raise ExportError(f"output {str(path)!r} holds files this export does not write ({', '.join(foreign[:5])}); "
                          f"--force replaces only an output of the same format; remove them or choose a new path")


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
