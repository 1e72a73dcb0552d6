"""TPU slices by name, as devices that a step can be compiled for on any host (no TPU needed).

libtpu, the TPU compiler, describes any TPU topology on a CPU-only host:
`jax.experimental.topologies.get_topology_desc(platform="tpu", topology_name=...)` returns
compile-only devices that a Mesh accepts and `jit(...).lower(...).compile()` compiles for. This
module turns the names users know into those devices:

  v5e:2x2, v5e:16x16, v6e:8x8, v4:2x2x4, v5p:8x8x16   generation and chip grid (Cloud TPU topology)
  v5e-16, v5litepod-16, v6e-64, v4-32, v5p-1024       accelerator types: the number counts chips on
                                                       v5e/v6e and TensorCores (2 per chip) on v4/v5p

A slice's chips form a 2D grid (v5e, v6e) or a 3D one (v4, v5p); an accelerator type maps to
the shape Cloud TPU provisions for that size. `slices` > 1 gives several such slices joined by
the data-center network (DCN); their devices carry `slice_index`, which sharding.make_mesh uses
for a hybrid mesh.

References:
  Cloud TPU docs: "TPU v4", "TPU v5e", "TPU v5p", "TPU v6e" (topologies and accelerator types).
  MaxText, MaxText/train_compile.py (ahead-of-time compilation for a topology).
  jax/experimental/topologies.py (get_topology_desc).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

from gpt2_jax.config import ConfigError

# generation -> (grid dimensions, TensorCores counted per chip in accelerator-type names)
GENERATIONS = {"v4": (3, 2), "v5e": (2, 1), "v5p": (3, 2), "v6e": (2, 1)}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6litepod": "v6e", "v6lite": "v6e"}
HOST_BOUNDS = (2, 2, 1)  # chips per host used for the description: 4, as on multi-host slices
FORMS = "v5e:2x2, v5e:16x16, v4:2x2x4, v5p:8x8x16, v6e:8x8, or an accelerator type like v5e-16, v5p-1024"


@dataclasses.dataclass(frozen=True)
class Slice:
    generation: str  # "v4" | "v5e" | "v5p" | "v6e"
    grid: tuple[int, ...]  # chips per dimension

    @property
    def chips(self) -> int:
        return math.prod(self.grid)

    @property
    def name(self) -> str:
        return f"{self.generation}:{'x'.join(map(str, self.grid))}"


def parse(name: str) -> Slice:
    """`v5e:4x4` or `v5e-16` (see the module docstring) -> Slice; a clear error otherwise."""
    text = name.strip().lower()
    grid_form = re.fullmatch(r"([a-z0-9]+):(\d+(?:x\d+)*)", text)
    type_form = re.fullmatch(r"([a-z0-9]+?)-(\d+)", text)
    if not (grid_form or type_form):
        raise ConfigError(f"--topology {name!r} is not a TPU topology name; use {FORMS}")
    generation = (grid_form or type_form).group(1)
    generation = _ALIASES.get(generation, generation)
    if generation not in GENERATIONS:
        raise ConfigError(f"--topology {name!r}: unknown TPU generation {generation!r}; choose one of "
                          f"{sorted(GENERATIONS)} ({FORMS})")
    dims, cores_per_chip = GENERATIONS[generation]
    if grid_form:
        grid = tuple(int(x) for x in grid_form.group(2).split("x"))
        if len(grid) != dims or min(grid) < 1:
            raise ConfigError(f"--topology {name!r}: {generation} slices are {dims}D grids of chips, e.g. "
                              f"{generation}:{'x'.join(['2'] * (dims - 1) + ['4'])}")
        return Slice(generation, grid)
    count = int(type_form.group(2))
    if count % cores_per_chip:
        raise ConfigError(f"--topology {name!r}: {generation} accelerator types count TensorCores, "
                          f"{cores_per_chip} per chip; use an even number")
    return Slice(generation, _grid_for(generation, count // cores_per_chip, name))


def _grid_for(generation: str, chips: int, name: str) -> tuple[int, ...]:
    """The chip grid Cloud TPU provisions for a slice of `chips` chips (powers of two)."""
    if chips < 1 or chips & (chips - 1):
        raise ConfigError(f"--topology {name!r}: {chips} chips is not a power of two; give the grid "
                          f"instead, e.g. {generation}:4x4")
    k = chips.bit_length() - 1
    dims = GENERATIONS[generation][0]
    if dims == 2:  # 1x1, 2x2, 2x4, 4x4, 4x8, 8x8, 8x16, 16x16
        return (1 << (k // 2), 1 << (k - k // 2)) if k else (1, 1)
    if chips < 4:
        raise ConfigError(f"--topology {name!r}: the smallest {generation} slice has 4 chips ({generation}:2x2x1)")
    # Exponents spread evenly over 3 dims, ascending (2x2x2, 2x2x4, 2x4x4, 4x4x4, ...); 4 chips = 2x2x1.
    exponents = sorted(k // 3 + (1 if i < k % 3 else 0) for i in range(3))
    grid = [1 << e for e in exponents]
    return tuple(grid[1:] + grid[:1]) if grid[0] == 1 else tuple(grid)


def devices(name: str, slices: int = 1) -> list:
    """Compile-only TPU devices of `slices` slices of topology `name` (needs libtpu)."""
    if slices < 1:
        raise ConfigError(f"--slices {slices} must be >= 1")
    spec = parse(name)
    # libtpu lets one process at a time hold a TPU (a lock file in /tmp). Describing a topology
    # touches no chip, so compile-only processes need not queue behind each other or a training
    # run on the same VM.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        from jax.experimental import topologies

        grid3 = tuple(spec.grid) + (1,) * (3 - len(spec.grid))
        bounds = tuple(min(h, g) for h, g in zip(HOST_BOUNDS, grid3))
        desc = topologies.get_topology_desc(
            platform="tpu", topology_name=spec.name,
            chip_config_name="megacore" if spec.generation == "v4" else "default",  # one device per v4 chip, as JAX on a v4 VM
            chips_per_host_bounds=bounds, num_slices=slices, wrap=(False, False, False))
    except (ImportError, RuntimeError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = ("install the TPU compiler: pip install 'jax[tpu]==<your jax version>' (README, Planning a pod run)"
                if "libtpu" in first_line.lower() or "tpu" not in first_line.lower() or "not found" in first_line.lower()
                else "check the topology name")
        raise ConfigError(f"cannot describe TPU topology {spec.name} x {slices} slice(s): {first_line}; {hint}") from None
    return list(desc.devices)
