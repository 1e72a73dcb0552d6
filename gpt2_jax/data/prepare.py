"""Corpus -> cleaned documents -> token shards plus a manifest: the input of training.

Two phases, both parallel over processes (`workers`), with progress bars:
1. Clean and stage. Documents stream from the readers through the per-document stages of the
   recipe (`gpt2_jax.data.clean`) in worker processes, then exact dedup and the split in this
   process. Surviving documents are appended, in input order, to staging chunks of about
   `shard_bytes` of text per split. Near-duplicate detection then runs over all signatures at
   once and marks documents to leave out. The phase ends by writing `.prepare/plan.json`; an
   interruption before that redoes the phase.
2. Tokenize. Each chunk becomes one shard (`train_000000.bin`, ...): every kept document's
   tokens followed by `<|endoftext|>` (so the shard holds the tokenizer's count of its documents
   plus one separator each), written atomically (temporary name, then rename) in the llm.c
   layout of `gpt2_jax.data.shards`. A finished shard gets a record with its checksum; a rerun
   skips every shard whose file matches its record and redoes the rest.
The manifest is written last, atomically, and only then is `.prepare/` removed. A directory
without `manifest.json` is incomplete and every loader refuses it, so an interrupted run never
leaves a half shard that training would read. A rerun with the same inputs and settings resumes
(or, when complete, does nothing); different settings into the same complete directory are an
error rather than a silent overwrite.

Manifest fields: `format`, `vocab`, `vocab_source`, `vocab_fingerprint`, `n_vocab`, `eot_id`,
`documents`, `tokens`, `sources`, `input_format`, `recipe`, `report` (every stage's counts),
`splits: {train|val: {shards, tokens, documents, text_bytes, bytes_per_token, files: [{name, tokens,
documents, sha256, max_id, text_bytes}]}}`, `prepare_key` (identity of inputs and settings).

References:
  karpathy/llm.c dev/data/fineweb.py (parallel tokenization into uint16 shards).
  karpathy/nanoGPT data/shakespeare/prepare.py (the 90/10 tail split of tiny Shakespeare).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import pathlib
import pickle
import re
import shutil
from importlib import resources
from typing import Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from gpt2_jax.data.clean import Cleaned, Recipe, Report, clean_document, format_report, is_validation
from gpt2_jax.data.dedup import near_duplicates
from gpt2_jax.data.errors import CorpusError, ShardError
from gpt2_jax.data.readers import Document, read_corpus
from gpt2_jax.data.shards import MANIFEST, MAX_VOCAB, SHARD_FORMAT, read_shard, shard_sha256, write_shard
from gpt2_jax.data.worker_lifetime import start_worker
from gpt2_jax.tokenizer import Tokenizer, load_tokenizer

__all__ = ["MANIFEST", "SHARD_FORMAT", "CorpusError", "Recipe", "bundled_corpus", "prepare", "prepare_text"]

STAGING = ".prepare"
DEFAULT_SHARD_BYTES = 400 * 2**20  # of text, about 100M GPT-2 tokens per shard (llm.c's size)
SHARD_NAME = re.compile(r"^(train|val)_\d{6}\.bin$")
_BATCH_DOCS = 64


def bundled_corpus() -> pathlib.Path:
    """Tiny Shakespeare (1,115,394 bytes), shipped with the package as the default corpus."""
    return pathlib.Path(str(resources.files("gpt2_jax") / "assets" / "corpora" / "tinyshakespeare.txt"))


def prepare_text(inputs: list[str | os.PathLike], out_dir: str | os.PathLike, tokenizer: Tokenizer,
                 *, val_fraction: float = 0.1) -> dict:
    """Each text file is one document, taken as is (`Recipe.plain`); the last `val_fraction`
    of the token stream is validation. Returns the manifest."""
    return prepare(inputs, out_dir, tokenizer, format="text", recipe=Recipe.plain(val_fraction), workers=1)


def check_arguments(inputs, vocab, shard_bytes: int, workers: int | None):
    """What both runners check before reading anything: (tokenizer, vocabulary source, workers)."""
    if not inputs:
        raise CorpusError("no inputs given; pass at least one --input PATH")
    tok = load_tokenizer(vocab) if isinstance(vocab, str) else vocab
    vocab_source = tok.source
    if tok.n_vocab > MAX_VOCAB:
        raise ShardError(f"vocabulary {tok.name!r} has {tok.n_vocab} ids; uint16 shards hold at most {MAX_VOCAB}")
    if shard_bytes < 1:
        raise CorpusError(f"shard_bytes={shard_bytes} must be >= 1")
    return tok, vocab_source, max(1, workers if workers is not None else len(os.sched_getaffinity(0)))


def prepare(inputs: list[str | os.PathLike], out_dir: str | os.PathLike, vocab: str | Tokenizer, *,
            format: str = "auto", recipe: Recipe = Recipe(), workers: int | None = None,
            shard_bytes: int = DEFAULT_SHARD_BYTES, text_field: str = "text", url_field: str = "url",
            tfds_data_dir: str | None = None, tfds_split: str | None = None, progress: bool = False,
            say: Callable[[str], None] = lambda s: None) -> dict:
    """Prepares (or resumes preparing) `out_dir` from `inputs`; returns the manifest.

    `vocab` is "gpt2", a vocabulary directory, or a loaded Tokenizer. `workers` processes clean
    and tokenize (None = one per core, 1 = all in this process)."""
    tok, vocab_source, workers = check_arguments(inputs, vocab, shard_bytes, workers)
    read_options = dict(format=format, text_field=text_field, url_field=url_field,
                        tfds_data_dir=tfds_data_dir, tfds_split=tfds_split)
    key = _prepare_key(inputs, read_options, recipe, tok, shard_bytes)

    out = pathlib.Path(out_dir)
    if (out / MANIFEST).is_file():
        manifest = json.loads((out / MANIFEST).read_text())
        if manifest.get("prepare_key") == key:
            say(f"{out} is up to date")
            return manifest
        raise CorpusError(f"{str(out)!r} already holds shards prepared from other inputs or settings; "
                          f"choose a new --out or delete it")
    created = not out.exists()
    staging = out / STAGING
    plan_path = staging / "plan.json"
    plan = json.loads(plan_path.read_text()) if plan_path.is_file() else None
    if plan is None or plan.get("key") != key:
        shutil.rmtree(staging, ignore_errors=True)
        try:
            plan = _clean_and_stage(inputs, read_options, recipe, staging, shard_bytes, workers, progress, say)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
            raise
        plan["key"] = key
        _write_json(plan_path, plan)
    say(format_report(plan["report"]))

    infos = _tokenize_all(plan, out, vocab if isinstance(vocab, str) else tok, workers, progress, say)
    if recipe.split == "tail":
        infos = _cut_tail(infos, out, recipe.val_fraction, tok)
    splits = {}
    for split in ("train", "val"):
        files = [i for i in infos if i["split"] == split]
        splits[split] = {"shards": [i["name"] for i in files], "tokens": sum(i["tokens"] for i in files),
                         "documents": sum(i["documents"] for i in files),
                         "files": [{k: v for k, v in i.items() if k != "split"} for i in files]}
        # UTF-8 bytes of text (separators not counted) per token (separators counted): turns a loss
        # per token into bits per byte, comparable across vocabularies (data/bundled_vocab.py).
        if files and all("text_bytes" in i for i in files):
            splits[split]["text_bytes"] = sum(i["text_bytes"] for i in files)
            splits[split]["bytes_per_token"] = splits[split]["text_bytes"] / max(1, splits[split]["tokens"])
    keep = {i["name"] for i in infos}
    for stale in out.iterdir():  # shards of an earlier, abandoned preparation
        if SHARD_NAME.match(stale.name) and stale.name not in keep:
            stale.unlink()
    report = plan["report"]
    report["split_documents"] = {s: splits[s]["documents"] for s in splits}
    manifest = {
        "format": SHARD_FORMAT,
        "vocab": tok.name,
        "vocab_source": vocab_source,
        "vocab_fingerprint": tok.fingerprint,
        "n_vocab": tok.n_vocab,
        "eot_id": tok.eot_id,
        "separator": "<|endoftext|> after every document",
        "documents": report["kept"],
        "tokens": splits["train"]["tokens"] + splits["val"]["tokens"],
        "sources": [str(p) for p in inputs],
        "input_format": format,
        "recipe": dataclasses.asdict(recipe),
        "report": report,
        "splits": splits,
        "prepare_key": key,
    }
    _write_json(out / MANIFEST, manifest)
    shutil.rmtree(staging, ignore_errors=True)
    return manifest


# ----------------------------------------------------------------------------------------------
# phase 1: clean, dedup, split, stage


class _ChunkWriter:
    """Appends documents of one split to staging chunks of about `limit` bytes of text."""

    def __init__(self, staging: pathlib.Path, split: str, limit: int, chunks: list[dict]):
        self.staging, self.split, self.limit, self.chunks = staging, split, limit, chunks
        self.file, self.chunk, self.index, self.count = None, None, -1, 0

    def add(self, text: str) -> tuple[int, int]:
        """Stages `text`; returns (index of its chunk in `chunks`, position in the chunk)."""
        if self.file is None:
            name = f"{self.split}_{self.count:06d}"
            self.chunk = {"split": self.split, "stage": f"{name}.jsonl", "shard": f"{name}.bin",
                          "documents": 0, "bytes": 0, "drop": []}
            self.index = len(self.chunks)
            self.chunks.append(self.chunk)
            self.file = open(self.staging / self.chunk["stage"], "w", encoding="utf-8")
            self.count += 1
        self.file.write(json.dumps(text, ensure_ascii=False) + "\n")
        position = self.chunk["documents"]
        self.chunk["documents"] += 1
        self.chunk["bytes"] += len(text.encode("utf-8"))
        if self.chunk["bytes"] >= self.limit:
            self.close()
        return self.index, position

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _clean_and_stage(inputs, read_options, recipe: Recipe, staging: pathlib.Path, shard_bytes: int,
                     workers: int, progress: bool, say) -> dict:
    staging.mkdir(parents=True)
    report, chunks, seen = Report(), [], set()
    writers = {s: _ChunkWriter(staging, s, shard_bytes, chunks) for s in ("train", "val")}
    signatures, locations = [], []
    batches = _batched(read_corpus(inputs, **read_options), _BATCH_DOCS)
    bar = tqdm(desc="clean", unit="doc", disable=not progress, dynamic_ncols=True, mininterval=1.0)
    try:
        for cleaned in _map_ordered(_clean_batch, batches, workers, _init_clean_worker, (recipe,)):
            bar.update(len(cleaned))
            for c in cleaned:
                report.add(c)
                if c.reason:
                    continue
                if recipe.exact_dedup:
                    if c.key in seen:
                        report.dropped["exact_duplicate"] += 1
                        continue
                    seen.add(c.key)
                split = "val" if recipe.split == "hash" and is_validation(c.key, recipe.val_fraction) else "train"
                location = writers[split].add(c.text)
                if recipe.near_dedup:
                    signatures.append(c.signature)
                    locations.append(location)
    finally:
        bar.close()
        for w in writers.values():
            w.close()
    if report.read == 0:
        raise CorpusError(f"the corpus is empty: no documents in {', '.join(map(str, inputs))}")
    if signatures:
        say(f"near-duplicate detection over {len(signatures):,} documents")
        for i in np.flatnonzero(near_duplicates(np.stack(signatures), recipe.near_dup_threshold)):
            chunk, position = locations[i]
            chunks[chunk]["drop"].append(position)
            report.dropped["near_duplicate"] += 1
    for split in ("train", "val"):
        report.split_documents[split] = sum(c["documents"] - len(c["drop"]) for c in chunks if c["split"] == split)
    if report.kept == 0:
        raise CorpusError(report.empty_message(recipe))
    if recipe.split == "hash" and min(report.split_documents.values()) == 0:
        raise CorpusError(f"the hash split of {report.kept:,} kept documents at val_fraction={recipe.val_fraction} "
                          f"leaves {report.split_documents} documents; raise --val-fraction or use --split tail")
    return {"report": report.to_json(), "chunks": chunks}


_worker: dict = {}


def _init_clean_worker(recipe: Recipe) -> None:
    _worker["recipe"] = recipe


def _clean_batch(docs: list[Document]) -> list[Cleaned]:
    return [clean_document(d, _worker["recipe"]) for d in docs]


# ----------------------------------------------------------------------------------------------
# phase 2: tokenize chunks into shards


def _tokenize_all(plan: dict, out: pathlib.Path, vocab: str | Tokenizer, workers: int, progress: bool, say) -> list[dict]:
    """Tokenizes every chunk whose shard is not done yet. Workers load `vocab` by name, or get
    the Tokenizer object pickled (in this process when it cannot be pickled)."""
    done_dir = out / STAGING / "done"
    done_dir.mkdir(exist_ok=True)
    infos: dict[str, dict] = {}
    todo = []
    for chunk in plan["chunks"]:
        if chunk["documents"] == len(chunk["drop"]):
            continue  # every document was a near duplicate
        record = done_dir / f"{chunk['shard']}.json"
        shard = out / chunk["shard"]
        if record.is_file() and shard.is_file():
            info = json.loads(record.read_text())
            if shard_sha256(shard) == info["sha256"]:
                infos[chunk["shard"]] = info
                continue
        todo.append(chunk)
    if infos:
        say(f"{len(infos)} shard(s) already done, {len(todo)} to tokenize")
    tasks = [(chunk, str(out / STAGING / chunk["stage"]), str(out / chunk["shard"])) for chunk in todo]
    bar = tqdm(total=sum(c["bytes"] for c in todo), desc="tokenize", unit="B", unit_scale=True,
               disable=not progress, dynamic_ncols=True, mininterval=1.0)
    if workers > 1 and not isinstance(vocab, str):
        try:
            pickle.dumps(vocab)
        except Exception:
            workers = 1
    try:
        for info in _map_ordered(_tokenize_chunk, iter(tasks), workers, _init_tokenize_worker, (vocab,)):
            _write_json(done_dir / f"{info['name']}.json", info)
            infos[info["name"]] = info
            bar.update(next(c["bytes"] for c in todo if c["shard"] == info["name"]))
    finally:
        bar.close()
    return [infos[c["shard"]] for c in plan["chunks"] if c["shard"] in infos]


def _init_tokenize_worker(vocab: str | Tokenizer) -> None:
    _worker["tok"] = load_tokenizer(vocab) if isinstance(vocab, str) else vocab


def _tokenize_chunk(task: tuple[dict, str, str]) -> dict:
    """One staging chunk -> one shard; returns its record."""
    chunk, stage_path, shard_path = task
    tok = _worker["tok"]
    drop = set(chunk["drop"])
    eot = np.array([tok.eot_id], dtype=np.uint16)
    parts, documents = [], 0
    with open(stage_path, encoding="utf-8") as f:
        for position, line in enumerate(f):
            if position in drop:
                continue
            parts += [np.asarray(tok.encode(json.loads(line)), dtype=np.uint16), eot]
            documents += 1
    tokens = np.concatenate(parts)
    write_shard(shard_path, tokens)
    return {"split": chunk["split"], "name": chunk["shard"], "tokens": int(tokens.size), "documents": documents,
            "sha256": shard_sha256(shard_path), "max_id": int(tokens.max()), "text_bytes": _text_bytes(tok, tokens)}


def _cut_tail(infos: list[dict], out: pathlib.Path, val_fraction: float, tok: Tokenizer) -> list[dict]:
    """The tail split: the last `val_fraction` of the token stream becomes val_000000.bin."""
    total = sum(i["tokens"] for i in infos)
    n_val = max(1, int(total * val_fraction))
    if total - n_val < 1:
        raise CorpusError(f"the corpus has {total} tokens: too few to split off val_fraction={val_fraction}")
    head, tail, remaining = [], [], n_val
    for info in reversed(infos):
        tokens = np.array(read_shard(out / info["name"]))
        if remaining == 0:
            head.insert(0, info)
        elif tokens.size <= remaining:
            tail.insert(0, tokens)
            remaining -= tokens.size
        else:
            cut = tokens.size - remaining
            tail.insert(0, tokens[cut:])
            head.insert(0, (info, tokens[:cut]))
            remaining = 0
    val_tokens = np.concatenate(tail)
    write_shard(out / "val_000000.bin", val_tokens)  # before the cut shard is rewritten (see module docstring)
    result = []
    for item in head:
        if isinstance(item, tuple):
            info, tokens = item
            write_shard(out / info["name"], tokens)
            item = _record(out / info["name"], "train", tokens, tok)
        result.append(item)
    return result + [_record(out / "val_000000.bin", "val", val_tokens, tok)]


def _record(path: pathlib.Path, split: str, tokens: np.ndarray, tok: Tokenizer) -> dict:
    return {"split": split, "name": path.name, "tokens": int(tokens.size),
            "documents": int(np.count_nonzero(tokens == tok.eot_id)), "sha256": shard_sha256(path),
            "max_id": int(tokens.max()), "text_bytes": _text_bytes(tok, tokens)}


def _text_bytes(tok: Tokenizer, tokens: np.ndarray) -> int:
    """UTF-8 bytes the tokens decode to, document separators excluded (all our vocabularies are lossless)."""
    return len(tok.decode_bytes(tokens[tokens != tok.eot_id].tolist()))


# ----------------------------------------------------------------------------------------------
# helpers


def _prepare_key(inputs, read_options: dict, recipe: Recipe, tok: Tokenizer, shard_bytes: int) -> str:
    """Identity of a preparation: inputs (paths, sizes, modification times), settings, vocabulary."""
    stats = []
    for raw in inputs:
        p = str(raw)
        if read_options["format"] == "tfds" or p.startswith("tfds:"):
            stats.append([p, read_options["tfds_data_dir"]])
            continue
        path = pathlib.Path(p)
        if not path.exists():
            raise CorpusError(f"input {p!r} does not exist")
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        stats.append([str(path.resolve()), [[str(f.relative_to(path)) if path.is_dir() else "", f.stat().st_size,
                                             f.stat().st_mtime_ns] for f in files]])
    ident = {"inputs": stats, "read": read_options, "recipe": dataclasses.asdict(recipe),
             "vocab": tok.fingerprint, "shard_bytes": shard_bytes, "format": SHARD_FORMAT}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def _write_json(path: pathlib.Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def _batched(it: Iterable, n: int) -> Iterator[list]:
    it = iter(it)
    while batch := list(itertools.islice(it, n)):
        yield batch


def _map_ordered(fn, items: Iterator, workers: int, initializer, initargs) -> Iterator:
    """fn over items, results in order; in this process when workers == 1, else in `workers`
    spawned processes with at most 2 x workers tasks in flight (bounded memory)."""
    if workers <= 1:
        initializer(*initargs)
        yield from map(fn, items)
        return
    ctx = multiprocessing.get_context("spawn")  # fork is unsafe once JAX or TF threads exist
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=start_worker,
                                                initargs=(os.getpid(), initializer, initargs)) as pool:
        pending: collections.deque = collections.deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
