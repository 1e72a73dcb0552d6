"""Text generation: one jitted program per (prompt length, new tokens) with a preallocated KV cache.

The prompt is run once through the model to fill the cache (prefill); then `lax.scan` feeds
one token at a time, writing its keys and values into the cache at its position. Temperature,
top-k, top-p, greedy and the seed are traced values, so changing them never recompiles, and
neither does any token of the loop.

Sampling rule per step (the order Hugging Face applies them): logits / temperature, keep the
top-k, keep the smallest set of tokens whose probability reaches top-p, sample; greedy takes the
argmax of the raw logits, like `generate(do_sample=False)`.

References:
  Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration" (nucleus / top-p).
  Fan et al. 2018 (top-k sampling).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gpt2_jax.config import ModelConfig
from gpt2_jax.model import GPT, init_cache

NEG = jnp.finfo(jnp.float32).min


class SampleError(ValueError):
    """Generation settings that cannot work (too long, bad temperature...)."""


def filter_logits(logits: jax.Array, temperature: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """logits[B, V] -> logits with the tokens outside top-k / top-p set to the float32 minimum."""
    logits = logits / jnp.maximum(temperature, 1e-6)
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]  # descending
    k = jnp.clip(top_k, 1, logits.shape[-1])
    kth = jnp.take(sorted_logits, k - 1, axis=-1)[:, None]
    logits = jnp.where((top_k > 0) & (logits < kth), NEG, logits)
    # top-p on the (top-k filtered) distribution: keep sorted tokens whose preceding mass < p.
    sorted_logits = jnp.where((top_k > 0) & (sorted_logits < kth), NEG, sorted_logits)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep = mass_before < top_p
    cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where((top_p < 1.0) & (logits < cutoff), NEG, logits)


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens"))
def _generate(params, prompt, rng, temperature, top_k, top_p, greedy, *, config: ModelConfig, max_new_tokens: int):
    model = GPT(config)
    batch, prompt_len = prompt.shape
    cache = init_cache(config, batch, prompt_len + max_new_tokens)
    logits, cache = model.apply({"params": params}, prompt, cache=cache, cache_index=0)

    def sample(logits, key):
        # Sorting the vocabulary for top-k / top-p is most of a CPU decode step: skip it (and the
        # random draw, when greedy) at run time with lax.cond, which runs only the branch taken.
        # Without top-k / top-p, filter_logits is exactly logits / temperature.
        filtered = jax.lax.cond((top_k > 0) | (top_p < 1.0),
                                lambda l: filter_logits(l, temperature, top_k, top_p),
                                lambda l: l / jnp.maximum(temperature, 1e-6), logits)
        return jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)

    def step(carry, i):
        cache, last_logits, rng = carry
        rng, key = jax.random.split(rng)
        token = jax.lax.cond(greedy, lambda l, k: jnp.argmax(l, axis=-1).astype(jnp.int32), sample,
                             last_logits, key)  # [B]
        logits, cache = model.apply({"params": params}, token[:, None], cache=cache, cache_index=prompt_len + i)
        return (cache, logits[:, -1], rng), token

    _, tokens = jax.lax.scan(step, (cache, logits[:, -1], rng), jnp.arange(max_new_tokens))
    return jnp.concatenate([prompt, tokens.T], axis=1)


def generate(params: Any, config: ModelConfig, prompt_ids, *, max_new_tokens: int = 64, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, greedy: bool = False, seed: int = 0) -> np.ndarray:
    """prompt_ids[B, P] (or a flat list) -> ids[B, P + max_new_tokens]. top_k=0 and top_p=1 disable."""
    prompt = np.asarray(prompt_ids, dtype=np.int32)
    if prompt.ndim == 1:
        prompt = prompt[None]
    if prompt.shape[1] == 0:
        raise SampleError("the prompt is empty; give at least one token (e.g. '<|endoftext|>')")
    if prompt.shape[1] > config.n_ctx:
        raise SampleError(f"prompt has {prompt.shape[1]} tokens, more than the model's context n_ctx={config.n_ctx}; shorten it")
    if prompt.shape[1] + max_new_tokens > config.n_ctx:
        raise SampleError(
            f"prompt ({prompt.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds n_ctx={config.n_ctx}; "
            f"use --max-new-tokens {config.n_ctx - prompt.shape[1]} or less"
        )
    if max_new_tokens < 1:
        raise SampleError(f"max_new_tokens={max_new_tokens} must be >= 1")
    if not greedy and temperature <= 0:
        raise SampleError(f"temperature={temperature} must be > 0 (use --greedy for argmax decoding)")
    if top_k < 0 or not 0 < top_p <= 1:
        raise SampleError(f"top_k={top_k} must be >= 0 and top_p={top_p} in (0, 1]")
    if prompt.min() < 0 or prompt.max() >= config.n_vocab:
        raise SampleError(f"prompt token id {int(prompt.max())} is outside the model's vocabulary (n_vocab={config.n_vocab})")
    out = _generate(params, jnp.asarray(prompt), jax.random.PRNGKey(seed), jnp.float32(temperature),
                    jnp.int32(top_k), jnp.float32(top_p), jnp.bool_(greedy), config=config, max_new_tokens=max_new_tokens)
    return np.asarray(out)
