"""Detokenizers: undo a dataset's word tokenization before byte-level BPE sees the text.

GPT-2 reads raw bytes, so word-tokenized test sets (WikiText's ` @-@ `, ` , `, ` 's`; PTB's
` n't`) put it out of distribution. Section 3.1 of the paper applies "invertible de-tokenizers" to
remove these artifacts. Ours are lists of reversible rewrite rules: each rule has a forward
pattern (tokenized -> natural) and a backward one (natural -> tokenized), applied per line, and
`retokenize(detokenize(x)) == x` holds line for line on PTB, and on WikiText except where the
tokenized text itself already has the natural form: a period inside a token (`No.`, `St.`, `U.S.`;
123 of 4358 lines of WikiText-2 test) and 2 further lines (`1,000th`, `( (`). The tests check this
on the slices in tests/data/eval. The paper's rule lists were not published; ours follow its
description.

Per line (a line is one paragraph in WikiText, one sentence in PTB):
  1. the leading and trailing space of every line goes (every tokenized line has both);
  2. WikiText number separators: `1 @,@ 000` -> `1,000`, `@.@` -> `.`, `@-@` -> `-`;
  3. space before , . ; : ! ? ) ] and after ( [ goes (not after a lone capital letter or another
     punctuation mark: `H .`, `... .` would not come back);
  4. English clitics join their word: ` 's`, ` 're`, ` 've`, ` 'm`, ` 'll`, ` 'd`, ` n't`, ` '` after s;
  5. WikiText headings: `= = Title = =` -> `== Title ==`.
Double quotes stay as they are: pairing them is not reversible line by line.

`lm_eval_wikitext` is a separate function: lm-evaluation-harness's WikiText detokenizer (its
`preprocess_wikitext.wikitext_detokenizer`, rule for rule), used by `--protocol lm-eval` so that
both tools score the same string. It is not invertible.

References:
  Radford et al. 2019, section 3.1 ("invertible de-tokenizers").
  EleutherAI lm-evaluation-harness, lm_eval/tasks/wikitext/preprocess_wikitext.py.
"""

from __future__ import annotations

import re

# (forward pattern, forward replacement, backward pattern, backward replacement), applied in order
# forward and in reverse order backward. Backward patterns only match what the forward step made.
_RULES_COMMON = [
    (r" (n't|'s|'re|'ve|'m|'ll|'d)(?= |$)", r"\1", r"(?<=[^ ])(n't|'s|'re|'ve|'m|'ll|'d)(?= |$)", r" \1"),
    (r"(?<=s) '(?= |$)", r"'", r"(?<=s)'(?= |$)", r" '"),
]
_RULES_WIKITEXT = [
    (r"(?<=[\w>]) @([,.\-])@ (?=[\w<])", r"\1", r"(?<=[\w>])([,.\-])(?=[\w<])", r" @\1@ "),
    (r"(?<=[^ .,;:!?])(?<!\b[A-Z]) ([,.;:!?)\]])(?= |$)", r"\1", r"(?<=[^ .,;:!?])(?<!\b[A-Z])([,.;:!?)\]])(?=[,.;:!?)\]]*(?: |$))", r" \1"),
    (r"(?<=^|(?<= ))([(\[]) ", r"\1", r"(?<=^|(?<= ))([(\[])(?=[^ ])", r"\1 "),
] + _RULES_COMMON + [
    (r"^((?:= )+)(.*?)((?: =)+)$", lambda m: m[1].replace(" ", "") + " " + m[2] + " " + m[3].replace(" ", ""),
     r"^(=+) (.*) (=+)$", lambda m: " ".join(m[1]) + " " + m[2] + " " + " ".join(m[3])),
]
_RULES_PTB = list(_RULES_COMMON)
# One Billion Word: punctuation and clitics split off like WikiText's, no @-@ separators, no headings.
_RULES_LM1B = _RULES_WIKITEXT[1:3] + _RULES_COMMON

RULES = {"wikitext": _RULES_WIKITEXT, "ptb": _RULES_PTB, "lm1b": _RULES_LM1B}


def _strip_line(line: str) -> str:
    return line[1:-1] if len(line) >= 2 and line[0] == " " and line[-1] == " " else line.strip(" ")


def _pad_line(line: str) -> str:
    return f" {line} " if line else " "


def detokenize_line(line: str, dataset: str) -> str:
    line = _strip_line(line)
    for fwd, fwd_repl, _, _ in RULES[dataset]:
        line = re.sub(fwd, fwd_repl, line)
    return line


def retokenize_line(line: str, dataset: str) -> str:
    for _, _, back, back_repl in reversed(RULES[dataset]):
        line = re.sub(back, back_repl, line)
    return _pad_line(line)


def detokenize(text: str, dataset: str) -> str:
    """The paper protocol's detokenizer for `dataset` ('wikitext', 'ptb' or 'lm1b'), line by line."""
    return "\n".join(detokenize_line(line, dataset) for line in text.split("\n"))


def retokenize(text: str, dataset: str) -> str:
    """The inverse of `detokenize` on the released files (see the module docstring for the
    exceptions). A final empty line (the file's last newline) stays empty."""
    lines = text.split("\n")
    last = retokenize_line(lines[-1], dataset) if lines[-1] else ""
    return "\n".join([retokenize_line(line, dataset) for line in lines[:-1]] + [last])


def lm_eval_wikitext(page: str) -> str:
    """lm-evaluation-harness's WikiText detokenizer (the same rules in the same order)."""
    s = page.replace("s '", "s'")
    s = re.sub(r"/' [0-9]/", r"/'[0-9]/", s)
    s = s.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    for mark in ":;.!?,":
        s = s.replace(f" {mark} ", f"{mark} ")
    s = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", s)
    s = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", s)
    s = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", s)
    s = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', s)
    s = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", s)
    s = s.replace("= = = =", "====").replace("= = =", "===").replace("= =", "==")
    s = s.replace(" " + chr(176) + " ", chr(176))
    s = s.replace(" \n", "\n").replace("\n ", "\n")
    s = s.replace(" N ", " 1 ").replace(" 's", "'s")
    return s
