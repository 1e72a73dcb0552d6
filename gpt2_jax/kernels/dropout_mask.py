"""Attention dropout as a pure function of (seed, batch row, head, query, key): a counter hash.

Flash attention never holds the [T, T] probability matrix, so its dropout mask cannot be drawn
once and stored; each tile recomputes its part, in the forward pass and again in the backward
pass. A counter-based hash makes that exact: the keep bit of score (b, n, i, j) depends only on
those global indices and the seed, not on tile sizes, on the pass, or on how a mesh splits the
batch and heads. The same int32 code runs inside Triton and Mosaic kernels and in plain JAX,
which is how `keep_mask` gives tests the very mask the kernels used.

The mixer is Chris Wellons' "lowbias32" integer hash (a xorshift-multiply finalizer, public
domain constants); a keep decision uses the hash's top 24 bits, so rates are exact to 2^-24.

References:
  Srivastava et al. 2014, "Dropout" (inverted scaling by 1/(1-rate)).
  Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3" (counter-based generators).
  C. Wellons, "Prospecting for Hash Functions", 2018 (lowbias32 constants 0x7feb352d, 0x846ca68b).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_MUL_1 = np.int32(0x7FEB352D)
_MUL_2 = np.int32(0x846CA68B - (1 << 32))  # same bits as the uint32 constant, as int32
_GOLDEN = np.int32(0x9E3779B9 - (1 << 32))


def _mix(x: jax.Array) -> jax.Array:
    """lowbias32 on int32 bits (multiplication wraps, shifts are logical), a bijection."""
    x = x ^ lax.shift_right_logical(x, np.int32(16))
    x = x * _MUL_1
    x = x ^ lax.shift_right_logical(x, np.int32(15))
    x = x * _MUL_2
    return x ^ lax.shift_right_logical(x, np.int32(16))


def stream_key(seed: jax.Array, batch: jax.Array, head: jax.Array) -> jax.Array:
    """One int32 per (seed, global batch row, global head): the hash stream of that score matrix."""
    return _mix(_mix(_mix(seed) ^ (batch * _GOLDEN)) ^ head)


def keep_bits(stream: jax.Array, q_index: jax.Array, k_index: jax.Array, seq_len: int, rate: float) -> jax.Array:
    """True where score (q_index, k_index) survives dropout; indices are global positions and
    broadcast against each other (a [bq, 1] column against a [1, bk] row inside a kernel)."""
    counter = q_index * np.int32(seq_len) + k_index  # distinct per score for T*T < 2^31
    bits24 = lax.shift_right_logical(_mix(counter ^ stream), np.int32(8))
    return bits24 >= np.int32(round(rate * (1 << 24)))


def seed_from_key(key: jax.Array) -> jax.Array:
    """An int32 seed drawn from a JAX PRNG key (raw uint32 or typed)."""
    return lax.bitcast_convert_type(jax.random.bits(key, (), jnp.uint32), jnp.int32)


def keep_mask(seed: jax.Array, batch: int, heads: int, seq_len: int, rate: float) -> jax.Array:
    """The whole [B, N, T, T] keep mask the kernels apply for `seed` (for tests and references)."""
    b = lax.broadcasted_iota(jnp.int32, (batch, heads, 1, 1), 0)
    n = lax.broadcasted_iota(jnp.int32, (batch, heads, 1, 1), 1)
    i = lax.broadcasted_iota(jnp.int32, (1, 1, seq_len, 1), 2)
    j = lax.broadcasted_iota(jnp.int32, (1, 1, 1, seq_len), 3)
    return keep_bits(stream_key(jnp.asarray(seed, jnp.int32), b, n), i, j, seq_len, rate)
