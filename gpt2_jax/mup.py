"""Maximal update parametrization (μP): the rules the model, the optimizer and the exports ask.

`model.parametrization=mup` makes a model of width D = n_embd behave, under Adam, like its base
model of width D0 = `model.mup_base_width` with the same hyperparameters, so a learning rate tuned
at D0 transfers to D (Yang et al. 2022, Table 3, Adam column). With m = D / D0:

  hidden weights (every Dense kernel inside the blocks, fan_in grows with m): init std x m^-1/2
      (variance 1/fan_in, from GPT-2's std at the base width), Adam LR x 1/m;
  readout: the logits are multiplied by 1/m. With tied embeddings this is the mup package's
      `MuSharedReadout`: the table wte is an input weight (init and LR unscaled) and, through the
      1/m multiplier, an output weight with effective init variance ~1/m^2 and effective Adam LR
      ~1/m, which are exactly Table 3's two rows, so tying needs no compromise. An untied lm_head
      gets the same multiplier (the mup package's `MuReadout`; its LR is unscaled: one infinite dim);
  attention scores: q.k * sqrt(H0) / H instead of q.k / sqrt(H) (the paper's 1/d attention for
      Transformers), H0 = mup_base_width / n_head the base head size, so width grows at fixed n_head and
      the scale equals GPT-2's at the base width;
  embeddings (wte, wpe), biases and LayerNorm parameters: unscaled.

At m = 1 a μP model computes what the SP model does, to float rounding. `parametrization=sp`
(the default) leaves every code path as it was: the functions here return None or 1.0 for it and
callers skip the multiply, so SP is bit-identical to the library before μP.

Exports fold the multipliers into ordinary GPT-2 weights (`to_standard`): the attention factor
sqrt(H) * scale into c_attn's query columns (kernel and bias), and the logit multiplier into ln_f's
scale and bias, which feed only the head. Folding into wte instead would also scale the input
embedding, so with tied embeddings ln_f is the one place that can carry it; a model without ln_f
(`final_ln=false`) cannot be folded and is refused.

References:
  Yang, Hu, Babuschkin, Sidor, Liu, Farhi, Ryder, Pachocki, Chen, Gao 2022, "Tensor Programs V:
  Tuning Large Neural Networks via Zero-Shot Hyperparameter Transfer", Table 3 (and its 1/d attention).
  microsoft/mup: `MuReadout`, `MuSharedReadout` (output / width_mult) and `MuAdam` (matrix-like
  parameters get lr / width_mult, vector-like ones lr).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpt2_jax.config import ConfigError, ModelConfig

# Dense kernels whose fan_in and fan_out both grow with width ("matrix-like" in the mup package).
HIDDEN_KERNELS = (("attn", "c_attn"), ("attn", "c_proj"), ("mlp", "c_fc"), ("mlp", "c_proj"))


def enabled(config: ModelConfig) -> bool:
    return config.parametrization == "mup"


def width_multiplier(config: ModelConfig) -> float:
    """m = n_embd / mup_base_width under μP; 1.0 under SP."""
    return config.n_embd / config.mup_base_width if enabled(config) else 1.0


def hidden_init_scale(config: ModelConfig) -> float | None:
    """Factor on GPT-2's init std for hidden kernels (variance ~ 1/fan_in); None under SP."""
    return 1.0 / math.sqrt(width_multiplier(config)) if enabled(config) else None


def attention_scale(config: ModelConfig) -> float | None:
    """The softmax scale sqrt(H0) / H (1/d attention, equal to 1/sqrt(H) at the base width);
    None under SP (callers then use 1/sqrt(H))."""
    if not enabled(config):
        return None
    base_head_dim = config.mup_base_width / config.n_head
    return math.sqrt(base_head_dim) / config.head_dim


def output_multiplier(config: ModelConfig) -> float | None:
    """The factor 1/m on the logits; None under SP."""
    return 1.0 / width_multiplier(config) if enabled(config) else None


def is_hidden_kernel(path: tuple[str, ...]) -> bool:
    """True for the Dense kernels inside the blocks, given a parameter path of names."""
    return len(path) >= 4 and path[0] == "h" and path[-1] == "kernel" and tuple(path[-3:-1]) in HIDDEN_KERNELS


def _names(path) -> tuple[str, ...]:
    return tuple(getattr(k, "key", getattr(k, "name", str(k))) for k in path)


def scale_hidden_updates(config: ModelConfig):
    """An optax transformation multiplying the updates of hidden kernels by 1/m. It keeps
    no state, so a μP run holds the same moments as an SP run. Put it after the Adam update, so
    the whole step (and AdamW's decoupled decay, as in MuAdam) of a hidden kernel is scaled."""
    import jax
    import optax

    def scale(updates, params=None):
        del params
        hidden = 1.0 / width_multiplier(config)
        return jax.tree_util.tree_map_with_path(
            lambda p, u: u * hidden if is_hidden_kernel(_names(p)) else u, updates)

    return optax.stateless(scale)


def to_standard(config: ModelConfig, params: Any) -> tuple[ModelConfig, Any]:
    """(SP config, float32 numpy params) computing the same function as a μP model; SP models
    pass through unchanged. Used by every export, whose formats know only GPT-2's arithmetic."""
    import dataclasses

    import jax

    if not enabled(config):
        return config, params
    if not config.final_ln:
        raise ConfigError("a μP model without ln_f (model.final_ln=false) cannot be exported: its logit multiplier "
                          "1/m has no standard GPT-2 weight to live in; export a model with final_ln=true")
    params = jax.tree_util.tree_map(lambda a: np.array(a, np.float32), params)  # copies: the caller's stay
    # Attention: standard GPT-2 computes q.k / sqrt(H); scaling q by sqrt(H) * scale gives q.k * scale.
    q_factor = np.float32(math.sqrt(config.head_dim) * attention_scale(config))
    D = config.n_embd
    c_attn = params["h"]["attn"]["c_attn"]
    c_attn["kernel"][..., :D] *= q_factor  # kernel[L, D, 3D], columns [q | k | v]
    c_attn["bias"][..., :D] *= q_factor  # bias[L, 3D]
    # Readout: ln_f's output feeds only the head, so scaling its affine part scales the logits.
    out = np.float32(output_multiplier(config))
    params["ln_f"]["scale"] *= out
    params["ln_f"]["bias"] *= out
    return dataclasses.replace(config, parametrization="sp"), params

