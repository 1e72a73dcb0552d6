"""llm.c checkpoints (`gpt2_124M.bin` layout) and its tokenizer file: export and import.

llm.c's model file is a 256 x int32 header (magic 20240326, version 3 = float32 or 5 = bfloat16,
max_seq_len, vocab_size, num_layers, num_heads, channels, padded_vocab_size) followed by the 16
parameter tensors back to back in `ParameterTensors` order: wte [Vp, C] (vocabulary rows padded
with zeros to a multiple of 128), wpe, then each per-layer kind for all layers ([L, ...]), ln_f.
Matrices are PyTorch `nn.Linear` [out, in], the transpose of ours. The tokenizer file is a 256 x
int32 header (magic 20240328, version 2, vocab_size, eot id) then, per id, a uint8 length and the
token's bytes. We write both into one directory, `model.bin` and `tokenizer.bin`.

Reading checks the header and that the file is exactly as long as the header says, so a
truncated or foreign file is named as such instead of loading garbage.

References:
  karpathy/llm.c train_gpt2.py (write_model, write_tensors, pad_vocab, write_tokenizer) and
  train_gpt2.c (gpt2_build_from_checkpoint, fill_in_parameter_sizes).
"""

from __future__ import annotations

import pathlib
import struct

import numpy as np

from gpt2_jax.config import ModelConfig
from gpt2_jax.export.names import (LAYER_TENSORS, ExportError, check_dtype, check_standard, get_path, numpy_dtype,
                                   params_from_tensors, to_numpy)
from gpt2_jax.export.output import atomic_output

MODEL_MAGIC, TOKENIZER_MAGIC = 20240326, 20240328
VERSIONS = {"float32": 3, "bfloat16": 5}
HEADER_INTS = 256
MODEL_FILE, TOKENIZER_FILE = "model.bin", "tokenizer.bin"


def padded_vocab(n_vocab: int) -> int:
    return -(-n_vocab // 128) * 128  # llm.c's pad_vocab(multiple=128)


def tensor_layout(config: ModelConfig) -> list[tuple[str, tuple[int, ...]]]:
    """(llm.c name, shape as stored) in file order."""
    C, L = config.n_embd, config.n_layer
    layout = [("wte", (padded_vocab(config.n_vocab), C)), ("wpe", (config.n_ctx, C))]
    for t in LAYER_TENSORS:
        shape = t.shape(C)
        layout.append((t.llmc, (L, *(shape[::-1] if t.matrix else shape))))
    return layout + [("lnfw", (C,)), ("lnfb", (C,))]


def save(out: pathlib.Path, config: ModelConfig, params, vocab, dtype: str = "float32", force: bool = False) -> pathlib.Path:
    """Writes OUT/model.bin (+ OUT/tokenizer.bin when `vocab`, an ExportVocab, is given)."""
    check_dtype("llmc", dtype, tuple(VERSIONS))
    check_standard(config, "llmc")
    p = to_numpy(params)
    if vocab is not None and any(len(t) > 255 for t in vocab.tokens):
        raise ExportError("a token is longer than 255 bytes; llm.c's tokenizer file stores lengths as one byte")
    with atomic_output(out, directory=True, force=force) as tmp:
        header = np.zeros(HEADER_INTS, np.int32)
        header[:8] = [MODEL_MAGIC, VERSIONS[dtype], config.n_ctx, config.n_vocab, config.n_layer, config.n_head,
                      config.n_embd, padded_vocab(config.n_vocab)]
        wte = np.zeros((padded_vocab(config.n_vocab), config.n_embd), np.float32)
        wte[: config.n_vocab] = p["wte"]["embedding"][: config.n_vocab]
        tensors = [wte, p["wpe"]["embedding"]]
        for t in LAYER_TENSORS:
            x = get_path(p["h"], t.ours)
            tensors.append(np.swapaxes(x, 1, 2) if t.matrix else x)
        tensors += [p["ln_f"]["scale"], p["ln_f"]["bias"]]
        with open(tmp / MODEL_FILE, "wb") as f:
            f.write(header.tobytes())
            for x in tensors:
                f.write(np.ascontiguousarray(x, numpy_dtype(dtype)).tobytes())
        if vocab is not None:
            write_tokenizer(tmp / TOKENIZER_FILE, vocab.tokens, vocab.eot_id)
    return out


def write_tokenizer(path: pathlib.Path, tokens, eot_id: int) -> None:
    header = np.zeros(HEADER_INTS, np.int32)
    header[:4] = [TOKENIZER_MAGIC, 2, len(tokens), eot_id]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        for t in tokens:
            f.write(struct.pack("<B", len(t)) + t)


def load(src: str | pathlib.Path) -> tuple[ModelConfig, dict, tuple[list[bytes], int] | None]:
    """Reads an llm.c model file (or a directory holding model.bin): (config, params, tokenizer),
    tokenizer = (tokens, eot id) from a tokenizer file beside it, or None when there is none."""
    src = pathlib.Path(src)
    path = src / MODEL_FILE if src.is_dir() else src
    if not path.is_file():
        raise ExportError(f"{str(src)!r} is neither an llm.c model file nor a directory with {MODEL_FILE}")
    data = np.memmap(path, dtype=np.uint8, mode="r")
    if data.size < 4 * HEADER_INTS:
        raise ExportError(f"{str(path)!r} is {data.size} bytes, shorter than llm.c's 1024-byte header; truncated or not an llm.c file")
    header = np.frombuffer(data[: 4 * HEADER_INTS].tobytes(), np.int32)
    if header[0] != MODEL_MAGIC:
        raise ExportError(f"{str(path)!r} does not start with llm.c's model magic {MODEL_MAGIC} (found {header[0]}); "
                          f"it is not an llm.c GPT-2 checkpoint")
    versions = {v: k for k, v in VERSIONS.items()}
    if int(header[1]) not in versions:
        raise ExportError(f"{str(path)!r} has llm.c checkpoint version {header[1]}; only 3 (float32) and 5 (bfloat16) are GPT-2 "
                          f"files with a padded vocabulary")
    dtype = versions[int(header[1])]
    try:
        config = ModelConfig(n_ctx=int(header[2]), n_vocab=int(header[3]), n_layer=int(header[4]), n_head=int(header[5]),
                             n_embd=int(header[6]))
    except ValueError as e:
        raise ExportError(f"{str(path)!r} has an impossible header ({e})") from None
    if int(header[7]) != padded_vocab(config.n_vocab):
        raise ExportError(f"{str(path)!r} header gives padded_vocab_size {header[7]}, llm.c pads {config.n_vocab} "
                          f"to {padded_vocab(config.n_vocab)}")
    layout = tensor_layout(config)
    item = numpy_dtype(dtype).itemsize
    expected = 4 * HEADER_INTS + item * sum(int(np.prod(s)) for _, s in layout)
    if data.size != expected:
        raise ExportError(f"{str(path)!r} is {data.size} bytes but its header describes {expected} "
                          f"({'truncated' if data.size < expected else 'trailing data'}); re-export it")
    tensors, offset = {}, 4 * HEADER_INTS
    for name, shape in layout:
        n = item * int(np.prod(shape))
        tensors[name] = np.frombuffer(data[offset: offset + n].tobytes(), numpy_dtype(dtype)).reshape(shape).astype(np.float32)
        offset += n
    by_path = {("wte", "embedding"): "wte", ("wpe", "embedding"): "wpe", ("ln_f", "scale"): "lnfw", ("ln_f", "bias"): "lnfb"}

    def take(path, shape):
        x = tensors[by_path[path]]
        return x[: config.n_vocab] if path[0] == "wte" else x

    def take_layer(t, shape):
        x = tensors[t.llmc]
        return np.swapaxes(x, 1, 2) if t.matrix else x

    params = params_from_tensors(config, take, take_layer)
    return config, params, _find_tokenizer(path)


def _find_tokenizer(model_path: pathlib.Path) -> tuple[list[bytes], int] | None:
    for name in (TOKENIZER_FILE, "gpt2_tokenizer.bin"):  # ours, and llm.c's own name
        if (model_path.parent / name).is_file():
            return read_tokenizer(model_path.parent / name)
    return None


def read_tokenizer(path: pathlib.Path) -> tuple[list[bytes], int]:
    data = path.read_bytes()
    if len(data) < 4 * HEADER_INTS:
        raise ExportError(f"{str(path)!r} is shorter than llm.c's tokenizer header; truncated")
    header = np.frombuffer(data[: 4 * HEADER_INTS], np.int32)
    if header[0] != TOKENIZER_MAGIC or header[1] != 2:
        raise ExportError(f"{str(path)!r} is not an llm.c tokenizer file version 2 (magic {header[0]}, version {header[1]})")
    tokens, offset = [], 4 * HEADER_INTS
    for _ in range(int(header[2])):
        if offset >= len(data) or offset + 1 + data[offset] > len(data):
            raise ExportError(f"{str(path)!r} ends after {len(tokens)} of {header[2]} tokens; truncated")
        n = data[offset]
        tokens.append(data[offset + 1: offset + 1 + n])
        offset += 1 + n
    if offset != len(data):
        raise ExportError(f"{str(path)!r} has {len(data) - offset} bytes after its {header[2]} tokens; not an llm.c tokenizer file")
    return tokens, int(header[3])
