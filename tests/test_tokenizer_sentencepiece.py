"""The sentencepiece backend: lossless BPE with byte fallback behind the same interface, loaded
by `load_tokenizer(dir)`, usable by the data code like any other vocabulary."""

from __future__ import annotations

import pytest

from gpt2_jax.tokenizer import TokenizerError, load_tokenizer, train_sentencepiece
from test_tokenizer import STRESS, corpus_texts, random_codepoints, stress_set
from test_tokenizer_train import data_files

VOCAB = 1000


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):
    vocab = train_sentencepiece(VOCAB, files=data_files(), processes=2)
    return vocab.save(tmp_path_factory.mktemp("spm") / "s1000")


@pytest.fixture(scope="module")
def tok(spm_dir):
    return load_tokenizer(str(spm_dir))


def test_loads_by_directory_with_the_same_interface(tok, spm_dir):
    assert tok.kind == "sentencepiece" and tok.n_vocab == VOCAB
    assert tok.eot_id == 1 and tok.special_tokens == {"<|endoftext|>": 1}
    assert tok.name == "s1000" and tok.source == str(spm_dir.resolve()) and len(tok.fingerprint) == 16


def test_round_trip_is_exact(tok):
    for text in corpus_texts() + STRESS + stress_set(500) + random_codepoints(200) + ["a\u2581b \u2581"]:
        ids = tok.encode(text)
        assert max(ids, default=0) < tok.n_vocab and tok.eot_id not in ids
        assert tok.decode(ids) == text, repr(text[:40])


def test_segmentation_equals_sentencepiece_with_its_own_whitespace_escaping(tok, spm_dir):
    """We store pieces with real spaces and escaping off; undoing that gives sentencepiece's own
    model, whose ids must be ours on any text without U+2581, and whose decoder must agree."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((spm_dir / "spm.model").read_bytes())
    proto.normalizer_spec.escape_whitespaces = True
    for piece in proto.pieces:
        if piece.type == piece.NORMAL:
            piece.piece = piece.piece.replace(" ", "\u2581")
    original = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    for text in corpus_texts() + [t for t in STRESS + stress_set(300) if "\u2581" not in t]:
        ids = tok.encode(text)
        assert ids == original.encode(text), repr(text[:40])
        assert tok.decode(ids) == original.decode(ids)
    sample = corpus_texts()[-1]
    assert tok.encode_batch([sample, "x y"], num_threads=2) == [original.encode(sample), original.encode("x y")]


def test_special_token_policy_and_decode_errors(tok):
    text = "one<|endoftext|>two"
    assert tok.eot_id not in tok.encode(text)
    ids = tok.encode(text, allow_special=True)
    assert ids.count(tok.eot_id) == 1 and tok.decode(ids) == text
    assert tok.encode_batch([text], allow_special=True) == [ids]
    emoji = tok.encode("😀")
    assert len(emoji) == 4  # byte fallback
    assert tok.decode(emoji[:2]) == "\ufffd" and tok.decode(emoji[:2], errors="ignore") == ""
    with pytest.raises(UnicodeDecodeError):
        tok.decode(emoji[:2], errors="strict")
    with pytest.raises(TokenizerError, match="outside vocabulary"):
        tok.decode([VOCAB])


def test_data_code_takes_either_vocabulary(tok, tmp_path):
    import numpy as np

    from gpt2_jax.data.prepare import prepare_text

    manifest = prepare_text([data_files()[-1]], tmp_path / "shards", tok)
    assert manifest["n_vocab"] == VOCAB and manifest["eot_id"] == tok.eot_id
    assert manifest["vocab_fingerprint"] == tok.fingerprint
    tokens = sum(s["tokens"] for s in manifest["splits"].values())
    assert tokens == len(tok.encode(data_files()[-1].read_text(encoding="utf-8"))) + 1
    assert np.iinfo(np.uint16).max >= VOCAB


def test_bad_input_and_models_are_clear_errors(tmp_path):
    import io

    import sentencepiece as spm

    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(TokenizerError, match="corpus is empty"):
        train_sentencepiece(500, files=[tmp_path / "empty.txt"])
    with pytest.raises(TokenizerError, match="does not exist"):
        train_sentencepiece(500, files=[tmp_path / "nope.txt"])
    with pytest.raises(TokenizerError, match="from 258"):
        train_sentencepiece(257, files=data_files()[:1])
    with pytest.raises(TokenizerError, match="too high"):
        train_sentencepiece(60000, files=data_files()[:1])
    # A model trained with sentencepiece's lossy defaults (NFKC, dummy prefix) is refused.
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus_texts()[-1].splitlines()), model_writer=writer,
                                   vocab_size=400, model_type="bpe", minloglevel=2)
    (tmp_path / "lossy").mkdir()
    (tmp_path / "lossy" / "spm.model").write_bytes(writer.getvalue())
    with pytest.raises(TokenizerError, match="not lossless"):
        load_tokenizer(str(tmp_path / "lossy"))
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "spm.model").write_bytes(b"\x00garbage")
    with pytest.raises(TokenizerError, match="not a sentencepiece model"):
        load_tokenizer(str(tmp_path / "corrupt"))
