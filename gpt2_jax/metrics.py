"""Where training metrics go: a JSONL file, TensorBoard, and (through the loop) the terminal.

`WORKDIR/metrics.jsonl` gets one JSON object per logged step (`step`, `loss`, and `eval_loss`
when evaluated, plus lr, grad_norm, tokens_per_sec, mfu). TensorBoard event files go to
`WORKDIR/tensorboard/`; tensorboardX writes them without importing TensorFlow, which costs
seconds at startup and belongs to the data pipeline only.
"""

from __future__ import annotations

import json
import math
import pathlib


class MetricsWriter:
    def __init__(self, workdir: str | pathlib.Path):
        from tensorboardX import SummaryWriter

        workdir = pathlib.Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(workdir / "metrics.jsonl", "a", buffering=1)
        self._tb = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, metrics: dict) -> None:
        record = {"step": int(step)}
        for key, value in metrics.items():
            if value is None:
                continue
            value = float(value)
            record[key] = value if math.isfinite(value) else str(value)
            if math.isfinite(value):
                self._tb.add_scalar(key, value, int(step))
        self._jsonl.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._jsonl.close()
        self._tb.close()
