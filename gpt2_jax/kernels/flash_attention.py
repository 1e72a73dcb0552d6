"""`flash_attention`: validated inputs, padding, and the custom VJP around the Pallas kernels.

Pallas calls have no automatic derivative, so the forward kernel returns the row log-sum-exp
as a residual and the backward kernels rebuild the probabilities from it (FlashAttention's
recomputation). This file is the one place that knows both backends: it checks what a caller
passed, pads T (and, for Triton, the head size) to what the tiles need, picks the GPU (Triton)
or TPU (Mosaic) kernels, and crops the result. Nothing here imports the rest of gpt2_jax.

Shapes: q, k, v[B, T, N, H] -> [B, T, N, H]; segment_ids[B, T] int.

References:
  Dao et al. 2022, "FlashAttention" (recomputation in the backward pass, appendix B.2).
  JAX docs, "Custom derivative rules" (jax.custom_vjp with static nondiff arguments).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from gpt2_jax.kernels.block_sizes import BACKENDS, MAX_HEAD_DIM, BlockSizes, KernelConfigError
from gpt2_jax.kernels.spec import KernelSpec

DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
MAX_DROPOUT_LEN = 46340  # the dropout counter q*T + k must stay below 2^31


def default_backend() -> str:
    """Which kernels suit this process's platform, for standalone calls that name none; CPUs
    interpret the GPU (Triton) kernels. gpt2_jax itself always passes `backend` and `interpret`,
    decided from the devices a step is built for (gpt2_jax/target.py), which may be a TPU slice
    compiled for from a CPU host."""
    return "tpu" if jax.default_backend() == "tpu" else "gpu"


def flash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    causal: bool = True,
    segment_ids: jax.Array | None = None,
    dropout_rate: float = 0.0,
    dropout_seed: jax.Array | None = None,
    index_offsets: tuple = (0, 0),
    block_sizes: BlockSizes | None = None,
    backend: str | None = None,
    interpret: bool | None = None,
    scale: float | None = None,
) -> jax.Array:
    """softmax(q k^T * scale [masked]) v, never materializing the [T, T] scores; `scale`
    defaults to 1/sqrt(H) (μP passes sqrt(H0)/H).

    `dropout_seed` (int32 scalar, see `kernels.seed_from_key`) selects the dropout mask;
    `index_offsets` = (first batch row, first head) of these arrays in the global batch, so a
    shard of a mesh draws the same mask it would unsharded. `backend` "gpu" or "tpu" picks the
    kernels (default: the platform's); `interpret` runs them on CPU (default: when on CPU).
    """
    _check_inputs(q, k, v, segment_ids, dropout_rate, dropout_seed)
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise KernelConfigError(f"kernel backend={backend!r} is not one of {BACKENDS}")
    if interpret is None:
        interpret = jax.default_backend() not in ("gpu", "tpu")
    B, T, N, H = q.shape
    blocks, padded_len = (block_sizes or BlockSizes.default(backend)).fitted(backend, T)
    spec = KernelSpec(
        backend=backend,
        blocks=blocks,
        seq_len=T,
        padded_len=padded_len,
        sm_scale=1.0 / math.sqrt(H) if scale is None else float(scale),
        causal=bool(causal),
        segmented=segment_ids is not None,
        dropout_rate=float(dropout_rate),
        interpret=bool(interpret),
    )
    # Triton tiles need a power-of-two head size; zero columns change no score and no output.
    padded_h = max(16, 1 << (H - 1).bit_length()) if backend == "gpu" else H
    pad = ((0, 0), (0, padded_len - T), (0, 0), (0, padded_h - H))
    q, k, v = (jnp.pad(x, pad) if pad != ((0, 0),) * 4 else x for x in (q, k, v))
    q_seg = k_seg = None
    if segment_ids is not None:
        q_seg = k_seg = jnp.pad(segment_ids.astype(jnp.int32), ((0, 0), (0, padded_len - T)))
    rng = None
    if spec.dropout_rate > 0:
        rng = jnp.stack([jnp.asarray(x, jnp.int32).reshape(()) for x in (dropout_seed, *index_offsets, 0)])
    out = _flash(spec, q, k, v, q_seg, k_seg, rng)
    return out[:, :T, :, :H]


def _check_inputs(q, k, v, segment_ids, dropout_rate, dropout_seed) -> None:
    if q.ndim != 4 or q.shape != k.shape or q.shape != v.shape:
        raise KernelConfigError(
            f"flash attention needs q, k, v of one shape [B, T, N, H] (self-attention); got "
            f"q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in DTYPES:
        raise KernelConfigError(
            f"flash attention needs q, k, v of one dtype among float32/bfloat16/float16; got {q.dtype}, {k.dtype}, {v.dtype}"
        )
    B, T, N, H = q.shape
    if H > MAX_HEAD_DIM:
        raise KernelConfigError(
            f"head size {H} cannot be tiled: the kernels hold [block, H] tiles on chip and support H <= "
            f"{MAX_HEAD_DIM}; use more heads or attention=xla"
        )
    if segment_ids is not None and (segment_ids.shape != (B, T) or not jnp.issubdtype(segment_ids.dtype, jnp.integer)):
        raise KernelConfigError(
            f"segment_ids must be integers shaped [B, T] = {(B, T)}; got {segment_ids.dtype}{tuple(segment_ids.shape)}"
        )
    if not 0.0 <= dropout_rate < 1.0:
        raise KernelConfigError(f"dropout_rate={dropout_rate} must be in [0, 1)")
    if dropout_rate > 0.0:
        if dropout_seed is None:
            raise KernelConfigError(
                f"dropout_rate={dropout_rate} needs a dropout_seed (gpt2_jax.kernels.seed_from_key(rng)); or set dropout_rate=0"
            )
        if T > MAX_DROPOUT_LEN:
            raise KernelConfigError(f"attention dropout supports T <= {MAX_DROPOUT_LEN}, got T={T}; set dropout_rate=0")


def _kernels(backend: str):
    if backend == "tpu":
        from gpt2_jax.kernels import flash_attention_tpu as module
    else:
        from gpt2_jax.kernels import flash_attention_gpu as module
    return module


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(spec: KernelSpec, q, k, v, q_seg, k_seg, rng):
    return _kernels(spec.backend).forward(q, k, v, q_seg, k_seg, rng, spec)[0]


def _flash_forward(spec, q, k, v, q_seg, k_seg, rng):
    out, lse = _kernels(spec.backend).forward(q, k, v, q_seg, k_seg, rng, spec)
    return out, (q, k, v, q_seg, k_seg, rng, out, lse)


def _flash_backward(spec, residuals, d_out):
    q, k, v, q_seg, k_seg, rng, out, lse = residuals
    # delta_i = sum_j P_ij dP_ij = rowsum(dO * O), also with dropout (FlashAttention-2, eq. in 3.1.2)
    delta = jnp.einsum("btnh,btnh->bnt", out.astype(jnp.float32), d_out.astype(jnp.float32))
    dq, dk, dv = _kernels(spec.backend).backward(q, k, v, q_seg, k_seg, rng, out, lse, d_out, delta, spec)
    return dq, dk, dv, None, None, None


_flash.defvjp(_flash_forward, _flash_backward)
