"""Training-step options that may pay on accelerators, default off: bf16 Adam first moments
(optim.mu_dtype) track the float32 run, and a checkpoint of one kind does not resume as the other."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2_jax.config import ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig
from gpt2_jax.model import init_params
from gpt2_jax.optim import make_optimizer
from gpt2_jax.train import TrainState, _check_resumable, make_train_step


def _run(cfg: TrainConfig, steps: int = 4):
    tx = make_optimizer(cfg.optim, cfg.steps)
    params = init_params(cfg.model, jax.random.PRNGKey(0))
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
    step = jax.jit(make_train_step(cfg, tx, jax.random.PRNGKey(1)))
    batch = jnp.asarray(np.random.RandomState(0).randint(0, cfg.model.n_vocab, (4, 33)), jnp.int32)
    losses = []
    for _ in range(steps):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return state, losses


def test_bf16_first_moment_tracks_float32():
    model = ModelConfig(n_vocab=256, n_ctx=32, n_embd=64, n_head=2, n_layer=2, attention="xla")
    base = TrainConfig(model=model, data=DataConfig(seq_len=32), optim=OptimConfig(lr=3e-3, warmup_steps=0),
                       steps=4, batch_size=4)
    assert base.optim.mu_dtype == "float32"  # default off
    fp32_state, fp32 = _run(base)
    bf16_cfg = dataclasses.replace(base, optim=dataclasses.replace(base.optim, mu_dtype="bfloat16"))
    bf16_state, bf16 = _run(bf16_cfg)
    moments = {leaf.dtype for leaf in jax.tree_util.tree_leaves(bf16_state.opt_state) if leaf.ndim >= 1}
    assert moments == {jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)}  # mu bf16, nu float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(bf16_state.params))
    assert fp32[-1] < fp32[0] - 0.05  # it learns (same batch)...
    np.testing.assert_allclose(bf16, fp32, rtol=2e-3)  # ...and bf16 moments follow the same path
    with pytest.raises(ConfigError, match="optimizer state of another structure"):
        _check_resumable(base, bf16_cfg, "runs/x/checkpoints", 4)


def test_bad_mu_dtype_is_refused():
    with pytest.raises(ConfigError, match="optim.mu_dtype='float16' is not one of"):
        OptimConfig(mu_dtype="float16")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_chunked_lm_head_loss_equals_the_full_logits_loss_and_its_gradients(dtype):
    from gpt2_jax.lm_head_loss import chunked_cross_entropy
    from gpt2_jax.model import GPT
    from gpt2_jax.train import cross_entropy

    model = ModelConfig(n_vocab=250, n_ctx=32, n_embd=64, n_head=2, n_layer=1, attention="xla", dtype=dtype)
    params = init_params(model, jax.random.PRNGKey(0))  # padded vocabulary 256 > 250: the mask matters
    batch = jnp.asarray(np.random.RandomState(1).randint(0, model.n_vocab, (4, 17)), jnp.int32)

    def full(p):
        return cross_entropy(GPT(model).apply({"params": p}, batch[:, :-1])[0], batch[:, 1:])

    def chunked(p):
        hidden, _ = GPT(model).apply({"params": p}, batch[:, :-1], return_hidden=True)
        return chunked_cross_entropy(hidden, p["wte"]["embedding"], batch[:, 1:], model, 16)

    (want, want_grads), (got, got_grads) = (jax.jit(jax.value_and_grad(f))(params) for f in (full, chunked))
    tol = 1e-6 if dtype == "float32" else 2e-2
    np.testing.assert_allclose(got, want, rtol=tol)
    for g, w in zip(jax.tree_util.tree_leaves(got_grads), jax.tree_util.tree_leaves(want_grads)):
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32), atol=tol * 0.1 + 1e-7,
                                   rtol=tol * 10)
    with pytest.raises(ConfigError, match="loss_chunk_tokens=24 must divide the 64 tokens"):
        chunked_cross_entropy(jnp.zeros((4, 16, 64)), params["wte"]["embedding"], batch[:, 1:], model, 24)
