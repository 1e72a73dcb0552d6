"""The per-tile arithmetic both lowerings share: which scores a tile may use, and the backward
pass's rebuild of P and dS from the saved log-sum-exp.

Plain jnp on [bq, bk] tiles (positions and segment equality broadcast from a [bq, 1] column and a
[1, bk] row), so the same code lowers to Triton and to Mosaic and runs in interpret mode.

References:
  Dao 2023, "FlashAttention-2", algorithm 2 (dP = dO V^T, dS = P * (dP - delta)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gpt2_jax.kernels.spec import MASK_VALUE, KernelSpec


def mask_scores(spec: KernelSpec, s: jax.Array, q_pos, k_pos, same_segment, causal: bool) -> jax.Array:
    """`s` with the scores a tile may not use set to MASK_VALUE. `causal` is False for tiles
    wholly below the diagonal; `same_segment` is None without segment ids."""
    mask = None
    if causal:
        mask = k_pos <= q_pos
    if same_segment is not None:
        mask = same_segment if mask is None else mask & same_segment
    if not spec.causal and spec.padded_len != spec.seq_len:  # padded keys; causal rows never reach them
        real = k_pos < spec.seq_len
        mask = real if mask is None else mask & real
    return s if mask is None else jnp.where(mask, s, MASK_VALUE)


def probs_and_dscores(spec: KernelSpec, s, lse, dp, delta, keep) -> tuple[jax.Array, jax.Array]:
    """(P with dropout applied, dS) of one tile, both [bq, bk] fp32, from masked scores `s`,
    the rows' log-sum-exp and delta ([bq, 1]), dP = dO V^T, and the keep mask (or None)."""
    p = jnp.exp(s - lse)
    if keep is None:
        return p, p * (dp - delta)
    dp = jnp.where(keep, dp * spec.keep_scale, 0.0)  # gradient through the dropped probabilities
    return jnp.where(keep, p * spec.keep_scale, 0.0), p * (dp - delta)
