"""Fixtures for the export-format tests: checkpoints holding known weights and a vocabulary.

`export_ckpt` is the session's tiny Hugging Face reference model (odd vocabulary of 300, 2
layers, every tensor perturbed) written as one of our checkpoints together with a 300-token BPE
vocabulary learned on the bundled corpus, so each format's consumer can be compared with
Hugging Face's logits and with that vocabulary's token ids. `gpt2_ckpt` is a 124M-shaped
random model with the official GPT-2 vocabulary (built once; used by the slow tests).
Loaded by tests/test_export_*.py through `pytest_plugins`.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest

# Texts every consumer must tokenize exactly like us (plain prose, digits, whitespace runs,
# non-ASCII, the separator written out as text).
SHARED_TEXTS = [
    "ROMEO: But, soft! what light through yonder window breaks?",
    "  indented   text\twith tabs\nand 12345 numbers, 3.14!",
    "naïve café — “quotes” and 日本語",
    "first document<|endoftext|>second",
]


def write_checkpoint(path: pathlib.Path, config, params, vocab: str) -> pathlib.Path:
    from gpt2_jax import checkpoint
    from gpt2_jax.config import TrainConfig

    mngr = checkpoint.manager(path, keep=1)
    checkpoint.save(mngr, 3, TrainConfig(model=config, workdir=""), params, None, {"vocab": vocab})
    checkpoint.wait(mngr, 3)
    mngr.close()
    return path


@dataclasses.dataclass(frozen=True)
class ExportCase:
    ckpt: pathlib.Path
    config: object
    params: dict  # float32 numpy, our layout
    vocab_dir: pathlib.Path
    hf: object  # conftest.HFReference with the same weights


@pytest.fixture(scope="session")
def export_ckpt(tmp_path_factory, hf_tiny, tiny_params, tiny_config):
    from gpt2_jax.tokenizer import train_bbpe

    root = tmp_path_factory.mktemp("export_case")
    text = (pathlib.Path(__file__).parents[1] / "gpt2_jax/assets/corpora/tinyshakespeare.txt").read_text()[:60_000]
    vocab_dir = root / "vocab300"
    train_bbpe(tiny_config.n_vocab, documents=[text], progress=False).save(vocab_dir)
    params = {k: v for k, v in tiny_params.items()}
    ckpt = write_checkpoint(root / "ckpt", tiny_config, tiny_params, str(vocab_dir))
    return ExportCase(ckpt, tiny_config, params, vocab_dir, hf_tiny)


@pytest.fixture(scope="session")
def gpt2_ckpt(tmp_path_factory):
    """(checkpoint dir, config, params as numpy) of a randomly initialised 124M-shaped GPT-2 with
    non-trivial LayerNorms and biases, vocabulary "gpt2"."""
    import jax

    from gpt2_jax.config import preset
    from gpt2_jax.model import init_params

    config = preset("gpt2")
    params = jax.tree_util.tree_map(np.asarray, jax.jit(lambda k: init_params(config, k))(jax.random.key(11)))
    rng = np.random.RandomState(11)
    for group in (params["h"]["ln_1"], params["h"]["ln_2"], params["ln_f"]):
        group["scale"] = (1 + 0.1 * rng.standard_normal(group["scale"].shape)).astype(np.float32)
        group["bias"] = (0.1 * rng.standard_normal(group["bias"].shape)).astype(np.float32)
    ckpt = write_checkpoint(tmp_path_factory.mktemp("gpt2_124m") / "ckpt", config, params, "gpt2")
    return ckpt, config, params


def assert_params_equal(a, b) -> None:
    import jax

    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == np.float32 and x.shape == y.shape, jax.tree_util.keystr(path)
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
