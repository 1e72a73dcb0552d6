"""Hugging Face GPT-2 format (a `save_pretrained` directory): export and import.

A Hugging Face GPT-2 directory holds `config.json` and `model.safetensors`. Its tensors use the
same names and, thanks to `Conv1D`, the same [in, out] layout as ours, so conversion is a rename
plus stacking per-layer tensors along a leading layer axis and padding/unpadding the vocabulary.
Reading and writing go through `safetensors` with numpy only: no PyTorch needed to export.

Output directories are written to a temporary sibling and renamed into place, so an interrupted
export never leaves a half-written model that a loader would accept.

References:
  Hugging Face transformers, models/gpt2/modeling_gpt2.py and configuration_gpt2.py.
  safetensors format: https://github.com/huggingface/safetensors
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

import numpy as np

from gpt2_jax.config import ModelConfig
from gpt2_jax.export.names import LAYER_TENSORS, ExportError, check_params_match, check_standard
from gpt2_jax.export.names import get_path as _get
from gpt2_jax.export.names import put_path as _put
from gpt2_jax.export.names import to_numpy as _to_numpy


_LAYER_NAMES = {t.ours: t.hf for t in LAYER_TENSORS}  # our per-layer path -> name under `transformer.h.{i}.`


def hf_config_dict(config: ModelConfig) -> dict:
    """The `config.json` Hugging Face's GPT2LMHeadModel needs to rebuild this model."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.n_vocab,
        "n_positions": config.n_ctx,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": config.resid_pdrop,
        "embd_pdrop": config.embd_pdrop,
        "attn_pdrop": config.attn_pdrop,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": config.n_vocab - 1,  # GPT-2 convention: <|endoftext|> is the last id
        "eos_token_id": config.n_vocab - 1,
        "use_cache": True,
    }


def model_config_from_hf(hf: dict, base: ModelConfig | None = None) -> ModelConfig:
    """A ModelConfig for a Hugging Face GPT-2 `config.json`; refuses variants we do not model."""
    if hf.get("model_type") not in ("gpt2", None):
        raise ExportError(f"config.json has model_type={hf.get('model_type')!r}; only 'gpt2' can be imported")
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ExportError(f"config.json has activation_function={act!r}; GPT-2 uses the tanh GELU ('gelu_new')")
    n_inner = hf.get("n_inner")
    if n_inner not in (None, 4 * hf["n_embd"]):
        raise ExportError(f"config.json has n_inner={n_inner}; this library uses 4 * n_embd = {4 * hf['n_embd']}")
    for flag, wanted in (("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False),
                         ("scale_attn_weights", True), ("tie_word_embeddings", True)):
        if hf.get(flag, wanted) != wanted:
            raise ExportError(f"config.json has {flag}={hf.get(flag)}; only {flag}={wanted} matches GPT-2")
    fields = dict(
        n_vocab=hf["vocab_size"], n_ctx=hf["n_positions"], n_embd=hf["n_embd"], n_layer=hf["n_layer"],
        n_head=hf["n_head"], layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
        embd_pdrop=hf.get("embd_pdrop", 0.1), attn_pdrop=hf.get("attn_pdrop", 0.1), resid_pdrop=hf.get("resid_pdrop", 0.1),
    )
    if base is None:
        return ModelConfig(**fields)
    import dataclasses

    return dataclasses.replace(base, **fields)


def params_to_hf_state(params: Any, config: ModelConfig) -> dict[str, np.ndarray]:
    """Our parameter tree -> Hugging Face tensor names (float32 numpy, vocabulary unpadded).
    The tied `lm_head.weight` is left out, as `save_pretrained` does."""
    p = _to_numpy(params)
    state = {
        "transformer.wte.weight": p["wte"]["embedding"][: config.n_vocab],
        "transformer.wpe.weight": p["wpe"]["embedding"],
        "transformer.ln_f.weight": p["ln_f"]["scale"],
        "transformer.ln_f.bias": p["ln_f"]["bias"],
    }
    for path, hf_name in _LAYER_NAMES.items():
        stacked = _get(p["h"], path)  # [L, ...]
        for i in range(config.n_layer):
            state[f"transformer.h.{i}.{hf_name}"] = stacked[i]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def hf_state_to_params(state: dict[str, np.ndarray], config: ModelConfig) -> dict:
    """Hugging Face tensors (with or without the `transformer.` prefix) -> our parameter tree."""
    state = {k.removeprefix("transformer."): np.asarray(v, np.float32) for k, v in state.items()}

    def take(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in state:
            raise ExportError(f"tensor {name!r} is missing from the model file; is it a GPT-2 checkpoint?")
        if state[name].shape != shape:
            raise ExportError(f"tensor {name!r} has shape {state[name].shape}, config.json implies {shape}")
        return state[name]

    D, F, L, V = config.n_embd, 4 * config.n_embd, config.n_layer, config.n_vocab
    shapes = {
        "ln_1.weight": (D,), "ln_1.bias": (D,), "ln_2.weight": (D,), "ln_2.bias": (D,),
        "attn.c_attn.weight": (D, 3 * D), "attn.c_attn.bias": (3 * D,),
        "attn.c_proj.weight": (D, D), "attn.c_proj.bias": (D,),
        "mlp.c_fc.weight": (D, F), "mlp.c_fc.bias": (F,),
        "mlp.c_proj.weight": (F, D), "mlp.c_proj.bias": (D,),
    }
    wte = np.zeros((config.n_vocab_padded, D), np.float32)
    wte[:V] = take("wte.weight", (V, D))
    params: dict = {
        "wte": {"embedding": wte},
        "wpe": {"embedding": take("wpe.weight", (config.n_ctx, D))},
        "ln_f": {"scale": take("ln_f.weight", (D,)), "bias": take("ln_f.bias", (D,))},
        "h": {},
    }
    for path, hf_name in _LAYER_NAMES.items():
        stacked = np.stack([take(f"h.{i}.{hf_name}", shapes[hf_name]) for i in range(L)])
        _put(params["h"], path, stacked)
    if "lm_head.weight" in state and not np.array_equal(state["lm_head.weight"], state["wte.weight"]):
        raise ExportError("lm_head.weight differs from wte.weight; GPT-2 ties them and so does this library")
    return params


def load_hf_dir(path: str | os.PathLike, base: ModelConfig | None = None) -> tuple[ModelConfig, dict]:
    """Reads a `save_pretrained` directory: (ModelConfig, params as numpy)."""
    from safetensors.numpy import load_file

    path = pathlib.Path(path)
    if not (path / "config.json").is_file():
        raise ExportError(f"{str(path)!r} has no config.json; pass a directory written by GPT2LMHeadModel.save_pretrained")
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{str(path)!r} has no .safetensors file; save with save_pretrained(safe_serialization=True)")
    try:
        hf = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{str(path / 'config.json')!r} is not valid JSON ({e})") from None
    config = model_config_from_hf(hf, base)
    state: dict[str, np.ndarray] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise ExportError(f"{str(f)!r} is not a readable safetensors file ({e})") from None
    return config, hf_state_to_params(state, config)


def save_hf_dir(path: str | os.PathLike, config: ModelConfig, params: Any) -> pathlib.Path:
    """Writes a directory that `GPT2LMHeadModel.from_pretrained` loads. Refuses to overwrite."""
    from safetensors.numpy import save_file

    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise ExportError(f"output path {str(path)!r} is a file; choose a new directory path")
    if path.exists() and any(path.iterdir()):
        raise ExportError(f"output directory {str(path)!r} exists and is not empty; choose a new path or remove it")
    if config.ablations():  # GPT2LMHeadModel has one architecture: these would load but compute wrongly
        raise ExportError(f"the model's ablation switches {config.ablations()} have no GPT2LMHeadModel equivalent; "
                          f"only GPT-2's architecture exports to Hugging Face (use --format params)")
    check_standard(config, "hf")
    check_params_match(params, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file(params_to_hf_state(params, config), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config_dict(config), indent=2) + "\n")
        generation = {"bos_token_id": config.n_vocab - 1, "eos_token_id": config.n_vocab - 1}
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        if path.exists():
            path.rmdir()
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def write_tokenizer_files(directory: pathlib.Path, vocab, config: ModelConfig) -> None:
    """vocab.json + merges.txt (GPT2Tokenizer's names for encoder.json + vocab.bpe) and a
    tokenizer_config.json, so `AutoTokenizer.from_pretrained` tokenizes like us."""
    with tempfile.TemporaryDirectory() as tmp:
        vocab.write_gpt2_files(pathlib.Path(tmp))
        shutil.copyfile(pathlib.Path(tmp) / "encoder.json", directory / "vocab.json")
        shutil.copyfile(pathlib.Path(tmp) / "vocab.bpe", directory / "merges.txt")
    eot = vocab.tokens[vocab.eot_id].decode("utf-8")
    tokenizer_config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": eot, "eos_token": eot, "unk_token": eot,
                        "model_max_length": config.n_ctx, "add_prefix_space": False}
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")


def read_tokenizer_files(directory: str | os.PathLike):
    """(merges, special tokens) from vocab.json + merges.txt, or (None, None) when absent."""
    from gpt2_jax.tokenizer import TokenizerError
    from gpt2_jax.tokenizer.formats import read_gpt2_files

    directory = pathlib.Path(directory)
    if not ((directory / "vocab.json").is_file() and (directory / "merges.txt").is_file()):
        return None, None
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(directory / "vocab.json", pathlib.Path(tmp) / "encoder.json")
        shutil.copyfile(directory / "merges.txt", pathlib.Path(tmp) / "vocab.bpe")
        try:
            merges, _, specials = read_gpt2_files(pathlib.Path(tmp))
        except TokenizerError as e:
            raise ExportError(f"the tokenizer files in {str(directory)!r} are unusable ({e})") from None
    return merges, specials
