"""Generative question answering: CoQA (reading comprehension, F1) and Natural Questions (exact match).

CoQA (section 3.5): the prompt is the story, the conversation so far as `Q: question` / `A: answer`
lines, then the current `Q: question` and `A:`; greedy decoding to the end of the line; the metric
is CoQA's token F1 against the reference answer, averaged over questions. Data: the CoQA release
JSON (`coqa-dev-v1.0.json`: data[].story, questions[].input_text, answers[].input_text).

Natural Questions (section 3.8): the prompt holds the first `NQ_EXAMPLES` question/answer pairs of
the file as `Q: ...`/`A: ...` lines, then `Q: question` and `A:`; greedy to the end of the line;
exact match (SQuAD normalization) against any reference answer. Data: NQ-open JSONL
(`{"question": ..., "answer": [...]}` per line); the example pairs are not scored.

References:
  Reddy et al. 2019 (CoQA; its official evaluation script defines F1); Kwiatkowski et al. 2019 and
  Lee et al. 2019 (NQ, NQ-open); Radford et al. 2019, sections 3.5 and 3.8.
"""

from __future__ import annotations

import json

from gpt2_jax.evaluate.context import EvalContext
from gpt2_jax.evaluate.errors import EvalError
from gpt2_jax.evaluate.generation import complete, f1, normalize_answer
from gpt2_jax.evaluate.readers import WHERE, existing_path, numbered_lines

NQ_EXAMPLES = 5
MAX_ANSWER_TOKENS = 24


def coqa_examples(path: str):
    """(prompt, reference answer) per question."""
    path = existing_path(path, "coqa")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise EvalError(f"data file {str(path)!r} is not CoQA JSON ({type(e).__name__}); expected {WHERE['coqa']}") from None
    for story in data:
        history = ""
        for q, a in zip(story["questions"], story["answers"]):
            yield f"{story['story']}\n\n{history}Q: {q['input_text']}\nA:", a["input_text"]
            history += f"Q: {q['input_text']}\nA: {a['input_text']}\n"


def run_coqa(ctx: EvalContext, path: str, name: str) -> dict:
    examples = list(coqa_examples(path))[: ctx.limit]
    if not examples:
        raise EvalError(f"task {name!r} found no questions in {path!r}")
    answers = complete(ctx, (p for p, _ in examples), max_new_tokens=MAX_ANSWER_TOKENS, desc=name)
    scores = [f1(pred, ref) for pred, (_, ref) in zip(answers, examples)]
    return {"f1": sum(scores) / len(scores), "documents": len(scores)}


def nq_examples(path: str) -> list[tuple[str, list[str]]]:
    path = existing_path(path, "nq")
    out = []
    for number, line in numbered_lines(path, "nq"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            question, answers = record["question"], record["answer"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise EvalError(f"{path}:{number} is not {{\"question\": ..., \"answer\": [...]}}; expected {WHERE['nq']}") from None
        out.append((question, answers if isinstance(answers, list) else [answers]))
    return out


def run_nq(ctx: EvalContext, path: str, name: str) -> dict:
    examples = nq_examples(path)
    if len(examples) <= NQ_EXAMPLES:
        raise EvalError(f"{path!r} has {len(examples)} questions; NQ needs more than the {NQ_EXAMPLES} used as examples")
    shots = "".join(f"Q: {q}\nA: {a[0]}\n\n" for q, a in examples[:NQ_EXAMPLES])
    scored = examples[NQ_EXAMPLES:][: ctx.limit]
    answers = complete(ctx, (f"{shots}Q: {q}\nA:" for q, _ in scored), max_new_tokens=MAX_ANSWER_TOKENS, desc=name)
    hits = [any(normalize_answer(pred) == normalize_answer(r) for r in refs) for pred, (_, refs) in zip(answers, scored)]
    return {"exact_match": sum(hits) / len(hits), "correct": sum(hits), "documents": len(hits)}
