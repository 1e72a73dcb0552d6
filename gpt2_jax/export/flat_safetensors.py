"""Our parameters as one flat safetensors file, with our own names, for hand-written loaders.

Keys are our tree paths joined by "/" (`wte/embedding`, `h/attn/c_attn/kernel`, ...); per-layer
tensors stay stacked [L, ...] and matrices stay [in, out], exactly as `model.GPT` holds them
(the embedding keeps its zero padding rows to `n_vocab_padded`). The file's metadata holds the
model config (`gpt2_jax.model_config`, JSON) and the vocabulary name, so the file alone is enough
to rebuild the model: `{k: v for k, v in safetensors.numpy.load_file(f).items()}` unflattened.

References:
  safetensors format: https://github.com/huggingface/safetensors
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from gpt2_jax.config import ModelConfig
from gpt2_jax.export.names import FLOAT_DTYPES, ExportError, check_dtype, check_params_match, numpy_dtype, put_path, to_numpy
from gpt2_jax.export.output import atomic_output

CONFIG_KEY, VOCAB_KEY = "gpt2_jax.model_config", "gpt2_jax.vocab"


def flatten(tree, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def save(out: pathlib.Path, config: ModelConfig, params, vocab_name: str | None, dtype: str = "float32",
         force: bool = False) -> pathlib.Path:
    from safetensors.numpy import save_file

    check_dtype("safetensors", dtype, FLOAT_DTYPES)
    check_params_match(params, config)
    tensors = {k: np.ascontiguousarray(v, numpy_dtype(dtype)) for k, v in flatten(to_numpy(params)).items()}
    metadata = {CONFIG_KEY: json.dumps(dataclasses.asdict(config)), VOCAB_KEY: vocab_name or "unknown"}
    with atomic_output(out, directory=False, force=force) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return out


def load(src: str | pathlib.Path) -> tuple[ModelConfig, dict, str]:
    """(config, params as float32, vocabulary name) of a file written by `save`."""
    from safetensors import safe_open

    src = pathlib.Path(src)
    try:
        with safe_open(str(src), framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise ExportError(f"{str(src)!r} is not a readable safetensors file ({e})") from None
    if CONFIG_KEY not in metadata:
        raise ExportError(f"{str(src)!r} has no {CONFIG_KEY} metadata; it was not written by `gpt2-jax export --format safetensors`")
    config = ModelConfig(**json.loads(metadata[CONFIG_KEY]))
    params: dict = {}
    for k, v in tensors.items():
        put_path(params, tuple(k.split("/")), np.asarray(v, np.float32))
    check_params_match(params, config)
    return config, params, metadata.get(VOCAB_KEY, "unknown")
