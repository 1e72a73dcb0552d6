"""GPT-2 as Flax Linen modules: pure init/apply with OpenAI's parameter names.

The architecture of the paper (section 2.3): a decoder-only Transformer with LayerNorm moved to
the input of each sub-block (pre-LN), a final LayerNorm after the last block, learned position
embeddings, an output projection tied to the token embedding, tanh-GELU, and initialization
N(0, 0.02) with the residual output projections scaled by 1/sqrt(2 * n_layer).

Parameter tree (shapes, L = n_layer stacked by `nn.scan`):
  wte/embedding[V_padded, D]   wpe/embedding[n_ctx, D]   ln_f/{scale,bias}[D]
  h/ln_1/{scale,bias}[L, D]    h/attn/c_attn/{kernel[L, D, 3D], bias[L, 3D]}
  h/attn/c_proj/{kernel[L, D, D], bias[L, D]}             h/ln_2/{scale,bias}[L, D]
  h/mlp/c_fc/{kernel[L, D, F], bias[L, F]}                h/mlp/c_proj/{kernel[L, F, D], bias[L, D]}
Kernels are [in, out], the layout of OpenAI's checkpoints and of Hugging Face's Conv1D, so
conversion is a rename. The vocabulary is padded (50257 -> 50304) so matmuls tile and shard
evenly; the padded rows start at zero and their logits are masked so they never get probability.

`scan_layers=False` (the "auto" choice for shallow models on GPU, gpt2_jax/target.py) runs the
same scan fully unrolled, so both modes share one parameter layout.
Decoding uses an explicit KV cache (`init_cache`) passed in and returned, never hidden state.

Ablation switches (ModelConfig; defaults = GPT-2) each change only what they name:
`ln_placement=post` computes GPT-1's ln_1(x + attn(x)), ln_2(x + mlp(x)) with the same parameters;
`final_ln=false` drops ln_f; `residual_scaling=false` initializes the c_proj kernels like the
others; `tied_embeddings=false` adds lm_head/kernel[D, V_padded]; `positions=sinusoidal` replaces
wpe by fixed sinusoids; `activation=relu` swaps the MLP's GELU.
`parametrization=mup` (not an ablation: same architecture) applies μP's init, attention scale
and logit multiplier, all asked of mup.py; with `sp` none of them is computed.

References:
  Radford et al. 2019, "Language Models are Unsupervised Multitask Learners", section 2.3.
  Radford et al. 2018 (GPT-1) for the base architecture; openai/gpt-2 src/model.py.
  Hendrycks & Gimpel 2016 (GELU, tanh approximation).
  Vaswani et al. 2017, "Attention Is All You Need", section 3.5 (sinusoidal positions).
  Yang et al. 2022, "Tensor Programs V" (μP; see mup.py).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpt2_jax import mup
from gpt2_jax.attention import causal_mask, dot_product_attention, reference_attention, single_query_attention
from gpt2_jax import target
from gpt2_jax.config import ModelConfig
from gpt2_jax.dropout import Dropout
from gpt2_jax.sharding import constrain

RESIDUAL = ("act_batch", "act_length", "act_embed")  # logical axes of the residual stream [B, T, D]

Cache = dict[str, jax.Array]  # {"k": [L, B, T_max, N, H], "v": [L, B, T_max, N, H]}


def _weight_init(config: ModelConfig, residual: bool = False):
    """GPT-2's N(0, 0.02) for the blocks' kernels (residual projections / sqrt(2L)); under μP
    scaled to variance ~1/fan_in from the base width (mup.py)."""
    scaled = residual and config.residual_scaling
    std = 0.02 / math.sqrt(2 * config.n_layer) if scaled else 0.02
    mup_scale = mup.hidden_init_scale(config)
    if mup_scale is not None:
        std = std * mup_scale
    return nn.initializers.normal(stddev=std)


def _embedding_init(n_vocab: int, vocab_axis: int = 0):
    """N(0, 0.02) for real tokens, zeros for the padding rows (so exports need no cleanup)."""

    def init(key, shape, dtype=jnp.float32):
        table = nn.initializers.normal(stddev=0.02)(key, shape, dtype)
        real = (jnp.arange(shape[vocab_axis]) < n_vocab).reshape([-1 if a == vocab_axis else 1 for a in range(len(shape))])
        return jnp.where(real, table, 0.0).astype(dtype)

    return init


def sinusoidal_positions(n_positions: int, dim: int) -> jax.Array:
    """Vaswani et al.'s table [n_positions, dim]: sin on even features, cos on odd ones."""
    position = jnp.arange(n_positions, dtype=jnp.float32)[:, None]
    inv_freq = jnp.exp(-math.log(10000.0) * jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)  # [ceil(D/2)]
    angles = position * inv_freq[None, :]
    table = jnp.zeros((n_positions, dim), jnp.float32)
    table = table.at[:, 0::2].set(jnp.sin(angles))
    return table.at[:, 1::2].set(jnp.cos(angles[:, : dim // 2]))


class Attention(nn.Module):
    config: ModelConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x, layer_cache, cache_index):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        B, T, D = x.shape
        N, H = cfg.n_head, cfg.head_dim
        qkv = nn.Dense(3 * D, dtype=dtype, kernel_init=_weight_init(cfg), name="c_attn")(x)
        q, k, v = jnp.split(qkv.reshape(B, T, 3 * N, H), 3, axis=2)  # each [B, T, N, H]
        q, k, v = (constrain(t, ("act_batch", "act_length", "act_heads", None)) for t in (q, k, v))
        dropout_rate = 0.0 if self.deterministic else cfg.attn_pdrop
        dropout_rng = self.make_rng("dropout") if dropout_rate > 0 else None
        scale = mup.attention_scale(cfg)  # None: GPT-2's 1/sqrt(H)
        if layer_cache is None or (isinstance(cache_index, int) and cache_index == 0):
            # Training, evaluation, and a prefill from position 0 (the cache holds nothing yet, so the
            # prompt attends only to itself): the configured implementation, kernels included.
            y = dot_product_attention(
                q, k, v, causal=True, dropout_rate=dropout_rate, dropout_rng=dropout_rng, impl=cfg.attention,
                scale=scale,
            )
        else:
            # Write this chunk's keys/values at cache_index, attend over the whole buffer; slots
            # not yet written lie after every query position, so the causal mask hides them.
            mask = causal_mask(cache_index + jnp.arange(T), jnp.arange(layer_cache["k"].shape[1]))[None, None]
            if T == 1 and dropout_rate == 0.0:  # a decoding step
                # The same k_all, v_all as a select: it fuses into the attention's loops, which then
                # read the cache in place instead of copying it (dynamic_update_slice) every step.
                here = (jnp.arange(layer_cache["k"].shape[1]) == cache_index)[None, :, None, None]
                k_all = jnp.where(here, k.astype(layer_cache["k"].dtype), layer_cache["k"])
                v_all = jnp.where(here, v.astype(layer_cache["v"].dtype), layer_cache["v"])
                y = single_query_attention(q, k_all.astype(dtype), v_all.astype(dtype), mask, scale=scale)
            else:
                k_all = jax.lax.dynamic_update_slice(layer_cache["k"], k.astype(layer_cache["k"].dtype), (0, cache_index, 0, 0))
                v_all = jax.lax.dynamic_update_slice(layer_cache["v"], v.astype(layer_cache["v"].dtype), (0, cache_index, 0, 0))
                y = reference_attention(q, k_all.astype(dtype), v_all.astype(dtype), mask,
                                        dropout_rate=dropout_rate, dropout_rng=dropout_rng, scale=scale)
        # Only this chunk's keys/values leave the layer; GPT writes them into the whole cache at
        # once, so the layer scan stacks [B, T, N, H] chunks, not copies of the cache.
        new_cache = None
        if layer_cache is not None:
            new_cache = {"k": k.astype(layer_cache["k"].dtype), "v": v.astype(layer_cache["v"].dtype)}
        y = y.reshape(B, T, D)
        y = nn.Dense(D, dtype=dtype, kernel_init=_weight_init(cfg, residual=True), name="c_proj")(y)
        self.sow("intermediates", "attn_out", y)  # for mup_check.py; a no-op unless collected
        return y, new_cache


class MLP(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        h = nn.Dense(4 * cfg.n_embd, dtype=dtype, kernel_init=_weight_init(cfg), name="c_fc")(x)
        h = constrain(h, ("act_batch", "act_length", "act_mlp"))
        if cfg.activation == "relu":
            h = nn.relu(h)
        else:
            h = nn.gelu(h, approximate=True)  # GPT-2's tanh form ("gelu_new" in Hugging Face)
        y = nn.Dense(cfg.n_embd, dtype=dtype, kernel_init=_weight_init(cfg, residual=True), name="c_proj")(h)
        self.sow("intermediates", "mlp_out", y)  # for mup_check.py; a no-op unless collected
        return y


class Block(nn.Module):
    """Pre-LN Transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x)); with
    `ln_placement=post` GPT-1's ln_1(x + attn(x)), then ln_2(x + mlp(x))."""

    config: ModelConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x, layer_cache, cache_index):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        ln = lambda name: nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=dtype, name=name)
        dropout = Dropout(rate=cfg.resid_pdrop, deterministic=self.deterministic)
        attn, mlp = Attention(cfg, self.deterministic, name="attn"), MLP(cfg, name="mlp")
        if cfg.ln_placement == "post":
            y, new_cache = attn(x, layer_cache, cache_index)
            x = constrain(ln("ln_1")(x + dropout(y)), RESIDUAL)
            x = constrain(ln("ln_2")(x + dropout(mlp(x))), RESIDUAL)
            return x, new_cache
        y, new_cache = attn(ln("ln_1")(x), layer_cache, cache_index)
        x = constrain(x + dropout(y), RESIDUAL)
        x = constrain(x + dropout(mlp(ln("ln_2")(x))), RESIDUAL)
        return x, new_cache


_REMAT_POLICIES = {
    "full": None,  # save nothing, recompute the whole block
    "dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class GPT(nn.Module):
    """GPT-2 language model. `__call__(tokens[B, T])` returns `(logits[B, T, V_padded], cache)`;
    logits are float32 with padded entries at the float32 minimum."""

    config: ModelConfig

    @nn.compact
    def __call__(
        self,
        tokens: jax.Array,
        *,
        deterministic: bool = True,
        cache: Cache | None = None,
        cache_index: jax.Array | int = 0,
        return_hidden: bool = False,
    ) -> tuple[jax.Array, Cache | None]:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        B, T = tokens.shape
        if isinstance(cache_index, int) and cache_index + T > cfg.n_ctx:
            raise ValueError(f"positions {cache_index}..{cache_index + T - 1} exceed model.n_ctx={cfg.n_ctx}; "
                             f"feed at most {cfg.n_ctx} tokens")
        wte = nn.Embed(cfg.n_vocab_padded, cfg.n_embd, dtype=dtype, embedding_init=_embedding_init(cfg.n_vocab), name="wte")
        positions = cache_index + jnp.arange(T)
        if cfg.positions == "sinusoidal":
            position_table = jnp.take(sinusoidal_positions(cfg.n_ctx, cfg.n_embd), positions, axis=0)  # [T, D]
        else:
            wpe = nn.Embed(cfg.n_ctx, cfg.n_embd, embedding_init=nn.initializers.normal(stddev=0.02), name="wpe")
            position_table = wpe(positions)
        x = constrain(wte(tokens) + position_table[None], RESIDUAL)  # [B, T, D]
        x = Dropout(rate=cfg.embd_pdrop, deterministic=deterministic)(x).astype(dtype)

        decided = target.decide(cfg)  # "auto" resolved for the devices this step is built for
        block, scanned, remat = Block, decided.scan_layers, decided.remat
        if remat != "none":
            block = nn.remat(Block, policy=_REMAT_POLICIES[remat], prevent_cse=not scanned)
        layers = nn.scan(
            block,
            variable_axes={"params": 0, "intermediates": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(0, nn.broadcast),
            length=cfg.n_layer,
            unroll=1 if scanned else cfg.n_layer,
        )
        x, new_kv = layers(cfg, deterministic, name="h")(x, cache, cache_index)
        new_cache = None
        if cache is not None:  # new_kv[name]: [L, B, T, N, H], written in place at cache_index
            new_cache = {name: jax.lax.dynamic_update_slice(cache[name], new_kv[name], (0, 0, cache_index, 0, 0))
                         for name in cache}

        if cfg.final_ln:
            x = nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=dtype, name="ln_f")(x)
        if return_hidden:  # [B, T, D] before the head, for a loss that applies it in chunks (lm_head_loss.py)
            return x, new_cache
        if cache is not None:
            # Decoding: XLA:CPU fuses ln_f into its matrix-vector loop for the head and so
            # recomputes it for each of the V outputs (~2x the cost of the head); materialize it.
            x = jax.lax.optimization_barrier(x)
        # Tied output projection on [B * T, D]: with one contracting dimension the backward
        # d(wte) = dlogits^T @ x is a plain matmul; on [B, T, D] XLA canonicalizes that dot by first
        # writing a transposed copy of dlogits [V, B * T] (~7% of a CPU train step).
        x_flat = x.astype(dtype).reshape(B * T, -1)
        if cfg.tied_embeddings:
            logits = wte.attend(x_flat)
        else:
            logits = nn.Dense(cfg.n_vocab_padded, use_bias=False, dtype=dtype, name="lm_head",
                              kernel_init=_embedding_init(cfg.n_vocab, vocab_axis=1))(x_flat)
        logits = logits.reshape(B, T, -1).astype(jnp.float32)
        multiplier = mup.output_multiplier(cfg)  # μP's 1/m readout (mup.py); None under SP
        if multiplier is not None:
            logits = logits * multiplier
        real = jnp.arange(cfg.n_vocab_padded) < cfg.n_vocab
        logits = jnp.where(real, logits, jnp.finfo(jnp.float32).min)
        return constrain(logits, ("act_batch", "act_length", "act_vocab")), new_cache


def init_params(config: ModelConfig, rng: jax.Array) -> Any:
    """Fresh parameters (a pure function of config and rng)."""
    tokens = jnp.zeros((1, min(8, config.n_ctx)), jnp.int32)
    return GPT(config).init({"params": rng}, tokens)["params"]


def init_cache(config: ModelConfig, batch_size: int, max_len: int, dtype=None) -> Cache:
    """A zeroed KV cache for `max_len` positions (at most n_ctx)."""
    if max_len > config.n_ctx:
        raise ValueError(f"cache length {max_len} exceeds model.n_ctx={config.n_ctx}")
    shape = (config.n_layer, batch_size, max_len, config.n_head, config.head_dim)
    dtype = dtype or jnp.dtype(config.dtype)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def count_params(params: Any, config: ModelConfig, *, include_padding: bool = False) -> int:
    """Number of parameters; by default without the vocabulary padding rows, which carry no
    information (so `gpt2` counts 124,439,808 like Hugging Face's GPT2LMHeadModel)."""
    total = sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
    if not include_padding:
        tables = 1 if config.tied_embeddings else 2  # wte, and lm_head when untied
        total -= tables * (config.n_vocab_padded - config.n_vocab) * config.n_embd
    return total


def non_embedding_params(config: ModelConfig) -> int:
    """Parameters in the Transformer blocks and final LayerNorm (Kaplan et al. 2020's N)."""
    D, F, L = config.n_embd, 4 * config.n_embd, config.n_layer
    per_layer = 2 * 2 * D + (D * 3 * D + 3 * D) + (D * D + D) + (D * F + F) + (F * D + D)
    return L * per_layer + (2 * D if config.final_ln else 0)
