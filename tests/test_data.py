"""Token shards (llm.c layout), `prepare_text` (the demo's plain preparation) and the manifest.

The WebText recipe is tested in test_data_recipe.py, the tf.data loader in test_data_loader.py,
the overlap analysis in test_data_overlap.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpt2_jax.data.loader import TokenLoader, TokenWindows
from gpt2_jax.data.prepare import MANIFEST, CorpusError, bundled_corpus, prepare_text
from gpt2_jax.data.shards import HEADER_BYTES, MAGIC, ShardError, read_manifest, read_shard, shard_sha256, write_shard
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


def test_prepare_text_counts_every_token_and_separator(tmp_path, tok):
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
    split = manifest["splits"]
    assert split["val"]["tokens"] == int(len(expected) * 0.2)  # the tail split: last 20% of the stream
    assert split["train"]["tokens"] + split["val"]["tokens"] == len(expected) == manifest["tokens"]
    assert split["train"]["documents"] + split["val"]["documents"] == 2
    for entry in split.values():  # per-shard records: tokens, checksum, largest id
        for f in entry["files"]:
            path = tmp_path / "out" / f["name"]
            assert f["tokens"] == read_shard(path).size and f["sha256"] == shard_sha256(path)
            assert f["max_id"] == int(np.max(read_shard(path)))
    # nothing but shards and the manifest is left behind
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MANIFEST, "train_000000.bin", "val_000000.bin"]


def test_manifest_keeps_the_fields_training_reads(tmp_path, tok):
    (tmp_path / "d.txt").write_text("some text " * 50)
    manifest = prepare_text([tmp_path / "d.txt"], tmp_path / "out", tok)
    assert manifest["format"] == "llmc-uint16-v1" and manifest["vocab_fingerprint"] == tok.fingerprint
    assert manifest["n_vocab"] == tok.n_vocab == 50257 and manifest["eot_id"] == tok.eot_id == 50256
    assert set(manifest["splits"]) == {"train", "val"}
    assert all({"shards", "tokens"} <= set(v) for v in manifest["splits"].values())
    assert read_manifest(tmp_path / "out") == manifest


def test_bad_corpora_are_refused(tmp_path, tok):
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(CorpusError, match="is empty"):
        prepare_text([tmp_path / "empty.txt"], tmp_path / "o1", tok)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(CorpusError, match="is not UTF-8 .*offset 3"):
        prepare_text([tmp_path / "latin1.txt"], tmp_path / "o2", tok)
    with pytest.raises(CorpusError, match="does not exist"):
        prepare_text([tmp_path / "missing.txt"], tmp_path / "o3", tok)
    with pytest.raises(CorpusError, match="no inputs"):
        prepare_text([], tmp_path / "o4", tok)
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3", "o4"))  # nothing half-written


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
    stream = np.concatenate([read_shard(shakespeare_shards / "train_000000.bin"), read_shard(shakespeare_shards / "val_000000.bin")])
    assert stream.tolist() == tok.encode(text) + [tok.eot_id]


def test_token_windows_adapter_uses_the_token_loader(shakespeare_shards):
    """The old API that train.py calls is a thin view of TokenLoader (one data path)."""
    old = TokenWindows(shakespeare_shards, "train", 64, 50257)
    new = TokenLoader(shakespeare_shards, "train", 64, 4, 3, 50257, process_index=0, process_count=1)
    np.testing.assert_array_equal(old.random_batch(seed=3, step=7, batch_size=4), new.batch(7))
    assert not np.array_equal(old.random_batch(seed=3, step=7, batch_size=4), old.random_batch(seed=3, step=8, batch_size=4))
    val = TokenLoader(shakespeare_shards, "val", 32, 2, 0, 50257, process_index=0, process_count=1)
    np.testing.assert_array_equal(np.stack(TokenWindows(shakespeare_shards, "val", 32, 50257).fixed_batches(3, 2)),
                                  np.stack(val.eval_batches(3)))
    assert old.manifest["vocab"] == "gpt2"


def test_missing_manifest_is_an_error(tmp_path):
    with pytest.raises(ShardError, match="has no manifest.json"):
        TokenLoader(tmp_path, "train", 16, 2, 0, 50257, process_index=0, process_count=1)
    with pytest.raises(ShardError, match="has no manifest.json"):
        TokenWindows(tmp_path, "train", 16, 50257)
