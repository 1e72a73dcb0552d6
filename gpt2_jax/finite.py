"""Are these arrays finite? One jitted reduction over a whole tree, for the step guard and saves.

The step guard (train.py) and the checkpoint writer (checkpoint.py) both ask whether a state
holds only finite numbers. Integer leaves (step counters) are always finite and skipped. The
test is a reduction on the device, so nothing is copied to the host but one boolean (or one
count, for reports such as `ckpt-info`).

References:
  IEEE 754: inf and nan are the non-finite values; jnp.isfinite tests for both.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _float_leaves(tree: Any) -> list:
    return [x for x in jax.tree_util.tree_leaves(tree)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]


def all_finite(tree: Any) -> jax.Array:
    """A boolean scalar: every float in `tree` is finite (traceable: used inside the train step)."""
    leaves = _float_leaves(tree)
    if not leaves:
        return jnp.array(True)
    return jnp.stack([jnp.isfinite(x).all() for x in leaves]).all()


@jax.jit
def _count(tree: Any) -> jax.Array:
    leaves = _float_leaves(tree)
    return sum((jnp.size(x) - jnp.isfinite(x).sum()).astype(jnp.int64 if jax.config.jax_enable_x64 else jnp.int32)
               for x in leaves) if leaves else jnp.zeros((), jnp.int32)


def count_nonfinite(tree: Any) -> int:
    """How many inf or nan values `tree` holds (0 for a healthy state)."""
    result = _count(tree)
    # A replicated scalar; with several processes it is not fully addressable, so read the local copy.
    return int(np.asarray(result.addressable_shards[0].data)) if isinstance(result, jax.Array) else int(result)
