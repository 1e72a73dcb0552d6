"""Training: state, the pure train/eval steps, and the loop that logs, evaluates and checkpoints.

`train_step(state, batch) -> (state, metrics)` is a pure function jitted once with the state
donated. Gradient accumulation splits the batch into micro-batches and sums gradients with
`lax.scan`, so memory follows the micro-batch while the update sees the whole batch. Dropout
randomness is `fold_in(rng, step)` (and the micro-batch index): a run is a pure function of
its config, and a resumed run draws exactly what the uninterrupted one would have.

`train()` holds the workdir's lock (workdir_lock.py), prepares the data, builds the `Trainer`
and hands it to the loop (loop.py: resume, step, log, evaluate, save, stop). The step never
applies a non-finite update (a guard inside the step; nan_guard.py is the host side and
`nan_policy` decides whether the run goes on).

References:
  Radford et al. 2019; Brown et al. 2020 appendix B (optimizer settings).
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from gpt2_jax import distributed, loop, sharding, workdir_lock
from gpt2_jax import target as target_lib
from gpt2_jax.config import ConfigError, TrainConfig
from gpt2_jax.data.bundled_vocab import build_vocab
from gpt2_jax.data.prepare import MANIFEST, bundled_corpus, prepare_text
from gpt2_jax.finite import all_finite
from gpt2_jax.lm_head_loss import chunked_cross_entropy
from gpt2_jax.loop import TrainResult, evaluate  # noqa: F401 - the loop's public names, re-exported
from gpt2_jax.model import GPT, init_params
from gpt2_jax.nan_guard import NonFiniteError  # noqa: F401 - re-exported (callers catch it from here)
from gpt2_jax.optim import learning_rate_schedule, make_optimizer
from gpt2_jax.resume import check_resumable as _check_resumable  # noqa: F401 - re-exported
from gpt2_jax.resume import truncate_metrics as _truncate_metrics  # noqa: F401 - re-exported
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
    """The pure step `(state, batch[B, T+1]) -> (state, metrics)`; `Trainer` jits it with shardings."""
    model = GPT(cfg.model)
    schedule = learning_rate_schedule(cfg.optim, cfg.steps)
    deterministic = max(cfg.model.embd_pdrop, cfg.model.attn_pdrop, cfg.model.resid_pdrop) == 0.0
    # Dropout masks are a counter hash of (the site's seed from this key, global position)
    # (gpt2_jax/dropout.py): the same on every mesh and backend, so a run restored on another
    # mesh continues the same trajectory.
    def loss_fn(params, batch, rng):
        if cfg.loss_chunk_tokens:  # the head applied chunk by chunk inside the loss (lm_head_loss.py)
            hidden, _ = model.apply({"params": params}, batch[:, :-1], deterministic=deterministic,
                                    rngs={"dropout": rng}, return_hidden=True)
            # [V_padded, D]: the tied table, or the untied ablation's lm_head/kernel[D, V_padded] transposed
            head = params["wte"]["embedding"] if cfg.model.tied_embeddings else params["lm_head"]["kernel"].T
            return chunked_cross_entropy(hidden, head, batch[:, 1:], cfg.model, cfg.loss_chunk_tokens)
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
        grad_norm = optax.tree.norm(grads)
        # NaN/Inf guard (the host side is nan_guard.py, the policy TrainConfig.nan_policy): a step
        # whose loss or gradients, or the params and optimizer state its update produces, are not
        # all finite keeps the old params and optimizer state; only the step (hence the data
        # position) advances. Checking the applied update catches a huge learning rate, whose
        # update overflows although the loss and gradients it came from were finite.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite((params, opt_state))
        params, opt_state = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old),
                                                   (params, opt_state), (state.params, state.opt_state))
        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": schedule(state.step), "finite": finite}
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
    """The shard directory to train on. Without `data.path`, the bundled corpus is tokenized on
    first use (by process 0; the others wait), after learning its own BBPE if `data.vocab` asks."""
    if cfg.data.path:
        return pathlib.Path(cfg.data.path)
    shard_dir = pathlib.Path(cfg.workdir) / "data"
    if distributed.is_main_process() and not (shard_dir / MANIFEST).is_file():
        text = bundled_corpus().read_text(encoding="utf-8")
        # Learnt vocabularies see the training part only (the last 10% of tokens are validation).
        vocab = build_vocab(cfg.data.vocab_for(cfg.model.n_vocab), text[: int(len(text) * 0.9)],
                            pathlib.Path(cfg.workdir) / "vocab", say)
        manifest = prepare_text([bundled_corpus()], shard_dir, load_tokenizer(vocab))
        split = manifest["splits"]
        say(f"tokenized bundled tiny Shakespeare with vocabulary {manifest['vocab']!r}: "
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
    target: target_lib.Target  # what the steps are built for (the mesh's devices)
    decisions: target_lib.Decisions  # the model's "auto" settings resolved for that target

    @classmethod
    def build(cls, cfg: TrainConfig, devices: list | None = None) -> "Trainer":
        """`devices` defaults to all devices (of all processes); they may be devices of another
        platform than the host's (a TPU topology to compile for), which then decide every
        platform setting (gpt2_jax/target.py)."""
        mesh = sharding.make_mesh(cfg.mesh, devices)
        target = target_lib.Target.of(mesh.devices.flat)
        decisions = target_lib.decide(cfg.model, target)  # raises now, not mid-trace, on a bad choice
        batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
        micro = cfg.batch_size // cfg.grad_accum
        if micro % batch_shards:
            raise ConfigError(
                f"batch_size={cfg.batch_size} / grad_accum={cfg.grad_accum} = {micro} sequences per micro-batch "
                f"do not split over mesh data x fsdp = {batch_shards}; use a batch_size that is a multiple of "
                f"{batch_shards * cfg.grad_accum}"
            )
        tx = make_optimizer(cfg.optim, cfg.steps, cfg.model)
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

        # Activation constraints and platform decisions apply while the steps are traced, inside
        # the jit call.
        def sharded_step(state, batch):
            with sharding.activation_rules(mesh, cfg.mesh.rules), target_lib.building_for(target):
                return step_fn(state, batch)

        def sharded_eval(params, batch):
            with sharding.activation_rules(mesh, cfg.mesh.rules), target_lib.building_for(target):
                return eval_fn(params, batch)

        train_step = jax.jit(sharded_step, in_shardings=(state_shardings, batch_sharding),
                             out_shardings=(state_shardings, replicated), donate_argnums=0)
        eval_step = jax.jit(sharded_eval, in_shardings=(param_shardings, batch_sharding), out_shardings=replicated)
        init = jax.jit(lambda: init_state(init_rng), out_shardings=state_shardings)
        return cls(cfg, mesh, tx, state_shardings, batch_sharding, abstract, train_step, eval_step, init,
                   target, decisions)

    def abstract_batch(self) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((self.cfg.batch_size, self.cfg.seq_len + 1), jnp.int32, sharding=self.batch_sharding)


def train(cfg: TrainConfig, *, say: Callable[[str], None] = loop.say_line, progress: bool = True,
          devices: list | None = None) -> TrainResult:
    """Runs (or resumes) the training described by `cfg` and returns the final parameters.
    `devices` (default: all) is the device subset the mesh is built on; sweeps pack small
    points side by side on disjoint subsets (scaling/runner.py).

    Fault tolerance. The run resumes from the newest good checkpoint in WORKDIR/checkpoints
    (damaged ones are reported and skipped) and saves asynchronously every `ckpt_every` steps and
    at the end. SIGTERM/SIGINT (or JAX's multi-host preemption sync point) stop the loop at the
    next step boundary with a final checkpoint; `result.stopped` says why. A step whose loss,
    gradients or updated state are not finite never changes the state (guarded inside the
    step); the loop counts it (`nan_policy=skip`, up to `nan_skip_limit` in a row) or stops, rolls
    back and raises NonFiniteError naming a verified checkpoint (nan_guard.py). A second run in
    the same workdir raises workdir_lock.BusyError before touching anything."""
    distributed.initialize(cfg.distributed)
    main = distributed.is_main_process()
    say = say if main else (lambda _: None)
    # One writer per workdir (workdir_lock.py): process 0 holds the lock for the whole run, so a
    # second run in the same workdir stops before it reads or writes anything.
    with workdir_lock.hold(cfg.workdir, "gpt2-jax train") if main else contextlib.nullcontext():
        shard_dir = resolve_data(cfg, say)
        trainer = Trainer.build(cfg, devices)
        return loop.run(trainer, shard_dir, say=say, progress=progress, main=main)
