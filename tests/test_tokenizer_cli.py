"""`gpt2-jax tokenizer train|encode|decode`, through the parser that `add_parser` registers."""

from __future__ import annotations

import argparse
import io
import sys

import pytest

from gpt2_jax.tokenizer import TokenizerError, load_tokenizer
from gpt2_jax.tokenizer.cli import add_parser
from test_tokenizer import STRESS
from test_tokenizer_train import data_files


def run(argv: list[str], monkeypatch, capsysbinary, stdin: bytes = b"") -> bytes:
    parser = argparse.ArgumentParser(prog="gpt2-jax")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    assert args.func(args) == 0
    return capsysbinary.readouterr().out


@pytest.mark.parametrize("kind", ["bbpe", "sentencepiece"])
def test_train_encode_decode_round_trip(kind, tmp_path, monkeypatch, capsysbinary):
    out = tmp_path / kind
    said = run(["tokenizer", "train", "--input", *map(str, data_files()[:6]), "--vocab-size", "700", "--out", str(out),
                "--kind", kind, "--no-progress"], monkeypatch, capsysbinary)
    assert b"trained a " + kind.encode() + b" vocabulary of 700 tokens" in said
    tok = load_tokenizer(str(out))
    assert tok.kind == kind and tok.n_vocab == 700
    text = "\n".join(STRESS[:30]) + "\r\n<|endoftext|> end"
    ids_line = run(["tokenizer", "encode", "--vocab", str(out)], monkeypatch, capsysbinary, text.encode())
    assert ids_line.endswith(b"\n") and ids_line.count(b"\n") == 1
    assert [int(i) for i in ids_line.split()] == tok.encode(text)
    back = run(["tokenizer", "decode", "--vocab", str(out)], monkeypatch, capsysbinary, ids_line)
    assert back == text.encode()


def test_gpt2_by_name_special_tokens_and_raw_bytes(monkeypatch, capsysbinary):
    tok = load_tokenizer("gpt2")
    out = run(["tokenizer", "encode", "--vocab", "gpt2", "--allow-special"], monkeypatch, capsysbinary, b"Hi<|endoftext|>")
    assert out == b"17250 50256\n"
    assert run(["tokenizer", "encode"], monkeypatch, capsysbinary, b"") == b"\n"
    half = tok.encode("😀")[:1]
    ids = " ".join(map(str, half)).encode()
    assert run(["tokenizer", "decode"], monkeypatch, capsysbinary, ids) == "\ufffd".encode()
    assert run(["tokenizer", "decode", "--errors", "surrogateescape"], monkeypatch, capsysbinary, ids) == tok.decode_bytes(half)


def test_user_errors_raise_tokenizer_error(tmp_path, monkeypatch, capsysbinary):
    cases = [
        (["tokenizer", "train", "--input", str(tmp_path / "nope.txt"), "--vocab-size", "500", "--out", str(tmp_path / "o")],
         b"", "does not exist"),
        (["tokenizer", "train", "--input", str(data_files()[0]), "--vocab-size", "100", "--out", str(tmp_path / "o")],
         b"", "below 256"),
        (["tokenizer", "train", "--input", str(data_files()[0]), "--vocab-size", "500", "--out", str(tmp_path)],
         b"", "not an empty directory"),
        (["tokenizer", "encode", "--vocab", str(tmp_path / "nowhere")], b"x", "neither 'gpt2', 'bytes' nor a directory"),
        (["tokenizer", "encode"], b"caf\xe9", "stdin is not UTF-8"),
        (["tokenizer", "decode"], b"1 2 three", "integer token ids"),
        (["tokenizer", "decode"], b"70000", "outside vocabulary"),
        (["tokenizer", "decode", "--errors", "strict"], b"30325", "not UTF-8"),
    ]
    (tmp_path / "busy").write_text("x")
    for argv, stdin, message in cases:
        with pytest.raises(TokenizerError, match=message) as info:
            run(argv, monkeypatch, capsysbinary, stdin)
        assert "\n" not in str(info.value)
