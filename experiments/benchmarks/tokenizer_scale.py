"""Pre-token counting on a large file: streamed, 1 process vs all cores, and peak memory.

Writes a file of `--copies` concatenated copies of every text in ../shared/data (about 8 MB
each) to a temporary directory, then counts its pre-tokens with `count_pretokens` in a fresh
interpreter per setting (so peak RSS is that setting's own), one process and every core. Peak
RSS is the parent's maxrss and the largest worker's; raw text is never held whole, so memory
follows the distinct pre-tokens (the counter), not the file size.

    .venv/bin/python experiments/benchmarks/tokenizer_scale.py [--copies 12]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

from tokenizer_common import header, shared_documents

CHILD = r"""
import json, resource, sys, time
from gpt2_jax.tokenizer.pretokenize import count_pretokens
if __name__ == "__main__":
    start = time.perf_counter()
    counts, chars = count_pretokens(files=[sys.argv[1]], processes=int(sys.argv[2]), progress=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "distinct": len(counts), "chars": chars,
                      "rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "rss_child_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=12)
    args = ap.parse_args()

    from gpt2_jax.tokenizer.pretokenize import default_processes

    text = "".join(shared_documents().values())
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "big.txt"
        with open(path, "w", encoding="utf-8", newline="") as f:
            for _ in range(args.copies):
                f.write(text)
        script = pathlib.Path(tmp) / "count.py"
        script.write_text(CHILD)
        size_mb = path.stat().st_size / 1e6
        print(header("Streamed pre-token counting"))
        print(f"{size_mb:.0f} MB file ({args.copies} copies of ../shared/data)\n")
        print("| processes | seconds | MB/s | distinct pre-tokens | peak RSS parent MB | peak RSS largest worker MB |")
        print("|---|---|---|---|---|---|")
        for processes in sorted({1, default_processes()}):
            out = subprocess.run([sys.executable, str(script), str(path), str(processes)], check=True,
                                 capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            worker = f"{r['rss_child_mb']:.0f}" if processes > 1 else "-"
            print(f"| {processes} | {r['seconds']:.1f} | {size_mb / r['seconds']:.1f} | {r['distinct']:,} | "
                  f"{r['rss_self_mb']:.0f} | {worker} |")


if __name__ == "__main__":
    main()
