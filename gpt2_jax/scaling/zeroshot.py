"""Zero-shot language-modelling columns for a sweep's points: WikiText-2, PTB and LAMBADA through `gpt2-jax eval`.

`sweep collect --zeroshot DATA` evaluates each finished point's final checkpoint on the paper's
language-modelling tasks (gpt2_jax/evaluate: wikitext2 and ptb word perplexity and bits per byte
with rolling windows, lambada last-word perplexity and accuracy) and adds one column per metric,
e.g. `wikitext2_word_perplexity`, so a sweep reproduces the view of Radford et al. 2019 Figure 1
(zero-shot metric vs parameters; plots.py). DATA is what `gpt2-jax eval --data` takes: one folder
holding each task's usual file, or one path per task, comma-separated in the order wikitext2, ptb,
lambada. The results are cached in the point's directory (zeroshot.json, keyed by data, limit and
the point's config hash), so collecting again costs nothing.

References:
  Radford et al. 2019, section 3.1 and Figure 1; gpt2_jax/evaluate/runner.py.
"""

from __future__ import annotations

import json
import pathlib

TASKS = "wikitext2,ptb,lambada"
METRICS = {"wikitext2": ("word_perplexity", "bits_per_byte"), "ptb": ("word_perplexity", "bits_per_byte"),
           "lambada": ("perplexity", "acc")}
CACHE = "zeroshot.json"


def columns() -> list[str]:
    return [f"{task}_{m}" for task, ms in METRICS.items() for m in ms]


def point_columns(workdir: pathlib.Path, config_hash: str, data: str, limit: int | None) -> dict:
    """{task_metric: value} for the point's final checkpoint (from the cache when it matches)."""
    from gpt2_jax.scaling.runner import write_json_atomic

    key = {"data": data, "limit": limit, "config_hash": config_hash}
    cache = workdir / CACHE
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return saved["columns"]
    from gpt2_jax.evaluate.runner import evaluate

    report = evaluate(str(workdir / "checkpoints"), TASKS, data, limit=limit, progress=False)
    out = {f"{task}_{m}": report["results"][task].get(m) for task, ms in METRICS.items() for m in ms}
    write_json_atomic(cache, {"key": key, "columns": out, "meta": report["meta"]})
    return out
