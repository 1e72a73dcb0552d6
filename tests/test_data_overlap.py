"""8-gram overlap (paper section 4): Bloom filter properties, planted overlaps reported exactly,
disjoint text at 0; checked against exact set arithmetic on the same real text."""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pytest

from gpt2_jax.data.clean import Recipe, normalize
from gpt2_jax.data.overlap import BloomFilter, overlap
from gpt2_jax.data.prepare import MANIFEST, bundled_corpus, prepare
from gpt2_jax.data.shards import read_shard
from gpt2_jax.tokenizer import load_tokenizer

DATA = pathlib.Path(__file__).parent / "data" / "pipeline"


def exact_grams(text: str, n: int = 8) -> list[tuple[str, ...]]:
    """Reference: the paper's normalization and n-grams, with plain Python sets."""
    ws = re.findall(r"[^\W_]+", text.lower())
    return [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]


def test_bloom_filter_has_no_false_negatives_and_its_stated_rate():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**63, size=20_000, dtype=np.uint64)
    bloom = BloomFilter(20_000, 1e-3)
    bloom.add(keys)
    assert bloom.contains(keys).all()
    others = rng.integers(0, 2**63, size=200_000, dtype=np.uint64)
    measured = bloom.contains(others).mean()
    assert 0.3e-3 < bloom.fpr_estimate() < 1.5e-3  # full to capacity: about the design rate
    assert measured < 3 * bloom.fpr_estimate() + 1e-4
    empty = BloomFilter(1000, 1e-8)
    assert not empty.contains(others[:1000]).any() and empty.fpr_estimate() == 0.0


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    """OpenWebText documents in train/val shards; returns the shard dir and the train texts."""
    root = tmp_path_factory.mktemp("overlap")
    paras = (DATA / "openwebtext_first100_head.txt").read_text(encoding="utf-8").split("\n\n")
    docs = [p.read_text(encoding="utf-8") for p in sorted((DATA / "openwebtext").glob("*.txt"))]
    docs += ["\n\n".join(paras[i:i + 12]) for i in range(0, len(paras), 12)]
    (root / "docs").mkdir()
    for i, d in enumerate(docs):
        (root / "docs" / f"{i:03d}.txt").write_text(d, encoding="utf-8")
    out = root / "shards"
    manifest = prepare([root / "docs"], out, "gpt2", recipe=Recipe(val_fraction=0.3, min_words=0), shard_bytes=50_000, workers=1)
    tok = load_tokenizer("gpt2")
    splits = {}
    for split in ("train", "val"):
        tokens = np.concatenate([read_shard(out / n) for n in manifest["splits"][split]["shards"]])
        cuts = np.r_[-1, np.flatnonzero(tokens == tok.eot_id)]
        splits[split] = {tok.decode(tokens[a + 1:b].tolist()) for a, b in zip(cuts[:-1], cuts[1:])}
    normalized = [normalize(d)[0] for d in docs]
    assert splits["train"] | splits["val"] == set(normalized)
    return out, [d for d in normalized if d in splits["train"]], [d for d in normalized if d in splits["val"]], root


def test_planted_overlaps_are_reported_exactly(train):
    out, train_docs, val_docs, root = train
    train_set = {g for d in train_docs for g in exact_grams(d)}
    passages = [d[200:900] for d in train_docs[:5]] + [d[:700] for d in val_docs[:5]]
    (root / "planted").mkdir(exist_ok=True)
    for i, p in enumerate(passages):
        (root / "planted" / f"{i}.txt").write_text(p, encoding="utf-8")
    (root / "whole.txt").write_text(train_docs[3], encoding="utf-8")
    report = overlap(out, [str(root / "planted"), str(root / "whole.txt")])
    planted, whole = report["eval"]
    grams = [g for p in passages for g in exact_grams(p)]
    expected = sum(g in train_set for g in grams)
    assert planted["documents"] == 10 and planted["ngrams"] == len(grams)
    assert planted["found"] == expected  # exactly, at the 1e-8 false-positive rate
    assert 0.4 < expected / len(grams) < 0.7  # the five train passages are in, the five val ones mostly not
    assert planted["distinct_found"] == len(set(grams) & train_set) and planted["distinct_ngrams"] == len(set(grams))
    assert whole["fraction"] == 1.0 and whole["found"] == len(exact_grams(train_docs[3]))  # no false negatives
    assert report["fpr_design"] == 1e-8 and report["fpr_estimate"] < 1e-8
    assert report["ngrams_inserted"] == sum(len(exact_grams(d)) for d in train_docs)


def test_disjoint_text_overlaps_zero(train):
    out, train_docs, _, root = train
    train_set = {g for d in train_docs for g in exact_grams(d)}
    plays = bundled_corpus().read_text(encoding="utf-8")[:200_000]
    (root / "plays.txt").write_text(plays, encoding="utf-8")
    assert not any(g in train_set for g in exact_grams(plays))  # truly disjoint (checked exactly)
    (ev,) = overlap(out, [str(root / "plays.txt")])["eval"]
    assert ev["ngrams"] > 30_000 and ev["found"] == 0 and ev["fraction"] == 0.0


def test_jsonl_eval_sets_and_errors(train):
    out, train_docs, _, root = train
    train_set = {g for d in train_docs for g in exact_grams(d)}
    lines = [json.loads(x)["text"] for x in (DATA / "lambada_test_head.jsonl").read_text(encoding="utf-8").splitlines()]
    (ev,) = overlap(out, [str(DATA / "lambada_test_head.jsonl")])["eval"]
    grams = [g for t in lines for g in exact_grams(t)]
    assert ev["documents"] == 30 and ev["ngrams"] == len(grams) and ev["found"] == sum(g in train_set for g in grams)
    from gpt2_jax.data.errors import CorpusError, ShardError

    with pytest.raises(CorpusError, match="no evaluation sets"):
        overlap(out, [])
    with pytest.raises(ShardError, match="has no manifest.json"):
        overlap(root / "docs", [str(root / "plays.txt")])
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["vocab_source"] == "gpt2"
