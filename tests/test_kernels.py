"""Pallas flash attention (gpt2_jax/kernels) against the reference attention, in interpret mode.

Both lowerings run on this CPU: the GPU (Triton) kernels in Pallas' interpreter, the TPU
(Mosaic) kernels in TPU interpret mode. Each case checks the output and dq, dk, dv against
`reference_attention` on the same inputs (with dropout: on the very mask the kernel used).
Tolerances: fp32 5e-5 absolute (observed ~2e-6: only summation order differs); bf16 inputs
3e-2 against an fp32 reference of the same bf16 values (observed <= 1.6e-2: the kernels round
probabilities to bf16 before the PV matmul, as every bf16 flash kernel does).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2_jax import sharding
from gpt2_jax.attention import causal_mask, dot_product_attention, reference_attention
from gpt2_jax.config import MeshConfig
from gpt2_jax.kernels import BlockSizes, KernelConfigError, flash_attention, keep_mask, seed_from_key

SMALL_GPU_BLOCKS = BlockSizes(block_q=32, block_k=16, block_q_dkv=16, block_k_dkv=32, block_q_dq=32, block_k_dq=16)
TOLERANCE = {jnp.float32: 5e-5, jnp.bfloat16: 3e-2}


def _inputs(T, dtype, segments, B=2, N=3, H=32, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 5)
    q, k, v = (jax.random.normal(key, (B, T, N, H), jnp.float32).astype(dtype) for key in keys[:3])
    d_out = jax.random.normal(keys[3], (B, T, N, H), jnp.float32).astype(dtype)
    seg = None
    if segments:  # documents of random lengths packed into each row
        seg = jnp.cumsum(jax.random.bernoulli(keys[4], 0.08, (B, T)), axis=1).astype(jnp.int32)
    return q, k, v, d_out, seg


def _reference(q, k, v, causal, seg, keep, rate):
    T = q.shape[1]
    mask = causal_mask(jnp.arange(T), jnp.arange(T))[None, None] if causal else None
    if seg is not None:
        same = seg[:, None, :, None] == seg[:, None, None, :]
        mask = same if mask is None else mask & same
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    return reference_attention(*f32, mask, dropout_rate=rate, dropout_keep=keep)


CASES = [
    # backend, T, causal, segment ids, dropout, dtype
    ("gpu", 64, True, False, 0.0, jnp.float32),
    ("gpu", 50, False, False, 0.0, jnp.float32),  # T not a multiple of the blocks: padded, masked
    ("gpu", 96, True, True, 0.0, jnp.float32),
    ("gpu", 40, True, False, 0.0, jnp.bfloat16),
    ("gpu", 80, False, True, 0.0, jnp.bfloat16),
    ("gpu", 96, True, True, 0.2, jnp.float32),
    ("tpu", 256, True, False, 0.0, jnp.float32),  # 2 x 2 tiles of 128: the causal skip and clamps
    ("tpu", 130, True, True, 0.2, jnp.float32),
    ("tpu", 100, False, False, 0.0, jnp.bfloat16),
]


CASE_IDS = [f"{c[0]}-T{c[1]}-{'causal' if c[2] else 'full'}{'-seg' if c[3] else ''}"
            f"{'-drop' if c[4] else ''}-{jnp.dtype(c[5]).name}" for c in CASES]


def _check_case(backend, T, causal, segments, rate, dtype, *, interpret, tolerance):
    q, k, v, d_out, seg = _inputs(T, dtype, segments)
    seed = jnp.int32(1234)
    blocks = SMALL_GPU_BLOCKS if backend == "gpu" else None

    def kernel(q, k, v):
        return flash_attention(q, k, v, causal=causal, segment_ids=seg, dropout_rate=rate, dropout_seed=seed,
                               block_sizes=blocks, backend=backend, interpret=interpret)

    keep = keep_mask(seed, q.shape[0], q.shape[2], T, rate) if rate else None
    out, vjp = jax.vjp(kernel, q, k, v)
    want, want_vjp = jax.vjp(lambda q, k, v: _reference(q, k, v, causal, seg, keep, rate), q, k, v)
    assert out.shape == q.shape and out.dtype == q.dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), want, atol=tolerance, rtol=0)
    for name, got, ref in zip(("dq", "dk", "dv"), vjp(d_out), want_vjp(d_out.astype(jnp.float32))):
        assert got.dtype == q.dtype, name
        np.testing.assert_allclose(np.asarray(got, np.float32), ref, atol=tolerance * 4, rtol=0, err_msg=name)


@pytest.mark.parametrize("backend,T,causal,segments,rate,dtype", CASES, ids=CASE_IDS)
def test_forward_and_gradients_match_reference(backend, T, causal, segments, rate, dtype):
    _check_case(backend, T, causal, segments, rate, dtype, interpret=True, tolerance=TOLERANCE[dtype])


def _on_hardware(backend):
    if jax.default_backend() != backend:
        pytest.fail(f"this test compiles the {backend} kernels for real and needs a {backend}; "
                    f"this machine's JAX backend is {jax.default_backend()}")


@pytest.mark.gpu
@pytest.mark.parametrize("backend,T,causal,segments,rate,dtype", [c for c in CASES if c[0] == "gpu"],
                         ids=[i for i in CASE_IDS if i.startswith("gpu")])
def test_gpu_kernels_compiled_for_real_match_reference(backend, T, causal, segments, rate, dtype):
    _on_hardware("gpu")  # fp32 matmuls may run in TF32 on the GPU: looser bound
    _check_case(backend, T, causal, segments, rate, dtype, interpret=False, tolerance=2e-2 if dtype == jnp.float32 else 3e-2)


@pytest.mark.tpu
@pytest.mark.parametrize("backend,T,causal,segments,rate,dtype", [c for c in CASES if c[0] == "tpu"],
                         ids=[i for i in CASE_IDS if i.startswith("tpu")])
def test_tpu_kernels_compiled_for_real_match_reference(backend, T, causal, segments, rate, dtype):
    _on_hardware("tpu")  # the MXU multiplies fp32 in bf16 passes by default: looser bound
    _check_case(backend, T, causal, segments, rate, dtype, interpret=False, tolerance=3e-2)


def test_dropout_mask_is_independent_of_tiling_and_has_the_right_rate():
    q, k, v, d_out, _ = _inputs(64, jnp.float32, False)
    seed = jnp.int32(7)

    def grads(blocks):
        f = lambda q, k, v: flash_attention(q, k, v, dropout_rate=0.3, dropout_seed=seed,  # noqa: E731
                                            block_sizes=blocks, backend="gpu", interpret=True)
        out, vjp = jax.vjp(f, q, k, v)
        return out, vjp(d_out)

    a, b = grads(SMALL_GPU_BLOCKS), grads(BlockSizes(block_q=16, block_k=64, block_q_dkv=64, block_k_dkv=16,
                                                         block_q_dq=16, block_k_dq=64))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, atol=5e-6)
    keep = keep_mask(seed, 4, 4, 256, 0.3)
    assert abs(float(keep.mean()) - 0.7) < 0.005
    assert not bool((keep_mask(jnp.int32(8), 4, 4, 256, 0.3) == keep).all())  # another seed, another mask


def test_sharded_pallas_attention_equals_unsharded_with_dropout():
    """Under data2 x fsdp2 x tensor2, each device runs the kernel on its batch/head block; the
    shard offsets keep the dropout mask, and so the result, identical to one device's."""
    mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2, rules="fsdp_tp"))
    q, k, v, _, _ = _inputs(48, jnp.float32, False, B=4, N=4, H=16)
    rng = jax.random.PRNGKey(3)

    def loss(q, k, v):
        out = dot_product_attention(q, k, v, dropout_rate=0.1, dropout_rng=rng, impl="pallas")
        return jnp.sum(out * out)

    def sharded(q, k, v):
        with sharding.activation_rules(mesh, "fsdp_tp"):
            return jax.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v)

    plain = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)
    split = jax.jit(sharded)(q, k, v)
    np.testing.assert_allclose(split[0], plain[0], rtol=1e-6)
    for x, y in zip(split[1], plain[1]):
        np.testing.assert_allclose(x, y, atol=1e-5)
    keep = keep_mask(seed_from_key(rng), 4, 4, 48, 0.1)
    want = reference_attention(q, k, v, causal_mask(jnp.arange(48), jnp.arange(48))[None, None],
                               dropout_rate=0.1, dropout_keep=keep)
    got = dot_product_attention(q, k, v, dropout_rate=0.1, dropout_rng=rng, impl="pallas")
    np.testing.assert_allclose(got, want, atol=5e-6)


def test_dispatcher_pallas_equals_xla():
    q, k, v, _, seg = _inputs(40, jnp.float32, True)
    for causal in (True, False):
        got = dot_product_attention(q, k, v, causal=causal, segment_ids=seg, impl="pallas")
        want = dot_product_attention(q, k, v, causal=causal, segment_ids=seg, impl="xla")
        np.testing.assert_allclose(got, want, atol=5e-6)
    assert jnp.array_equal(dot_product_attention(q, k, v, impl="auto"), dot_product_attention(q, k, v, impl="xla"))


@pytest.mark.parametrize("call,needle", [
    (lambda q: flash_attention(q, q[:, :8], q), "one shape [B, T, N, H]"),
    (lambda q: flash_attention(q, q, q.astype(jnp.bfloat16)), "one dtype"),
    (lambda q: flash_attention(q.astype(jnp.int32), q.astype(jnp.int32), q.astype(jnp.int32)), "one dtype"),
    (lambda q: flash_attention(*(jnp.zeros((1, 16, 1, 512)),) * 3), "head size 512 cannot be tiled"),
    (lambda q: flash_attention(q, q, q, dropout_rate=0.1), "needs a dropout_seed"),
    (lambda q: flash_attention(q, q, q, dropout_rate=1.0, dropout_seed=jnp.int32(0)), "must be in [0, 1)"),
    (lambda q: flash_attention(q, q, q, segment_ids=jnp.zeros((2, 5), jnp.int32)), "segment_ids must be"),
    (lambda q: flash_attention(q, q, q, block_sizes=BlockSizes(block_q=24)), "power of two >= 16"),
    (lambda q: flash_attention(q, q, q, block_sizes=BlockSizes(block_k=64), backend="tpu"), "multiple of 128"),
    (lambda q: flash_attention(q, q, q, backend="cuda"), "backend='cuda'"),
    (lambda q: dot_product_attention(q, q, q, impl="flash"), "impl='flash'"),
    (lambda q: dot_product_attention(q, q, q, dropout_rate=0.1), "needs a dropout_rng"),
    (lambda q: dot_product_attention(q, q, q, impl="cudnn"), "needs an NVIDIA GPU"),
    (lambda q: dot_product_attention(q, q, q, impl="cudnn", dropout_rate=0.1, dropout_rng=jax.random.PRNGKey(0)),
     "needs an NVIDIA GPU"),  # on a GPU target: "cannot run ... attn_pdrop" (test_target.py)
])
def test_bad_input_is_a_clear_error(call, needle):
    q = jnp.zeros((2, 16, 2, 32), jnp.float32)
    with pytest.raises(ValueError, match=None) as err:
        call(q)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_block_sizes_shrink_for_short_sequences():
    blocks, padded = BlockSizes().fitted("gpu", 40)
    assert padded == 64 and max(blocks.block_q, blocks.block_k_dkv, blocks.block_q_dq) == 64
    assert BlockSizes.default("tpu").fitted("tpu", 130)[1] == 256
    assert isinstance(KernelConfigError("x"), ValueError)


@pytest.mark.parametrize("platform,rate,dtype,want", [
    ("tpu", 0.0, "float32", "pallas"), ("tpu", 0.1, "bfloat16", "pallas"), ("gpu", 0.0, "bfloat16", "cudnn"),
    ("gpu", 0.0, "float32", "pallas"), ("gpu", 0.1, "bfloat16", "pallas"), ("cpu", 0.1, "bfloat16", "xla"),
])
def test_auto_picks_per_target(platform, rate, dtype, want):
    from gpt2_jax import attention, target

    where = target.Target(platform, {"tpu": "TPU v5 lite", "gpu": "NVIDIA H100 80GB HBM3", "cpu": "cpu"}[platform])
    assert attention.resolve_impl("auto", rate, dtype=dtype, target=where) == want
    assert attention.resolve_impl("xla", rate, dtype=dtype, target=where) == "xla"
    with target.building_for(where):  # what a step built for those devices sees while it is traced
        assert attention.resolve_impl("auto", rate, dtype=dtype) == want