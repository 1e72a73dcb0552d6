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

from gpt2_jax import checkpoint, distributed, mfu, sharding
from gpt2_jax.config import ConfigError, TrainConfig
from gpt2_jax.data.loader import TokenLoader
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


def _has_prng_impl(name: str) -> bool:
    try:
        jax.random.key(0, impl=name)
    except (ValueError, TypeError, KeyError):
        return False
    return True


def make_train_step(cfg: TrainConfig, tx: optax.GradientTransformation, dropout_rng: jax.Array) -> Callable:
    """The pure step `(state, batch[B, T+1]) -> (state, metrics)`; `Trainer` jits it with shardings."""
    model = GPT(cfg.model)
    schedule = learning_rate_schedule(cfg.optim, cfg.steps)
    deterministic = max(cfg.model.embd_pdrop, cfg.model.attn_pdrop, cfg.model.resid_pdrop) == 0.0
    # Dropout masks are drawn with Philox (4x32, 10 rounds; Salmon et al. 2011), keyed from the
    # threefry step key: like partitionable threefry it is identical across shardings and
    # backends, but XLA:CPU lowers threefry2x32 as a rolled loop, ~4x slower per random bit.
    # XLA cannot yet partition Philox's mulhi over a mesh ("failed to legalize mhlo.unknown"), so
    # multi-device runs keep threefry: dropout masks differ between 1-device and mesh runs.
    philox = "philox4x32" if _has_prng_impl("philox4x32") and jax.device_count() == 1 else None

    def loss_fn(params, batch, rng):
        if philox is not None:
            rng = jax.random.wrap_key_data(jax.random.bits(rng, (2,), jnp.uint32), impl=philox)
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

        if cfg.grad_accum == 1:  # no loop: saves zeroing, copying and summing a gradient-sized buffer
            loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, jax.random.fold_in(step_rng, 0))
        else:
            zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
            (loss, grads), _ = jax.lax.scan(accumulate, (jnp.zeros((), jnp.float32), zeros),
                                            (jnp.arange(cfg.grad_accum), micro))
            loss, grads = loss / cfg.grad_accum, jax.tree_util.tree_map(lambda g: g / cfg.grad_accum, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
        return TrainState(state.step + 1, params, opt_state), metrics

    return train_step


def make_eval_step(cfg: TrainConfig) -> Callable:
    """The pure `(params, batch[B, T+1]) -> mean loss`."""
    model = GPT(cfg.model)

    def eval_step(params, batch):
        logits, _ = model.apply({"params": params}, batch[:, :-1], deterministic=True)
        return cross_entropy(logits, batch[:, 1:])

    return eval_step


def resolve_data(cfg: TrainConfig, say: Callable[[str], None] = print) -> pathlib.Path:
    """The shard directory to train on; the bundled corpus is tokenized on first use (by
    process 0; the others wait for it)."""
    if cfg.data.path:
        return pathlib.Path(cfg.data.path)
    shard_dir = pathlib.Path(cfg.workdir) / "data"
    if distributed.is_main_process() and not (shard_dir / MANIFEST).is_file():
        manifest = prepare_text([bundled_corpus()], shard_dir, load_tokenizer("gpt2"))
        split = manifest["splits"]
        say(f"tokenized bundled tiny Shakespeare with the GPT-2 vocabulary: "
            f"{split['train']['tokens']:,} train / {split['val']['tokens']:,} val tokens -> {shard_dir}")
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("gpt2_jax: data ready")
    return shard_dir


@dataclasses.dataclass
class Trainer:
    """Everything derived from the config and the devices before a step runs: the mesh, the
    shardings of state and batch, and the jitted steps."""

    cfg: TrainConfig
    mesh: jax.sharding.Mesh
    tx: optax.GradientTransformation
    state_shardings: TrainState
    batch_sharding: jax.sharding.NamedSharding
    abstract_state: TrainState  # ShapeDtypeStructs carrying their shardings
    train_step: Callable
    eval_step: Callable
    init_state: Callable

    @classmethod
    def build(cls, cfg: TrainConfig, devices: list | None = None) -> "Trainer":
        """`devices` defaults to all devices (of all processes)."""
        mesh = sharding.make_mesh(cfg.mesh, devices)
        batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
        micro = cfg.batch_size // cfg.grad_accum
        if micro % batch_shards:
            raise ConfigError(
                f"batch_size={cfg.batch_size} / grad_accum={cfg.grad_accum} = {micro} sequences per micro-batch "
                f"do not split over mesh data x fsdp = {batch_shards}; use a batch_size that is a multiple of "
                f"{batch_shards * cfg.grad_accum}"
            )
        tx = make_optimizer(cfg.optim, cfg.steps)
        init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))
        abstract_params = jax.eval_shape(lambda: init_params(cfg.model, init_rng))
        param_shardings = sharding.param_shardings(abstract_params, cfg.model, mesh, cfg.mesh.rules)
        replicated = sharding.replicated(mesh)
        # Optimizer moments are shaped like the params and sharded like them; counters replicate.
        opt_shardings = optax.tree_map_params(
            tx, lambda _, s: s, jax.eval_shape(tx.init, abstract_params), param_shardings,
            transform_non_params=lambda _: replicated, is_leaf=lambda x: isinstance(x, jax.sharding.NamedSharding))
        state_shardings = TrainState(replicated, param_shardings, opt_shardings)
        batch_sharding = sharding.batch_sharding(mesh)

        def init_state(rng):
            params = init_params(cfg.model, rng)
            return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))

        abstract = jax.eval_shape(init_state, init_rng)
        abstract = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                          abstract, state_shardings)
        step_fn, eval_fn = make_train_step(cfg, tx, dropout_rng), make_eval_step(cfg)

        # Activation constraints apply while the steps are traced, inside the jit call.
        def sharded_step(state, batch):
            with sharding.activation_rules(mesh, cfg.mesh.rules):
                return step_fn(state, batch)

        def sharded_eval(params, batch):
            with sharding.activation_rules(mesh, cfg.mesh.rules):
                return eval_fn(params, batch)

        train_step = jax.jit(sharded_step, in_shardings=(state_shardings, batch_sharding),
                             out_shardings=(state_shardings, replicated), donate_argnums=0)
        eval_step = jax.jit(sharded_eval, in_shardings=(param_shardings, batch_sharding), out_shardings=replicated)
        init = jax.jit(lambda: init_state(init_rng), out_shardings=state_shardings)
        return cls(cfg, mesh, tx, state_shardings, batch_sharding, abstract, train_step, eval_step, init)

    def abstract_batch(self) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((self.cfg.batch_size, self.cfg.seq_len + 1), jnp.int32, sharding=self.batch_sharding)


def compile_only(cfg: TrainConfig, say: Callable[[str], None] = print) -> dict:
    """Lowers and compiles the train step for the current devices without allocating the state;
    returns (and prints) per-device memory and FLOPs per step."""
    distributed.initialize(cfg.distributed)
    trainer = Trainer.build(cfg)
    t0 = time.perf_counter()
    compiled = trainer.train_step.lower(trainer.abstract_state, trainer.abstract_batch()).compile()
    seconds = time.perf_counter() - t0
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    report = {
        "devices": jax.device_count(),
        "device_kind": jax.devices()[0].device_kind,
        "mesh": dict(trainer.mesh.shape),
        "rules": cfg.mesh.rules,
        "remat": cfg.model.remat,
        "compile_seconds": seconds,
        "argument_bytes": int(memory.argument_size_in_bytes),
        "output_bytes": int(memory.output_size_in_bytes),
        "alias_bytes": int(memory.alias_size_in_bytes),
        "temp_bytes": int(memory.temp_size_in_bytes),
        "xla_flops_per_device": float(cost.get("flops", float("nan"))) if cost else float("nan"),
        "model_flops_per_step": mfu.flops_per_token(cfg.model, cfg.seq_len) * cfg.batch_size * cfg.seq_len,
    }
    # Donated state aliases its outputs, so peak ~ arguments + temporaries + non-aliased outputs.
    report["peak_bytes"] = report["argument_bytes"] + report["temp_bytes"] + report["output_bytes"] - report["alias_bytes"]
    gib = 2**30
    say(f"compile-only: {sharding.describe(trainer.mesh)}, rules {cfg.mesh.rules}, remat {cfg.model.remat}, "
        f"batch {cfg.batch_size} x {cfg.seq_len}, compiled in {seconds:.1f} s")
    say(f"per-device memory: arguments {report['argument_bytes'] / gib:.2f} GiB, temporaries "
        f"{report['temp_bytes'] / gib:.2f} GiB, outputs {report['output_bytes'] / gib:.2f} GiB "
        f"(aliased {report['alias_bytes'] / gib:.2f}); peak ~ {report['peak_bytes'] / gib:.2f} GiB")
    say(f"FLOPs per step: XLA cost analysis {report['xla_flops_per_device']:.4g} per device; "
        f"model (6N + 12LTD) {report['model_flops_per_step']:.4g} in total")
    return report


@dataclasses.dataclass
class TrainResult:
    step: int
    params: Any
    loss: float | None
    eval_loss: float | None
    tokens_per_sec: float | None
    seconds: float


def evaluate(eval_step: Callable, params: Any, batches: list) -> float:
    losses = [eval_step(params, b) for b in batches]
    return float(np.mean(jax.device_get(losses)))


def _restore_or_init(trainer: Trainer, mngr, ckpt_dir: pathlib.Path, say) -> TrainState:
    cfg = trainer.cfg
    latest = mngr.latest_step()
    if latest is None:
        return trainer.init_state()
    _, _, saved_cfg = checkpoint.restore_meta(ckpt_dir, latest)
    if saved_cfg.model != cfg.model:
        diff = {f.name: (getattr(saved_cfg.model, f.name), getattr(cfg.model, f.name))
                for f in dataclasses.fields(cfg.model) if getattr(saved_cfg.model, f.name) != getattr(cfg.model, f.name)}
        raise ConfigError(f"{ckpt_dir} holds checkpoints of a different model (saved vs now: {diff}); "
                          f"use a new workdir or the saved model settings")
    _, _, params, opt_state = checkpoint.restore(ckpt_dir, step=latest, params_target=trainer.abstract_state.params,
                                                 opt_state_target=trainer.abstract_state.opt_state)
    say(f"resuming from {ckpt_dir} at step {latest}")
    step = jax.device_put(jnp.asarray(latest, jnp.int32), trainer.state_shardings.step)
    return TrainState(step, params, opt_state)


def train(cfg: TrainConfig, *, say: Callable[[str], None] = print, progress: bool = True) -> TrainResult:
    """Runs (or resumes) the training described by `cfg` and returns the final parameters."""
    distributed.initialize(cfg.distributed)
    main = distributed.is_main_process()
    say = say if main else (lambda _: None)
    workdir = pathlib.Path(cfg.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    shard_dir = resolve_data(cfg, say)
    trainer = Trainer.build(cfg)
    train_data = TokenLoader(shard_dir, "train", cfg.seq_len, cfg.batch_size, cfg.seed, cfg.model.n_vocab)
    eval_batches = TokenLoader(shard_dir, "val", cfg.seq_len, cfg.batch_size, cfg.seed, cfg.model.n_vocab
                               ).eval_global_batches(cfg.eval_batches, trainer.batch_sharding) if cfg.eval_every else []

    ckpt_dir = workdir / "checkpoints"
    mngr = checkpoint.manager(ckpt_dir, keep=cfg.keep_checkpoints)
    state = _restore_or_init(trainer, mngr, ckpt_dir, say)

    n_params = count_params(state.params, cfg.model)
    tokens_per_step = cfg.batch_size * cfg.seq_len
    device = jax.devices()[0]
    flops = mfu.flops_per_token(cfg.model, cfg.seq_len)
    peak = mfu.peak_flops(device.device_kind)
    say(f"model: {n_params:,} parameters (L={cfg.model.n_layer} D={cfg.model.n_embd} N={cfg.model.n_head} "
        f"T={cfg.seq_len} V={cfg.model.n_vocab}); batch {cfg.batch_size} x {cfg.seq_len} = {tokens_per_step:,} tokens/step")
    say(f"mesh: {sharding.describe(trainer.mesh)}, rules {cfg.mesh.rules}; processes: {jax.process_count()}")
    say(f"MFU: FLOPs/token = 6*N + 12*L*T*D = {flops:.4g}; peak for {device.device_kind!r} "
        f"x{jax.device_count()}: {'n/a' if peak is None else f'{peak:.3g} FLOP/s'}")

    writer = MetricsWriter(workdir) if main else None
    start_step = int(state.step)
    result = TrainResult(start_step, state.params, None, None, None, 0.0)
    bar = tqdm(total=cfg.steps, initial=start_step, desc="train", unit="step", disable=not (progress and main),
               dynamic_ncols=True, mininterval=1.0)
    t_start = time.perf_counter()
    t_window, window_start = None, start_step
    batches = train_data.global_batches(start_step, trainer.batch_sharding)
    meta = {"vocab": train_data.manifest["vocab"]}
    try:
        for step in range(start_step, cfg.steps):
            state, metrics = trainer.train_step(state, next(batches))
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
                record["eval_loss"] = result.eval_loss = evaluate(trainer.eval_step, state.params, eval_batches)
            if record and writer is not None:
                writer.write(done, record)
                bar.set_postfix_str(_postfix(record), refresh=False)
                bar.write(_log_line(done, record))
            if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps:
                checkpoint.save(mngr, done, cfg, state.params, state.opt_state, meta)
        mngr.wait_until_finished()
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        mngr.close()
    result.step, result.params = int(state.step), state.params
    result.seconds = time.perf_counter() - t_start
    if result.eval_loss is None and cfg.eval_every:
        result.eval_loss = evaluate(trainer.eval_step, state.params, eval_batches)
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
