"""Every platform decision, made once from the devices a step is built for.

A step can be built for devices other than the host's: `--compile-only --topology v5e:16x16`
compiles on a CPU host for TPU devices, and tests lower for an abstract H100. So nothing asks
`jax.default_backend()` (the host's answer); the builder names its devices with
`building_for(devices)` around tracing, and the model, the attention dispatcher and the kernels
ask `decide(model_config)`. Without a builder's word the target is `jax.devices()`, which is where
an ordinary jitted call runs.

The decision table for the "auto" settings (explicit settings pass through, checked):

  attention   tpu: "pallas" (Mosaic flash kernels) when the head size fits a kernel tile, else "xla".
              gpu: "cudnn" when cuDNN accepts the configuration (compute dtype bfloat16/float16, no
                   attention dropout, head size a multiple of 8 and at most 128); else "pallas"
                   (Triton flash kernels, any dtype, dropout) when the head size fits; else "xla".
              cpu: "xla" (the kernels only run interpreted there, for tests).
  kernels     the TPU (Mosaic) family on TPU targets, the GPU (Triton) family elsewhere; interpreted
              unless the target is a GPU or TPU.
  layer loop  scanned on CPU and TPU (compile time flat in depth: tests and pods); on GPU unrolled
              up to GPU_UNROLL_MAX_LAYERS layers, scanned above. One H200 measured the unrolled
              loop 1.37x (cuDNN) and 1.33x (Pallas) faster for `gpt2` (12 layers, first step 24 s);
              `gpt2-xl` unrolled (48 layers, Pallas, remat) had not compiled after 200 s (issue 23).
  remat       "dots" (keep matmul outputs, recompute the rest) from 1e9 block parameters
              (12 L D^2: `gpt2-xl`), "none" below, on every platform. The memory check of
              `--compile-only` says when a smaller model needs it on a small chip.
  MFU peak    from the target's chip (gpt2_jax/chips.py), None on CPUs.

References:
  NVIDIA cuDNN developer guide, "Scaled dot product attention" (fp16/bf16 inputs, head size a
  multiple of 8 up to 128 on all supported GPUs); jax.nn.dot_product_attention's cuDNN path
  raises for float32 inputs (seen on an H200 with jax 0.11.2, issue 23).
  Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models".
  MaxText configs/base.yml (scan_layers, remat_policy per model size).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
from typing import Iterable

import jax

from gpt2_jax.chips import chip
from gpt2_jax.config import ConfigError, ModelConfig

PLATFORMS = ("cpu", "gpu", "tpu")
GPU_UNROLL_MAX_LAYERS = 12
REMAT_DOTS_FROM_PARAMS = 1e9  # block parameters 12 * L * D^2 from which "auto" remats (gpt2-xl)
CUDNN_DTYPES = ("bfloat16", "float16")
CUDNN_MAX_HEAD_DIM = 128
KERNEL_MAX_HEAD_DIM = 256  # gpt2_jax/kernels/block_sizes.py MAX_HEAD_DIM (kernels import nothing of ours)


@dataclasses.dataclass(frozen=True)
class Target:
    """The devices a step is built for, reduced to what decisions need."""

    platform: str  # "cpu" | "gpu" | "tpu"
    device_kind: str
    n_devices: int = 1

    @classmethod
    def of(cls, devices: Iterable) -> "Target":
        """From real, topology or abstract devices (anything with .platform and .device_kind)."""
        devices = list(devices)
        if not devices:
            raise ConfigError("no devices to build a step for; check the mesh and --topology")
        first = devices[0]
        platform = {"cuda": "gpu", "rocm": "gpu"}.get(first.platform, first.platform)
        if platform not in PLATFORMS:
            raise ConfigError(f"device platform {first.platform!r} is not one of {PLATFORMS}")
        return cls(platform, first.device_kind, len(devices))


@dataclasses.dataclass(frozen=True)
class Decisions:
    """What a model config resolves to on a target; `why` says, per setting, what chose it."""

    attention: str  # "xla" | "cudnn" | "pallas"
    kernel_family: str  # "tpu" (Mosaic) | "gpu" (Triton): the Pallas kernels' family
    interpret: bool  # run the Pallas kernels in the interpreter (CPU targets)
    scan_layers: bool
    remat: str  # "none" | "full" | "dots"
    peak_flops: float | None
    why: dict

    def describe(self, model: ModelConfig) -> str:
        """One line for run headers, e.g. "attention=cudnn (auto), layers unrolled (auto), remat=none (auto)"."""
        auto = lambda setting: " (auto)" if setting == "auto" else ""  # noqa: E731
        return (f"attention={self.attention}{auto(model.attention)}, "
                f"layers {'scanned' if self.scan_layers else 'unrolled'}{auto(model.scan_layers)}, "
                f"remat={self.remat}{auto(model.remat)}")


def skip_absent_tpu_backend() -> None:
    """Keeps jax from starting libtpu's TPU backend on a host with no TPU chips.

    libtpu is installed on CPU hosts too (it is what compiles for `--topology`), and jax then tries
    its TPU backend on every start, which fails quietly but prints several lines of libtpu
    warnings first. jax already skips its CUDA backend on hosts without an NVIDIA GPU; this is the
    same rule for TPUs. An explicit JAX_PLATFORMS is left alone, and describing topologies for
    compilation loads libtpu by itself, not through this backend."""
    if os.environ.get("JAX_PLATFORMS"):
        return
    try:
        from jax._src import hardware_utils, xla_bridge

        if hardware_utils.num_available_tpu_chips_and_device_id()[0] == 0 and not xla_bridge._backends:
            xla_bridge._backend_factories.pop("tpu", None)
    except (ImportError, AttributeError):  # private jax API moved: the warnings come back, nothing breaks
        pass


skip_absent_tpu_backend()

_TARGET: contextvars.ContextVar[Target | None] = contextvars.ContextVar("gpt2_jax_target", default=None)


@contextlib.contextmanager
def building_for(devices_or_target):
    """Within this block (while a step is traced), decisions are made for these devices."""
    target = devices_or_target if isinstance(devices_or_target, Target) else Target.of(devices_or_target)
    token = _TARGET.set(target)
    try:
        yield target
    finally:
        _TARGET.reset(token)


def current() -> Target:
    """The target being built for: the innermost `building_for`, else this process's devices."""
    return _TARGET.get() or Target.of(jax.devices())


def attention_impl(attention: str, dtype: str, dropout: float, head_dim: int, target: Target) -> tuple[str, str]:
    """(implementation, why) for the setting `attention` ("auto" or explicit, which is checked) with
    inputs of this compute dtype, attention dropout rate and head size, on `target`."""
    cudnn_ok = (dtype in CUDNN_DTYPES and dropout == 0.0 and head_dim % 8 == 0 and head_dim <= CUDNN_MAX_HEAD_DIM)
    if attention == "cudnn":
        if target.platform != "gpu":
            raise ConfigError(f"model.attention=cudnn needs an NVIDIA GPU, but the step is built for "
                              f"{target.platform} ({target.device_kind}); use model.attention=auto, xla or pallas")
        if not cudnn_ok:
            raise ConfigError(f"model.attention=cudnn cannot run dtype={dtype}, attn_pdrop={dropout}, head size "
                              f"{head_dim} (cuDNN needs bfloat16/float16, no dropout, head size a multiple of 8 up "
                              f"to {CUDNN_MAX_HEAD_DIM}); use model.attention=auto or pallas")
        return "cudnn", "explicit"
    if attention != "auto":
        return attention, "explicit"
    kernels_fit = head_dim <= KERNEL_MAX_HEAD_DIM
    if target.platform == "tpu":
        return ("pallas", "TPU: Mosaic flash kernels") if kernels_fit else \
            ("xla", f"TPU: head size {head_dim} > {KERNEL_MAX_HEAD_DIM} fits no kernel tile")
    if target.platform == "gpu":
        if cudnn_ok:
            return "cudnn", "GPU: cuDNN accepts this dtype, dropout and head size"
        reason = (f"dtype {dtype}" if dtype not in CUDNN_DTYPES else
                  f"attention dropout {dropout}" if dropout else f"head size {head_dim}")
        if kernels_fit:
            return "pallas", f"GPU: cuDNN rejects {reason}; Triton flash kernels"
        return "xla", f"GPU: cuDNN rejects {reason} and head size {head_dim} fits no kernel tile"
    return "xla", "CPU: the reference (kernels only run interpreted)"


def layer_loop_is_scanned(model: ModelConfig, target: Target) -> tuple[bool, str]:
    if model.scan_layers != "auto":
        return bool(model.scan_layers), "explicit"
    if target.platform == "gpu":
        if model.n_layer <= GPU_UNROLL_MAX_LAYERS:
            return False, f"GPU, {model.n_layer} <= {GPU_UNROLL_MAX_LAYERS} layers: unrolled (faster steps)"
        return True, f"GPU, {model.n_layer} > {GPU_UNROLL_MAX_LAYERS} layers: scanned (short compile)"
    return True, f"{target.platform.upper()}: scanned (compile time flat in depth)"


def remat_policy(model: ModelConfig) -> tuple[str, str]:
    if model.remat != "auto":
        return model.remat, "explicit"
    block_params = 12 * model.n_layer * model.n_embd**2
    if block_params >= REMAT_DOTS_FROM_PARAMS:
        return "dots", f"{block_params:.3g} >= {REMAT_DOTS_FROM_PARAMS:.0e} block parameters"
    return "none", f"{block_params:.3g} < {REMAT_DOTS_FROM_PARAMS:.0e} block parameters"


def kernels_for(target: Target) -> tuple[str, bool]:
    """(kernel family, interpret) of the Pallas flash kernels on `target`."""
    return ("tpu" if target.platform == "tpu" else "gpu"), target.platform not in ("gpu", "tpu")


def decide(model: ModelConfig, target: Target | None = None) -> Decisions:
    """The decision table (module docstring) for `model` on `target` (default: `current()`)."""
    target = target or current()
    attention, why_attention = attention_impl(model.attention, model.dtype, model.attn_pdrop, model.head_dim, target)
    scanned, why_loop = layer_loop_is_scanned(model, target)
    remat, why_remat = remat_policy(model)
    row = chip(target.device_kind) if target.platform != "cpu" else None
    family, interpret = kernels_for(target)
    return Decisions(
        attention=attention,
        kernel_family=family,
        interpret=interpret,
        scan_layers=scanned,
        remat=remat,
        peak_flops=None if row is None else row.peak_bf16_flops,
        why={"attention": why_attention, "layer loop": why_loop, "remat": why_remat},
    )
