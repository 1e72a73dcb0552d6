"""The tied LM head and next-token cross-entropy, applied in chunks of tokens: no [B*T, V] logits.

The plain loss materializes float32 logits for every token, [B*T, V_padded]: 3.3 GB for `gpt2`
at 16 x 1024, written in the forward pass, kept for the backward pass, and read again for the
softmax gradient. Here the hidden states [B*T, D] are cut into chunks of `chunk_tokens` rows; a
`lax.scan` computes each chunk's logits, log-sum-exp and target logit, and `jax.checkpoint` on
the chunk makes the backward pass recompute its logits instead of storing them. Peak memory for
the head becomes one chunk's logits; the price is the head's forward matmul done twice.

The arithmetic is the model's own: `wte.attend` in the compute dtype (so bf16 logits are rounded
like the model's), padded vocabulary entries at the float32 minimum, float32 softmax. The loss
equals `cross_entropy(GPT(...)(tokens)[0], targets)` to float32 rounding (tests/test_train_options.py).
Off by default (`TrainConfig.loss_chunk_tokens=0`); the GPU benchmark measures whether it pays.

References:
  Wijmans et al. 2024, "Cut Your Losses in Large-Vocabulary Language Models" (the memory of
  materialized logits); Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost" (recompute).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gpt2_jax import mup
from gpt2_jax.config import ConfigError, ModelConfig


def chunked_cross_entropy(hidden: jax.Array, embedding: jax.Array, targets: jax.Array, config: ModelConfig,
                          chunk_tokens: int) -> jax.Array:
    """Mean next-token loss in nats. hidden[B, T, D] (after ln_f), embedding[V_padded, D] (wte),
    targets[B, T]; the B*T tokens are processed `chunk_tokens` at a time."""
    B, T, D = hidden.shape
    n = B * T
    if chunk_tokens < 1 or n % chunk_tokens:
        raise ConfigError(f"loss_chunk_tokens={chunk_tokens} must divide the {n} tokens of a micro-batch "
                          f"({B} x {T}); use a divisor of {n}, or 0 to disable chunking")
    dtype = jnp.dtype(config.dtype)
    real = jnp.arange(config.n_vocab_padded) < config.n_vocab
    multiplier = mup.output_multiplier(config)
    table = embedding.astype(dtype)
    chunks = hidden.reshape(n // chunk_tokens, chunk_tokens, D)  # [C, chunk, D]
    chunk_targets = targets.reshape(n // chunk_tokens, chunk_tokens)

    @jax.checkpoint  # the backward pass recomputes this chunk's logits rather than saving them
    def chunk_loss(h, t):
        logits = jnp.dot(h.astype(dtype), table.T).astype(jnp.float32)  # as wte.attend, then float32
        if multiplier is not None:  # μP's readout multiplier, as in the model
            logits = logits * multiplier
        logits = jnp.where(real, logits, jnp.finfo(jnp.float32).min)
        target_logit = jnp.take_along_axis(logits, t[:, None], axis=-1)[:, 0]
        return jnp.sum(jax.nn.logsumexp(logits, axis=-1) - target_logit)

    def body(total, xs):
        return total + chunk_loss(*xs), None

    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), (chunks, chunk_targets))
    return total / n
