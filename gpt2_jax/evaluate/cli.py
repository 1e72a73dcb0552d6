"""`gpt2-jax eval CKPT_DIR --task NAME[,NAME...] --data PATH`: zero-shot evaluation.

`add_parser(subparsers)` registers the command; user errors raise `EvalError`, which the main
command prints as one `error: ...` line with exit status 2. With `--json` the last stdout line is
`{"TASK": {"METRIC": value, ...}, ...}` (lm-eval's metric names plus counts).
"""

from __future__ import annotations

import argparse
import json
import pathlib

from gpt2_jax import compilation_cache
from gpt2_jax.cli_types import positive_int


def cmd_eval(args: argparse.Namespace) -> int:
    from gpt2_jax.evaluate import report
    from gpt2_jax.evaluate.runner import evaluate
    from gpt2_jax.os_errors import check_writable

    compilation_cache.enable()
    if args.out:  # before the (minutes of) evaluation, not after
        check_writable(args.out, directory=True)
    run = evaluate(args.ckpt_dir, args.task, args.data, protocol=args.protocol, stride=args.stride,
                   batch_size=args.batch_size, limit=args.limit, vocab=args.vocab, progress=not args.no_progress,
                   overlap=args.overlap)
    model = pathlib.Path(args.ckpt_dir).resolve().name
    print(report.markdown(model, run["results"], args.protocol), end="")
    for task, timing in run["meta"]["timing"].items():
        rate = f"{timing['tokens_per_sec']:,.0f} scored tokens/s, " if timing["tokens_per_sec"] else ""
        print(f"- {task}: {rate}{timing['seconds']:.1f} s")
    if args.out:
        paths = report.write(args.out, model, run["results"], args.protocol, run["meta"])
        print("wrote " + ", ".join(map(str, paths)))
    if args.json:
        print(json.dumps(run["results"]))
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    from gpt2_jax.evaluate.registry import TASKS

    p = sub.add_parser("eval", help="zero-shot evaluation of a checkpoint (the paper's section 3 tasks)")
    p.add_argument("ckpt_dir", help="a checkpoint directory (train, import-hf or export --format params)")
    p.add_argument("--task", required=True, help=f"comma-separated task names: {', '.join(TASKS)}")
    p.add_argument("--data", required=True,
                   help="the task's data file; comma-separated, one per task; or a folder holding each task's file")
    p.add_argument("--protocol", default="paper", choices=["paper", "lm-eval"],
                   help="paper = GPT-2 paper's method (detokenizers, overlapping windows); lm-eval = "
                        "lm-evaluation-harness's numbers")
    p.add_argument("--stride", type=positive_int, default=None, help="rolling-window stride in tokens (paper default n_ctx/2)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per model call (rounded up to the device count)")
    p.add_argument("--limit", type=positive_int, default=None, help="at most N documents/examples per task")
    p.add_argument("--out", default=None, help="folder for eval.json and eval.md")
    p.add_argument("--json", action="store_true", help="last stdout line: the results as one JSON object")
    p.add_argument("--vocab", default=None, help="vocabulary (default: the checkpoint's)")
    p.add_argument("--overlap", default=None, metavar="SHARDS_DIR",
                   help="report each task's 8-gram overlap with this shard directory's train split, and its "
                        "metrics on overlapping vs clean examples (paper section 4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)
    return p
