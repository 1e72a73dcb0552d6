"""Output shapes for `pallas_call` that keep the inputs' varying mesh axes.

Under `jax.shard_map(check_vma=True)` (its default) every value records the manual mesh axes it
varies over, and a `pallas_call` output declared with a plain `ShapeDtypeStruct` claims to vary
over none, so tracing fails. The kernels' outputs are per-shard results of per-shard inputs, so
they vary exactly like `q`; this copies that annotation (`manual_axis_type` in jax 0.10-0.11).

References:
  JAX docs, "shard_map": check_vma and varying manual axes.
"""

from __future__ import annotations

import jax


def like(shape, dtype, reference) -> jax.ShapeDtypeStruct:
    """A ShapeDtypeStruct of `shape`, `dtype` that varies over the manual axes `reference` does."""
    mat = getattr(jax.typeof(reference), "mat", None)
    if mat is None or getattr(mat, "empty", True):
        return jax.ShapeDtypeStruct(shape, dtype)
    return jax.ShapeDtypeStruct(shape, dtype, manual_axis_type=mat)
