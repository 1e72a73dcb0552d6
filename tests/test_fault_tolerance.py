"""Fault tolerance end to end, in real `gpt2-jax train` subprocesses on CPU.

One uninterrupted 16-step run is the reference. A second run in another workdir is interrupted
three times: SIGKILL at a random step, SIGTERM at a later random step (the clean-stop path), and
SIGKILL again; each time the same command is rerun. The final parameters must be bitwise equal
(ckpt-info's checksum) and the metrics log equal, value for value, to the reference's. The kill
points change from run to run; GPT2_JAX_FAULT_SEED=N replays one (it is printed on failure).

The subprocesses share a JAX persistent compilation cache, which only saves the 1-device
compile in the later ones: a cached executable computes exactly what a fresh compile would.
Two local processes (jax.distributed) show the multi-host path: a SIGTERM to one of them stops
both at the same step through JAX's preemption sync point.
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from gpt2_jax import cli

STEPS = 16
ARGS = ["model=tiny", "data.vocab=gpt2", f"steps={STEPS}", "batch_size=8", "data.seq_len=32", "log_every=1", "eval_every=4",
        "eval_batches=1", "ckpt_every=2", "keep_checkpoints=2", "sample_prompt=", "seed=3", "optim.lr=3e-3",
        "optim.warmup_steps=2", "--no-progress"]
STEP_LINE = re.compile(r"^step\s+(\d+) \|")
TIMEOUT_S = 300


def _env(devices: int, cache) -> dict:
    env = dict(os.environ)
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               PYTHONUNBUFFERED="1", JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


class Segment:
    """One `gpt2-jax train` process: its output lines, exit status and the signal sent to it."""

    def __init__(self, cmd: list[str], env: dict, *, send=None, at_step=None, target=None):
        self.lines: list[str] = []
        self.send = send
        self.sent_at_line: int | None = None
        self.signal_time: float | None = None
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)], daemon=True).start()
        deadline = time.time() + TIMEOUT_S
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                proc.kill()
                raise AssertionError(f"{cmd} ran past {TIMEOUT_S} s:\n" + "".join(self.lines[-30:])) from None
            if line is None:
                break
            self.lines.append(line)
            m = STEP_LINE.match(line)
            if send is not None and self.signal_time is None and m and int(m.group(1)) >= at_step:
                (target or proc).send_signal(send)
                self.signal_time, self.sent_at_line = time.time(), int(m.group(1))
        self.returncode = proc.wait(timeout=60)
        self.exit_time = time.time()
        self.text = "".join(self.lines)

    def steps(self) -> list[int]:
        return [int(m.group(1)) for m in map(STEP_LINE.match, self.lines) if m]

    def resumed_at(self) -> int | None:
        m = re.search(r"resuming from .* at step (\d+)", self.text)
        return int(m.group(1)) if m else None


def _train_cmd(workdir, data) -> list[str]:
    return [sys.executable, "-m", "gpt2_jax", "train", f"workdir={workdir}", f"data.path={data}", *ARGS]


def _log(workdir) -> list[dict]:
    """metrics.jsonl without the timing fields (tokens/s and MFU differ between runs)."""
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("tokens_per_sec", "mfu")} for r in records]


def _ckpt_info(directory) -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["ckpt-info", str(directory), "--json"]) == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def runs(tiny_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fault")
    data, cache = tiny_run[0].workdir_path / "data", tmp / "jax_cache"
    env = _env(1, cache)
    reference = Segment(_train_cmd(tmp / "reference", data), env)
    assert reference.returncode == 0, reference.text[-3000:]

    seed = int(os.environ.get("GPT2_JAX_FAULT_SEED", random.randrange(1_000_000)))
    rng = random.Random(seed)
    kill_1 = rng.randint(2, 5)
    term = rng.randint(kill_1 + 1, 8)
    kill_2 = rng.randint(term + 4, 14)
    plan = [(signal.SIGKILL, kill_1), (signal.SIGTERM, term), (signal.SIGKILL, kill_2), (None, None)]
    workdir = tmp / "interrupted"
    segments = [Segment(_train_cmd(workdir, data), env, send=sig, at_step=at) for sig, at in plan]
    where = f"GPT2_JAX_FAULT_SEED={seed}: signals {[(s and s.name, at) for s, at in plan]}"
    return reference, segments, workdir, tmp / "reference", where


@pytest.mark.slow
def test_sigkill_and_restart_end_bitwise_equal_to_an_uninterrupted_run(runs):
    reference, segments, workdir, reference_dir, where = runs
    killed_1, _, killed_2, last = segments
    for seg in (killed_1, killed_2):
        assert seg.returncode == -signal.SIGKILL and seg.sent_at_line is not None, where + seg.text[-2000:]
    assert last.returncode == 0, where + last.text[-3000:]
    # Each rerun resumed from a finalized checkpoint at or before the kill (or from scratch, when
    # the kill came before the first save was final) and went on from there.
    assert segments[0].resumed_at() is None
    for before, after in zip(segments, segments[1:]):
        start = after.resumed_at() or 0
        assert start <= max(before.steps()) and after.steps()[0] == start + 1, where
        if before.send == signal.SIGKILL:  # a regular checkpoint (ckpt_every=2)
            assert start % 2 == 0, where
    assert max(last.steps()) == STEPS
    want, got = _ckpt_info(reference_dir / "checkpoints"), _ckpt_info(workdir / "checkpoints")
    assert got["step"] == want["step"] == STEPS
    assert got["checksum"] == want["checksum"], where
    # The log after every restart point equals the uninterrupted run's (records written past the
    # last checkpoint by a killed process are dropped on resume): loss, lr, grad_norm, eval_loss.
    assert _log(workdir) == _log(reference_dir), where
    assert [r["step"] for r in _log(workdir)] == list(range(1, STEPS + 1))


@pytest.mark.slow
def test_sigterm_stops_within_one_step_with_a_checkpoint_that_resumes(runs):
    _, segments, workdir, _, where = runs
    stopped, resumed = segments[1], segments[2]
    assert stopped.returncode == 0 and "Traceback" not in stopped.text, where + stopped.text[-3000:]
    m = re.search(r"SIGTERM: stopped after step (\d+) \(the signal came after step (\d+)\); "
                  r"checkpoint (\S+) is complete", stopped.text)
    assert m, where + stopped.text[-3000:]
    stop_step, signal_step = int(m.group(1)), int(m.group(2))
    assert stop_step == signal_step + 1, where  # the step in flight finished, no other started
    assert signal_step >= stopped.sent_at_line and max(stopped.steps()) == stop_step, where
    assert stopped.exit_time - stopped.signal_time < 60, where  # saved, closed and exited promptly
    # The next run resumed from the checkpoint it wrote (when odd, no regular save: ckpt_every=2).
    assert resumed.resumed_at() == stop_step, where


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_stop_together_at_the_preemption_sync_point(tiny_run, tmp_path):
    """SIGTERM reaches only process 1; JAX's preemption service tells process 0, both stop at the
    same step boundary, save one checkpoint together and exit 0."""
    data, port = tiny_run[0].workdir_path / "data", _free_port()
    workdir = tmp_path / "two"
    env = _env(1, tmp_path / "jax_cache")  # one CPU device per process: the cheapest multi-host setup
    cmds = [_train_cmd(workdir, data) + [f"distributed.coordinator=127.0.0.1:{port}", "distributed.num_processes=2",
                                          f"distributed.process_id={i}", "distributed.timeout_s=120"] for i in range(2)]
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        worker = subprocess.Popen(cmds[1], stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            main = Segment(cmds[0], env, send=signal.SIGTERM, at_step=3, target=worker)
            worker.wait(timeout=120)
        finally:
            worker.kill()
    worker_out = log.read_text()
    assert main.returncode == 0, main.text[-3000:]
    assert worker.returncode == 0, worker_out[-3000:]
    m = re.search(r"preemption notice .*: stopped after step (\d+) \(every process agreed on this step\)", main.text)
    assert m, main.text[-3000:]
    stop_step = int(m.group(1))
    assert 3 <= stop_step < STEPS and max(main.steps()) == stop_step
    info = _ckpt_info(workdir / "checkpoints")
    assert info["step"] == stop_step and info["state"]["data"]["next_step"] == stop_step
