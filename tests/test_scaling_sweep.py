"""Sweeps end to end: dry run, bad input, SIGKILL + rerun == uninterrupted, packed == one at a time.

The sweeps are tiny points (1 layer, width 32 or 48, 8 or 16 steps) on the bundled corpus with a
320-token BBPE. The interruption test runs real `gpt2-jax sweep run` subprocesses on a 2-point
sweep: one uninterrupted; one SIGKILLed in the middle of its second point and rerun; `sweep
collect` of both must agree on every column that is a function of the config (losses included),
bit for bit. The packing test runs 2 points in this process on the 8 forced CPU devices
(conftest), side by side on 4 devices each, and compares each point's losses with one-at-a-time
runs on 4 devices:
bitwise equal, since each point runs the same programs whether or not others run beside it (the
packing benchmark compares against 8-device runs, equal to float rounding).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from gpt2_jax import cli

SWEEP = '''
"""A tiny test sweep."""
import dataclasses
from gpt2_jax.config import DataConfig, OptimConfig, TrainConfig, preset
from gpt2_jax.scaling.sweep import Sweep, grid


def get_sweep():
    model = dataclasses.replace(preset("tiny"), n_vocab=320, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    base = TrainConfig(workdir="unused", model=model, data=DataConfig(seq_len=32, vocab="bbpe:320"),
                       optim=OptimConfig(lr=3e-3, warmup_steps=2), steps=8, batch_size=8, log_every=1,
                       eval_every=1000, eval_batches=2, ckpt_every=4, keep_checkpoints=2, sample_prompt="")
    shapes = [dataclasses.replace(model, n_layer=1, n_embd=w, n_head=w // 16) for w in (32, 48)]
    return Sweep(base, tuple(grid(base, shapes, STEPS)))
'''
DETERMINISTIC = ("name", "params", "params_total", "tokens", "flops", "flops_6nd", "n_layer", "n_embd", "n_head",
                 "steps", "lr", "loss", "eval_loss", "config_hash", "version")


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    """4 points: widths 32, 48 x 8, 16 steps."""
    path = tmp_path_factory.mktemp("sweepdef") / "tiny_sweep.py"
    path.write_text(SWEEP.replace("STEPS", "(8, 16)"))
    return path


@pytest.fixture(scope="module")
def sweep_file_16(tmp_path_factory):
    """2 points: widths 32, 48 x 16 steps (the interruption test: fewer runs, each long enough to cut)."""
    path = tmp_path_factory.mktemp("sweepdef16") / "tiny_sweep16.py"
    path.write_text(SWEEP.replace("STEPS", "(16,)"))
    return path


def _table(path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: r[k] for k in DETERMINISTIC} for r in csv.DictReader(f)]


def test_dry_run_lists_points(sweep_file, tmp_path, capsys):
    assert cli.main(["sweep", "run", str(sweep_file), "--out", str(tmp_path / "s"), "--dry-run",
                     "--flops-per-sec", "1e9"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"L1-d32-s8\s+12,768\s+[\d,]+\s+2,048\s", out), out  # N = 12 d^2 + 13 d for one layer
    assert "4 points" in out and "12LTd" in out and "at 1e+09 FLOP/s" in out
    assert not (tmp_path / "s").exists()  # a dry run writes nothing


def test_bad_sweep_input(sweep_file, tmp_path, capsys):
    bad = tmp_path / "nosweep.py"
    bad.write_text("x = 1\n")
    assert cli.main(["sweep", "run", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "defines no get_sweep()" in err and err.count("\n") == 1
    assert cli.main(["sweep", "collect", str(tmp_path), "--out", str(tmp_path / "r.csv")]) == 2
    assert "is not a sweep directory" in capsys.readouterr().err
    assert cli.main(["sweep", "run", str(sweep_file), "--out", str(tmp_path / "o"), "--dry-run", "--shard", "3"]) == 2
    assert "--shard '3' is not I/N" in capsys.readouterr().err


def _env(cache) -> dict:
    env = dict(os.environ)
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
               JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


def _run(args, env, kill_after_summaries=None, timeout=300) -> tuple[int, str]:
    """Runs `gpt2-jax sweep run`; with kill_after_summaries=k, SIGKILLs it at the 10th step line
    after the k-th point summary (in the middle of point k+1)."""
    proc = subprocess.Popen([sys.executable, "-m", "gpt2_jax", "sweep", "run", *args, "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)], daemon=True).start()
    seen, summaries, steps_after, deadline = [], 0, 0, time.time() + timeout
    while (line := lines.get(timeout=max(0.1, deadline - time.time()))) is not None:
        seen.append(line)
        if re.match(r"^L\d+-d\d+-s\d+: N=", line):
            summaries += 1
        elif kill_after_summaries is not None and summaries == kill_after_summaries and line.startswith("step "):
            steps_after += 1
            if steps_after == 10:
                proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=60), "".join(seen)


@pytest.mark.slow
def test_sigkill_mid_point_then_rerun_matches_uninterrupted(sweep_file_16, tmp_path):
    sweep_file = sweep_file_16
    env = _env(tmp_path / "jax_cache")
    rc, text = _run([str(sweep_file), "--out", str(tmp_path / "ref")], env)
    assert rc == 0, text
    rc, text = _run([str(sweep_file), "--out", str(tmp_path / "cut")], env, kill_after_summaries=1)
    assert rc == -signal.SIGKILL, text
    finished = list((tmp_path / "cut" / "points").glob("*/result.json"))
    assert len(finished) == 1, text  # killed in the middle of the second point
    rc, text = _run([str(sweep_file), "--out", str(tmp_path / "cut")], env)
    assert rc == 0 and "1 finished already, 1 to run" in text and re.search(r"resumed from step [48]\b", text), text
    for name in ("ref", "cut"):
        assert cli.main(["sweep", "collect", str(tmp_path / name), "--out", str(tmp_path / f"{name}.csv")]) == 0
    ref, cut = _table(tmp_path / "ref.csv"), _table(tmp_path / "cut.csv")
    assert len(ref) == 2 and all(r["loss"] and r["eval_loss"] for r in ref)
    assert cut == ref
    rc, text = _run([str(sweep_file), "--out", str(tmp_path / "cut")], env)  # nothing left to do
    assert rc == 0 and "2 finished already, 0 to run" in text, text


def test_finished_point_with_changed_config_is_refused(sweep_file, tmp_path):
    from gpt2_jax.scaling import ScalingError
    from gpt2_jax.scaling.runner import finished

    point = tmp_path / "points" / "p"
    point.mkdir(parents=True)
    (point / "result.json").write_text('{"config_hash": "aaaa"}')
    with pytest.raises(ScalingError, match="finished with another config .* use a new --out or remove"):
        finished(point, "bbbb")


@pytest.mark.slow
def test_packed_points_match_one_at_a_time(sweep_file, tmp_path):
    import jax

    from gpt2_jax.scaling.runner import run_sweep
    from gpt2_jax.scaling.sweep import load_sweep

    assert jax.device_count() == 8
    sweep = load_sweep(sweep_file)
    sweep = dataclasses.replace(sweep, points=tuple(p for p in sweep.points if p.steps == 8))  # 2 points
    quiet = dict(progress=False, say=lambda _: None)
    packed = run_sweep(sweep, tmp_path / "packed", devices_per_point=4, **quiet)
    alone = run_sweep(sweep, tmp_path / "alone", devices_per_point=0, devices=jax.devices()[:4], **quiet)
    assert [r["devices"] for r in packed] == [4] * 2 and [r["devices"] for r in alone] == [4] * 2
    for p, a in zip(packed, alone):
        assert p["name"] == a["name"]
        assert (p["loss"], p["eval_loss"]) == (a["loss"], a["eval_loss"]), p["name"]


def test_shape_rule_and_isoflop_points():
    from gpt2_jax.config import TrainConfig, apply_overrides
    from gpt2_jax.scaling.sweep import Sweep, describe, isoflop, non_embedding_params, shape_for_params

    # Widths are whole heads and layers whole numbers, so N lands within that quantization of the target.
    for target, head in ((2e4, 16), (1e5, 16), (1e6, 64), (1e7, 64), (85e6, 64)):
        model = shape_for_params(target, aspect_ratio=64, head_dim=head)
        assert abs(non_embedding_params(model) / target - 1) < 0.45 and model.n_embd % head == 0
        assert 0.25 < model.n_embd / model.n_layer / 64 < 4
    assert (shape_for_params(85e6, aspect_ratio=64, head_dim=64).n_layer,
            shape_for_params(85e6, aspect_ratio=64, head_dim=64).n_embd) == (12, 768)  # GPT-2 small's shape
    base = apply_overrides(TrainConfig(), ["model=tiny", "model.n_vocab=512", "data.vocab=bbpe:512",
                                           "data.seq_len=64", "batch_size=16"])
    shapes = [shape_for_params(n, aspect_ratio=32, head_dim=16) for n in (2e4, 6e4, 2e5)]
    points = isoflop(base, [1e11, 1e12], shapes)
    assert len(points) == 6
    sweep = Sweep(base, tuple(points))
    for p in points:
        c = describe(sweep.config(p, "w"))["flops"]
        budget = 1e11 if p.name.startswith("C1e11") else 1e12
        step_flops = c / p.steps
        assert abs(c - budget) <= step_flops / 2 + 1  # off by the rounding of the step count only
