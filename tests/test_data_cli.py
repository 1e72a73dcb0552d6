"""`gpt2-jax data prepare|stats|overlap` through the data package's `add_parser`, and the
promise that neither the command line nor the data modules import TensorFlow (or JAX) early."""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

import pytest

from gpt2_jax.data import cli
from gpt2_jax.data.errors import DataError

DATA = pathlib.Path(__file__).parent / "data" / "pipeline"


def run(argv: list[str]) -> int:
    """As the main `gpt2-jax` parser will run it: add_parser on its subparsers, then func(args)."""
    parser = argparse.ArgumentParser(prog="gpt2-jax")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "shards"
    assert run(["data", "prepare", "--input", str(DATA / "openwebtext"), str(DATA / "wikitext2_test_head.raw"),
                "--out", str(out), "--split", "tail", "--val-fraction", "0.2", "--workers", "1", "--no-progress",
                "--quiet"]) == 0
    return out


def test_prepare_prints_the_report(shards, capsys):
    run(["data", "prepare", "--input", str(DATA / "openwebtext"), str(DATA / "wikitext2_test_head.raw"),
         "--out", str(shards), "--split", "tail", "--val-fraction", "0.2", "--workers", "1", "--no-progress"])
    out, err = capsys.readouterr()
    assert "is up to date" in err  # the same command again: nothing to do
    assert "wikipedia" in out and "wikipedia_content 1" in out  # the WikiText article file
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["documents"] == 4 and manifest["recipe"]["split"] == "tail"


def test_stats_shows_counts_and_verifies(shards, capsys):
    assert run(["data", "stats", str(shards), "--verify"]) == 0
    out = capsys.readouterr().out
    manifest = json.loads((shards / "manifest.json").read_text())
    assert f"{manifest['documents']:,}" in out and f"{manifest['splits']['train']['tokens']:,} tokens" in out
    assert "near_dedup" in out and "verified" in out
    assert run(["data", "stats", str(shards), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["splits"] == manifest["splits"]


def test_stats_verify_catches_a_changed_shard(shards, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    shard = copy / "train_000000.bin"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match="does not match its checksum"):
        run(["data", "stats", str(copy), "--verify"])


def test_overlap_command(shards, tmp_path, capsys):
    passage = (DATA / "openwebtext" / "0000005-93544d279b4a2417d2201864e28639b1.txt").read_text(encoding="utf-8")[:1500]
    (tmp_path / "eval.txt").write_text(passage, encoding="utf-8")
    assert run(["data", "overlap", "--train", str(shards), "--eval", str(tmp_path / "eval.txt"), "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["eval"][0]["fraction"] == 1.0  # the first document is in the training split
    assert run(["data", "overlap", "--train", str(shards), "--eval", str(tmp_path / "eval.txt"), "--no-progress"]) == 0
    assert "100.00%" in capsys.readouterr().out


def test_user_errors_are_one_line_and_status_2(tmp_path, capsys):
    assert cli.main(["data", "stats", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "has no manifest.json" in err and err.count("\n") == 1
    assert cli.main(["data", "prepare", "--input", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert cli.main(["data", "prepare", "--input", "x.txt", "--out", str(tmp_path / "o"), "--vocab", str(tmp_path)]) == 2
    assert "error: " in capsys.readouterr().err


def test_no_tensorflow_or_jax_until_needed():
    code = (
        "import sys, argparse\n"
        "from gpt2_jax.data import cli, loader, prepare, overlap\n"
        "p = argparse.ArgumentParser(); cli.add_parser(p.add_subparsers())\n"
        "bad = [m for m in ('tensorflow', 'tensorflow_datasets', 'jax') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
