"""The one table of GPT-2's tensors: our parameter paths and every format's names and layouts.

Every format stores the same 16 kinds of tensor (two embeddings, the final LayerNorm and twelve
per layer); they differ in names, in whether per-layer tensors are stacked, and in whether a
matrix is [in, out] (ours, Hugging Face's Conv1D, OpenAI's TensorFlow `conv1d` with a leading 1)
or [out, in] (PyTorch `nn.Linear`: llm.c, and GGUF/ONNX consumers that multiply `x @ W.T`).
A format file looks names up here instead of keeping its own list, so adding a format is one
small file and a renamed tensor is fixed in one place.

Also here: the error every format raises, the check that a parameter tree matches its config,
the check that it uses GPT-2's arithmetic (a μP model must be folded first, mup.to_standard),
and the dtypes a file may be written in.

References:
  openai/gpt-2 src/model.py (variable names); Hugging Face transformers modeling_gpt2.py;
  karpathy/llm.c train_gpt2.py `write_model` (tensor order); llama.cpp convert_hf_to_gguf.py and
  gguf-py/gguf/constants.py (MODEL_ARCH.GPT2 tensor names).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from gpt2_jax.config import ModelConfig


class ExportError(ValueError):
    """A model file or directory cannot be read or written; the message says why."""


@dataclasses.dataclass(frozen=True)
class LayerTensor:
    """One per-layer tensor. `ours` is its path under params["h"] (stacked along a leading L axis);
    the other fields are its name inside layer i of each format; `shape(D)` is its shape in our
    [in, out] layout; `matrix` marks the ones stored transposed by [out, in] formats."""

    ours: tuple[str, ...]
    hf: str  # under `transformer.h.{i}.`
    openai: str  # under `model/h{i}/`
    gguf: str  # under `blk.{i}.`
    llmc: str  # llm.c's name in train_gpt2.c's ParameterTensors
    shape: Callable[[int], tuple[int, ...]]

    @property
    def matrix(self) -> bool:
        return self.ours[-1] == "kernel"


LAYER_TENSORS: tuple[LayerTensor, ...] = (
    LayerTensor(("ln_1", "scale"), "ln_1.weight", "ln_1/g", "attn_norm.weight", "ln1w", lambda D: (D,)),
    LayerTensor(("ln_1", "bias"), "ln_1.bias", "ln_1/b", "attn_norm.bias", "ln1b", lambda D: (D,)),
    LayerTensor(("attn", "c_attn", "kernel"), "attn.c_attn.weight", "attn/c_attn/w", "attn_qkv.weight", "qkvw", lambda D: (D, 3 * D)),
    LayerTensor(("attn", "c_attn", "bias"), "attn.c_attn.bias", "attn/c_attn/b", "attn_qkv.bias", "qkvb", lambda D: (3 * D,)),
    LayerTensor(("attn", "c_proj", "kernel"), "attn.c_proj.weight", "attn/c_proj/w", "attn_output.weight", "attprojw", lambda D: (D, D)),
    LayerTensor(("attn", "c_proj", "bias"), "attn.c_proj.bias", "attn/c_proj/b", "attn_output.bias", "attprojb", lambda D: (D,)),
    LayerTensor(("ln_2", "scale"), "ln_2.weight", "ln_2/g", "ffn_norm.weight", "ln2w", lambda D: (D,)),
    LayerTensor(("ln_2", "bias"), "ln_2.bias", "ln_2/b", "ffn_norm.bias", "ln2b", lambda D: (D,)),
    LayerTensor(("mlp", "c_fc", "kernel"), "mlp.c_fc.weight", "mlp/c_fc/w", "ffn_up.weight", "fcw", lambda D: (D, 4 * D)),
    LayerTensor(("mlp", "c_fc", "bias"), "mlp.c_fc.bias", "mlp/c_fc/b", "ffn_up.bias", "fcb", lambda D: (4 * D,)),
    LayerTensor(("mlp", "c_proj", "kernel"), "mlp.c_proj.weight", "mlp/c_proj/w", "ffn_down.weight", "fcprojw", lambda D: (4 * D, D)),
    LayerTensor(("mlp", "c_proj", "bias"), "mlp.c_proj.bias", "mlp/c_proj/b", "ffn_down.bias", "fcprojb", lambda D: (D,)),
)

# The tensors outside the blocks: our path -> {format: name}.
GLOBAL_TENSORS: dict[tuple[str, ...], dict[str, str]] = {
    ("wte", "embedding"): {"hf": "wte.weight", "openai": "model/wte", "gguf": "token_embd.weight", "llmc": "wte"},
    ("wpe", "embedding"): {"hf": "wpe.weight", "openai": "model/wpe", "gguf": "position_embd.weight", "llmc": "wpe"},
    ("ln_f", "scale"): {"hf": "ln_f.weight", "openai": "model/ln_f/g", "gguf": "output_norm.weight", "llmc": "lnfw"},
    ("ln_f", "bias"): {"hf": "ln_f.bias", "openai": "model/ln_f/b", "gguf": "output_norm.bias", "llmc": "lnfb"},
}

# dtypes a file may hold (`--dtype`); q8_0 is GGUF's 8-bit block quantization.
FLOAT_DTYPES = ("float32", "bfloat16", "float16")


def numpy_dtype(name: str) -> np.dtype:
    import ml_dtypes  # ships with jax; numpy has no bfloat16 of its own

    return {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16),
            "bfloat16": np.dtype(ml_dtypes.bfloat16)}[name]


def check_dtype(fmt: str, dtype: str, supported: tuple[str, ...]) -> None:
    if dtype not in supported:
        raise ExportError(f"format {fmt!r} cannot hold --dtype {dtype}; choose one of {', '.join(supported)}")


def to_numpy(tree: Any) -> Any:
    """A parameter tree (jax arrays, FrozenDicts) as nested dicts of float32 numpy arrays."""
    if isinstance(tree, dict) or hasattr(tree, "items"):
        return {k: to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree, np.float32)


def get_path(tree: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def put_path(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def flat_tensors(config: ModelConfig, params: Any, fmt: str, layer_name: Callable[[int, str], str],
                 matrix: Callable[[np.ndarray], np.ndarray]) -> dict[str, np.ndarray]:
    """Our params as one flat {name: float32 array} in format `fmt`'s names (a column of the tables
    above): layers unstacked and named by `layer_name(i, per-layer name)`, matrices passed through
    `matrix` (the format's layout), the token embedding cut to the real vocabulary."""
    p = to_numpy(params)
    out = {names[fmt]: get_path(p, path) for path, names in GLOBAL_TENSORS.items()}
    wte = GLOBAL_TENSORS[("wte", "embedding")][fmt]
    out[wte] = out[wte][: config.n_vocab]
    for t in LAYER_TENSORS:
        stacked = get_path(p["h"], t.ours)
        for i in range(config.n_layer):
            out[layer_name(i, getattr(t, fmt))] = matrix(stacked[i]) if t.matrix else stacked[i]
    return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def pad_vocab(wte: np.ndarray, config: ModelConfig) -> np.ndarray:
    """Real rows [n_vocab, D] -> our table [n_vocab_padded, D] with zero padding rows (as init
    leaves them, so import(export(params)) is bit-exact)."""
    out = np.zeros((config.n_vocab_padded, config.n_embd), np.float32)
    out[: config.n_vocab] = wte
    return out


def params_from_tensors(config: ModelConfig, take: Callable[[tuple[str, ...], tuple[int, ...]], np.ndarray],
                        take_layer: Callable[[LayerTensor, tuple[int, ...]], np.ndarray]) -> dict:
    """Builds our tree from a format's reader: `take(our_path, shape)` returns a global tensor
    (wte unpadded [V, D]); `take_layer(tensor, shape)` returns the stacked [L, *shape] tensor in
    our [in, out] layout. The readers check names and shapes and raise ExportError."""
    D, V = config.n_embd, config.n_vocab
    params: dict = {"h": {}}
    put_path(params, ("wte", "embedding"), pad_vocab(take(("wte", "embedding"), (V, D)), config))
    put_path(params, ("wpe", "embedding"), take(("wpe", "embedding"), (config.n_ctx, D)))
    put_path(params, ("ln_f", "scale"), take(("ln_f", "scale"), (D,)))
    put_path(params, ("ln_f", "bias"), take(("ln_f", "bias"), (D,)))
    for t in LAYER_TENSORS:
        put_path(params["h"], t.ours, np.ascontiguousarray(take_layer(t, t.shape(D)), np.float32))
    return params


def check_standard(config: ModelConfig, fmt: str) -> None:
    """Formats other than our own hold GPT-2's arithmetic only: a μP model's logit multiplier and
    attention scale would be lost, so it must be folded into the weights first."""
    if config.parametrization != "sp":
        raise ExportError(f"format {fmt!r} cannot hold model.parametrization={config.parametrization!r} multipliers; "
                          f"fold them first with gpt2_jax.mup.to_standard(config, params) (`gpt2-jax export` does)")


def check_params_match(params: Any, config: ModelConfig) -> None:
    """Every leaf must have the shape `config` implies, or the export would be silently wrong."""
    import jax

    from gpt2_jax.model import init_params

    want = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    want_leaves = {jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_flatten_with_path(want)[0]}
    got_leaves = {jax.tree_util.keystr(p): np.shape(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    if want_leaves.keys() != got_leaves.keys():
        missing = sorted(want_leaves.keys() - got_leaves.keys()) or sorted(got_leaves.keys() - want_leaves.keys())
        raise ExportError(f"parameters do not match the model config: tensor {missing[0]} is missing or unexpected")
    for name, shape in want_leaves.items():
        if tuple(got_leaves[name]) != tuple(shape):
            raise ExportError(f"parameter {name} has shape {tuple(got_leaves[name])} but the config implies {tuple(shape)}")
