"""Scoring a fixed set of candidate continuations and picking the most probable one.

CBT and Winograd both reduce to: for each example, several (context, continuation) pairs, one per
candidate; the prediction is the candidate whose continuation has the highest total
log-probability. Pairs are encoded like lm-eval's `_encode_pair` (the continuation's tokens are the
whole text's tokens after the context's) and scored with the shared batched scorer.
"""

from __future__ import annotations

import collections
from typing import Iterable

from gpt2_jax.evaluate.context import EvalContext
from gpt2_jax.evaluate.errors import EvalError
from gpt2_jax.evaluate.lambada import encode_pair
from gpt2_jax.evaluate.windows import continuation_span


def pick(ctx: EvalContext, examples: Iterable[tuple[list[tuple[str, str]], int]], name: str) -> dict:
    """examples: (pairs, index of the right pair). Returns acc, correct and counts."""
    answers: dict[int, int] = {}
    n_pairs: dict[int, int] = {}
    flags: dict[int, bool] = {}  # only with --overlap: the example's text (first pair) vs training data
    counts = {"documents": 0, "tokens": 0}

    def spans():
        for index, (pairs, answer) in enumerate(examples):
            if ctx.limit is not None and index >= ctx.limit:
                return
            answers[index], n_pairs[index] = answer, len(pairs)
            if ctx.overlap is not None:
                flags[index] = ctx.overlap.flag(pairs[answer][0] + pairs[answer][1])
            counts["documents"] += 1
            for choice, (context, continuation) in enumerate(pairs):
                context_ids, continuation_ids = encode_pair(ctx, context, continuation)
                counts["tokens"] += len(continuation_ids)
                yield continuation_span((index, choice), context_ids, continuation_ids, ctx.n_ctx)

    scores: dict[int, dict[int, float]] = collections.defaultdict(dict)
    for scored in ctx.scorer.score(spans(), desc=name):
        index, choice = scored.key
        scores[index][choice] = scored.logprob
    if not answers:
        raise EvalError(f"task {name!r} found no examples in its data; check --data and --limit")
    right = {i: max(scores[i], key=scores[i].get) == answers[i] for i in answers}

    def metrics(keys):
        keys = list(keys)
        correct = sum(right[i] for i in keys)
        return {"acc": correct / len(keys), "correct": correct, "documents": len(keys)} if keys else {"documents": 0}

    result = {**metrics(answers), **counts}
    if ctx.overlap is not None:
        result["overlap"] = ctx.overlap.section(metrics(i for i in answers if flags[i]),
                                                metrics(i for i in answers if not flags[i]))
    return result
