"""Which tokens each model call sees and which it scores: rolling windows and continuations.

A `Span` is one model call's worth of work: a token sequence `s` (inputs `s[:-1]`, targets
`s[1:]`, at most n_ctx targets) and the index of the first target that counts. Every protocol is
expressed as spans, so one batched scorer serves them all.

Rolling windows (a whole document, every token scored exactly once): the document is prefixed
with <|endoftext|> so its first token has a context. The first window scores its first n_ctx
tokens; each later window ends `stride` tokens further on, starts n_ctx tokens before its end (so
the new tokens see as much left context as fits) and scores only the new tokens. With
stride = n_ctx this is exactly lm-evaluation-harness's `loglikelihood_rolling`
(`get_rolling_token_windows(..., context_len=1)` + `make_disjoint_window`); with a smaller stride
it is the overlapping evaluation the GPT-2 paper describes (default n_ctx/2).

Continuations (a context and a continuation, e.g. LAMBADA's last word): lm-eval's
`_loglikelihood_tokens`: context + continuation, cut on the left to n_ctx + 1 tokens, continuation
tokens scored.

References:
  EleutherAI lm-evaluation-harness, lm_eval/utils.py (get_rolling_token_windows) and
  lm_eval/models/huggingface.py (_loglikelihood_tokens).
  Radford et al. 2019, section 3.1.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Sequence

import numpy as np


@dataclasses.dataclass
class Span:
    key: Any  # the caller's id for what this span belongs to (a document, an example)
    tokens: np.ndarray  # int32 [n + 1]: inputs tokens[:-1], targets tokens[1:]
    scored_from: int  # targets with index >= scored_from count

    @property
    def n_scored(self) -> int:
        return len(self.tokens) - 1 - self.scored_from


def rolling_spans(key: Any, ids: Sequence[int], prefix_id: int, n_ctx: int, stride: int) -> Iterator[Span]:
    """Spans that score every token of `ids` once, given `prefix_id` before the first."""
    if not 1 <= stride <= n_ctx:
        raise ValueError(f"stride {stride} must be in 1..n_ctx={n_ctx}")
    seq = np.concatenate([[prefix_id], np.asarray(ids, np.int64)]).astype(np.int32)
    n_targets = len(seq) - 1
    if n_targets == 0:
        return
    end = min(n_ctx, n_targets)
    yield Span(key, seq[: end + 1], 0)
    while end < n_targets:
        new_end = min(end + stride, n_targets)
        begin = max(0, new_end - n_ctx)
        yield Span(key, seq[begin : new_end + 1], end - begin)
        end = new_end


def continuation_span(key: Any, context: Sequence[int], continuation: Sequence[int], n_ctx: int) -> Span:
    """Scores `continuation` after `context` (cut on the left to fit n_ctx inputs)."""
    if not continuation:
        raise ValueError("empty continuation")
    if len(continuation) > n_ctx:
        raise ValueError(f"continuation of {len(continuation)} tokens exceeds n_ctx={n_ctx}")
    seq = np.asarray(list(context) + list(continuation), np.int32)[-(n_ctx + 1):]
    return Span(key, seq, len(seq) - 1 - len(continuation))
