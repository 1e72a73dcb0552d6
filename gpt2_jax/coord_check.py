"""Coordinate check: how big a model's activations are, to see whether they grow with width.

Yang et al.'s test for a parametrization (Tensor Programs V, its "coordinate
check"): train models of several widths a few steps with the same hyperparameters and record the
average entry size mean|x| of chosen activations. Under μP the sizes stay put as width grows;
under the standard parametrization with Adam they grow (an update of size lr per entry moves a
width-n dot product by ~lr * n). `activation_sizes` measures one model; `log_width_slope` turns
sizes at several widths into one number, the slope of log(size) against log(width): ~0 flat,
~1 linear growth.

Activations measured: the logits (real vocabulary entries), and per layer the attention block's
and the MLP's outputs (after c_proj, before the residual add), which the model sows into its
"intermediates" collection (model.py).

References:
  Yang et al. 2022, "Tensor Programs V" (the coordinate check of its appendix).
  microsoft/mup, `mup.coord_check` (the same measurement for PyTorch models).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gpt2_jax.config import ModelConfig
from gpt2_jax.model import GPT


def activation_sizes(config: ModelConfig, params: Any, tokens: jax.Array) -> dict[str, jax.Array]:
    """{"logits": scalar, "attn_out": [L], "mlp_out": [L]}: mean |x| over batch, positions and
    features, for tokens[B, T]. Jit it once per config."""
    (logits, _), state = GPT(config).apply({"params": params}, tokens, deterministic=True, mutable=["intermediates"])
    layers = state["intermediates"]["h"]  # sown inside the layer scan: each value stacked [L, B, T, D]
    return {
        "logits": jnp.mean(jnp.abs(logits[..., : config.n_vocab])),
        "attn_out": _mean_abs_per_layer(layers["attn"]["attn_out"]),
        "mlp_out": _mean_abs_per_layer(layers["mlp"]["mlp_out"]),
    }


def _mean_abs_per_layer(sown: tuple) -> jax.Array:
    (value,) = sown  # [L, B, T, D]
    return jnp.mean(jnp.abs(value), axis=tuple(range(1, value.ndim)))  # [L]


def log_width_slope(widths: list[int], sizes: list[float]) -> float:
    """Least-squares slope of log(size) on log(width)."""
    return float(np.polyfit(np.log(np.asarray(widths, float)), np.log(np.asarray(sizes, float)), 1)[0])
