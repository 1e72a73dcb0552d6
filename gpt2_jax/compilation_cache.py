"""A persistent XLA compilation cache for the commands that compile: on by default, one directory per user.

The first step of a run is mostly compilation (seconds on a CPU for `mini`, tens of seconds for
`gpt2` on a GPU, minutes for `gpt2-xl`). JAX can keep compiled executables on disk and reuse them
when the same program is compiled again with the same jax/jaxlib, devices and flags, so a second
`gpt2-jax train` (a resume, a rerun with another seed or step count) skips most of that.
`enable()` turns this on before anything compiles:

- directory: `$GPT2_JAX_CACHE_DIR` if set, else `$XDG_CACHE_HOME/gpt2_jax/xla` (default
  `~/.cache/gpt2_jax/xla`); if that cannot be created, `WORKDIR/xla_cache` when a workdir is given;
- `GPT2_JAX_CACHE_DIR=none` (or `off`, `0`, `false`) turns it off (the tests do this);
- a cache the user configured for JAX itself (`JAX_COMPILATION_CACHE_DIR` or
  `jax.config.update("jax_compilation_cache_dir", ...)`) is left as it is.

Programs that compile in under `MIN_COMPILE_SECONDS` are not written (the many small eager
programs would only clutter the directory). A cache entry is an executable JAX loads and runs:
like JAX's own documentation says, never point this at a directory others can write to.

References:
  JAX documentation, "Persistent compilation cache" (jax_compilation_cache_dir,
  jax_persistent_cache_min_compile_time_secs, jax_persistent_cache_min_entry_size_bytes, and the
  trust warning); jax/_src/compiler.py (the /jax/compilation_cache/* monitoring events `track`
  counts); XDG Base Directory Specification (XDG_CACHE_HOME).
"""

from __future__ import annotations

import os
import pathlib

ENV_VAR = "GPT2_JAX_CACHE_DIR"
OFF_VALUES = ("none", "off", "0", "false", "no")
# A train step compiles in seconds even for `tiny` on a CPU; eager one-op programs in milliseconds.
MIN_COMPILE_SECONDS = 0.5


def default_dir() -> pathlib.Path:
    """The per-user cache directory used when $GPT2_JAX_CACHE_DIR is not set."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "gpt2_jax" / "xla"


def enable(workdir: str | os.PathLike | None = None, *, min_compile_seconds: float = MIN_COMPILE_SECONDS) -> str | None:
    """Turn on JAX's persistent compilation cache; return its directory, or None when it stays off.

    Call before the first compilation of the process (JAX decides once whether it uses a cache).
    `workdir`: where to put the cache (`WORKDIR/xla_cache`) if the user cache directory cannot be
    created (a read-only home, say)."""
    import jax

    configured = jax.config.jax_compilation_cache_dir
    if configured:  # the user set JAX's own option (JAX_COMPILATION_CACHE_DIR or config.update): theirs wins
        return configured
    choice = os.environ.get(ENV_VAR, "").strip()
    if choice.lower() in OFF_VALUES:
        return None
    candidates = [pathlib.Path(choice).expanduser()] if choice else [default_dir()]
    if workdir and not choice:
        candidates.append(pathlib.Path(workdir) / "xla_cache")
    for directory in candidates:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        jax.config.update("jax_compilation_cache_dir", str(directory))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
        # -1: no size threshold, so small models' executables are kept too (JAX's default may raise it
        # per file system).
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        return str(directory)
    return None  # nowhere writable: compile as without a cache, never fail a run for it


def track() -> dict:
    """A dict that counts, from now on, this process's compilations that asked the persistent cache
    ("requests"), found their executable there ("hits"), and the compile seconds the hits saved
    ("saved_s"), from JAX's monitoring events. For benchmarks and the cache's own check."""
    from jax import monitoring

    counts = {"requests": 0, "hits": 0, "saved_s": 0.0}
    names = {"/jax/compilation_cache/compile_requests_use_cache": "requests", "/jax/compilation_cache/cache_hits": "hits"}

    def on_event(event: str, **_) -> None:
        if event in names:
            counts[names[event]] += 1

    def on_duration(event: str, duration_secs: float, **_) -> None:
        if event == "/jax/compilation_cache/compile_time_saved_sec":
            counts["saved_s"] += duration_secs

    monitoring.register_event_listener(on_event)
    monitoring.register_event_duration_secs_listener(on_duration)
    return counts
