"""Should the CPU demo train its own BBPE vocabulary? GPT-2's 50257 tokens vs BBPE 4096 / 8192
learnt on tiny Shakespeare, same model (`mini`, L4 D128), same steps and batch (the demo's).

For each vocabulary: tokenize the bundled corpus (`prepare_text`, 90/10 split by token position),
run `gpt2-jax train` (the demo config, `model.n_vocab` set to the vocabulary, no sample), then read
metrics.jsonl. The own vocabularies are learnt on the first 90% of the text only, so the
validation text is unseen by the tokenizer too. Quality is compared per byte, not per token:
    bits/byte = eval loss (nats/token) * val tokens / (val bytes * ln 2)
where val bytes are the decoded bytes of the validation tokens. Speed is the median logged
tokens/s after the first log (compile excluded), and bytes/s = tokens/s * val bytes/token.
Because a shared machine's load drifts over a long run, `--speed-rounds R` adds short runs
(`--speed-steps`, no eval, no checkpoints), interleaved across vocabularies round by round, and
reports their median tokens/s as a second speed table.

    .venv/bin/python experiments/benchmarks/tokenizer_demo_vocab.py [--sizes 4096 8192] [--steps 600]
        [--speed-rounds 2 --speed-steps 60] [--workdir DIR (reuses finished runs)]
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from tokenizer_common import header


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--workdir", default=None, help="keep runs here (default: a temporary directory)")
    ap.add_argument("--speed-rounds", type=int, default=0)
    ap.add_argument("--speed-steps", type=int, default=60)
    args = ap.parse_args()

    import numpy as np

    from gpt2_jax.data.prepare import bundled_corpus, prepare_text
    from gpt2_jax.data.shards import read_shard
    from gpt2_jax.tokenizer import load_tokenizer, train_bbpe
    from gpt2_jax.tokenizer.pretokenize import safe_cut

    root = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="demo_vocab_"))
    text = bundled_corpus().read_text(encoding="utf-8")
    train_text = text[: safe_cut(text[: int(len(text) * 0.9)])]
    vocabs = {"gpt2": "gpt2"}
    for size in args.sizes:
        out = root / f"bbpe{size}"
        if not out.exists():
            train_bbpe(size, documents=[train_text], progress=False).save(out)
        vocabs[f"bbpe{size}"] = str(out)

    rows = []
    for label, source in vocabs.items():
        tok = load_tokenizer(source)
        shards = root / f"shards_{label}"
        if not (shards / "manifest.json").exists():
            prepare_text([bundled_corpus()], shards, tok)
        val = np.concatenate([read_shard(p) for p in sorted(shards.glob("val_*.bin"))])
        val_bytes = len(tok.decode_bytes(val.tolist()))
        workdir = root / f"run_{label}"
        start = time.perf_counter()
        if not (workdir / "wall_seconds").exists():
            train(workdir, shards, tok.n_vocab, args.steps)
            (workdir / "wall_seconds").write_text(f"{time.perf_counter() - start:.1f}")
        wall = float((workdir / "wall_seconds").read_text())
        records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
        eval_loss = [r["eval_loss"] for r in records if "eval_loss" in r][-1]
        bpt = val_bytes / len(val)
        rows.append((label, tok.n_vocab, len(val), bpt, eval_loss, eval_loss / (bpt * math.log(2)), speed_of(workdir),
                     speed_of(workdir) * bpt, wall))

    print(header(f"Demo vocabulary: mini (L4 D128 T128), {args.steps} steps, batch 16"))
    print(f"runs in {root}\n")
    print("| vocabulary | n_vocab | val tokens | val bytes/token | eval loss (nats/token) | bits/byte | tokens/s | bytes/s | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, n, nval, bpt, loss, bpb, speed, bps, wall in rows:
        print(f"| {label} | {n} | {nval:,} | {bpt:.3f} | {loss:.4f} | {bpb:.4f} | {speed:,.0f} | {bps:,.0f} | {wall:.0f} |")
    if args.speed_rounds:
        speeds: dict[str, list[float]] = {label: [] for label in vocabs}
        for r in range(args.speed_rounds):
            for label, source in vocabs.items():
                workdir = root / f"speed_{label}_{r}"
                if not (workdir / "metrics.jsonl").exists():
                    train(workdir, root / f"shards_{label}", load_tokenizer(source).n_vocab, args.speed_steps,
                          "eval_every=0", "ckpt_every=0", "log_every=10")
                speeds[label].append(speed_of(workdir))
        print(f"\nInterleaved speed: {args.speed_rounds} rounds x {args.speed_steps} steps per vocabulary, median tokens/s\n")
        print("| vocabulary | tokens/s | bytes/s | vs gpt2 |")
        print("|---|---|---|---|")
        base = statistics.median(speeds["gpt2"]) * rows[0][3]
        for row in rows:
            speed = statistics.median(speeds[row[0]])
            print(f"| {row[0]} | {speed:,.0f} | {speed * row[3]:,.0f} | {speed * row[3] / base:.2f}x |")


def train(workdir: pathlib.Path, shards: pathlib.Path, n_vocab: int, steps: int, *extra: str) -> None:
    subprocess.run([sys.executable, "-m", "gpt2_jax", "train", f"workdir={workdir}", f"data.path={shards}",
                    f"model.n_vocab={n_vocab}", f"steps={steps}", "sample_tokens=0", *extra, "--no-progress"],
                   check=True, stdout=subprocess.DEVNULL)


def speed_of(workdir: pathlib.Path) -> float:
    """Median logged tokens/s, the first log (which includes compilation) left out."""
    records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    return statistics.median([r["tokens_per_sec"] for r in records if "tokens_per_sec" in r][1:])


if __name__ == "__main__":
    main()
