"""WMT-14 English-French and French-English translation (section 3.7), BLEU with sacrebleu.

The prompt is `TRANSLATION_EXAMPLES` example pairs from the start of the file in the paper's
format `english sentence = french sentence` (one per line; French first for fr-en), then the
source sentence and ` =`; greedy decoding to the end of the line. Corpus BLEU over the remaining
pairs with sacrebleu's defaults (13a tokenization). Data: JSONL with `en` and `fr` fields per
line (the field names of TFDS's wmt14 translate/fr-en).

References:
  Bojar et al. 2014 (WMT-14); Post 2018, "A Call for Clarity in Reporting BLEU Scores"
  (sacrebleu); Radford et al. 2019, section 3.7.
"""

from __future__ import annotations

import json

from gpt2_jax.evaluate.context import EvalContext
from gpt2_jax.evaluate.errors import EvalError
from gpt2_jax.evaluate.generation import complete
from gpt2_jax.evaluate.readers import WHERE, existing_path, numbered_lines

TRANSLATION_EXAMPLES = 3
MAX_TRANSLATION_TOKENS = 48


def pairs(path: str) -> list[tuple[str, str]]:
    path = existing_path(path, "wmt")
    out = []
    for number, line in numbered_lines(path, "wmt"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            out.append((record["en"], record["fr"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise EvalError(f"{path}:{number} is not {{\"en\": ..., \"fr\": ...}}; expected {WHERE['wmt']}") from None
    return out


def runner(source: str):
    def run(ctx: EvalContext, path: str, name: str) -> dict:
        import sacrebleu

        data = pairs(path)
        if len(data) <= TRANSLATION_EXAMPLES:
            raise EvalError(f"{path!r} has {len(data)} pairs; translation needs more than the {TRANSLATION_EXAMPLES} examples")
        oriented = [(en, fr) if source == "en" else (fr, en) for en, fr in data]
        shots = "".join(f"{s} = {t}\n" for s, t in oriented[:TRANSLATION_EXAMPLES])
        scored = oriented[TRANSLATION_EXAMPLES:][: ctx.limit]
        hyps = [h.strip() for h in complete(ctx, (f"{shots}{s} =" for s, _ in scored),
                                            max_new_tokens=MAX_TRANSLATION_TOKENS, desc=name)]
        bleu = sacrebleu.corpus_bleu(hyps, [[t for _, t in scored]])
        return {"bleu": bleu.score, "documents": len(scored)}

    return run
