"""Logical-axis sharding: parameter and activation dimensions get names, rule sets map names to
mesh axes, and one table says which names every GPT-2 parameter has.

The mesh has three axes, always in this order: `data` (pure data parallelism), `fsdp` (data
parallelism whose parameters and optimizer state are sharded, ZeRO-3 style) and `tensor`
(Megatron-style model parallelism inside matmuls). The batch is split over data x fsdp.

Parameter table (logical axes; with scanned layers a leading `layers` axis is added to `h/*`):

  parameter                 logical axes        dp      fsdp            fsdp_tp
  wte/embedding [V, D]      (vocab, embed)      -       (-, fsdp)       (tensor, fsdp)
  wpe/embedding [C, D]      (ctx, embed)        -       (-, fsdp)       (-, fsdp)
  ln_*/{scale,bias} [D]     (norm,)             -       -               -
  attn/c_attn/kernel [D,3D] (embed, qkv)        -       (fsdp, -)       (fsdp, tensor)
  attn/c_attn/bias [3D]     (qkv,)              -       -               (tensor,)
  attn/c_proj/kernel [D,D]  (heads, embed)      -       (-, fsdp)       (tensor, fsdp)
  mlp/c_fc/kernel [D,F]     (embed, mlp)        -       (fsdp, -)       (fsdp, tensor)
  mlp/c_fc/bias [F]         (mlp,)              -       -               (tensor,)
  mlp/c_proj/kernel [F,D]   (mlp, embed)        -       (-, fsdp)       (tensor, fsdp)
  */c_proj/bias [D]         (norm,)             -       -               -

Activations use their own names (`act_*`) so that, under fsdp, parameters can be sharded along
`embed` while activations are sharded along the batch only. `c_attn`'s 3D output columns are
ordered q | k | v (the OpenAI/Hugging Face layout, kept for interchange), so under tensor
parallelism XLA regroups its weight columns by head once per step; heads themselves must divide
the tensor axis, which is checked with a message that proposes a mesh that works.

References:
  MaxText logical axis rules (maxtext/configs/base.yml, logical_axis_rules).
  Xu et al. 2021, "GSPMD"; Rajbhandari et al. 2020, "ZeRO" (fsdp); Shoeybi et al. 2019, "Megatron-LM".
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from gpt2_jax.config import ConfigError, MeshConfig, ModelConfig

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Every logical name, parameter and activation; rule sets map a subset to mesh axes.
LOGICAL_AXES = ("vocab", "ctx", "embed", "qkv", "heads", "mlp", "norm", "layers",
                "act_batch", "act_length", "act_embed", "act_heads", "act_mlp", "act_vocab")

_BATCH = {"act_batch": BATCH_AXES}
RULE_SETS: dict[str, dict[str, Any]] = {
    "dp": dict(_BATCH),
    "fsdp": {**_BATCH, "embed": "fsdp"},
    "fsdp_tp": {**_BATCH, "embed": "fsdp", "vocab": "tensor", "qkv": "tensor", "heads": "tensor", "mlp": "tensor",
                "act_heads": "tensor", "act_mlp": "tensor", "act_vocab": "tensor"},
}

# parameter path (inside one layer for h/*) -> logical axes of its dimensions
PARAM_AXES: dict[str, tuple[str, ...]] = {
    "wte/embedding": ("vocab", "embed"),
    "wpe/embedding": ("ctx", "embed"),
    "lm_head/kernel": ("embed", "vocab"),  # only with model.tied_embeddings=false
    "ln_f/scale": ("norm",),
    "ln_f/bias": ("norm",),
    "h/ln_1/scale": ("norm",),
    "h/ln_1/bias": ("norm",),
    "h/ln_2/scale": ("norm",),
    "h/ln_2/bias": ("norm",),
    "h/attn/c_attn/kernel": ("embed", "qkv"),
    "h/attn/c_attn/bias": ("qkv",),
    "h/attn/c_proj/kernel": ("heads", "embed"),
    "h/attn/c_proj/bias": ("norm",),
    "h/mlp/c_fc/kernel": ("embed", "mlp"),
    "h/mlp/c_fc/bias": ("mlp",),
    "h/mlp/c_proj/kernel": ("mlp", "embed"),
    "h/mlp/c_proj/bias": ("norm",),
}


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)


def rules(name: str) -> dict[str, Any]:
    if name not in RULE_SETS:
        raise ConfigError(f"unknown sharding rule set mesh.rules={name!r}; choose one of {sorted(RULE_SETS)}")
    return RULE_SETS[name]


def mesh_shape(cfg: MeshConfig, n_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) with one -1 resolved to the devices left over."""
    sizes = [cfg.data, cfg.fsdp, cfg.tensor]
    fixed = math.prod(s for s in sizes if s != -1)
    if sizes.count(-1) > 1:
        raise ConfigError(f"mesh data={cfg.data} fsdp={cfg.fsdp} tensor={cfg.tensor}: at most one axis may be -1")
    if -1 in sizes:
        if n_devices % fixed:
            raise ConfigError(f"mesh axes {dict(zip(MESH_AXES, sizes))} leave {n_devices}/{fixed} devices for the -1 axis; "
                              f"choose sizes whose product divides {n_devices}")
        sizes[sizes.index(-1)] = n_devices // fixed
    if math.prod(sizes) != n_devices:
        raise ConfigError(f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} = {math.prod(sizes)} devices, "
                          f"but {n_devices} are available; make the product {n_devices} (or set one axis to -1)")
    return tuple(sizes)


def slice_count(devices: list) -> int:
    """How many TPU slices (joined by the data-center network) the devices span; 1 elsewhere."""
    return len({getattr(d, "slice_index", 0) for d in devices})


def make_mesh(cfg: MeshConfig, devices: list | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axis types (pjit-style automatic sharding).

    Devices in several slices get a hybrid mesh: the (data, fsdp, tensor) shape is laid out
    within each slice (over ICI) and `data` is multiplied by the slice count across slices (over
    DCN), so only data-parallel gradient reductions cross the slow network (MaxText's
    dcn_data_parallelism; jax.experimental.mesh_utils.create_hybrid_device_mesh)."""
    devices = jax.devices() if devices is None else list(devices)
    slices = slice_count(devices)
    dcn = cfg.dcn_data or slices
    if dcn != slices:
        raise ConfigError(f"mesh.dcn_data={cfg.dcn_data} but the devices span {slices} slice(s); set "
                          f"mesh.dcn_data={slices} (or 0: one data-parallel group per slice)")
    shape = mesh_shape(cfg, len(devices) // slices)
    rule_set = rules(cfg.rules)
    used = {a for v in rule_set.values() for a in (v if isinstance(v, tuple) else (v,))}
    for axis, size in zip(MESH_AXES, shape):
        if size > 1 and axis not in used:
            raise ConfigError(f"mesh.{axis}={size} but rule set {cfg.rules!r} shards nothing over {axis!r}; "
                              f"set mesh.{axis}=1 or use mesh.rules=fsdp_tp")
    if slices == 1:
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)
    from jax.experimental import mesh_utils

    grid = mesh_utils.create_hybrid_device_mesh(shape, (dcn, 1, 1), devices=devices, allow_split_physical_axes=True)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def logical_to_spec(logical: tuple[str | None, ...], rule_set: dict[str, Any]) -> PartitionSpec:
    return PartitionSpec(*(rule_set.get(name) if name else None for name in logical))


def param_logical_axes(params: Any) -> Any:
    """The tree of logical axes for a parameter tree (abstract or real)."""

    def lookup(path, leaf):
        key = _path_str(path)
        if key not in PARAM_AXES:
            raise KeyError(f"parameter {key!r} has no entry in sharding.PARAM_AXES")
        axes = PARAM_AXES[key]
        if len(axes) == leaf.ndim - 1 and key.startswith("h/"):
            axes = ("layers",) + axes  # stacked by nn.scan
        if len(axes) != leaf.ndim:
            raise ValueError(f"parameter {key!r} has {leaf.ndim} dims but PARAM_AXES names {len(axes)}")
        return axes

    return jax.tree_util.tree_map_with_path(lookup, params)


def param_specs(params: Any, rule_name: str) -> Any:
    rule_set = rules(rule_name)
    return jax.tree_util.tree_map(lambda axes: logical_to_spec(axes, rule_set), param_logical_axes(params),
                                  is_leaf=lambda x: isinstance(x, tuple))


def check_divisible(params: Any, model: ModelConfig, mesh: Mesh, rule_name: str) -> None:
    """Every sharded dimension must divide evenly; the error names the parameter and a fix."""
    sizes = dict(mesh.shape)
    tensor = sizes["tensor"]
    if tensor > 1 and model.n_head % tensor:
        options = [t for t in range(1, model.n_head + 1) if model.n_head % t == 0 and mesh.size % t == 0]
        raise ConfigError(
            f"model.n_head={model.n_head} is not divisible by mesh.tensor={tensor}; use mesh.tensor in {options} "
            f"(e.g. mesh.tensor={max(options)} mesh.fsdp=-1)"
        )
    specs = param_specs(params, rule_name)
    for (path, leaf), spec in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree_util.tree_leaves(
            specs, is_leaf=lambda x: isinstance(x, PartitionSpec))):
        for dim, axes in zip(leaf.shape, spec):
            if axes is None:
                continue
            n = math.prod(sizes[a] for a in (axes if isinstance(axes, tuple) else (axes,)))
            if dim % n:
                hint = ""
                if axes == "fsdp":  # the largest fsdp that divides both the dimension and the slice
                    per_slice = mesh.size // slice_count(list(mesh.devices.flat)) // sizes["tensor"]
                    fit = max(f for f in range(1, n + 1) if dim % f == 0 and per_slice % f == 0)
                    hint = f" (e.g. mesh.data={per_slice // fit} mesh.fsdp={fit})"
                raise ConfigError(f"parameter {_path_str(path)} dimension {dim} is not divisible by mesh {axes}={n}; "
                                  f"choose a mesh whose {axes} size divides {dim}{hint}")


def param_shardings(params: Any, model: ModelConfig, mesh: Mesh, rule_name: str) -> Any:
    check_divisible(params, model, mesh, rule_name)
    return jax.tree_util.tree_map(lambda spec: NamedSharding(mesh, spec), param_specs(params, rule_name),
                                  is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches [B, T+1] split over data x fsdp."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, None))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


# ----------------------------------------------------------------------------------------------
# activation constraints: active only while a step is traced inside `activation_rules(...)`

_ACTIVE: contextvars.ContextVar[tuple[Mesh, dict] | None] = contextvars.ContextVar("gpt2_jax_sharding", default=None)


@contextlib.contextmanager
def activation_rules(mesh: Mesh | None, rule_name: str):
    token = _ACTIVE.set(None if mesh is None else (mesh, rules(rule_name)))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def constrain(x: jax.Array, logical: tuple[str | None, ...]) -> jax.Array:
    """with_sharding_constraint by logical names; a no-op outside `activation_rules`."""
    placed = active_spec(logical)
    if placed is None:
        return x
    mesh, spec = placed
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def active_spec(logical: tuple[str | None, ...]) -> tuple[Mesh, PartitionSpec] | None:
    """The mesh and PartitionSpec an activation with these logical axes gets while a step is
    traced inside `activation_rules`; None outside. For code that must see local shards
    (custom kernels under shard_map)."""
    active = _ACTIVE.get()
    if active is None:
        return None
    mesh, rule_set = active
    return mesh, logical_to_spec(logical, rule_set)


def describe(mesh: Mesh) -> str:
    return " x ".join(f"{a}={s}" for a, s in mesh.shape.items()) + f" ({np.prod(list(mesh.shape.values()))} devices)"
