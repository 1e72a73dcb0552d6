"""Dropout whose masks depend on (seed, global position) only, never on the mesh or the backend.

`nn.Dropout` draws its mask with `jax.random.bernoulli` over the activation's shape. That is a
pure function of the key too, but which bits a device draws depends on the PRNG implementation
the step picks (Philox on one device was faster on CPU, threefry under a mesh, where XLA cannot
partition Philox), so a run restored on another mesh continued a different trajectory. Here the
keep bit of element (b, t, d) is the counter hash of gpt2_jax/kernels/dropout_mask.py applied to
its global indices: row b gets the hash stream `stream_key(seed, b, site)` and element (t, d) the
counter t * D + d. The indices come from `iota` over the global shape, which XLA's partitioner
slices per device, so every device computes exactly the bits of its shard, on any mesh. The
attention probabilities use the very same function with (b, head, query, key), which is what
the flash attention kernels apply, so the XLA path and the Pallas path drop the same scores.

The per-site seed is one int32 drawn from the site's Flax RNG (`make_rng("dropout")`: distinct per
module, per layer of the scan and per call), so masks are still `fold_in(key, step)`-reproducible.
A hash is ~10 integer operations per element and fuses into its consumer; measured on CPU against
the Philox path it replaced in experiments/benchmarks/dropout_cost_cpu.py (RESULTS.md).

References:
  Srivastava et al. 2014, "Dropout" (inverted scaling by 1/(1-rate)).
  Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3" (counter-based generators).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from gpt2_jax.kernels.dropout_mask import keep_bits, seed_from_key, stream_key

_SITE = 0x5EED  # hash-stream "head" index for activation dropout; attention uses the real head index


def activation_keep_mask(seed: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
    """Boolean keep mask for an activation [B, T, D] (or [B, D] / [D], read as B=1, T=1) with
    `seed` int32. Element (b, t, d) is kept iff keep_bits(stream_key(seed, b, SITE), t, d, D)."""
    if len(shape) > 3:
        raise ValueError(f"activation dropout expects at most [B, T, D], got shape {shape}")
    B, T, D = (1,) * (3 - len(shape)) + tuple(shape)
    # Row streams on [B, 1, 1] and positions on [1, T, 1] / [1, 1, D]: the per-row hash is computed
    # B times, not B*T*D times; only the final mix runs per element.
    b = lax.broadcasted_iota(jnp.int32, (B, 1, 1), 0)
    t = lax.broadcasted_iota(jnp.int32, (1, T, 1), 1)
    d = lax.broadcasted_iota(jnp.int32, (1, 1, D), 2)
    keep = keep_bits(stream_key(jnp.asarray(seed, jnp.int32), b, jnp.int32(_SITE)), t, d, D, rate)
    return keep.reshape(shape)


def attention_keep_mask(seed: jax.Array, batch: int, heads: int, q_len: int, k_len: int, rate: float) -> jax.Array:
    """[B, N, Tq, Tk] keep mask of attention-probability dropout: the flash kernels' mask
    (`kernels.keep_mask` when Tq == Tk), for query positions 0..Tq-1 and keys 0..Tk-1."""
    b = lax.broadcasted_iota(jnp.int32, (batch, heads, 1, 1), 0)
    n = lax.broadcasted_iota(jnp.int32, (batch, heads, 1, 1), 1)
    i = lax.broadcasted_iota(jnp.int32, (1, 1, q_len, 1), 2)
    j = lax.broadcasted_iota(jnp.int32, (1, 1, 1, k_len), 3)
    return keep_bits(stream_key(jnp.asarray(seed, jnp.int32), b, n), i, j, k_len, rate)


def apply_dropout(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
    """x with each element kept with probability 1 - rate (scaled by 1/(1-rate)) or zeroed."""
    if rate == 0.0:
        return x
    keep = activation_keep_mask(seed_from_key(rng), x.shape, rate)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


class Dropout(nn.Module):
    """Drop-in for `flax.linen.Dropout` (same `rate`, `deterministic`, rng stream "dropout")
    with mesh-independent masks (see the module docstring)."""

    rate: float
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool | None = None) -> jax.Array:
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if deterministic or self.rate == 0.0:
            return x
        if self.rate >= 1.0:
            return jnp.zeros_like(x)
        return apply_dropout(x, self.rate, self.make_rng(self.rng_collection))
