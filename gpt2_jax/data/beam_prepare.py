"""`data prepare --runner beam`: runs the Beam pipeline graph and publishes its shards with a manifest.

The driver checks the output directory and inputs the way `gpt2_jax.data.prepare.prepare` does
(same one-line errors, same `prepare_key`), lists the input files, runs the graph of
`gpt2_jax.data.beam_pipeline` on the chosen runner (DirectRunner in multi-processing mode with
`workers` processes unless `beam_options` say otherwise), then reads the run's summary and
finishes like the local path: the tail split, shards renamed from the staging directory
`.prepare-beam/` into place, stale shards removed, the manifest written last and atomically. A
failed run (an error in the data, or the runner) removes the staging directory and leaves no
manifest. The manifest equals the local one apart from `runner` (which records the Beam runner
and options); its `prepare_key` is the local key, so either runner sees the other's finished
directory as up to date.

Inputs and output may be local paths or any filesystem Beam's `FileSystems` knows (gs://, s3://
with the matching Beam extra installed); a remote input is a file or a glob, e.g.
`gs://bucket/owt/*.xz`. The tail split needs a local output (it rewrites the last shards).

References:
  Apache Beam pipeline options (runner, direct_running_mode, direct_num_workers; Dataflow's
  project, region, temp_location, requirements_file / setup_file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil
from typing import Callable

from gpt2_jax.data.clean import Recipe, Report, format_report
from gpt2_jax.data.errors import CorpusError
from gpt2_jax.data.readers import FORMATS, ReadUnit, detect_format, read_units
from gpt2_jax.data.shards import MANIFEST, SHARD_FORMAT
from gpt2_jax.tokenizer import Tokenizer

STAGING = ".prepare-beam"


def beam_flags(workers: int, options: list[str]) -> list[str]:
    """Pipeline flags: our DirectRunner defaults, then the user's KEY=VALUE options (which win)."""
    flags = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", f"--direct_num_workers={workers}",
             "--default_sdk_harness_log_level=ERROR"]  # worker processes log every channel at INFO otherwise
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise CorpusError(f"--beam-option {option!r} is not KEY=VALUE (e.g. runner=DataflowRunner)")
        flags.append(f"--{key.removeprefix('--')}={value}")
    return flags


def prepare_beam(inputs: list[str | os.PathLike], out_dir: str | os.PathLike, vocab: str | Tokenizer, *,
                 format: str = "auto", recipe: Recipe = Recipe(), workers: int | None = None,
                 shard_bytes: int = 400 * 2**20, text_field: str = "text", url_field: str = "url",
                 tfds_data_dir: str | None = None, tfds_split: str | None = None, beam_options: list[str] = (),
                 say: Callable[[str], None] = lambda s: None) -> dict:
    """The Beam twin of `prepare.prepare` (same arguments, plus `beam_options`); returns the manifest."""
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # Beam warns at import about optional GCP clients (apitools)
    try:
        import apache_beam as beam
        from apache_beam.io.filesystems import FileSystems
        from apache_beam.options.pipeline_options import PipelineOptions
    finally:
        logging.getLogger().setLevel(quiet)

    from gpt2_jax.data import beam_pipeline

    from gpt2_jax.data.prepare import check_arguments  # the local runner's checks, word for word

    tok, vocab_source, workers = check_arguments(inputs, vocab, shard_bytes, workers)
    flags = beam_flags(workers, list(beam_options))
    read_options = dict(format=format, text_field=text_field, url_field=url_field,
                        tfds_data_dir=tfds_data_dir, tfds_split=tfds_split)
    units = _units(inputs, format, FileSystems)
    key = _key(inputs, read_options, recipe, tok, shard_bytes, FileSystems)

    out = str(out_dir)
    remote = "://" in out
    if remote and recipe.split == "tail":
        raise CorpusError(f"--split tail needs a local --out (it rewrites the last shards); got {out!r}")
    manifest_path = FileSystems.join(out, MANIFEST)
    if FileSystems.exists(manifest_path):
        with FileSystems.open(manifest_path) as f:
            manifest = json.loads(f.read())
        if manifest.get("prepare_key") == key:
            say(f"{out} is up to date")
            return manifest
        raise CorpusError(f"{out!r} already holds shards prepared from other inputs or settings; "
                          f"choose a new --out or delete it")
    created = not remote and not os.path.exists(out)
    staging = FileSystems.join(out, STAGING)
    _remove(staging, FileSystems)
    FileSystems.mkdirs(staging) if not remote else None
    try:
        say(f"beam: {len(units)} input file(s), flags {' '.join(flags)}")
        with beam.Pipeline(options=PipelineOptions(flags)) as p:
            beam_pipeline.build(p, units, {k: v for k, v in read_options.items() if k != "format"}, recipe,
                                vocab if isinstance(vocab, str) else tok, shard_bytes, staging)
        with FileSystems.open(FileSystems.join(staging, "summary.json")) as f:
            summary = json.loads(f.read())
        manifest = _finish(summary, inputs, format, recipe, tok, vocab_source, key, out, staging, FileSystems, say)
    except BaseException:
        _remove(staging, FileSystems)
        if created and os.path.isdir(out) and not os.listdir(out):
            os.rmdir(out)
        raise
    manifest["runner"] = {"name": "beam", "flags": flags}
    _write_manifest(manifest_path, manifest, FileSystems)
    _remove(staging, FileSystems)
    return manifest


def _units(inputs, format: str, fs) -> list[ReadUnit]:
    """Local inputs as the local path lists them; remote ones (scheme://) by Beam's glob match."""
    if format not in FORMATS:
        raise CorpusError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    units = []
    for raw in inputs:
        path = str(raw)
        if "://" not in path:
            units += read_units([path], format)
            continue
        matched = sorted(m.path for m in fs.match([path])[0].metadata_list)
        if not matched:
            raise CorpusError(f"input {path!r} matches no file")
        units += [ReadUnit(m, detect_format(m) if format == "auto" else format) for m in matched]
    return units


def _key(inputs, read_options: dict, recipe: Recipe, tok: Tokenizer, shard_bytes: int, fs) -> str:
    """The local path's prepare_key; remote inputs enter by path, size and modification time."""
    from gpt2_jax.data.prepare import _prepare_key

    if not any("://" in str(p) for p in inputs):
        return _prepare_key(inputs, read_options, recipe, tok, shard_bytes)
    stats = [[str(p), sorted([m.path, m.size_in_bytes, m.last_updated_in_seconds] for m in fs.match([str(p)])[0].metadata_list)]
             for p in inputs]
    ident = {"inputs": stats, "read": read_options, "recipe": dataclasses.asdict(recipe),
             "vocab": tok.fingerprint, "shard_bytes": shard_bytes, "format": SHARD_FORMAT}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def _finish(summary: dict, inputs, format: str, recipe: Recipe, tok: Tokenizer, vocab_source: str, key: str,
            out: str, staging: str, fs, say) -> dict:
    """The local path's checks and manifest, from the pipeline's summary."""
    from gpt2_jax.data.prepare import SHARD_NAME, _cut_tail

    if summary["errors"]:
        raise CorpusError(summary["errors"][0])
    counts = summary["counts"]
    report = Report()
    report.read, report.bytes_read = counts.get("read", 0), counts.get("bytes_read", 0)
    for name, value in counts.items():
        kind, _, what = name.partition(":")
        if kind == "drop":
            report.dropped[what] += value
        elif kind == "norm":
            report.normalization[what] += value
    infos = summary["infos"]
    for split in ("train", "val"):
        report.split_documents[split] = sum(i["documents"] for i in infos if i["split"] == split)
    # the same messages as prepare._clean_and_stage
    if report.read == 0:
        raise CorpusError(f"the corpus is empty: no documents in {', '.join(map(str, inputs))}")
    if report.kept == 0:
        raise CorpusError(report.empty_message(recipe))
    if recipe.split == "hash" and min(report.split_documents.values()) == 0:
        raise CorpusError(f"the hash split of {report.kept:,} kept documents at val_fraction={recipe.val_fraction} "
                          f"leaves {report.split_documents} documents; raise --val-fraction or use --split tail")
    report = report.to_json()
    say(format_report(report))
    if recipe.split == "tail":
        infos = _cut_tail([{k: v for k, v in i.items()} for i in infos], pathlib.Path(staging), recipe.val_fraction, tok)
    keep = {i["name"] for i in infos}
    for i in infos:
        fs.rename([fs.join(staging, i["name"])], [fs.join(out, i["name"])])
    if "://" not in out:
        for stale in pathlib.Path(out).iterdir():  # shards of an earlier, abandoned preparation
            if SHARD_NAME.match(stale.name) and stale.name not in keep:
                stale.unlink()
    # the local manifest's fields, in its order (gpt2_jax.data.prepare.prepare)
    splits = {}
    for split in ("train", "val"):
        files = [i for i in infos if i["split"] == split]
        splits[split] = {"shards": [i["name"] for i in files], "tokens": sum(i["tokens"] for i in files),
                         "documents": sum(i["documents"] for i in files),
                         "files": [{k: v for k, v in i.items() if k != "split"} for i in files]}
        if files:
            splits[split]["text_bytes"] = sum(i["text_bytes"] for i in files)
            splits[split]["bytes_per_token"] = splits[split]["text_bytes"] / max(1, splits[split]["tokens"])
    report["split_documents"] = {s: splits[s]["documents"] for s in splits}
    return {
        "format": SHARD_FORMAT, "vocab": tok.name, "vocab_source": vocab_source,
        "vocab_fingerprint": tok.fingerprint, "n_vocab": tok.n_vocab, "eot_id": tok.eot_id,
        "separator": "<|endoftext|> after every document", "documents": report["kept"],
        "tokens": splits["train"]["tokens"] + splits["val"]["tokens"], "sources": [str(p) for p in inputs],
        "input_format": format, "recipe": dataclasses.asdict(recipe), "report": report, "splits": splits,
        "prepare_key": key,
    }


def _write_manifest(path: str, manifest: dict, fs) -> None:
    text = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
    if "://" in path:
        with fs.create(path) as f:  # object stores publish an object whole, on close
            f.write(text)
        return
    tmp = pathlib.Path(path).with_name(f".{MANIFEST}.tmp{os.getpid()}")
    tmp.write_bytes(text)
    os.replace(tmp, path)


def _remove(path: str, fs) -> None:
    if "://" not in path:
        shutil.rmtree(path, ignore_errors=True)
    elif fs.exists(path):
        fs.delete([path])
