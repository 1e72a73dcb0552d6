"""The WebText recipe: readers, cleaning, dedup, Wikipedia filter, sharded preparation, restarts,
bad input. Real text (OpenWebText, WikiText-2, tiny Shakespeare) from tests/data and the package;
the planted duplicates and Wikipedia pages are built from it here."""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
import re
import tarfile

import numpy as np
import pytest

from gpt2_jax.data import prepare as prepare_module
from gpt2_jax.data.clean import Recipe, normalize, wikipedia_by_content, wikipedia_reason
from gpt2_jax.data.dedup import jaccard_estimate, minhash, near_duplicates
from gpt2_jax.data.errors import CorpusError, DataError, ShardError
from gpt2_jax.data.loader import TokenLoader
from gpt2_jax.data.ngrams import words
from gpt2_jax.data.prepare import MANIFEST, bundled_corpus, prepare
from gpt2_jax.data.readers import detect_format, read_corpus
from gpt2_jax.data.shards import read_shard
from gpt2_jax.tokenizer import load_tokenizer

DATA = pathlib.Path(__file__).parent / "data" / "pipeline"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gpt2")


@pytest.fixture(scope="module")
def base_docs() -> list[str]:
    """Distinct real documents: 4 OpenWebText pages and 12-paragraph runs of the first 100
    OpenWebText documents (their boundaries are not recorded), each of 100+ words."""
    docs = [p.read_text(encoding="utf-8") for p in sorted((DATA / "openwebtext").glob("*.txt"))]
    paras = (DATA / "openwebtext_first100_head.txt").read_text(encoding="utf-8").split("\n\n")
    runs = ["\n\n".join(paras[i:i + 12]) for i in range(0, len(paras) - 11, 12)]
    docs += [r for r in runs if len(r.split()) >= 100]
    assert len(docs) >= 50
    return docs


@pytest.fixture(scope="module")
def wiki_articles() -> list[str]:
    """Real Wikipedia articles (WikiText-2 test), in WikiText's layout with ' = = X = = ' headings."""
    raw = (DATA / "wikitext2_test_head.raw").read_text(encoding="utf-8")
    return [a.strip() for a in re.split(r"\n(?= = [^=\n]+ = \n)", raw) if a.strip()]


def edit_words(text: str, every: int = 120) -> str:
    """A near duplicate: every `every`-th word replaced."""
    ws = text.split(" ")
    for i in range(every // 2, len(ws), every):
        ws[i] = "EDITED"
    return " ".join(ws)


def planted_corpus(base: list[str], wiki: list[str]) -> tuple[list[str], dict]:
    """Base documents plus planted duplicates, Wikipedia pages and a too-short page, each plant
    after its original; returns the documents and the expected drop counts."""
    docs = list(base)
    docs += [base[0], base[5]]  # exact duplicates
    docs += ["  " + base[7].replace("\n", "\r\n") + "\n\n"]  # duplicate after normalization
    docs += [edit_words(base[10]), edit_words(base[12], 90)]  # near duplicates
    docs += [wiki[0], wiki[1]]  # WikiText article layout
    docs += ["From Wikipedia, the free encyclopedia\n\n" + wiki[2].split("\n", 2)[-1]]  # scraped tagline
    docs += ["Too short to be a web page."]
    return docs, {"exact_duplicate": 3, "near_duplicate": 2, "wikipedia_content": 3, "too_short": 1}


def write_openwebtext(path: pathlib.Path, docs: list[str | bytes], per_subset: int = 25) -> pathlib.Path:
    """OpenWebText's released layout: a tar.xz of `openwebtext/urlsf_subsetNN_data.xz` members,
    each an xz-compressed tar of `NNNNNNN-<md5>.txt` documents."""
    with tarfile.open(path, "w:xz") as outer:
        for s, lo in enumerate(range(0, len(docs), per_subset)):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:xz") as inner:
                for i, doc in enumerate(docs[lo:lo + per_subset], lo):
                    data = doc if isinstance(doc, bytes) else doc.encode("utf-8")
                    info = tarfile.TarInfo(f"{i:07d}-{hashlib.md5(data).hexdigest()}.txt")
                    info.size = len(data)
                    inner.addfile(info, io.BytesIO(data))
            info = tarfile.TarInfo(f"openwebtext/urlsf_subset{s:02d}-1_data.xz")
            info.size = buf.tell()
            buf.seek(0)
            outer.addfile(info, buf)
    return path


def shard_documents(shard_dir: pathlib.Path, tok) -> list[str]:
    """Every document in a shard directory, decoded from the whole stream (train then val, so a
    document that the tail split cuts in two reads whole)."""
    manifest = json.loads((shard_dir / MANIFEST).read_text())
    names = manifest["splits"]["train"]["shards"] + manifest["splits"]["val"]["shards"]
    tokens = np.concatenate([read_shard(shard_dir / n) for n in names])
    assert tokens[-1] == tok.eot_id
    cuts = np.r_[-1, np.flatnonzero(tokens == tok.eot_id)]
    return [tok.decode(tokens[a + 1:b].tolist()) for a, b in zip(cuts[:-1], cuts[1:])]


# ----------------------------------------------------------------------------------------------
# the done criteria: OpenWebText sample + tiny Shakespeare, planted duplicates and Wikipedia


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, base_docs, wiki_articles):
    root = tmp_path_factory.mktemp("owt")
    docs, expected = planted_corpus(base_docs, wiki_articles)
    archive = write_openwebtext(root / "openwebtext.tar.xz", docs)
    out = root / "shards"
    manifest = prepare([archive, bundled_corpus()], out, "gpt2", recipe=Recipe(val_fraction=0.2),
                       shard_bytes=60_000, workers=1)
    return out, manifest, expected


def test_openwebtext_and_shakespeare_token_count_is_exact(prepared, base_docs, tok):
    out, manifest, _ = prepared
    shakespeare = bundled_corpus().read_text(encoding="utf-8")
    kept = [normalize(d)[0] for d in base_docs + [shakespeare]]
    expected_tokens = sum(len(tok.encode(d)) + 1 for d in kept)
    assert manifest["tokens"] == expected_tokens
    assert manifest["splits"]["train"]["tokens"] + manifest["splits"]["val"]["tokens"] == expected_tokens
    assert manifest["documents"] == len(kept) == manifest["report"]["kept"]
    on_disk = sum(read_shard(out / n).size for s in manifest["splits"].values() for n in s["shards"])
    assert on_disk == expected_tokens
    assert sorted(shard_documents(out, tok)) == sorted(kept)  # exactly the distinct documents survive
    assert len(manifest["splits"]["train"]["shards"]) > 2  # sharded (60 KB of text per shard here)
    assert manifest["splits"]["val"]["documents"] > 0 and manifest["splits"]["train"]["documents"] > 0


def test_report_counts_every_stage(prepared, base_docs):
    _, manifest, expected = prepared
    report = manifest["report"]
    read = len(base_docs) + sum(expected.values()) + 1  # + Shakespeare
    assert report["documents_read"] == read
    dropped = {k: v for s in report["stages"] for k, v in s["dropped"].items() if v}
    assert dropped == expected
    stages = report["stages"]
    assert stages[0]["in"] == read and stages[-1]["out"] == report["kept"] == len(base_docs) + 1
    for before, after in zip(stages, stages[1:]):
        assert after["in"] == before["out"] == before["in"] - sum(before["dropped"].values())
    assert report["normalization"]["newlines_changed"] >= 1  # the CRLF plant
    assert sum(report["split_documents"].values()) == report["kept"]


def test_hash_split_is_by_document_not_by_order(prepared, base_docs, wiki_articles, tmp_path, tok):
    """The same documents in reverse order land in the same splits (only which member of a
    near-duplicate pair survives changes: the first in input order)."""
    out, _, _ = prepared
    docs, _ = planted_corpus(base_docs, wiki_articles)
    archive = write_openwebtext(tmp_path / "rev.tar.xz", docs[::-1])
    prepare([bundled_corpus(), archive], tmp_path / "rev", "gpt2", recipe=Recipe(val_fraction=0.2), workers=1)
    split_of = [{d: s for s in ("train", "val") for d in split_documents(shards, s, tok)} for shards in (out, tmp_path / "rev")]
    common = split_of[0].keys() & split_of[1].keys()
    assert all(split_of[0][d] == split_of[1][d] for d in common)
    swapped = {normalize(d)[0] for d in (base_docs[10], base_docs[12], edit_words(base_docs[10]), edit_words(base_docs[12], 90))}
    assert split_of[0].keys() ^ split_of[1].keys() == swapped


def split_documents(shard_dir, split, tok) -> list[str]:
    manifest = json.loads((shard_dir / MANIFEST).read_text())
    docs = []
    for name in manifest["splits"][split]["shards"]:
        tokens = np.asarray(read_shard(shard_dir / name))
        cuts = np.r_[-1, np.flatnonzero(tokens == tok.eot_id)]
        docs += [tok.decode(tokens[a + 1:b].tolist()) for a, b in zip(cuts[:-1], cuts[1:])]
    return docs


def test_training_reads_the_prepared_directory(prepared):
    out, manifest, _ = prepared
    loader = TokenLoader(out, "train", 128, 8, 0, 50257, vocab_fingerprint=manifest["vocab_fingerprint"],
                         process_index=0, process_count=1)
    assert loader.batch(0).shape == (8, 129)


# ----------------------------------------------------------------------------------------------
# stages in isolation


def test_normalization_fixes_and_counts():
    text, counts = normalize("\ufeffCafe\u0301 \x97 done\r\nline\x00two\u200b\n\n\n\n end  ")
    assert text == "Caf\u00e9 \u2014 done\nlinetwo\n\n end"
    assert counts == {"nfc_changed": 1, "newlines_changed": 1, "cp1252_chars_fixed": 1, "control_chars_removed": 3,
                      "blank_runs_collapsed": 1}
    assert normalize("plain text")[1] == dict.fromkeys(counts, 0)


def test_minhash_estimates_jaccard(base_docs):
    a, b = base_docs[10], edit_words(base_docs[10], 30)
    sa, sb = (set(zip(*[words(t)[i:] for i in range(5)])) for t in (a, b))
    true = len(sa & sb) / len(sa | sb)
    assert abs(jaccard_estimate(minhash(a), minhash(b)) - true) < 0.15
    assert jaccard_estimate(minhash(a), minhash(base_docs[11])) < 0.1
    np.testing.assert_array_equal(minhash(a), minhash(a.upper()))  # the paper's normalization: case-blind


def test_near_duplicates_keep_the_first_of_each_group(base_docs):
    docs = [base_docs[1], edit_words(base_docs[2]), base_docs[2], base_docs[3], edit_words(edit_words(base_docs[1]), 97)]
    drop = near_duplicates(np.stack([minhash(d) for d in docs]))
    assert drop.tolist() == [False, False, True, False, True]
    distinct = near_duplicates(np.stack([minhash(d) for d in base_docs]))
    assert not distinct.any()  # no distinct document is lost


def test_wikipedia_filter_by_url_metadata_and_content(wiki_articles, base_docs):
    assert wikipedia_reason("news", "https://en.wikipedia.org/wiki/Robert_Boulter", None) == "wikipedia_url"
    assert wikipedia_reason("news", "de.m.wikipedia.org/wiki/X", None) == "wikipedia_url"
    assert wikipedia_reason(wiki_articles[0], "https://www.example.com/wikipedia.org", None) is None  # URL decides
    assert wikipedia_reason("news", None, {"source": "Wikipedia (en)"}) == "wikipedia_metadata"
    assert wikipedia_reason("news", None, {"source": "reddit"}) is None
    assert all(wikipedia_by_content(a) for a in wiki_articles[:3])
    body = "\n".join(line for line in wiki_articles[0].splitlines() if not line.strip().startswith("="))
    assert not wikipedia_by_content(body)  # without headings or other signals: not recognised
    weak = body + "\n\nSee also\n\nReferences\n\n" + " ".join(f"[{i}]" for i in range(6))
    assert wikipedia_by_content(weak)  # two weak signals
    assert not wikipedia_by_content(body + "\n\nReferences\n")  # one weak signal is not enough
    assert not any(wikipedia_by_content(d) for d in base_docs)  # no false positive on web pages


def test_jsonl_urls_and_metadata_drive_the_wikipedia_filter(tmp_path, base_docs, wiki_articles, tok):
    rows = [{"text": base_docs[0], "url": "https://example.com/a"},
            {"text": base_docs[1], "url": "https://en.wikipedia.org/wiki/Haiti"},  # dropped by URL
            {"text": base_docs[2], "meta": {"source": "wikipedia"}},  # dropped by metadata
            {"text": wiki_articles[0], "url": "https://mirror.example.org/page"},  # URL present and not Wikipedia: kept
            {"text": wiki_articles[1]}]  # no URL: content heuristics drop it
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    assert detect_format(str(path)) == "jsonl"
    m = prepare([path], tmp_path / "out", "gpt2", recipe=Recipe(split="tail"), workers=1)
    dropped = {k: v for s in m["report"]["stages"] for k, v in s["dropped"].items() if v}
    assert dropped == {"wikipedia_url": 1, "wikipedia_metadata": 1, "wikipedia_content": 1}
    assert sorted(shard_documents(tmp_path / "out", tok)) == sorted(normalize(r["text"])[0] for r in (rows[0], rows[3]))


def test_readers_find_every_layout(tmp_path, base_docs):
    archive = write_openwebtext(tmp_path / "openwebtext.tar.xz", base_docs[:7], per_subset=3)
    from_archive = [d.data.decode() for d in read_corpus([archive])]
    assert from_archive == base_docs[:7]
    extracted = tmp_path / "extracted"
    with tarfile.open(archive) as t:
        t.extractall(extracted, filter="data")
    assert detect_format(str(extracted)) == "openwebtext"
    assert [d.data.decode() for d in read_corpus([extracted])] == base_docs[:7]  # folder of .xz subsets
    one = sorted(extracted.rglob("*.xz"))[1]
    assert [d.data.decode() for d in read_corpus([one])] == base_docs[3:6]  # one subset
    folder = tmp_path / "texts"
    (folder / "b").mkdir(parents=True)
    (folder / "a.txt").write_text("A")
    (folder / "b" / "c.txt").write_text("C")
    (folder / ".hidden").write_text("H")
    assert [d.data for d in read_corpus([folder])] == [b"A", b"C"]
    assert [d.data for d in read_corpus([folder / "a.txt"], "text")] == [b"A"]


def test_tfds_dataset_by_name_from_a_local_data_dir(tmp_path, base_docs, tok):
    from gpt2_jax.data.tf_runtime import tensorflow

    tensorflow()
    import tensorflow_datasets as tfds

    rows = [(base_docs[0], "https://example.com/a"), (base_docs[1], "https://en.wikipedia.org/wiki/X"),
            (base_docs[2], "https://example.com/c")]

    class GptJaxTestCorpus(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "url": tfds.features.Text()}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, (text, url) in enumerate(rows):
                yield i, {"text": text, "url": url}

    GptJaxTestCorpus(data_dir=str(tmp_path / "tfds")).download_and_prepare()
    m = prepare(["gpt_jax_test_corpus"], tmp_path / "out", "gpt2", format="tfds", tfds_data_dir=str(tmp_path / "tfds"),
                recipe=Recipe(split="tail"), workers=1)
    assert m["report"]["documents_read"] == 3 and m["report"]["stages"][3]["dropped"]["wikipedia_url"] == 1
    assert sorted(shard_documents(tmp_path / "out", tok)) == sorted(normalize(base_docs[i])[0] for i in (0, 2))
    with pytest.raises(CorpusError, match="is not prepared in"):
        list(read_corpus(["gpt_jax_no_such_dataset"], "tfds", tfds_data_dir=str(tmp_path / "tfds")))
    with pytest.raises(CorpusError, match="no feature 'body'"):
        list(read_corpus(["gpt_jax_test_corpus"], "tfds", tfds_data_dir=str(tmp_path / "tfds"), text_field="body"))


# ----------------------------------------------------------------------------------------------
# restartable, parallel, idempotent


def test_interrupted_run_resumes_and_skips_finished_shards(tmp_path, base_docs, monkeypatch):
    archive = write_openwebtext(tmp_path / "owt.tar.xz", base_docs)
    kwargs = dict(recipe=Recipe(val_fraction=0.2), shard_bytes=40_000, workers=1)
    reference = prepare([archive], tmp_path / "ref", "gpt2", **kwargs)
    n_shards = sum(len(s["shards"]) for s in reference["splits"].values())
    assert n_shards >= 4

    real, calls = prepare_module._tokenize_chunk, []

    def interrupted(task):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(task[2])
        return real(task)

    monkeypatch.setattr(prepare_module, "_tokenize_chunk", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        prepare([archive], out, "gpt2", **kwargs)
    finished = sorted(p.name for p in out.glob("*.bin"))
    assert len(finished) == 2 and not (out / MANIFEST).exists()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]  # no half-written shard or record
    with pytest.raises(ShardError, match="did not finish"):
        TokenLoader(out, "train", 16, 2, 0, 50257, process_index=0, process_count=1)
    stamps = {n: (out / n).stat().st_mtime_ns for n in finished}

    calls.clear()
    monkeypatch.setattr(prepare_module, "_tokenize_chunk", lambda task: calls.append(task[2]) or real(task))
    resumed = prepare([archive], out, "gpt2", **kwargs)
    assert len(calls) == n_shards - 2 and not any(pathlib.Path(c).name in finished for c in calls)
    assert {n: (out / n).stat().st_mtime_ns for n in finished} == stamps  # skipped, not rewritten
    assert resumed == reference  # the same shards (checksums) and counts as an uninterrupted run
    assert not (out / ".prepare").exists()
    calls.clear()
    assert prepare([archive], out, "gpt2", **kwargs) == reference and not calls  # complete: nothing to do
    with pytest.raises(CorpusError, match="already holds shards prepared from other inputs or settings"):
        prepare([archive], out, "gpt2", **{**kwargs, "shard_bytes": 50_000})


def test_parallel_workers_give_identical_shards(tmp_path, base_docs):
    archive = write_openwebtext(tmp_path / "owt.tar.xz", base_docs[:30])
    kwargs = dict(recipe=Recipe(val_fraction=0.2), shard_bytes=40_000)
    one = prepare([archive], tmp_path / "one", "gpt2", workers=1, **kwargs)
    two = prepare([archive], tmp_path / "two", "gpt2", workers=2, **kwargs)
    assert one == two


# ----------------------------------------------------------------------------------------------
# bad input: clear errors, nothing half-written


def test_empty_corpora_are_errors(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CorpusError, match="the corpus is empty: no documents"):
        prepare([tmp_path / "empty_dir"], tmp_path / "o1", "gpt2", workers=1)
    (tmp_path / "short.txt").write_text("only a few words")
    with pytest.raises(CorpusError, match="empty after cleaning: all 1 documents were dropped, 1 as too_short: "
                                          "--min-words 64 drops them; lower it"):
        prepare([tmp_path / "short.txt"], tmp_path / "o2", "gpt2", workers=1)
    with pytest.raises(CorpusError, match="1 as too_long: --max-chars 5 drops them; raise it"):
        prepare([tmp_path / "short.txt"], tmp_path / "o2", "gpt2", workers=1, recipe=Recipe(min_words=0, max_chars=5))
    empty_archive = write_openwebtext(tmp_path / "e.tar.xz", [])
    with pytest.raises(CorpusError, match="the corpus is empty"):
        prepare([empty_archive], tmp_path / "o3", "gpt2", workers=1)
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))


def test_unreadable_archives_are_errors(tmp_path, base_docs):
    good = write_openwebtext(tmp_path / "good.tar.xz", base_docs[:10]).read_bytes()
    (tmp_path / "trunc.tar.xz").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.tar.xz").write_bytes(b"not an archive at all" * 10)
    with tarfile.open(tmp_path / "bad_inner.tar", "w") as outer:
        info = tarfile.TarInfo("openwebtext/urlsf_subset00-1_data.xz")
        info.size = 100
        outer.addfile(info, io.BytesIO(b"\xfd7zXZ\x00" + b"\x00" * 94))
    for name, pattern in [("trunc.tar.xz", "cannot read"), ("junk.tar.xz", "cannot read archive"),
                          ("bad_inner.tar", "cannot read OpenWebText subset .*urlsf_subset00")]:
        with pytest.raises(CorpusError, match=pattern):
            prepare([tmp_path / name], tmp_path / f"out_{name}", "gpt2", workers=1)
        assert not (tmp_path / f"out_{name}").exists()


def test_non_utf8_documents_stop_the_run_or_are_counted(tmp_path, base_docs, tok):
    bad = base_docs[3].encode("utf-8").replace(b"the", b"th\xe9", 1)
    archive = write_openwebtext(tmp_path / "owt.tar.xz", [base_docs[0], bad, base_docs[1]])
    with pytest.raises(CorpusError, match=r"0000001-.*\.txt' is not UTF-8 \(bad byte at offset \d+\).*--invalid-utf8 drop"):
        prepare([archive], tmp_path / "o1", "gpt2", workers=1)
    assert not (tmp_path / "o1").exists()
    m = prepare([archive], tmp_path / "o2", "gpt2", workers=1, recipe=Recipe(invalid_utf8="drop", split="tail"))
    assert m["report"]["stages"][0]["dropped"] == {"invalid_utf8": 1} and m["documents"] == 2
    lines = tmp_path / "bad.jsonl"
    lines.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2' is not UTF-8"):
        prepare([lines], tmp_path / "o3", "gpt2", workers=1)
    lines.write_text('{"text": "lone \\ud800 surrogate"}\n')
    with pytest.raises(CorpusError, match="unpaired surrogate"):
        prepare([lines], tmp_path / "o4", "gpt2", workers=1)


def test_bad_jsonl_and_settings_are_errors(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(CorpusError, match=r"c.jsonl:2: not a JSON object"):
        prepare([path], tmp_path / "o", "gpt2", workers=1)
    path.write_text('{"body": "x"}\n')
    with pytest.raises(CorpusError, match=r"no field 'text' \(has \['body'\]\); pass --text-field"):
        prepare([path], tmp_path / "o", "gpt2", workers=1)
    with pytest.raises(CorpusError, match="val_fraction=1.5"):
        Recipe(val_fraction=1.5)
    with pytest.raises(CorpusError, match="format 'csv'"):
        prepare([path], tmp_path / "o", "gpt2", format="csv", workers=1)
    assert issubclass(CorpusError, DataError) and issubclass(ShardError, DataError) and issubclass(DataError, ValueError)
    assert not (tmp_path / "o").exists()


def test_hash_split_that_leaves_a_split_empty_is_an_error(tmp_path, base_docs):
    archive = write_openwebtext(tmp_path / "owt.tar.xz", base_docs[:3])
    with pytest.raises(CorpusError, match="raise --val-fraction or use --split tail"):
        prepare([archive], tmp_path / "o", "gpt2", workers=1, recipe=Recipe(val_fraction=1e-6))
    assert not (tmp_path / "o").exists()
