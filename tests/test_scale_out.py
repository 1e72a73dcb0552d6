"""One code path on 1 device, 8 devices under every rule set, and 2 processes x 4 devices:
the same model and data must give the same losses (fp32, tolerance below)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from gpt2_jax.config import ConfigError, DataConfig, MeshConfig, ModelConfig, OptimConfig, TrainConfig
from gpt2_jax.train import Trainer

RTOL = 1e-5  # fp32: reductions in a different order across shards differ in the last bits
STEPS = 4

MODEL = ModelConfig(n_vocab=512, n_ctx=32, n_embd=64, n_head=4, n_layer=2, vocab_multiple=128,
                    embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
BASE = TrainConfig(model=MODEL, data=DataConfig(seq_len=32), optim=OptimConfig(lr=3e-3, warmup_steps=1),
                   steps=STEPS, batch_size=8, workdir="unused")


def _batches():
    rng = np.random.default_rng(0)
    return [rng.integers(0, MODEL.n_vocab, (8, 33)).astype(np.int32) for _ in range(STEPS)]


def _losses(cfg: TrainConfig, devices=None) -> list[float]:
    trainer = Trainer.build(cfg, devices)
    state = trainer.init_state()
    losses = []
    for batch in _batches():
        state, metrics = trainer.train_step(state, jax.device_put(batch, trainer.batch_sharding))
        losses.append(float(metrics["loss"]))
    return losses


@pytest.fixture(scope="module")
def reference_losses():
    return _losses(dataclasses.replace(BASE, mesh=MeshConfig(data=1, fsdp=1, tensor=1)), jax.devices()[:1])


@pytest.mark.parametrize("mesh", [
    MeshConfig(data=8, fsdp=1, rules="dp"),
    MeshConfig(data=1, fsdp=8, rules="fsdp"),
    MeshConfig(data=2, fsdp=2, tensor=2, rules="fsdp_tp"),
], ids=["dp8", "fsdp8", "data2_fsdp2_tensor2"])
def test_losses_match_one_device(reference_losses, mesh):
    assert reference_losses[-1] < reference_losses[0]  # it trains
    np.testing.assert_allclose(_losses(dataclasses.replace(BASE, mesh=mesh)), reference_losses, rtol=RTOL)


def test_state_is_sharded_as_configured():
    trainer = Trainer.build(dataclasses.replace(BASE, mesh=MeshConfig(data=2, fsdp=2, tensor=2, rules="fsdp_tp")))
    state = trainer.init_state()
    kernel = state.params["h"]["mlp"]["c_fc"]["kernel"]  # [L, D, F] -> (None, fsdp, tensor)
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    assert kernel.addressable_shards[0].data.shape == (2, 32, 128)
    mu = state.opt_state[1][0].mu["h"]["mlp"]["c_fc"]["kernel"]  # Adam's first moment, sharded like its param
    assert mu.sharding.spec == kernel.sharding.spec


def test_batch_that_does_not_split_over_the_mesh_is_an_error():
    with pytest.raises(ConfigError, match="do not split over mesh data x fsdp = 8"):
        Trainer.build(dataclasses.replace(BASE, batch_size=4, mesh=MeshConfig(data=8, fsdp=1, rules="dp")))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli_env(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


TRAIN_ARGS = ["model=tiny", "data.vocab=gpt2", "steps=6", "batch_size=8", "data.seq_len=32", "log_every=1", "eval_every=3",
              "eval_batches=1", "ckpt_every=0", "model.embd_pdrop=0", "model.attn_pdrop=0", "model.resid_pdrop=0",
              "sample_prompt=", "mesh.rules=fsdp", "mesh.fsdp=-1"]


def _read_losses(workdir) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records] + [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    """Two local processes x 4 CPU devices (jax.distributed on 127.0.0.1, gloo) vs one process
    with 8 devices: same global batches, same losses."""
    one = tmp_path / "one"
    subprocess.run([sys.executable, "-m", "gpt2_jax", "train", f"workdir={one}", *TRAIN_ARGS, "--no-progress"],
                   env=_cli_env(8), check=True, capture_output=True, timeout=600)
    two = tmp_path / "two"
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "gpt2_jax", "train", f"workdir={two}", *TRAIN_ARGS, "--no-progress",
         f"distributed.coordinator=127.0.0.1:{port}", "distributed.num_processes=2", f"distributed.process_id={i}",
         "distributed.timeout_s=120"],
        env=_cli_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "processes: 2" in outputs[0][0] and "model:" not in outputs[1][0]  # only process 0 reports
    np.testing.assert_allclose(np.array(_read_losses(two)), np.array(_read_losses(one)), rtol=RTOL)


def test_missing_process_is_a_clear_error_not_a_hang(tmp_path):
    port = _free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "gpt2_jax", "train", f"workdir={tmp_path}", *TRAIN_ARGS,
         f"distributed.coordinator=127.0.0.1:{port}", "distributed.num_processes=2", "distributed.process_id=0",
         "distributed.timeout_s=5"],
        env=_cli_env(4), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: jax.distributed did not start") and "timeout_s=5 s" in proc.stderr
    assert proc.stderr.count("\n") == 1
