"""The optimizer: global-norm clipping, then AdamW with linear warmup and cosine or WSD decay.

Two schedules (optim.schedule): cosine to lr * min_lr_ratio over the run (GPT-3), or
warmup-stable-decay (WSD): constant lr, then a cooldown over the last cooldown_fraction of the
steps (linear, 1-sqrt or cosine shape), which Hagele et al. 2024 found matches cosine at the same
length, while one constant-lr run serves every shorter length through cooldown branches.

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
  Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations",
  arXiv:2405.18392, sections 3-4 (WSD, cooldown length 20%, 1-sqrt shape).
  Hu et al. 2024, "MiniCPM", section 4 (WSD).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from gpt2_jax import mup
from gpt2_jax.config import ModelConfig, OptimConfig

DECAYED_LEAVES = ("kernel", "embedding")


def cooldown_start(cfg: OptimConfig, total_steps: int) -> int:
    """The first step of a WSD run's cooldown: the last round(cooldown_fraction * steps) steps decay."""
    return total_steps - round(cfg.cooldown_fraction * total_steps)


def wsd_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Warmup-stable-decay: linear warmup 0 -> lr over warmup_steps, lr until cooldown_start, then
    the cooldown to lr * min_lr_ratio at the last step, shaped by `cooldown_shape` with progress
    p in [0, 1]: linear 1 - p, 1-sqrt 1 - sqrt(p) (Hagele et al.'s best), cosine (1 + cos(pi p)) / 2.
    The learning rate of a step before cooldown_start does not depend on total_steps: that is what
    lets a cooldown branch resume a longer run's checkpoint (scaling/sweep.py)."""
    start = cooldown_start(cfg, total_steps)
    length = max(total_steps - start, 1)
    peak, end = cfg.lr, cfg.lr * cfg.min_lr_ratio
    warmup = max(cfg.warmup_steps, 1)

    def schedule(count):
        count = jnp.asarray(count, jnp.float32)
        p = jnp.clip((count - start) / length, 0.0, 1.0)
        if cfg.cooldown_shape == "linear":
            shape = 1.0 - p
        elif cfg.cooldown_shape == "1-sqrt":
            shape = 1.0 - jnp.sqrt(p)
        else:
            shape = 0.5 * (1.0 + jnp.cos(jnp.pi * p))
        decayed = end + (peak - end) * shape
        return jnp.where(count < cfg.warmup_steps, peak * count / warmup, decayed)

    return schedule


def learning_rate_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    if cfg.schedule == "wsd":
        return wsd_schedule(cfg, total_steps)
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
