"""Reports: the results as JSON and as a Markdown table like the paper's Table 3.

One row per model, one column per task and metric. `write` puts `eval.json` and `eval.md` under
`--out`, each written to a temporary name and renamed, so a reader never sees half a report.
"""

from __future__ import annotations

import json
import os
import pathlib

# the headline metrics of each kind of result, in column order
HEADLINE = ("word_perplexity", "bits_per_byte", "byte_perplexity", "acc", "perplexity", "f1", "exact_match", "bleu",
            "rouge1", "rouge2", "rougeL")
COUNTS = ("documents", "tokens", "words", "bytes")


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown(model: str, results: dict[str, dict], protocol: str) -> str:
    columns = [(task, metric) for task, metrics in results.items() for metric in HEADLINE if metric in metrics]
    header = "| model | " + " | ".join(f"{task} {metric}" for task, metric in columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    row = f"| {model} | " + " | ".join(_fmt(results[task][metric]) for task, metric in columns) + " |"
    notes = []
    for task, metrics in results.items():
        counts = ", ".join(f"{k} {metrics[k]:,}" for k in COUNTS if k in metrics)
        stride = f", stride {metrics['stride']}" if "stride" in metrics else ""
        notes.append(f"- {task}: {counts}{stride}")
        if "overlap" in metrics:
            o = metrics["overlap"]
            parts = []
            for group in ("overlapping", "clean"):
                sub = o[group]
                shown = ", ".join(f"{m} {_fmt(sub[m])}" for m in HEADLINE if m in sub)
                parts.append(f"{group} {sub['documents']:,} ({shown or 'none'})")
            notes.append(f"  - overlap with {o['train']}: {100 * o['fraction']:.2f}% of {o['ngrams']:,} 8-grams in the "
                         f"training data; " + "; ".join(parts))
    return "\n".join([f"protocol: {protocol}", "", header, rule, row, "", *notes]) + "\n"


def _atomic_write(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write(out: str | pathlib.Path, model: str, results: dict[str, dict], protocol: str, meta: dict) -> list[pathlib.Path]:
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "eval.json", out / "eval.md"
    _atomic_write(json_path, json.dumps({"model": model, "protocol": protocol, **meta, "results": results}, indent=2) + "\n")
    _atomic_write(md_path, markdown(model, results, protocol))
    return [json_path, md_path]
