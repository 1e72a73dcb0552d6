"""`gpt2-jax tokenizer train|encode|decode`: the tokenizer's command line, registered by `add_parser`.

  gpt2-jax tokenizer train --input PATH... --vocab-size N --out VOCAB_DIR [--kind bbpe|sentencepiece]
  gpt2-jax tokenizer encode --vocab VOCAB_DIR|gpt2|bytes < text.txt   > ids.txt   (ids on one line)
  gpt2-jax tokenizer decode --vocab VOCAB_DIR|gpt2|bytes < ids.txt    > text.txt

encode reads UTF-8 bytes from stdin exactly (no newline translation) and writes the ids on one
line, space separated; decode reads whitespace-separated ids and writes the decoded bytes with
nothing added, so `encode | decode` reproduces the input byte for byte. User errors raise
TokenizerError; the main CLI prints it as one `error: ...` line with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time

from gpt2_jax.tokenizer.errors import TokenizerError
from gpt2_jax.tokenizer.formats import ENDOFTEXT, check_output_dir

DECODE_ERRORS = ("replace", "strict", "ignore", "backslashreplace", "surrogateescape")


def cmd_train(args: argparse.Namespace) -> int:
    check_output_dir(args.out)  # before spending the training time
    start = time.perf_counter()
    specials = args.special_tokens or [ENDOFTEXT]
    if args.kind == "sentencepiece":
        from gpt2_jax.tokenizer.sentencepiece_backend import train_sentencepiece

        vocab = train_sentencepiece(args.vocab_size, files=args.input, special_tokens=specials, processes=args.processes)
    else:
        from gpt2_jax.tokenizer.trainer import train_bbpe

        vocab = train_bbpe(args.vocab_size, files=args.input, special_tokens=specials, processes=args.processes,
                           progress=not args.no_progress)
    out = vocab.save(args.out)
    print(f"trained a {args.kind} vocabulary of {args.vocab_size} tokens on {len(args.input)} file(s) in "
          f"{time.perf_counter() - start:.1f} s -> {out}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from gpt2_jax.tokenizer.vocab import load_tokenizer

    tok = load_tokenizer(args.vocab)
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TokenizerError(f"stdin is not UTF-8 (bad byte at offset {e.start}); convert the text to UTF-8") from None
    ids = tok.encode(text, allow_special=args.allow_special)
    sys.stdout.write(" ".join(map(str, ids)) + "\n")
    sys.stdout.flush()
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from gpt2_jax.tokenizer.vocab import load_tokenizer

    tok = load_tokenizer(args.vocab)
    words = sys.stdin.buffer.read().split()
    try:
        ids = [int(w) for w in words]
    except ValueError:
        bad = next(w for w in words if not w.lstrip(b"-").isdigit())
        raise TokenizerError(f"stdin must hold integer token ids separated by whitespace; found {bad[:40]!r}") from None
    data = tok.decode_bytes(ids)
    if args.errors != "surrogateescape":  # surrogateescape writes the raw bytes through
        try:
            data = data.decode("utf-8", errors=args.errors).encode("utf-8")
        except UnicodeDecodeError as e:
            raise TokenizerError(f"the ids decode to bytes that are not UTF-8 (byte {e.start}); "
                                 f"use --errors replace (or surrogateescape for the raw bytes)") from None
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0


def _positive_int(text: str) -> int:
    """--processes: checked while parsing, before any progress bar starts."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def add_parser(subparsers) -> None:
    """Registers `tokenizer` (with train, encode, decode) on an argparse subparsers object."""
    parser = subparsers.add_parser("tokenizer", help="train a vocabulary; encode or decode text",
                                   description="Byte-level BPE (GPT-2) and sentencepiece vocabularies.")
    sub = parser.add_subparsers(dest="tokenizer_command", required=True)

    p = sub.add_parser("train", help="learn a vocabulary from text files")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help="UTF-8 text files (each one document)")
    p.add_argument("--vocab-size", type=int, required=True, metavar="N",
                   help="total tokens: 256 bytes + merges + special tokens (at most 65536)")
    p.add_argument("--out", required=True, metavar="VOCAB_DIR", help="new directory for the vocabulary files")
    p.add_argument("--kind", choices=("bbpe", "sentencepiece"), default="bbpe",
                   help="bbpe = GPT-2's byte-level BPE (default); sentencepiece = BPE with byte fallback")
    p.add_argument("--special-token", dest="special_tokens", action="append", metavar="TOKEN",
                   help=f"a special token (repeatable; default {ENDOFTEXT}, which must be included)")
    p.add_argument("--processes", type=_positive_int, default=None, help="counting processes (default: all cores for inputs >= 32 MiB)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("encode", help="UTF-8 text on stdin -> token ids on one line")
    p.add_argument("--vocab", default="gpt2", metavar="VOCAB_DIR|gpt2|bytes", help="vocabulary (default: gpt2)")
    p.add_argument("--allow-special", action="store_true", help=f"turn {ENDOFTEXT} in the text into its id "
                   "(default: encode it as ordinary text)")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="token ids on stdin -> text")
    p.add_argument("--vocab", default="gpt2", metavar="VOCAB_DIR|gpt2|bytes", help="vocabulary (default: gpt2)")
    p.add_argument("--errors", choices=DECODE_ERRORS, default="replace",
                   help="bytes that are not UTF-8: replace with U+FFFD (default), strict = error, ignore, "
                        "backslashreplace, surrogateescape = write the raw bytes")
    p.set_defaults(func=cmd_decode)
