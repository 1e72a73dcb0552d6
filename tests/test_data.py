"""Token shards (llm.c layout), corpus preparation and the (seed, step) batch loader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpt2_jax.data.loader import TokenWindows
from gpt2_jax.data.prepare import MANIFEST, CorpusError, bundled_corpus, prepare_text
from gpt2_jax.data.shards import HEADER_BYTES, MAGIC, ShardError, read_shard, write_shard
from gpt2_jax.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gpt2")


def test_shard_roundtrip_and_llmc_header(tmp_path):
    tokens = np.array([0, 1, 50256, 65535, 7], np.int64)
    path = write_shard(tmp_path / "s.bin", tokens)
    raw = path.read_bytes()
    header = np.frombuffer(raw[:HEADER_BYTES], "<i4")
    assert header[0] == MAGIC == 20240520 and header[1] == 1 and header[2] == 5 and not header[3:].any()
    assert np.frombuffer(raw[HEADER_BYTES:], "<u2").tolist() == tokens.tolist()
    np.testing.assert_array_equal(read_shard(path), tokens)
    assert [p.name for p in tmp_path.iterdir()] == ["s.bin"]  # no temporary left behind


def test_bad_shards_are_clear_errors(tmp_path):
    path = write_shard(tmp_path / "s.bin", np.arange(100))
    data = path.read_bytes()
    (tmp_path / "trunc.bin").write_bytes(data[:-10])
    with pytest.raises(ShardError, match="truncated or corrupt"):
        read_shard(tmp_path / "trunc.bin")
    (tmp_path / "magic.bin").write_bytes(b"\x00" * 8 + data[8:])
    with pytest.raises(ShardError, match="not an llm.c token shard"):
        read_shard(tmp_path / "magic.bin")
    (tmp_path / "short.bin").write_bytes(data[:100])
    with pytest.raises(ShardError, match="shorter than its"):
        read_shard(tmp_path / "short.bin")
    with pytest.raises(ShardError, match="does not fit a uint16 shard"):
        write_shard(tmp_path / "big.bin", np.array([70000]))
    assert not (tmp_path / "big.bin").exists()


def test_prepare_counts_every_token_and_separator(tmp_path, tok):
    docs = ["First document.\nWith two lines.", "Second — ünïcödé and emoji 😀 <|endoftext|> literal."]
    paths = []
    for i, doc in enumerate(docs):
        paths.append(tmp_path / f"d{i}.txt")
        paths[-1].write_text(doc, encoding="utf-8")
    manifest = prepare_text(paths, tmp_path / "out", tok, val_fraction=0.2)
    expected = [t for d in docs for t in tok.encode(d) + [tok.eot_id]]
    got = np.concatenate([read_shard(tmp_path / "out" / "train_000000.bin"), read_shard(tmp_path / "out" / "val_000000.bin")])
    assert got.tolist() == expected
    assert expected.count(tok.eot_id) == 2  # the literal "<|endoftext|>" in text is not a separator
    on_disk = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert on_disk == manifest and manifest["documents"] == 2 and manifest["vocab"] == "gpt2"
    assert manifest["splits"]["train"]["tokens"] + manifest["splits"]["val"]["tokens"] == len(expected)


def test_bad_corpora_are_refused(tmp_path, tok):
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(CorpusError, match="is empty"):
        prepare_text([tmp_path / "empty.txt"], tmp_path / "o1", tok)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(CorpusError, match="is not UTF-8 .*offset 3"):
        prepare_text([tmp_path / "latin1.txt"], tmp_path / "o2", tok)
    with pytest.raises(CorpusError, match="does not exist"):
        prepare_text([tmp_path / "missing.txt"], tmp_path / "o3", tok)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


@pytest.fixture(scope="module")
def shakespeare_shards(tmp_path_factory, tok):
    out = tmp_path_factory.mktemp("shakespeare")
    prepare_text([bundled_corpus()], out, tok)
    return out


def test_bundled_corpus_tokenizes_to_known_size(shakespeare_shards, tok):
    manifest = json.loads((shakespeare_shards / MANIFEST).read_text())
    text = bundled_corpus().read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) == 1_115_394
    total = manifest["splits"]["train"]["tokens"] + manifest["splits"]["val"]["tokens"]
    assert total == len(tok.encode(text)) + 1


def test_loader_is_a_pure_function_of_seed_and_step(shakespeare_shards):
    loader = TokenWindows(shakespeare_shards, "train", 64, 50257)
    a = loader.random_batch(seed=0, step=5, batch_size=4)
    again = TokenWindows(shakespeare_shards, "train", 64, 50257).random_batch(seed=0, step=5, batch_size=4)
    np.testing.assert_array_equal(a, again)
    assert not np.array_equal(a, loader.random_batch(seed=0, step=6, batch_size=4))
    assert not np.array_equal(a, loader.random_batch(seed=1, step=5, batch_size=4))
    assert a.shape == (4, 65) and a.dtype == np.int32
    stream = np.asarray(loader.tokens)
    for row in a:  # every window is a real slice of the token stream
        starts = np.flatnonzero(stream[: len(stream) - 64] == row[0])
        assert any(np.array_equal(stream[s:s + 65], row) for s in starts)


def test_eval_batches_are_fixed_and_cover_the_split(shakespeare_shards):
    loader = TokenWindows(shakespeare_shards, "val", 32, 50257)
    first = loader.fixed_batches(3, 2)
    np.testing.assert_array_equal(np.stack(first), np.stack(loader.fixed_batches(3, 2)))
    assert first[0][0, 0] == loader.tokens[0] and first[-1][-1, -1] == loader.tokens[-1]


def test_missing_manifest_is_an_error(tmp_path):
    with pytest.raises(ShardError, match="has no manifest.json"):
        TokenWindows(tmp_path, "train", 16, 50257)
