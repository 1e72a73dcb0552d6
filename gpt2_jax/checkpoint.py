"""Checkpoints through Orbax: parameters, optimizer state and the run's config, by step.

A checkpoint directory (`WORKDIR/checkpoints/`) holds one Orbax step directory per save with
three items: `params`, `opt_state` (absent in imported models) and `meta` (JSON: the full
TrainConfig, step, vocabulary). Orbax writes each step to a temporary directory and renames
it when complete, so a crash mid-save never leaves a checkpoint that restores half-written.

Restoring needs no knowledge beyond the directory: `meta` rebuilds the config, the config
gives the abstract parameter tree (`jax.eval_shape`), and Orbax fills it in.

References:
  Orbax CheckpointManager: https://orbax.readthedocs.io/en/latest/guides/checkpoint/
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from gpt2_jax.config import ConfigError, TrainConfig, from_dict, to_dict
from gpt2_jax.model import init_params

ITEMS = ("params", "opt_state", "meta")


class CheckpointError(ValueError):
    """A checkpoint directory is missing, empty or unreadable; the message names it."""


def manager(directory: str | pathlib.Path, *, keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
    directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only)
    return ocp.CheckpointManager(directory, options=options, item_names=ITEMS)


def save(mngr: ocp.CheckpointManager, step: int, cfg: TrainConfig, params: Any, opt_state: Any | None,
         extra_meta: dict | None = None) -> None:
    """Starts an (asynchronous) save of `step`; call `mngr.wait_until_finished()` before exit."""
    meta = {"step": int(step), "config": to_dict(cfg), **(extra_meta or {})}
    items = {"params": ocp.args.StandardSave(params), "meta": ocp.args.JsonSave(meta)}
    if opt_state is not None:
        items["opt_state"] = ocp.args.StandardSave(opt_state)
    mngr.save(int(step), args=ocp.args.Composite(**items), force=True)


def _open_existing(directory: str | pathlib.Path) -> tuple[ocp.CheckpointManager, int]:
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {str(directory)!r} does not exist; pass WORKDIR/checkpoints of a run or an imported model")
    mngr = manager(directory, read_only=True)
    step = mngr.latest_step()
    if step is None:
        raise CheckpointError(f"checkpoint directory {str(directory)!r} holds no complete checkpoint")
    return mngr, step


def resolve_dir(path: str | pathlib.Path) -> pathlib.Path:
    """Accepts either a checkpoints directory or the run's WORKDIR that contains one."""
    path = pathlib.Path(path)
    if (path / "checkpoints").is_dir() and not any(p.name.isdigit() for p in path.iterdir()):
        return path / "checkpoints"
    return path


def restore_meta(directory: str | pathlib.Path, step: int | None = None) -> tuple[int, dict, TrainConfig]:
    mngr, latest = _open_existing(directory)
    step = latest if step is None else step
    try:
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        return step, meta, from_dict(TrainConfig, meta["config"])
    except (ConfigError, KeyError) as e:
        raise CheckpointError(f"checkpoint {str(directory)!r} step {step} has unusable metadata: {e}") from None
    except Exception as e:  # Orbax raises assorted errors for damaged files
        raise CheckpointError(f"checkpoint {str(directory)!r} step {step} cannot be read ({type(e).__name__}: {e})") from None


def restore(directory: str | pathlib.Path, *, step: int | None = None, params_target: Any | None = None,
            opt_state_target: Any | None = None) -> tuple[int, TrainConfig, Any, Any | None]:
    """(step, config, params, opt_state). Targets are abstract trees (ShapeDtypeStructs, with
    shardings to restore straight onto a mesh; by default params land on one device). The
    optimizer state is restored only when its target is given (training resumes); sampling
    and export need the parameters alone."""
    step, _, cfg = restore_meta(directory, step)
    mngr, _ = _open_existing(directory)
    abstract = params_target
    if abstract is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                                          jax.eval_shape(lambda: init_params(cfg.model, jax.random.PRNGKey(0))))
    items = {"params": ocp.args.StandardRestore(abstract)}
    if opt_state_target is not None:
        items["opt_state"] = ocp.args.StandardRestore(opt_state_target)
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:
        raise CheckpointError(f"checkpoint {str(directory)!r} step {step} cannot be restored ({type(e).__name__}: {e})") from None
    return step, cfg, restored["params"], restored.get("opt_state") if opt_state_target is not None else None


def params_checksum(params: Any) -> str:
    """sha256 over every leaf's path, dtype, shape and bytes: equal values give equal sums."""
    digest = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
