"""The tf.data loader: a pure function of (seed, step), O(1) resume, per-host rows, global
jax.Arrays, 1 host = 2 hosts (real jax.distributed processes), errors."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gpt2_jax.data.clean import Recipe
from gpt2_jax.data.loader import TokenLoader, epoch_key, permute
from gpt2_jax.data.prepare import MANIFEST, bundled_corpus, prepare, prepare_text
from gpt2_jax.data.shards import ShardError, read_shard, shard_sha256, write_shard
from gpt2_jax.tokenizer import load_tokenizer

DATA = pathlib.Path(__file__).parent / "data" / "pipeline"
T, B = 32, 8


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """OpenWebText paragraphs and tiny Shakespeare as ~80 documents in ~30 shards of ~40 KB."""
    root = tmp_path_factory.mktemp("loader")
    paras = (DATA / "openwebtext_first100_head.txt").read_text(encoding="utf-8").split("\n\n")
    plays = bundled_corpus().read_text(encoding="utf-8").split("\n\n")
    docs = ["\n\n".join(paras[i:i + 20]) for i in range(0, len(paras), 20)]
    docs += ["\n\n".join(plays[i:i + 300]) for i in range(0, len(plays), 300)]
    (root / "docs").mkdir()
    for i, doc in enumerate(docs):
        (root / "docs" / f"{i:03d}.txt").write_text(doc, encoding="utf-8")
    out = root / "shards"
    prepare([root / "docs"], out, "gpt2", recipe=Recipe(val_fraction=0.2, min_words=0), shard_bytes=40_000, workers=1)
    return out


def make(shard_dir, split="train", seq_len=T, batch=B, seed=0, n_vocab=50257, **kw):
    kw = {"process_index": 0, "process_count": 1} | kw
    return TokenLoader(shard_dir, split, seq_len, batch, seed, n_vocab, **kw)


def stream_of(loader) -> list[np.ndarray]:
    return [np.asarray(s) for s in loader.shards]


def test_permutation_is_a_bijection_per_epoch():
    for n in (1, 2, 3, 5, 64, 1000, 4097):
        for key in (epoch_key(0, 0), epoch_key(0, 1), epoch_key(7, 0)):
            assert sorted(permute(np.arange(n), n, key).tolist()) == list(range(n))
    a, b = permute(np.arange(1000), 1000, epoch_key(0, 0)), permute(np.arange(1000), 1000, epoch_key(0, 1))
    assert (a != b).mean() > 0.9 and (np.abs(np.diff(a.astype(np.int64))) > 1).mean() > 0.9  # shuffled


def test_same_seed_and_step_same_batch_across_runs_and_resumes(shards):
    a, b = make(shards), make(shards)
    np.testing.assert_array_equal(a.batch(5), b.batch(5))
    assert not np.array_equal(a.batch(5), a.batch(6))
    assert not np.array_equal(a.batch(5), make(shards, seed=1).batch(5))
    run = a.host_batches(0)  # tf.data, from the start
    first = [next(run) for _ in range(12)]
    resumed = b.host_batches(7)  # another loader resuming at step 7: no replay
    for step in range(7, 12):
        got = next(resumed)
        assert got.shape == (B, T + 1) and got.dtype == np.int32
        np.testing.assert_array_equal(got, first[step])
        np.testing.assert_array_equal(got, a.batch(step))  # tf.data == the pure function


def test_resume_far_away_costs_no_replay(shards):
    loader = make(shards)
    far = 10**12  # thousands of epochs later: computed directly
    batch = next(loader.host_batches(far))
    np.testing.assert_array_equal(batch, loader.batch(far))


def test_every_window_is_a_real_slice_of_the_stream(shards):
    loader = make(shards)
    streams = stream_of(loader)
    for step in (0, 3, 1000):
        ids = loader.window_ids(step)
        shard, offset = loader.locate(ids)
        batch = loader.batch(step)
        for row, s, o in zip(batch, shard, offset):
            assert o % T == 0 and o + T + 1 <= streams[s].size
            np.testing.assert_array_equal(row, streams[s][o:o + T + 1])
        whole = np.concatenate(streams)  # and, independently: each row occurs in the token stream
        for row in batch:
            starts = np.flatnonzero(whole[: whole.size - T] == row[0])
            assert any(np.array_equal(whole[i:i + T + 1], row) for i in starts)


def test_an_epoch_visits_every_window_once_across_shards(shards):
    n = make(shards).n_windows
    loader = make(shards, batch=n)  # one step = one epoch
    ids = loader.window_ids(0)
    assert sorted(ids.tolist()) == list(range(n))
    nxt = loader.window_ids(1)
    assert sorted(nxt.tolist()) == list(range(n)) and (ids != nxt).mean() > 0.9  # the next epoch, reshuffled
    small = make(shards, batch=3)  # epochs continue across batch boundaries (n is not a multiple of 3)
    ids3 = np.concatenate([small.window_ids(step) for step in range(-(-n // 3))])[:n]
    assert sorted(ids3.tolist()) == list(range(n))
    assert len(loader.shards) >= 10
    shard, _ = loader.locate(make(shards, batch=32).window_ids(0))
    assert len(set(shard.tolist())) >= 10  # one batch mixes many shards


def test_hosts_split_each_global_batch(shards):
    whole = make(shards, batch=8).batch(3)
    for count in (2, 4, 8):
        parts = [make(shards, batch=8, process_index=i, process_count=count).batch(3) for i in range(count)]
        assert all(p.shape == (8 // count, T + 1) for p in parts)
        np.testing.assert_array_equal(np.concatenate(parts), whole)
    half = make(shards, batch=8, process_index=1, process_count=2)
    np.testing.assert_array_equal(next(half.host_batches(3)), whole[4:])


def test_global_batches_are_sharded_jax_arrays(shards):
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()), ("data",))
    loader = make(shards, batch=16)
    for spec in (P("data"), P()):
        sharding = NamedSharding(mesh, spec)
        arrays = loader.global_batches(4, sharding)
        for step in (4, 5):
            arr = next(arrays)
            assert arr.shape == (16, T + 1) and arr.sharding == sharding and arr.dtype == np.int32
            np.testing.assert_array_equal(np.asarray(arr), loader.batch(step))
    evals = loader.eval_global_batches(2, NamedSharding(mesh, P("data")))
    np.testing.assert_array_equal(np.stack([np.asarray(e) for e in evals]), np.stack(loader.eval_batches(2)))


def test_eval_batches_are_fixed_and_span_the_split(shards):
    loader = make(shards, "val", batch=4)
    first = loader.eval_batches(3)
    assert len(first) == 3 and first[0].shape == (4, T + 1)
    np.testing.assert_array_equal(np.stack(first), np.stack(make(shards, "val", batch=4, seed=9).eval_batches(3)))
    streams = stream_of(loader)
    np.testing.assert_array_equal(first[0][0], streams[0][:T + 1])  # the first window of the split
    last_shard = max(i for i, s in enumerate(streams) if s.size > T)
    last = (streams[last_shard].size - 1) // T - 1
    np.testing.assert_array_equal(first[-1][-1], streams[last_shard][last * T:last * T + T + 1])  # ... to the last


def test_errors_are_clear(shards, tmp_path):
    manifest = json.loads((shards / MANIFEST).read_text())
    with pytest.raises(ShardError, match="50257 ids but model.n_vocab=50000; set model.n_vocab=50257"):
        make(shards, n_vocab=50000)
    with pytest.raises(ShardError, match="fingerprint .* but this run uses fingerprint 0123"):
        make(shards, vocab_fingerprint="0123")
    make(shards, vocab_fingerprint=manifest["vocab_fingerprint"])
    with pytest.raises(ShardError, match="no 'test' split"):
        make(shards, "test")
    with pytest.raises(ShardError, match="not divisible by process_count=3"):
        make(shards, batch=8, process_count=3)
    with pytest.raises(ShardError, match="has no window of seq_len\\+1=1000001"):
        make(shards, seq_len=1_000_000)


def test_ids_beyond_the_vocabulary_are_refused(tmp_path):
    tok = load_tokenizer("gpt2")
    (tmp_path / "d.txt").write_text("hello world " * 200)
    out = tmp_path / "s"
    prepare_text([tmp_path / "d.txt"], out, tok)
    manifest = json.loads((out / MANIFEST).read_text())
    tokens = np.array(read_shard(out / "train_000000.bin"))
    tokens[10] = 60000  # fits uint16, not GPT-2's vocabulary
    write_shard(out / "train_000000.bin", tokens)
    manifest["splits"]["train"]["files"][0]["max_id"] = 60000
    # A shard written with a bad id (its checksum recorded as written), not damaged afterwards.
    manifest["splits"]["train"]["files"][0]["sha256"] = shard_sha256(out / "train_000000.bin")
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="holds token id 60000 >= n_vocab=50257"):
        make(out)
    del manifest["splits"]["train"]["files"]  # a manifest without per-shard records: scanned
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="holds token id 60000 >= n_vocab=50257"):
        make(out)
    manifest["splits"]["train"]["files"] = [{"name": "train_000000.bin", "tokens": int(tokens.size), "max_id": 5}]
    (out / MANIFEST).write_text(json.dumps(manifest))  # a manifest that lies: caught per batch
    loader = make(out, seq_len=8, batch=64)
    with pytest.raises(ShardError, match="token id 60000 >= n_vocab=50257"):
        for step in range(loader.n_windows // 64 + 2):
            loader.batch(step)
    with pytest.raises(ShardError, match="token id 60000 >= n_vocab=50257"):
        for _, _ in zip(range(loader.n_windows // 64 + 2), loader.host_batches(0)):
            pass
    manifest["splits"]["train"]["files"][0]["tokens"] += 1
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="the manifest says"):
        make(out)


# ----------------------------------------------------------------------------------------------
# two hosts: real jax.distributed processes on 127.0.0.1

WORKER = textwrap.dedent("""
    import os, sys
    import numpy as np
    import jax
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from gpt2_jax.data.loader import TokenLoader

    port, pid, shard_dir, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                               initialization_timeout=60)
    assert jax.process_count() == 2 and jax.local_device_count() == 4 and jax.device_count() == 8
    loader = TokenLoader(shard_dir, "train", 32, 16, 0, 50257)  # process index and count from JAX
    devices = np.array(jax.devices())
    result = {"host": np.stack([b for _, b in zip(range(3), loader.host_batches(5))])}
    # process-major mesh (contiguous rows per host) and an interleaved one (rows alternate hosts)
    for name, order in (("contiguous", devices), ("interleaved", devices.reshape(2, 4).T.reshape(-1))):
        sharding = NamedSharding(Mesh(order, ("data",)), P("data"))
        arrays = loader.global_batches(5, sharding)
        result[name] = np.stack([multihost_utils.process_allgather(next(arrays), tiled=True) for _ in range(3)])
    np.savez(out, **result)
    jax.distributed.shutdown()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_hosts_see_the_same_global_batches_as_one(shards, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env |= {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
            "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[1])}
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(script), str(port), str(i), str(shards), str(tmp_path / f"out{i}.npz")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=240)[0])
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)

    one = make(shards, batch=16)
    expected = np.stack([one.batch(step) for step in (5, 6, 7)])  # [3, 16, T+1], one host
    results = [np.load(tmp_path / f"out{i}.npz") for i in range(2)]
    for r in results:
        np.testing.assert_array_equal(r["contiguous"], expected)
        np.testing.assert_array_equal(r["interleaved"], expected)
    np.testing.assert_array_equal(np.concatenate([results[0]["host"], results[1]["host"]], axis=1), expected)
