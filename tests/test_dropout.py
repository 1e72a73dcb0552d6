"""Mesh-independent dropout (gpt2_jax/dropout.py): masks are a function of (seed, step, global
position), so one device and a data2 x fsdp2 x tensor2 mesh train the same trajectory, and the
XLA attention path drops exactly the scores the flash kernels drop."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2_jax.attention import dot_product_attention, reference_attention
from gpt2_jax.config import ModelConfig, MeshConfig, OptimConfig, TrainConfig, DataConfig
from gpt2_jax.dropout import activation_keep_mask, apply_dropout
from gpt2_jax.kernels import keep_mask, seed_from_key
from gpt2_jax.train import Trainer

STEPS = 3


def _losses(cfg: TrainConfig, devices) -> list[float]:
    trainer = Trainer.build(cfg, devices)
    state = trainer.init_state()
    rs = np.random.RandomState(0)
    losses = []
    for _ in range(STEPS):
        batch = rs.randint(0, cfg.model.n_vocab, size=(cfg.batch_size, cfg.seq_len + 1)).astype(np.int32)
        state, metrics = trainer.train_step(state, jax.device_put(batch, trainer.batch_sharding))
        losses.append(float(metrics["loss"]))
    return losses


def _config(mesh: MeshConfig, pdrop: float = 0.1) -> TrainConfig:
    model = ModelConfig(n_vocab=256, n_ctx=32, n_embd=64, n_head=4, n_layer=2, attention="xla",
                        embd_pdrop=pdrop, attn_pdrop=pdrop, resid_pdrop=pdrop)
    return TrainConfig(model=model, data=DataConfig(seq_len=32), optim=OptimConfig(lr=1e-2, warmup_steps=0),
                       mesh=mesh, steps=STEPS, batch_size=8, seed=3)


def one_device_losses() -> list[float]:
    """In a process with ONE device (what a single-GPU run is): the step's PRNG choices there
    (e.g. a faster generator when device_count() == 1) must not change the masks."""
    assert jax.device_count() == 1, jax.devices()
    return _losses(_config(MeshConfig(data=1, fsdp=1, tensor=1)), jax.devices())


@pytest.mark.slow  # three compiles, one in a 1-device subprocess: ~30-80 s on 2 busy cores
def test_one_device_and_a_2x2x2_mesh_train_the_same_trajectory_with_all_dropouts_on():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    script = (f"import json, sys; sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r}); "
              "import test_dropout; print(json.dumps(test_dropout.one_device_losses()))")
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    one = json.loads(run.stdout.strip().splitlines()[-1])
    assert jax.device_count() >= 8, "conftest forces 8 CPU devices"
    mesh = _losses(_config(MeshConfig(data=2, fsdp=2, tensor=2, rules="fsdp_tp")), jax.devices()[:8])
    np.testing.assert_allclose(mesh, one, rtol=2e-5)
    # ...and dropout really is on: the same steps without it give other losses.
    off = _losses(_config(MeshConfig(data=1, fsdp=1, tensor=1), pdrop=0.0), jax.devices()[:1])
    assert abs(off[-1] - one[-1]) > 1e-3, (off, one)


def test_activation_mask_has_the_rate_and_depends_on_seed_and_position():
    keep = np.asarray(activation_keep_mask(jnp.int32(7), (4, 64, 128), 0.1))
    assert abs(keep.mean() - 0.9) < 0.01
    other = np.asarray(activation_keep_mask(jnp.int32(8), (4, 64, 128), 0.1))
    assert (keep != other).mean() > 0.1
    # rows and positions are distinct streams, not copies of one another
    assert (keep[0] != keep[1]).mean() > 0.1 and (keep[:, 0] != keep[:, 1]).mean() > 0.1
    # a slice of the global mask is the mask of that slice's global indices: what a device computes
    x = jnp.ones((4, 64, 128), jnp.float32)
    out = np.asarray(apply_dropout(x, 0.1, jax.random.key(5)))
    np.testing.assert_allclose(out[keep_of(jax.random.key(5), x.shape)], 1 / 0.9, rtol=1e-6)


def keep_of(key, shape):
    return np.asarray(activation_keep_mask(seed_from_key(key), shape, 0.1))


def test_xla_attention_drops_the_scores_the_flash_kernel_drops():
    """The reference path draws its mask from the kernels' hash: with the same rng it equals the
    reference on the kernels' own `keep_mask`, and the interpreted Pallas kernel, value for value."""
    rs = np.random.RandomState(0)
    q, k, v = (jnp.asarray(rs.randn(2, 64, 2, 32), jnp.float32) for _ in range(3))
    rng = jax.random.key(11)
    xla = dot_product_attention(q, k, v, dropout_rate=0.2, dropout_rng=rng, impl="xla")
    mask = jnp.tril(jnp.ones((64, 64), bool))[None, None]
    want = reference_attention(q, k, v, mask, dropout_rate=0.2, dropout_keep=keep_mask(seed_from_key(rng), 2, 2, 64, 0.2))
    np.testing.assert_array_equal(np.asarray(xla), np.asarray(want))
    pallas = dot_product_attention(q, k, v, dropout_rate=0.2, dropout_rng=rng, impl="pallas")
    np.testing.assert_allclose(np.asarray(pallas), np.asarray(xla), atol=2e-5)
