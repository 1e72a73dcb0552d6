"""Configuration as code: frozen dataclasses, GPT-2 presets and validated `key=value` overrides.

Every knob of a run lives in one `TrainConfig` tree (model, data, optim and loop settings).
Experiments are Python files whose `get_config()` returns a `TrainConfig`; the command line
then applies `key=value` overrides on top. A misspelt key, a value of the wrong type or an
impossible shape is rejected here, before JAX starts, with a message that names the value
and what would be accepted.

This module uses the standard library only, so it imports in milliseconds.

References:
  Radford et al. 2019, "Language Models are Unsupervised Multitask Learners" (Table 2 sizes).
  OpenAI gpt-2 `hparams.json`: n_vocab 50257, n_ctx 1024, layer-norm epsilon 1e-5.
  big_vision configs-as-code: https://github.com/google-research/big_vision
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import pathlib
import traceback
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A configuration the user wrote cannot be used; the message says why and how to fix it."""


DTYPES = ("float32", "bfloat16")
SHARDING_RULES = ("dp", "fsdp", "fsdp_tp")  # defined in sharding.py
REMAT_POLICIES = ("auto", "none", "full", "dots")  # auto: by model size, see target.py
ATTENTION_IMPLS = ("auto", "xla", "cudnn", "pallas")  # see attention.py
SCHEDULES = ("cosine", "wsd")  # optim.py: learning_rate_schedule
COOLDOWN_SHAPES = ("linear", "1-sqrt", "cosine")  # WSD cooldown shapes (Hagele et al. 2024, section 3)
NAN_POLICIES = ("skip", "stop")  # what the loop does after a non-finite loss or gradient
# Ablation switches (GPT-2 value first); see ModelConfig and model.py.
LN_PLACEMENTS = ("pre", "post")  # pre: GPT-2 (paper section 2.3); post: GPT-1 / the original Transformer
POSITION_KINDS = ("learned", "sinusoidal")  # learned: GPT-1/2; sinusoidal: Vaswani et al. 2017
ACTIVATIONS = ("gelu", "relu")  # gelu: tanh-GELU as in GPT-1/2; relu: the original Transformer
PARAMETRIZATIONS = ("sp", "mup")  # sp: GPT-2's; mup: Yang et al. 2022's μP (rules in mup.py)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """GPT-2 architecture. Field names follow OpenAI's `hparams.json` where one exists."""

    n_vocab: int = 50257  # real tokens; the embedding table is padded to `n_vocab_padded`
    n_ctx: int = 1024
    n_embd: int = 768
    n_head: int = 12
    n_layer: int = 12
    embd_pdrop: float = 0.1  # GPT-2's released config uses 0.1 for all three dropouts
    attn_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    vocab_multiple: int = 128  # pad the vocabulary so sharded and tiled matmuls divide evenly
    dtype: str = "float32"  # compute dtype; parameters are always float32
    # Layer loop: true = one compiled block (lax.scan), false = unrolled (same stacked parameters
    # [L, ...]), auto = per backend at build time (target.py: unrolled for shallow models on GPU, scanned elsewhere).
    scan_layers: bool | str = "auto"
    remat: str = "auto"  # rematerialisation policy per block in the backward pass; auto = by size
    attention: str = "auto"  # auto | xla | cudnn | pallas: which attention.py implementation trains
    # Ablation switches: the defaults are GPT-2; each changes only what it names (README "Ablations").
    # GPT-2's paper, section 2.3, lists its changes from GPT-1: LayerNorm moved to each sub-block's
    # input, a final LayerNorm, residual projections scaled at init by 1/sqrt(N) (N residual layers).
    ln_placement: str = "pre"  # pre: x + f(ln(x)) (GPT-2); post: ln(x + f(x)) (GPT-1)
    final_ln: bool = True  # ln_f after the last block (GPT-2); GPT-1 has none
    residual_scaling: bool = True  # init c_proj kernels N(0, 0.02/sqrt(2L)) (GPT-2) instead of N(0, 0.02)
    tied_embeddings: bool = True  # logits = x @ wte^T (GPT-1/2); false = a separate lm_head/kernel[D, V]
    positions: str = "learned"  # learned wpe table (GPT-1/2) or fixed sinusoids (no wpe parameters)
    activation: str = "gelu"  # MLP nonlinearity: tanh-GELU (GPT-1/2) or ReLU
    # sp = GPT-2's parametrization; mup = μP (gpt2_jax/mup.py): init, Adam LR of hidden kernels,
    # logit multiplier and attention scale follow n_embd / mup_base_width, so LRs tuned at the base transfer.
    parametrization: str = "sp"
    mup_base_width: int = 0  # μP's base n_embd (where it equals SP); required with parametrization=mup

    def __post_init__(self):
        for name in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "vocab_multiple"):
            value = getattr(self, name)
            _check(value >= 1, f"model.{name}={value} must be a positive integer")
        _check(
            self.n_embd % self.n_head == 0,
            f"model.n_embd={self.n_embd} is not divisible by model.n_head={self.n_head}; "
            f"choose n_head among {[h for h in range(1, self.n_embd + 1) if self.n_embd % h == 0][:12]}",
        )
        for name in ("embd_pdrop", "attn_pdrop", "resid_pdrop"):
            value = getattr(self, name)
            _check(0.0 <= value < 1.0, f"model.{name}={value} must be in [0, 1)")
        _check(self.layer_norm_epsilon > 0, f"model.layer_norm_epsilon={self.layer_norm_epsilon} must be > 0")
        if isinstance(self.scan_layers, str) and self.scan_layers != "auto":  # "true"/"false" from JSON or code
            object.__setattr__(self, "scan_layers", _parse_value("model.scan_layers", self.scan_layers, bool | str))
        _check(isinstance(self.scan_layers, bool) or self.scan_layers == "auto",
               f"model.scan_layers={self.scan_layers!r} is not a boolean or 'auto'; use true, false or auto")
        _check(self.dtype in DTYPES, f"model.dtype={self.dtype!r} is not one of {DTYPES}")
        _check(self.remat in REMAT_POLICIES, f"model.remat={self.remat!r} is not one of {REMAT_POLICIES}")
        _check(
            self.attention in ATTENTION_IMPLS,
            f"model.attention={self.attention!r} is not one of {ATTENTION_IMPLS}",
        )
        _check(
            not (self.attention == "cudnn" and self.attn_pdrop > 0),
            f"model.attention=cudnn has no attention dropout but model.attn_pdrop={self.attn_pdrop}; "
            "set model.attn_pdrop=0 or model.attention=pallas",
        )
        for name, valid in (("ln_placement", LN_PLACEMENTS), ("positions", POSITION_KINDS),
                            ("activation", ACTIVATIONS)):
            value = getattr(self, name)
            _check(value in valid, f"model.{name}={value!r} is not one of {valid}")
        _check(self.parametrization in PARAMETRIZATIONS,
               f"model.parametrization={self.parametrization!r} is not one of {PARAMETRIZATIONS}")
        _check(self.mup_base_width >= 0, f"model.mup_base_width={self.mup_base_width} must be >= 0")
        if self.parametrization == "mup":
            _check(self.mup_base_width > 0,
                   "model.parametrization=mup needs model.mup_base_width, the n_embd at which hyperparameters were "
                   f"tuned (e.g. model.mup_base_width={self.n_embd})")
            _check(self.mup_base_width % self.n_head == 0,
                   f"model.mup_base_width={self.mup_base_width} is not divisible by model.n_head={self.n_head}; the "
                   f"base model keeps the head count, so choose a multiple of {self.n_head}")

    @property
    def n_vocab_padded(self) -> int:
        m = self.vocab_multiple
        return -(-self.n_vocab // m) * m

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def ablations(self) -> dict[str, Any]:
        """The ablation switches set away from GPT-2's architecture, {name: value}."""
        gpt2 = ModelConfig()
        return {name: getattr(self, name) for name in ABLATION_SWITCHES if getattr(self, name) != getattr(gpt2, name)}


# Switches that change the architecture (dropout rates are switches too but leave it GPT-2).
ABLATION_SWITCHES = ("ln_placement", "final_ln", "residual_scaling", "tied_embeddings", "positions", "activation")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where training tokens come from. An empty `path` means the bundled tiny Shakespeare."""

    path: str = ""  # a shard directory (train_*.bin, val_*.bin); "" = bundled corpus, tokenized on first use
    seq_len: int = 0  # tokens per training example; 0 = model.n_ctx
    # Vocabulary for the bundled corpus (learnt on its training part, as the paper does for its data):
    #   "auto"    the one model.n_vocab implies: 50257 -> gpt2, 257 -> bytes, else bbpe:n_vocab;
    #   "gpt2"    the official GPT-2 vocabulary;  "bytes"  256 byte ids + <|endoftext|> (257 ids);
    #   "bbpe:N"  an N-token byte-level BPE (GPT-2's algorithm);  "sp:N"  an N-piece sentencepiece BPE.
    vocab: str = "auto"

    def __post_init__(self):
        _check(self.seq_len >= 0, f"data.seq_len={self.seq_len} must be >= 0 (0 means model.n_ctx)")
        kind, _, size = self.vocab.partition(":")
        ok = (self.vocab in ("auto", "gpt2", "bytes")
              or (kind == "bbpe" and size.isdigit() and 257 <= int(size) <= 65536)
              or (kind == "sp" and size.isdigit() and 258 <= int(size) <= 65536))
        _check(ok, f"data.vocab={self.vocab!r} must be one of auto, gpt2, bytes, bbpe:N (257 <= N <= 65536, "
                   f"e.g. bbpe:4096) or sp:N (258 <= N <= 65536, e.g. sp:4096)")

    def vocab_for(self, n_vocab: int) -> str:
        """`vocab` with "auto" resolved for a model of `n_vocab` ids."""
        if self.vocab != "auto":
            return self.vocab
        _check(257 <= n_vocab <= 65536,
               f"model.n_vocab={n_vocab} implies no vocabulary for the bundled corpus (data.vocab=auto needs "
               f"257 <= n_vocab <= 65536); set model.n_vocab in that range, data.vocab or data.path")
        return "gpt2" if n_vocab == 50257 else "bytes" if n_vocab == 257 else f"bbpe:{n_vocab}"


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh (data, fsdp, tensor); one axis may be -1 = the devices left over."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1
    rules: str = "fsdp"  # how parameters and activations map onto the axes (see sharding.py)
    # Data parallelism across TPU slices (over the data-center network); `data`, `fsdp`, `tensor`
    # then describe one slice. 0 = one group per slice the devices span (1 on a single slice).
    dcn_data: int = 0

    def __post_init__(self):
        for name in ("data", "fsdp", "tensor"):
            value = getattr(self, name)
            _check(value >= 1 or value == -1, f"mesh.{name}={value} must be a positive integer or -1 (the rest)")
        _check(self.dcn_data >= 0, f"mesh.dcn_data={self.dcn_data} must be >= 0 (0 = one per slice)")
        _check(self.rules in SHARDING_RULES, f"mesh.rules={self.rules!r} is not one of {SHARDING_RULES}")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """Multi-process (multi-host) runs through `jax.distributed`. With `auto=true` JAX detects
    the cluster itself (TPU VMs, SLURM); otherwise give coordinator, num_processes, process_id."""

    coordinator: str = ""  # host:port of process 0; "" and auto=false = a single process
    num_processes: int = 1
    process_id: int = 0
    auto: bool = False
    timeout_s: int = 300  # how long to wait for every process before failing (no silent hang)

    def __post_init__(self):
        _check(self.num_processes >= 1, f"distributed.num_processes={self.num_processes} must be >= 1")
        _check(0 <= self.process_id < self.num_processes,
               f"distributed.process_id={self.process_id} must be in [0, {self.num_processes})")
        _check(self.timeout_s >= 1, f"distributed.timeout_s={self.timeout_s} must be >= 1")

    @property
    def enabled(self) -> bool:
        return self.auto or bool(self.coordinator)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup, then cosine decay or warmup-stable-decay (WSD; optim.py)."""

    lr: float = 6e-4
    min_lr_ratio: float = 0.1  # the schedule decays to lr * min_lr_ratio
    warmup_steps: int = 100
    decay_steps: int = 0  # cosine: 0 = the run's `steps`
    schedule: str = "cosine"  # "cosine" or "wsd" (constant lr, then a cooldown over the last steps)
    cooldown_fraction: float = 0.2  # wsd: the cooldown's share of the run's steps
    cooldown_shape: str = "linear"  # wsd: "linear", "1-sqrt" or "cosine" decay from lr to lr * min_lr_ratio
    weight_decay: float = 0.1  # applied to matrices only (not biases, LayerNorm or embeddings' pads)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # global-norm clipping; 0 disables
    mu_dtype: str = "float32"  # Adam's first moment: float32, or bfloat16 to halve its memory and traffic

    def __post_init__(self):
        _check(math.isfinite(self.lr) and self.lr > 0, f"optim.lr={self.lr} must be a finite number > 0")
        _check(0 <= self.min_lr_ratio <= 1, f"optim.min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        _check(self.warmup_steps >= 0, f"optim.warmup_steps={self.warmup_steps} must be >= 0")
        _check(self.decay_steps >= 0, f"optim.decay_steps={self.decay_steps} must be >= 0")
        _check(self.weight_decay >= 0, f"optim.weight_decay={self.weight_decay} must be >= 0")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "optim.beta1 and optim.beta2 must be in [0, 1)")
        _check(self.eps > 0, f"optim.eps={self.eps} must be > 0 (Adam divides by sqrt(v) + eps)")
        _check(self.grad_clip >= 0, f"optim.grad_clip={self.grad_clip} must be >= 0 (0 disables)")
        _check(self.mu_dtype in DTYPES, f"optim.mu_dtype={self.mu_dtype!r} is not one of {DTYPES}")
        _check(self.schedule in SCHEDULES, f"optim.schedule={self.schedule!r} is not one of {SCHEDULES}")
        _check(0 < self.cooldown_fraction <= 1, f"optim.cooldown_fraction={self.cooldown_fraction} must be in (0, 1]")
        _check(self.cooldown_shape in COOLDOWN_SHAPES,
               f"optim.cooldown_shape={self.cooldown_shape!r} is not one of {COOLDOWN_SHAPES}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. The defaults are the bundled CPU demo (`gpt2-jax train`)."""

    workdir: str = "runs/demo"
    # The demo: `mini` with its own 4096-token BBPE learnt on tiny Shakespeare (see README).
    model: ModelConfig = dataclasses.field(default_factory=lambda: dataclasses.replace(preset("mini"), n_vocab=4096))
    data: DataConfig = dataclasses.field(default_factory=DataConfig)  # vocab auto: bbpe:4096 for n_vocab 4096
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(lr=1e-3, warmup_steps=50))
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    steps: int = 600
    seed: int = 0
    batch_size: int = 16  # sequences per optimizer step (global)
    grad_accum: int = 1  # micro-batches per step; batch_size must divide evenly
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 8
    ckpt_every: int = 200  # 0 = only at the end
    keep_checkpoints: int = 3  # the newest N checkpoints are kept
    keep_best: int = 0  # also keep the N checkpoints with the lowest eval loss (checkpoint steps are then evaluated)
    nan_policy: str = "skip"  # non-finite loss or gradients: "skip" the update (and count it) or "stop" the run
    nan_skip_limit: int = 20  # with nan_policy=skip: stop after this many non-finite steps in a row
    sample_prompt: str = "ROMEO:"  # printed after training; "" skips the sample
    sample_tokens: int = 64
    # Apply the LM head + cross-entropy this many tokens at a time (lm_head_loss.py): no [B*T, V]
    # float32 logits in memory. 0 = off (one matmul over all tokens). Must divide a micro-batch's B*T.
    loss_chunk_tokens: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "log_every", "eval_batches", "keep_checkpoints",
                     "nan_skip_limit"):
            value = getattr(self, name)
            _check(value >= 1, f"{name}={value} must be a positive integer")
        for name in ("eval_every", "ckpt_every", "sample_tokens", "keep_best", "loss_chunk_tokens"):
            value = getattr(self, name)
            _check(value >= 0, f"{name}={value} must be >= 0 (0 disables)")
        _check(self.nan_policy in NAN_POLICIES, f"nan_policy={self.nan_policy!r} is not one of {NAN_POLICIES}")
        _check(
            self.batch_size % self.grad_accum == 0,
            f"batch_size={self.batch_size} is not divisible by grad_accum={self.grad_accum}",
        )
        _check(
            self.seq_len <= self.model.n_ctx,
            f"data.seq_len={self.data.seq_len} exceeds model.n_ctx={self.model.n_ctx}; "
            f"use data.seq_len<={self.model.n_ctx} or 0 for n_ctx",
        )


    @property
    def seq_len(self) -> int:
        return self.data.seq_len or self.model.n_ctx


# GPT-2 sizes from the paper's Table 2; tiny ones for tests and CPU demos.
PRESETS: dict[str, ModelConfig] = {
    "gpt2": ModelConfig(n_layer=12, n_embd=768, n_head=12),
    "gpt2-medium": ModelConfig(n_layer=24, n_embd=1024, n_head=16),
    "gpt2-large": ModelConfig(n_layer=36, n_embd=1280, n_head=20),
    "gpt2-xl": ModelConfig(n_layer=48, n_embd=1600, n_head=25),
    # A few seconds per step on a 2-core CPU; the unit-test workhorse.
    "tiny": ModelConfig(n_layer=2, n_embd=64, n_head=2, n_ctx=128),
    # The CPU demo: trains on tiny Shakespeare in minutes.
    "mini": ModelConfig(n_layer=4, n_embd=128, n_head=4, n_ctx=128),
}


def preset(name: str) -> ModelConfig:
    """The `ModelConfig` of a named preset (see `PRESETS`)."""
    if name not in PRESETS:
        hint = difflib.get_close_matches(name, PRESETS, n=1)
        raise ConfigError(
            f"unknown model preset {name!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; choose one of {sorted(PRESETS)}"
        )
    return PRESETS[name]


# ----------------------------------------------------------------------------------------------
# key=value overrides


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _parse_value(key: str, text: str, kind: Any) -> Any:
    if kind == bool | str:  # a boolean that may also be "auto" (resolved later, per backend)
        if text.strip().lower() == "auto":
            return "auto"
        try:
            return _parse_value(key, text, bool)
        except ConfigError:
            raise ConfigError(f"{key}={text!r} is not a boolean or 'auto'; use true, false or auto") from None
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}={text!r} is not a boolean; use true or false")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r} is not an integer") from None
    if kind is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r} is not a number") from None
        if not math.isfinite(value):  # inf passes every `> 0` check below, and nan fails them all silently
            raise ConfigError(f"{key}={text!r} is not a finite number")
        return value
    if kind is str:
        return text
    raise ConfigError(f"{key} cannot be set from the command line")


def _set(tree: dict, cls: Any, path: list[str], text: str, full_key: str) -> None:
    """Sets `path` in `tree` (the `to_dict` form of a `cls` config), parsing `text` by field type."""
    types_ = _field_types(cls)
    name = path[0]
    if name not in types_:
        hint = difflib.get_close_matches(name, types_, n=1)
        prefix = full_key[: len(full_key) - len(".".join(path))]
        raise ConfigError(
            f"unknown config key {full_key!r}"
            + (f" (did you mean {prefix + hint[0]!r}?)" if hint else "")
            + f"; valid keys{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(types_)}"
        )
    kind = types_[name]
    if dataclasses.is_dataclass(kind):
        if len(path) == 1:
            if kind is ModelConfig:  # `model=gpt2` replaces the whole model config by a preset
                tree[name] = to_dict(preset(text))
                return
            raise ConfigError(f"{full_key} is a group; set one of its fields, e.g. {full_key}.{dataclasses.fields(kind)[0].name}=...")
        _set(tree[name], kind, path[1:], text, full_key)
        return
    if len(path) > 1:
        raise ConfigError(f"unknown config key {full_key!r}: {'.'.join(path[:1])} has no sub-keys")
    tree[name] = _parse_value(full_key, text, kind)


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Applies `key=value` strings to `cfg`. `model=PRESET` is applied before field overrides,
    so `model.n_layer=4 model=gpt2` means "gpt2 with 4 layers" whatever the order. The result
    is validated once, after all overrides, so their order never matters."""
    pairs = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. steps=100 or model.n_layer=4)")
        key, value = item.split("=", 1)
        pairs.append((key.strip(), value))
    pairs.sort(key=lambda kv: kv[0] != "model")  # stable: presets first, then the rest in order
    tree = to_dict(cfg)
    for key, value in pairs:
        _set(tree, TrainConfig, key.split("."), value, key)
    return from_dict(TrainConfig, tree)


def load_module(path: str | pathlib.Path, *, kind: str = "experiment") -> types.ModuleType:
    """Runs a Python file as a fresh module and returns it. Experiments that build on a sibling
    (a probe or a holdout of a study) load the study with it: experiments/ is not a package."""
    path = pathlib.Path(path)
    spec = importlib.util.spec_from_file_location(f"{kind}_{path.stem}", path)
    module = types.ModuleType(spec.name)
    module.__file__ = str(path)
    spec.loader.exec_module(module)
    return module


def call_in_file(path: str | pathlib.Path, function: str, expected: type, *, kind: str = "experiment",
                 type_name: str = "", error: type[Exception] = ConfigError) -> Any:
    """Runs a Python file (configs as code) and returns its `function()`, which must be an
    `expected`; any problem is one `error` naming the file. `kind` names the file in messages."""
    path = pathlib.Path(path)
    type_name = type_name or expected.__name__
    if not path.is_file():
        raise error(f"{kind} file {str(path)!r} does not exist; pass a .py file with {function}()")
    try:
        module = load_module(path, kind=kind)
        if not hasattr(module, function):
            raise error(f"{kind} file {str(path)!r} defines no {function}(); it must return a {type_name}")
        value = getattr(module, function)()
    except error:
        raise
    except Exception as e:  # the user's code: FILE:LINE of the innermost frame in their file
        raise error(f"{_where_in(path, e)}: {type(e).__name__}: {e} (in {kind} file; --debug shows the traceback)") from e
    if not isinstance(value, expected):
        raise error(f"{function}() in {str(path)!r} returned {type(value).__name__}, not a {expected.__name__}")
    return value


def _where_in(path: pathlib.Path, e: Exception) -> str:
    if isinstance(e, SyntaxError) and e.lineno:
        return f"{e.filename or path}:{e.lineno}"
    frames = [f for f in traceback.extract_tb(e.__traceback__) if pathlib.Path(f.filename) == path]
    return f"{path}:{frames[-1].lineno}" if frames else str(path)


def load_experiment(path: str | pathlib.Path) -> TrainConfig:
    """Runs an experiment file and returns its `get_config()`."""
    return call_in_file(path, "get_config", TrainConfig)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls, data: dict) -> Any:
    """Rebuilds a config dataclass from `to_dict` output (e.g. the JSON saved in a checkpoint).
    Keys this version does not know are an error, so a checkpoint is never silently misread."""
    types_ = _field_types(cls)
    unknown = set(data) - set(types_)
    if unknown:
        raise ConfigError(f"{cls.__name__} has no fields {sorted(unknown)}; the data comes from an incompatible version")
    kwargs = {}
    for name, value in data.items():
        kind = types_[name]
        kwargs[name] = from_dict(kind, value) if dataclasses.is_dataclass(kind) else value
        _check(not (kind is float and isinstance(value, float) and not math.isfinite(value)),
               f"{cls.__name__}.{name}={value} is not a finite number")
    return cls(**kwargs)
