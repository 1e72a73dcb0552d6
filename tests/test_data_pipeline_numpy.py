"""The TensorFlow-free input pipeline (loader.py, pipeline="numpy"; prefetch.py): batch for batch
the tf.data pipeline's, globally and per host, errors included; chosen automatically when
TensorFlow is absent, and `gpt2-jax train` then imports nothing from TensorFlow."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gpt2_jax.data.loader import TokenLoader, resolve_pipeline
from gpt2_jax.data.prefetch import Prefetcher
from gpt2_jax.data.prepare import prepare_text
from gpt2_jax.data.shards import ShardError
from gpt2_jax.tokenizer import load_tokenizer

TEXT = pathlib.Path(__file__).parent / "data" / "pipeline" / "openwebtext_first100_head.txt"  # see its README
T, B = 16, 8


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("numpy_pipeline") / "shards"
    prepare_text([TEXT], out, load_tokenizer("gpt2"), val_fraction=0.1)
    return out


def make(shard_dir, pipeline, **kw):
    kw = {"process_index": 0, "process_count": 1} | kw
    return TokenLoader(shard_dir, "train", T, B, 0, 50257, pipeline=pipeline, **kw)


def take(iterator, n):
    return [np.asarray(next(iterator)) for _ in range(n)]


def test_numpy_and_tf_pipelines_give_identical_host_batches(shard_dir):
    tf_loader, np_loader = make(shard_dir, "tf"), make(shard_dir, "numpy")
    assert np_loader.n_windows > 4 * B  # several epochs wrap within the steps below
    for start in (0, 3, 10**9):  # from the start, a resume, and far into the run
        want, got = take(tf_loader.host_batches(start), 6), take(np_loader.host_batches(start), 6)
        for step, (a, b) in enumerate(zip(want, got)):
            assert b.dtype == np.int32 and b.shape == (B, T + 1)
            np.testing.assert_array_equal(b, a, err_msg=f"start {start}, step {start + step}")
    # per host: each of 2 hosts reads only its rows, the same through both pipelines
    for host in range(2):
        a = take(make(shard_dir, "tf", process_index=host, process_count=2).host_batches(2), 3)
        b = take(make(shard_dir, "numpy", process_index=host, process_count=2).host_batches(2), 3)
        np.testing.assert_array_equal(np.stack(b), np.stack(a))
        assert b[0].shape == (B // 2, T + 1)


def test_numpy_and_tf_pipelines_give_identical_global_arrays(shard_dir):
    """Global jax.Arrays over 8 devices, rows interleaved over the mesh as a multi-host layout would."""
    devices = np.array(jax.devices()[:8]).reshape(2, 4).T.reshape(-1)
    sharding = NamedSharding(Mesh(devices, ("data",)), PartitionSpec("data"))
    want = take(make(shard_dir, "tf").global_batches(4, sharding), 3)
    got = take(make(shard_dir, "numpy").global_batches(4, sharding), 3)
    np.testing.assert_array_equal(np.stack(got), np.stack(want))
    np.testing.assert_array_equal(got[0], make(shard_dir, "numpy").batch(4))


def test_auto_picks_tf_when_installed_and_bad_names_are_refused():
    assert resolve_pipeline("auto") == "tf"  # this environment has TensorFlow
    assert resolve_pipeline("numpy") == "numpy"
    with pytest.raises(ShardError, match="input pipeline 'grain' is not one of"):
        resolve_pipeline("grain")


def test_prefetcher_keeps_order_and_raises_the_workers_error_at_its_step():
    def produce(step):
        if step == 7:
            raise ShardError(f"bad step {step}")
        return step * step

    it = Prefetcher(produce, 2, threads=3, depth=2)
    assert [next(it) for _ in range(5)] == [s * s for s in range(2, 7)]
    with pytest.raises(ShardError, match="bad step 7"):
        next(it)
    with pytest.raises(StopIteration):  # closed after an error
        next(it)


# Run in a fresh process where TensorFlow cannot be imported: `sys.modules[name] = None` makes
# `import tensorflow` fail and importlib.util.find_spec report it missing, as on a GPU image.
NO_TF = textwrap.dedent("""
    import sys
    sys.modules["tensorflow"] = None
    sys.modules["tensorflow_datasets"] = None
    from gpt2_jax.cli import main
    status = main(sys.argv[1:])
    loaded = sorted(m for m, v in sys.modules.items() if m.split(".")[0] in ("tensorflow", "tensorflow_datasets")
                    and v is not None)
    print("TF-MODULES-LOADED:", loaded)
    raise SystemExit(status)
""")


@pytest.mark.slow  # a fresh process that imports jax and compiles a tiny train step: ~30-60 s
def test_demo_runs_without_tensorflow_and_imports_none_of_it(tmp_path):
    """README's command 1 (the demo: learn a vocabulary, tokenize the bundled corpus, train `mini`,
    evaluate, sample), shrunk to a few steps, where TensorFlow cannot be imported (as on the GPU image)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
           "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[1])}
    args = ["train", f"workdir={tmp_path / 'run'}", "steps=3", "batch_size=4", "data.seq_len=16", "log_every=1",
            "eval_every=3", "eval_batches=1", "sample_tokens=4", "--no-progress"]
    run = subprocess.run([sys.executable, "-c", NO_TF, *args], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "TF-MODULES-LOADED: []" in run.stdout, run.stdout[-2000:]
    assert "learnt a 4096-token byte-level BPE" in run.stdout and "steps trained      3" in run.stdout
    assert "final eval loss    None" not in run.stdout and "sample (temperature 0.8" in run.stdout
