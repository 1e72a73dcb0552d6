"""Shared pieces of the tokenizer benchmarks: the reference corpus and the machine header.

The corpus is every text file in ../shared/data except the GPT-2 vocabulary itself (WSC's XML is
latin-1 and is decoded as such); each file is one document. `split_heldout` cuts every document
at 90% of its characters (at a point where pre-tokens cannot change) into train and held-out parts.
"""

from __future__ import annotations

import os
import pathlib
import platform
import time

SHARED = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"


def shared_documents(root: pathlib.Path = SHARED) -> dict[str, str]:
    docs = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.parent.name == "gpt2" or path.name in ("SHA256SUMS", "SOURCES.md"):
            continue
        raw = path.read_bytes()
        try:
            docs[str(path.relative_to(root))] = raw.decode("utf-8")
        except UnicodeDecodeError:
            docs[str(path.relative_to(root))] = raw.decode("latin-1")
    if not docs:
        raise SystemExit(f"no texts under {root}: these benchmarks need ../shared/data")
    return docs


def split_heldout(docs: list[str], fraction: float = 0.1) -> tuple[list[str], list[str]]:
    from gpt2_jax.tokenizer.pretokenize import safe_cut

    train, held = [], []
    for doc in docs:
        cut = safe_cut(doc[: int(len(doc) * (1 - fraction))]) or len(doc)
        train.append(doc[:cut])
        held.append(doc[cut:])
    return train, held


def header(title: str) -> str:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{title}\n{time.strftime('%Y-%m-%d')} | {cpu} | {cores} cores | Python {platform.python_version()}"
