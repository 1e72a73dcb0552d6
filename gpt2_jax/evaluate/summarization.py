"""CNN/Daily Mail summarization with `TL;DR:` (section 3.6), ROUGE with rouge-score.

The prompt is the article followed by `\nTL;DR:`; 100 tokens are sampled with top-k 2 (the
paper's setting), and the first 3 sentences of the generation are the summary. Metrics: ROUGE-1,
ROUGE-2 and ROUGE-L F-measures (rouge-score, stemming on) against the highlights, averaged. Data:
JSONL with `article` and `highlights` fields (the field names of TFDS's and Hugging Face's
cnn_dailymail).

References:
  Hermann et al. 2015, Nallapati et al. 2016 (CNN/Daily Mail); Lin 2004 (ROUGE; the rouge-score
  package); Radford et al. 2019, section 3.6.
"""

from __future__ import annotations

import re

from gpt2_jax.evaluate.context import EvalContext
from gpt2_jax.evaluate.errors import EvalError
from gpt2_jax.evaluate.generation import complete
from gpt2_jax.evaluate.readers import jsonl_field

SUMMARY_TOKENS = 100
TOP_K = 2
SENTENCES = 3


def first_sentences(text: str, n: int = SENTENCES) -> str:
    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    return " ".join(parts[:n])


def run(ctx: EvalContext, path: str, name: str) -> dict:
    from rouge_score import rouge_scorer

    articles = list(jsonl_field(path, "article", "cnndm"))[: ctx.limit]
    highlights = list(jsonl_field(path, "highlights", "cnndm"))[: ctx.limit]
    if not articles:
        raise EvalError(f"task {name!r} found no articles in {path!r}")
    summaries = [first_sentences(s) for s in complete(ctx, (f"{a}\nTL;DR:" for a in articles), max_new_tokens=SUMMARY_TOKENS,
                                                       stop=None, greedy=False, top_k=TOP_K, desc=name)]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, hyp) for ref, hyp in zip(highlights, summaries)]
    return {**{k: sum(s[k].fmeasure for s in scores) / len(scores) for k in ("rouge1", "rouge2", "rougeL")},
            "documents": len(scores)}
