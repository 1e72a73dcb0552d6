"""The tpu_setup scripts in --dry-run mode print exactly the commands they would run."""

from __future__ import annotations

import os
import pathlib
import shlex
import subprocess
import sys


SETUP = pathlib.Path(__file__).parent.parent / "tpu_setup"
ENV = {"TPU_NAME": "exp1", "TPU_ZONE": "us-central2-b", "TPU_TYPE": "v4-32", "TPU_PROJECT": "proj",
       "REPO_URL": "https://example.org/gpt2_jax.git"}


def dry_run(script: str, *args: str, env: dict | None = None) -> list[list[str]]:
    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith("TPU_")}, **ENV, **(env or {})}
    out = subprocess.run(["bash", str(SETUP / script), "--dry-run", *args], env=full_env,
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return [shlex.split(line) for line in out.splitlines() if line and not line.startswith("#")]


def test_create_queues_the_slice():
    (create, describe) = dry_run("create.sh", "--spot")
    assert create == ["gcloud", "compute", "tpus", "queued-resources", "create", "exp1", "--node-id=exp1",
                      "--zone=us-central2-b", "--project=proj", "--accelerator-type=v4-32",
                      "--runtime-version=tpu-ubuntu2204-base", "--spot"]
    assert describe[:5] == ["gcloud", "compute", "tpus", "queued-resources", "describe"]


def test_install_runs_on_every_worker():
    (cmd,) = dry_run("install.sh")
    assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "exp1"] and "--worker=all" in cmd
    remote = cmd[-1].removeprefix("--command=")
    assert "git clone https://example.org/gpt2_jax.git" in remote and "pip install -q -e . 'jax[tpu]'" in remote


def test_install_without_repo_url_is_an_error():
    proc = subprocess.run(["bash", str(SETUP / "install.sh"), "--dry-run"], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"]}, timeout=30)
    assert proc.returncode == 2 and "set REPO_URL" in proc.stderr


def test_launch_passes_overrides_and_auto_distributed():
    (check, cmd) = dry_run("launch.sh", "experiments/gpt2_124m_openwebtext.py", "data.path=gs://bucket/owt")
    assert check == ["gpt2-jax", "train", "experiments/gpt2_124m_openwebtext.py", "data.path=gs://bucket/owt",
                     "--compile-only", "--topology", "v4-32", "--slices", "1"]
    assert "--worker=all" in cmd
    remote = shlex.split(cmd[-1].removeprefix("--command="))
    assert remote[:5] == ["cd", "gpt2_jax", "&&", "nohup", "~/venv/bin/gpt2-jax"]
    assert remote[5:10] == ["train", "experiments/gpt2_124m_openwebtext.py", "data.path=gs://bucket/owt",
                            "distributed.auto=true", "--no-progress"]


def test_logs_and_teardown():
    (logs,) = dry_run("logs.sh", "--worker=3")
    assert "--worker=3" in logs and logs[-1] == "--command=tail -n 200 -f ~/train.log"
    (teardown,) = dry_run("teardown.sh")
    assert teardown[:6] == ["gcloud", "compute", "tpus", "queued-resources", "delete", "exp1"] and "--quiet" in teardown


def test_slurm_script_dry_run():
    out = subprocess.run(["bash", str(SETUP / "slurm_gpu.sbatch"), "--dry-run", "exp.py", "steps=10"],
                         capture_output=True, text=True, check=True, timeout=30, env={**os.environ, "VENV": "/opt/venv"})
    assert shlex.split(out.stdout) == ["srun", "--kill-on-bad-exit=1", "/opt/venv/bin/gpt2-jax", "train", "exp.py",
                                       "steps=10", "distributed.auto=true", "--no-progress"]


def test_sweep_launch_shards_points_over_hosts():
    (check, cmd) = dry_run("sweep.sh", "experiments/scaling_tiny_cpu.py", "--out", "/mnt/shared/s1", "--devices-per-point", "1")
    assert check == ["gpt2-jax", "sweep", "run", "experiments/scaling_tiny_cpu.py", "--out", "/mnt/shared/s1",
                     "--devices-per-point", "1", "--compile-only", "--topology", "v4-32", "--slices", "1"]
    assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "exp1"] and "--worker=all" in cmd
    remote = cmd[-1].removeprefix("--command=")
    assert "agent-worker-number" in remote  # each worker reads its own index from the metadata server
    words = shlex.split(remote)
    i = words.index("~/venv/bin/gpt2-jax")
    assert words[i + 1:i + 8] == ["sweep", "run", "experiments/scaling_tiny_cpu.py", "--out", "/mnt/shared/s1",
                                  "--devices-per-point", "1"]
    assert words[i + 8] == "--shard" and "agent-worker-number)/4 --no-progress" in remote  # v4-32: 4 hosts
    (_, cmd) = dry_run("sweep.sh", "s.py", "--out", "o", env={"TPU_TYPE": "v5litepod-8"})
    assert "agent-worker-number)/1 --no-progress" in cmd[-1]  # one host


def test_sweep_launch_bad_input():
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TPU_")}, **ENV, "TPU_TYPE": "x9-3"}
    proc = subprocess.run(["bash", str(SETUP / "sweep.sh"), "--dry-run", "s.py", "--out", "o"], capture_output=True,
                          text=True, env=env, timeout=30)
    assert proc.returncode == 2 and "set TPU_HOSTS=N" in proc.stderr
    proc = subprocess.run(["bash", str(SETUP / "sweep.sh"), "--dry-run"], capture_output=True, text=True,
                          env={**env, "TPU_HOSTS": "2"}, timeout=30)
    assert proc.returncode == 2 and "give a sweep file" in proc.stderr


def test_launch_compiles_for_the_slice_first_and_stops_when_it_cannot_fit(tmp_path):
    """Not a dry run: the compile check runs for real (libtpu, no TPU) and refuses gpt2-xl at 64
    sequences per v5e chip without remat, so gcloud (a stand-in that records calls) never runs."""
    calls = tmp_path / "gcloud_calls"
    fake = tmp_path / "bin" / "gcloud"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    fake.chmod(0o755)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TPU_")}, **ENV, "TPU_TYPE": "v5litepod-4",
           "PATH": f"{fake.parent}:{os.environ['PATH']}", "GPT2_JAX": f"{sys.executable} -m gpt2_jax",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(["bash", str(SETUP / "launch.sh"), "model=gpt2-xl", "data.vocab=gpt2", "batch_size=256",
                           "model.dtype=bfloat16", "model.remat=none"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "GiB per device" in proc.stderr and "nothing was started on the slice" in proc.stderr
    assert not calls.exists()


def test_multislice_creates_n_nodes_checks_n_slices_and_launches_on_each():
    env = {"TPU_SLICES": "2", "TPU_TYPE": "v5litepod-256"}
    (create, _) = dry_run("create.sh", env=env)
    assert "--node-count=2" in create and "--node-prefix=exp1" in create and not any(a.startswith("--node-id") for a in create)
    (check, *launches) = dry_run("launch.sh", "model=gpt2-xl", env=env)
    assert check[-4:] == ["--topology", "v5litepod-256", "--slices", "2"]
    assert [cmd[5] for cmd in launches] == ["exp1-0", "exp1-1"] and all("--worker=all" in cmd for cmd in launches)
