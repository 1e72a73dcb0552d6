"""GGUF files for llama.cpp (architecture `gpt2`), written and read with the `gguf` package.

Keys and tensor names are those llama.cpp's own `convert_hf_to_gguf.py` emits for
GPT2LMHeadModel: `gpt2.{block_count, context_length, embedding_length, feed_forward_length,
attention.head_count, attention.layer_norm_epsilon}`, `general.file_type`; tensors
`token_embd`, `position_embd`, `blk.{i}.{attn_norm, attn_qkv, attn_output, ffn_norm, ffn_up,
ffn_down}.{weight,bias}`, `output_norm`. GGUF lists dimensions fastest-first, so a numpy array
[out, in] (PyTorch `nn.Linear` layout) is what llama.cpp's `{n_in, n_out}` means: our [in, out]
kernels are transposed. `output.weight` is left out: llama.cpp's gpt2 loader then uses
`token_embd` for the tied head. The tokenizer is `tokenizer.ggml.model = "gpt2"`, pre-tokenizer
`gpt-2`, tokens in GPT-2's byte-to-unicode alphabet (as in encoder.json), merges as "a b" lines,
the separator as bos/eos (type CONTROL) and no automatic BOS.

Matrices and embeddings are stored in the requested type (f32, f16, bf16 or q8_0, via the gguf
package's quantizers, as llama.cpp's converter does); 1-D tensors (norms, biases) stay f32. For
q8_0 the file is what llama.cpp's own quantizer (`llama-quantize`, `llama_model_quantize`) makes
from our f32 export, tensor for tensor and byte for byte (tests/test_export_runtimes.py): it never
quantizes `position_embd`, and it records `general.quantization_version`.

References:
  ggml-org/llama.cpp convert_hf_to_gguf.py (GPT2Model, _set_vocab_gpt2), src/models/gpt2.cpp
  (tensor shapes), src/llama-quant.cpp ("Do not quantize positional embeddings"), gguf-py/gguf/constants.py (MODEL_ARCH.GPT2, LlamaFileType); GGUF spec docs/gguf.md.
"""

from __future__ import annotations

import pathlib

import numpy as np

from gpt2_jax.config import ModelConfig
from gpt2_jax.export.names import (GLOBAL_TENSORS, ExportError, check_dtype, check_standard, flat_tensors,
                                   params_from_tensors)
from gpt2_jax.export.output import atomic_output

ARCH = "gpt2"
DTYPES = ("float32", "float16", "bfloat16", "q8_0")


def _types():
    import gguf

    Q, F = gguf.GGMLQuantizationType, gguf.LlamaFileType
    return {"float32": (Q.F32, F.ALL_F32), "float16": (Q.F16, F.MOSTLY_F16),
            "bfloat16": (Q.BF16, F.MOSTLY_BF16), "q8_0": (Q.Q8_0, F.MOSTLY_Q8_0)}


def tensors(config: ModelConfig, params) -> dict[str, np.ndarray]:
    """GGUF name -> float32 array in llama.cpp's layout."""
    return flat_tensors(config, params, "gguf", lambda i, name: f"blk.{i}.{name}", lambda w: w.T)  # [out, in]


def save(out: pathlib.Path, config: ModelConfig, params, vocab, dtype: str = "float32", force: bool = False) -> pathlib.Path:
    import gguf

    from gpt2_jax.tokenizer.formats import token_to_str

    check_dtype("gguf", dtype, DTYPES)
    check_standard(config, "gguf")
    qtype, ftype = _types()[dtype]
    with atomic_output(out, directory=False, force=force) as tmp:
        w = gguf.GGUFWriter(str(tmp), ARCH)
        w.add_name("GPT-2 (gpt2_jax export)")
        w.add_block_count(config.n_layer)
        w.add_context_length(config.n_ctx)
        w.add_embedding_length(config.n_embd)
        w.add_feed_forward_length(4 * config.n_embd)
        w.add_head_count(config.n_head)
        w.add_layer_norm_eps(config.layer_norm_epsilon)
        w.add_file_type(ftype)
        if qtype == gguf.GGMLQuantizationType.Q8_0:
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if vocab is not None:
            specials = set(vocab.special_tokens.values())
            w.add_tokenizer_model("gpt2")
            w.add_tokenizer_pre("gpt-2")
            w.add_token_list([t.decode("utf-8") if i in specials else token_to_str(t) for i, t in enumerate(vocab.tokens)])
            w.add_token_types([gguf.TokenType.CONTROL if i in specials else gguf.TokenType.NORMAL
                               for i in range(vocab.n_vocab)])
            w.add_token_merges([f"{token_to_str(a)} {token_to_str(b)}" for a, b in vocab.merges])
            w.add_bos_token_id(vocab.eot_id)
            w.add_eos_token_id(vocab.eot_id)
            w.add_add_bos_token(False)
        for name, x in tensors(config, params).items():
            keep_f32 = qtype == gguf.GGMLQuantizationType.Q8_0 and name == "position_embd.weight"  # as llama.cpp
            if x.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32 or keep_f32:
                w.add_tensor(name, x)
            elif qtype == gguf.GGMLQuantizationType.F16:
                w.add_tensor(name, x.astype(np.float16))
            else:
                if qtype == gguf.GGMLQuantizationType.Q8_0 and x.shape[-1] % 32:
                    raise ExportError(f"tensor {name} has rows of {x.shape[-1]} values; q8_0 needs a multiple of 32 "
                                      f"(n_embd={config.n_embd}); use --dtype float16")
                w.add_tensor(name, gguf.quants.quantize(x, qtype), raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file(progress=False)
        w.close()
    return out


def load(src: str | pathlib.Path):
    """(config, params as float32, vocabulary: "gpt2" | BPEVocab | "unknown") of a GPT-2 GGUF file."""
    import gguf

    from gpt2_jax.export.vocab import imported_vocab

    src = pathlib.Path(src)
    try:
        reader = gguf.GGUFReader(str(src))
    except Exception as e:  # the reader raises ValueError/struct errors/... for damaged files
        raise ExportError(f"{str(src)!r} is not a readable GGUF file ({type(e).__name__}: {str(e)[:200]})") from None

    def field(key: str, required: bool = True):
        f = reader.fields.get(key)
        if f is None:
            if required:
                raise ExportError(f"{str(src)!r} has no {key!r} key; it is not a GPT-2 GGUF file")
            return None
        return f.contents()

    arch = field("general.architecture")
    if arch != ARCH:
        raise ExportError(f"{str(src)!r} holds architecture {arch!r}; only 'gpt2' can be imported")
    by_name = {t.name: t for t in reader.tensors}
    token_embd = by_name.get("token_embd.weight")
    if token_embd is None:
        raise ExportError(f"{str(src)!r} has no token_embd.weight tensor")
    try:
        config = ModelConfig(n_vocab=int(token_embd.shape[1]), n_ctx=int(field(f"{ARCH}.context_length")),
                             n_embd=int(field(f"{ARCH}.embedding_length")), n_head=int(field(f"{ARCH}.attention.head_count")),
                             n_layer=int(field(f"{ARCH}.block_count")),
                             # stored as float32: its shortest decimal gives back e.g. 1e-05
                             layer_norm_epsilon=float(str(np.float32(field(f"{ARCH}.attention.layer_norm_epsilon")))))
    except ValueError as e:
        raise ExportError(f"{str(src)!r} has impossible hyperparameters ({e})") from None
    ff = field(f"{ARCH}.feed_forward_length", required=False)
    if ff is not None and int(ff) != 4 * config.n_embd:
        raise ExportError(f"{str(src)!r} has feed_forward_length {ff}; GPT-2 uses 4 * n_embd = {4 * config.n_embd}")

    def read(name: str, shape: tuple[int, ...]) -> np.ndarray:
        t = by_name.get(name)
        if t is None:
            raise ExportError(f"tensor {name!r} is missing from {str(src)!r}")
        x = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
        if x.shape != shape:
            raise ExportError(f"tensor {name!r} has shape {x.shape}, the header implies {shape}")
        return x

    def take(path, shape):
        return read(GLOBAL_TENSORS[path]["gguf"], shape)

    def take_layer(t, shape):
        stored = shape[::-1] if t.matrix else shape
        return np.stack([read(f"blk.{i}.{t.gguf}", stored).T if t.matrix else read(f"blk.{i}.{t.gguf}", stored)
                         for i in range(config.n_layer)])

    params = params_from_tensors(config, take, take_layer)
    return config, params, _vocab(field, config, imported_vocab)


def _vocab(field, config: ModelConfig, imported_vocab):
    from gpt2_jax.tokenizer.formats import str_to_token

    if field("tokenizer.ggml.model", required=False) != "gpt2":
        return "unknown"
    tokens, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type", required=False)
    merges = field("tokenizer.ggml.merges")
    if len(tokens) != config.n_vocab:
        raise ExportError(f"the GGUF tokenizer lists {len(tokens)} tokens but token_embd has {config.n_vocab} rows")
    control = 3  # gguf.TokenType.CONTROL
    specials = {t: i for i, t in enumerate(tokens) if types is not None and types[i] == control}
    try:
        merge_pairs = [tuple(str_to_token(part) for part in m.split(" ", 1)) for m in merges]
    except KeyError:
        raise ExportError("the GGUF tokenizer's merges are not in GPT-2's byte alphabet; only byte-level BPE can be imported") from None
    return imported_vocab(merge_pairs, specials)
