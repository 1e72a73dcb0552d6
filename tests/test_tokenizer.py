"""The bundled GPT-2 vocabulary encodes exactly like tiktoken's GPT-2 and Hugging Face's
GPT2Tokenizer, both built offline from the same two official files."""

from __future__ import annotations

import pathlib

import pytest
import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from gpt2_jax.data.prepare import bundled_corpus
from gpt2_jax.tokenizer import TokenizerError, load_tokenizer
from gpt2_jax.tokenizer.vocab import _bundled_gpt2_dir

STRESS = [
    "", " ", "   ", "\n\n\n", "\t \t", "a  b   c", "Hello world", " leading space", "trailing space ",
    "don't you'll we've they're I'm he'd", "DON'T", "1234567890 3.14159 1,000,000",
    "ünïcödé ÄÖÜ ß", "中文字符测试", "日本語のテキスト", "emoji 😀🎉👍🏽 family 👨‍👩‍👧", "\x00\x01\x1f control",
    "a" * 5000, "supercalifragilisticexpialidocious" * 20, "<|endoftext|>", "x<|endoftext|>y",
    "tabs\tand\r\nwindows newlines", "  multiple   spaces  ", "mixed123abc!!!???", "\u200b zero width",
]


@pytest.fixture(scope="module")
def reference():
    """tiktoken's GPT-2 definition (r50k pattern), ranks read from the official files."""
    from tiktoken_ext.openai_public import r50k_pat_str

    d = _bundled_gpt2_dir()
    ranks = data_gym_to_mergeable_bpe_ranks(str(d / "vocab.bpe"), str(d / "encoder.json"))
    return tiktoken.Encoding("gpt2_ref", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gpt2")


def test_ids_equal_tiktoken_gpt2(tok, reference):
    texts = STRESS + [bundled_corpus().read_text(encoding="utf-8")]
    for text in texts:
        assert tok.encode(text) == reference.encode_ordinary(text), repr(text[:40])
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("a<|endoftext|>b", allow_special=True) == reference.encode("a<|endoftext|>b", allowed_special="all")
    assert tok.n_vocab == 50257 and tok.eot_id == 50256


def test_ids_equal_hf_gpt2_tokenizer(tok):
    from transformers import GPT2Tokenizer

    d = _bundled_gpt2_dir()
    hf = GPT2Tokenizer(vocab=str(d / "encoder.json"), merges=str(d / "vocab.bpe"))
    assert len(hf) == 50257
    sample = bundled_corpus().read_text(encoding="utf-8")[:20000]
    for text in [t for t in STRESS if "<|endoftext|>" not in t] + [sample]:
        assert tok.encode(text) == hf.encode(text), repr(text[:40])


def test_decode_handles_split_characters(tok):
    ids = tok.encode("😀")
    assert len(ids) > 1  # one emoji is several byte tokens
    assert tok.decode(ids[:1]) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        tok.decode(ids[:1], errors="strict")
    with pytest.raises(TokenizerError, match="outside vocabulary"):
        tok.decode([50257])


def test_bad_vocab_dirs_are_clear_errors(tmp_path):
    with pytest.raises(TokenizerError, match="neither 'gpt2' nor a directory"):
        load_tokenizer(str(tmp_path / "missing"))
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "encoder.json").write_text("{}")
    with pytest.raises(TokenizerError, match="has no vocab.bpe"):
        load_tokenizer(str(tmp_path / "v"))
    src = _bundled_gpt2_dir()
    (tmp_path / "v" / "vocab.bpe").write_bytes((src / "vocab.bpe").read_bytes())
    with pytest.raises(TokenizerError, match="inconsistent"):
        load_tokenizer(str(tmp_path / "v"))
