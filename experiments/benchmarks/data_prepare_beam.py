"""Throughput of `data prepare`: the local runner vs the Apache Beam DirectRunner, 1 and 2 workers.

Corpus (generated, `--mb` of JSONL in 8 files): paragraphs of real text from ../shared/data
(OpenWebText's first 100 documents, WikiText-2 test with its headings stripped, tiny Shakespeare)
are drawn by a seeded RNG into documents of 6-14 paragraphs; every document gets a unique first
line and each paragraph a random word swapped for a numbered token, so copies of one paragraph
never make two documents near duplicates by accident. Then 5% of the documents are repeated
exactly and 5% with 1 word in 60 replaced (near duplicates), so both dedup stages have work.
Prints MB/s per run (wall clock) and MB per CPU-second (this process and its reaped worker
processes, from getrusage: on a shared, loaded machine wall-clock MB/s per worker understates what
a core does, CPU time does not), the Beam/local ratio, one-core stage shares of the recipe (CPU
time of each stage alone over a 4 MB sample) and projections for 40 GB.

Run: nice -n 10 python experiments/benchmarks/data_prepare_beam.py --mb 64
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from experiments.benchmarks.machine import cpu_model  # noqa: E402

SHARED = next(p / "shared" / "data" for p in pathlib.Path(__file__).resolve().parents if (p / "shared" / "data").is_dir())


def make_corpus(root: pathlib.Path, mb: float, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    texts = [(SHARED / "openwebtext_sample" / "first100_docs.txt").read_text(),
             re.sub(r"^ =.*= $", "", (SHARED / "wikitext2" / "wiki.test.raw").read_text(), flags=re.M),
             (SHARED / "tinyshakespeare" / "input.txt").read_text()]
    paras = [p.strip() for t in texts for p in re.split(r"\n\s*\n", t) if len(p.split()) >= 12]
    docs, size, target = [], 0, mb * 2**20
    while size < target:
        picked = [paras[i].split(" ") for i in rng.integers(0, len(paras), int(rng.integers(6, 15)))]
        for ws in picked:
            ws[int(rng.integers(0, len(ws)))] = f"w{int(rng.integers(1 << 30))}"
        doc = f"Document {len(docs)}.\n\n" + "\n\n".join(" ".join(ws) for ws in picked)
        docs.append(doc)
        size += len(doc.encode())
        r = rng.random()
        if r < 0.05:
            docs.append(doc)
        elif r < 0.10:
            ws = doc.split(" ")
            ws[::60] = ["edited"] * len(ws[::60])
            docs.append(" ".join(ws))
    files = []
    for k in range(8):
        path = root / f"part{k}.jsonl"
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[k::8]))
        files.append(str(path))
    return files


def stage_shares(files: list[str], sample_mb: float = 4.0) -> dict:
    """Seconds per MB of each recipe stage alone, in this process (one core)."""
    from gpt2_jax.data.clean import Recipe, clean_document
    from gpt2_jax.data.dedup import minhash, near_duplicates
    from gpt2_jax.data.readers import read_corpus
    from gpt2_jax.tokenizer import load_tokenizer

    docs, size = [], 0
    for d in read_corpus(files[:1]):
        docs.append(d)
        size += len(d.data.encode())
        if size > sample_mb * 2**20:
            break
    mb = size / 2**20
    t = {}
    t0 = time.process_time()
    cleaned = [clean_document(d, Recipe(near_dedup=False)) for d in docs]
    t["read+clean (normalize, length, wikipedia, exact key)"] = time.process_time() - t0
    t0 = time.process_time()
    sigs = np.stack([minhash(c.text) for c in cleaned if not c.reason])
    t["minhash"] = time.process_time() - t0
    t0 = time.process_time()
    near_duplicates(sigs)
    t["near dedup (LSH + union-find)"] = time.process_time() - t0
    tok = load_tokenizer("gpt2")
    t0 = time.process_time()
    for c in cleaned:
        tok.encode(c.text)
    t["tokenize"] = time.process_time() - t0
    return {k: v / mb for k, v in t.items()}


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have been waited for."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=64)
    ap.add_argument("--runs", default="local:1,local:2,beam:1,beam:2")
    args = ap.parse_args()
    from gpt2_jax.data.beam_prepare import prepare_beam
    from gpt2_jax.data.prepare import prepare

    root = pathlib.Path(tempfile.mkdtemp(prefix="beam_bench_"))
    try:
        files = make_corpus(root, args.mb)
        mb = sum(os.path.getsize(f) for f in files) / 2**20
        print(f"# data prepare throughput, {time.strftime('%Y-%m-%d')}, {cpu_model()}, {os.cpu_count()} cores, "
              f"corpus {mb:.1f} MB JSONL in {len(files)} files; load average before: {os.getloadavg()}")
        results = {}
        for run in args.runs.split(","):
            runner, workers = run.split(":")
            out = root / f"out_{runner}_{workers}"
            cpu0 = _cpu_seconds()
            t0 = time.perf_counter()
            if runner == "local":
                m = prepare(files, out, "gpt2", workers=int(workers), shard_bytes=16 * 2**20)
            else:
                m = prepare_beam(files, out, "gpt2", workers=int(workers), shard_bytes=16 * 2**20)
            dt = time.perf_counter() - t0
            cpu = _cpu_seconds() - cpu0
            results[run] = dt
            shards = {p.name: p.read_bytes() for p in sorted(out.glob("*.bin"))}
            same = "" if run == "local:1" else f"  same shards as local:1: {shards == results.get('shards')}"
            results.setdefault("shards", shards)
            print(f"{run:<8} {dt:7.1f} s  {mb / dt:5.2f} MB/s  {mb / dt / int(workers):5.2f} MB/s/worker  "
                  f"cpu {cpu:6.1f} s  {mb / cpu:5.2f} MB/cpu-s  tokens {m['tokens']:,}  load {os.getloadavg()[0]:.1f}{same}", flush=True)
        for w in ("1", "2"):
            if f"beam:{w}" in results and f"local:{w}" in results:
                print(f"beam/local time ratio, {w} worker(s): {results[f'beam:{w}'] / results[f'local:{w}']:.2f}")
        shares = stage_shares(files)
        total = sum(shares.values())
        print("stage shares, one core, each stage alone over a 4 MB sample (CPU time):")
        for k, v in shares.items():
            print(f"  {k:<55} {v:6.3f} cpu-s/MB  {100 * v / total:5.1f}%")
        print(f"  sum: {1 / total:.2f} MB per cpu-second (stages alone, no process overhead)")
        best = max(("local", "beam"), key=lambda r: mb / results.get(f"{r}:2", float("inf")))
        per_core = mb / results[f"{best}:2"] / 2
        print(f"PROJECTION (linear in cores, from {best}:2 here = {per_core:.2f} MB/s/core; a loaded 2-core box): "
              f"40 GB on one 16-core host ~{40 * 1024 / (per_core * 16) / 3600:.1f} h; on N Dataflow workers of "
              f"4 vCPUs ~{40 * 1024 / (per_core * 4) / 3600:.1f}/N h plus shuffle and startup")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
