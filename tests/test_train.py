"""Training loop: metrics, checkpoints, exact resume, gradient accumulation, optimizer parts."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2_jax import checkpoint, mfu, optim
from gpt2_jax.config import ConfigError, ModelConfig, OptimConfig, apply_overrides, preset
from gpt2_jax.data.shards import ShardError
from gpt2_jax.model import init_params


def test_run_writes_metrics_checkpoints_and_learns(tiny_run):
    cfg, result = tiny_run
    records = [json.loads(line) for line in (cfg.workdir_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records]
    assert steps == [3, 6, 9, 12]
    assert all({"loss", "lr", "grad_norm"} <= set(r) for r in records)
    assert [r["step"] for r in records if "eval_loss" in r] == [6, 12]
    assert all("tokens_per_sec" in r for r in records)
    assert "mfu" not in records[0], "CPU has no peak FLOP/s, so MFU must be n/a (absent), not a made-up number"
    # The loss must go down from its start near ln(V) (random init) -- learning happened.
    assert records[0]["loss"] > 9.5 and records[-1]["loss"] < records[0]["loss"] - 0.5
    assert result.step == 12 and result.eval_loss == pytest.approx(records[-1]["eval_loss"])
    ckpts = sorted(int(p.name) for p in (cfg.workdir_path / "checkpoints").iterdir() if p.name.isdigit())
    assert ckpts == [6, 12]
    assert list((cfg.workdir_path / "tensorboard").glob("events.out.tfevents.*"))


def test_checkpoint_restores_final_params_exactly(tiny_run):
    cfg, result = tiny_run
    step, saved_cfg, params, _ = checkpoint.restore(cfg.workdir_path / "checkpoints")
    assert step == 12 and saved_cfg == cfg.train
    assert checkpoint.params_checksum(params) == checkpoint.params_checksum(result.params)


def test_resume_matches_uninterrupted_run(tiny_run, tmp_path):
    """Keep only the step-6 checkpoint of the 12-step run, rerun: the result must be the same
    run (data and dropout are pure functions of (seed, step); optimizer state is restored)."""
    from gpt2_jax.train import train

    cfg, result = tiny_run
    workdir = tmp_path / "resumed"
    shutil.copytree(cfg.workdir_path / "data", workdir / "data")
    (workdir / "checkpoints").mkdir(parents=True)
    shutil.copytree(cfg.workdir_path / "checkpoints" / "6", workdir / "checkpoints" / "6")
    resumed = train(dataclasses.replace(cfg.train, workdir=str(workdir)), say=lambda _: None, progress=False)
    assert resumed.step == 12
    got = jax.tree_util.tree_leaves(resumed.params)
    want = jax.tree_util.tree_leaves(result.params)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)


def test_resume_refuses_a_different_model(tiny_run, tmp_path):
    from gpt2_jax.train import train

    cfg, _ = tiny_run
    workdir = tmp_path / "other"
    shutil.copytree(cfg.workdir_path, workdir)
    other = apply_overrides(dataclasses.replace(cfg.train, workdir=str(workdir)), ["model.n_layer=3", "steps=14"])
    with pytest.raises(ConfigError, match="different model"):
        train(other, say=lambda _: None, progress=False)


def test_gradient_accumulation_equals_full_batch():
    from gpt2_jax.train import TrainState, make_train_step

    model = ModelConfig(n_vocab=256, n_ctx=32, n_embd=32, n_head=2, n_layer=2,
                        embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    base = apply_overrides(dataclasses.replace(_train_config(model), steps=5), [])
    batch = np.random.default_rng(0).integers(0, 256, (8, 17)).astype(np.int32)
    out = []
    for accum in (1, 4):
        cfg = dataclasses.replace(base, grad_accum=accum)
        tx = optim.make_optimizer(cfg.optim, cfg.steps)
        params = init_params(model, jax.random.PRNGKey(0))
        state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
        state, metrics = jax.jit(make_train_step(cfg, tx, jax.random.PRNGKey(1)))(state, batch)
        out.append((state, metrics))
    (s1, m1), (s4, m4) = out
    assert float(m1["loss"]) == pytest.approx(float(m4["loss"]), rel=1e-5)
    assert float(m1["grad_norm"]) == pytest.approx(float(m4["grad_norm"]), rel=1e-4)
    for a, b in zip(jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s4.params)):
        np.testing.assert_allclose(a, b, atol=2e-6)


def _train_config(model: ModelConfig):
    from gpt2_jax.config import DataConfig, TrainConfig

    return TrainConfig(model=model, data=DataConfig(seq_len=16), optim=OptimConfig(lr=1e-3, warmup_steps=1),
                       batch_size=8, workdir="unused")


def test_weight_decay_only_on_matrices():
    params = jax.eval_shape(lambda: init_params(preset("tiny"), jax.random.PRNGKey(0)))
    mask = optim.decay_mask(params)
    flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
    decayed = sorted(k for k, v in flat.items() if v)
    assert decayed == sorted([
        "['h']['attn']['c_attn']['kernel']", "['h']['attn']['c_proj']['kernel']",
        "['h']['mlp']['c_fc']['kernel']", "['h']['mlp']['c_proj']['kernel']",
        "['wpe']['embedding']", "['wte']['embedding']",
    ])
    # Stacked LayerNorm scales are 2-D [L, D] but must not be decayed.
    assert not flat["['h']['ln_1']['scale']"] and not flat["['h']['attn']['c_attn']['bias']"]


def test_learning_rate_schedule_warmup_then_cosine():
    cfg = OptimConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    lr = optim.learning_rate_schedule(cfg, total_steps=110)
    assert float(lr(0)) == 0.0
    assert float(lr(5)) == pytest.approx(5e-4)
    assert float(lr(10)) == pytest.approx(1e-3)
    assert float(lr(60)) == pytest.approx(1e-4 + 0.5 * 9e-4, rel=1e-5)  # half-way down the cosine
    assert float(lr(110)) == pytest.approx(1e-4)


def test_flops_formula_for_gpt2_124m():
    cfg = preset("gpt2")
    # Written out independently: 12 layers of (4 D^2 + 8 D^2 weights + biases + 2 LayerNorms),
    # the final LayerNorm, and the tied head over the padded vocabulary.
    D, L, V, T = 768, 12, 50304, 1024
    blocks = L * (12 * D * D + 13 * D) + 2 * D
    assert mfu.flops_per_token(cfg, T) == 6 * (blocks + V * D) + 12 * L * T * D
    assert mfu.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert mfu.peak_flops("TPU v4") == 275e12
    assert mfu.peak_flops("cpu") is None and mfu.mfu(1e6, cfg, T, "cpu", 1) is None
    assert mfu.mfu(1e5, cfg, T, "NVIDIA H100 80GB HBM3", 1) == pytest.approx(1e5 * mfu.flops_per_token(cfg, T) / 989e12)


def test_shards_from_a_larger_vocabulary_are_refused(tiny_run):
    from gpt2_jax.data.loader import TokenWindows

    cfg, _ = tiny_run
    with pytest.raises(ShardError, match="model.n_vocab=1000"):
        TokenWindows(cfg.workdir_path / "data", "train", 16, n_vocab=1000)


def test_metrics_without_tensorboard_writers_go_to_jsonl(tmp_path, monkeypatch, capsys):
    """A lean image (the GPU one: no tensorboardX, no `tensorboard`): the run keeps its JSONL metrics
    and says once that TensorBoard events are off, instead of failing at the first log line."""
    import sys

    from gpt2_jax.metrics import MetricsWriter

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import` of a None entry raises ImportError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    writer = MetricsWriter(tmp_path)
    writer.write(1, {"loss": 2.5, "lr": None})
    writer.close()
    assert "no TensorBoard events" in capsys.readouterr().out and not (tmp_path / "tensorboard").exists()
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [{"step": 1, "loss": 2.5}]
