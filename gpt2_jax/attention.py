"""Scaled dot-product attention: the reference implementation and the dispatcher the model calls.

The reference is written with plain einsums and a softmax in float32 so that it is the oracle
every faster implementation is tested against. The dispatcher offers three: "xla" (the
reference), "cudnn" (`jax.nn.dot_product_attention` on NVIDIA GPUs, no dropout) and "pallas"
(our flash attention kernels, gpt2_jax/kernels, with dropout; interpreted on CPU). What "auto"
means, and which kernel family runs, is decided by gpt2_jax/target.py for the devices the step
is built for (not the host's backend). Masked scores are set to
the most negative finite float32, as Hugging Face's GPT-2 does, so a fully masked row can never
produce NaN and masked keys get exactly zero probability.

Shapes: q[B, Tq, N, H], k and v[B, Tk, N, H], output[B, Tq, N, H]; masks broadcast to [B, N, Tq, Tk].

References:
  Vaswani et al. 2017, "Attention Is All You Need", eq. 1.
  Hugging Face transformers, models/gpt2/modeling_gpt2.py (eager attention).
  Dao 2023, "FlashAttention-2" (the Pallas kernels).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from gpt2_jax import kernels, sharding
from gpt2_jax import target as target_lib
from gpt2_jax.dropout import attention_keep_mask

IMPLS = ("auto", "xla", "cudnn", "pallas")


def causal_mask(q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
    """[Tq, Tk] boolean mask: a query may attend to keys at its own position or earlier."""
    return k_positions[None, :] <= q_positions[:, None]


def reference_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array | None,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    dropout_keep: jax.Array | None = None,
    scale: float | None = None,
) -> jax.Array:
    """softmax(q k^T * scale + mask) v with float32 scores, scale = 1/sqrt(H) unless given (μP
    passes its 1/H form, mup.py); dropout on the probabilities, drawn from `dropout_rng` (the
    kernels' counter hash, see dropout.py) or given as a boolean keep mask broadcasting to
    [B, N, Tq, Tk] (tests pass the mask a kernel used)."""
    scores = jnp.einsum("bqnh,bknh->bnqk", q, k, preferred_element_type=jnp.float32)
    scores = scores * _score_scale(q.shape[-1], scale)
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    if dropout_rate > 0.0:
        keep = dropout_keep
        if keep is None:
            if dropout_rng is None:
                raise ValueError("attention dropout_rate > 0 needs a dropout_rng; pass one or set dropout_rate=0")
            # The flash kernels' mask (a hash of seed and global indices), so "xla" and "pallas"
            # drop the same scores and no mesh changes which.
            B, N, Tq, Tk = probs.shape
            keep = attention_keep_mask(kernels.seed_from_key(dropout_rng), B, N, Tq, Tk, dropout_rate)
        probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
    return jnp.einsum("bnqk,bknh->bqnh", probs.astype(v.dtype), v)


def _score_scale(head_dim: int, scale: float | None) -> jax.Array:
    """The float32 factor on the scores: 1/sqrt(H) by default, else `scale`."""
    return 1.0 / jnp.sqrt(jnp.float32(head_dim)) if scale is None else jnp.float32(scale)


def single_query_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
                           scale: float | None = None) -> jax.Array:
    """`reference_attention` (no dropout) for one query position, q[B, 1, N, H], written as
    broadcast multiply-and-sum over k, v[B, Tk, N, H] in their stored layout. Same math; but the
    batched-matmul form makes XLA:CPU transpose the whole KV cache to [B, N, Tk, H] at every
    decoding step, which costs more than the attention itself. `mask` broadcasts to [B, N, 1, Tk]."""
    if q.shape[1] != 1:
        raise ValueError(f"single_query_attention takes one query position, got q of shape {q.shape}")
    scores = jnp.sum(q.astype(jnp.float32) * k.astype(jnp.float32), axis=-1)  # [B, Tk, N]
    scores = scores * _score_scale(q.shape[-1], scale)
    if mask is not None:
        mask = jnp.broadcast_to(mask, (*mask.shape[:-2], 1, k.shape[1]))  # [.., N or 1, 1, Tk]
        scores = jnp.where(jnp.swapaxes(mask[..., 0, :], -1, -2), scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=1)  # over Tk
    out = jnp.sum(probs[..., None] * v.astype(jnp.float32), axis=1, keepdims=True)  # [B, 1, N, H]
    return out.astype(v.dtype)


def resolve_impl(impl: str, dropout_rate: float = 0.0, *, dtype="float32", head_dim: int = 64,
                 target: target_lib.Target | None = None) -> str:
    """The implementation `impl` stands for on `target` (default: the one being built for), for
    inputs of this dtype and head size; gpt2_jax/target.py holds the rules."""
    if impl not in IMPLS:
        raise ValueError(f"attention impl={impl!r} is not one of {IMPLS}")
    return target_lib.attention_impl(impl, jnp.dtype(dtype).name, dropout_rate, head_dim,
                                     target or target_lib.current())[0]


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    causal: bool = True,
    segment_ids: jax.Array | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    impl: str = "auto",
    scale: float | None = None,
) -> jax.Array:
    """Self-attention over q, k, v[B, T, N, H]. `segment_ids[B, T]` keeps packed documents
    apart. `impl` picks the implementation; "xla" is the reference. `scale` multiplies the
    scores (default 1/sqrt(H))."""
    if q.ndim != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"attention expects q, k, v shaped [B, T, N, H] with matching B, N, H; got {q.shape}, {k.shape}, {v.shape}")
    if dropout_rate > 0.0 and dropout_rng is None:
        raise ValueError(f"attention dropout_rate={dropout_rate} needs a dropout_rng; pass one or set dropout_rate=0")
    impl = resolve_impl(impl, dropout_rate, dtype=q.dtype, head_dim=q.shape[-1])
    if impl == "pallas":
        return _pallas_attention(q, k, v, causal, segment_ids, dropout_rate, dropout_rng, scale)
    mask = None
    if causal:
        mask = causal_mask(jnp.arange(q.shape[1]), jnp.arange(k.shape[1]))[None, None]
    if segment_ids is not None:
        same = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
        mask = same if mask is None else mask & same
    if impl == "cudnn":
        if dropout_rate > 0.0:
            raise ValueError(f"attention impl=cudnn has no dropout (dropout_rate={dropout_rate}); "
                             "set model.attn_pdrop=0 or use attention=pallas")
        segment_mask = None if segment_ids is None else same  # [B, 1, T, T]; causality is is_causal's
        return jax.nn.dot_product_attention(q, k, v, mask=segment_mask, is_causal=causal, scale=scale,
                                            implementation="cudnn")
    return reference_attention(q, k, v, mask, dropout_rate=dropout_rate, dropout_rng=dropout_rng, scale=scale)


def _pallas_attention(q, k, v, causal, segment_ids, dropout_rate, dropout_rng, scale):
    """The flash attention kernels; under a mesh, on each device's shard of batch and heads.

    A Pallas call is opaque to XLA's partitioner (it would gather whole arrays onto every
    device), so inside a sharded step the kernel runs under shard_map on local blocks. Each
    block passes the global index of its first batch row and head, so its dropout mask is the
    one the unsharded call would draw."""
    seed = kernels.seed_from_key(dropout_rng) if dropout_rate > 0.0 else jnp.int32(0)
    family, interpret = target_lib.kernels_for(target_lib.current())
    run = functools.partial(kernels.flash_attention, causal=causal, dropout_rate=dropout_rate,
                            backend=family, interpret=interpret, scale=scale)
    placed = sharding.active_spec(("act_batch", "act_length", "act_heads", None))
    if placed is None:
        return run(q, k, v, segment_ids=segment_ids, dropout_seed=seed)
    mesh, spec = placed
    batch_axes, length_axes, head_axes, _ = tuple(spec) + (None,) * (4 - len(spec))
    if length_axes is not None:
        raise ValueError(f"pallas attention cannot split the sequence over mesh axes {length_axes}; "
                         "use attention=xla with this rule set")

    def local(q, k, v, segment_ids, seed):
        offsets = tuple(0 if axes is None else jax.lax.axis_index(axes) * x.shape[dim]
                        for axes, x, dim in ((batch_axes, q, 0), (head_axes, q, 2)))
        return run(q, k, v, segment_ids=segment_ids, dropout_seed=seed, index_offsets=offsets)

    activations = PartitionSpec(batch_axes, None, head_axes, None)
    segments = None if segment_ids is None else PartitionSpec(batch_axes, None)
    return jax.shard_map(local, mesh=mesh, in_specs=(activations,) * 3 + (segments, PartitionSpec()),
                         # Compiled kernels declare outputs that vary like q (kernels/out_shape.py), so
                         # shard_map checks varying axes; Pallas' interpreter mixes varying refs with
                         # unvarying grid indices, which that check rejects, so it is off there.
                         out_specs=activations, check_vma=not interpret)(q, k, v, segment_ids, seed)
