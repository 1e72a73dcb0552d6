"""The WebText-style cleaning recipe: per-document stages, their settings, and the count report.

Stages, in order (each document leaves at the first stage that drops it; every drop is counted
under its reason):
1. `utf8`: bytes must be valid UTF-8 (text from JSONL must be encodable as UTF-8, i.e. hold no
   lone surrogates). `invalid_utf8="error"` stops with the source and byte offset; `"drop"`
   drops the document and counts it (`invalid_utf8`).
2. `normalize`: Unicode NFC; CRLF and CR become LF; C1 control characters (Windows-1252 bytes
   misread as Latin-1, e.g. \x97 for an em dash) become their Windows-1252 character; other
   control characters except tab and newline, zero-width spaces and byte-order marks are
   removed; runs of 3+ newlines become 2;
   leading and trailing whitespace is stripped. Counted: documents changed by each rule and
   characters removed. A document with nothing left is dropped (`empty`, always on).
3. `length`: fewer than `min_words` whitespace-separated words (`too_short`; default 64, about
   the 128 GPT-2 tokens below which OpenWebText dropped pages) or more than `max_chars`
   characters (`too_long`; default 4,000,000: dumps, not documents; the complete works in tiny
   Shakespeare are 1.1M).
4. `wikipedia`: the paper removed all Wikipedia documents from WebText because Wikipedia is
   a common source of evaluation data. By URL where a document has one (`wikipedia_url`: the
   host is wikipedia.org or a subdomain), else by metadata (`wikipedia_metadata`: a source-like
   field such as `source`, `dataset`, `pile_set_name` or `redpajama_set_name` names Wikipedia),
   else by content (`wikipedia_content`, see `wikipedia_by_content`).
5. `exact_dedup`: the first document with a given whitespace-collapsed text is kept
   (`exact_duplicate`), by a 128-bit blake2b key.
6. `near_dedup`: MinHash/LSH near duplicates of an earlier document (`near_duplicate`); method
   and thresholds in `gpt2_jax.data.dedup`.
7. `split`: `hash` puts a document in validation when the first 64 bits of its key, as a
   fraction of 2^64, are below `val_fraction`: deterministic, independent of input order and
   of the rest of the corpus. `tail` (for corpora of one or a few documents, e.g. tiny
   Shakespeare) keeps document order and gives the last `val_fraction` of the token stream to
   validation, the way nanoGPT splits it.

References:
  Radford et al. 2019, section 2.1 (WebText: quality by outbound Reddit links, dedup,
  Wikipedia removed).
  Gokaslan and Cohen 2019, OpenWebText (pages under 128 tokens removed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import unicodedata
import urllib.parse
from typing import Any

import numpy as np

from gpt2_jax.data.dedup import DEFAULT_THRESHOLD, minhash
from gpt2_jax.data.errors import CorpusError
from gpt2_jax.data.readers import Document

# Drop reasons by stage, in pipeline order.
STAGES: dict[str, tuple[str, ...]] = {
    "utf8": ("invalid_utf8",),
    "normalize": ("empty",),
    "length": ("too_short", "too_long"),
    "wikipedia": ("wikipedia_url", "wikipedia_metadata", "wikipedia_content"),
    "exact_dedup": ("exact_duplicate",),
    "near_dedup": ("near_duplicate",),
}
REASONS = tuple(r for reasons in STAGES.values() for r in reasons)
MAX_CHARS = 4_000_000  # the default length limit of a document (see the module docstring)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Settings of every stage (see the module docstring). Stored in the manifest."""

    invalid_utf8: str = "error"  # "error" | "drop"
    normalize: bool = True
    min_words: int = 64
    max_chars: int = MAX_CHARS
    wikipedia_filter: bool = True
    exact_dedup: bool = True
    near_dedup: bool = True
    near_dup_threshold: float = DEFAULT_THRESHOLD
    split: str = "hash"  # "hash" | "tail"
    val_fraction: float = 0.01

    def __post_init__(self):
        if self.invalid_utf8 not in ("error", "drop"):
            raise CorpusError(f"invalid_utf8={self.invalid_utf8!r} must be 'error' or 'drop'")
        if self.split not in ("hash", "tail"):
            raise CorpusError(f"split={self.split!r} must be 'hash' or 'tail'")
        if not 0 < self.val_fraction < 1:
            raise CorpusError(f"val_fraction={self.val_fraction} must be in (0, 1)")
        if not 0 < self.near_dup_threshold <= 1:
            raise CorpusError(f"near_dup_threshold={self.near_dup_threshold} must be in (0, 1]")
        if self.min_words < 0 or self.max_chars < 1:
            raise CorpusError(f"min_words={self.min_words} must be >= 0 and max_chars={self.max_chars} >= 1")

    @classmethod
    def plain(cls, val_fraction: float = 0.1) -> "Recipe":
        """Text as given: no normalization, filters or dedup (empty documents still dropped);
        the tail split. For curated text such as tiny Shakespeare."""
        return cls(normalize=False, min_words=0, max_chars=2**62, wikipedia_filter=False, exact_dedup=False,
                   near_dedup=False, split="tail", val_fraction=val_fraction)


# ----------------------------------------------------------------------------------------------
# normalization

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x81\x8d\x8f\x90\x9d\u200b\ufeff]")
_C1 = re.compile(r"[\x80-\x9f]")
# C1 controls in web text are almost always Windows-1252 bytes decoded as Latin-1 (\x97 is an
# em dash there): they become the Windows-1252 character; the five it leaves undefined are removed.
_CP1252 = {chr(b): bytes([b]).decode("cp1252") for b in range(0x80, 0xA0) if b not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)}
_MANY_NEWLINES = re.compile(r"\n{3,}")
NORMALIZATION_COUNTS = ("nfc_changed", "newlines_changed", "cp1252_chars_fixed", "control_chars_removed", "blank_runs_collapsed")


def normalize(text: str) -> tuple[str, dict[str, int]]:
    """The normalized text and what changed (counts keyed by NORMALIZATION_COUNTS)."""
    counts = dict.fromkeys(NORMALIZATION_COUNTS, 0)
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
        counts["nfc_changed"] = 1
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        counts["newlines_changed"] = 1
    text, removed = _CONTROL.subn("", text)
    text, fixed = _C1.subn(lambda m: _CP1252[m.group()], text)
    counts["cp1252_chars_fixed"] = fixed
    counts["control_chars_removed"] = removed
    text, collapsed = _MANY_NEWLINES.subn("\n\n", text)
    counts["blank_runs_collapsed"] = int(collapsed > 0)
    return text.strip(), counts


# ----------------------------------------------------------------------------------------------
# Wikipedia

_WIKI_SOURCE_KEYS = ("source", "dataset", "domain", "site", "pile_set_name", "redpajama_set_name", "subset")
_STRONG = [
    re.compile(r"From Wikipedia, the free encyclopedia"),
    re.compile(r"Retrieved from [\"\u201c]?https?://[a-z\-.]*wikipedia\.org/"),
]
# MediaWiki section headings: "== History ==", and WikiText's spaced form " = = History = = ".
_HEADING = re.compile(r"^[ \t]*=(?:[ \t]?=)*[ \t]*[^=\n]+?[ \t]*=(?:[ \t]?=)*[ \t]*$", re.MULTILINE)
_EDIT = re.compile(r"\[edit\]")
_SECTION = re.compile(r"^[ \t=]*(See also|References|External links|Further reading|Notes|Bibliography)[ \t=]*$", re.MULTILINE)
_CITATION = re.compile(r"\[\d{1,3}\]")
_NAVIGATION = re.compile(r"Jump to (?:navigation|search)")
_HATNOTE = re.compile(r"^(?:This article is about|For other uses, see|\"[^\"\n]+\" redirects here)", re.MULTILINE)


def wikipedia_by_content(text: str) -> bool:
    """Content heuristics for documents without a URL.

    Wikipedia when any strong signal holds: the scraped-page tagline "From Wikipedia, the free
    encyclopedia"; a "Retrieved from <wikipedia.org URL>" footer; two or more MediaWiki section
    heading lines (== X ==, or WikiText's " = = X = = "). Or when two of these weak signals
    hold: 2+ "[edit]" links; 2+ standalone section lines among See also / References / External
    links / Further reading / Notes / Bibliography; 5+ numeric citation markers like [12];
    "Jump to navigation/search"; a hatnote ("This article is about", "For other uses, see",
    '"X" redirects here'). News and blog pages that cite or quote Wikipedia meet at most one
    weak signal."""
    if any(p.search(text) for p in _STRONG) or len(_HEADING.findall(text)) >= 2:
        return True
    weak = (
        len(_EDIT.findall(text)) >= 2,
        len(_SECTION.findall(text)) >= 2,
        len(_CITATION.findall(text)) >= 5,
        _NAVIGATION.search(text) is not None,
        _HATNOTE.search(text) is not None,
    )
    return sum(weak) >= 2


def wikipedia_reason(text: str, url: str | None, meta: dict | None) -> str | None:
    if url:
        host = urllib.parse.urlsplit(url if "//" in url else "//" + url).hostname or ""
        return "wikipedia_url" if host == "wikipedia.org" or host.endswith(".wikipedia.org") else None
    if meta and any("wikipedia" in str(meta.get(k, "")).lower() for k in _WIKI_SOURCE_KEYS):
        return "wikipedia_metadata"
    return "wikipedia_content" if wikipedia_by_content(text) else None


# ----------------------------------------------------------------------------------------------
# one document through the per-document stages (runs in worker processes)


@dataclasses.dataclass
class Cleaned:
    source: str
    n_bytes: int
    reason: str | None  # why it was dropped, or None
    text: str = ""
    key: bytes = b""  # exact-dedup key (also decides the hash split)
    signature: np.ndarray | None = None  # MinHash, when near dedup is on
    normalization: dict | None = None


def exact_key(text: str, words: list[str] | None = None) -> bytes:
    """128-bit blake2b of the whitespace-collapsed text; `words` = text.split() when the caller has it."""
    return hashlib.blake2b(" ".join(text.split() if words is None else words).encode("utf-8"), digest_size=16).digest()


def is_validation(key: bytes, val_fraction: float) -> bool:
    return int.from_bytes(key[:8], "little") < val_fraction * 2.0**64


def clean_document(doc: Document, recipe: Recipe) -> Cleaned:
    """Stages 1-4 plus the dedup key and signature of one document."""
    data = doc.data
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        n_bytes = len(data) if isinstance(data, bytes) else len(text.encode("utf-8"))
    except UnicodeError as e:
        if recipe.invalid_utf8 == "error":
            where = f"bad byte at offset {e.start}" if isinstance(data, bytes) else f"unpaired surrogate at character {e.start}"
            raise CorpusError(f"{doc.source!r} is not UTF-8 ({where}); convert it to UTF-8, or pass --invalid-utf8 drop to drop and count such documents") from None
        return Cleaned(doc.source, len(data), "invalid_utf8")
    counts = None
    if recipe.normalize:
        text, counts = normalize(text)
    if not text.strip():
        return Cleaned(doc.source, n_bytes, "empty", normalization=counts)
    words = text.split()  # split once: the length filter and the exact-dedup key both need it
    if recipe.min_words and len(words) < recipe.min_words:
        return Cleaned(doc.source, n_bytes, "too_short", normalization=counts)
    if len(text) > recipe.max_chars:
        return Cleaned(doc.source, n_bytes, "too_long", normalization=counts)
    if recipe.wikipedia_filter:
        reason = wikipedia_reason(text, doc.url, doc.meta)
        if reason:
            return Cleaned(doc.source, n_bytes, reason, normalization=counts)
    signature = minhash(text) if recipe.near_dedup else None
    return Cleaned(doc.source, n_bytes, None, text, exact_key(text, words), signature, counts)


# ----------------------------------------------------------------------------------------------
# the report


class Report:
    """Counts of every stage, accumulated as documents flow through the recipe."""

    def __init__(self):
        self.read = 0
        self.bytes_read = 0
        self.dropped = dict.fromkeys(REASONS, 0)
        self.normalization = dict.fromkeys(NORMALIZATION_COUNTS, 0)
        self.split_documents = {"train": 0, "val": 0}

    def add(self, c: Cleaned) -> None:
        self.read += 1
        self.bytes_read += c.n_bytes
        if c.reason:
            self.dropped[c.reason] += 1
        for k, v in (c.normalization or {}).items():
            self.normalization[k] += v

    def empty_message(self, recipe: Recipe) -> str:
        """The error when every document was dropped: the stage table, and the setting that
        dropped most of them with the flag that changes it."""
        reason = max(self.dropped, key=self.dropped.get)
        fix = {"too_short": f"--min-words {recipe.min_words} drops them; lower it (0 keeps every document)",
               "too_long": f"--max-chars {recipe.max_chars:,} drops them; raise it above the longest document",
               "invalid_utf8": "they are not UTF-8; convert them to UTF-8",
               "empty": "they hold no text after normalization",
               **dict.fromkeys(STAGES["wikipedia"], "the Wikipedia filter drops them; pass --no-wikipedia-filter"),
               }.get(reason, "see the stage table")
        return (f"the corpus is empty after cleaning: all {self.read:,} documents were dropped, {self.dropped[reason]:,} "
                f"as {reason}: {fix}\n" + format_report(self.to_json()))

    @property
    def kept(self) -> int:
        return self.read - sum(self.dropped.values())

    def to_json(self) -> dict[str, Any]:
        stages, remaining = [], self.read
        for stage, reasons in STAGES.items():
            dropped = {r: self.dropped[r] for r in reasons}
            out = remaining - sum(dropped.values())
            stages.append({"stage": stage, "in": remaining, "dropped": dropped, "out": out})
            remaining = out
        return {"documents_read": self.read, "bytes_read": self.bytes_read, "stages": stages,
                "kept": self.kept, "normalization": dict(self.normalization),
                "split_documents": dict(self.split_documents)}


def format_report(report: dict) -> str:
    """The stage table of a report (as stored in the manifest) for people."""
    lines = [f"{'stage':<12} {'in':>10} {'out':>10}  dropped", f"{'read':<12} {'':>10} {report['documents_read']:>10}"]
    for s in report["stages"]:
        why = ", ".join(f"{k} {v:,}" for k, v in s["dropped"].items() if v) or "-"
        lines.append(f"{s['stage']:<12} {s['in']:>10,} {s['out']:>10,}  {why}")
    split = report.get("split_documents", {})
    lines.append(f"{'split':<12} {report['kept']:>10,} {'':>10}  train {split.get('train', 0):,}, val {split.get('val', 0):,}")
    changed = ", ".join(f"{k} {v:,}" for k, v in report.get("normalization", {}).items() if v)
    if changed:
        lines.append(f"normalization: {changed}")
    return "\n".join(lines)
