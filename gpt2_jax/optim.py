"""The optimizer: global-norm clipping, then AdamW with linear warmup and cosine decay.

Weight decay applies to matrices only: Dense kernels and the embedding tables. Biases and
LayerNorm parameters are not decayed. The mask goes by parameter name, not by rank, because
with scanned layers a LayerNorm scale is stacked to [L, D] and would look like a matrix.

Under μP (`model.parametrization=mup`) the Adam step of every hidden kernel is then multiplied
by base_width / width (mup.py), a stateless transformation (no memory beyond SP's moments).

References:
  Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization" (AdamW).
  Brown et al. 2020 (GPT-3), appendix B: warmup, cosine decay to 10%, clipping at 1.0,
  beta2 0.95, weight decay 0.1.
  Yang et al. 2022, "Tensor Programs V", Table 3 (μP's Adam learning rates).
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from gpt2_jax import mup
from gpt2_jax.config import ModelConfig, OptimConfig

DECAYED_LEAVES = ("kernel", "embedding")


def learning_rate_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    decay_steps = cfg.decay_steps or total_steps
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        decay_steps=max(decay_steps, cfg.warmup_steps + 1),
        end_value=cfg.lr * cfg.min_lr_ratio,
    )


def decay_mask(params: Any) -> Any:
    """True for leaves that get weight decay (matrices), False otherwise."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key in DECAYED_LEAVES, params)


def make_optimizer(cfg: OptimConfig, total_steps: int, model: ModelConfig | None = None) -> optax.GradientTransformation:
    """The chain for `cfg`; `model` (needed for μP's per-layer learning rates) defaults to SP."""
    schedule = learning_rate_schedule(cfg, total_steps)
    # mu_dtype=bfloat16 keeps the first moment in bf16 (the update is still computed in float32);
    # the second moment stays float32, whose small values bf16's 8-bit mantissa would round coarsely.
    adamw = optax.adamw(schedule, b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                        mask=decay_mask, mu_dtype=None if cfg.mu_dtype == "float32" else cfg.mu_dtype)
    if model is not None and mup.enabled(model):
        adamw = optax.chain(adamw, mup.scale_hidden_updates(model))
    if cfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw)
    return adamw
