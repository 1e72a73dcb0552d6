"""Winograd Schema Challenge (WSC273) with the partial scoring of Trinh and Le (2018).

Each schema is a sentence with a pronoun and two candidate antecedents. The pronoun is replaced by
each candidate (a possessive pronoun by the candidate + "'s"), and the model scores only the part
of the sentence after the substitution, conditioned on everything before it and the candidate;
the candidate under which that rest of the sentence is more probable is the prediction. This is
the "partial" scoring the paper used (section 3.3). The metric is accuracy over the first 273
schemas of the Winograd Schema Collection XML (`--limit` takes fewer).

References:
  Trinh and Le 2018, "A Simple Method for Commonsense Reasoning" (partial scoring);
  Levesque et al. 2012 (WSC); Radford et al. 2019, section 3.3.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Iterator

from gpt2_jax.evaluate.choice import pick
from gpt2_jax.evaluate.context import EvalContext
from gpt2_jax.evaluate.errors import EvalError
from gpt2_jax.evaluate.readers import WHERE, existing_path

WSC273 = 273
POSSESSIVE = {"his", "her", "its", "their"}


def _clean(s: str | None) -> str:
    return " ".join((s or "").split())


def schemas(path: str) -> Iterator[tuple[str, str, str, list[str], int]]:
    """(text before the pronoun, pronoun, text after it, [candidate A, candidate B], answer index)."""
    path = existing_path(path, "wsc")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise EvalError(f"data file {str(path)!r} is not valid XML ({e}); expected {WHERE['wsc']}") from None
    found = root.findall("schema")
    if not found:
        raise EvalError(f"data file {str(path)!r} has no <schema> elements; expected {WHERE['wsc']}")
    for number, schema in enumerate(found[:WSC273], 1):
        text = schema.find("text")
        answers = [_clean(a.text) for a in schema.findall("answers/answer")]
        label = _clean(schema.findtext("correctAnswer")).rstrip(".").upper()[:1]
        if text is None or len(answers) != 2 or label not in ("A", "B"):
            raise EvalError(f"{path}: schema {number} lacks text, two answers or a correctAnswer A/B; expected {WHERE['wsc']}")
        yield _clean(text.findtext("txt1")), _clean(text.findtext("pron")), _clean(text.findtext("txt2")), answers, "AB".index(label)


def substitute(before: str, pronoun: str, candidate: str) -> str:
    """`before` + the candidate in the pronoun's place (lower-cased article inside a sentence)."""
    before = before.rstrip()
    inside_sentence = before and before[-1] not in ".!?"
    if inside_sentence and candidate.split(" ", 1)[0] in ("The", "A", "An"):
        candidate = candidate[0].lower() + candidate[1:]
    if pronoun.lower() in POSSESSIVE:
        candidate += "'s"
    return f"{before} {candidate}".strip()


def pairs(before: str, pronoun: str, after: str, candidates: list[str]) -> list[tuple[str, str]]:
    rest = after if after[:1] in (",", ".", ";", ":", "!", "?", "'") else f" {after}"
    return [(substitute(before, pronoun, c), rest) for c in candidates]


def run(ctx: EvalContext, path: str, name: str) -> dict:
    return pick(ctx, ((pairs(b, p, a, cands), label) for b, p, a, cands, label in schemas(path)), name)
