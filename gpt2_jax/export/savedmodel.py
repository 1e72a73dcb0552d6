"""TensorFlow SavedModel with a `serving_default` signature `tokens[batch, seq] int32 -> logits`.

The forward pass is written here in TensorFlow ops (a `tf.Module` holding the weights as
variables) rather than converted with jax2tf: jax2tf is deprecated in the JAX releases we run,
and GPT-2's forward is a screenful of ops. The signature takes any batch and any length up to
n_ctx and returns float32 logits over the real vocabulary; TF Serving, `tf.saved_model.load` and
TFLite converters consume it. Weights are stored once (the head reuses `wte`).

References:
  TensorFlow guide "Using the SavedModel format" (tf.saved_model.save, signatures).
  openai/gpt-2 src/model.py (the computation, in TensorFlow).
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

from gpt2_jax.config import ModelConfig
from gpt2_jax.export.names import LAYER_TENSORS, check_dtype, check_params_match, check_standard, get_path, to_numpy
from gpt2_jax.export.output import atomic_output


def _module(config: ModelConfig, params):
    import tensorflow as tf

    p = to_numpy(params)
    D, N, H, V, eps = config.n_embd, config.n_head, config.head_dim, config.n_vocab, config.layer_norm_epsilon

    class GPT2(tf.Module):
        def __init__(self):
            super().__init__(name="gpt2")
            self.wte = tf.Variable(p["wte"]["embedding"][:V], trainable=False, name="wte")
            self.wpe = tf.Variable(p["wpe"]["embedding"], trainable=False, name="wpe")
            self.ln_f = [tf.Variable(p["ln_f"]["scale"], trainable=False), tf.Variable(p["ln_f"]["bias"], trainable=False)]
            # per-layer weights, stacked [L, ...] in our [in, out] layout, under our names
            self.h = {"/".join(t.ours): tf.Variable(get_path(p["h"], t.ours), trainable=False, name="h/" + "/".join(t.ours))
                      for t in LAYER_TENSORS}

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="tokens")])
        def serve(self, tokens):
            T = tf.shape(tokens)[1]
            x = tf.gather(self.wte, tokens) + tf.gather(self.wpe, tf.range(T))[None]  # [B, T, D]
            causal = tf.linalg.band_part(tf.ones([T, T]), -1, 0)  # 1 on and below the diagonal
            bias = (1.0 - causal) * np.finfo(np.float32).min
            for i in range(config.n_layer):
                w = {k: v[i] for k, v in self.h.items()}
                a = _layer_norm(x, w["ln_1/scale"], w["ln_1/bias"], eps)
                qkv = tf.einsum("btd,de->bte", a, w["attn/c_attn/kernel"]) + w["attn/c_attn/bias"]
                q, k, v = [tf.transpose(tf.reshape(z, [tf.shape(z)[0], T, N, H]), [0, 2, 1, 3]) for z in tf.split(qkv, 3, -1)]
                scores = tf.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(H)) + bias  # [B, N, T, T]
                att = tf.matmul(tf.nn.softmax(scores, axis=-1), v)  # [B, N, T, H]
                att = tf.reshape(tf.transpose(att, [0, 2, 1, 3]), [tf.shape(att)[0], T, D])
                x = x + tf.einsum("btd,de->bte", att, w["attn/c_proj/kernel"]) + w["attn/c_proj/bias"]
                m = _layer_norm(x, w["ln_2/scale"], w["ln_2/bias"], eps)
                m = tf.nn.gelu(tf.einsum("btd,df->btf", m, w["mlp/c_fc/kernel"]) + w["mlp/c_fc/bias"], approximate=True)
                x = x + tf.einsum("btf,fd->btd", m, w["mlp/c_proj/kernel"]) + w["mlp/c_proj/bias"]
            x = _layer_norm(x, self.ln_f[0], self.ln_f[1], eps)
            return {"logits": tf.einsum("btd,vd->btv", x, self.wte)}

    return GPT2()


def _layer_norm(x, scale, bias, eps):
    import tensorflow as tf

    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + eps) * scale + bias


def save(out: pathlib.Path, config: ModelConfig, params, dtype: str = "float32", force: bool = False) -> pathlib.Path:
    import tensorflow as tf

    check_dtype("savedmodel", dtype, ("float32",))
    check_standard(config, "savedmodel")
    check_params_match(params, config)
    module = _module(config, params)
    with atomic_output(out, directory=True, force=force) as tmp:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
    return out
