"""The byte-level BPE trainer: the same merges as Hugging Face's `tokenizers` trainer and as a
naive recount-every-merge trainer; files written here load in HF GPT2Tokenizer and tiktoken with
the same ids as ours; streaming, parallel counting and input order change nothing."""

from __future__ import annotations

import collections
import json
import pathlib
import random

import pytest
import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks, load_tiktoken_bpe

from gpt2_jax.tokenizer import TokenizerError, load_tokenizer, train_bbpe
from gpt2_jax.tokenizer import pretokenize
from gpt2_jax.tokenizer.formats import BYTE_ORDER, BYTES_TO_IDS, token_to_str
from gpt2_jax.tokenizer.pretokenize import count_pretokens, count_text, iter_file_blocks
from gpt2_jax.tokenizer.trainer import learn_merges
from test_tokenizer import DATA, STRESS, corpus_texts, stress_set

VOCAB = 1200


def data_files() -> list[pathlib.Path]:
    return sorted(p for p in DATA.iterdir() if p.suffix != ".md")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    vocab = train_bbpe(VOCAB, files=data_files(), progress=False)
    out = vocab.save(tmp_path_factory.mktemp("bbpe") / "v1200")
    return vocab, out


def hf_merges(documents: list[str], vocab_size: int) -> list[tuple[str, str]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(documents, trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


def test_merges_equal_hf_tokenizers_trainer(trained):
    vocab, _ = trained
    docs = [p.read_text(encoding="utf-8") for p in data_files()]
    ours = [(token_to_str(a), token_to_str(b)) for a, b in vocab.merges]
    assert len(ours) == VOCAB - 257
    assert ours == hf_merges(docs, VOCAB)


def naive_merges(word_counts: dict[str, int], n: int) -> list[tuple[bytes, bytes]]:
    """Textbook BPE: recount all pairs before every merge; same tie rule (count, then ids)."""
    words = {tuple(w.encode().translate(BYTES_TO_IDS)): c for w, c in word_counts.items()}
    token_bytes = [bytes([b]) for b in BYTE_ORDER]
    merges = []
    while len(merges) < n:
        pairs = collections.Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += c
        if not pairs:
            break
        a, b = min(pairs, key=lambda p: (-pairs[p], p))
        new = len(token_bytes)
        token_bytes.append(token_bytes[a] + token_bytes[b])
        merges.append((token_bytes[a], token_bytes[b]))
        merged = collections.Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += c
        words = merged
    return merges


def test_incremental_counts_equal_naive_recount():
    text = (DATA / "tinyshakespeare__input.txt").read_text(encoding="utf-8")[:15000]
    counts = count_text([text])
    # Overlapping runs and repeats exercise neighbours that are themselves merged.
    counts.update({"aaaa": 50, "aaaaaaa": 40, "abababab": 45, "abcabcabc": 30, " aaa": 35, "bbbbbb": 33, "ab": 1})
    ours = learn_merges(counts, 250)
    assert len(ours) == 250
    assert ours == naive_merges(counts, 250)


def test_trained_vocab_loads_in_hf_and_tiktoken_with_same_ids(trained):
    from tiktoken_ext.openai_public import r50k_pat_str
    from transformers import GPT2Tokenizer

    vocab, out = trained
    tok = load_tokenizer(str(out))
    assert tok.n_vocab == VOCAB and tok.eot_id == VOCAB - 1 and tok.kind == "bbpe"
    assert sorted(p.name for p in out.iterdir()) == ["encoder.json", "meta.json", "vocab.bpe", "vocab.tiktoken"]
    ranks = data_gym_to_mergeable_bpe_ranks(str(out / "vocab.bpe"), str(out / "encoder.json"))
    assert ranks == load_tiktoken_bpe(str(out / "vocab.tiktoken")) == vocab.ranks()
    ref = tiktoken.Encoding("ref", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": VOCAB - 1})
    hf = GPT2Tokenizer(vocab=str(out / "encoder.json"), merges=str(out / "vocab.bpe"))
    assert len(hf) == VOCAB
    texts = corpus_texts() + STRESS + stress_set(400)
    for text in texts:
        ids = tok.encode(text)
        assert ids == ref.encode_ordinary(text), repr(text[:40])
        assert tok.decode(ids) == text
        if "<|endoftext|>" not in text:
            assert ids == hf.encode(text), repr(text[:40])
    assert tok.encode("a<|endoftext|>", allow_special=True)[-1] == VOCAB - 1
    # Compression: a vocabulary learnt on this text shortens it (bytes per token well above 1).
    sample = texts[0]
    assert len(sample.encode()) / len(tok.encode(sample)) > 2.0


def test_file_blocks_are_cut_where_counts_cannot_change(tmp_path, monkeypatch):
    rng = random.Random(0)
    words = ["word", " space", "\n", "  \n", " \t", "ünï", "😀😀", "中文", "'s", "123", "!!", "\r\n", " ", "x" * 50]
    text = "".join(rng.choice(words) for _ in range(6000))
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode())
    blocks = [b for b, _ in iter_file_blocks(path, block_bytes=97)]
    assert len(blocks) > 50 and "".join(blocks) == text
    assert count_text(blocks) == count_text([text])
    assert sum(n for _, n in iter_file_blocks(path, block_bytes=97)) == len(text.encode())
    # No safe point at all: the carry grows until the cap, then it is cut anyway.
    path.write_text("y" * 5000)
    monkeypatch.setattr(pretokenize, "MAX_CARRY_CHARS", 1000)
    assert "".join(b for b, _ in iter_file_blocks(path, block_bytes=300)) == "y" * 5000


def test_counting_is_the_same_streamed_parallel_or_from_documents(monkeypatch):
    files = data_files()
    whole = count_text([p.read_text(encoding="utf-8") for p in files])
    monkeypatch.setattr(pretokenize, "BLOCK_BYTES", 10_000)
    serial, n_chars = count_pretokens(files=files, processes=1, progress=False)
    parallel, _ = count_pretokens(files=files, processes=2, progress=False)
    docs, _ = count_pretokens(documents=(p.read_text(encoding="utf-8") for p in files), progress=False)
    assert serial == parallel == docs == whole
    assert n_chars == sum(len(p.read_text(encoding="utf-8")) for p in files)


def test_training_is_deterministic_and_order_free(trained):
    vocab, _ = trained
    docs = [p.read_text(encoding="utf-8") for p in data_files()]
    random.Random(3).shuffle(docs)
    again = train_bbpe(VOCAB, documents=docs, progress=False)
    assert again.merges == vocab.merges and again.special_tokens == vocab.special_tokens


def test_special_tokens_separate_documents_and_are_configurable():
    docs = ["hello world<|endoftext|>hello there<|pad|>", "world peace"]
    vocab = train_bbpe(270, documents=docs, special_tokens=["<|endoftext|>", "<|pad|>"], progress=False)
    assert vocab.special_tokens == {"<|endoftext|>": 268, "<|pad|>": 269}
    assert not any(b"<|" in a + b or b"|>" in a + b for a, b in vocab.merges)


def test_bad_training_input_is_a_clear_error(tmp_path):
    good = data_files()[0]
    with pytest.raises(TokenizerError, match="does not exist"):
        train_bbpe(500, files=[tmp_path / "missing.txt"])
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(TokenizerError, match="corpus is empty"):
        train_bbpe(500, files=[tmp_path / "empty.txt"], progress=False)
    with pytest.raises(TokenizerError, match="below 256 byte tokens"):
        train_bbpe(256, files=[good])
    with pytest.raises(TokenizerError, match="above 65536"):
        train_bbpe(70000, files=[good])
    with pytest.raises(TokenizerError, match="supports only"):
        train_bbpe(5000, documents=["tiny text, tiny vocabulary"], progress=False)
    with pytest.raises(TokenizerError, match="must include <|endoftext|>"):
        train_bbpe(500, files=[good], special_tokens=["<|pad|>"])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(TokenizerError, match="not UTF-8 .*offset 3"):
        train_bbpe(300, files=[tmp_path / "latin1.txt"], progress=False)
    with pytest.raises(TokenizerError, match="not an empty directory"):
        train_bbpe(300, files=[good], progress=False).save(tmp_path)
    assert not list(tmp_path.glob(".*"))  # nothing half-written left behind


def test_inconsistent_vocab_dirs_are_clear_errors(trained, tmp_path):
    _, out = trained

    def copy(name: str) -> pathlib.Path:
        d = tmp_path / name
        d.mkdir()
        for f in out.iterdir():
            (d / f.name).write_bytes(f.read_bytes())
        return d

    d = copy("tik")
    lines = (d / "vocab.tiktoken").read_text().splitlines()
    lines[300], lines[301] = lines[301].split()[0] + " 300", lines[300].split()[0] + " 301"
    (d / "vocab.tiktoken").write_text("\n".join(lines) + "\n")
    with pytest.raises(TokenizerError, match="vocab.tiktoken does not hold the same tokens"):
        load_tokenizer(str(d))
    d = copy("meta")
    (d / "meta.json").write_text(json.dumps({"kind": "sentencepiece"}))
    with pytest.raises(TokenizerError, match="meta.json says kind 'sentencepiece'"):
        load_tokenizer(str(d))
    d = copy("bpe")
    merges = (d / "vocab.bpe").read_text().splitlines()
    (d / "vocab.bpe").write_text("\n".join(merges[:10] + ["Ġ"] + merges[11:]) + "\n")
    with pytest.raises(TokenizerError, match="line 11 is not a merge"):
        load_tokenizer(str(d))
    d = copy("ids")
    enc = json.loads((d / "encoder.json").read_text(encoding="utf-8"))
    first, second = list(enc)[260:262]
    enc[first], enc[second] = enc[second], enc[first]
    (d / "encoder.json").write_text(json.dumps(enc), encoding="utf-8")
    with pytest.raises(TokenizerError, match="encoder.json gives"):
        load_tokenizer(str(d))
    # The rank file alone is a complete vocabulary (specials from meta.json).
    d = copy("rank_only")
    (d / "encoder.json").unlink()
    (d / "vocab.bpe").unlink()
    tok, full = load_tokenizer(str(d)), load_tokenizer(str(out))
    text = corpus_texts()[0]
    assert tok.encode(text) == full.encode(text) and tok.eot_id == full.eot_id
