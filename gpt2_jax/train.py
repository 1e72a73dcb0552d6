"""Training: state, the pure train/eval steps, and the loop that logs, evaluates and checkpoints.

`train_step(state, batch) -> (state, metrics)` is a pure function jitted once with the state
donated. Gradient accumulation splits the batch into micro-batches and sums gradients with
`lax.scan`, so memory follows the micro-batch while the update sees the whole batch. Dropout
randomness is `fold_in(rng, step)` (and the micro-batch index): a run is a pure function of
its config, and a resumed run draws exactly what the uninterrupted one would have.

The loop resumes from the newest good checkpoint in `WORKDIR/checkpoints/` when there is one
(damaged ones are skipped, see checkpoint.py), saves asynchronously, stops cleanly on SIGTERM,
SIGINT or a multi-host preemption notice (preemption.py), and never applies a non-finite
update (a guard inside the step; `nan_policy` decides whether the run goes on).

References:
  Radford et al. 2019; Brown et al. 2020 appendix B (optimizer settings).
  karpathy/nanoGPT train.py (loop structure, MFU reporting).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm  # a widget in Jupyter, the usual bar in a terminal

from gpt2_jax import checkpoint, distributed, mfu, preemption, sharding
from gpt2_jax import target as target_lib
from gpt2_jax.config import ABLATION_SWITCHES, ConfigError, TrainConfig, to_dict
from gpt2_jax.data.bundled_vocab import bits_per_byte, build_vocab, bytes_per_token
from gpt2_jax.data.loader import TokenLoader
from gpt2_jax.data.prepare import MANIFEST, bundled_corpus, prepare_text
from gpt2_jax.lm_head_loss import chunked_cross_entropy
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
        # NaN/Inf guard (fault tolerance; the policy is in train(), TrainConfig.nan_policy): a step
        # whose loss or gradients are not finite keeps the old params and optimizer state; only
        # the step (hence the data position) advances. `finite` is reported in the metrics.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
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


def check_vocab_matches(cfg: TrainConfig, manifest: dict, shard_dir: pathlib.Path) -> None:
    if manifest["n_vocab"] != cfg.model.n_vocab:
        hint = " or data.vocab=auto" if not cfg.data.path and cfg.data.vocab != "auto" else ""
        raise ConfigError(
            f"shards in {str(shard_dir)!r} use vocabulary {manifest['vocab']!r} with {manifest['n_vocab']} ids but "
            f"model.n_vocab={cfg.model.n_vocab}; set model.n_vocab={manifest['n_vocab']}{hint}")


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


class NonFiniteError(ConfigError, FloatingPointError):
    """The loss or gradients stopped being finite and nan_policy says stop. Reported like a
    configuration error (one `error:` line) because the fix is one: a lower optim.lr, more
    warmup, clipping, or nan_policy=skip."""


class _NonFinite(Exception):
    def __init__(self, step: int):
        self.step = step


def evaluate(eval_step: Callable, params: Any, batches: list) -> float:
    losses = [eval_step(params, b) for b in batches]
    return float(np.mean(jax.device_get(losses)))


# Model fields that decide the parameters' shapes (or what they mean): a checkpoint with other
# values cannot be resumed. The remaining fields (dropout, dtype, remat, scan_layers, ...) may change.
_ARCHITECTURE = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "vocab_multiple", "parametrization",
                 "mup_base_width") + ABLATION_SWITCHES
# Settings that never change what a run computes, and so are not reported when they change.
_BOOKKEEPING = ("workdir", "log_every", "eval_every", "eval_batches", "ckpt_every", "keep_checkpoints", "keep_best",
                "sample_prompt", "sample_tokens", "nan_skip_limit")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _check_resumable(saved: TrainConfig, cfg: TrainConfig, where: str, step: int) -> dict:
    """Raises ConfigError if the checkpoint's state cannot be this config's state (architecture
    or optimizer-state structure); returns the other settings that differ, {key: (saved, now)}."""
    diff = {f"model.{name}": (getattr(saved.model, name), getattr(cfg.model, name))
            for name in _ARCHITECTURE if getattr(saved.model, name) != getattr(cfg.model, name)}
    if diff:
        raise ConfigError(f"{where} holds checkpoints of a different model (step {step}; saved vs now: {diff}); "
                          f"use a new workdir or the saved model settings")
    params = jax.eval_shape(lambda: init_params(cfg.model, jax.random.PRNGKey(0)))
    layouts = [jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), jax.eval_shape(make_optimizer(c.optim, c.steps, c.model).init, params))
               for c in (saved, cfg)]
    changed = {k: (a, b) for k, a, b in _zip_flat(saved, cfg) if a != b}
    if jax.tree_util.tree_structure(layouts[0]) != jax.tree_util.tree_structure(layouts[1]) or \
            jax.tree_util.tree_leaves(layouts[0]) != jax.tree_util.tree_leaves(layouts[1]):
        optim = {k: v for k, v in changed.items() if k.startswith("optim.")}
        raise ConfigError(f"{where} holds an optimizer state of another structure (step {step}; saved vs now: {optim}); "
                          f"use a new workdir or the saved optim settings")
    return {k: v for k, v in changed.items() if k not in _BOOKKEEPING and not k.startswith("distributed.")}


def _zip_flat(a: TrainConfig, b: TrainConfig):
    fa, fb = _flat(to_dict(a)), _flat(to_dict(b))
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb))]


def _data_fingerprint(manifest: dict) -> str:
    """Identifies the training split's tokens: shard names, sizes and sha256 (when recorded)."""
    split = manifest["splits"]["train"]
    files = {f["name"]: f for f in split.get("files", [])}
    shards = [[name, files.get(name, {}).get("tokens"), files.get(name, {}).get("sha256")] for name in split["shards"]]
    blob = json.dumps({"vocab": manifest.get("vocab_fingerprint", manifest.get("vocab")), "shards": shards}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _restore_or_init(trainer: Trainer, mngr, data: dict, say) -> tuple[TrainState, dict]:
    """The newest good checkpoint in `mngr`'s directory (damaged newer ones are reported and
    skipped), or a fresh state; with the checkpoint's meta ({} when fresh)."""
    cfg = trainer.cfg
    where = str(mngr.directory)

    def check(step: int, meta: dict, saved: TrainConfig) -> None:
        changed = _check_resumable(saved, cfg, where, step)
        if changed:
            say("note: resuming with changed settings (saved -> now): "
                + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
        saved_data = meta.get("data", {}).get("fingerprint")
        if saved_data and saved_data != data["fingerprint"]:
            say(f"warning: the training data differs from the checkpoint's (fingerprint {saved_data} -> "
                f"{data['fingerprint']}); the run continues at the saved position in the new data")

    restored = checkpoint.restore_latest(mngr, params_target=trainer.abstract_state.params,
                                         opt_state_target=trainer.abstract_state.opt_state, check=check, say=say)
    if restored is None:
        return trainer.init_state(), {}
    skipped = f", {restored.meta['skipped_steps']} non-finite steps skipped so far" if restored.meta.get("skipped_steps") else ""
    say(f"resuming from {where} at step {restored.step}{skipped}")
    step = jax.device_put(jnp.asarray(restored.step, jnp.int32), trainer.state_shardings.step)
    return TrainState(step, restored.params, restored.opt_state), restored.meta


def _truncate_metrics(path: pathlib.Path, step: int) -> None:
    """Drops records after `step` (written by a run that died before its next checkpoint), so
    the log of a resumed run is the log of the uninterrupted run. Atomic (rename)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line if line.endswith("\n") else line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    if len(keep) != len(lines):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(keep))
        tmp.replace(path)


def train(cfg: TrainConfig, *, say: Callable[[str], None] = print, progress: bool = True,
          devices: list | None = None) -> TrainResult:
    """Runs (or resumes) the training described by `cfg` and returns the final parameters.
    `devices` (default: all) is the device subset the mesh is built on; sweeps pack small
    points side by side on disjoint subsets (scaling/runner.py).

    Fault tolerance. The run resumes from the newest good checkpoint in WORKDIR/checkpoints
    (damaged ones are reported and skipped) and saves asynchronously every `ckpt_every` steps and
    at the end. SIGTERM/SIGINT (or JAX's multi-host preemption sync point) stop the loop at the
    next step boundary with a final checkpoint; `result.stopped` says why. A step with a
    non-finite loss or gradient never changes the state (guarded inside the step); the loop
    counts it (`nan_policy=skip`, up to `nan_skip_limit` in a row) or saves the last good state
    and raises NonFiniteError (`nan_policy=stop`)."""
    distributed.initialize(cfg.distributed)
    main = distributed.is_main_process()
    say = say if main else (lambda _: None)
    workdir = pathlib.Path(cfg.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    shard_dir = resolve_data(cfg, say)
    trainer = Trainer.build(cfg, devices)
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
    data_meta = {"split": "train", "fingerprint": _data_fingerprint(train_data.manifest), "seed": cfg.seed,
                 "batch_size": cfg.batch_size, "seq_len": cfg.seq_len}
    dropout_key = jax.random.split(jax.random.PRNGKey(cfg.seed))[1]  # as in Trainer.build
    rng_meta = {"seed": cfg.seed, "dropout_key": np.asarray(jax.random.key_data(dropout_key)).tolist(),
                "dropout": "fold_in(dropout_key, step), then the micro-batch index"}
    mngr = checkpoint.manager(ckpt_dir, keep=cfg.keep_checkpoints, keep_best=cfg.keep_best)
    try:
        state, resumed = _restore_or_init(trainer, mngr, data_meta, say)
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
    if main:
        _truncate_metrics(workdir / "metrics.jsonl", start_step)
    writer = MetricsWriter(workdir) if main else None
    result = TrainResult(start_step, state.params, None, None, None, 0.0,
                         resumed_from=start_step if resumed else None)
    skipped = int(resumed.get("skipped_steps", 0))
    in_a_row = 0

    def meta(step: int, skipped_steps: int) -> dict:
        return {"vocab": train_data.manifest.get("vocab_source", train_data.manifest["vocab"]), "rng": rng_meta,
                "data": {**data_meta, "next_step": step, "examples_seen": step * cfg.batch_size},
                "skipped_steps": skipped_steps}

    def check_finite(step: int, finite) -> None:
        """Host side of the NaN guard, for `step` (its update was already withheld in the step)."""
        nonlocal skipped, in_a_row
        if bool(finite):
            in_a_row = 0
            return
        skipped, in_a_row = skipped + 1, in_a_row + 1
        if cfg.nan_policy == "stop" or in_a_row >= cfg.nan_skip_limit:
            raise _NonFinite(step)
        say(f"warning: step {step}: the loss or gradients are not finite; the update was skipped "
            f"({skipped} skipped in this run so far)")

    bar = tqdm(total=cfg.steps, initial=start_step, desc="train", unit="step", disable=not (progress and main),
               dynamic_ncols=True, mininterval=1.0)
    t_start = time.perf_counter()
    t_window, window_start = None, start_step
    batches = train_data.global_batches(start_step, trainer.batch_sharding)
    pending = None  # (step, finite flag) not yet looked at: the host checks one step behind
    try:
        with preemption.StopRequest() as stop:
            for step in range(start_step, cfg.steps):
                state, metrics = trainer.train_step(state, next(batches))
                done = step + 1
                if pending is not None:  # the previous step; this one is already queued behind it
                    check_finite(*pending)
                pending = (done, metrics["finite"])
                bar.update(1)
                if t_window is None:  # first step includes compilation: start the clock after it
                    jax.block_until_ready(metrics)
                    t_window, window_start = time.perf_counter(), done
                logs = done % cfg.log_every == 0 or done == cfg.steps
                saves = (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps
                evals = bool(cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps)) or \
                    bool(cfg.keep_best and saves)
                stopping = stop.should_stop(done)
                if cfg.nan_policy == "stop" or logs or evals or saves or stopping:
                    check_finite(*pending)  # nothing is logged or saved past an unchecked step
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
                    if skipped:
                        record["skipped_steps"] = skipped
                    result.loss = record["loss"]
                    if train_bpt:
                        record["bits_per_byte"] = bits_per_byte(record["loss"], train_bpt)
                if evals:
                    record["eval_loss"] = result.eval_loss = evaluate(trainer.eval_step, state.params, eval_batches)
                    if val_bpt:
                        record["eval_bits_per_byte"] = bits_per_byte(record["eval_loss"], val_bpt)
                if record and writer is not None:
                    writer.write(done, record)
                    bar.set_postfix_str(_postfix(record), refresh=False)
                    bar.write(_log_line(done, record))
                if saves or stopping:
                    checkpoint.save(mngr, done, cfg, state.params, state.opt_state, meta(done, skipped),
                                    eval_loss=record.get("eval_loss"))
                if stopping:
                    checkpoint.wait(mngr, done)
                    result.stopped = stop.reason
                    when = ("every process agreed on this step" if stop.signal_step is None
                            else f"the signal came after step {stop.signal_step}")
                    say(f"{stop.reason}: stopped after step {done} ({when}); "
                        f"checkpoint {ckpt_dir / str(done)} is complete. Rerun the same command to resume.")
                    break
            if pending is not None:
                check_finite(*pending)
            checkpoint.wait(mngr)
    except _NonFinite as bad:
        # The guard kept the state of step bad.step - 1: save it (unless it is saved already), so
        # nothing is lost, then stop.
        last_good = bad.step - 1
        saved = ""
        if cfg.nan_policy == "stop" and last_good > 0:
            if last_good not in mngr.all_steps():
                checkpoint.save(mngr, last_good, cfg, state.params, state.opt_state, meta(last_good, skipped - 1))
            checkpoint.wait(mngr, last_good)
            saved = f"the state after step {last_good} is checkpoint {ckpt_dir / str(last_good)}"
        else:
            checkpoint.wait(mngr)
            steps = mngr.all_steps()
            saved = f"the newest checkpoint is {ckpt_dir / str(steps[-1])}" if steps else "no checkpoint was saved"
        why = ("nan_policy=stop" if cfg.nan_policy == "stop"
               else f"{in_a_row} non-finite steps in a row (nan_skip_limit={cfg.nan_skip_limit})")
        raise NonFiniteError(
            f"the loss or gradients are not finite at step {bad.step} ({why}); its update was not applied and "
            f"{saved}. Lower optim.lr, lengthen optim.warmup_steps or check the data; nan_policy=skip skips such steps"
        ) from None
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        mngr.close()
    result.step, result.params, result.skipped_steps = int(state.step), state.params, skipped
    result.seconds = time.perf_counter() - t_start
    if result.eval_loss is None and cfg.eval_every and result.stopped is None:
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
        if "bits_per_byte" in record:
            parts.append(f"bits/byte {record['bits_per_byte']:.4f}")
    if "tokens_per_sec" in record:
        mfu_value = record.get("mfu")
        parts += [f"{record['tokens_per_sec']:,.0f} tok/s", f"mfu {'n/a' if mfu_value is None else f'{100 * mfu_value:.1f}%'}"]
    if "eval_loss" in record:
        parts.append(f"eval_loss {record['eval_loss']:.4f}")
    if "eval_bits_per_byte" in record:
        parts.append(f"eval_bits/byte {record['eval_bits_per_byte']:.4f}")
    if record.get("skipped_steps"):
        parts.append(f"skipped {record['skipped_steps']}")
    return " | ".join(parts)
