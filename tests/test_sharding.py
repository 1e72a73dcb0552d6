"""Mesh construction, the golden PartitionSpec table for every rule set, and mesh errors."""

from __future__ import annotations

import jax
import pytest
from jax.sharding import PartitionSpec as P

from gpt2_jax import sharding
from gpt2_jax.config import ConfigError, MeshConfig, preset
from gpt2_jax.model import init_params

FSDP = "fsdp"
BATCH = ("data", "fsdp")

# The golden table: every parameter, every rule set. Changing a layout must change this table.
GOLDEN = {
    "dp": {
        "wte/embedding": P(None, None), "wpe/embedding": P(None, None),
        "ln_f/scale": P(None), "ln_f/bias": P(None),
        "h/ln_1/scale": P(None, None), "h/ln_1/bias": P(None, None),
        "h/ln_2/scale": P(None, None), "h/ln_2/bias": P(None, None),
        "h/attn/c_attn/kernel": P(None, None, None), "h/attn/c_attn/bias": P(None, None),
        "h/attn/c_proj/kernel": P(None, None, None), "h/attn/c_proj/bias": P(None, None),
        "h/mlp/c_fc/kernel": P(None, None, None), "h/mlp/c_fc/bias": P(None, None),
        "h/mlp/c_proj/kernel": P(None, None, None), "h/mlp/c_proj/bias": P(None, None),
    },
    "fsdp": {
        "wte/embedding": P(None, FSDP), "wpe/embedding": P(None, FSDP),
        "ln_f/scale": P(None), "ln_f/bias": P(None),
        "h/ln_1/scale": P(None, None), "h/ln_1/bias": P(None, None),
        "h/ln_2/scale": P(None, None), "h/ln_2/bias": P(None, None),
        "h/attn/c_attn/kernel": P(None, FSDP, None), "h/attn/c_attn/bias": P(None, None),
        "h/attn/c_proj/kernel": P(None, None, FSDP), "h/attn/c_proj/bias": P(None, None),
        "h/mlp/c_fc/kernel": P(None, FSDP, None), "h/mlp/c_fc/bias": P(None, None),
        "h/mlp/c_proj/kernel": P(None, None, FSDP), "h/mlp/c_proj/bias": P(None, None),
    },
    "fsdp_tp": {
        "wte/embedding": P("tensor", FSDP), "wpe/embedding": P(None, FSDP),
        "ln_f/scale": P(None), "ln_f/bias": P(None),
        "h/ln_1/scale": P(None, None), "h/ln_1/bias": P(None, None),
        "h/ln_2/scale": P(None, None), "h/ln_2/bias": P(None, None),
        "h/attn/c_attn/kernel": P(None, FSDP, "tensor"), "h/attn/c_attn/bias": P(None, "tensor"),
        "h/attn/c_proj/kernel": P(None, "tensor", FSDP), "h/attn/c_proj/bias": P(None, None),
        "h/mlp/c_fc/kernel": P(None, FSDP, "tensor"), "h/mlp/c_fc/bias": P(None, "tensor"),
        "h/mlp/c_proj/kernel": P(None, "tensor", FSDP), "h/mlp/c_proj/bias": P(None, None),
    },
}


@pytest.fixture(scope="module")
def gpt2_shapes():
    return jax.eval_shape(lambda: init_params(preset("gpt2"), jax.random.PRNGKey(0)))


@pytest.mark.parametrize("rules", sorted(GOLDEN))
def test_golden_partition_specs(gpt2_shapes, rules):
    specs = sharding.param_specs(gpt2_shapes, rules)
    flat = {sharding._path_str(p): s for p, s in jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda x: isinstance(x, P))[0]}
    assert flat == GOLDEN[rules]


def test_mesh_resolves_minus_one_and_uses_auto_axes():
    mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=-1, tensor=2, rules="fsdp_tp"))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    assert sharding.batch_sharding(mesh).spec == P(BATCH, None)


@pytest.mark.parametrize("mesh, needle", [
    (MeshConfig(data=3, fsdp=1), "= 3 devices, but 8 are available"),
    (MeshConfig(data=3, fsdp=-1), "leave 8/3 devices"),
    (MeshConfig(data=-1, fsdp=-1), "at most one axis may be -1"),
    (MeshConfig(data=1, fsdp=4, tensor=2, rules="fsdp"), "shards nothing over 'tensor'"),
    (MeshConfig(data=1, fsdp=4, tensor=2, rules="dp"), "shards nothing over 'tensor'"),
])
def test_bad_meshes_are_clear_errors(mesh, needle):
    with pytest.raises(ConfigError) as e:
        sharding.make_mesh(mesh)
    assert needle in str(e.value)


def test_unknown_rule_set_is_rejected():
    with pytest.raises(ConfigError, match="mesh.rules='zero3' is not one of"):
        MeshConfig(rules="zero3")


def test_head_count_that_does_not_divide_tensor_suggests_a_mesh():
    xl = preset("gpt2-xl")  # 25 heads
    shapes = jax.eval_shape(lambda: init_params(xl, jax.random.PRNGKey(0)))
    mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=4, tensor=2, rules="fsdp_tp"))
    with pytest.raises(ConfigError) as e:
        sharding.param_shardings(shapes, xl, mesh, "fsdp_tp")
    message = str(e.value)
    assert "model.n_head=25 is not divisible by mesh.tensor=2" in message and "mesh.tensor in [1]" in message


def test_indivisible_parameter_dimension_is_named():
    from gpt2_jax.config import ModelConfig

    odd = ModelConfig(n_vocab=500, n_ctx=36, n_embd=36, n_head=3, n_layer=1, vocab_multiple=4)
    shapes = jax.eval_shape(lambda: init_params(odd, jax.random.PRNGKey(0)))
    mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=8))
    with pytest.raises(ConfigError, match=r"parameter h/attn/c_attn/kernel dimension 36 is not divisible by mesh fsdp=8"):
        sharding.param_shardings(shapes, odd, mesh, "fsdp")
