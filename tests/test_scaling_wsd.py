"""WSD schedules and cooldown branches: schedule values, branch checks, and a branch run end to end.

The schedule is checked against values written out by hand from its definition (Hagele et al.
2024: warmup, constant, cooldown of the last fraction with linear / 1-sqrt / cosine shape). The
end-to-end test runs a 3-point sweep on one CPU device: a WSD long run of 16 steps, a cooldown
branch from its step-8 checkpoint (10 steps: the last round(0.25 * 10) = 2 steps cool down), and
a separately trained WSD run of the same 10 steps. The branch must equal the separate run (it is
the same computation: steps 1-8 are the parent's, same lr and batches), collect must record the
branch (and its zero-shot columns, through `gpt2-jax eval` on the shipped excerpts), and a branch
whose own progress is lost must, rerun, give the same numbers again.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import pathlib
import shutil

import numpy as np
import pytest

from gpt2_jax.config import ConfigError, DataConfig, OptimConfig, TrainConfig, preset
from gpt2_jax.optim import cooldown_start, learning_rate_schedule
from gpt2_jax.scaling import ScalingError
from gpt2_jax.scaling.sweep import Point, Sweep, cooldown_branch_steps, wsd_branches

EVAL_DATA = pathlib.Path(__file__).parent / "data" / "eval"


def test_wsd_schedule_values():
    cfg = OptimConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=4, schedule="wsd", cooldown_fraction=0.25)
    assert cooldown_start(cfg, 20) == 15
    expected = {"linear": lambda p: 1 - p, "1-sqrt": lambda p: 1 - math.sqrt(p),
                "cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p))}
    for shape, f in expected.items():
        sched = learning_rate_schedule(dataclasses.replace(cfg, cooldown_shape=shape), 20)
        want = [s / 4 for s in range(4)] + [1.0] * 11 + [0.1 + 0.9 * f((s - 15) / 5) for s in range(15, 21)]
        got = [float(sched(s)) for s in range(21)]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=shape)
    # The lr before the cooldown does not depend on the run length (what branches rely on).
    short, long = (learning_rate_schedule(cfg, n) for n in (20, 80))
    assert [float(short(s)) for s in range(15)] == [float(long(s)) for s in range(15)]
    # cosine is unchanged: optax's warmup + cosine
    cos = learning_rate_schedule(OptimConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=4), 20)
    assert float(cos(2)) == pytest.approx(0.5) and float(cos(20)) == pytest.approx(0.1)
    assert float(cos(12)) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 8 / 16)))
    with pytest.raises(ConfigError, match="optim.schedule='step' is not one of"):
        OptimConfig(schedule="step")
    with pytest.raises(ConfigError, match="optim.cooldown_shape='sqrt' is not one of"):
        OptimConfig(cooldown_shape="sqrt")
    with pytest.raises(ConfigError, match="cooldown_fraction=0 must be in"):
        OptimConfig(cooldown_fraction=0)


def test_cooldown_branch_steps():
    for at in (7, 8, 100, 1234):
        for f in (0.1, 0.2, 0.25, 0.5):
            t = cooldown_branch_steps(at, f)
            assert t - round(f * t) == at and t > at
    with pytest.raises(ScalingError, match="no run length puts a 0.1 cooldown at step 1"):
        cooldown_branch_steps(1, 0.1)  # 2 steps would round the cooldown to 0 steps


def _base(steps=16) -> TrainConfig:
    model = dataclasses.replace(preset("tiny"), n_layer=1, n_embd=32, n_head=2, n_vocab=320, embd_pdrop=0.0,
                                attn_pdrop=0.0, resid_pdrop=0.0)
    return TrainConfig(workdir="unused", model=model, data=DataConfig(seq_len=32, vocab="bbpe:320"),
                       optim=OptimConfig(lr=3e-3, warmup_steps=2, schedule="wsd", cooldown_fraction=0.25),
                       steps=steps, batch_size=8, log_every=1, eval_every=4, eval_batches=2, ckpt_every=0,
                       keep_checkpoints=1, sample_prompt="")


def _sweep() -> Sweep:
    base = _base()
    parent = Point("long", base.model, 16)
    branch = wsd_branches(parent, [8], 0.25)[0]
    solo = Point("solo", base.model, branch.steps, optim={"cooldown_fraction": 0.25})
    return Sweep(base, (branch, parent, solo))  # the branch listed first: the runner must reorder


def test_branch_checks():
    base = _base()
    parent = Point("long", base.model, 16)
    assert wsd_branches(parent, [8], 0.25)[0].steps == 10
    with pytest.raises(ScalingError, match="the sweep has no point 'nope'"):
        Sweep(base, (parent, Point("b", base.model, 11, branch_from=("nope", 8))))
    with pytest.raises(ScalingError, match="its cooldown starts at step 9"):
        Sweep(base, (parent, Point("b", base.model, 12, branch_from=("long", 8))))
    with pytest.raises(ScalingError, match="after the parent's own cooldown began \\(step 12\\)"):
        Sweep(base, (parent, *wsd_branches(parent, [13], 0.25)))
    wide = dataclasses.replace(base.model, n_embd=48, n_head=3)
    with pytest.raises(ScalingError, match="the models differ"):
        Sweep(base, (parent, Point("b", wide, 11, branch_from=("long", 8))))
    with pytest.raises(ScalingError, match="optim.schedule='wsd' with the same lr"):
        Sweep(base, (parent, Point("b", base.model, 11, lr=1e-3, branch_from=("long", 8))))
    with pytest.raises(ScalingError, match="but its seed is 1 and the parent's 0; .* \\(give it seed=0\\)"):
        Sweep(base, (parent, Point("b", base.model, 10, optim={"cooldown_fraction": 0.25}, branch_from=("long", 8),
                                   seed=1)))
    sweep = _sweep()
    assert sweep.config(sweep.point("long"), "w").ckpt_every == 8  # the parent keeps its branch step
    assert sweep.config(sweep.point("long"), "w").keep_checkpoints == 3


def test_a_point_can_repeat_with_another_seed(tmp_path):
    """Repeats of a point (run-to-run noise) differ only in seed; a repeat's branches inherit it."""
    from gpt2_jax.scaling.runner import plan

    base = _base()
    parent = Point("long-s1", base.model, 16, seed=1)
    sweep = Sweep(base, (Point("long", base.model, 16), parent, *wsd_branches(parent, [8], 0.25)))
    assert sweep.config(sweep.point("long"), "w").seed == base.seed == 0
    assert sweep.config(sweep.point("long-s1-cd8"), "w").seed == 1
    rows = {r["name"]: r for r in plan(sweep, tmp_path)}
    assert rows["long"]["hash"] != rows["long-s1"]["hash"]
    assert (rows["long"]["seed"], rows["long-s1"]["seed"], rows["long-s1-cd8"]["seed"]) == (0, 1, 1)


def test_branch_hash_follows_parent(tmp_path):
    from gpt2_jax.scaling.runner import plan

    sweep = _sweep()
    rows = {r["name"]: r for r in plan(sweep, tmp_path)}
    other = dataclasses.replace(sweep, base=dataclasses.replace(sweep.base, seed=1))
    moved = {r["name"]: r for r in plan(other, tmp_path)}
    assert rows["long-cd8"]["hash"] != moved["long-cd8"]["hash"]
    assert rows["long-cd8"]["parent"] == "long" and rows["long-cd8"]["branch_step"] == 8
    assert rows["long-cd8"]["cooldown_tokens"] == 2 * 8 * 32


@pytest.mark.slow
def test_branch_runs_like_a_separate_run_and_resumes(tmp_path):
    import jax

    from gpt2_jax.scaling.collect import collect, write_csv
    from gpt2_jax.scaling.runner import run_sweep

    quiet = dict(progress=False, say=lambda _: None, devices=jax.devices()[:1])
    out = tmp_path / "sweep"
    results = {r["name"]: r for r in run_sweep(_sweep(), out, **quiet)}
    assert set(results) == {"long", "long-cd8", "solo"}
    branch, solo = results["long-cd8"], results["solo"]
    assert branch["resumed_from"] == 8 and solo["resumed_from"] is None
    assert branch["loss"] == pytest.approx(solo["loss"], rel=1e-6)
    assert branch["eval_loss"] == pytest.approx(solo["eval_loss"], rel=1e-6)
    log = (out / "points" / "long-cd8" / "train.log").read_text()
    assert "resuming from" in log and "at step 8" in log

    rows, missing = collect(out, curves=True)
    write_csv(rows, tmp_path / "r.csv")
    with open(tmp_path / "r.csv", newline="") as f:
        table = {r["name"]: r for r in csv.DictReader(f)}
    assert not missing
    b = table["long-cd8"]
    assert (b["parent"], b["branch_step"], b["cooldown_tokens"], b["final"]) == ("long", "8", str(2 * 8 * 32), "1")
    assert table["long"]["parent"] == "" and table["long"]["schedule"] == "wsd" and table["long"]["seed"] == "0"
    assert table["long@8"]["final"] == "0" and int(table["long@8"]["tokens"]) == 8 * 8 * 32
    assert "long-cd8@4" not in table  # the branch's curve starts after its branch step

    # Zero-shot columns for one point through `gpt2-jax eval` on the shipped excerpts, cached.
    from gpt2_jax.scaling.zeroshot import columns, point_columns

    data = ",".join(str(EVAL_DATA / f) for f in ("wiki.test.first2articles.tokens", "ptb.test.first200.txt",
                                                  "lambada_test.first20.jsonl"))
    zs = point_columns(out / "points" / "long-cd8", b["config_hash"], data, 2)
    assert set(zs) == set(columns()) and zs["wikitext2_word_perplexity"] > 1 and 0 <= zs["lambada_acc"] <= 1
    cache = out / "points" / "long-cd8" / "zeroshot.json"
    stamp = cache.stat().st_mtime_ns
    assert point_columns(out / "points" / "long-cd8", b["config_hash"], data, 2) == zs
    assert cache.stat().st_mtime_ns == stamp

    # Lose the branch's own progress (result and later checkpoints); the rerun redoes it from the
    # parent's checkpoint and lands on the same numbers.
    point = out / "points" / "long-cd8"
    (point / "result.json").unlink()
    (point / "metrics.jsonl").unlink()
    for step_dir in (point / "checkpoints").iterdir():
        shutil.rmtree(step_dir)
    again = {r["name"]: r for r in run_sweep(_sweep(), out, **quiet)}
    assert again["long-cd8"]["loss"] == branch["loss"] and again["long-cd8"]["eval_loss"] == branch["eval_loss"]
    assert json.loads((point / "result.json").read_text())["branch_step"] == 8
