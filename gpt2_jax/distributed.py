"""Multi-process start-up: `jax.distributed.initialize` from the run's config.

One process per host (or per GPU under SLURM). With `distributed.auto=true` JAX detects the
cluster itself (TPU VM metadata, SLURM variables); otherwise the coordinator address, process
count and process id come from the config. A process that never arrives makes the others fail
after `distributed.timeout_s` with a message, instead of hanging.

References:
  JAX multi-process guide: https://docs.jax.dev/en/latest/multi_process.html
"""

from __future__ import annotations

import os
import sys
import threading

import jax

from gpt2_jax.config import ConfigError, DistributedConfig

# JAX aborts the whole process (a C++ fatal error, exit 134) when its own start-up deadline
# passes. A watchdog with a shorter deadline ends the process first, with one readable line.
_JAX_GRACE_S = 60


def initialize(cfg: DistributedConfig) -> None:
    """Joins the process group described by `cfg` (no-op for a single process or if joined)."""
    if not cfg.enabled or jax.distributed.is_initialized():
        return
    where = "auto-detected cluster" if cfg.auto else (
        f"coordinator {cfg.coordinator} as process {cfg.process_id} of {cfg.num_processes}")
    joined = threading.Event()

    def watchdog():
        if not joined.wait(cfg.timeout_s):
            sys.stderr.write(
                f"error: jax.distributed did not start with the {where} within distributed.timeout_s={cfg.timeout_s} s; "
                f"start every process with the same coordinator and num_processes, or raise the timeout\n")
            sys.stderr.flush()
            os._exit(2)

    threading.Thread(target=watchdog, name="gpt2_jax-distributed-watchdog", daemon=True).start()
    try:
        if cfg.auto:
            jax.distributed.initialize(initialization_timeout=cfg.timeout_s + _JAX_GRACE_S)
        else:
            jax.distributed.initialize(
                coordinator_address=cfg.coordinator,
                num_processes=cfg.num_processes,
                process_id=cfg.process_id,
                initialization_timeout=cfg.timeout_s + _JAX_GRACE_S,
            )
    except Exception as e:  # JAX raises RuntimeError/ValueError variants for bad settings
        raise ConfigError(
            f"jax.distributed could not start with the {where}: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    finally:
        joined.set()


def is_main_process() -> bool:
    return jax.process_index() == 0
