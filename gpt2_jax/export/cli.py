"""`gpt2-jax export`, `gpt2-jax import` (and its old name `import-hf`): weights in and out.

`add_parser(subparsers)` registers the commands on the main parser; user errors raise
ExportError (or CheckpointError, TokenizerError), which the main command prints as one line
`error: ...` with exit status 2. Nothing heavy is imported until a command runs.

References:
  gpt2_jax.export.convert (what each command does).
"""

from __future__ import annotations

import argparse
import contextlib

# Python module -> the pip package that provides it, for the formats' optional dependencies.
PIP_NAMES = {"tensorflow": "tensorflow-cpu", "gguf": "gguf", "onnx": "onnx", "safetensors": "safetensors"}


@contextlib.contextmanager
def format_packages(fmt: str):
    """A format whose writer or reader needs a package that is not installed (a lean GPU image, say)
    is a user error naming the package, not a traceback."""
    from gpt2_jax.export import ExportError

    try:
        yield
    except ModuleNotFoundError as e:
        package = PIP_NAMES.get((e.name or "").split(".")[0], e.name)
        raise ExportError(f"--format {fmt} needs the Python package {package!r}, which is not installed here: "
                          f"pip install {package}") from None

from gpt2_jax.cli_types import nonneg_int


def cmd_export(args: argparse.Namespace) -> int:
    from gpt2_jax.export.convert import FORMATS, export_checkpoint

    with format_packages(args.format):
        r = export_checkpoint(args.ckpt_dir, args.format, args.out, step=args.step, dtype=args.dtype,
                              vocab=args.vocab, force=args.force)
    mb = r["bytes"] / 2**20
    print(f"exported {args.ckpt_dir} step {r['step']} -> {r['path']} ({FORMATS[args.format].what}; {args.dtype}; "
          f"{mb:,.1f} MiB in {r['seconds']:.1f} s, {mb / max(r['seconds'], 1e-9):,.0f} MiB/s; vocab {r['vocab']})")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from gpt2_jax.export.convert import import_model

    with format_packages(args.format):
        r = import_model(args.src, args.format, args.out, force=args.force)
    print(f"imported {r['parameters']:,} parameters from {args.src} ({args.format}) -> {r['path']} (step 0; "
          f"vocab {r['vocab']}; {r['seconds']:.1f} s)")
    return 0


def add_parser(sub) -> None:
    from gpt2_jax.export.convert import FORMATS, IMPORT_FORMATS

    p = sub.add_parser("export", help="write a checkpoint in another framework's format")
    p.add_argument("ckpt_dir")
    p.add_argument("--format", choices=list(FORMATS), required=True,
                   help="; ".join(f"{name} = {f.what}" for name, f in FORMATS.items()))
    p.add_argument("--out", required=True, help="output file or directory (must not exist, unless --force)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "q8_0"],
                   help="stored weight type (default float32; which a format takes: see README)")
    p.add_argument("--step", type=nonneg_int, default=None, help="checkpoint step (default: the newest)")
    p.add_argument("--vocab", default=None, help="vocabulary to export with the weights (default: the checkpoint's)")
    p.add_argument("--force", action="store_true", help="replace an existing output (only once the new one is complete)")
    p.set_defaults(func=cmd_export)

    for name, help_text in (("import", "convert another framework's model to a checkpoint"),
                            ("import-hf", "same as `import --format hf` (old name)")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("src", metavar="SRC", help="model file or directory")
        if name == "import":
            p.add_argument("--format", choices=list(IMPORT_FORMATS), required=True)
        else:
            p.set_defaults(format="hf")
        p.add_argument("--out", required=True, help="new checkpoint directory")
        p.add_argument("--force", action="store_true", help="replace an existing checkpoint directory")
        p.set_defaults(func=cmd_import)
