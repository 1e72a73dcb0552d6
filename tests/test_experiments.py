"""Every experiment file under experiments/ loads and yields a valid TrainConfig."""

from __future__ import annotations

import pathlib

import pytest

from gpt2_jax.config import TrainConfig, load_experiment

EXPERIMENTS = sorted((pathlib.Path(__file__).parent.parent / "experiments").glob("*.py"))


def test_there_are_experiments():
    assert EXPERIMENTS


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_loads(path):
    cfg = load_experiment(path)
    assert isinstance(cfg, TrainConfig)
    assert "Command:" in path.read_text() and "Expected:" in path.read_text()
