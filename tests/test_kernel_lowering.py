"""The flash attention kernels lower for real hardware from this CPU: `jax.export` for "cuda"
runs Pallas' Triton lowering (the custom call carries Triton IR) and for "tpu" runs the Mosaic
lowering. This catches primitives or shapes a backend's lowering rejects (say, a non-power-of-two
Triton tile) without a device; compiling that IR to machine code still needs one (`-m gpu`/`tpu`).

From jax 0.11 the Triton lowering asks which GPU it targets (compute capability from the device
kind) and, in a CPU-only process, reads it from an abstract mesh's `AbstractDevice`; the "cuda"
cases therefore lower inside `use_abstract_mesh` with an H100 as the target. jax 0.10 ignores it.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import pytest
from jax import export

from gpt2_jax.kernels import flash_attention

# Triton calls have no serialization-compatibility guarantee; we only lower, never serialize.
_CHECKS = [export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
_KERNEL_CALL = {"cuda": "xla.gpu.triton", "tpu": "tpu_custom_call"}


def _target(platform: str):
    """The context that names the device a CPU-only process lowers for (see the docstring)."""
    if platform != "cuda":
        return contextlib.nullcontext()
    h100 = jax.sharding.AbstractDevice(device_kind="NVIDIA H100 80GB HBM3", num_cores=132, platform="cuda")
    return jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((1,), ("x",), abstract_device=h100))

CASES = [
    # T, H, dtype, causal, segment ids, dropout
    (1024, 64, jnp.bfloat16, True, False, 0.0),  # GPT-2's training shape
    (1024, 64, jnp.bfloat16, True, True, 0.1),
    (1000, 48, jnp.float32, False, True, 0.1),  # padded T, head size padded for Triton
    (2048, 128, jnp.float16, True, False, 0.0),
]


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("T,H,dtype,causal,segments,rate", CASES,
                         ids=[f"T{c[0]}-H{c[1]}-{jnp.dtype(c[2]).name}{'-causal' if c[3] else ''}"
                              f"{'-seg' if c[4] else ''}{'-drop' if c[5] else ''}" for c in CASES])
def test_forward_and_backward_lower_for_the_device(platform, T, H, dtype, causal, segments, rate):
    backend = "gpu" if platform == "cuda" else "tpu"
    x = jax.ShapeDtypeStruct((2, T, 4, H), dtype)
    seg = jax.ShapeDtypeStruct((2, T), jnp.int32) if segments else None

    def loss(q, k, v, segment_ids):
        out = flash_attention(q, k, v, causal=causal, segment_ids=segment_ids, dropout_rate=rate,
                              dropout_seed=jnp.int32(1), backend=backend, interpret=False)
        return jnp.sum(out.astype(jnp.float32))

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    with _target(platform):
        module = export.export(step, platforms=(platform,), disabled_checks=_CHECKS)(x, x, x, seg).mlir_module()
    assert module.count(_KERNEL_CALL[platform]) == 3  # forward, dK/dV, dQ
