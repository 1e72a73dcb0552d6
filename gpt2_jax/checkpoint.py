"""Checkpoints through Orbax: asynchronous saves, retention, checksums, and restores that skip
damaged steps.

A checkpoint directory (`WORKDIR/checkpoints/`) holds one Orbax step directory per save with
the items `params`, `opt_state` (absent in imported and params-only exports) and `meta` (JSON:
the full TrainConfig, step, vocabulary, RNG seed and key, the training data's fingerprint and
position, skipped non-finite steps, eval loss). The data position and the dropout keys are
functions of (seed, step) (see `data/loader.py` and `train.py`), so step + seed + data
fingerprint is the whole input and RNG state: no iterator state is saved.

Saves are asynchronous: `save` returns once Orbax holds the arrays (device-to-host transfer;
on the CPU backend a copy into host buffers kept between saves, see `_Manager.stage`), and a
background thread writes them. Orbax writes into `STEP.orbax-checkpoint-tmp` and renames
it to `STEP` only after every item is written (on GCS, where renames are not atomic, it writes
`commit_success.txt` last instead). That rename is what "finalized" means in orbax-checkpoint
0.12 (`step_lib.is_path_finalized`); only finalized steps are listed (`all_steps`), so only they
are ever restored, and a crash mid-save leaves a temporary directory that the next training
run's manager deletes (`cleanup_tmp_directories`). Old steps are deleted by Orbax's finalize
thread only after the newer step has been committed, and not at all if that save failed: a
checkpoint is never deleted before a newer one is final.

Checksums. Orbax's files carry no checksums of their own: a truncated file fails to restore,
but a flipped byte inside a zstd chunk restores silently to different numbers. Just before
Orbax commits a step (its post-finalization callback, in the background thread, on the primary
process), we write `gpt2_jax_checksums.json`: the size and CRC-32 of every file of the step.
A restore verifies them first, so damage anywhere is reported with the file that is wrong.

Damaged steps. `restore_latest` (used to resume training) tries the newest finalized step;
if it is damaged it reports which step and why, tries the previous one, and so on. Once a good
step is found, the damaged newer ones are renamed to `STEP.damaged` (kept for inspection, never
deleted automatically: the damage may be a transient read error), so that the resumed run can
save that step again. If no step is readable, nothing is moved and the error lists them all.

Restoring needs no knowledge beyond the directory: `meta` rebuilds the config, the config
gives the abstract parameter tree (`jax.eval_shape`), and Orbax fills it in, onto any mesh:
the targets' shardings decide where the arrays land, not the shardings they were saved with.

References:
  Orbax CheckpointManager: https://orbax.readthedocs.io/en/latest/guides/checkpoint/
  orbax/checkpoint/_src/path/atomicity.py (AtomicRenameTemporaryPath, CommitFileTemporaryPath)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import pathlib
import threading
import zlib
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from orbax.checkpoint import checkpoint_managers

from gpt2_jax.config import ConfigError, TrainConfig, from_dict, to_dict
from gpt2_jax.finite import count_nonfinite
from gpt2_jax.model import init_params

ITEMS = ("params", "opt_state", "meta")
META_FORMAT = 2  # 1: step, config, vocab; 2: + rng, data, skipped_steps, eval_loss
CHECKSUMS = "gpt2_jax_checksums.json"
DAMAGED_SUFFIX = ".damaged"
# Written or rewritten by Orbax after its post-finalization callback, and not needed to restore.
_UNCHECKED = ("_CHECKPOINT_METADATA", "commit_success.txt")
_TMP_MARK = ".orbax-checkpoint-tmp"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, empty or unreadable; the message names it."""


class CheckpointDamaged(CheckpointError):
    """One step's files are missing, truncated or altered."""

    def __init__(self, directory: pathlib.Path, step: int, reason: str):
        super().__init__(f"checkpoint {str(directory)!r} step {step} is damaged: {reason}")
        self.directory, self.step, self.reason = directory, step, reason


def _eval_loss(metrics: Any) -> float:
    return float(metrics["eval_loss"])


class _Manager(ocp.CheckpointManager):
    """Orbax's manager, plus a checksum file written into each step just before Orbax commits it."""

    def __init__(self, directory: pathlib.Path, options: ocp.CheckpointManagerOptions):
        self._saving_step: int | None = None
        self._staging: dict[tuple, np.ndarray] = {}  # (item, leaf path, shard index) -> buffer
        if not options.read_only:
            options.async_options = ocp.AsyncOptions(post_finalization_callback=self._write_checksums)
        super().__init__(directory, options=options, item_names=ITEMS)

    def save(self, step: int, *args, **kwargs) -> bool:
        # Orbax waits for the previous save inside save(); wait first, so that the previous
        # save's callback still sees its own step.
        self.wait_until_finished()
        self._saving_step = int(step)
        return super().save(step, *args, **kwargs)

    def stage(self, item: str, tree: Any) -> Any:
        """CPU backend: `tree`'s arrays copied into host buffers that this manager keeps between
        saves, handed to Orbax as jax.Arrays that alias them.

        On CPU, device memory is host memory and Orbax saves jax.Arrays without copying them;
        the loop's next step, which donates those very buffers, then waits until the background
        write has finished (seconds for GPT-2 124M here; experiments/benchmarks/RESULTS.md). A
        memcpy into buffers that already exist (no page faults after the first save) costs a
        fraction of that. The buffers are 64-byte aligned so that `device_put` wraps them
        without a copy. Accelerators are left alone (Orbax copies device-to-host into new host
        memory), and so are arrays spread over several processes. Call only when no save is in
        flight: the buffers are reused."""

        def one(path, x):
            if not isinstance(x, jax.Array) or not x.is_fully_addressable or \
                    any(d.platform != "cpu" for d in x.sharding.device_set):
                return x
            name, buffers = jax.tree_util.keystr(path), {}
            shards = sorted(x.addressable_shards, key=lambda s: s.replica_id)  # copy each block once
            for shard in shards:
                index = tuple((i.start, i.stop, i.step) for i in shard.index)
                if index not in buffers:
                    key = (item, name, index)
                    buf = self._staging.get(key)
                    if buf is None or buf.shape != shard.data.shape or buf.dtype != shard.data.dtype:
                        buf = self._staging[key] = _aligned_empty(shard.data.shape, shard.data.dtype)
                    np.copyto(buf, np.asarray(shard.data))
                    buffers[index] = buf
            arrays = [jax.device_put(buffers[tuple((i.start, i.stop, i.step) for i in s.index)], s.device)
                      for s in x.addressable_shards]
            return jax.make_array_from_single_device_arrays(x.shape, x.sharding, arrays)

        return jax.tree_util.tree_map_with_path(one, tree)

    def _write_checksums(self) -> None:
        """Runs in Orbax's background thread on the primary process, after every item is written
        and before the step directory is renamed (committed)."""
        step, directory = self._saving_step, pathlib.Path(str(self.directory))
        if step is None:
            return
        candidates = sorted(directory.glob(f"{step}{_TMP_MARK}*")) or [directory / str(step)]
        write_checksums(candidates[-1])


def _aligned_empty(shape: tuple, dtype, align: int = 64) -> np.ndarray:
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + align, np.uint8)
    offset = (-raw.ctypes.data) % align
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


def manager(directory: str | pathlib.Path, *, keep: int = 3, keep_best: int = 0,
            read_only: bool = False) -> ocp.CheckpointManager:
    """An Orbax CheckpointManager for `directory` that keeps the newest `keep` steps plus the
    `keep_best` steps with the lowest `eval_loss` (passed to `save`); saves are asynchronous."""
    directory = pathlib.Path(directory).absolute()
    if read_only:
        # The options read_only implies, spelled out (Orbax warns for each one it overrides); its
        # unconditional "directory is read only" warning is muted while the manager is built.
        options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False)
        verbosity = absl_logging.get_verbosity()
        absl_logging.set_verbosity(absl_logging.ERROR)
        try:
            return _Manager(directory, options)
        finally:
            absl_logging.set_verbosity(verbosity)
    policies: list = [checkpoint_managers.LatestN(n=keep)]
    if keep_best:
        policies.append(checkpoint_managers.BestN(get_metric_fn=_eval_loss, reverse=True, n=keep_best,
                                                  keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
        # best_fn makes Orbax store each step's metrics, so BestN still knows them after a restart.
        best_fn=_eval_loss if keep_best else None, best_mode="min",
        create=True, cleanup_tmp_directories=True, enable_async_checkpointing=True)
    return _Manager(directory, options)


_serial_saves: threading.Lock | None = None  # set by serialized_saves()


@contextlib.contextmanager
def serialized_saves():
    """Within this block every save in this process is synchronous and one at a time. For several
    training loops in threads of one process (packed sweep points, scaling/runner.py): Orbax's
    asynchronous commits from concurrent managers raced on temporary directories there
    ("Directory not empty" while creating params.orbax-checkpoint-tmp; a point's save failed)."""
    global _serial_saves
    previous, _serial_saves = _serial_saves, threading.Lock()
    try:
        yield
    finally:
        _serial_saves = previous


def save(mngr: ocp.CheckpointManager, step: int, cfg: TrainConfig, params: Any, opt_state: Any | None,
         extra_meta: dict | None = None, *, eval_loss: float | None = None) -> None:
    """Starts an asynchronous save of `step`; call `wait(mngr)` (or `mngr.wait_until_finished()`)
    before exit. A failure of this save's start or of the previous save (e.g. a full disk)
    raises CheckpointError naming the newest complete step."""
    meta = {"format": META_FORMAT, "step": int(step), "config": to_dict(cfg), **(extra_meta or {})}
    if eval_loss is not None:
        meta["eval_loss"] = float(eval_loss)
    metrics = {"eval_loss": float(eval_loss)} if eval_loss is not None else None
    bad = count_nonfinite((params, opt_state))
    if bad:  # the step guard (train.py) keeps such a state out of training; this keeps it off disk
        raise CheckpointError(f"refusing to write checkpoint step {step} to {str(mngr.directory)!r}: the state holds "
                              f"{bad} non-finite values; the checkpoints already there are untouched")
    try:
        mngr.wait_until_finished()  # the previous save: its failure is reported here, its buffers reused
        if isinstance(mngr, _Manager):
            params = mngr.stage("params", params)
            opt_state = None if opt_state is None else mngr.stage("opt_state", opt_state)
        items = {"params": ocp.args.StandardSave(params), "meta": ocp.args.JsonSave(meta)}
        if opt_state is not None:
            items["opt_state"] = ocp.args.StandardSave(opt_state)
        lock = _serial_saves
        if lock is None:
            mngr.save(int(step), args=ocp.args.Composite(**items), metrics=metrics, force=True)
        else:
            with lock:
                mngr.save(int(step), args=ocp.args.Composite(**items), metrics=metrics, force=True)
                mngr.wait_until_finished()
    except Exception as e:
        raise _save_failed(mngr, step, e) from e


def wait(mngr: ocp.CheckpointManager, step: int | None = None) -> None:
    """Blocks until the save in flight is final; failures raise CheckpointError."""
    try:
        mngr.wait_until_finished()
    except Exception as e:
        raise _save_failed(mngr, step, e) from e


def _save_failed(mngr: ocp.CheckpointManager, step: int | None, error: Exception) -> CheckpointError:
    # Orbax dropped the steps it meant to delete from its list when the save started; they are
    # still on disk (deletion waits for the new step, which failed). Re-read the directory so a
    # later successful save applies the retention policy to them again.
    mngr.reload()
    steps = finalized_steps(str(mngr.directory))
    newest = f"step {steps[-1]}" if steps else "none"
    what = "a save" if step is None else f"step {step} (or the save before it)"
    return CheckpointError(
        f"checkpointing to {str(mngr.directory)!r} failed at {what}: {type(error).__name__}: {error}; "
        f"the newest complete checkpoint is {newest}. Free disk space or fix the directory, then rerun to resume")


# ----------------------------------------------------------------------------------------------
# checksums


def _crc32(path: pathlib.Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)  # releases the GIL for large buffers
    return crc


def _checked_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in step_dir.rglob("*")
                  if p.is_file() and p.name not in _UNCHECKED and p.name != CHECKSUMS)


def write_checksums(step_dir: pathlib.Path) -> None:
    files = {str(p.relative_to(step_dir)): {"bytes": p.stat().st_size, "crc32": _crc32(p)}
             for p in _checked_files(step_dir)}
    (step_dir / CHECKSUMS).write_text(json.dumps({"algorithm": "crc32", "files": files}, indent=0))


def verify_step(directory: pathlib.Path, step: int) -> bool:
    """Checks step `step` against its checksum file. True if verified, False if the step has no
    checksums (written by an older version or another tool); raises CheckpointDamaged."""
    step_dir = pathlib.Path(directory) / str(step)
    listing = step_dir / CHECKSUMS
    if not listing.is_file():
        return False
    try:
        files = json.loads(listing.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointDamaged(directory, step, f"{CHECKSUMS} is unreadable ({e})") from None
    for name, want in files.items():
        path = step_dir / name
        if not path.is_file():
            raise CheckpointDamaged(directory, step, f"{name} is missing")
        size = path.stat().st_size
        if size != want["bytes"]:
            raise CheckpointDamaged(directory, step, f"{name} holds {size} bytes, {want['bytes']} were written"
                                    + (" (truncated)" if size < want["bytes"] else ""))
        if _crc32(path) != want["crc32"]:
            raise CheckpointDamaged(directory, step, f"{name} does not match its CRC-32 (altered after it was written)")
    return True


def _verify_everywhere(directory: pathlib.Path, step: int) -> None:
    """Process 0 reads the files and the others follow its verdict (N hosts need not all read
    the whole checkpoint)."""
    reason = ""
    if jax.process_index() == 0:
        try:
            verify_step(directory, step)
        except CheckpointDamaged as e:
            reason = e.reason
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        bad = multihost_utils.broadcast_one_to_all(np.int32(bool(reason)))
        if bad and not reason:
            reason = "its checksums do not match (see process 0)"
    if reason:
        raise CheckpointDamaged(directory, step, reason)


# ----------------------------------------------------------------------------------------------
# reading


def finalized_steps(directory: str | pathlib.Path) -> list[int]:
    """Committed steps, oldest first (never temporary or `.damaged` directories)."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return []
    return sorted(ocp.path.step.checkpoint_steps(directory))


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


def _check_step(mngr: ocp.CheckpointManager, directory: pathlib.Path, step: int) -> None:
    steps = list(mngr.all_steps())
    if step not in steps:
        raise CheckpointError(f"checkpoint directory {str(directory)!r} has no complete step {step}; it has {sorted(steps)}")


def _read_meta(mngr: ocp.CheckpointManager, directory: pathlib.Path, step: int) -> dict:
    try:
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # Orbax raises assorted errors for damaged files
        raise CheckpointDamaged(directory, step, f"its metadata cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or "config" not in meta:
        raise CheckpointDamaged(directory, step, "its metadata has no config")
    return meta


def _config_of(directory: pathlib.Path, step: int, meta: dict) -> TrainConfig:
    try:
        return from_dict(TrainConfig, meta["config"])
    except (ConfigError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {str(directory)!r} step {step} has unusable metadata: {e}") from None


def restore_meta(directory: str | pathlib.Path, step: int | None = None) -> tuple[int, dict, TrainConfig]:
    """(step, meta, config) of `step` (default: the newest finalized step)."""
    directory = pathlib.Path(directory)
    mngr, latest = _open_existing(directory)
    step = latest if step is None else step
    _check_step(mngr, directory, step)
    meta = _read_meta(mngr, directory, step)
    return step, meta, _config_of(directory, step, meta)


def _single_device_params(cfg: TrainConfig) -> Any:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                                  jax.eval_shape(lambda: init_params(cfg.model, jax.random.PRNGKey(0))))


def _restore_arrays(mngr, directory: pathlib.Path, step: int, params_target: Any, opt_state_target: Any | None):
    items = {"params": ocp.args.StandardRestore(params_target)}
    if opt_state_target is not None:
        items["opt_state"] = ocp.args.StandardRestore(opt_state_target)
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:
        raise CheckpointDamaged(directory, step, f"it cannot be restored ({type(e).__name__}: {str(e)[:500]})") from None
    return restored["params"], restored.get("opt_state") if opt_state_target is not None else None


def restore(directory: str | pathlib.Path, *, step: int | None = None, params_target: Any | None = None,
            opt_state_target: Any | None = None) -> tuple[int, TrainConfig, Any, Any | None]:
    """(step, config, params, opt_state) of `step` (default: the newest finalized step), after
    verifying its checksums. Targets are abstract trees (ShapeDtypeStructs, with shardings to
    restore straight onto a mesh, any mesh; by default params land on one device). The
    optimizer state is restored only when its target is given (training resumes); sampling
    and export need the parameters alone. A damaged step raises CheckpointDamaged."""
    directory = pathlib.Path(directory)
    mngr, latest = _open_existing(directory)
    step = latest if step is None else step
    _check_step(mngr, directory, step)
    _verify_everywhere(directory, step)
    cfg = _config_of(directory, step, _read_meta(mngr, directory, step))
    target = params_target if params_target is not None else _single_device_params(cfg)
    params, opt_state = _restore_arrays(mngr, directory, step, target, opt_state_target)
    return step, cfg, params, opt_state


@dataclasses.dataclass
class Restored:
    step: int
    meta: dict
    config: TrainConfig
    params: Any
    opt_state: Any | None
    damaged: list[CheckpointDamaged]  # newer steps that were skipped (and moved aside)


def restore_latest(mngr: ocp.CheckpointManager, *, params_target: Any, opt_state_target: Any | None,
                   check: Callable[[int, dict, TrainConfig], None] | None = None,
                   say: Callable[[str], None] = print) -> Restored | None:
    """Restores the newest good finalized step of `mngr`'s directory; None if there is none.

    A damaged step (checksums, unreadable metadata or arrays) is reported through `say` and the
    previous step is tried; once one restores, the damaged newer steps are renamed to
    `STEP.damaged` and `mngr` is reloaded. `check(step, meta, config)` runs before the arrays
    are read and may raise (e.g. ConfigError for a different model): that is not damage and
    stops the search."""
    directory = pathlib.Path(str(mngr.directory))
    mngr.reload()
    steps = sorted(mngr.all_steps(), reverse=True)
    damaged: list[CheckpointDamaged] = []
    for i, step in enumerate(steps):
        try:
            _verify_everywhere(directory, step)
            meta = _read_meta(mngr, directory, step)
            cfg = _config_of(directory, step, meta)
            if check is not None:
                check(step, meta, cfg)
            params, opt_state = _restore_arrays(mngr, directory, step, params_target, opt_state_target)
            bad = count_nonfinite((params, opt_state))
            if bad:  # written before saves were guarded: resuming it would be NaN at every step
                raise CheckpointDamaged(directory, step, f"it holds {bad} non-finite values")
        except CheckpointDamaged as e:
            damaged.append(e)
            older = f"trying step {steps[i + 1]}" if i + 1 < len(steps) else "no older step is left"
            say(f"warning: {e}; {older}")
            continue
        for bad in damaged:
            moved = quarantine(directory, bad.step)
            say(f"moved damaged checkpoint step {bad.step} to {moved} (kept for inspection; delete it when done)")
        if damaged:
            mngr.reload()
        return Restored(step, meta, cfg, params, opt_state, damaged)
    if damaged:
        raise CheckpointError(
            f"no checkpoint in {str(directory)!r} can be restored: "
            + "; ".join(f"step {e.step}: {e.reason}" for e in damaged)
            + ". Move the directory away to start fresh, or repair it")
    return None


def quarantine(directory: pathlib.Path, step: int, suffix: str = DAMAGED_SUFFIX) -> pathlib.Path:
    """Renames step `step` to `STEP.damaged[.N]` (a name Orbax does not read as a step), on process 0."""
    source = directory / str(step)
    target = directory / f"{step}{suffix}"
    n = 1
    while target.exists():
        target, n = directory / f"{step}{suffix}.{n}", n + 1
    if jax.process_index() == 0:
        source.rename(target)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"gpt2_jax: quarantined checkpoint {step}")
    return target


def step_summaries(directory: str | pathlib.Path) -> list[dict]:
    """[{step, eval_loss}] for every finalized step, oldest first, from the steps' metadata
    (`eval_loss` None when the step was not evaluated or its metadata cannot be read)."""
    directory = pathlib.Path(directory)
    mngr, _ = _open_existing(directory)
    out = []
    for step in sorted(mngr.all_steps()):
        try:
            eval_loss = _read_meta(mngr, directory, step).get("eval_loss")
        except CheckpointDamaged:
            eval_loss = None
        out.append({"step": step, "eval_loss": eval_loss})
    return out


def export_params(directory: str | pathlib.Path, out: str | pathlib.Path, *, step: int | None = None) -> tuple[int, pathlib.Path]:
    """Writes step `step` (default: newest) of `directory` as a params-only checkpoint at `out`
    (same step number and metadata, no optimizer state: a third of the size), readable by
    `restore`, `gpt2-jax sample`, `ckpt-info` and `export --format hf`."""
    out = pathlib.Path(out)
    if out.exists() and any(out.iterdir()):
        raise CheckpointError(f"output directory {str(out)!r} exists and is not empty; choose a new path or remove it")
    step, meta, _ = restore_meta(directory, step)
    step, cfg, params, _ = restore(directory, step=step)
    mngr = manager(out, keep=1)
    extra = {k: v for k, v in meta.items() if k not in ("format", "step", "config")}
    extra.update(params_only=True, source=f"{pathlib.Path(directory).absolute()} step {step}")
    save(mngr, step, cfg, params, None, extra)
    wait(mngr, step)
    mngr.close()
    return step, out


def params_checksum(params: Any) -> str:
    """sha256 over every leaf's path, dtype, shape and bytes: equal values give equal sums."""
    digest = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
