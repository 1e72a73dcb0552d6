"""Corpus readers: every input format becomes one stream of raw documents, in a fixed order.

Formats (`format="auto"` picks one per input path):
- `text`: a file is one document; a folder is every non-hidden file below it, sorted by path.
- `jsonl`: one JSON object per line, the document in `text_field` (default "text"); the
  `url_field` (default "url", also looked up under "meta") and the object's other string fields
  travel along as metadata for the Wikipedia filter.
- `openwebtext`: OpenWebText's released layout, a tar archive (openwebtext.tar.xz) of `.xz`
  files, each an xz-compressed tar of `.txt` documents. Accepted as the outer archive, a folder
  of `.xz` subsets (the outer archive extracted) or one `.xz` subset. Read as a stream, so an
  archive never has to fit in memory or on disk twice.
- `tfds`: a TensorFlow Datasets dataset by name (`name`, `name/config`, `name:version`, or
  `tfds:name` with auto) from a local `data_dir`; nothing is downloaded. All splits are read
  in sorted order unless `tfds_split` names one; TensorFlow is imported only here.

Documents keep their bytes undecoded (JSONL values are already text); UTF-8 validation is the
first stage of the cleaning recipe, so bad bytes are counted or reported there.

References:
  Gokaslan and Cohen 2019, OpenWebText corpus (the archive layout).
"""

from __future__ import annotations

import dataclasses
import json
import lzma
import os
import pathlib
import tarfile
import zlib
from typing import Iterator

from gpt2_jax.data.errors import CorpusError

FORMATS = ("auto", "text", "jsonl", "openwebtext", "tfds")
_OUTER_ARCHIVE = (".tar", ".tar.xz", ".txz", ".tar.gz", ".tgz")
_ARCHIVE_ERRORS = (tarfile.TarError, lzma.LZMAError, EOFError, OSError, zlib.error)


@dataclasses.dataclass
class Document:
    data: bytes | str  # raw bytes, or text where the format already decoded it (JSONL)
    source: str  # where it came from: path, path:line, archive:member:name, tfds:name/split#i
    url: str | None = None
    meta: dict | None = None  # other string metadata (JSONL / TFDS fields)


def detect_format(path: str) -> str:
    """The format `auto` picks for one input path."""
    if path.startswith("tfds:"):
        return "tfds"
    p = pathlib.Path(path)
    if p.is_dir():
        return "openwebtext" if next(iter(p.rglob("*.xz")), None) is not None else "text"
    name = p.name.lower()
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith(_OUTER_ARCHIVE) or name.endswith(".xz"):
        return "openwebtext"
    return "text"


@dataclasses.dataclass(frozen=True)
class ReadUnit:
    """One file (or archive, or TFDS dataset) of the corpus: the unit a parallel reader hands to a worker."""

    path: str
    format: str  # text | jsonl | openwebtext | tfds


def read_units(inputs: list[str | os.PathLike], format: str = "auto") -> list[ReadUnit]:
    """The files of `inputs`, in the order `read_corpus` reads them (folders expanded, sorted by path)."""
    if format not in FORMATS:
        raise CorpusError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    if not inputs:
        raise CorpusError("no inputs given; pass at least one --input PATH")
    units = []
    for raw in inputs:
        path = str(raw)
        fmt = detect_format(path) if format == "auto" else format
        if fmt == "tfds":
            units.append(ReadUnit(path.removeprefix("tfds:"), fmt))
            continue
        if not os.path.exists(path):
            raise CorpusError(f"input {path!r} does not exist")
        p = pathlib.Path(path)
        if not p.is_dir():
            units.append(ReadUnit(str(p), fmt))
            continue
        pattern = {"text": "*", "jsonl": "*.json*", "openwebtext": "*.xz"}[fmt]
        units += [ReadUnit(str(f), fmt) for f in _files_below(p, pattern)]
    return units


def read_unit(unit: ReadUnit, *, text_field: str = "text", url_field: str = "url", tfds_data_dir: str | None = None,
              tfds_split: str | None = None, opener=None) -> Iterator[Document]:
    """The documents of one unit, in order. `opener(path) -> binary file` reads paths that are not
    local files (the Beam pipeline passes Beam's `FileSystems.open` for gs:// and the like)."""
    if unit.format == "tfds":
        yield from _tfds(unit.path, tfds_data_dir, tfds_split, text_field, url_field)
        return
    local = opener is None or os.path.exists(unit.path)
    try:
        f = open(unit.path, "rb") if local else opener(unit.path)
    except OSError as e:
        raise CorpusError(f"cannot read corpus file {unit.path!r}: {e.strerror}") from None
    with f:
        if unit.format == "text":
            try:
                data = f.read()
            except OSError as e:
                raise CorpusError(f"cannot read corpus file {unit.path!r}: {e.strerror}") from None
            yield Document(data, unit.path)
        elif unit.format == "jsonl":
            yield from _jsonl_lines(f, unit.path, text_field, url_field)
        elif unit.path.lower().endswith(_OUTER_ARCHIVE):
            yield from _outer_archive(f, unit.path)
        else:
            yield from _owt_subset(f, unit.path)


def read_corpus(inputs: list[str | os.PathLike], format: str = "auto", *, text_field: str = "text",
                url_field: str = "url", tfds_data_dir: str | None = None,
                tfds_split: str | None = None) -> Iterator[Document]:
    """All documents of `inputs`, input by input, in a deterministic order."""
    for unit in read_units(inputs, format):
        yield from read_unit(unit, text_field=text_field, url_field=url_field, tfds_data_dir=tfds_data_dir,
                             tfds_split=tfds_split)


def _files_below(folder: pathlib.Path, pattern: str = "*") -> list[pathlib.Path]:
    found = [p for p in folder.rglob(pattern)
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _jsonl_lines(lines, name: str, text_field: str, url_field: str) -> Iterator[Document]:
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        source = f"{name}:{lineno}"
        try:
            text_line = line.decode("utf-8")
        except UnicodeDecodeError:
            yield Document(line, source)  # the UTF-8 stage reports or counts it
            continue
        try:
            obj = json.loads(text_line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{source}: not a JSON object ({e.msg}); each line of a JSONL file must be one object") from None
        if not isinstance(obj, dict) or text_field not in obj:
            keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise CorpusError(f"{source}: no field {text_field!r} (has {keys}); pass --text-field NAME")
        text = obj[text_field]
        if not isinstance(text, str):
            raise CorpusError(f"{source}: field {text_field!r} is {type(text).__name__}, not a string")
        meta = {k: v for k, v in obj.items() if k != text_field and isinstance(v, str)}
        if isinstance(obj.get("meta"), dict):
            meta.update({k: v for k, v in obj["meta"].items() if isinstance(v, str)})
        yield Document(text, source, meta.get(url_field), meta or None)


def _outer_archive(fileobj, name: str) -> Iterator[Document]:
    """OpenWebText's outer archive: a tar of .xz subsets (and possibly loose .txt documents)."""
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as outer:
            for member in outer:
                if not member.isfile():
                    continue
                source = f"{name}:{member.name}"
                f = outer.extractfile(member)
                if member.name.endswith(".xz"):
                    yield from _owt_subset(f, source)
                elif member.name.endswith(".txt"):
                    yield Document(f.read(), source)
    except _ARCHIVE_ERRORS as e:
        raise CorpusError(f"cannot read archive {name!r}: {e}; re-download it or leave it out of --input") from None


def _owt_subset(fileobj, source: str) -> Iterator[Document]:
    """One OpenWebText subset: an xz-compressed tar of .txt documents."""
    try:
        with tarfile.open(fileobj=fileobj, mode="r|xz") as inner:
            for member in inner:
                if member.isfile() and member.name.endswith(".txt"):
                    yield Document(inner.extractfile(member).read(), f"{source}:{member.name}")
    except _ARCHIVE_ERRORS as e:
        raise CorpusError(f"cannot read OpenWebText subset {source!r} (expected an xz-compressed tar of .txt files): {e}") from None


def _tfds(name: str, data_dir: str | None, split: str | None, text_field: str, url_field: str) -> Iterator[Document]:
    from gpt2_jax.data.tf_runtime import tensorflow

    tensorflow()
    import tensorflow_datasets as tfds

    where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        splits = sorted(builder.info.splits.keys())
        if not splits:
            raise ValueError("it has no prepared splits")
    except Exception as e:  # tfds raises many types for "not found / not prepared"
        raise CorpusError(
            f"TFDS dataset {name!r} is not prepared in {where!r} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            f"build it there first (`tfds build {name} --data_dir DIR`) and pass --tfds-data-dir DIR"
        ) from None
    features = builder.info.features
    if text_field not in features:
        raise CorpusError(f"TFDS dataset {name!r} has no feature {text_field!r} (has {sorted(features.keys())}); pass --text-field NAME")
    if split is not None:
        if split not in splits:
            raise CorpusError(f"TFDS dataset {name!r} has no split {split!r} (has {splits})")
        splits = [split]
    for s in splits:
        ds = builder.as_dataset(split=s, shuffle_files=False)
        for i, example in enumerate(tfds.as_numpy(ds)):
            url = example.get(url_field)
            url = url.decode("utf-8", "replace") if isinstance(url, bytes) else None
            yield Document(example[text_field], f"tfds:{name}/{s}#{i}", url, {"url": url} if url else None)
