"""The recipe on Apache Beam (`data prepare --runner beam`) against the local path: the same shards,
byte for byte, and an equal manifest on a corpus with planted exact and near duplicates and
Wikipedia pages, spread over several files of two formats; bad input gets the local one-line errors."""

from __future__ import annotations

import json
import pathlib

import pytest

from gpt2_jax.data.beam_prepare import STAGING, prepare_beam
from gpt2_jax.data.clean import Recipe
from gpt2_jax.data.errors import CorpusError
from gpt2_jax.data.prepare import MANIFEST, prepare
from tests.test_data_recipe import base_docs, edit_words, tok, wiki_articles  # noqa: F401 (fixtures)

IN_PROCESS = ["direct_running_mode=in_memory"]  # the multi-processing default is tested once, below


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, base_docs, wiki_articles) -> list[str]:  # noqa: F811
    """About 240 documents in 3 JSONL files and a folder of text files: distinct pages (whole and
    halves of real ones), exact duplicates (some only after normalization), near duplicates
    (words edited), Wikipedia by content and by URL, too-short pages."""
    root = tmp_path_factory.mktemp("beam_corpus")
    halves = []
    for d in base_docs:
        ws = d.split(" ")
        halves += [" ".join(ws[: len(ws) // 2]), " ".join(ws[len(ws) // 2:])]
    distinct = base_docs + [h for h in halves if len(h.split()) >= 64]
    records = []
    for i, text in enumerate(distinct):
        records.append({"text": text, "url": f"https://news.example.com/{i}"})
        if i % 9 == 3:
            records.append({"text": text, "url": f"https://mirror.example.com/{i}"})  # exact duplicate
        if i % 11 == 5:
            records.append({"text": "  " + text.replace("\n", "\r\n") + "\n\n"})  # equal after normalization
        if i % 7 == 2:
            records.append({"text": edit_words(text, 100)})  # near duplicate
        if i % 13 == 0:
            records.append({"text": text, "url": f"https://en.wikipedia.org/wiki/Page_{i}"})
        if i % 17 == 0:
            records.append({"text": "Too short to be a page."})
    records += [{"text": a} for a in wiki_articles[:6]]  # Wikipedia by content
    thirds = len(records) // 3
    for k, part in enumerate([records[:thirds], records[thirds:2 * thirds], records[2 * thirds:]]):
        (root / f"part{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    folder = root / "pages"
    folder.mkdir()
    for i, text in enumerate([base_docs[1], edit_words(base_docs[2], 80), base_docs[30]] + wiki_articles[6:8]):
        (folder / f"{i:03d}.txt").write_text(text, encoding="utf-8")
    return [str(root / f"part{k}.jsonl") for k in range(3)] + [str(folder)]


def outputs(out: pathlib.Path) -> tuple[dict, dict]:
    manifest = json.loads((out / MANIFEST).read_text())
    manifest.pop("runner", None)
    return manifest, {p.name: p.read_bytes() for p in sorted(out.glob("*.bin"))}


@pytest.mark.parametrize("split", ["hash", "tail"])
def test_beam_writes_the_local_shards(corpus, tmp_path, tok, split):  # noqa: F811
    recipe = Recipe(split=split, val_fraction=0.1)
    kwargs = dict(recipe=recipe, shard_bytes=48 * 1024)
    prepare(corpus, tmp_path / "local", tok, workers=1, **kwargs)
    beam_manifest = prepare_beam(corpus, tmp_path / "beam", tok, workers=1, beam_options=IN_PROCESS, **kwargs)
    local, local_shards = outputs(tmp_path / "local")
    beam, beam_shards = outputs(tmp_path / "beam")
    assert beam_manifest["runner"]["name"] == "beam"
    dropped = {k: v for s in local["report"]["stages"] for k, v in s["dropped"].items()}
    # the corpus really exercises every stage, and the planted duplicates really split shards
    assert local["report"]["documents_read"] > 200 and dropped["exact_duplicate"] >= 20
    assert dropped["near_duplicate"] >= 15 and dropped["wikipedia_url"] >= 10 and dropped["wikipedia_content"] >= 3
    assert len(local_shards) >= 4 and (split == "tail" or len(local["splits"]["val"]["shards"]) >= 1)
    assert beam == local
    assert list(beam_shards) == list(local_shards)
    assert all(beam_shards[n] == local_shards[n] for n in local_shards)
    assert not (tmp_path / "beam" / STAGING).exists()


def test_multiprocessing_runner_and_resume(corpus, tmp_path, tok, capsys):  # noqa: F811
    """The default DirectRunner mode (2 worker processes) writes the same shards; a rerun is a no-op."""
    kwargs = dict(recipe=Recipe(val_fraction=0.1), shard_bytes=48 * 1024)
    prepare(corpus[:1], tmp_path / "local", tok, workers=1, **kwargs)
    prepare_beam(corpus[:1], tmp_path / "beam", "gpt2", workers=2, **kwargs)
    assert outputs(tmp_path / "beam")[1] == outputs(tmp_path / "local")[1]
    messages = []
    prepare_beam(corpus[:1], tmp_path / "beam", "gpt2", workers=2, say=messages.append, **kwargs)
    assert messages == [f"{tmp_path / 'beam'} is up to date"]


def test_bad_input_gets_the_local_errors(corpus, tmp_path, tok):  # noqa: F811
    def both(inputs, **kwargs):
        """(local message, beam message); neither leaves a manifest or staging behind."""
        messages = []
        for name, run in (("local", lambda o: prepare(inputs, o, tok, workers=1, **kwargs)),
                          ("beam", lambda o: prepare_beam(inputs, o, tok, workers=1, beam_options=IN_PROCESS, **kwargs))):
            with pytest.raises(CorpusError) as e:
                run(tmp_path / name / str(len(list((tmp_path).glob(f"{name}/*")))))
            messages.append(str(e.value))
        assert not list(tmp_path.rglob(MANIFEST)) and not list(tmp_path.rglob(STAGING))
        return messages

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    local, beam = both([str(empty)])
    assert local == beam and "the corpus is empty" in beam
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.txt").write_text(" ".join(["word"] * 80))
    (bad / "b.txt").write_bytes(b"caf\xe9 " * 80)
    local, beam = both([str(bad)])
    assert local == beam and "is not UTF-8" in beam and "b.txt" in beam
    local, beam = both([str(tmp_path / "missing.jsonl")])
    assert local == beam and "does not exist" in beam
    with pytest.raises(CorpusError, match="is not one of"):
        prepare_beam(corpus, tmp_path / "x", tok, format="csv", beam_options=IN_PROCESS)
    # a directory holding a different preparation is refused, not overwritten
    kwargs = dict(recipe=Recipe(val_fraction=0.1), shard_bytes=48 * 1024)
    prepare(corpus[:1], tmp_path / "done", tok, workers=1, **kwargs)
    before = outputs(tmp_path / "done")
    with pytest.raises(CorpusError, match="already holds shards prepared from other inputs"):
        prepare_beam(corpus[1:2], tmp_path / "done", tok, workers=1, beam_options=IN_PROCESS, **kwargs)
    assert outputs(tmp_path / "done") == before


def test_cli_runner_beam_errors_are_one_line(tmp_path, capsys):
    from gpt2_jax.cli import main

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for extra, expected in ((["--beam-option", "direct_running_mode=in_memory"], "the corpus is empty"),
                            (["--beam-option", "bogus"], "is not KEY=VALUE")):
        status = main(["data", "prepare", "--input", str(empty), "--out", str(tmp_path / "o"), "--runner", "beam",
                       "--workers", "1", "--quiet", *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and err[-1].startswith("error: ") and expected in err[-1]
    assert not (tmp_path / "o").exists()
