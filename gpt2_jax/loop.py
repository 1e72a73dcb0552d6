"""The training loop: resume, step, log, evaluate, save, stop; each in one named place.

`run(trainer, shard_dir)` drives a built `train.Trainer` (the mesh, shardings and jitted
steps) over the shards. Its parts, in order of a step:

- resume (resume.py): the newest good checkpoint, or a fresh state;
- step: one jitted train step; its finite flag is looked at one step behind (the host does not
  wait for the device), and always before anything is logged or saved (nan_guard.py);
- log: metrics.jsonl, TensorBoard and the terminal line (metrics.py); the throughput window
  and the progress bar's rate and ETA start after the first step, which includes compilation;
- evaluate: mean loss over fixed validation batches;
- save: asynchronous, and only from a state that is finite and not under a non-finite streak;
- stop: SIGTERM/SIGINT or a multi-host preemption notice ends the loop at a step boundary with
  a complete checkpoint; a non-finite stop rolls back (nan_guard.py).

Closing (progress bar, metrics files, checkpoint manager) never hides the error that ended the
run: when one is in flight, a failure while closing (a full disk fails both) is dropped.

References:
  karpathy/nanoGPT train.py (loop structure, MFU reporting).
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import time
from typing import Any, Callable

import jax
import numpy as np
from tqdm.auto import tqdm  # a widget in Jupyter, the usual bar in a terminal

from gpt2_jax import checkpoint, mfu, preemption, sharding
from gpt2_jax.config import ConfigError, TrainConfig
from gpt2_jax.data.bundled_vocab import bits_per_byte, bytes_per_token
from gpt2_jax.data.loader import TokenLoader
from gpt2_jax.metrics import MetricsWriter, log_line, postfix
from gpt2_jax.model import count_params
from gpt2_jax.nan_guard import NanGuard, StopNonFinite, stop_report
from gpt2_jax.resume import data_fingerprint, restore_or_init, truncate_metrics


@dataclasses.dataclass
class TrainResult:
    step: int
    params: Any
    loss: float | None
    eval_loss: float | None
    tokens_per_sec: float | None
    seconds: float
    stopped: str | None = None  # what stopped the run early (e.g. "SIGTERM"); None = ran to `steps`
    skipped_steps: int = 0  # non-finite steps whose update was skipped, over the whole run
    resumed_from: int | None = None  # the checkpoint step this process started from
    checkpoint: str | None = None  # the newest complete checkpoint when the run ended


def say_line(line: str) -> None:
    """The default `say`: warnings and notes (and checkpoints moved aside) to stderr, the
    training log to stdout, so that `gpt2-jax train > log` still shows what needs attention."""
    attention = line.startswith(("warning:", "note:", "moved "))
    print(line, file=sys.stderr if attention else sys.stdout, flush=attention)


def evaluate(eval_step: Callable, params: Any, batches: list) -> float:
    losses = [eval_step(params, b) for b in batches]
    return float(np.mean(jax.device_get(losses)))


def check_vocab_matches(cfg: TrainConfig, manifest: dict, shard_dir: pathlib.Path) -> None:
    if manifest["n_vocab"] != cfg.model.n_vocab:
        hint = " or data.vocab=auto" if not cfg.data.path and cfg.data.vocab != "auto" else ""
        raise ConfigError(
            f"shards in {str(shard_dir)!r} use vocabulary {manifest['vocab']!r} with {manifest['n_vocab']} ids but "
            f"model.n_vocab={cfg.model.n_vocab}; set model.n_vocab={manifest['n_vocab']}{hint}")


def _close_all(closers: list[Callable[[], None]], error_in_flight: bool) -> None:
    """Calls every closer; the first failure is raised unless another error is already ending
    the run (then the failures, usually the same full disk, would only hide it)."""
    first = None
    for close in closers:
        try:
            close()
        except Exception as e:  # noqa: BLE001 - re-raised below unless an error is in flight
            first = first or e
    if first is not None and not error_in_flight:
        raise first


def run(trainer, shard_dir: pathlib.Path, *, say: Callable[[str], None], progress: bool, main: bool) -> TrainResult:
    """Trains `trainer.cfg.steps` steps (resuming when WORKDIR/checkpoints holds a good step)."""
    cfg = trainer.cfg
    workdir = pathlib.Path(cfg.workdir)
    train_data = TokenLoader(shard_dir, "train", cfg.seq_len, cfg.batch_size, cfg.seed, cfg.model.n_vocab)
    check_vocab_matches(cfg, train_data.manifest, shard_dir)
    # Bits per byte compare runs across vocabularies; known when the manifest records bytes/token.
    train_bpt, val_bpt = (bytes_per_token(train_data.manifest, split) for split in ("train", "val"))
    evaluates = bool(cfg.eval_every or cfg.keep_best)
    eval_batches = TokenLoader(shard_dir, "val", cfg.seq_len, cfg.batch_size, cfg.seed, cfg.model.n_vocab
                               ).eval_global_batches(cfg.eval_batches, trainer.batch_sharding) if evaluates else []

    ckpt_dir = workdir / "checkpoints"
    # What a checkpoint records besides the arrays: with the step, this is the whole input and RNG
    # state (data order and dropout keys are pure functions of seed and step).
    data_meta = {"split": "train", "fingerprint": data_fingerprint(train_data.manifest), "seed": cfg.seed,
                 "batch_size": cfg.batch_size, "seq_len": cfg.seq_len}
    dropout_key = jax.random.split(jax.random.PRNGKey(cfg.seed))[1]  # as in Trainer.build
    rng_meta = {"seed": cfg.seed, "dropout_key": np.asarray(jax.random.key_data(dropout_key)).tolist(),
                "dropout": "fold_in(dropout_key, step), then the micro-batch index"}
    mngr = checkpoint.manager(ckpt_dir, keep=cfg.keep_checkpoints, keep_best=cfg.keep_best)
    try:
        state, resumed = restore_or_init(trainer, mngr, data_meta, say)
    except BaseException:
        mngr.close()
        raise

    n_params = count_params(state.params, cfg.model)
    tokens_per_step = cfg.batch_size * cfg.seq_len
    device = trainer.mesh.devices.flat[0]  # MFU counts the devices this run's mesh uses
    flops = mfu.flops_per_token(cfg.model, cfg.seq_len)
    peak = mfu.peak_flops(device.device_kind)
    say(f"model: {n_params:,} parameters (L={cfg.model.n_layer} D={cfg.model.n_embd} N={cfg.model.n_head} "
        f"T={cfg.seq_len} V={cfg.model.n_vocab}); batch {cfg.batch_size} x {cfg.seq_len} = {tokens_per_step:,} tokens/step")
    say(f"mesh: {sharding.describe(trainer.mesh)}, rules {cfg.mesh.rules}; processes: {jax.process_count()}; "
        f"{trainer.decisions.describe(cfg.model)}")
    say(f"MFU: FLOPs/token = 6*N + 12*L*T*D = {flops:.4g}; peak for {device.device_kind!r} "
        f"x{trainer.mesh.size}: {'n/a' if peak is None else f'{peak:.3g} FLOP/s'}")

    start_step = int(state.step)
    writer = None
    try:
        if main:
            truncate_metrics(workdir / "metrics.jsonl", start_step)
            writer = MetricsWriter(workdir)
    except BaseException:
        mngr.close()
        raise
    result = TrainResult(start_step, state.params, None, None, None, 0.0,
                         resumed_from=start_step if resumed else None)
    guard = NanGuard(cfg.nan_policy, cfg.nan_skip_limit, int(resumed.get("skipped_steps", 0)), say)

    def meta(step: int, skipped_steps: int) -> dict:
        return {"vocab": train_data.manifest.get("vocab_source", train_data.manifest["vocab"]), "rng": rng_meta,
                "data": {**data_meta, "next_step": step, "examples_seen": step * cfg.batch_size},
                "skipped_steps": skipped_steps}

    def save(step: int, eval_loss: float | None = None) -> None:
        checkpoint.save(mngr, step, cfg, state.params, state.opt_state, meta(step, guard.skipped), eval_loss=eval_loss)

    bar = tqdm(total=cfg.steps, initial=start_step, desc="train", unit="step", disable=not (progress and main),
               dynamic_ncols=True, mininterval=1.0)
    t_start = time.perf_counter()
    t_window, window_start = None, start_step
    batches = train_data.global_batches(start_step, trainer.batch_sharding)
    pending = None  # (step, finite flag) not yet looked at: the host checks one step behind
    failed = True
    try:
        with preemption.StopRequest() as stop:
            for step in range(start_step, cfg.steps):
                state, metrics = trainer.train_step(state, next(batches))
                done = step + 1
                if pending is not None:  # the previous step; this one is already queued behind it
                    guard.check(*pending)
                pending = (done, metrics["finite"])
                if t_window is None:  # the first step includes compilation: clocks start after it
                    jax.block_until_ready(metrics)
                    t_window, window_start = time.perf_counter(), done
                    _restart_bar_clock(bar, done)
                else:
                    bar.update(1)
                logs = done % cfg.log_every == 0 or done == cfg.steps
                saves = (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps
                evals = bool(cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps)) or \
                    bool(cfg.keep_best and saves)
                stopping = stop.should_stop(done)
                if cfg.nan_policy == "stop" or logs or evals or saves or stopping:
                    guard.check(*pending)  # nothing is logged or saved past an unchecked step
                    pending = None
                record: dict = {}
                if logs:
                    metrics = jax.device_get(metrics)
                    now = time.perf_counter()
                    if done > window_start:
                        tps = (done - window_start) * tokens_per_step / (now - t_window)
                        record["tokens_per_sec"] = tps
                        record["mfu"] = mfu.mfu(tps, cfg.model, cfg.seq_len, device.device_kind, trainer.mesh.size)
                        result.tokens_per_sec = tps
                        t_window, window_start = now, done
                    record.update({k: float(v) for k, v in metrics.items() if k != "finite"})
                    if guard.skipped:
                        record["skipped_steps"] = guard.skipped
                    result.loss = record["loss"]
                    if train_bpt:
                        record["bits_per_byte"] = bits_per_byte(record["loss"], train_bpt)
                if evals:
                    record["eval_loss"] = result.eval_loss = evaluate(trainer.eval_step, state.params, eval_batches)
                    if val_bpt:
                        record["eval_bits_per_byte"] = bits_per_byte(record["eval_loss"], val_bpt)
                if record and writer is not None:
                    writer.write(done, record)
                    bar.set_postfix_str(postfix(record), refresh=False)
                    bar.write(log_line(done, record))
                if (saves or stopping) and guard.may_save(done):
                    save(done, record.get("eval_loss"))
                if stopping:
                    checkpoint.wait(mngr, done)
                    result.stopped = stop.reason
                    when = ("every process agreed on this step" if stop.signal_step is None
                            else f"the signal came after step {stop.signal_step}")
                    kept = mngr.latest_step()
                    say(f"{stop.reason}: stopped after step {done} ({when}); checkpoint "
                        f"{ckpt_dir / str(kept) if kept is not None else '(none)'} is complete. "
                        f"Rerun the same command to resume.")
                    break
            if pending is not None:
                guard.check(*pending)
            checkpoint.wait(mngr)
        failed = False
    except StopNonFinite as bad:
        def save_last_good(step: int) -> None:  # the guard kept the state of step `step`
            checkpoint.save(mngr, step, cfg, state.params, state.opt_state, meta(step, guard.skipped - 1))

        raise stop_report(guard, bad.step, mngr, save_last_good) from None
    finally:
        _close_all([bar.close] + ([writer.close] if writer is not None else []) + [mngr.close], failed)
    latest = checkpoint.finalized_steps(ckpt_dir)
    result.checkpoint = str(ckpt_dir / str(latest[-1])) if latest else None
    result.step, result.params, result.skipped_steps = int(state.step), state.params, guard.skipped
    result.seconds = time.perf_counter() - t_start
    if result.eval_loss is None and cfg.eval_every and result.stopped is None:
        result.eval_loss = evaluate(trainer.eval_step, state.params, eval_batches)
    return result


def _restart_bar_clock(bar, done: int) -> None:
    """Counts `done` steps as already there when the bar's clock starts, so that its rate and
    ETA leave out the first step's compilation (tqdm's rate is (n - initial) / elapsed)."""
    bar.reset(total=bar.total)  # zeroes the clock and the smoothed rate
    bar.n = bar.last_print_n = bar.initial = done
    bar.refresh()
