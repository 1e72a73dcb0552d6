"""Decoding for the generative tasks: prompts in, continuations out, with the KV-cache sampler.

Each prompt is encoded, cut on the left so that prompt + new tokens fit n_ctx, and cut further
on the left to a multiple of `LENGTH_QUANTUM` tokens: `sample.generate` compiles one program per
prompt length, so this bounds the compiles at n_ctx / LENGTH_QUANTUM per task (at most
LENGTH_QUANTUM - 1 of the earliest context tokens are dropped, never the question). Decoding is
`sample.generate` (prefill + lax.scan over a preallocated cache) on the scorer's placed
parameters; the continuation is cut at the task's stop string.

References:
  gpt2_jax.sample (the KV-cache decoder); Radford et al. 2019, section 3.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable, Iterator

from gpt2_jax.evaluate.context import EvalContext

LENGTH_QUANTUM = 32


def prompt_ids(ctx: EvalContext, prompt: str, max_new_tokens: int) -> list[int]:
    ids = ctx.encode(prompt)
    room = ctx.n_ctx - max_new_tokens
    ids = ids[-room:]
    if len(ids) > LENGTH_QUANTUM:
        ids = ids[len(ids) % LENGTH_QUANTUM:]
    return ids


def complete(ctx: EvalContext, prompts: Iterable[str], *, max_new_tokens: int, stop: str | None = "\n",
             greedy: bool = True, top_k: int = 0, seed: int = 0, desc: str = "generating") -> Iterator[str]:
    """The continuation of each prompt, cut before `stop`."""
    from gpt2_jax import sample

    bar = None
    if ctx.scorer.progress:
        from tqdm import tqdm

        bar = tqdm(desc=desc, unit="tok", unit_scale=True, dynamic_ncols=True, leave=False)
    try:
        for i, prompt in enumerate(prompts):
            ids = prompt_ids(ctx, prompt, max_new_tokens)
            out = sample.generate(ctx.scorer.params, ctx.scorer.config, ids, max_new_tokens=max_new_tokens,
                                  greedy=greedy, top_k=top_k, temperature=1.0, seed=seed + i)[0]
            text = ctx.tokenizer.decode(out[len(ids):].tolist())
            if bar is not None:
                bar.update(max_new_tokens)
            yield text.split(stop, 1)[0] if stop else text
    finally:
        if bar is not None:
            bar.close()


def normalize_answer(s: str) -> str:
    """SQuAD/CoQA answer normalization: lower case, no punctuation, no articles, single spaces."""
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1(prediction: str, reference: str) -> float:
    """Token-level F1 of normalized answers (the CoQA/SQuAD official definition)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)
