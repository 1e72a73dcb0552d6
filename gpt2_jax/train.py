"""Training: state, the pure train/eval steps, and the loop that logs, evaluates and checkpoints.

`train_step(state, batch) -> (state, metrics)` is a pure function jitted once with the state
donated. Gradient accumulation splits the batch into micro-batches and sums gradients with
`lax.scan`, so memory follows the micro-batch while the update sees the whole batch. Dropout
randomness is `fold_in(rng, step)` (and the micro-batch index): a run is a pure function of
its config, and a resumed run draws exactly what the uninterrupted one would have.

The loop resumes from the newest checkpoint in `WORKDIR/checkpoints/` when there is one.

References:
  Radford et al. 2019; Brown et al. 2020 appendix B (optimizer settings).
  karpathy/nanoGPT train.py (loop structure, MFU reporting).
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from gpt2_jax import checkpoint, mfu
from gpt2_jax.config import ConfigError, TrainConfig
from gpt2_jax.data.loader import TokenWindows
from gpt2_jax.data.prepare import MANIFEST, bundled_corpus, prepare_text
from gpt2_jax.metrics import MetricsWriter
from gpt2_jax.model import GPT, count_params, init_params
from gpt2_jax.optim import learning_rate_schedule, make_optimizer
from gpt2_jax.tokenizer import load_tokenizer


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any
    opt_state: Any


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean next-token loss in nats; logits[B, T, V] float32, targets[B, T]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def make_train_step(cfg: TrainConfig, tx: optax.GradientTransformation, dropout_rng: jax.Array) -> Callable:
    model = GPT(cfg.model)
    schedule = learning_rate_schedule(cfg.optim, cfg.steps)
    deterministic = max(cfg.model.embd_pdrop, cfg.model.attn_pdrop, cfg.model.resid_pdrop) == 0.0

    def loss_fn(params, batch, rng):
        logits, _ = model.apply({"params": params}, batch[:, :-1], deterministic=deterministic, rngs={"dropout": rng})
        return cross_entropy(logits, batch[:, 1:])

    def train_step(state: TrainState, batch: jax.Array) -> tuple[TrainState, dict]:
        step_rng = jax.random.fold_in(dropout_rng, state.step)
        micro = batch.reshape(cfg.grad_accum, -1, batch.shape[-1])  # [A, B/A, T+1]

        def accumulate(carry, inputs):
            loss_sum, grad_sum = carry
            index, micro_batch = inputs
            loss, grads = jax.value_and_grad(loss_fn)(state.params, micro_batch, jax.random.fold_in(step_rng, index))
            return (loss_sum + loss, jax.tree_util.tree_map(jnp.add, grad_sum, grads)), None

        zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
        (loss, grads), _ = jax.lax.scan(accumulate, (jnp.zeros((), jnp.float32), zeros),
                                        (jnp.arange(cfg.grad_accum), micro))
        loss, grads = loss / cfg.grad_accum, jax.tree_util.tree_map(lambda g: g / cfg.grad_accum, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
        return TrainState(state.step + 1, params, opt_state), metrics

    return jax.jit(train_step, donate_argnums=0)


def make_eval_step(cfg: TrainConfig) -> Callable:
    model = GPT(cfg.model)

    def eval_step(params, batch):
        logits, _ = model.apply({"params": params}, batch[:, :-1], deterministic=True)
        return cross_entropy(logits, batch[:, 1:])

    return jax.jit(eval_step)


def resolve_data(cfg: TrainConfig, say: Callable[[str], None] = print) -> pathlib.Path:
    """The shard directory to train on; the bundled corpus is tokenized on first use."""
    if cfg.data.path:
        return pathlib.Path(cfg.data.path)
    shard_dir = pathlib.Path(cfg.workdir) / "data"
    if not (shard_dir / MANIFEST).is_file():
        manifest = prepare_text([bundled_corpus()], shard_dir, load_tokenizer("gpt2"))
        split = manifest["splits"]
        say(f"tokenized bundled tiny Shakespeare with the GPT-2 vocabulary: "
            f"{split['train']['tokens']:,} train / {split['val']['tokens']:,} val tokens -> {shard_dir}")
    return shard_dir


@dataclasses.dataclass
class TrainResult:
    step: int
    params: Any
    loss: float | None
    eval_loss: float | None
    tokens_per_sec: float | None
    seconds: float


def evaluate(eval_step: Callable, params: Any, batches: list[np.ndarray]) -> float:
    losses = [eval_step(params, b) for b in batches]
    return float(np.mean(jax.device_get(losses)))


def train(cfg: TrainConfig, *, say: Callable[[str], None] = print, progress: bool = True) -> TrainResult:
    """Runs (or resumes) the training described by `cfg` and returns the final parameters."""
    workdir = pathlib.Path(cfg.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    shard_dir = resolve_data(cfg, say)
    train_data = TokenWindows(shard_dir, "train", cfg.seq_len, cfg.model.n_vocab)
    eval_batches = TokenWindows(shard_dir, "val", cfg.seq_len, cfg.model.n_vocab).fixed_batches(cfg.eval_batches, cfg.batch_size)

    tx = make_optimizer(cfg.optim, cfg.steps)
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))
    ckpt_dir = workdir / "checkpoints"
    mngr = checkpoint.manager(ckpt_dir, keep=cfg.keep_checkpoints)
    latest = mngr.latest_step()
    if latest is None:
        params = jax.jit(init_params, static_argnums=0)(cfg.model, init_rng)
        state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
    else:
        _, saved_cfg = checkpoint.restore_meta(ckpt_dir, latest)[1:]
        if saved_cfg.model != cfg.model:
            raise ConfigError(f"{ckpt_dir} holds checkpoints of a different model ({saved_cfg.model}); use a new workdir")
        abstract_params = jax.eval_shape(lambda: init_params(cfg.model, init_rng))
        _, _, params, opt_state = checkpoint.restore(ckpt_dir, step=latest, opt_state_target=jax.eval_shape(tx.init, abstract_params))
        state = TrainState(jnp.asarray(latest, jnp.int32), params, opt_state)
        say(f"resuming from {ckpt_dir} at step {latest}")

    n_params = count_params(state.params, cfg.model)
    tokens_per_step = cfg.batch_size * cfg.seq_len
    device = jax.devices()[0]
    flops = mfu.flops_per_token(cfg.model, cfg.seq_len)
    peak = mfu.peak_flops(device.device_kind)
    say(f"model: {n_params:,} parameters (L={cfg.model.n_layer} D={cfg.model.n_embd} N={cfg.model.n_head} "
        f"T={cfg.seq_len} V={cfg.model.n_vocab}); batch {cfg.batch_size} x {cfg.seq_len} = {tokens_per_step:,} tokens/step")
    say(f"MFU: FLOPs/token = 6*N_matmul + 12*L*T*D = {flops:.4g}; peak for {device.device_kind!r} "
        f"x{jax.device_count()}: {'n/a' if peak is None else f'{peak:.3g} FLOP/s'}")

    train_step = make_train_step(cfg, tx, dropout_rng)
    eval_step = make_eval_step(cfg)
    writer = MetricsWriter(workdir)
    start_step = int(state.step)
    result = TrainResult(start_step, state.params, None, None, None, 0.0)
    bar = tqdm(total=cfg.steps, initial=start_step, desc="train", unit="step", disable=not progress,
               dynamic_ncols=True, mininterval=1.0)
    t_start = time.perf_counter()
    t_window, window_start = None, start_step
    try:
        for step in range(start_step, cfg.steps):
            batch = train_data.random_batch(cfg.seed, step, cfg.batch_size)
            state, metrics = train_step(state, batch)
            done = step + 1
            bar.update(1)
            if t_window is None:  # first step includes compilation: start the clock after it
                jax.block_until_ready(metrics)
                t_window, window_start = time.perf_counter(), done
            record: dict = {}
            if done % cfg.log_every == 0 or done == cfg.steps:
                metrics = jax.device_get(metrics)
                now = time.perf_counter()
                if done > window_start:
                    tps = (done - window_start) * tokens_per_step / (now - t_window)
                    record["tokens_per_sec"] = tps
                    record["mfu"] = mfu.mfu(tps, cfg.model, cfg.seq_len, device.device_kind, jax.device_count())
                    result.tokens_per_sec = tps
                    t_window, window_start = now, done
                record.update({k: float(v) for k, v in metrics.items()})
                result.loss = record["loss"]
                if not np.isfinite(record["loss"]):
                    raise FloatingPointError(f"loss became {record['loss']} at step {done}; lower optim.lr or check the data")
            if cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
                record["eval_loss"] = result.eval_loss = evaluate(eval_step, state.params, eval_batches)
            if record:
                writer.write(done, record)
                bar.set_postfix_str(_postfix(record), refresh=False)
                bar.write(_log_line(done, record))
            if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps:
                checkpoint.save(mngr, done, cfg, state.params, state.opt_state, {"vocab": train_data.manifest["vocab"]})
        mngr.wait_until_finished()
    finally:
        bar.close()
        writer.close()
        mngr.close()
    result.step, result.params = int(state.step), state.params
    result.seconds = time.perf_counter() - t_start
    if result.eval_loss is None and cfg.eval_every:
        result.eval_loss = evaluate(eval_step, state.params, eval_batches)
    return result


def _postfix(record: dict) -> str:
    parts = [f"loss {record['loss']:.3f}"] if "loss" in record else []
    if "tokens_per_sec" in record:
        parts.append(f"{record['tokens_per_sec']:,.0f} tok/s")
    return ", ".join(parts)


def _log_line(step: int, record: dict) -> str:
    parts = [f"step {step:>6}"]
    if "loss" in record:
        parts += [f"loss {record['loss']:.4f}", f"lr {record['lr']:.2e}", f"grad_norm {record['grad_norm']:.3f}"]
    if "tokens_per_sec" in record:
        mfu_value = record.get("mfu")
        parts += [f"{record['tokens_per_sec']:,.0f} tok/s", f"mfu {'n/a' if mfu_value is None else f'{100 * mfu_value:.1f}%'}"]
    if "eval_loss" in record:
        parts.append(f"eval_loss {record['eval_loss']:.4f}")
    return " | ".join(parts)
