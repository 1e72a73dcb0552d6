"""Children's Book Test (CN: common nouns, NE: named entities), the paper's method.

Each example is 20 sentences of context and a 21st sentence with one word replaced by `XXXXX`,
plus 10 candidate words. As in section 3.2 of the paper, each candidate is filled into the
sentence and the model scores the candidate together with the rest of the sentence, conditioned
on the 20 sentences and the sentence's words before the blank; the most probable candidate is
the prediction. The metric is accuracy. (lm-eval has no CBT task, so both protocols run this.)

File format (the released cbtest_{CN,NE}_test_2500ex.txt): numbered lines `N sentence`, the 21st
`21 question<TAB>answer<TAB><TAB>cand1|cand2|...`, a blank line between examples.

References:
  Hill et al. 2015, "The Goldilocks Principle" (CBT); Radford et al. 2019, section 3.2.
"""

from __future__ import annotations

import re
from typing import Iterator

from gpt2_jax.evaluate.choice import pick
from gpt2_jax.evaluate.context import EvalContext
from gpt2_jax.evaluate.errors import EvalError
from gpt2_jax.evaluate.readers import WHERE, existing_path, numbered_lines

BLANK = "XXXXX"


def examples(path: str) -> Iterator[tuple[list[str], str, str, list[str]]]:
    """(context sentences, question with XXXXX, answer, candidates) per example."""
    path = existing_path(path, "cbt")
    context: list[str] = []
    for number, line in numbered_lines(path, "cbt"):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        m = re.match(r"^(\d+) (.*)$", line)
        if not m:
            raise EvalError(f"{path}:{number} does not start with a sentence number; expected {WHERE['cbt']}")
        if m[1] != "21":
            context.append(m[2])
            continue
        parts = m[2].split("\t")
        if len(parts) != 4 or BLANK not in parts[0]:
            raise EvalError(f"{path}:{number}: line 21 must be 'question<TAB>answer<TAB><TAB>cand|cand...' with "
                            f"{BLANK} in the question; expected {WHERE['cbt']}")
        question, answer, candidates = parts[0], parts[1], [c for c in parts[3].split("|") if c]
        if answer not in candidates:
            raise EvalError(f"{path}:{number}: answer {answer!r} is not among the candidates")
        yield context, question, answer, candidates
        context = []


def pairs(context: list[str], question: str, candidates: list[str]) -> list[tuple[str, str]]:
    before, after = question.split(BLANK, 1)
    prefix = " ".join(context + [before.rstrip()]) if before.strip() else " ".join(context)
    return [(prefix, f" {c}{after}") for c in candidates]


def run(ctx: EvalContext, path: str, name: str) -> dict:
    return pick(ctx, ((pairs(c, q, cands), cands.index(a)) for c, q, a, cands in examples(path)), name)
