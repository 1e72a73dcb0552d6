"""Generation: greedy equals Hugging Face generate, one compile for all tokens and settings,
top-k / top-p filtering, and errors for impossible requests."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2_jax import sample
from gpt2_jax.sample import SampleError, filter_logits


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    """A random Hugging Face GPT-2 and the same weights converted to ours."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from gpt2_jax import export

    torch.manual_seed(3)
    hf_cfg = GPT2Config(vocab_size=500, n_positions=64, n_embd=48, n_layer=2, n_head=4, eos_token_id=None, bos_token_id=None)
    hf = GPT2LMHeadModel(hf_cfg).eval()
    directory = tmp_path_factory.mktemp("hf_sample")
    hf.save_pretrained(directory)
    config, params = export.load_hf_dir(directory)
    return hf, config, params


def test_greedy_equals_hf_generate(hf_pair):
    import torch

    hf, config, params = hf_pair
    prompt = np.random.default_rng(0).integers(0, config.n_vocab, (2, 7))
    ours = sample.generate(params, config, prompt, max_new_tokens=24, greedy=True)
    with torch.no_grad():
        ref = hf.generate(torch.tensor(prompt), do_sample=False, max_new_tokens=24, min_new_tokens=24,
                          attention_mask=torch.ones(prompt.shape, dtype=torch.long), pad_token_id=0).numpy()
    np.testing.assert_array_equal(ours, ref)


def test_one_compile_for_every_token_and_setting(hf_pair):
    _, config, params = hf_pair
    prompt = np.arange(5)[None]
    before = sample._generate._cache_size()
    first = sample.generate(params, config, prompt, max_new_tokens=10, temperature=0.7, top_k=5, seed=1)
    after_first = sample._generate._cache_size()
    sample.generate(params, config, prompt, max_new_tokens=10, temperature=1.3, top_p=0.9, seed=2)
    sample.generate(params, config, prompt, max_new_tokens=10, greedy=True)
    assert after_first - before <= 1
    assert sample._generate._cache_size() == after_first, "changing sampling settings recompiled"
    again = sample.generate(params, config, prompt, max_new_tokens=10, temperature=0.7, top_k=5, seed=1)
    np.testing.assert_array_equal(first, again)  # same seed, same text
    other = sample.generate(params, config, prompt, max_new_tokens=10, temperature=0.7, top_k=5, seed=7)
    assert not np.array_equal(first, other)


def test_top_k_one_and_tiny_top_p_are_greedy(hf_pair):
    _, config, params = hf_pair
    prompt = np.arange(3, 9)[None]
    greedy = sample.generate(params, config, prompt, max_new_tokens=12, greedy=True)
    np.testing.assert_array_equal(sample.generate(params, config, prompt, max_new_tokens=12, top_k=1, seed=4), greedy)
    np.testing.assert_array_equal(sample.generate(params, config, prompt, max_new_tokens=12, top_p=1e-6, seed=5), greedy)


def test_filter_logits_keeps_the_right_tokens():
    import jax.numpy as jnp

    probs = np.array([[0.05, 0.4, 0.3, 0.15, 0.1]], np.float32)
    logits = jnp.log(jnp.asarray(probs))
    kept = lambda out: set(np.flatnonzero(np.asarray(out)[0] > -1e30).tolist())
    assert kept(filter_logits(logits, 1.0, jnp.int32(2), jnp.float32(1.0))) == {1, 2}
    assert kept(filter_logits(logits, 1.0, jnp.int32(0), jnp.float32(0.65))) == {1, 2}  # 0.4 < 0.65 <= 0.7
    assert kept(filter_logits(logits, 1.0, jnp.int32(0), jnp.float32(0.75))) == {1, 2, 3}
    assert kept(filter_logits(logits, 1.0, jnp.int32(0), jnp.float32(1.0))) == {0, 1, 2, 3, 4}
    # temperature scales the logits it keeps
    np.testing.assert_allclose(np.asarray(filter_logits(logits, 2.0, jnp.int32(0), jnp.float32(1.0))), np.log(probs) / 2, rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompt_len=65), "more than the model's context n_ctx=64"),
    (dict(prompt_len=60, max_new_tokens=10), "exceeds n_ctx=64"),
    (dict(temperature=0.0), "temperature=0.0 must be > 0"),
    (dict(top_p=0.0), "top_p=0.0"),
    (dict(prompt_len=0), "prompt is empty"),
])
def test_impossible_requests_are_clear_errors(hf_pair, kwargs, match):
    _, config, params = hf_pair
    prompt = np.zeros((1, kwargs.pop("prompt_len", 4)), np.int32)
    args = dict(max_new_tokens=4) | kwargs
    with pytest.raises(SampleError, match=match):
        sample.generate(params, config, prompt, **args)
