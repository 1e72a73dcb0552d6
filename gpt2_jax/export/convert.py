"""Checkpoint <-> file conversions behind `gpt2-jax export` and `gpt2-jax import`.

`export_checkpoint` restores a checkpoint's parameters (one device, float32), finds its
vocabulary when the target format carries one, and hands both to the format's `save`; a μP
model is first folded into GPT-2's arithmetic (mup.to_standard) for every format but our own
(params, safetensors), which keep its config and so its multipliers;
`import_model` reads a file with the format's `load` and writes a params-only checkpoint whose
metadata records where it came from and its vocabulary. The formats themselves live one per
file beside this one; `FORMATS` says which can be read back and which dtypes each can hold.

References:
  See each format's module.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pathlib
import time

from gpt2_jax.export.names import FLOAT_DTYPES, ExportError
from gpt2_jax.export.output import atomic_output, check_new_output


@dataclasses.dataclass(frozen=True)
class Format:
    module: str  # gpt2_jax.export.<module>
    what: str  # one line for --help and messages
    dtypes: tuple[str, ...]
    can_import: bool
    carries_vocab: bool  # needs a byte-level BPE vocabulary to export


FORMATS: dict[str, Format] = {
    "hf": Format("hf", "Hugging Face GPT2LMHeadModel directory (safetensors + tokenizer files)", ("float32",), True, False),
    "params": Format("", "params-only Orbax checkpoint (for sampling)", ("float32",), False, False),
    "openai-tf": Format("openai_tf", "openai/gpt-2 release layout (TF checkpoint, hparams.json, encoder.json, vocab.bpe)",
                        ("float32",), True, True),
    "llmc": Format("llmc", "llm.c model.bin (v3 float32 / v5 bfloat16) + tokenizer.bin", ("float32", "bfloat16"), True, True),
    "gguf": Format("gguf_format", "GGUF for llama.cpp", (*FLOAT_DTYPES, "q8_0"), True, True),
    "onnx": Format("onnx_graph", "ONNX tokens -> logits graph for ONNX Runtime", ("float32",), False, False),
    "savedmodel": Format("savedmodel", "TensorFlow SavedModel with a serving_default tokens -> logits signature",
                         ("float32",), False, False),
    "safetensors": Format("flat_safetensors", "one safetensors file with our own parameter names", FLOAT_DTYPES, True, False),
}
IMPORT_FORMATS = tuple(name for name, f in FORMATS.items() if f.can_import)


def _is_safetensors(path: pathlib.Path) -> bool:
    with open(path, "rb") as f:  # u64 little-endian header length, then the JSON header
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 30


def _is_gguf(path: pathlib.Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


# One-file formats and how to recognise a file of theirs (what --force may replace); the rest write directories.
ONE_FILE = {"safetensors": _is_safetensors, "gguf": _is_gguf}


def _check_output(out, fmt: str, force: bool) -> pathlib.Path:
    return check_new_output(out, force, directory=fmt not in ONE_FILE, sniff=ONE_FILE.get(fmt), what=fmt)


def _module(fmt: str):
    return importlib.import_module(f"gpt2_jax.export.{FORMATS[fmt].module}")


def _check_format(fmt: str, importing: bool) -> Format:
    names = IMPORT_FORMATS if importing else tuple(FORMATS)
    if fmt not in names:
        raise ExportError(f"unknown format {fmt!r} for {'import' if importing else 'export'}; choose one of {', '.join(names)}")
    return FORMATS[fmt]


def export_checkpoint(ckpt_dir: str | os.PathLike, fmt: str, out: str | os.PathLike, *, step: int | None = None,
                      dtype: str = "float32", vocab: str | None = None, force: bool = False) -> dict:
    """Writes step `step` (default: newest) of a checkpoint as `fmt` at `out`. Returns a report
    (step, path, bytes, seconds, vocab)."""
    from gpt2_jax import checkpoint
    from gpt2_jax.export.vocab import ExportVocab

    spec = _check_format(fmt, importing=False)
    if dtype not in spec.dtypes:
        raise ExportError(f"format {fmt!r} cannot hold --dtype {dtype}; choose one of {', '.join(spec.dtypes)}")
    out = _check_output(out, fmt, force)
    directory = checkpoint.resolve_dir(ckpt_dir)
    start = time.perf_counter()
    if fmt == "params":
        if out.exists() and (out.is_file() or any(out.iterdir())):  # only reachable with --force
            raise ExportError(f"output {str(out)!r} already exists and --force does not replace params-only checkpoints; "
                              f"remove it first")
        step, path = checkpoint.export_params(directory, out, step=step)
        return _report(step, path, start, None)
    step, meta, _ = checkpoint.restore_meta(directory, step)
    _, cfg, params, _ = checkpoint.restore(directory, step=step)
    config, vocab_name = cfg.model, vocab or meta.get("vocab")
    if fmt != "safetensors":
        from gpt2_jax import mup

        config, params = mup.to_standard(config, params)
    export_vocab = None
    if spec.carries_vocab:
        export_vocab = ExportVocab.load(vocab_name, config.n_vocab, fmt)
    elif fmt == "hf" and vocab_name not in (None, "unknown"):
        export_vocab = ExportVocab.load(vocab_name, config.n_vocab, fmt)
    if fmt == "hf":
        from gpt2_jax.export.hf import save_hf_dir, write_tokenizer_files

        with atomic_output(out, directory=True, force=force) as tmp:
            save_hf_dir(tmp, config, params)
            if export_vocab is not None:
                write_tokenizer_files(tmp, export_vocab, config)
    elif fmt == "safetensors":
        _module(fmt).save(out, config, params, vocab_name, dtype=dtype, force=force)
    elif fmt in ("onnx", "savedmodel"):
        _module(fmt).save(out, config, params, dtype=dtype, force=force)
    else:
        _module(fmt).save(out, config, params, export_vocab, dtype=dtype, force=force)
    return _report(step, out, start, vocab_name)


def _report(step: int, path: pathlib.Path, start: float, vocab: str | None) -> dict:
    path = pathlib.Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return {"step": step, "path": str(path), "bytes": sum(p.stat().st_size for p in files),
            "seconds": time.perf_counter() - start, "vocab": vocab}


def read_model(src: str | os.PathLike, fmt: str):
    """(ModelConfig, params as float32 numpy, vocabulary) of a file in format `fmt`; the
    vocabulary is "gpt2", "unknown", or a tokenizer.BPEVocab the file brought."""
    from gpt2_jax.export.vocab import imported_vocab, vocab_from_tokens

    _check_format(fmt, importing=True)
    src = pathlib.Path(src)
    if not src.exists() and fmt != "hf":  # (load_hf_dir names the missing config.json itself)
        raise ExportError(f"{str(src)!r} does not exist; pass the file or directory to import")
    if fmt == "hf":
        from gpt2_jax.export.hf import load_hf_dir, read_tokenizer_files

        config, params = load_hf_dir(src)
        merges, specials = read_tokenizer_files(src)
        vocab = imported_vocab(merges, specials)
        if vocab == "unknown" and config.n_vocab == 50257:
            vocab = "gpt2"  # a save_pretrained model without tokenizer files: GPT-2's size means GPT-2's vocabulary
        return config, params, vocab
    if fmt == "openai-tf":
        from gpt2_jax.tokenizer import TokenizerError
        from gpt2_jax.tokenizer.formats import read_gpt2_files

        config, params = _module(fmt).load(src)
        directory = src if src.is_dir() else src.parent
        if not (directory / "encoder.json").is_file():
            return config, params, "unknown"
        try:
            merges, _, specials = read_gpt2_files(directory)
        except TokenizerError as e:
            raise ExportError(f"the vocabulary beside the checkpoint is unusable ({e})") from None
        return config, params, imported_vocab(merges, specials)
    if fmt == "llmc":
        config, params, tokenizer = _module(fmt).load(src)
        return config, params, "unknown" if tokenizer is None else vocab_from_tokens(*tokenizer, config.n_vocab)
    return _module(fmt).load(src)  # gguf, safetensors: (config, params, vocabulary)


def import_model(src: str | os.PathLike, fmt: str, out: str | os.PathLike, *, force: bool = False) -> dict:
    """Converts `src` to a params-only checkpoint (step 0) at `out`. Returns a report."""
    from gpt2_jax import checkpoint
    from gpt2_jax.config import TrainConfig
    from gpt2_jax.export.names import check_params_match
    from gpt2_jax.model import count_params

    out = _check_output(out, "checkpoint", force)
    start = time.perf_counter()
    config, params, vocab = read_model(src, fmt)
    check_params_match(params, config)
    cfg = TrainConfig(model=config, workdir="")
    with atomic_output(out, directory=True, force=force) as tmp:
        if not isinstance(vocab, str):  # a vocabulary of its own: kept beside the weights
            vocab.save(tmp / "vocab")
            vocab = str((out / "vocab").absolute())
        mngr = checkpoint.manager(tmp, keep=1)
        checkpoint.save(mngr, 0, cfg, params, None, {"vocab": vocab, "source": f"{fmt}:{pathlib.Path(src).absolute()}"})
        checkpoint.wait(mngr, 0)
        mngr.close()
    return {"path": str(out), "parameters": count_params(params, config), "vocab": vocab,
            "seconds": time.perf_counter() - start, "config": config}
