"""gpt2_jax.model: parameter counts, parity with Hugging Face, init, invariances, dropout, KV cache, dtypes."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2_jax.config import ModelConfig, preset
from gpt2_jax.export import load_hf_dir
from gpt2_jax.model import GPT, count_params, init_cache, init_params, non_embedding_params

F32_MIN = np.finfo(np.float32).min


def test_eight_cpu_devices():
    assert jax.default_backend() == "cpu"
    assert jax.device_count() == 8


# ----------------------------------------------------------------------------------------------
# parameter count


def test_gpt2_parameter_count():
    cfg = preset("gpt2")
    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    assert shapes["wte"]["embedding"].shape == (50304, 768)
    assert shapes["wpe"]["embedding"].shape == (1024, 768)
    assert shapes["h"]["attn"]["c_attn"]["kernel"].shape == (12, 768, 3 * 768)  # stacked [L, in, out]
    assert shapes["h"]["mlp"]["c_proj"]["kernel"].shape == (12, 4 * 768, 768)
    assert count_params(shapes, cfg) == 124_439_808  # Hugging Face GPT2LMHeadModel (tied head)
    assert count_params(shapes, cfg, include_padding=True) == 124_439_808 + (50304 - 50257) * 768
    # Kaplan et al.'s N: everything but the two embedding tables
    assert non_embedding_params(cfg) == 124_439_808 - 50257 * 768 - 1024 * 768 == 85_056_000
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(shapes))


# ----------------------------------------------------------------------------------------------
# logits parity with Hugging Face GPT2LMHeadModel (PyTorch CPU, float32)


def _assert_parity(config, params, hf, tokens, forward):
    ours = forward(config, params, tokens)
    ref = hf.logits(tokens)
    V = config.n_vocab
    assert ours.shape == (*tokens.shape, config.n_vocab_padded) and ours.dtype == np.float32
    assert ref.shape == (*tokens.shape, V)
    assert np.abs(ref).max() > 0.1  # a meaningful comparison, not two near-zero tensors
    np.testing.assert_allclose(ours[..., :V], ref, rtol=0, atol=1e-4)
    # padded vocabulary entries: float32 minimum, exactly zero probability
    assert (ours[..., V:] == F32_MIN).all()
    probs = np.asarray(jax.nn.softmax(jnp.asarray(ours), axis=-1))
    assert (probs[..., V:] == 0.0).all()
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    # our count (without padding) equals PyTorch's (which counts the tied head once)
    assert count_params(params, config) == sum(p.numel() for p in hf.model.parameters())


def test_parity_tiny(hf_tiny, tiny_config, tiny_params, tokens, forward):
    assert tiny_config.n_vocab_padded == 384
    _assert_parity(tiny_config, tiny_params, hf_tiny, tokens(tiny_config), forward)


@pytest.mark.parametrize(
    "hf_kwargs, batch, seq",
    [
        # odd sizes: 3 heads of 32, a vocabulary that is not a multiple of 128, the full context
        (dict(vocab_size=1000, n_positions=64, n_embd=96, n_layer=3, n_head=3), 1, 64),
        # GPT-2's real vocabulary: padded 50257 -> 50304
        (dict(vocab_size=50257, n_positions=32, n_embd=64, n_layer=1, n_head=2), 2, 16),
    ],
    ids=["odd", "vocab50257"],
)
def test_parity_small(tmp_path, hf_kwargs, batch, seq, tokens, forward, hf_reference):
    hf = hf_reference(tmp_path / "hf", seed=1, **hf_kwargs)
    config, params = load_hf_dir(hf.path)
    assert config.n_vocab == hf_kwargs["vocab_size"] and config.n_layer == hf_kwargs["n_layer"]
    _assert_parity(config, params, hf, tokens(config, batch, seq, seed=1), forward)


def test_parity_gpt2_124m(tmp_path, tokens, forward, hf_reference):
    """The real GPT-2 small shape with random weights (B=1, T=32)."""
    hf = hf_reference(tmp_path / "hf", seed=2, vocab_size=50257, initializer_range=0.02)  # GPT-2 small
    config, params = load_hf_dir(hf.path)
    assert config == preset("gpt2")
    _assert_parity(config, params, hf, tokens(config, 1, 32, seed=2), forward)


# ----------------------------------------------------------------------------------------------
# initialization


def test_init_statistics(init):
    cfg = ModelConfig(n_vocab=1000, n_ctx=64, n_embd=128, n_head=4, n_layer=3)
    params = jax.tree_util.tree_map(np.asarray, init(cfg, 0))
    h = params["h"]
    resid_std = 0.02 / math.sqrt(2 * cfg.n_layer)  # 0.00816 for L=3

    def check_normal(x, std, rel=0.03):
        x = x.ravel().astype(np.float64)
        assert abs(x.std() - std) < rel * std, (x.std(), std)
        assert abs(x.mean()) < 5 * std / math.sqrt(x.size), x.mean()

    for name, std in [(("attn", "c_attn"), 0.02), (("mlp", "c_fc"), 0.02),
                      (("attn", "c_proj"), resid_std), (("mlp", "c_proj"), resid_std)]:
        kernel = h[name[0]][name[1]]["kernel"]
        assert kernel.shape[0] == cfg.n_layer
        for layer in range(cfg.n_layer):  # every layer initialized, not only the first
            check_normal(kernel[layer], std, rel=0.05)
        check_normal(kernel, std)
        # layers get independent draws (the scan splits the params rng)
        assert not np.allclose(kernel[0], kernel[1])
        np.testing.assert_array_equal(h[name[0]][name[1]]["bias"], 0.0)

    # a normal, not a truncated normal or a uniform of the same scale: P(|x| < std) = 0.6827
    fc = h["mlp"]["c_fc"]["kernel"].ravel()
    assert abs(np.mean(np.abs(fc) < 0.02) - 0.6827) < 0.01

    for ln in (h["ln_1"], h["ln_2"], params["ln_f"]):
        np.testing.assert_array_equal(ln["scale"], 1.0)
        np.testing.assert_array_equal(ln["bias"], 0.0)

    wte = params["wte"]["embedding"]
    assert wte.shape == (1024, 128)
    check_normal(wte[: cfg.n_vocab], 0.02)
    np.testing.assert_array_equal(wte[cfg.n_vocab:], 0.0)  # padded rows exactly zero
    check_normal(params["wpe"]["embedding"], 0.02, rel=0.05)

    # a pure function of the rng
    again = jax.tree_util.tree_map(np.asarray, init(cfg, 0))
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, again)
    other = init(cfg, 1)
    assert not np.allclose(np.asarray(other["wpe"]["embedding"]), params["wpe"]["embedding"])


# ----------------------------------------------------------------------------------------------
# invariances: scan vs unrolled, remat vs none


def test_scan_and_unrolled_agree(tiny_config, tiny_params, tokens, forward):
    unrolled = dataclasses.replace(tiny_config, scan_layers=False)
    # same parameter tree, so checkpoints move between the two modes
    a = jax.tree_util.tree_structure(jax.eval_shape(lambda: init_params(tiny_config, jax.random.key(0))))
    b = jax.tree_util.tree_structure(jax.eval_shape(lambda: init_params(unrolled, jax.random.key(0))))
    assert a == b
    t = tokens(tiny_config)
    np.testing.assert_allclose(forward(unrolled, tiny_params, t), forward(tiny_config, tiny_params, t), rtol=0, atol=1e-6)


def _loss_fn(config):
    def loss(params, tokens):
        logits, _ = GPT(config).apply({"params": params}, tokens[:, :-1])
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1).mean()

    return loss


def _has_remat(jaxpr) -> bool:
    """Whether a jaxpr holds a jax.checkpoint region (the primitive is 'remat2' in jax 0.10,
    'checkpoint' in some other versions)."""
    text = str(jaxpr)
    return "remat" in text or "checkpoint[" in text


@pytest.fixture(scope="module")
def reference_grads(tiny_config, tiny_params, tokens):
    t = tokens(tiny_config)
    return jax.jit(jax.value_and_grad(_loss_fn(tiny_config)))(tiny_params, t)


@pytest.mark.parametrize("remat, scan", [("full", True), ("dots", True), ("full", False)])
def test_remat_same_loss_and_grads(remat, scan, tiny_config, tiny_params, tokens, reference_grads):
    cfg = dataclasses.replace(tiny_config, remat=remat, scan_layers=scan)
    t = tokens(tiny_config)
    loss_fn = _loss_fn(cfg)
    # the policy is really applied: the forward contains a checkpoint (remat) region
    assert _has_remat(jax.make_jaxpr(loss_fn)(tiny_params, t))
    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(tiny_params, t)
    ref_loss, ref_grads = reference_grads
    assert np.isfinite(float(ref_loss)) and float(ref_loss) > 1.0
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=0, atol=1e-5)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(ref_grads)
    for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=0, atol=1e-5)
    # gradients are not trivially zero (the comparison means something)
    assert float(jnp.abs(ref_grads["h"]["attn"]["c_attn"]["kernel"]).max()) > 1e-3


def test_no_remat_region_by_default(tiny_config, tiny_params, tokens):
    assert not _has_remat(jax.make_jaxpr(_loss_fn(tiny_config))(tiny_params, tokens(tiny_config)))


# ----------------------------------------------------------------------------------------------
# dropout


def test_dropout_reproducible_and_active(tiny_config, tiny_params, tokens, forward):
    assert tiny_config.embd_pdrop == tiny_config.attn_pdrop == tiny_config.resid_pdrop == 0.1
    t = tokens(tiny_config)
    det = forward(tiny_config, tiny_params, t)
    a = forward(tiny_config, tiny_params, t, deterministic=False, rng=jax.random.key(1))
    b = forward(tiny_config, tiny_params, t, deterministic=False, rng=jax.random.key(1))
    c = forward(tiny_config, tiny_params, t, deterministic=False, rng=jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - det)[..., : tiny_config.n_vocab].max() > 1e-2
    assert np.abs(a - c)[..., : tiny_config.n_vocab].max() > 1e-2
    assert (a[..., tiny_config.n_vocab:] == F32_MIN).all()


def test_dropout_needs_an_rng(tiny_config, tiny_params, tokens):
    with pytest.raises(Exception, match="dropout"):
        GPT(tiny_config).apply({"params": tiny_params}, tokens(tiny_config), deterministic=False)


@pytest.mark.parametrize("which", ["embd_pdrop", "attn_pdrop", "resid_pdrop"])
def test_each_dropout_is_wired(which, tiny_config, tiny_params, tokens, forward):
    rates = dict(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0) | {which: 0.5}
    cfg = dataclasses.replace(tiny_config, **rates)
    t = tokens(cfg)
    det = forward(tiny_config, tiny_params, t)  # deterministic: pdrop does not matter
    out = forward(cfg, tiny_params, t, deterministic=False, rng=jax.random.key(3))
    assert np.abs(out - det)[..., : cfg.n_vocab].max() > 1e-2


def test_zero_dropout_equals_deterministic(tiny_config, tiny_params, tokens, forward):
    cfg = dataclasses.replace(tiny_config, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    t = tokens(cfg)
    det = forward(tiny_config, tiny_params, t)
    out = forward(cfg, tiny_params, t, deterministic=False, rng=jax.random.key(4))
    np.testing.assert_allclose(out, det, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# KV cache decoding


@pytest.fixture(scope="module")
def cached_step(tiny_config):
    def step(params, tokens, cache, index):
        return GPT(tiny_config).apply({"params": params}, tokens, cache=cache, cache_index=index)

    return jax.jit(step)


def test_init_cache_shape(tiny_config):
    cache = init_cache(tiny_config, batch_size=3, max_len=20)
    L, N, H = tiny_config.n_layer, tiny_config.n_head, tiny_config.head_dim
    assert set(cache) == {"k", "v"}
    for x in cache.values():
        assert x.shape == (L, 3, 20, N, H) and x.dtype == jnp.float32
        assert not np.asarray(x).any()
    assert init_cache(dataclasses.replace(tiny_config, dtype="bfloat16"), 1, 4)["k"].dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="n_ctx"):
        init_cache(tiny_config, 1, tiny_config.n_ctx + 1)


def test_kv_cache_token_by_token(tiny_config, tiny_params, tokens, forward, cached_step):
    t = tokens(tiny_config)
    B, T = t.shape
    full = forward(tiny_config, tiny_params, t)
    cache = init_cache(tiny_config, B, T)
    for i in range(T):
        logits, cache = cached_step(tiny_params, t[:, i:i + 1], cache, jnp.int32(i))
        np.testing.assert_allclose(np.asarray(logits)[:, 0], full[:, i], rtol=0, atol=1e-5, err_msg=f"position {i}")
    assert cache["k"].shape == (tiny_config.n_layer, B, T, tiny_config.n_head, tiny_config.head_dim)
    for name in ("k", "v"):  # every position was written
        assert (np.abs(np.asarray(cache[name])).sum(axis=(0, 1, 3, 4)) > 0).all()


def test_kv_cache_prefill_then_steps(tiny_config, tiny_params, tokens, forward, cached_step):
    t = tokens(tiny_config, seed=5)
    B, T = t.shape
    full = forward(tiny_config, tiny_params, t)
    cache = init_cache(tiny_config, B, T)
    chunk = 5
    # two chunks (the second one at a non-zero cache_index), then single tokens
    for start in (0, chunk):
        logits, cache = cached_step(tiny_params, t[:, start:start + chunk], cache, jnp.int32(start))
        np.testing.assert_allclose(np.asarray(logits), full[:, start:start + chunk], rtol=0, atol=1e-5)
    for i in range(2 * chunk, T):
        logits, cache = cached_step(tiny_params, t[:, i:i + 1], cache, jnp.int32(i))
        np.testing.assert_allclose(np.asarray(logits)[:, 0], full[:, i], rtol=0, atol=1e-5, err_msg=f"position {i}")


# ----------------------------------------------------------------------------------------------
# compute dtype


def test_bfloat16_compute(tiny_config, tiny_params, tokens, forward, init):
    cfg = dataclasses.replace(tiny_config, dtype="bfloat16")
    params = init(cfg)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))  # params stay float32
    t = tokens(cfg)
    ref = forward(tiny_config, tiny_params, t)
    out = forward(cfg, tiny_params, t)
    assert out.dtype == np.float32
    V = cfg.n_vocab
    assert np.isfinite(out[..., :V]).all()
    assert (out[..., V:] == F32_MIN).all()
    diff = np.abs(out[..., :V] - ref[..., :V]).max()
    assert diff < 0.1, diff
    assert diff > 0.0  # the compute dtype is really bfloat16, not silently float32


def test_sequence_longer_than_context_is_an_error(tiny_config, tiny_params):
    too_long = np.zeros((1, tiny_config.n_ctx + 1), np.int32)
    with pytest.raises(ValueError, match="n_ctx"):
        GPT(tiny_config).apply({"params": tiny_params}, too_long)
