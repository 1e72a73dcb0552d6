"""LAMBADA: predict the last word of a passage; accuracy of the greedy word and its perplexity.

Each passage is split at its last space into a context and a target word (with its leading
space), as lm-evaluation-harness's `lambada_openai` does; trailing spaces of the context move to
the target, and the target's tokens are those of the whole passage after the context's tokens
(lm-eval's `_encode_pair`). The model scores the target after the context (cut on the left to
n_ctx tokens):

  acc        = share of passages whose every target token is the model's argmax (greedy decoding
               produces the word);
  perplexity = exp(-mean over passages of log P(target | context)).

Both protocols compute these the same way on OpenAI's already detokenized file (the paper's
number is the greedy word's accuracy and the target word's perplexity). The paper protocol adds
`acc_stopword_filter`, the paper's stop-word filter: the word's first token is the most probable
token that is not an English stop word (scikit-learn's ENGLISH_STOP_WORDS, the Glasgow list; the
paper's own list is unpublished) among the `FIRST_TOP_K` most probable, and the prediction is
right when that is the target's first token and the target's later tokens are greedy.

References:
  Paperno et al. 2016 (LAMBADA); Radford et al. 2019, section 3.3.
  EleutherAI lm-evaluation-harness, lm_eval/tasks/lambada/lambada_openai.yaml,
  lm_eval/api/model.py (_encode_pair), lm_eval/api/metrics.py (perplexity).
"""

from __future__ import annotations

import math

from gpt2_jax.evaluate import readers
from gpt2_jax.evaluate.context import EvalContext
from gpt2_jax.evaluate.errors import EvalError
from gpt2_jax.evaluate.windows import continuation_span


def split_passage(text: str) -> tuple[str, str]:
    """(context, target) exactly as lm-eval's lambada_openai templates build them."""
    words = text.split(" ")
    return " ".join(words[:-1]), " " + words[-1]


def encode_pair(ctx: EvalContext, context: str, target: str) -> tuple[list[int], list[int]]:
    if not context:
        return [ctx.prefix_id], ctx.encode(target)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, target = context[:-n_spaces], context[-n_spaces:] + target
    whole = ctx.encode(context + target)
    context_ids = ctx.encode(context)
    return context_ids, whole[len(context_ids):]


def run(ctx: EvalContext, path: str, name: str) -> dict:
    counts = {"documents": 0, "tokens": 0, "words": 0}
    flags: dict[int, bool] = {}  # only with --overlap
    first_target: dict[int, int] = {}  # pending passages' first target token (removed when scored)

    def spans():
        for index, text in enumerate(readers.lambada_passages(path)):
            if ctx.limit is not None and index >= ctx.limit:
                return
            if ctx.overlap is not None:
                flags[index] = ctx.overlap.flag(text)
            context_ids, target_ids = encode_pair(ctx, *split_passage(text))
            first_target[index] = target_ids[0]
            counts["documents"] += 1
            counts["words"] += 1
            counts["tokens"] += len(target_ids)
            yield continuation_span(index, context_ids, target_ids, ctx.n_ctx)

    groups = {g: [0.0, 0, 0] for g in (None, True, False)}  # loglik, correct, passages
    filtered_correct = 0
    stop_ok = _stopword_filter(ctx) if ctx.protocol == "paper" else None
    for scored in ctx.scorer.score(spans(), desc=name):
        target0 = first_target.pop(scored.key)
        if stop_ok is not None:
            choice = next((int(t) for t in scored.first_top if stop_ok(int(t))), None)
            filtered_correct += choice == target0 and scored.rest_greedy
        for g in (None, flags[scored.key]) if ctx.overlap is not None else (None,):
            groups[g][0] += scored.logprob
            groups[g][1] += scored.greedy
            groups[g][2] += 1
    if counts["documents"] == 0:
        raise EvalError(f"task {name!r} found no passages in {path!r}; check --data and --limit")

    def metrics(g):
        ll, correct, n = groups[g]
        if not n:
            return {"documents": 0}
        return {"acc": correct / n, "perplexity": math.exp(-ll / n), "correct": correct, "documents": n}

    result = {**metrics(None), "loglikelihood": groups[None][0], **counts}
    if stop_ok is not None:
        result["acc_stopword_filter"] = filtered_correct / counts["documents"]
        result["correct_stopword_filter"] = filtered_correct
    if ctx.overlap is not None:
        result["overlap"] = ctx.overlap.section(metrics(True), metrics(False))
    return result


def _stopword_filter(ctx: EvalContext):
    """token id -> may this token start the predicted word (it is not a stop word)?"""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    cache: dict[int, bool] = {}

    def ok(token: int) -> bool:
        if token not in cache:
            cache[token] = ctx.tokenizer.decode([token]).strip().lower() not in ENGLISH_STOP_WORDS
        return cache[token]

    return ok
