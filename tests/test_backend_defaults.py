"""The "auto" defaults (attention, layer loop, remat) resolve per backend and size, old
checkpoint configs still load and resume, and the test harness lets -m gpu/tpu see hardware."""

from __future__ import annotations

import dataclasses
import json

import pytest

from conftest import _selects_hardware_tests
from gpt2_jax import backend_defaults
from gpt2_jax.attention import resolve_impl
from gpt2_jax.config import ModelConfig, TrainConfig, from_dict, preset, to_dict
from gpt2_jax.train import _check_resumable


def test_defaults_are_auto_and_resolve_per_backend():
    cfg = ModelConfig()
    assert (cfg.attention, cfg.scan_layers, cfg.remat) == ("auto", "auto", "auto")
    assert backend_defaults.layer_loop_is_scanned(cfg, "gpu") is False
    assert backend_defaults.layer_loop_is_scanned(cfg, "cpu") is True
    assert backend_defaults.layer_loop_is_scanned(cfg, "tpu") is True
    assert backend_defaults.layer_loop_is_scanned(dataclasses.replace(cfg, scan_layers=True), "gpu") is True
    assert backend_defaults.layer_loop_is_scanned(dataclasses.replace(cfg, scan_layers=False), "cpu") is False
    assert resolve_impl("auto", 0.0) == "xla"  # this CPU: the reference, as before the change


def test_remat_auto_follows_model_size():
    assert backend_defaults.remat_policy(preset("gpt2")) == "none"
    assert backend_defaults.remat_policy(preset("gpt2-large")) == "none"
    assert backend_defaults.remat_policy(preset("gpt2-xl")) == "dots"
    assert backend_defaults.remat_policy(dataclasses.replace(preset("gpt2"), remat="full")) == "full"


def test_old_checkpoint_configs_load_and_resume_under_the_new_defaults():
    """A config JSON written before "auto" existed (booleans, explicit xla/none) restores as it was,
    and resuming it with today's defaults is allowed (only reported as changed settings)."""
    old = to_dict(TrainConfig())
    old["model"].update(scan_layers=True, remat="none", attention="xla")
    saved = from_dict(TrainConfig, json.loads(json.dumps(old)))
    assert (saved.model.scan_layers, saved.model.remat, saved.model.attention) == (True, "none", "xla")
    changed = _check_resumable(saved, TrainConfig(), "runs/x/checkpoints", 10)
    assert changed["model.scan_layers"] == (True, "auto") and changed["model.attention"] == ("xla", "auto")


def test_scan_layers_text_forms_normalize():
    assert ModelConfig(scan_layers="false").scan_layers is False
    assert ModelConfig(scan_layers="true").scan_layers is True
    with pytest.raises(ValueError, match="model.scan_layers='sometimes' is not a boolean or 'auto'"):
        ModelConfig(scan_layers="sometimes")


@pytest.mark.parametrize("argv,hardware", [
    (["pytest"], False), (["pytest", "-q", "tests/test_model.py"], False),
    (["pytest", "-m", "gpu"], True), (["pytest", "-m", "tpu"], True), (["pytest", "-mgpu"], True),
    (["pytest", "-m", "gpu or slow"], True), (["pytest", "-m", "not gpu and not tpu"], False),
    (["pytest", "-m", "slow"], False),
])
def test_only_hardware_marker_runs_leave_the_platform_to_jax(argv, hardware):
    assert _selects_hardware_tests(argv) is hardware
