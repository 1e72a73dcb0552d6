"""Reading the released evaluation files: plain text, JSONL, WikiText, PTB, LAMBADA.

Every reader streams (documents come one at a time, so memory does not grow with the file's
document count) and fails with an `EvalError` that names the file, the format expected and
where the dataset is published. WikiText files (`wiki.test.tokens`, `wiki.test.raw`, the same for
WikiText-103) are split into articles at their level-1 headings (` = Title = `), the document
unit lm-evaluation-harness evaluates (its `wikitext_document_level` data).

References:
  Merity et al. 2016, "Pointer Sentinel Mixture Models" (WikiText); Mikolov et al. 2010 (PTB
  preprocessing); Paperno et al. 2016 and OpenAI's lambada_test.jsonl (LAMBADA).
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Iterator

from gpt2_jax.evaluate.errors import EvalError

WHERE = {
    "text": "any UTF-8 text file (one document), a folder of .txt files, or JSONL with one {\"text\": ...} per line",
    "wikitext": "wiki.test.tokens or wiki.test.raw from the WikiText-2/-103 release (Merity et al. 2016, Salesforce)",
    "ptb": "ptb.test.txt, the Penn Treebank in Mikolov's preprocessing (one sentence per line)",
    "lm1b": "news.en.heldout-00000-of-00050, One Billion Word's test shard (one tokenized sentence per line)",
    "lambada": "lambada_test.jsonl, OpenAI's LAMBADA test set (5153 lines of {\"text\": ...})",
    "cbt": "cbtest_CN_test_2500ex.txt or cbtest_NE_test_2500ex.txt from the Children's Book Test release (Hill et al. 2015)",
    "coqa": "coqa-dev-v1.0.json, the CoQA release JSON (data[].story, questions[], answers[])",
    "nq": "NQ-open JSONL, one {\"question\": ..., \"answer\": [...]} per line",
    "wmt": "JSONL with one {\"en\": ..., \"fr\": ...} pair per line (e.g. newstest2014 from TFDS wmt14_translate/fr-en)",
    "cnndm": "JSONL with one {\"article\": ..., \"highlights\": ...} per line (CNN/Daily Mail test split)",
    "char": "enwik8 or text8 (the 100,000,000-byte release files; the last 5,000,000 bytes are the test split)",
    "wsc": "WSCollection.xml, the Winograd Schema Collection (Davis; the first 273 schemas are WSC273)",
}

_LEVEL1_HEADING = re.compile(r"^ = [^=].* = $")


def existing_path(path: str | pathlib.Path, kind: str) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.exists():
        raise EvalError(f"data file {str(path)!r} does not exist; expected {WHERE[kind]}")
    return path


def _read_utf8(path: pathlib.Path, kind: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise EvalError(f"data file {str(path)!r} is not UTF-8 text (byte {e.start}); expected {WHERE[kind]}") from None
    except IsADirectoryError:
        raise EvalError(f"data path {str(path)!r} is a folder; expected {WHERE[kind]}") from None


def numbered_lines(path: pathlib.Path, kind: str) -> Iterator[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            yield from enumerate(f, 1)
    except UnicodeDecodeError:
        raise EvalError(f"data file {str(path)!r} is not UTF-8 text; expected {WHERE[kind]}") from None
    except IsADirectoryError:
        raise EvalError(f"data path {str(path)!r} is a folder; expected {WHERE[kind]}") from None


def jsonl_field(path: str | pathlib.Path, field: str, kind: str) -> Iterator[str]:
    """The string `field` of each non-blank line of a JSONL file."""
    path = existing_path(path, kind)
    for number, line in numbered_lines(path, kind):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalError(f"{path}:{number} is not valid JSON ({e.msg}); expected {WHERE[kind]}") from None
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise EvalError(f"{path}:{number} has no string field {field!r}; expected {WHERE[kind]}")
        yield record[field]


def text_documents(path: str | pathlib.Path, field: str = "text") -> Iterator[str]:
    """`text`: a .jsonl file (one document per line, from `field`), a folder (each .txt file, in
    name order, is one document) or any other file (the whole file is one document)."""
    path = existing_path(path, "text")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise EvalError(f"data folder {str(path)!r} has no .txt files; expected {WHERE['text']}")
        for file in files:
            yield _read_utf8(file, "text")
    elif path.suffix == ".jsonl":
        yield from jsonl_field(path, field, "text")
    else:
        yield _read_utf8(path, "text")


def wikitext_articles(path: str | pathlib.Path) -> Iterator[str]:
    """Articles of a WikiText file: each starts at a level-1 heading line and keeps its lines
    verbatim (newlines included) up to the next one."""
    path = existing_path(path, "wikitext")
    article: list[str] = []
    seen_heading = False
    for _, line in numbered_lines(path, "wikitext"):
        if _LEVEL1_HEADING.match(line.rstrip("\n")):
            if seen_heading and article:
                yield "".join(article)
            article, seen_heading = [], True
        article.append(line)
    if not seen_heading:
        raise EvalError(f"data file {str(path)!r} has no WikiText article headings (' = Title = ' lines); "
                        f"expected {WHERE['wikitext']}")
    if article:
        yield "".join(article)


def sentence_lines(path: str | pathlib.Path, kind: str) -> list[str]:
    """The sentences of a one-sentence-per-line file (PTB, One Billion Word), stripped."""
    path = existing_path(path, kind)
    lines = [line.strip() for _, line in numbered_lines(path, kind)]
    lines = [line for line in lines if line]
    if not lines:
        raise EvalError(f"data file {str(path)!r} is empty; expected {WHERE[kind]}")
    return lines


def lambada_passages(path: str | pathlib.Path) -> Iterator[str]:
    path = existing_path(path, "lambada")
    for text in jsonl_field(path, "text", "lambada"):
        if " " not in text.strip():
            raise EvalError(f"{path}: passage {text[:40]!r} has no last word to predict; expected {WHERE['lambada']}")
        yield text
