"""Compiled for TPUs on this CPU: the Pallas TPU kernels through Mosaic, and the real train step
for TPU slices through `gpt2-jax train --compile-only --topology`.

libtpu (README's test command installs it) describes TPU topologies on a host without a TPU;
these tests compile for its devices and look at the compiled HLO. They fail, never skip, when
libtpu is missing. What they cannot show: the kernels' numerics on a TPU (the interpreted TPU
tests in test_kernels.py check the same kernels' math on this CPU; the `tpu`-marked tests there
run them for real where a TPU is at hand).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gpt2_jax import cli, topology
from gpt2_jax.config import ConfigError
from gpt2_jax.kernels import flash_attention

KERNEL_CALL = 'custom_call_target="tpu_custom_call"'

# The interpreted TPU cases of test_kernels.py (head size 32), then GPT-2's shapes up to T 4096.
# T, H, causal, segment ids, dropout, dtype
CASES = [
    (256, 32, True, False, 0.0, jnp.float32),
    (130, 32, True, True, 0.2, jnp.float32),
    (100, 32, False, False, 0.0, jnp.bfloat16),
    (1024, 64, True, False, 0.1, jnp.bfloat16),
    (2048, 64, False, True, 0.0, jnp.float32),
    (4096, 128, True, True, 0.1, jnp.bfloat16),
]
CASE_IDS = [f"T{c[0]}-H{c[1]}-{'causal' if c[2] else 'full'}{'-seg' if c[3] else ''}"
            f"{'-drop' if c[4] else ''}-{jnp.dtype(c[5]).name}" for c in CASES]


@pytest.fixture(scope="module", params=["v5e:2x2", "v5p:2x2x1"])
def tpu_devices(request):
    return topology.devices(request.param)


def _loss(causal, rate):
    def loss(q, k, v, segment_ids):
        out = flash_attention(q, k, v, causal=causal, segment_ids=segment_ids, dropout_rate=rate,
                              dropout_seed=jnp.int32(3), backend="tpu", interpret=False)
        return jnp.sum(out.astype(jnp.float32))
    return loss


@pytest.mark.parametrize("T,H,causal,segments,rate,dtype", CASES, ids=CASE_IDS)
def test_tpu_kernels_compile_with_mosaic(tpu_devices, T, H, causal, segments, rate, dtype):
    """Forward and both backward kernels compile for the chip: three Mosaic custom calls."""
    one = NamedSharding(Mesh(tpu_devices[:1], ("x",)), PartitionSpec())
    x = jax.ShapeDtypeStruct((2, T, 2, H), dtype, sharding=one)
    seg = jax.ShapeDtypeStruct((2, T), jnp.int32, sharding=one) if segments else None
    step = jax.jit(jax.value_and_grad(_loss(causal, rate), argnums=(0, 1, 2)))
    hlo = step.lower(x, x, x, seg).compile().as_text()
    assert hlo.count(KERNEL_CALL) == 3, f"expected forward + dK/dV + dQ kernels, got {hlo.count(KERNEL_CALL)}"


def test_kernels_under_shard_map_with_vma_checks(tpu_devices):
    """The dispatcher's shard_map keeps check_vma on: kernel outputs vary like their inputs."""
    mesh = Mesh(tpu_devices, ("data",))
    spec = PartitionSpec("data")
    x = jax.ShapeDtypeStruct((8, 1024, 12, 64), jnp.bfloat16, sharding=NamedSharding(mesh, spec))

    def local(q, k, v):
        return flash_attention(q, k, v, causal=True, backend="tpu", interpret=False)

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(spec,) * 3, out_specs=spec, check_vma=True)
    loss = lambda q, k, v: jnp.sum(sharded(q, k, v).astype(jnp.float32))  # noqa: E731
    hlo = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, x, x).compile().as_text()
    assert hlo.count(KERNEL_CALL) == 3


def _compile_cli(capsys, *args):
    code = cli.main(["train", "model=tiny", "model.n_vocab=512", "batch_size=8", "data.seq_len=64",
                     "--compile-only", "--json", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_tiny_train_step_compiles_for_v5e_through_the_cli(capsys):
    code, out, err = _compile_cli(capsys, "--topology", "v5e:2x2")
    assert code == 0, err
    report = json.loads(out)  # stdout holds the JSON alone
    assert report["device_kind"] == "TPU v5 lite" and report["chip"] == "v5e" and report["devices"] == 4
    assert report["decisions"]["attention"] == "pallas"  # auto, decided for the TPU, not this CPU host
    assert report["kernel_custom_calls"] > 0
    assert report["fits"] is True and 0 < report["peak_bytes"] < 16e9
    assert report["xla_flops_per_device"] > 0 and report["collectives"]["all-gather"] > 0
    assert 0 < report["roofline"]["mfu"] <= 1 and report["roofline"]["hbm_s"] is None  # scanned: no HBM term
    assert "compile-only for v5e:2x2" in err


def test_two_slices_get_a_hybrid_mesh_and_a_dcn_term(capsys):
    code, out, err = _compile_cli(capsys, "--topology", "v5e-4", "--slices", "2", "mesh.fsdp=4")
    assert code == 0, err
    report = json.loads(out)
    assert report["slices"] == 2 and report["devices"] == 8
    assert report["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}  # data parallel across the slices
    assert report["roofline"]["dcn_s"] > 0


def test_a_config_that_cannot_fit_ends_with_one_error_line(capsys):
    """gpt2-xl, 64 sequences per chip, no remat, on 4 v5e chips: refused by the estimate, before compiling."""
    code = cli.main(["train", "model=gpt2-xl", "data.vocab=gpt2", "batch_size=256", "model.dtype=bfloat16",
                     "model.remat=none", "--compile-only", "--topology", "v5e:2x2"])
    out, err = capsys.readouterr()
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert "GiB per device" in lines[0] and "v5e" in lines[0] and "model.remat" in lines[0]
    assert "compiled in" not in err  # the estimate refused it first


@pytest.mark.parametrize("name,generation,grid", [
    ("v5e:16x16", "v5e", (16, 16)), ("v5e-16", "v5e", (4, 4)), ("v5litepod-256", "v5e", (16, 16)),
    ("v6e-64", "v6e", (8, 8)), ("v5p-1024", "v5p", (8, 8, 8)), ("v5p:8x8x16", "v5p", (8, 8, 16)),
    ("v4-8", "v4", (2, 2, 1)), ("v4-32", "v4", (2, 2, 4)), ("v5p-128", "v5p", (4, 4, 4)),
])
def test_topology_names(name, generation, grid):
    spec = topology.parse(name)
    assert (spec.generation, spec.grid) == (generation, grid)


@pytest.mark.parametrize("bad", ["v5e", "v9:2x2", "v5e:2x2x2", "v5p-3", "v5e-12", "tpu"])
def test_bad_topology_names_say_what_works(bad):
    with pytest.raises(ConfigError, match="topology"):
        topology.parse(bad)
