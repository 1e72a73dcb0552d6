"""The `gpt2-jax` command line: train, sample, import, export, ckpt-info.

Every error a user can cause (bad config, missing checkpoint, bad prompt, unreadable model
files) ends the command with one line on stderr, `error: ...`, and exit status 2. JAX and the
heavy modules are imported inside each command so `gpt2-jax --help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from gpt2_jax import compilation_cache
from gpt2_jax.cli_types import OneLineParser, float_in, nonneg_int, positive_float, positive_int


def _user_errors() -> tuple[type[Exception], ...]:
    from gpt2_jax.checkpoint import CheckpointError
    from gpt2_jax.config import ConfigError
    from gpt2_jax.data.errors import DataError
    from gpt2_jax.evaluate.errors import EvalError
    from gpt2_jax.export import ExportError
    from gpt2_jax.sample import SampleError
    from gpt2_jax.scaling import ScalingError
    from gpt2_jax.tokenizer import TokenizerError
    from gpt2_jax.workdir_lock import BusyError

    return (ConfigError, CheckpointError, DataError, ExportError, SampleError, TokenizerError, EvalError, ScalingError,
            BusyError)


def cmd_train(args: argparse.Namespace) -> int:
    import pathlib

    from gpt2_jax.config import TrainConfig, apply_overrides, load_experiment

    rest = list(args.overrides)
    cfg = load_experiment(rest.pop(0)) if rest and rest[0].endswith(".py") else TrainConfig()
    cfg = apply_overrides(cfg, rest)
    compilation_cache.enable(cfg.workdir)  # before anything compiles; GPT2_JAX_CACHE_DIR=none turns it off

    from gpt2_jax import sample, train
    from gpt2_jax.tokenizer import load_tokenizer

    if args.compile_only or args.topology:
        return _compile_only(cfg, args)
    result = train.train(cfg, progress=not args.no_progress)
    import jax

    if jax.process_index() != 0:
        return 0
    print("\n== report ==")
    print(f"steps trained      {result.step} (workdir {cfg.workdir})")
    print(f"final train loss   {result.loss if result.loss is None else f'{result.loss:.4f}'}")
    print(f"final eval loss    {result.eval_loss if result.eval_loss is None else f'{result.eval_loss:.4f}'}")
    if result.tokens_per_sec:
        print(f"throughput         {result.tokens_per_sec:,.0f} tokens/s ({result.seconds:.0f} s wall)")
    print(f"checkpoint         {result.checkpoint or '(none written)'}")
    print(f"metrics            {cfg.workdir}/metrics.jsonl, {cfg.workdir}/tensorboard/")
    if cfg.sample_prompt and cfg.sample_tokens and jax.process_count() == 1 and result.stopped is None:
        from gpt2_jax import checkpoint

        _, meta, _ = checkpoint.restore_meta(pathlib.Path(cfg.workdir) / "checkpoints")
        tok = load_tokenizer(meta.get("vocab", "gpt2"))
        prompt = tok.encode(cfg.sample_prompt, allow_special=True)
        budget = min(cfg.sample_tokens, cfg.model.n_ctx - len(prompt))
        ids = sample.generate(result.params, cfg.model, prompt, max_new_tokens=budget, temperature=0.8, top_k=200, seed=cfg.seed)
        print(f"sample (temperature 0.8, top-k 200, {budget} tokens):\n{'-' * 60}\n{tok.decode(ids[0])}\n{'-' * 60}")
    return 0


def _compile_only(cfg, args: argparse.Namespace) -> int:
    """`train --compile-only [--topology NAME [--slices N]] [--json]` (compile_report.py). With
    --json the JSON report is stdout's only line and the readable one goes to stderr."""
    from gpt2_jax import compile_report, topology

    devices = topology.devices(args.topology, args.slices) if args.topology else None
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    try:
        report = compile_report.compile_report(cfg, devices, topology=args.topology, say=say)
    except compile_report.DoesNotFit as no_fit:
        if args.json and no_fit.report is not None:
            print(json.dumps(no_fit.report))
        raise
    if args.json:
        print(json.dumps(report))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from gpt2_jax import checkpoint, sample
    from gpt2_jax.tokenizer import load_tokenizer

    compilation_cache.enable()

    try:  # argv bytes that are not UTF-8 arrive as surrogates; encoding would turn them into U+FFFD
        args.prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise sample.SampleError("--prompt is not valid UTF-8; pass the prompt as UTF-8 text") from None
    directory = checkpoint.resolve_dir(args.ckpt_dir)
    _, meta, _ = checkpoint.restore_meta(directory)
    tok = load_tokenizer(args.vocab or meta.get("vocab", "gpt2"))
    prompt = tok.encode(args.prompt, allow_special=True)
    _, cfg, params, _ = checkpoint.restore(directory)
    ids = sample.generate(params, cfg.model, prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, greedy=args.greedy, seed=args.seed)[0]
    print(" ".join(map(str, ids.tolist())) if args.ids else tok.decode(ids))
    return 0


def cmd_ckpt_info(args: argparse.Namespace) -> int:
    from gpt2_jax import checkpoint
    from gpt2_jax.finite import count_nonfinite
    from gpt2_jax.model import count_params

    directory = checkpoint.resolve_dir(args.ckpt_dir)
    step, cfg, params, _ = checkpoint.restore(directory, step=args.step)
    _, meta, _ = checkpoint.restore_meta(directory, step)
    info = {
        "step": step,
        "steps": checkpoint.step_summaries(directory),
        "state": {k: meta[k] for k in ("skipped_steps", "eval_loss", "rng", "data") if k in meta},
        "parameters": count_params(params, cfg.model),
        "checksum": checkpoint.params_checksum(params),
        "nonfinite": count_nonfinite(params),  # inf/nan values in the parameters (0 when healthy)
        "vocab": meta.get("vocab"),
        "config": meta["config"],
    }
    if info["nonfinite"]:
        print(f"warning: step {step} of {str(directory)!r} holds {info['nonfinite']:,} non-finite parameter values",
              file=sys.stderr)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"step        {info['step']} (complete steps: "
              + ", ".join(f"{s['step']}" + (f" eval {s['eval_loss']:.4f}" if s["eval_loss"] is not None else "")
                          for s in info["steps"]) + ")")
        print(f"parameters  {info['parameters']:,}")
        print(f"checksum    sha256:{info['checksum']}")
        print(f"non-finite  {info['nonfinite']:,} values" + (" (NOT usable: resume or sample an earlier step)"
                                                             if info["nonfinite"] else ""))
        print(f"vocab       {info['vocab']}")
        print(f"config      {json.dumps(info['config'])}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="gpt2-jax", description="GPT-2 in JAX: train, sample, convert.")
    parser.add_argument("--debug", action="store_true", help="after an error's one line, print its full traceback")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (no experiment file = the bundled CPU demo)")
    p.add_argument("overrides", nargs="*", metavar="[EXPERIMENT.py] key=value",
                   help="an experiment file with get_config(), then overrides such as steps=100 model=tiny")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    p.add_argument("--compile-only", action="store_true",
                   help="compile the train step without running it: per-device memory against the chip's HBM, "
                        "FLOPs, collectives, kernels, a roofline estimate (README: Planning a pod run)")
    p.add_argument("--topology", default=None, metavar="NAME",
                   help="with --compile-only: compile for a TPU slice instead of this machine's devices, e.g. "
                        "v5e:2x2, v5e:16x16, v5p:8x8x16, v5p-1024 (needs libtpu, no TPU)")
    p.add_argument("--slices", type=positive_int, default=1, metavar="N",
                   help="with --topology: N slices joined by the data-center network (data parallel across them)")
    p.add_argument("--json", action="store_true", help="with --compile-only: print the report as JSON on stdout")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate text from a checkpoint")
    p.add_argument("ckpt_dir", help="WORKDIR/checkpoints of a run (or the WORKDIR) or an imported model")
    p.add_argument("--prompt", required=True, help="text to continue; <|endoftext|> is the separator token")
    p.add_argument("--max-new-tokens", type=nonneg_int, default=64)
    p.add_argument("--temperature", type=positive_float, default=1.0)
    p.add_argument("--top-k", type=nonneg_int, default=0, help="0 disables")
    p.add_argument("--top-p", type=float_in(0.0, 1.0, low_open=True), default=1.0, help="1.0 disables")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--greedy", action="store_true", help="argmax decoding (ignores temperature/top-k/top-p)")
    p.add_argument("--ids", action="store_true", help="print token ids instead of text")
    p.add_argument("--vocab", default=None, help="vocabulary (default: the checkpoint's, else gpt2)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("ckpt-info", help="step, config, parameter count and checksum of a checkpoint")
    p.add_argument("ckpt_dir")
    p.add_argument("--step", type=nonneg_int, default=None, help="checkpoint step (default: the newest)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ckpt_info)

    from gpt2_jax.data.cli import add_parser as add_data_parser
    from gpt2_jax.export.cli import add_parser as add_export_parser
    from gpt2_jax.evaluate.cli import add_parser as add_eval_parser
    from gpt2_jax.scaling.cli import add_parser as add_scaling_parser
    from gpt2_jax.tokenizer.cli import add_parser as add_tokenizer_parser

    add_data_parser(sub)
    add_export_parser(sub)
    add_tokenizer_parser(sub)
    add_eval_parser(sub)
    add_scaling_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `train` takes key=value overrides on either side of its flags (argparse alone stops
    # collecting positionals at the first flag).
    try:  # a parse error is one `error:` line (OneLineParser) and exit status 2, returned like any other
        args, extra = parser.parse_known_args(argv)
        if extra:
            if args.command != "train" or any(a.startswith("-") for a in extra):
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            args.overrides = list(args.overrides) + extra
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    muted = _OrbaxThreadErrors()
    if not args.debug:  # a failed background save is reported once, by the save's own error
        logging.getLogger("absl").addFilter(muted)
        if not isinstance(sys.unraisablehook, _DropClosedLoopCallbacks):
            sys.unraisablehook = _DropClosedLoopCallbacks(sys.unraisablehook)
    try:
        return args.func(args)
    except _user_errors() as e:
        return _fail(args, e, str(e))
    except Exception as e:  # noqa: BLE001 - only OS errors (a full disk, a read-only path) are the user's
        from gpt2_jax.os_errors import describe, find_os_error

        os_error = find_os_error(e)
        if os_error is None:
            raise
        return _fail(args, e, describe(os_error))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        logging.getLogger("absl").removeFilter(muted)


class _OrbaxThreadErrors(logging.Filter):
    """Drops the ERROR records (with tracebacks) that Orbax's background threads log when a write
    fails: the same failure reaches the loop as CheckpointError, which names the newest complete
    checkpoint; `--debug` keeps them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not record.exc_info or record.exc_info[2] is None:
            return True
        import traceback

        return not any("/orbax/" in frame.filename for frame in traceback.extract_tb(record.exc_info[2]))


class _DropClosedLoopCallbacks:
    """After a failed asynchronous save, TensorStore's completion callbacks reach an asyncio loop
    that Orbax has closed; each prints `RuntimeError: Event loop is closed` as an unraisable
    exception (dozens of tracebacks after a full disk). They carry nothing the error line does
    not say; every other unraisable exception goes to the previous hook."""

    def __init__(self, previous):
        self.previous = previous

    def __call__(self, unraisable) -> None:
        if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
            return
        self.previous(unraisable)


def _fail(args: argparse.Namespace, error: BaseException, line: str) -> int:
    """One `error:` line on stderr (exit status 2); `--debug` adds the traceback after it."""
    print(f"error: {line}", file=sys.stderr, flush=True)
    if getattr(args, "debug", False):
        import traceback

        traceback.print_exception(error, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
