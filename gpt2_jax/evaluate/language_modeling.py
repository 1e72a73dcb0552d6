"""Perplexity tasks: `text`, WikiText-2/-103, PTB, One Billion Word, enwik8, text8; both protocols.

Each document is scored with rolling windows (`windows.rolling_spans`): every token once, the first
after <|endoftext|>. The log-likelihoods of a document's windows are summed, and the totals turn
into lm-evaluation-harness's metrics:

  word_perplexity = exp(-sum(loglik) / sum(words))
  byte_perplexity = exp(-sum(loglik) / sum(bytes))
  bits_per_byte   = -sum(loglik) / sum(bytes) / ln 2
  token_perplexity = exp(-sum(loglik) / sum(tokens))   (ours; BPE tokens scored)

What is scored and what counts as a word depends on the protocol:
  lm-eval: the text as lm-eval builds it (WikiText: its detokenizer on each article; words and
           bytes counted on the article before detokenizing; `text`/PTB: the document as is,
           words = len(re.split(r"\\s+", doc))). Windows are disjoint (stride = n_ctx).
  paper:   our invertible detokenizer (WikiText, PTB), words = the dataset's own word tokens plus
           one per line end (the <eos> that word-level models of Table 3 predict), so per-word
           perplexity is comparable with Table 3; stride n_ctx/2 by default.
enwik8/text8 (no lm-eval task exists; both protocols alike): the last 5M bytes of the released
file, scored as one document; `bits_per_byte` is the paper's bits per character.
Documents stream through: only the unfinished documents' partial sums are held.

References:
  EleutherAI lm-evaluation-harness, lm_eval/api/task.py (loglikelihood_rolling results),
  lm_eval/api/metrics.py (weighted_perplexity, bits_per_byte), lm_eval/tasks/wikitext.
  Radford et al. 2019, section 3.1 and Table 3.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable, Iterator

from gpt2_jax.evaluate import readers
from gpt2_jax.evaluate.context import EvalContext
from gpt2_jax.evaluate.detokenize import detokenize, lm_eval_wikitext
from gpt2_jax.evaluate.windows import rolling_spans


@dataclasses.dataclass
class Document:
    text: str  # what is tokenized and scored
    words: int
    bytes: int


def lm_eval_words(text: str) -> int:
    return len(re.split(r"\s+", text))


def dataset_words(tokenized: str) -> int:
    """Word tokens of a word-tokenized file plus one <eos> per line end."""
    return len(tokenized.split()) + tokenized.count("\n")


def text_docs(ctx: EvalContext, path: str) -> Iterator[Document]:
    for doc in readers.text_documents(path):
        yield Document(doc, lm_eval_words(doc), len(doc.encode("utf-8")))


def wikitext_docs(ctx: EvalContext, path: str) -> Iterator[Document]:
    for page in readers.wikitext_articles(path):
        if ctx.protocol == "lm-eval":
            yield Document(lm_eval_wikitext(page), lm_eval_words(page), len(page.encode("utf-8")))
        else:
            text = detokenize(page, "wikitext")
            yield Document(text, dataset_words(page), len(text.encode("utf-8")))


def _sentence_file_docs(ctx: EvalContext, path: str, dataset: str) -> Iterator[Document]:
    """PTB / One Billion Word: one sentence per line, the whole file one document."""
    lines = readers.sentence_lines(path, dataset)
    if ctx.protocol == "lm-eval":
        raw = open(path, encoding="utf-8").read()
        yield Document(raw, lm_eval_words(raw), len(raw.encode("utf-8")))
    else:
        text = "\n".join(detokenize(f" {line} ", dataset) for line in lines)
        yield Document(text, sum(len(line.split()) + 1 for line in lines), len(text.encode("utf-8")))


def ptb_docs(ctx: EvalContext, path: str) -> Iterator[Document]:
    return _sentence_file_docs(ctx, path, "ptb")


def lm1b_docs(ctx: EvalContext, path: str) -> Iterator[Document]:
    return _sentence_file_docs(ctx, path, "lm1b")


SPLIT_100M = 100_000_000  # enwik8 and text8: 90M train, 5M valid, 5M test (Mahoney's standard split)
TEST_BYTES = 5_000_000


def char_level_docs(ctx: EvalContext, path: str) -> Iterator[Document]:
    """enwik8 / text8: the released 100M-byte file -> its last 5M bytes (the test split); any other
    file is taken as the test split itself. One document; bits per byte = the paper's bpc."""
    raw = readers.existing_path(path, "char").read_bytes()
    if len(raw) == SPLIT_100M:
        raw = raw[-TEST_BYTES:]
    if not raw:
        from gpt2_jax.evaluate.errors import EvalError

        raise EvalError(f"data file {path!r} is empty; expected {readers.WHERE['char']}")
    text = raw.decode("utf-8", errors="replace")  # a cut multi-byte character at the split edge
    yield Document(text, len(text.split()), len(raw))


def _limited(docs: Iterator[Document], limit: int | None) -> Iterator[Document]:
    for i, doc in enumerate(docs):
        if limit is not None and i >= limit:
            return
        yield doc


def _metrics(loglik: float, totals: dict) -> dict:
    nll = -loglik
    return {
        "word_perplexity": math.exp(nll / max(totals["words"], 1)),
        "byte_perplexity": math.exp(nll / max(totals["bytes"], 1)),
        "bits_per_byte": nll / max(totals["bytes"], 1) / math.log(2),
        "token_perplexity": math.exp(nll / max(totals["tokens"], 1)),
        "loglikelihood": loglik,
        **totals,
    }


def perplexity(ctx: EvalContext, docs: Iterator[Document], desc: str) -> dict:
    """Scores each document with rolling windows; returns the metrics and counts. With
    `ctx.overlap`, also per subset (documents with / without 8-grams in the training data)."""
    zero = lambda: {"documents": 0, "tokens": 0, "words": 0, "bytes": 0}
    totals = {None: zero(), True: zero(), False: zero()}  # all, overlapping, clean
    loglik = {None: 0.0, True: 0.0, False: 0.0}
    flags: dict[int, bool] = {}  # only with --overlap: one bool per document

    def spans():
        for index, doc in enumerate(_limited(docs, ctx.limit)):
            ids = ctx.encode(doc.text)
            groups = [None]
            if ctx.overlap is not None:
                flags[index] = ctx.overlap.flag(doc.text)
                groups.append(flags[index])
            for group in groups:
                t = totals[group]
                t["documents"] += 1
                t["tokens"] += len(ids)
                t["words"] += doc.words
                t["bytes"] += doc.bytes
            yield from rolling_spans(index, ids, ctx.prefix_id, ctx.n_ctx, ctx.stride)

    for scored in ctx.scorer.score(spans(), desc=desc):
        loglik[None] += scored.logprob
        if ctx.overlap is not None:
            loglik[flags[scored.key]] += scored.logprob
    if totals[None]["documents"] == 0:
        from gpt2_jax.evaluate.errors import EvalError

        raise EvalError(f"task {desc!r} found no documents in its data; check --data and --limit")
    result = {**_metrics(loglik[None], totals[None]), "stride": ctx.stride}
    if ctx.overlap is not None:
        subset = lambda g: _metrics(loglik[g], totals[g]) if totals[g]["documents"] else {"documents": 0}
        result["overlap"] = ctx.overlap.section(subset(True), subset(False))
    return result


def rolling_task(read: Callable[[EvalContext, str], Iterator[Document]]) -> Callable[[EvalContext, str, str], dict]:
    def run(ctx: EvalContext, path: str, name: str) -> dict:
        return perplexity(ctx, read(ctx, path), name)

    return run
