"""The bundled GPT-2 vocabulary encodes exactly like tiktoken's GPT-2 and Hugging Face's
GPT2Tokenizer, both built offline from the same two official files, on samples of every text in
../shared/data (copied to tests/data/tokenizer) and on a generated stress set; decoding is total
and follows an explicit errors policy."""

from __future__ import annotations

import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest
import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from gpt2_jax.data.prepare import bundled_corpus
from gpt2_jax.tokenizer import TokenizerError, load_tokenizer
from gpt2_jax.tokenizer.vocab import bundled_dir

DATA = pathlib.Path(__file__).parent / "data" / "tokenizer"

STRESS = [
    "", " ", "   ", "\n\n\n", "\t \t", "a  b   c", "Hello world", " leading space", "trailing space ",
    "don't you'll we've they're I'm he'd", "DON'T", "1234567890 3.14159 1,000,000",
    "ünïcödé ÄÖÜ ß", "中文字符测试", "日本語のテキスト", "emoji 😀🎉👍🏽 family 👨‍👩‍👧", "\x00\x01\x1f control",
    "a" * 5000, "supercalifragilisticexpialidocious" * 20, "<|endoftext|>", "x<|endoftext|>y",
    "tabs\tand\r\nwindows newlines", "  multiple   spaces  ", "mixed123abc!!!???", "\u200b zero width",
    "a \nb", "x  \n\n  y", " \u3000 \xa0\x85\u2028 words", "'s's'''ll 'LL ’s", "٣٤٥ ²³ ½ Ⅻ", "\ufeffBOM",
    "x" * 20000 + " tail", "🙂" * 300, " " * 1000 + "end", "\r\n" * 50, "ab" + "\u0301" * 100,
]

# Character pools the stress generator mixes; all assigned long ago, so every engine (tiktoken's
# Rust regex, HF's Oniguruma, the `regex` module) classifies them the same way.
POOLS = [
    [chr(c) for c in range(32, 127)],
    list(" \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u2003\u2009\u200a\u2028\u2029\u202f\u205f\u3000"),
    [chr(c) for c in range(0, 32)] + ["\x7f", "\x80", "\x9f", "\u200b", "\u200d", "\ufeff"],
    list("àéîõüßÆØåçñÿĀłŒſαβγΩπЖжЯяЁё"),
    list("中文字符测试日本語のテキスト한국어"),
    list("مرحباשלוםहिन्दीதமிழ்"),
    ["😀", "🎉", "👍🏽", "👨‍👩‍👧", "❤️", "🇺🇸", "\U0001d518", "\U00020000"],
    list("0123456789٠١٢३४५²³½Ⅻ"),
    list("'\"’‘“”«»—–…!?.,;:()[]{}<>|/\\@#$%^&*_+=~`"),
    ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "’s", " 's"],
    ["\ue000", "\uf8ff", "\U000f0000", "\ufffd", "\ufffe", "\uffff"],
]


def stress_set(n: int = 1500, seed: int = 0) -> list[str]:
    """Random mixtures of the pools: runs of one pool, runs of spaces between them."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            pool = rng.choice(POOLS)
            parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 8))))
            if rng.random() < 0.4:
                parts.append(" " * rng.randint(1, 3))
        texts.append("".join(parts))
    return texts


def random_codepoints(n: int = 500, seed: int = 1) -> list[str]:
    """Any code point except surrogates, including unassigned and recently assigned ones."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randint(1, 30)):
            c = rng.choice([rng.randint(0, 0x7F), rng.randint(0x80, 0xFFFF), rng.randint(0x10000, 0x10FFFF)])
            chars.append(" " if 0xD800 <= c < 0xE000 else chr(c))
        out.append("".join(chars))
    return out


def corpus_texts() -> list[str]:
    """Samples of every text in ../shared/data plus the whole bundled corpus."""
    files = sorted(p for p in DATA.iterdir() if p.suffix != ".md")
    assert len(files) >= 15
    return [p.read_text(encoding="utf-8") for p in files] + [bundled_corpus().read_text(encoding="utf-8")]


@pytest.fixture(scope="module")
def reference():
    """tiktoken's GPT-2 definition (r50k pattern), ranks read from the official files."""
    from tiktoken_ext.openai_public import r50k_pat_str

    d = bundled_dir("gpt2")
    ranks = data_gym_to_mergeable_bpe_ranks(str(d / "vocab.bpe"), str(d / "encoder.json"))
    return tiktoken.Encoding("gpt2_ref", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)


@pytest.fixture(scope="module")
def hf_gpt2():
    from transformers import GPT2Tokenizer

    d = bundled_dir("gpt2")
    return GPT2Tokenizer(vocab=str(d / "encoder.json"), merges=str(d / "vocab.bpe"))


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gpt2")


def test_ids_equal_tiktoken_gpt2(tok, reference):
    texts = STRESS + corpus_texts() + stress_set() + random_codepoints()
    for text in texts:
        ids = tok.encode(text)
        assert ids == reference.encode_ordinary(text), repr(text[:40])
        assert tok.decode(ids) == text, repr(text[:40])
    assert tok.encode("a<|endoftext|>b", allow_special=True) == reference.encode("a<|endoftext|>b", allowed_special="all")
    assert tok.n_vocab == 50257 and tok.eot_id == 50256 and tok.name == "gpt2" and tok.source == "gpt2"
    assert tok.fingerprint == "00f404d36600411e"  # stored in existing manifests: must not change


def test_ids_equal_hf_gpt2_tokenizer(tok, hf_gpt2):
    assert len(hf_gpt2) == 50257
    texts = [t for t in STRESS + corpus_texts() + stress_set() if "<|endoftext|>" not in t]
    for text in texts:
        assert tok.encode(text) == hf_gpt2.encode(text), repr(text[:40])


def test_special_token_policy(tok):
    text = "end.<|endoftext|>Next"
    plain = tok.encode(text)
    assert tok.eot_id not in plain and tok.decode(plain) == text  # corpus text cannot inject a separator
    special = tok.encode(text, allow_special=True)
    assert special.count(tok.eot_id) == 1 and tok.decode(special) == text
    assert tok.encode_batch([text, "x"], allow_special=True) == [special, tok.encode("x")]
    assert tok.encode_batch([text, "x"]) == [plain, tok.encode("x")]


def test_lone_surrogates_encode_as_replacement_character(tok):
    assert tok.encode("a\ud800b") == tok.encode("a\ufffdb")
    assert tok.decode(tok.encode("a\udcffb")) == "a\ufffdb"


def test_decode_any_ids_is_total_with_errors_policy(tok, reference):
    rng = np.random.default_rng(0)
    for _ in range(200):
        ids = rng.integers(0, tok.n_vocab, size=rng.integers(0, 40)).tolist()
        raw = reference.decode_bytes(ids)
        assert tok.decode_bytes(ids) == raw
        assert tok.decode(np.asarray(ids, np.uint16)) == raw.decode("utf-8", "replace")
        assert tok.decode(ids, errors="surrogateescape").encode("utf-8", "surrogateescape") == raw
        assert tok.decode(ids, errors="backslashreplace") == raw.decode("utf-8", "backslashreplace")


def test_decode_handles_split_characters(tok):
    ids = tok.encode("😀")
    assert len(ids) > 1  # one emoji is several byte tokens
    assert tok.decode(ids[:1]) == "\ufffd"
    assert tok.decode(ids[:1], errors="ignore") == ""
    with pytest.raises(UnicodeDecodeError):
        tok.decode(ids[:1], errors="strict")
    with pytest.raises(TokenizerError, match="outside vocabulary"):
        tok.decode([50257])
    with pytest.raises(TokenizerError, match="outside vocabulary"):
        tok.decode([-1])
    with pytest.raises(TokenizerError, match="flat sequence of integers"):
        tok.decode([[1, 2]])
    assert tok.decode([]) == "" and tok.decode(np.zeros(0, np.uint16)) == ""


def test_encode_batch_and_process_pool_equal_encode(tok):
    from gpt2_jax.tokenizer.parallel import encode_corpus

    texts = corpus_texts() + STRESS
    expected = [tok.encode(t) for t in texts]
    assert tok.encode_batch(texts, num_threads=2) == expected
    got = list(encode_corpus("gpt2", texts, processes=2, batch_chars=50_000))
    assert [a.dtype for a in got] == [np.uint16] * len(texts)
    assert [a.tolist() for a in got] == expected
    assert [a.tolist() for a in encode_corpus(tok, texts[:3], processes=1)] == expected[:3]


def test_bad_vocab_dirs_are_clear_errors(tmp_path):
    with pytest.raises(TokenizerError, match="neither 'gpt2', 'bytes' nor a directory"):
        load_tokenizer(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="has no vocabulary files"):
        load_tokenizer(str(tmp_path / "empty"))
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "encoder.json").write_text("{}")
    with pytest.raises(TokenizerError, match="has no vocab.bpe"):
        load_tokenizer(str(tmp_path / "v"))
    src = bundled_dir("gpt2")
    (tmp_path / "v" / "vocab.bpe").write_bytes((src / "vocab.bpe").read_bytes())
    with pytest.raises(TokenizerError, match="inconsistent"):
        load_tokenizer(str(tmp_path / "v"))
    (tmp_path / "v" / "encoder.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not valid JSON"):
        load_tokenizer(str(tmp_path / "v"))


def test_error_messages_are_one_line(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "vocab.bpe").write_text("#version: 0.2\nt h\n")
    (tmp_path / "v" / "encoder.json").write_text("{}")
    with pytest.raises(TokenizerError) as info:
        load_tokenizer(str(tmp_path / "v"))
    assert "\n" not in str(info.value) and "inconsistent" in str(info.value)


def test_package_imports_no_other_gpt2_jax_module():
    code = ("import sys, gpt2_jax.tokenizer, gpt2_jax.tokenizer.cli, gpt2_jax.tokenizer.parallel; "
            "print(sorted(m for m in sys.modules if m.startswith('gpt2_jax') and not m.startswith('gpt2_jax.tokenizer')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['gpt2_jax']"


def test_the_byte_vocabulary_loads_by_name(tmp_path):
    """`bytes`: one token per UTF-8 byte with GPT-2's id for that byte, <|endoftext|> 256, and the
    fingerprint of what `tokenizer train --vocab-size 257` learns from any text (so shards made
    either way are interchangeable)."""
    from gpt2_jax.tokenizer import train_bbpe

    tok = load_tokenizer("bytes")
    assert (tok.name, tok.n_vocab, tok.eot_id, tok.source) == ("bytes", 257, 256, "bytes")
    gpt2 = load_tokenizer("gpt2")
    for text in STRESS:
        ids = tok.encode(text)
        assert ids == [gpt2.ranks[bytes([b])] for b in text.encode("utf-8")], text
        assert tok.decode_bytes(ids) == text.encode("utf-8")
    assert tok.encode("a<|endoftext|>", allow_special=True) == [gpt2.ranks[b"a"], 256]
    train_bbpe(257, documents=["any text at all"], progress=False).save(tmp_path / "learnt")
    assert load_tokenizer(str(tmp_path / "learnt")).fingerprint == tok.fingerprint
