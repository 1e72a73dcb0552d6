"""`gpt2-jax data prepare|stats|overlap|synthetic`: the data pipeline's commands.

`add_parser(subparsers)` registers the `data` command on the main `gpt2-jax` parser; every
sub-command's `func(args)` returns an exit status, and user errors raise `DataError`
(CorpusError, ShardError) or TokenizerError, which the main command prints as one line.
Nothing heavy is imported until a sub-command runs (TensorFlow only for `--format tfds`).
`python -m gpt2_jax.data.cli ...` runs the same commands on their own.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from gpt2_jax.cli_types import float_in, int_at_least, nonneg_int, positive_float, positive_int

MAX_SYNTHETIC_BYTES = 1_000_000_000  # `data synthetic` builds the sample in memory (8 bytes per symbol)


def cmd_prepare(args: argparse.Namespace) -> int:
    from gpt2_jax.data.clean import Recipe, format_report
    from gpt2_jax.data.prepare import prepare

    recipe = Recipe(invalid_utf8=args.invalid_utf8, normalize=not args.no_normalize, min_words=args.min_words,
                    max_chars=args.max_chars, wikipedia_filter=not args.no_wikipedia_filter,
                    exact_dedup=not args.no_dedup, near_dedup=not (args.no_dedup or args.no_near_dedup),
                    near_dup_threshold=args.near_dup_threshold, split=args.split, val_fraction=args.val_fraction)
    from gpt2_jax.workdir_lock import hold

    say = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
    signal.signal(signal.SIGTERM, _terminated)  # a clean stop (workers die with this process: worker_lifetime.py)
    common = dict(format=args.format, recipe=recipe, workers=args.workers, shard_bytes=max(1, int(args.shard_mb * 2**20)),
                  text_field=args.text_field, url_field=args.url_field, tfds_data_dir=args.tfds_data_dir,
                  tfds_split=args.tfds_split, say=say)
    with hold(args.out, "gpt2-jax data prepare"):  # one writer per output directory
        if args.runner == "beam":
            from gpt2_jax.data.beam_prepare import prepare_beam

            manifest = prepare_beam(args.input, args.out, args.vocab, beam_options=args.beam_option, **common)
        else:
            manifest = prepare(args.input, args.out, args.vocab, progress=not args.no_progress, **common)
    print(format_report(manifest["report"]))
    _print_splits(manifest)
    print(f"wrote {args.out}")
    return 0


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt  # the main command prints one line and exits; a rerun resumes


def cmd_stats(args: argparse.Namespace) -> int:
    import pathlib

    from gpt2_jax.data.clean import format_report
    from gpt2_jax.data.errors import ShardError
    from gpt2_jax.data.shards import read_manifest, read_shard, shard_sha256

    manifest = read_manifest(args.shards_dir)
    if args.verify:
        for split, entry in manifest["splits"].items():
            for f in entry.get("files", [{"name": n} for n in entry["shards"]]):
                path = pathlib.Path(args.shards_dir) / f["name"]
                n = read_shard(path).size  # checks the header against the file size
                if "tokens" in f and n != f["tokens"]:
                    raise ShardError(f"shard {str(path)!r} holds {n} tokens, the manifest says {f['tokens']}")
                if "sha256" in f and shard_sha256(path) != f["sha256"]:
                    raise ShardError(f"shard {str(path)!r} does not match its checksum in the manifest; re-create it")
    if args.json:
        print(json.dumps({k: manifest[k] for k in manifest if k != "prepare_key"}, indent=2))
        return 0
    print(f"shards      {args.shards_dir} ({manifest['format']})")
    print(f"vocab       {manifest['vocab']} (n_vocab {manifest['n_vocab']}, eot {manifest['eot_id']}, "
          f"fingerprint {manifest.get('vocab_fingerprint')})")
    if "documents" in manifest:
        print(f"documents   {manifest['documents']:,}")
    _print_splits(manifest)
    if "report" in manifest:
        print(format_report(manifest["report"]))
    if args.verify:
        print("verified    every shard's header, token count and sha256")
    return 0


def cmd_overlap(args: argparse.Namespace) -> int:
    import pathlib

    from gpt2_jax.data.errors import CorpusError
    from gpt2_jax.data.overlap import format_overlap, overlap

    for path in args.eval:  # before the (minutes of) Bloom filter over the training shards
        if not pathlib.Path(path).exists():
            raise CorpusError(f"input {path!r} does not exist; pass each evaluation set's file or folder")
    report = overlap(args.train, args.eval, n=args.n, fpr=args.fpr, format=args.format, text_field=args.text_field,
                     vocab=args.vocab, progress=not args.no_progress)
    print(json.dumps(report, indent=2) if args.json else format_overlap(report))
    return 0


def cmd_synthetic(args: argparse.Namespace) -> int:
    """A corpus from a random Markov chain with a known entropy rate (gpt2_jax/scaling/synthetic.py):
    DIR/corpus.txt (one document; `data prepare --split tail` makes train and validation from it)
    and DIR/source.json (the parameters and the entropy rate)."""
    import os
    import pathlib
    import shutil
    import tempfile

    from gpt2_jax.data import clean
    from gpt2_jax.data.errors import CorpusError
    from gpt2_jax.scaling.synthetic import markov_source

    if args.bytes > MAX_SYNTHETIC_BYTES:
        raise CorpusError(f"--bytes {args.bytes:,} is more than {MAX_SYNTHETIC_BYTES:,}; the sample is held in memory")
    out = pathlib.Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise CorpusError(f"--out {args.out!r} exists and is not empty; choose a new directory")
    source = markov_source(args.alphabet, args.order, args.support, args.seed, args.concentration)
    indices = source.sample(args.bytes, args.seed + 1)  # a stream of its own, not the table's
    info = {**source.describe(), "support": args.support, "concentration": args.concentration, "seed": args.seed,
            "bytes": args.bytes,
            # the floor for a model trained on windows of seq_len tokens (synthetic.py, Source.window_floor)
            "window_floor_bits_per_byte": {str(t): source.window_floor(t) for t in (64, 128, 256, 1024)}}
    # Written into a sibling and renamed into place (rename(2) may replace an empty directory), so
    # an interrupted run leaves no corpus without its source.json, nor a cut corpus.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        (tmp / "corpus.txt").write_text(source.text(indices), encoding="ascii")
        (tmp / "source.json").write_text(json.dumps(info, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; a corpus is ordinary data
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"entropy rate {source.entropy_rate:.4f} bits per byte ({source.recurrent_contexts:,} of "
          f"{len(source.stationary):,} contexts recurrent); wrote {out / 'corpus.txt'} and {out / 'source.json'}")
    print(f"next: gpt2-jax data prepare --input {out / 'corpus.txt'} --vocab bytes --out {out / 'shards'} "
          f"--split tail --val-fraction 0.1 --min-words 0 --no-dedup --no-wikipedia-filter"
          + (f" --max-chars {args.bytes}" if args.bytes > clean.MAX_CHARS else ""))
    return 0


def _print_splits(manifest: dict) -> None:
    for split, entry in manifest["splits"].items():
        docs = f", {entry['documents']:,} documents" if "documents" in entry else ""
        print(f"{split:<11} {entry['tokens']:,} tokens in {len(entry['shards'])} shard(s){docs}")


def add_parser(subparsers) -> None:
    """Registers `data` (with prepare, stats, overlap, synthetic) on the main parser's subparsers."""
    from gpt2_jax.data.readers import FORMATS

    data = subparsers.add_parser("data", help="prepare token shards from a corpus; inspect them; train/eval overlap; synthetic corpora")
    sub = data.add_subparsers(dest="data_command", required=True)

    p = sub.add_parser("prepare", help="corpus -> WebText-style cleaning -> token shards + manifest (resumable)")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="files, folders, JSONL, OpenWebText archives, or TFDS dataset names")
    p.add_argument("--vocab", default="gpt2", help="'gpt2', 'bytes' (256 bytes + <|endoftext|>, no merges) or a "
                                                   "vocabulary directory (gpt2-jax tokenizer train)")
    p.add_argument("--out", required=True, metavar="SHARDS_DIR", help="output directory (a rerun resumes it)")
    p.add_argument("--format", choices=FORMATS, default="auto")
    p.add_argument("--text-field", default="text", help="JSONL/TFDS field holding the document")
    p.add_argument("--url-field", default="url", help="JSONL/TFDS field holding the page URL (Wikipedia filter)")
    p.add_argument("--tfds-data-dir", default=None, help="local TFDS data_dir (nothing is downloaded)")
    p.add_argument("--tfds-split", default=None, help="one TFDS split (default: all)")
    p.add_argument("--split", choices=["hash", "tail"], default="hash",
                   help="hash: by document hash (default); tail: last val-fraction of the token stream")
    p.add_argument("--val-fraction", type=float_in(0.0, 1.0, high_open=True), default=0.01)
    p.add_argument("--invalid-utf8", choices=["error", "drop"], default="error",
                   help="a document that is not UTF-8 stops the run (default) or is dropped and counted")
    p.add_argument("--min-words", type=nonneg_int, default=64, help="drop documents with fewer words")
    p.add_argument("--max-chars", type=positive_int, default=4_000_000, help="drop documents with more characters")
    p.add_argument("--near-dup-threshold", type=float_in(0.0, 1.0, low_open=True), default=0.8, help="MinHash Jaccard estimate to drop")
    p.add_argument("--no-normalize", action="store_true", help="keep text exactly as read")
    p.add_argument("--no-wikipedia-filter", action="store_true")
    p.add_argument("--no-near-dedup", action="store_true", help="exact dedup only")
    p.add_argument("--no-dedup", action="store_true", help="neither exact nor near dedup")
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: one per core; 1 = in-process)")
    p.add_argument("--shard-mb", type=positive_float, default=400.0, help="text per shard in MiB (400 = about 100M tokens)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no stage messages on stderr")
    p.add_argument("--runner", choices=["local", "beam"], default="local",
                   help="local: worker processes of this host; beam: the same recipe as an Apache Beam pipeline "
                        "(same shards; DirectRunner with --workers processes unless --beam-option says otherwise)")
    p.add_argument("--beam-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a Beam pipeline option, repeatable, e.g. runner=DataflowRunner project=P region=R "
                        "temp_location=gs://B/tmp extra_package=dist/gpt2_jax-0.1.0.tar.gz")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("stats", help="documents, tokens and per-stage counts of a shard directory")
    p.add_argument("shards_dir", metavar="SHARDS_DIR")
    p.add_argument("--verify", action="store_true", help="also check every shard's size and sha256")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("overlap", help="fraction of each eval set's 8-grams found in the training shards (Bloom filter)")
    p.add_argument("--train", required=True, metavar="SHARDS_DIR")
    p.add_argument("--eval", nargs="+", required=True, metavar="PATH", help="one evaluation set per PATH")
    p.add_argument("--n", type=positive_int, default=8, help="n-gram length in words")
    p.add_argument("--fpr", type=float_in(0.0, 1.0, low_open=True, high_open=True), default=1e-8, help="Bloom filter false-positive rate bound")
    p.add_argument("--format", choices=[f for f in FORMATS if f != "tfds"], default="auto")
    p.add_argument("--text-field", default="text")
    p.add_argument("--vocab", default=None, help="vocabulary to decode the shards (default: the manifest's)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_overlap)

    p = sub.add_parser("synthetic", help="a corpus from a random order-k Markov chain whose entropy rate is known "
                                         "(scaling-law checks: the true irreducible loss)")
    p.add_argument("--out", required=True, metavar="DIR", help="new directory for corpus.txt and source.json")
    p.add_argument("--bytes", type=positive_int, required=True, metavar="N", help="length of the corpus (1 symbol = 1 byte)")
    p.add_argument("--alphabet", type=int_at_least(2), default=16, metavar="A", help="symbols (letters, digits; at most 62)")
    p.add_argument("--order", type=nonneg_int, default=3, metavar="K", help="symbols of context (0 = i.i.d.)")
    p.add_argument("--support", type=int_at_least(2), default=4, metavar="S", help="possible next symbols per context")
    p.add_argument("--concentration", type=float_in(0.0, low_open=True), default=1.0, metavar="C",
                   help="how closely a context's next-symbol probabilities follow the shorter context's "
                        "(hierarchical Dirichlet; smaller = more to learn at each order)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="draws the chain (and, with seed + 1, the sample)")
    p.set_defaults(func=cmd_synthetic)


def user_errors() -> tuple[type[Exception], ...]:
    from gpt2_jax.data.errors import DataError
    from gpt2_jax.tokenizer import TokenizerError

    return (DataError, TokenizerError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt2-jax")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
