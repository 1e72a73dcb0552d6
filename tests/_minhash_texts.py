"""The texts on which tests/test_data_minhash_identity.py pins MinHash signatures and n-gram hashes.

Real text from tests/data (every file of the tokenizer samples cut into ~2 KB pieces at line ends,
the four OpenWebText pages, the first KB of WikiText-2 and tiny Shakespeare whole: one document
with more shingles than one block of the vectorized MinHash) plus edge cases: empty and
whitespace-only texts, fewer than 5 words, punctuation only, underscores, and Unicode (case
mappings that change length, combining marks, CJK, Arabic digits, emoji, non-ASCII spaces).
"""

from __future__ import annotations

import pathlib

DATA = pathlib.Path(__file__).parent / "data"
ASSETS = pathlib.Path(__file__).parents[1] / "gpt2_jax" / "assets" / "corpora"

EDGE_CASES = [
    "", " ", "\n\n\t", "word", "two words", "one two three four", "one two three four five",
    "one two three four five six", "!!! ... ??? --- ***", "snake_case_words and_more __init__ x_1",
    "İstanbul ǅemal ΣΊΣΥΦΟΣ Straße ﬁnance ŉ", "naïve café résumé, cafe\u0301 naive\u0308",
    "東京都 渋谷区 日本語の文章です。 中文 文本 测试", "٣٤٥ ١٢ arabic ٠ digits ² ³ ½ Ⅻ",
    "emoji 🙂 in 🚀 text 👍🏽 with ZWJ 👨‍👩‍👧 family", "non\u00a0breaking\u2003em\u3000ideographic spaces here",
    "MIXED case MiXeD CASE mixed Case", "a" * 5000, " ".join(["repeat"] * 50),
    "\u0130\u0130\u0130 \u1e9e\u1e9e one two three four five", "tab\tseparated\twords\tin\tone\tline",
]


def identity_texts() -> list[str]:
    texts = list(EDGE_CASES)
    for path in sorted((DATA / "tokenizer").glob("*")):
        if path.suffix == ".md":
            continue
        text = path.read_text(encoding="utf-8")
        piece = ""
        for line in text.splitlines(keepends=True):
            piece += line
            if len(piece) >= 2048:
                texts.append(piece)
                piece = ""
        if piece:
            texts.append(piece)
    texts += [p.read_text(encoding="utf-8") for p in sorted((DATA / "pipeline" / "openwebtext").glob("*.txt"))]
    texts.append((DATA / "pipeline" / "wikitext2_test_head.raw").read_text(encoding="utf-8")[:1024])
    texts.append((ASSETS / "tinyshakespeare.txt").read_text(encoding="utf-8"))
    return texts
