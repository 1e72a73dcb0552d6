"""Prints a run's loss curve (from WORKDIR/metrics.jsonl) as a markdown table.

Command: .venv/bin/python experiments/benchmarks/loss_curve.py runs/demo [--every 50]
"""

from __future__ import annotations

import argparse
import json
import pathlib


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--every", type=int, default=50, help="print every N-th step (eval steps always)")
    args = parser.parse_args()
    records = [json.loads(line) for line in (pathlib.Path(args.workdir) / "metrics.jsonl").read_text().splitlines()]
    print("| step | train loss | eval loss | tokens/s |")
    print("|---|---|---|---|")
    for r in records:
        if r["step"] % args.every and "eval_loss" not in r and r is not records[-1]:
            continue
        ev = f"{r['eval_loss']:.4f}" if "eval_loss" in r else ""
        tps = f"{r['tokens_per_sec']:,.0f}" if "tokens_per_sec" in r else ""
        print(f"| {r['step']} | {r.get('loss', float('nan')):.4f} | {ev} | {tps} |")


if __name__ == "__main__":
    main()
