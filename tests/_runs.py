"""Session fixtures for tests that need a trained checkpoint (loaded via conftest's pytest_plugins).

One tiny 12-step training run is shared by the train, sample and CLI tests: each distinct
training configuration costs several seconds of compilation on the 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import pathlib

import pytest


@dataclasses.dataclass(frozen=True)
class Run:
    train: object  # the TrainConfig
    workdir_path: pathlib.Path


def tiny_train_config(workdir):
    from gpt2_jax.config import TrainConfig, apply_overrides

    return apply_overrides(TrainConfig(), [
        f"workdir={workdir}", "model=tiny", "data.vocab=gpt2", "steps=12", "batch_size=8", "data.seq_len=32",
        "log_every=3", "eval_every=6", "eval_batches=2", "ckpt_every=6", "optim.lr=3e-3",
        "optim.warmup_steps=2", "seed=1",
    ])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(Run, TrainResult) of 12 steps of the `tiny` preset on the bundled corpus."""
    from gpt2_jax.train import train

    workdir = tmp_path_factory.mktemp("tiny_run")
    cfg = tiny_train_config(workdir)
    result = train(cfg, say=lambda _: None, progress=False)
    return Run(cfg, workdir), result
