"""The platform decision table (gpt2_jax/target.py): every "auto" setting resolves from the
devices a step is built for, never from this host's backend, and what it resolves to runs.

The GPU cells are checked against an abstract H100 from this CPU: the model's loss gradient for
every preset x {float32, bfloat16} x attention dropout {0, 0.1} lowers for "cuda" with the
resolved implementation (cuDNN's custom call or the Triton kernels in the module). jax asks the
local cuDNN library for its version and the local GPU for its compute capability while it
lowers the cuDNN call; with neither here, the test answers as an H100 with cuDNN 9.10 would
(monkeypatching three private jax functions), so jax's own input checks still run. Compiling
that IR to GPU code needs a GPU (experiments/benchmarks/gpu_session.sh).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json

import jax
import jax.numpy as jnp
import pytest
from jax import export

from conftest import _selects_hardware_tests
from gpt2_jax import target
from gpt2_jax.config import ConfigError, ModelConfig, TrainConfig, from_dict, preset, to_dict
from gpt2_jax.model import GPT, init_params
from gpt2_jax.train import _check_resumable

H100 = target.Target("gpu", "NVIDIA H100 80GB HBM3")
V5E = target.Target("tpu", "TPU v5 lite", 4)
CPU = target.Target("cpu", "cpu", 8)
PRESETS = ("tiny", "mini", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
CELLS = [(name, dtype, drop) for name in PRESETS for dtype in ("float32", "bfloat16") for drop in (0.0, 0.1)]
# Custom calls with no serialization guarantee: we only lower, never serialize.
_UNCHECKED = [export.DisabledSafetyCheck.custom_call(name) for name in
              ("__gpu$xla.gpu.triton", "__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward")]


def _cell(name, dtype, drop):
    return dataclasses.replace(preset(name), dtype=dtype, attn_pdrop=drop)


@pytest.mark.parametrize("name,dtype,drop", CELLS)
def test_cudnn_only_where_it_accepts_the_inputs(name, dtype, drop):
    decided = target.decide(_cell(name, dtype, drop), H100)
    want = "cudnn" if dtype == "bfloat16" and drop == 0.0 else "pallas"
    assert decided.attention == want, decided.why
    assert decided.kernel_family == "gpu" and decided.interpret is False
    assert decided.peak_flops == 989e12


def test_tpu_and_cpu_cells():
    for name, dtype, drop in CELLS:
        on_tpu, on_cpu = target.decide(_cell(name, dtype, drop), V5E), target.decide(_cell(name, dtype, drop), CPU)
        assert (on_tpu.attention, on_tpu.kernel_family, on_tpu.interpret, on_tpu.scan_layers) == ("pallas", "tpu", False, True)
        assert (on_cpu.attention, on_cpu.interpret, on_cpu.scan_layers, on_cpu.peak_flops) == ("xla", True, True, None)


def test_layer_loop_and_remat_follow_depth_and_size():
    assert target.decide(preset("gpt2"), H100).scan_layers is False  # 12 layers: unrolled, measured faster
    assert target.decide(preset("gpt2-medium"), H100).scan_layers is True  # 24: scanned, short compile
    assert target.decide(preset("gpt2-xl"), H100).scan_layers is True
    assert target.decide(dataclasses.replace(preset("gpt2-xl"), scan_layers=False), H100).scan_layers is False
    assert [target.decide(preset(n), H100).remat for n in ("gpt2", "gpt2-large", "gpt2-xl")] == ["none", "none", "dots"]
    assert target.decide(dataclasses.replace(preset("gpt2"), remat="full"), V5E).remat == "full"


def test_explicit_choices_that_cannot_run_are_config_errors():
    with pytest.raises(ConfigError, match="model.attention=cudnn needs an NVIDIA GPU.*tpu"):
        target.decide(dataclasses.replace(preset("gpt2"), attention="cudnn", dtype="bfloat16", attn_pdrop=0.0), V5E)
    with pytest.raises(ConfigError, match="cannot run dtype=float32"):
        target.decide(dataclasses.replace(preset("gpt2"), attention="cudnn", attn_pdrop=0.0), H100)


def test_target_comes_from_the_devices_not_the_host():
    assert target.current().platform == "cpu"  # this host, when no builder says otherwise
    with target.building_for(V5E):
        assert target.current() is V5E
        assert target.decide(preset("mini")).attention == "pallas"
    assert target.current().platform == "cpu"
    abstract = jax.sharding.AbstractDevice(device_kind="NVIDIA H100 80GB HBM3", num_cores=132, platform="cuda")
    assert target.Target.of([abstract]) == H100
    assert target.decide(preset("gpt2"), H100).describe(preset("gpt2")) == \
        "attention=pallas (auto), layers unrolled (auto), remat=none (auto)"


@pytest.fixture
def as_an_h100_with_cudnn(monkeypatch):
    from jax._src.cudnn import fused_attention_stablehlo as fused

    monkeypatch.setattr(fused, "check_cudnn_version", lambda: 91000)
    monkeypatch.setattr(fused, "check_compute_capability", lambda cap: (9, 0) >= tuple(map(int, cap.split("."))))
    monkeypatch.setattr(fused, "is_cuda_compute_capability_equal", lambda cap: cap == "9.0")


def _h100_mesh(triton: bool):
    """jax 0.11's Triton lowering reads its target GPU from an abstract mesh's device, while its
    cuDNN lowering refuses an abstract mesh; jax 0.10 needs neither (test_kernel_lowering.py)."""
    if not triton:
        return contextlib.nullcontext()
    h100 = jax.sharding.AbstractDevice(device_kind=H100.device_kind, num_cores=132, platform="cuda")
    return jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((1,), ("x",), abstract_device=h100))


def _lower_for_h100(cfg: ModelConfig) -> str:
    model = GPT(cfg)
    params = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
    tokens = jax.ShapeDtypeStruct((1, min(cfg.n_ctx, 1024)), jnp.int32)
    train = cfg.attn_pdrop > 0

    def loss(p, t):
        logits, _ = model.apply({"params": p}, t, deterministic=not train, rngs={"dropout": jax.random.PRNGKey(1)})
        return logits.mean()

    with target.building_for(H100), _h100_mesh(target.decide(cfg, H100).attention == "pallas"):
        return export.export(jax.jit(jax.grad(loss)), platforms=("cuda",), disabled_checks=_UNCHECKED)(
            params, tokens).mlir_module()


@pytest.mark.parametrize("name,dtype,drop", CELLS)
def test_resolved_defaults_lower_for_a_gpu(as_an_h100_with_cudnn, name, dtype, drop):
    cfg = _cell(name, dtype, drop)
    module = _lower_for_h100(cfg)
    if target.decide(cfg, H100).attention == "cudnn":
        assert "__cudnn$fmhaSoftmaxBackward" in module
    else:
        assert module.count("xla.gpu.triton") >= 3 and "__cudnn$fmha" not in module


def test_cudnn_really_rejects_what_the_table_avoids(as_an_h100_with_cudnn):
    """The negative control: forcing cuDNN on float32 fails inside jax, as on the H200 (issue 23)."""
    x = jax.ShapeDtypeStruct((1, 128, 2, 64), jnp.float32)
    attend = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")  # noqa: E731
    with pytest.raises(Exception, match="(?i)fp16|bf16|float32|dtype"):
        export.export(jax.jit(attend), platforms=("cuda",), disabled_checks=_UNCHECKED)(x, x, x)


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
