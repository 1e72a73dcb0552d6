"""Where training metrics go: a JSONL file, TensorBoard, and (through the loop) the terminal.

`WORKDIR/metrics.jsonl` gets one JSON object per logged step (`step`, `loss`, and `eval_loss`
when evaluated, plus lr, grad_norm, tokens_per_sec, mfu). TensorBoard event files go to
`WORKDIR/tensorboard/`; tensorboardX writes them without importing TensorFlow, which costs
seconds at startup and belongs to the data pipeline only. Where tensorboardX is not installed (the
GPU image we measure on has PyTorch and `tensorboard` but not tensorboardX), PyTorch's writer of the
same event format is used, and with neither the run goes on with the JSONL file alone (said once).

References: tensorboardX and torch.utils.tensorboard `SummaryWriter.add_scalar` (the same TensorBoard
event-file format).
"""

from __future__ import annotations

import json
import math
import pathlib


def summary_writer_class():
    """A TensorBoard `SummaryWriter` class (tensorboardX's, else PyTorch's), or None if neither imports."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs torch and the `tensorboard` package
        except ImportError:
            return None
    return SummaryWriter


class MetricsWriter:
    def __init__(self, workdir: str | pathlib.Path):
        workdir = pathlib.Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(workdir / "metrics.jsonl", "a", buffering=1)
        writer = summary_writer_class()
        self._tb = writer(str(workdir / "tensorboard")) if writer else None
        if writer is None:
            print("note: no TensorBoard events (pip install tensorboardX); metrics go to metrics.jsonl", flush=True)

    def write(self, step: int, metrics: dict) -> None:
        record = {"step": int(step)}
        for key, value in metrics.items():
            if value is None:
                continue
            value = float(value)
            record[key] = value if math.isfinite(value) else str(value)
            if math.isfinite(value) and self._tb is not None:
                self._tb.add_scalar(key, value, int(step))
        self._jsonl.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def postfix(record: dict) -> str:
    """The progress bar's short suffix: loss and throughput."""
    parts = [f"loss {record['loss']:.3f}"] if "loss" in record else []
    if "tokens_per_sec" in record:
        parts.append(f"{record['tokens_per_sec']:,.0f} tok/s")
    return ", ".join(parts)


def log_line(step: int, record: dict) -> str:
    """The terminal line of a logged step."""
    parts = [f"step {step:>6}"]
    if "loss" in record:
        parts += [f"loss {record['loss']:.4f}", f"lr {record['lr']:.2e}", f"grad_norm {record['grad_norm']:.3f}"]
        if "bits_per_byte" in record:
            parts.append(f"bits/byte {record['bits_per_byte']:.4f}")
    if "tokens_per_sec" in record:
        mfu_value = record.get("mfu")
        parts += [f"{record['tokens_per_sec']:,.0f} tok/s", f"mfu {'n/a' if mfu_value is None else f'{100 * mfu_value:.1f}%'}"]
    if "eval_loss" in record:
        parts.append(f"eval_loss {record['eval_loss']:.4f}")
    if "eval_bits_per_byte" in record:
        parts.append(f"eval_bits/byte {record['eval_bits_per_byte']:.4f}")
    if record.get("skipped_steps"):
        parts.append(f"skipped {record['skipped_steps']}")
    return " | ".join(parts)
