"""Flash attention forward and backward for GPUs, lowered by Pallas to Triton.

Inputs stay in the model's [B, T, N, H] layout (Triton reads strided rows, so no transposes).
Forward: one program per (query tile, batch row, head) walks the key tiles, keeping a running
max and sum (online softmax) and an fp32 accumulator, and writes the output and the row
log-sum-exp. Causal programs stop at the diagonal, and only tiles that cross it pay for the
mask. Query tiles are visited last-first, so the longest causal rows start first. Backward:
one kernel per key tile accumulates dK and dV over the query tiles at or below the diagonal,
another per query tile accumulates dQ; both rebuild the probabilities from the saved
log-sum-exp, and the dropout mask from its counter hash. Nothing of size [T, T] is stored.

Runs on CPU with `interpret=True` (the same kernel body evaluated by XLA), which the tests use.

References:
  Dao et al. 2022, "FlashAttention", algorithm 1 (online softmax, LSE saved for backward).
  Dao 2023, "FlashAttention-2", algorithms 1-2 (loop order, causal block skipping).
  Triton tutorial 06 "Fused Attention" (separate dK/dV and dQ loops).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from gpt2_jax.kernels import dropout_mask, tile_math
from gpt2_jax.kernels import out_shape
from gpt2_jax.kernels.spec import KernelSpec


def _dot(a, b, contract=((1,), (1,))):
    return lax.dot_general(a, b, (contract, ((), ())), preferred_element_type=jnp.float32)


def _masked_scores(spec: KernelSpec, q, k, q_pos, k_pos, q_seg, k_seg, causal: bool):
    """Scaled, masked scores [bq, bk] fp32 of one tile; segment ids are [bq] and [bk] vectors."""
    same = None if q_seg is None else q_seg[:, None] == k_seg[None, :]
    return tile_math.mask_scores(spec, _dot(q, k) * spec.sm_scale, q_pos, k_pos, same, causal)


def _split_refs(spec: KernelSpec, refs):
    """Positional refs -> (dropout stream or None, q_seg_ref or None, k_seg_ref or None, rest).
    Every kernel's grid is (tile, batch row, head); the stream is that (row, head)'s hash key,
    read here at the kernel's top level (program ids are not available inside loops in
    interpret mode)."""
    refs = list(refs)
    stream = None
    if spec.dropout_rate > 0:
        rng_ref = refs.pop(0)
        stream = dropout_mask.stream_key(rng_ref[0], pl.program_id(1) + rng_ref[1], pl.program_id(2) + rng_ref[2])
    q_seg_ref = k_seg_ref = None
    if spec.segmented:
        q_seg_ref, k_seg_ref = refs.pop(0), refs.pop(0)
    return stream, q_seg_ref, k_seg_ref, refs


def _causal_ranges(spec: KernelSpec, start, size, block):
    """For a query tile [start, start+size): (number of key tiles wholly below the diagonal,
    number of key tiles to visit at all)."""
    n_blocks = spec.padded_len // block
    if not spec.causal:
        return n_blocks, n_blocks
    full = lax.div(start, block)
    visit = jnp.minimum(lax.div(start + size + block - 1, block), n_blocks)
    return full, visit


# ------------------------------------------------------------------------------------- forward


def _forward_kernel(*refs, spec: KernelSpec):
    stream, q_seg_ref, k_seg_ref, (q_ref, k_ref, v_ref, o_ref, lse_ref) = _split_refs(spec, refs)
    bq, bk = spec.blocks.block_q, spec.blocks.block_k
    i = pl.num_programs(0) - 1 - pl.program_id(0)  # last query tile first: causal rows are longest there
    q_start = i * bq
    q = q_ref[...]
    q_pos = q_start + lax.broadcasted_iota(jnp.int32, (bq, 1), 0)
    q_seg = None if q_seg_ref is None else q_seg_ref[...]

    def step(j, carry, causal: bool):
        acc, m, l = carry
        k_start = j * bk
        k = k_ref[pl.ds(k_start, bk), :]
        v = v_ref[pl.ds(k_start, bk), :]
        k_pos = k_start + lax.broadcasted_iota(jnp.int32, (1, bk), 1)
        k_seg = None if k_seg_ref is None else k_seg_ref[pl.ds(k_start, bk)]
        s = _masked_scores(spec, q, k, q_pos, k_pos, q_seg, k_seg, causal)
        m_new = jnp.maximum(m, jnp.max(s, axis=1))
        alpha = jnp.exp(m - m_new)
        p = jnp.exp(s - m_new[:, None])
        l = alpha * l + jnp.sum(p, axis=1)  # the softmax normalizer counts dropped entries too
        if stream is not None:
            keep = dropout_mask.keep_bits(stream, q_pos, k_pos, spec.seq_len, spec.dropout_rate)
            p = jnp.where(keep, p * spec.keep_scale, 0.0)
        acc = alpha[:, None] * acc + _dot(p.astype(v.dtype), v, ((1,), (0,)))
        return acc, m_new, l

    carry = (
        jnp.zeros((bq, q_ref.shape[-1]), jnp.float32),
        jnp.full((bq,), -jnp.inf, jnp.float32),
        jnp.zeros((bq,), jnp.float32),
    )
    full, visit = _causal_ranges(spec, q_start, bq, bk)
    carry = lax.fori_loop(0, full, functools.partial(step, causal=False), carry)
    acc, m, l = lax.fori_loop(full, visit, functools.partial(step, causal=spec.causal), carry)
    o_ref[...] = (acc / l[:, None]).astype(o_ref.dtype)
    lse_ref[...] = m + jnp.log(l)


def forward(q, k, v, q_seg, k_seg, rng, spec: KernelSpec):
    """q, k, v[B, Tp, N, Hp] -> (o[B, Tp, N, Hp], lse[B, N, Tp] fp32)."""
    B, Tp, N, Hp = q.shape
    bq = spec.blocks.block_q
    nq = Tp // bq
    q_tile = pl.BlockSpec((None, bq, None, Hp), lambda i, b, n: (b, nq - 1 - i, n, 0))
    whole = pl.BlockSpec((None, Tp, None, Hp), lambda i, b, n: (b, 0, n, 0))
    in_specs, args = _extra_inputs(spec, rng, q_seg, k_seg, pl.BlockSpec((None, bq), lambda i, b, n: (b, nq - 1 - i)),
                                   _whole_segment(spec))
    return pl.pallas_call(
        functools.partial(_forward_kernel, spec=spec),
        grid=(nq, B, N),
        in_specs=[*in_specs, q_tile, whole, whole],
        out_specs=[q_tile, pl.BlockSpec((None, None, bq), lambda i, b, n: (b, n, nq - 1 - i))],
        out_shape=[out_shape.like(q.shape, q.dtype, q), out_shape.like((B, N, Tp), jnp.float32, q)],
        compiler_params=plgpu.CompilerParams(num_warps=spec.blocks.num_warps, num_stages=spec.blocks.num_stages),
        interpret=spec.interpret,
        name="gpt2_flash_attention_fwd",
    )(*args, q, k, v)


def _whole_segment(spec: KernelSpec):
    """The segment ids of the whole sequence of this program's batch row."""
    return pl.BlockSpec((None, spec.padded_len), lambda t, b, n: (b, 0))


def _extra_inputs(spec: KernelSpec, rng, q_seg, k_seg, q_seg_spec, k_seg_spec):
    """BlockSpecs and arrays for the optional dropout seed/offsets and segment ids."""
    specs, args = [], []
    if spec.dropout_rate > 0:
        specs.append(pl.BlockSpec((4,), lambda *_: (0,)))
        args.append(rng)
    if spec.segmented:
        specs += [q_seg_spec, k_seg_spec]
        args += [q_seg, k_seg]
    return specs, args


# ------------------------------------------------------------------------------------ backward


def _probs_and_dscores(spec, stream, q, k, v, do, lse, delta, q_pos, k_pos, q_seg, k_seg, causal):
    """Rebuild P for one tile and return (P with dropout applied, dS) -- both [bq, bk] fp32."""
    s = _masked_scores(spec, q, k, q_pos, k_pos, q_seg, k_seg, causal)
    keep = None
    if stream is not None:
        keep = dropout_mask.keep_bits(stream, q_pos, k_pos, spec.seq_len, spec.dropout_rate)
    return tile_math.probs_and_dscores(spec, s, lse[:, None], _dot(do, v), delta[:, None], keep)


def _dkv_kernel(*refs, spec: KernelSpec):
    stream, q_seg_ref, k_seg_ref, rest = _split_refs(spec, refs)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref = rest
    bq, bk = spec.blocks.block_q_dkv, spec.blocks.block_k_dkv
    k_start = pl.program_id(0) * bk
    k, v = k_ref[...], v_ref[...]
    k_pos = k_start + lax.broadcasted_iota(jnp.int32, (1, bk), 1)
    k_seg = None if k_seg_ref is None else k_seg_ref[...]

    def step(i, carry, causal: bool):
        dk, dv = carry
        q_start = i * bq
        rows = pl.ds(q_start, bq)
        q, do = q_ref[rows, :], do_ref[rows, :]
        q_pos = q_start + lax.broadcasted_iota(jnp.int32, (bq, 1), 0)
        q_seg = None if q_seg_ref is None else q_seg_ref[rows]
        p, ds = _probs_and_dscores(spec, stream, q, k, v, do, lse_ref[rows], delta_ref[rows],
                                   q_pos, k_pos, q_seg, k_seg, causal)
        dv = dv + _dot(p.astype(do.dtype), do, ((0,), (0,)))
        dk = dk + _dot(ds.astype(q.dtype), q, ((0,), (0,)))
        return dk, dv

    n_q = spec.padded_len // bq
    zeros = jnp.zeros((bk, k_ref.shape[-1]), jnp.float32)
    if spec.causal:
        first = lax.div(k_start, bq)  # query tiles above this one never see these keys
        diagonal_end = jnp.minimum(lax.div(k_start + bk + bq - 1, bq), n_q)  # tiles crossing the diagonal
        carry = lax.fori_loop(first, diagonal_end, functools.partial(step, causal=True), (zeros, zeros))
        dk, dv = lax.fori_loop(diagonal_end, n_q, functools.partial(step, causal=False), carry)
    else:
        dk, dv = lax.fori_loop(0, n_q, functools.partial(step, causal=False), (zeros, zeros))
    dk_ref[...] = (dk * spec.sm_scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(*refs, spec: KernelSpec):
    stream, q_seg_ref, k_seg_ref, rest = _split_refs(spec, refs)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref = rest
    bq, bk = spec.blocks.block_q_dq, spec.blocks.block_k_dq
    i = pl.num_programs(0) - 1 - pl.program_id(0)
    q_start = i * bq
    q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]
    q_pos = q_start + lax.broadcasted_iota(jnp.int32, (bq, 1), 0)
    q_seg = None if q_seg_ref is None else q_seg_ref[...]

    def step(j, dq, causal: bool):
        k_start = j * bk
        cols = pl.ds(k_start, bk)
        k, v = k_ref[cols, :], v_ref[cols, :]
        k_pos = k_start + lax.broadcasted_iota(jnp.int32, (1, bk), 1)
        k_seg = None if k_seg_ref is None else k_seg_ref[cols]
        _, ds = _probs_and_dscores(spec, stream, q, k, v, do, lse, delta, q_pos, k_pos, q_seg, k_seg, causal)
        return dq + _dot(ds.astype(k.dtype), k, ((1,), (0,)))

    full, visit = _causal_ranges(spec, q_start, bq, bk)
    dq = jnp.zeros((bq, q_ref.shape[-1]), jnp.float32)
    dq = lax.fori_loop(0, full, functools.partial(step, causal=False), dq)
    dq = lax.fori_loop(full, visit, functools.partial(step, causal=spec.causal), dq)
    dq_ref[...] = (dq * spec.sm_scale).astype(dq_ref.dtype)


def backward(q, k, v, q_seg, k_seg, rng, o, lse, do, delta, spec: KernelSpec):
    """Gradients (dq, dk, dv) in the layout and dtypes of (q, k, v); lse, delta[B, N, Tp] fp32."""
    del o
    B, Tp, N, Hp = q.shape
    blocks = spec.blocks
    params = plgpu.CompilerParams(num_warps=blocks.num_warps, num_stages=blocks.num_stages)
    whole = pl.BlockSpec((None, Tp, None, Hp), lambda t, b, n: (b, 0, n, 0))
    whole_row = pl.BlockSpec((None, None, Tp), lambda t, b, n: (b, n, 0))

    bk = blocks.block_k_dkv
    k_tile = pl.BlockSpec((None, bk, None, Hp), lambda t, b, n: (b, t, n, 0))
    # this kernel owns a key tile: its key ids are a tile, its query ids the whole row
    extra_specs, extra = _extra_inputs(spec, rng, q_seg, k_seg, _whole_segment(spec),
                                       pl.BlockSpec((None, bk), lambda t, b, n: (b, t)))
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, spec=spec),
        grid=(Tp // bk, B, N),
        in_specs=[*extra_specs, whole, k_tile, k_tile, whole, whole_row, whole_row],
        out_specs=[k_tile, k_tile],
        out_shape=[out_shape.like(k.shape, k.dtype, q), out_shape.like(v.shape, v.dtype, q)],
        compiler_params=params,
        interpret=spec.interpret,
        name="gpt2_flash_attention_dkv",
    )(*extra, q, k, v, do, lse, delta)

    bq = blocks.block_q_dq
    nq = Tp // bq
    q_index = lambda t, b, n: (b, nq - 1 - t, n, 0)  # noqa: E731
    q_tile = pl.BlockSpec((None, bq, None, Hp), q_index)
    row_tile = pl.BlockSpec((None, None, bq), lambda t, b, n: (b, n, nq - 1 - t))
    extra_specs, extra = _extra_inputs(spec, rng, q_seg, k_seg, pl.BlockSpec((None, bq), lambda t, b, n: (b, nq - 1 - t)),
                                       _whole_segment(spec))
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, spec=spec),
        grid=(nq, B, N),
        in_specs=[*extra_specs, q_tile, whole, whole, q_tile, row_tile, row_tile],
        out_specs=q_tile,
        out_shape=out_shape.like(q.shape, q.dtype, q),
        compiler_params=params,
        interpret=spec.interpret,
        name="gpt2_flash_attention_dq",
    )(*extra, q, k, v, do, lse, delta)
    return dq, dk, dv
