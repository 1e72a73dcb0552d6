"""The model trains with `model.attention=pallas` (flash attention kernels, interpreted on CPU)
to the same losses as the reference attention, on one device and under a 2x2x2 mesh where the
kernel runs on each device's shard (shard_map)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2_jax.config import ConfigError, MeshConfig, TrainConfig, apply_overrides
from gpt2_jax.train import Trainer

STEPS = 4


def _config(attention: str, attn_pdrop: float = 0.0, mesh: MeshConfig | None = None) -> TrainConfig:
    cfg = apply_overrides(TrainConfig(), [
        "model=tiny", "model.n_vocab=512", f"model.attention={attention}", "model.embd_pdrop=0",
        f"model.attn_pdrop={attn_pdrop}", "model.resid_pdrop=0", "data.seq_len=64", "batch_size=8",
        f"steps={STEPS}", "optim.lr=3e-3", "optim.warmup_steps=1", "workdir=unused",
    ])
    return cfg if mesh is None else dataclasses.replace(cfg, mesh=mesh)


def _losses(cfg: TrainConfig, devices=None) -> list[float]:
    trainer = Trainer.build(cfg, devices)
    state = trainer.init_state()
    batch = np.random.default_rng(0).integers(0, 512, (8, 65)).astype(np.int32)  # one batch, memorized
    batch = jax.device_put(batch, trainer.batch_sharding)
    kernel_calls = str(jax.make_jaxpr(trainer.train_step)(state, batch)).count("pallas_call")
    assert (kernel_calls > 0) == (cfg.model.attention == "pallas"), kernel_calls  # no silent fallback
    losses = []
    for _ in range(STEPS):
        state, metrics = trainer.train_step(state, batch)
        losses.append(float(metrics["loss"]))
    return losses


@pytest.fixture(scope="module")
def xla_losses():
    return _losses(_config("xla"), jax.devices()[:1])


def test_pallas_trains_to_the_same_losses_as_xla(xla_losses):
    assert xla_losses[-1] < xla_losses[0] - 0.1
    np.testing.assert_allclose(_losses(_config("pallas"), jax.devices()[:1]), xla_losses, rtol=2e-5)


def test_pallas_under_a_mesh_matches_one_device(xla_losses):
    mesh = MeshConfig(data=2, fsdp=2, tensor=2, rules="fsdp_tp")
    np.testing.assert_allclose(_losses(_config("pallas", mesh=mesh)), xla_losses, rtol=2e-5)


def test_pallas_under_remat_and_unrolled_layers_matches(xla_losses):
    cfg = _config("pallas")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, remat="full", scan_layers=False))
    np.testing.assert_allclose(_losses(cfg, jax.devices()[:1]), xla_losses, rtol=2e-5)


def test_pallas_with_attention_dropout_trains():
    losses = _losses(_config("pallas", attn_pdrop=0.1), jax.devices()[:1])
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.1


def test_cudnn_with_attention_dropout_is_a_config_error():
    with pytest.raises(ConfigError, match="model.attention=cudnn has no attention dropout"):
        _config("cudnn", attn_pdrop=0.1)


def test_prefill_from_position_zero_uses_the_kernel():
    """`sample`'s prefill (cache_index=0) runs the configured attention; same logits and cache."""
    from gpt2_jax.config import ModelConfig
    from gpt2_jax.model import GPT, init_cache, init_params

    cfg = ModelConfig(n_vocab=512, n_ctx=64, n_embd=64, n_head=2, n_layer=2, attention="pallas")
    params = init_params(cfg, jax.random.PRNGKey(0))
    tokens = (jnp.arange(40).reshape(2, 20) * 7) % 512
    cache = init_cache(cfg, 2, 30)

    def prefill(config):
        return lambda p, t, c: GPT(config).apply({"params": p}, t, cache=c, cache_index=0)

    assert "pallas_call" in str(jax.make_jaxpr(prefill(cfg))(params, tokens, cache))
    logits, new_cache = prefill(cfg)(params, tokens, cache)
    want, want_cache = prefill(dataclasses.replace(cfg, attention="xla"))(params, tokens, cache)
    np.testing.assert_allclose(logits, want, atol=1e-5)
    for name in ("k", "v"):
        np.testing.assert_allclose(new_cache[name], want_cache[name], atol=1e-5)
