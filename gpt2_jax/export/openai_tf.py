"""OpenAI's original GPT-2 release layout (TensorFlow checkpoint + hparams.json + BPE files).

openai/gpt-2's `download_model.py` fetches, per model: `checkpoint`, `model.ckpt.{index,
data-00000-of-00001,meta}`, `hparams.json` ({n_vocab, n_ctx, n_embd, n_head, n_layer}),
`encoder.json` and `vocab.bpe`. Variables are named `model/wte` [V, D], `model/wpe` [n_ctx, D],
`model/h{i}/ln_1/g|b`, `model/h{i}/attn/c_attn/w` [1, D, 3D] (their `conv1d` keeps a leading
axis of 1) and `.../b`, `attn/c_proj`, `ln_2`, `mlp/c_fc`, `mlp/c_proj`, `model/ln_f/g|b`.
Their layout is ours, so conversion is renaming, (un)stacking layers and that leading axis.

Writing uses TensorFlow's own `SaveV2` op, so the bundle (`.index` + `.data-*`) is exactly what
TensorFlow writes and `tf.train.load_checkpoint` / a TF1 `Saver` read it; the graph `.meta` file
is not written (openai/gpt-2 rebuilds the graph from code and restores variables by name).
Reading uses `tf.train.load_checkpoint`, which also reads the real release.

References:
  openai/gpt-2 src/model.py (variable scopes), download_model.py (file list), src/encoder.py.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from gpt2_jax.config import ModelConfig
from gpt2_jax.export.names import (GLOBAL_TENSORS, ExportError, check_dtype, check_standard, flat_tensors,
                                   params_from_tensors)
from gpt2_jax.export.output import atomic_output

PREFIX = "model.ckpt"


def variables(config: ModelConfig, params) -> dict[str, np.ndarray]:
    """Our params -> {released variable name: float32 array in the released shape}."""
    # The release stores matrices as 1x1 convolutions: [1, in, out].
    return flat_tensors(config, params, "openai", lambda i, name: f"model/h{i}/{name}", lambda w: w[None])


def hparams(config: ModelConfig) -> dict:
    return {"n_vocab": config.n_vocab, "n_ctx": config.n_ctx, "n_embd": config.n_embd, "n_head": config.n_head,
            "n_layer": config.n_layer}


def save(out: pathlib.Path, config: ModelConfig, params, vocab, dtype: str = "float32", force: bool = False) -> pathlib.Path:
    """Writes the release layout into directory `out` (encoder.json + vocab.bpe when `vocab`)."""
    check_dtype("openai-tf", dtype, ("float32",))
    check_standard(config, "openai-tf")
    import tensorflow as tf

    tensors = variables(config, params)
    with atomic_output(out, directory=True, force=force) as tmp:
        names = sorted(tensors)
        tf.raw_ops.SaveV2(prefix=str(tmp / PREFIX), tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=[tf.constant(tensors[n]) for n in names])
        (tmp / "checkpoint").write_text(f'model_checkpoint_path: "{PREFIX}"\nall_model_checkpoint_paths: "{PREFIX}"\n')
        (tmp / "hparams.json").write_text(json.dumps(hparams(config), indent=2) + "\n")
        if vocab is not None:
            vocab.write_gpt2_files(tmp)
    return out


def _checkpoint_prefix(src: pathlib.Path) -> str:
    import tensorflow as tf

    if src.is_dir():
        prefix = tf.train.latest_checkpoint(str(src))
        if prefix is None:
            indexes = sorted(src.glob("*.index"))
            if not indexes:
                raise ExportError(f"{str(src)!r} holds no TensorFlow checkpoint (no `checkpoint` or *.index file); "
                                  f"pass the directory of an openai/gpt-2 model")
            prefix = str(indexes[0].with_suffix(""))
        return prefix
    return str(src).removesuffix(".index")


def load(src: str | pathlib.Path, base: ModelConfig | None = None) -> tuple[ModelConfig, dict]:
    """Reads a release directory (or checkpoint prefix with hparams.json beside it)."""
    import tensorflow as tf

    src = pathlib.Path(src)
    directory = src if src.is_dir() else src.parent
    hp_path = directory / "hparams.json"
    if not hp_path.is_file():
        raise ExportError(f"{str(directory)!r} has no hparams.json; an openai/gpt-2 model directory has one")
    try:
        hp = json.loads(hp_path.read_text())
        config = ModelConfig(**{k: int(hp[k]) for k in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")})
    except (ValueError, KeyError, TypeError) as e:
        raise ExportError(f"{str(hp_path)!r} is not a GPT-2 hparams.json with n_vocab, n_ctx, n_embd, n_head, n_layer ({e})") from None
    if base is not None:
        import dataclasses

        config = dataclasses.replace(base, **{k: getattr(config, k) for k in hparams(config)})
    prefix = _checkpoint_prefix(src)
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
    except Exception as e:  # TF raises DataLossError, NotFoundError, ... for damaged bundles
        raise ExportError(f"{prefix!r} is not a readable TensorFlow checkpoint ({type(e).__name__}: {str(e)[:200]})") from None

    def read(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in shapes:
            raise ExportError(f"variable {name!r} is missing from {prefix!r}; is it an openai/gpt-2 checkpoint?")
        if tuple(shapes[name]) != tuple(shape):
            raise ExportError(f"variable {name!r} has shape {tuple(shapes[name])}, hparams.json implies {tuple(shape)}")
        try:
            return np.asarray(reader.get_tensor(name), np.float32)
        except Exception as e:
            raise ExportError(f"variable {name!r} in {prefix!r} cannot be read ({type(e).__name__}); the data file is damaged") from None

    def take(path, shape):
        return read(GLOBAL_TENSORS[path]["openai"], shape)

    def take_layer(t, shape):
        stored = (1, *shape) if t.matrix else shape
        return np.stack([read(f"model/h{i}/{t.openai}", stored).reshape(shape) for i in range(config.n_layer)])

    return config, params_from_tensors(config, take, take_layer)
