"""Shared test setup: 8 forced CPU devices before JAX starts (unless -m gpu/tpu), plus session-wide fixtures.

JAX reads XLA_FLAGS and JAX_PLATFORMS once, when its backend starts, so they are set here at
import time: pytest imports this file before any test module (and so before any `import jax`).
Each distinct jitted shape costs a compile, so forward functions are cached per ModelConfig
(a frozen, hashable dataclass) and reference models are built once per session.
"""

from __future__ import annotations

import os
import sys

_DEVICE_FLAG = "--xla_force_host_platform_device_count=8"
if _DEVICE_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _DEVICE_FLAG).strip()


def _selects_hardware_tests(argv: list[str]) -> bool:
    """True when the command line's (last) `-m` expression selects `gpu` or `tpu` tests: then JAX
    must see the accelerator. Without `-m`, setup.cfg's addopts deselect them (CPU suite)."""
    expression = None
    for i, arg in enumerate(argv):
        if arg == "-m" and i + 1 < len(argv):
            expression = argv[i + 1]
        elif arg.startswith("-m") and len(arg) > 2 and not arg.startswith("-m="):
            expression = arg[2:]
    if not expression:
        return False
    from _pytest.mark.expression import Expression  # pytest's own evaluator of -m expressions

    compiled = Expression.compile(expression)
    return any(compiled.evaluate(lambda name, marker=marker, **_: name == marker) for marker in ("gpu", "tpu"))


# The normal suite runs on 8 forced CPU devices whatever the machine has. An explicit
# JAX_PLATFORMS (e.g. JAX_PLATFORMS=cuda) is respected, and `pytest -m gpu` / `-m tpu` leave the
# platform to JAX so the hardware tests see the device they test.
if "JAX_PLATFORMS" not in os.environ and not _selects_hardware_tests(sys.argv):
    os.environ["JAX_PLATFORMS"] = "cpu"

# The CLI's persistent compilation cache (gpt2_jax/compilation_cache.py) stays off in tests, for them
# and for the subprocesses they start: nothing is written to the user's ~/.cache, and a compile-time
# measurement never reads a warm cache by accident. Tests of the cache set their own directory.
os.environ["GPT2_JAX_CACHE_DIR"] = "none"

import dataclasses  # noqa: E402
import functools  # noqa: E402
import pathlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Batch and length used by most model tests: one shape, so one compile per config.
BATCH, SEQ = 2, 16

# Weight scale of the random reference models. GPT-2's 0.02 keeps a tiny model's activations so
# small that, e.g., exact-erf GELU instead of tanh-GELU moves its logits by less than the parity
# tolerance; at this scale pre-activations are O(1) and such mistakes show.
INIT_RANGE = 0.1


# ----------------------------------------------------------------------------------------------
# configs


@pytest.fixture(scope="session")
def tiny_config():
    """The workhorse: what `load_hf_dir` returns for the session's tiny HF model (so the
    parity test and the invariance tests share compiled functions)."""
    from gpt2_jax.config import ModelConfig

    return ModelConfig(n_vocab=300, n_ctx=64, n_embd=64, n_layer=2, n_head=4)


# ----------------------------------------------------------------------------------------------
# jitted model functions, cached per config


@functools.cache
def _jit_forward(config, deterministic: bool):
    import jax

    from gpt2_jax.model import GPT

    def fwd(params, tokens, rng):
        rngs = {} if rng is None else {"dropout": rng}
        logits, cache = GPT(config).apply({"params": params}, tokens, deterministic=deterministic, rngs=rngs)
        assert cache is None, "a forward without a cache must return cache=None"
        return logits

    return jax.jit(fwd)


@pytest.fixture(scope="session")
def forward():
    """forward(config, params, tokens, deterministic=True, rng=None) -> logits as numpy."""

    def run(config, params, tokens, *, deterministic=True, rng=None):
        return np.asarray(_jit_forward(config, deterministic)(params, tokens, rng))

    return run


@functools.cache
def _jit_init(config):
    import jax

    from gpt2_jax.model import init_params

    return jax.jit(lambda rng: init_params(config, rng))


@pytest.fixture(scope="session")
def init():
    """init(config, seed) -> params (jitted init_params, cached per config)."""
    import jax

    def run(config, seed=0):
        return _jit_init(config)(jax.random.key(seed))

    return run


@pytest.fixture(scope="session")
def tokens():
    """tokens(config, batch=BATCH, seq=SEQ, seed=0) -> int32 ids over the whole real vocabulary,
    always including the last real id (GPT-2's <|endoftext|>)."""

    def make(config, batch=BATCH, seq=SEQ, seed=0):
        t = np.random.RandomState(seed).randint(0, config.n_vocab, size=(batch, seq)).astype(np.int32)
        t[0, -1] = config.n_vocab - 1
        return t

    return make


# ----------------------------------------------------------------------------------------------
# Hugging Face reference models (PyTorch CPU, float32)


@dataclasses.dataclass
class HFReference:
    model: object  # transformers.GPT2LMHeadModel in eval mode
    path: pathlib.Path  # its save_pretrained directory

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(np.asarray(tokens, np.int64))).logits.numpy()


def make_hf_reference(path: pathlib.Path, *, seed: int, **gpt2_config) -> HFReference:
    """A randomly initialised GPT2LMHeadModel saved with `save_pretrained(path)`.

    Hugging Face initialises biases to 0 and LayerNorm scales to 1, which would hide a swapped or
    dropped bias in a parity test, so every 1-D parameter is perturbed too."""
    import torch
    import transformers

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    vocab = gpt2_config["vocab_size"]
    gpt2_config = {"initializer_range": INIT_RANGE} | gpt2_config
    hf_config = transformers.GPT2Config(bos_token_id=vocab - 1, eos_token_id=vocab - 1, **gpt2_config)
    model = transformers.GPT2LMHeadModel(hf_config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                base = 1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0
                p.copy_(base + 0.1 * torch.randn_like(p))
    model.save_pretrained(path)
    return HFReference(model, pathlib.Path(path))


@pytest.fixture(scope="session")
def hf_reference():
    """hf_reference(path, seed=..., **GPT2Config kwargs) -> HFReference (see make_hf_reference)."""
    return make_hf_reference


@pytest.fixture(scope="session")
def hf_tiny(tmp_path_factory, tiny_config):
    """The session's tiny HF model, matching `tiny_config`. Tests must not modify its directory."""
    c = tiny_config
    return make_hf_reference(
        tmp_path_factory.mktemp("hf_tiny") / "model", seed=0,
        vocab_size=c.n_vocab, n_positions=c.n_ctx, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
    )


@pytest.fixture(scope="session")
def tiny_params(hf_tiny, tiny_config):
    """The tiny HF model's weights in our layout (via the user path, `load_hf_dir`)."""
    from gpt2_jax.export import load_hf_dir

    config, params = load_hf_dir(hf_tiny.path)
    assert config == tiny_config, config
    return params

pytest_plugins = ["_runs"]  # the shared trained-checkpoint fixture (tests/_runs.py)
