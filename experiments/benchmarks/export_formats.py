"""Export and import of a 124M-shaped GPT-2 in every format: file size, seconds, MiB/s.

A random `gpt2`-preset model (124,439,808 parameters, vocabulary "gpt2") is written once as a
checkpoint; then, per format and dtype, `export_checkpoint` (restore + convert + write, the work
of `gpt2-jax export`) and, where the format can be read back, `read_model` (the reading half of
`gpt2-jax import`, without the Orbax write, which is the same for every format) are timed, and
import(export(x)) is checked bit-exact for float32. The peer is the Hugging Face directory
(safetensors), the format this library had before; ratios are seconds over its seconds.

Run from the repository root (about 3 minutes on 2 CPU cores):

    python experiments/benchmarks/export_formats.py [--formats hf,llmc,...]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from gpt2_jax import checkpoint  # noqa: E402
from gpt2_jax.config import TrainConfig, preset  # noqa: E402
from gpt2_jax.export import export_checkpoint, read_model  # noqa: E402
from gpt2_jax.model import init_params  # noqa: E402

CASES = [("hf", "float32"), ("safetensors", "float32"), ("safetensors", "bfloat16"), ("llmc", "float32"),
         ("llmc", "bfloat16"), ("openai-tf", "float32"), ("gguf", "float32"), ("gguf", "float16"), ("gguf", "q8_0"),
         ("onnx", "float32"), ("savedmodel", "float32")]
READABLE = {"hf", "safetensors", "llmc", "openai-tf", "gguf"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", default="", help="comma-separated subset (default: all)")
    args = parser.parse_args()
    wanted = set(filter(None, args.formats.split(",")))
    config = preset("gpt2")
    params = jax.tree_util.tree_map(np.asarray, jax.jit(lambda k: init_params(config, k))(jax.random.key(0)))
    leaves = jax.tree_util.tree_leaves(params)
    with tempfile.TemporaryDirectory() as root:
        root = pathlib.Path(root)
        mngr = checkpoint.manager(root / "ckpt", keep=1)
        checkpoint.save(mngr, 1, TrainConfig(model=config, workdir=""), params, None, {"vocab": "gpt2"})
        checkpoint.wait(mngr, 1)
        mngr.close()
        rows, peer = [], None
        for fmt, dtype in CASES:
            if wanted and fmt not in wanted:
                continue
            out = root / f"{fmt}-{dtype}"
            report = export_checkpoint(root / "ckpt", fmt, out, dtype=dtype)
            read_s, exact = None, None
            if fmt in READABLE:
                start = time.perf_counter()
                _, back, _ = read_model(out, fmt)
                read_s = time.perf_counter() - start
                if dtype == "float32":
                    exact = all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(back), leaves))
            if fmt == "hf":
                peer = report["seconds"]
            rows.append((fmt, dtype, report["bytes"] / 2**20, report["seconds"], read_s, exact))
            print(f"done {fmt} {dtype}", file=sys.stderr)
    print("| format | dtype | size (MiB) | export (s) | export MiB/s | export / hf | read back (s) | round trip |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for fmt, dtype, mib, sec, read_s, exact in rows:
        ratio = f"{sec / peer:.2f}x" if peer else "-"
        back = "-" if read_s is None else f"{read_s:.1f}"
        trip = "-" if exact is None else ("bit-exact" if exact else "DIFFERS")
        print(f"| {fmt} | {dtype} | {mib:,.0f} | {sec:.1f} | {mib / sec:,.0f} | {ratio} | {back} | {trip} |")


if __name__ == "__main__":
    main()
