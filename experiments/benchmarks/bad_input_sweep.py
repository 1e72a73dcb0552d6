"""Bad-input sweep: 100+ wrong inputs across every subcommand; counts tracebacks and silent acceptances.

Each input is wrong by construction (a value out of range, a path of the wrong kind, a file of
the wrong format, a locked directory, ...). Each runs through `gpt2_jax.cli.main` in this process
(a subprocess per input would cost minutes of start-up on a 2-core machine), with stdout and
stderr captured. An input passes when the command exits with status 2 and prints exactly one
line on stderr, starting `error: `. It is a traceback when an exception escapes `main`, a silent
acceptance when the command exits 0, and "other" otherwise (several lines, another status).
A tiny checkpoint (2 steps of the `tiny` preset) is trained first for the commands that need one.

Command (about 3 minutes on the 2-core CPU):
  PYTHONPATH=$PWD XLA_FLAGS=--xla_force_host_platform_device_count=1 \
      python experiments/benchmarks/bad_input_sweep.py [--verbose]
Prints one table (counts per subcommand) and every input that did not pass.

References:
  issue 22 (the sweep this repeats with inputs written after the fixes, not before).
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import re
import sys
import tempfile
import traceback

PROGRESS_BAR = re.compile(r"\[\d+:\d+[<,]")  # tqdm's "[00:01<00:02, 3.4it/s]" or "[00:00, ?doc/s]"
TRAIN = ["model=tiny", "data.vocab=gpt2", "steps=2", "batch_size=8", "data.seq_len=32", "eval_every=0",
         "sample_prompt=", "log_every=1"]
INT_KEYS = ["steps", "batch_size", "grad_accum", "log_every", "eval_every", "eval_batches", "ckpt_every",
            "keep_checkpoints", "keep_best", "nan_skip_limit", "sample_tokens", "loss_chunk_tokens", "model.n_layer",
            "model.n_embd", "model.n_head", "model.n_ctx", "model.n_vocab", "optim.warmup_steps", "optim.decay_steps",
            "data.seq_len"]
FLOAT_KEYS = ["model.embd_pdrop", "model.attn_pdrop", "model.resid_pdrop", "model.layer_norm_epsilon", "optim.lr",
              "optim.min_lr_ratio", "optim.weight_decay", "optim.beta1", "optim.beta2", "optim.eps", "optim.grad_clip"]


def cases(tmp: pathlib.Path, ckpt: pathlib.Path, data: pathlib.Path) -> list[tuple[str, list[str]]]:
    def file(name: str, content: bytes | str = "x") -> str:
        path = tmp / "files" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    wd = lambda name: f"workdir={tmp / 'wd' / name}"  # noqa: E731
    out: list[tuple[str, list[str]]] = []
    # train: every numeric key with a negative, an infinite and a non-numeric value
    for key in INT_KEYS:
        out += [("train", ["train", wd(key), f"data.path={data}", *TRAIN, f"{key}={v}"]) for v in ("-1", "1.5")]
    for key in FLOAT_KEYS:
        out += [("train", ["train", wd(key), f"data.path={data}", *TRAIN, f"{key}={v}"]) for v in ("-inf", "-1")]
    out += [
        ("train", ["train", wd("a"), f"data.path={data}", *TRAIN, "optim.beta1=1"]),
        ("train", ["train", wd("b"), f"data.path={data}", *TRAIN, "model.embd_pdrop=1.5"]),
        ("train", ["train", wd("c"), f"data.path={data}", *TRAIN, "optim.min_lr_ratio=2"]),
        ("train", ["train", wd("d"), f"data.path={data}", *TRAIN, "mesh.rules=zz"]),
        ("train", ["train", wd("e"), f"data.path={data}", *TRAIN, "nan_policy=maybe"]),
        ("train", ["train", wd("f"), f"data.path={data}", *TRAIN, "model.dtype=int8"]),
        ("train", ["train", wd("g"), f"data.path={tmp / 'nowhere'}", *TRAIN]),
        ("train", ["train", wd("h"), f"data.path={file('notdir')}", *TRAIN]),
        ("train", ["train", f"workdir={file('wdfile')}", f"data.path={data}", *TRAIN]),
        ("train", ["train", wd("i"), f"data.path={data}", *TRAIN, "batch_size=7", "grad_accum=2"]),
        ("train", ["train", wd("j"), f"data.path={data}", *TRAIN, "data.seq_len=4096"]),
        ("train", ["train", file("e1.py", "def get_config(:\n  pass\n")]),
        ("train", ["train", file("e2.py", "import no_such_module_q\n")]),
        ("train", ["train", file("e3.py", "def get_config():\n    return {}.x\n")]),
        ("train", ["train", file("e4.py", "get_config = 3\n")]),
        ("train", ["train", file("e5.txt.py", b"\xff\xfe\x00")]),
        ("train", ["train", wd("k"), f"data.path={data}", *TRAIN, "--bogus"]),
        ("train", ["train", wd("l"), f"data.path={data}", *TRAIN, "model.n_layer="]),
    ]
    # sample / ckpt-info
    out += [
        ("sample", ["sample", str(ckpt), "--prompt", "hi", "--max-new-tokens", "-3"]),
        ("sample", ["sample", str(ckpt), "--prompt", "hi", "--top-k", "-1"]),
        ("sample", ["sample", str(ckpt), "--prompt", "hi", "--top-p", "1.5"]),
        ("sample", ["sample", str(ckpt), "--prompt", "hi", "--top-p", "nan"]),
        ("sample", ["sample", str(ckpt), "--prompt", "hi", "--temperature", "0"]),
        ("sample", ["sample", str(ckpt), "--prompt", "hi", "--temperature", "inf"]),
        ("sample", ["sample", str(ckpt), "--prompt", "hi", "--seed", "-2"]),
        ("sample", ["sample", str(ckpt), "--prompt", "\udcff\udcfe"]),
        ("sample", ["sample", file("notckpt"), "--prompt", "hi"]),
        ("sample", ["sample", str(ckpt), "--prompt", "hi", "--vocab", str(tmp / "novocab")]),
        ("sample", ["sample", str(ckpt), "--prompt", "hi", "--max-new-tokens", "100000"]),
        ("ckpt-info", ["ckpt-info", str(ckpt), "--step", "99"]),
        ("ckpt-info", ["ckpt-info", str(ckpt), "--step", "x"]),
        ("ckpt-info", ["ckpt-info", file("ci")]),
        ("ckpt-info", ["ckpt-info", str(tmp)]),
    ]
    # export / import
    foreign = tmp / "foreign"
    foreign.mkdir(exist_ok=True)
    (foreign / "thesis.tex").write_text("mine")
    out += [
        ("export", ["export", str(ckpt), "--format", "safetensors", "--out", str(foreign), "--force"]),
        ("export", ["export", str(ckpt), "--format", "hf", "--out", str(foreign), "--force"]),
        ("export", ["export", str(ckpt), "--format", "gguf", "--out", file("t.gguf", "text"), "--force"]),
        ("export", ["export", str(ckpt), "--format", "hf", "--out", ".", "--force"]),
        ("export", ["export", str(ckpt), "--format", "hf", "--out", "/", "--force"]),
        ("export", ["export", str(ckpt), "--format", "hf", "--out", str(pathlib.Path.home()), "--force"]),
        ("export", ["export", str(ckpt), "--format", "llmc", "--out", str(tmp / "m.bin")]),
        ("export", ["export", str(ckpt), "--format", "onnx", "--out", str(tmp / "m.onnx")]),
        ("export", ["export", str(ckpt), "--format", "hf", "--out", str(tmp / "x" / "config.json")]),
        ("export", ["export", str(ckpt), "--format", "gguf", "--dtype", "int4", "--out", str(tmp / "q.gguf")]),
        ("export", ["export", str(ckpt), "--format", "llmc", "--dtype", "float16", "--out", str(tmp / "l")]),
        ("export", ["export", str(ckpt), "--format", "hf", "--step", "-1", "--out", str(tmp / "h")]),
        ("export", ["export", str(ckpt), "--format", "hf", "--step", "77", "--out", str(tmp / "h")]),
        ("export", ["export", str(ckpt), "--format", "zip", "--out", str(tmp / "z")]),
        ("export", ["export", str(ckpt), "--format", "hf", "--out", f"{file('pfile')}/sub"]),
        ("export", ["export", str(ckpt), "--format", "hf", "--out", "/proc/nope"]),
        ("import", ["import", file("fake.gguf", "not gguf"), "--format", "gguf", "--out", str(tmp / "i1")]),
        ("import", ["import", file("fake.st", b"\x00" * 4), "--format", "safetensors", "--out", str(tmp / "i2")]),
        ("import", ["import", str(tmp / "nothing.bin"), "--format", "llmc", "--out", str(tmp / "i3")]),
        ("import", ["import", str(tmp), "--format", "openai-tf", "--out", str(tmp / "i4")]),
        ("import", ["import-hf", str(tmp), "--out", str(tmp / "i5")]),
        ("import", ["import", file("fake.bin", b"\x01" * 2048), "--format", "llmc", "--out", str(tmp / "i6")]),
        ("import", ["import", file("f2.gguf", "x"), "--format", "gguf", "--out", str(foreign), "--force"]),
        ("import", ["import", file("f3.gguf", "x"), "--format", "onnx", "--out", str(tmp / "i7")]),
    ]
    # data
    shard = file("bad.bin", b"\x00" * 100)
    out += [
        ("data", ["data", "prepare", "--input", str(tmp / "none.txt"), "--out", str(tmp / "s1")]),
        ("data", ["data", "prepare", "--input", file("c.txt", "hello world"), "--out", file("sfile")]),
        ("data", ["data", "prepare", "--input", file("c2.txt", "hi"), "--out", str(tmp / "s2"), "--workers", "-1"]),
        ("data", ["data", "prepare", "--input", file("c3.txt", "hi"), "--out", str(tmp / "s3"), "--shard-mb", "0"]),
        ("data", ["data", "prepare", "--input", file("c4.txt", "hi"), "--out", str(tmp / "s4"), "--shard-mb", "nan"]),
        ("data", ["data", "prepare", "--input", file("c5.txt", "hi"), "--out", str(tmp / "s5"), "--val-fraction", "-0.1"]),
        ("data", ["data", "prepare", "--input", file("c6.txt", "hi"), "--out", str(tmp / "s6"), "--min-words", "-5"]),
        ("data", ["data", "prepare", "--input", file("c7.txt", "hi"), "--out", str(tmp / "s7"), "--max-chars", "0"]),
        ("data", ["data", "prepare", "--input", file("c8.txt", "hi"), "--out", str(tmp / "s8"),
                  "--near-dup-threshold", "0"]),
        ("data", ["data", "prepare", "--input", file("c9.txt", "hi"), "--out", str(tmp / "s9"), "--vocab", str(tmp)]),
        ("data", ["data", "prepare", "--input", file("c10.jsonl", "{not json"), "--out", str(tmp / "s10"),
                  "--format", "jsonl"]),
        ("data", ["data", "prepare", "--input", file("c11.txt", b"\xff\xfe bad utf8"), "--out", str(tmp / "s11"),
                  "--min-words", "0"]),
        ("data", ["data", "prepare", "--input", file("c12.txt", "hi"), "--out", str(data)]),
        ("data", ["data", "stats", str(tmp / "nostats")]),
        ("data", ["data", "stats", shard]),
        ("data", ["data", "stats", str(tmp)]),
        ("data", ["data", "overlap", "--train", str(data), "--eval", file("e.txt", "a b"), "--n", "-1"]),
        ("data", ["data", "overlap", "--train", str(data), "--eval", file("e2.txt", "a b"), "--fpr", "0"]),
        ("data", ["data", "overlap", "--train", str(data), "--eval", file("e3.txt", "a b"), "--fpr", "1"]),
        ("data", ["data", "overlap", "--train", str(tmp / "noshards"), "--eval", file("e4.txt", "a b")]),
        ("data", ["data", "overlap", "--train", str(data), "--eval", str(tmp / "noeval.txt")]),
    ]
    # tokenizer
    out += [
        ("tokenizer", ["tokenizer", "train", "--input", file("t.txt", "aaa"), "--vocab-size", "10", "--out",
                       str(tmp / "v1")]),
        ("tokenizer", ["tokenizer", "train", "--input", file("t2.txt", "aaa"), "--vocab-size", "100000", "--out",
                       str(tmp / "v2")]),
        ("tokenizer", ["tokenizer", "train", "--input", str(tmp / "no.txt"), "--vocab-size", "300", "--out",
                       str(tmp / "v3")]),
        ("tokenizer", ["tokenizer", "train", "--input", file("t3.txt", "aaa"), "--vocab-size", "300", "--out",
                       str(foreign)]),
        ("tokenizer", ["tokenizer", "train", "--input", file("t4.txt", "aaa"), "--vocab-size", "300", "--processes",
                       "0", "--out", str(tmp / "v4")]),
        ("tokenizer", ["tokenizer", "encode", "--vocab", str(tmp / "novocab")]),
        ("tokenizer", ["tokenizer", "decode", "--vocab", file("vf")]),
    ]
    # eval
    out += [
        ("eval", ["eval", str(ckpt), "--task", "nosuchtask", "--data", str(tmp)]),
        ("eval", ["eval", str(ckpt), "--task", "lambada", "--data", str(tmp / "nodata.jsonl")]),
        ("eval", ["eval", str(ckpt), "--task", "lambada", "--data", file("lam.jsonl", "{bad"), "--batch-size", "0"]),
        ("eval", ["eval", str(ckpt), "--task", "wikitext2", "--data", file("w.txt", "x"), "--stride", "-4"]),
        ("eval", ["eval", str(ckpt), "--task", "lambada", "--data", file("lam2.jsonl", "{bad"), "--limit", "0"]),
        ("eval", ["eval", str(ckpt), "--task", "lambada", "--data", file("lam3.jsonl", "{bad}"),
                  "--out", file("evalout")]),
        ("eval", ["eval", file("notack"), "--task", "lambada", "--data", file("lam4.jsonl", "{}")]),
    ]
    # sweep / scaling
    out += [
        ("sweep", ["sweep", "run", file("s1.py", "def get_sweep():\n    raise ValueError('x')\n"), "--out", str(tmp / "sw")]),
        ("sweep", ["sweep", "run", file("s2.py", "x = (\n"), "--out", str(tmp / "sw2")]),
        ("sweep", ["sweep", "run", file("s3.py", "def get_sweep():\n    return 5\n"), "--out", str(tmp / "sw3")]),
        ("sweep", ["sweep", "run", str(tmp / "nosweep.py"), "--out", str(tmp / "sw4")]),
        ("sweep", ["sweep", "run", "experiments/scaling_tiny_cpu.py", "--out", str(tmp / "sw5"), "--dry-run",
                   "--devices-per-point", "-1"]),
        ("sweep", ["sweep", "run", "experiments/scaling_tiny_cpu.py", "--out", str(tmp / "sw6"), "--dry-run",
                   "--flops-per-sec", "-5"]),
        ("sweep", ["sweep", "run", "experiments/scaling_tiny_cpu.py", "--out", str(tmp / "sw7"), "--dry-run",
                   "--shard", "3/2"]),
        ("sweep", ["sweep", "run", "experiments/scaling_tiny_cpu.py", "--out", file("swfile"), "--dry-run"]),
        ("sweep", ["sweep", "collect", str(tmp / "nosweepdir"), "--out", str(tmp / "r.csv")]),
        ("sweep", ["sweep", "collect", str(tmp), "--out", str(tmp)]),
        ("scaling", ["scaling", "fit", file("r1.csv", b"\x89PNG\r\n\x1a\n\x00\x00"), "--law", "kaplan-n"]),
        ("scaling", ["scaling", "fit", file("r2.csv", "a,b\n1,2\n"), "--law", "kaplan-n"]),
        ("scaling", ["scaling", "fit", file("r3.csv", "params,tokens,loss\n1,2,-3\n"), "--law", "kaplan-n"]),
        ("scaling", ["scaling", "fit", file("r4.csv", "params,tokens,loss\n1,2,3\n"), "--law", "nolaw"]),
        ("scaling", ["scaling", "fit", file("r5.csv", "params,tokens,loss\n1,2,3\n"), "--law", "kaplan-n",
                     "--bootstrap", "-1"]),
        ("scaling", ["scaling", "fit", file("r6.csv", "params,tokens,loss\n1,2,3\n"), "--law", "kaplan-n",
                     "--level", "1"]),
        ("scaling", ["scaling", "fit", file("r7.csv", "params,tokens,loss\n1,2,3\n"), "--law", "kaplan-n",
                     "--target-flops", "0"]),
        ("scaling", ["scaling", "fit", file("r8.csv", "params,tokens,loss\n1,2,3\n"), "--law", "kaplan-n",
                     "--plot", file("plotfile")]),
        ("scaling", ["scaling", "fit", file("r9.csv", "params,tokens,loss\nx,2,3\n"), "--law", "kaplan-n"]),
        ("scaling", ["scaling", "fit", file("r10.csv", ""), "--law", "kaplan-n"]),
    ]
    return out


def run_one(argv: list[str]) -> tuple[str, int | None, str]:
    from gpt2_jax import cli

    out, err = io.StringIO(), io.StringIO()
    stdin, sys.stdin = sys.stdin, io.StringIO("")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 2
    except Exception:  # noqa: BLE001 - what the sweep counts
        return "traceback", None, traceback.format_exc(limit=3)
    finally:
        sys.stdin = stdin
    text = err.getvalue()
    # Progress bars (tqdm) also write to stderr; their fragments are not messages. A message glued
    # to a bar's last fragment still counts (it starts the line with the bar, so it is "other").
    lines = [x for x in text.replace("\r", "\n").splitlines() if x.strip() and not (PROGRESS_BAR.search(x) and "error:" not in x)]
    if "Traceback" in text:
        return "traceback", code, text
    if code == 0:
        return "silent", code, out.getvalue()[-300:]
    if code == 2 and len(lines) == 1 and lines[0].startswith("error: "):
        return "ok", code, lines[0]
    return "other", code, text[-600:]


def main() -> None:
    verbose = "--verbose" in sys.argv
    from gpt2_jax import cli

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = pathlib.Path(tmp_name)
        os.chdir(pathlib.Path(__file__).resolve().parents[2])  # the repository root (sweep paths are relative)
        workdir = tmp / "ckpt_run"
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert cli.main(["train", f"workdir={workdir}", *TRAIN, "--no-progress"]) == 0
        todo = cases(tmp, workdir / "checkpoints", workdir / "data")
        counts: dict[str, dict[str, int]] = {}
        bad = []
        for command, argv in todo:
            verdict, code, detail = run_one(argv)
            counts.setdefault(command, {"ok": 0, "traceback": 0, "silent": 0, "other": 0})[verdict] += 1
            if verdict != "ok":
                bad.append((verdict, code, argv, detail))
            if verbose:
                print(f"{verdict:<9} {' '.join(argv)[:150]}\n          {detail.strip()[:300]}")
    print(f"{'command':<11} {'inputs':>6} {'ok':>4} {'traceback':>9} {'silent':>6} {'other':>5}")
    for command, c in counts.items():
        print(f"{command:<11} {sum(c.values()):>6} {c['ok']:>4} {c['traceback']:>9} {c['silent']:>6} {c['other']:>5}")
    total = {k: sum(c[k] for c in counts.values()) for k in ("ok", "traceback", "silent", "other")}
    print(f"{'total':<11} {sum(total.values()):>6} {total['ok']:>4} {total['traceback']:>9} {total['silent']:>6} "
          f"{total['other']:>5}")
    for verdict, code, argv, detail in bad:
        print(f"\n[{verdict}, exit {code}] {' '.join(argv)}\n{detail.strip()[-800:]}")


if __name__ == "__main__":
    main()
