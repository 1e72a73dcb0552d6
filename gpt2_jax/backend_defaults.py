"""What the "auto" settings of ModelConfig mean on the backend a model is built for.

Three model settings default to "auto" so that a run is fast without flags on every backend:

  attention    attention.resolve_impl: Pallas flash kernels on TPU; cuDNN on GPU (Pallas when
               attention dropout is on, which cuDNN lacks); the XLA reference on CPU, where the
               kernels only run interpreted (for tests).
  scan_layers  `layer_loop_is_scanned`: unrolled on GPU, scanned on CPU and TPU. One H200 measured
               the unrolled loop 1.37x (cuDNN) and 1.33x (Pallas) faster than the scanned one for
               `gpt2` (issue 15's table): XLA:GPU fuses and schedules across layer boundaries and
               overlaps weight reads only when the loop is unrolled. Scanning keeps compile time
               flat in depth, which CPU tests (compile-bound) and TPU pods (large L) need.
  remat        `remat_policy`: "dots" (save matmul outputs, recompute the elementwise rest) for
               models of at least 1e9 block parameters (`gpt2-xl`), "none" below. At 12*L*D^2 >=
               1e9 a 16 x 1024 batch no longer fits one 80 GB GPU without remat, and the issue's
               gpt2-xl row ran with remat=dots; smaller models have the memory to skip the
               recompute (~1/3 more forward FLOPs with "full").

The rules are provisional until the GPU benchmark (experiments/benchmarks/gpu_speed.py) has
measured them; it times the explicit alternatives next to the defaults. A checkpoint's config
keeps the value the user wrote ("auto" or explicit), so changing these rules never blocks a resume:
the parameter layout is the same for every choice.

References:
  Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models"
  (activation memory per layer, selective recomputation).
  MaxText configs/base.yml (scan_layers, remat_policy per model size).
"""

from __future__ import annotations

import jax

from gpt2_jax.config import ModelConfig

# Block parameters (12 * L * D^2) from which "auto" rematerializes the matmul outputs only.
REMAT_DOTS_FROM_PARAMS = 1e9


def layer_loop_is_scanned(config: ModelConfig, backend: str | None = None) -> bool:
    """True for a `lax.scan` over layers, False for the unrolled loop."""
    if config.scan_layers != "auto":
        return bool(config.scan_layers)
    return (backend or jax.default_backend()) != "gpu"


def remat_policy(config: ModelConfig) -> str:
    """"none", "full" or "dots" for this config ("auto" resolved by model size)."""
    if config.remat != "auto":
        return config.remat
    block_params = 12 * config.n_layer * config.n_embd**2
    return "dots" if block_params >= REMAT_DOTS_FROM_PARAMS else "none"


def describe(config: ModelConfig, backend: str | None = None) -> str:
    """One line naming what the settings resolve to, e.g. for the training log."""
    from gpt2_jax.attention import resolve_impl

    backend = backend or jax.default_backend()
    scanned = layer_loop_is_scanned(config, backend)
    impl = resolve_impl(config.attention, config.attn_pdrop) if backend == jax.default_backend() else config.attention
    return (f"attention={impl}{' (auto)' if config.attention == 'auto' else ''}, "
            f"layers {'scanned' if scanned else 'unrolled'}{' (auto)' if config.scan_layers == 'auto' else ''}, "
            f"remat={remat_policy(config)}{' (auto)' if config.remat == 'auto' else ''}")
