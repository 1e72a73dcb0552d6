"""The command-line contract: commands, outputs, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from gpt2_jax import cli

VENV_BIN = pathlib.Path(sys.executable).parent


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(5)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=32, n_embd=32, n_layer=2, n_head=2)).eval()
    directory = tmp_path_factory.mktemp("hf") / "model"
    model.save_pretrained(directory)
    return directory, model


def test_console_script_and_module_entry_agree(tiny_run):
    run, _ = tiny_run
    ckpt = run.workdir_path / "checkpoints"
    a = subprocess.run([VENV_BIN / "gpt2-jax", "ckpt-info", ckpt, "--json"], capture_output=True, text=True, timeout=300)
    b = subprocess.run([sys.executable, "-m", "gpt2_jax", "ckpt-info", ckpt, "--json"], capture_output=True, text=True, timeout=300)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    info = json.loads(a.stdout)
    assert info == json.loads(b.stdout)
    assert info["step"] == 12 and info["vocab"] == "gpt2"
    assert info["config"]["model"]["n_layer"] == 2 and len(info["checksum"]) == 64


def test_sample_prints_text_and_ids(tiny_run, capsys):
    run, _ = tiny_run
    ckpt = run.workdir_path / "checkpoints"
    code, out, _ = run_cli(capsys, "sample", ckpt, "--prompt", "ROMEO:", "--max-new-tokens", 8, "--greedy", "--ids")
    assert code == 0
    ids = [int(x) for x in out.split()]
    assert len(ids) == 3 + 8  # "ROMEO:" is 3 GPT-2 tokens
    from gpt2_jax.tokenizer import load_tokenizer

    tok = load_tokenizer("gpt2")
    assert ids[:3] == tok.encode("ROMEO:")
    code, text, _ = run_cli(capsys, "sample", ckpt, "--prompt", "ROMEO:", "--max-new-tokens", 8, "--greedy")
    assert code == 0 and text == tok.decode(ids) + "\n"
    code, sampled, _ = run_cli(capsys, "sample", run.workdir_path, "--prompt", "ROMEO:", "--max-new-tokens", 8,
                               "--temperature", "0.9", "--top-k", "50", "--top-p", "0.95", "--seed", "3")
    assert code == 0 and sampled.startswith("ROMEO:")


def test_import_export_roundtrip_and_checksum(hf_dir, tmp_path, capsys):
    import torch
    from transformers import GPT2LMHeadModel

    directory, model = hf_dir
    for name in ("a", "b"):
        code, out, err = run_cli(capsys, "import-hf", directory, "--out", tmp_path / name)
        assert code == 0, err
    sums = []
    for name in ("a", "b"):
        code, out, _ = run_cli(capsys, "ckpt-info", tmp_path / name, "--json")
        info = json.loads(out)
        assert info["step"] == 0 and info["parameters"] == sum(p.numel() for p in model.parameters())
        sums.append(info["checksum"])
    assert sums[0] == sums[1]
    code, _, err = run_cli(capsys, "export", tmp_path / "a", "--format", "hf", "--out", tmp_path / "exported")
    assert code == 0, err
    back = GPT2LMHeadModel.from_pretrained(tmp_path / "exported").eval()
    ids = torch.tensor(np.random.default_rng(0).integers(0, 50257, (1, 20)))
    with torch.no_grad():
        np.testing.assert_array_equal(back(ids).logits.numpy(), model(ids).logits.numpy())


@pytest.mark.parametrize("argv, needle", [
    (["train", "model=gpt3"], "unknown model preset 'gpt3'"),
    (["train", "steps=abc"], "steps='abc' is not an integer"),
    (["train", "model.n_embd=100", "model.n_head=3"], "model.n_embd=100 is not divisible by model.n_head=3"),
    (["train", "stepz=10"], "unknown config key 'stepz' (did you mean 'steps'?)"),
    (["train", "model.n_layers=2"], "unknown config key 'model.n_layers'"),
    (["train", "steps"], "is not key=value"),
    (["train", "no_such_experiment.py"], "does not exist"),
    (["sample", "/nonexistent/ckpt", "--prompt", "hi"], "does not exist"),
    (["ckpt-info", "/nonexistent/ckpt"], "does not exist"),
    (["export", "/nonexistent/ckpt", "--format", "hf", "--out", "/tmp/never"], "does not exist"),
    (["import-hf", "/nonexistent/hf", "--out", "/tmp/never"], "has no config.json"),
])
def test_bad_input_is_one_line_error(capsys, argv, needle):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err, err


def test_prompt_longer_than_context_is_an_error(tiny_run, capsys):
    run, _ = tiny_run
    code, _, err = run_cli(capsys, "sample", run.workdir_path / "checkpoints", "--prompt", "ROMEO " * 200)
    assert code == 2 and "n_ctx=128" in err and err.count("\n") == 1


def test_empty_checkpoint_dir_and_occupied_output_are_errors(tmp_path, hf_dir, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "sample", tmp_path / "empty", "--prompt", "x")
    assert code == 2 and "no complete checkpoint" in err
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, "import-hf", hf_dir[0], "--out", occupied)
    assert code == 2 and "not empty" in err
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]


def test_train_subprocess_bad_preset_exit_status():
    proc = subprocess.run([VENV_BIN / "gpt2-jax", "train", "model=nope"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: unknown model preset 'nope'")
    assert proc.stderr.count("\n") == 1


# ----------------------------------------------------------------------------------------------
# Every class of bad input and OS error through the CLI: exit 2, exactly one `error:` line, no
# traceback, and nothing of the user's destroyed. Built lazily: `setup(tmp, run)` makes the files
# a case needs (tmp: a fresh directory; run: the shared trained run) and returns argv.


def _write(path, text="", data=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data) if data is not None else path.write_text(text)
    return path


def _foreign_dir(tmp):
    _write(tmp / "mine" / "notes.txt", "the user's own file")
    return tmp / "mine"


def _flipped_shards(tmp, run):
    import shutil

    data = shutil.copytree(run.workdir_path / "data", tmp / "data")
    shard = sorted(data.glob("*train*.bin"))[0]
    raw = bytearray(shard.read_bytes())
    raw[-2] ^= 0x01  # one token id off by one: a valid id, so only the checksum can tell
    shard.write_bytes(bytes(raw))
    return data


BAD_INPUTS = {
    "lr-inf": (lambda tmp, run: ["train", "optim.lr=inf"], "optim.lr='inf' is not a finite number"),
    "lr-nan": (lambda tmp, run: ["train", "optim.lr=nan"], "is not a finite number"),
    "eps-minus-inf": (lambda tmp, run: ["train", "optim.eps=-inf"], "is not a finite number"),
    "experiment-syntax-error": (lambda tmp, run: ["train", _write(tmp / "exp.py", "def get_config(:\n")],
                                "exp.py:1: SyntaxError"),
    "experiment-raises": (lambda tmp, run: ["train", _write(tmp / "exp.py", "x = 1\n\ndef get_config():\n    return 1 / 0\n")],
                          "exp.py:4: ZeroDivisionError"),
    "sweep-raises": (lambda tmp, run: ["sweep", "run", _write(tmp / "sw.py", "import nonexistent_module_xyz\n"),
                                       "--out", tmp / "o"], "sw.py:1: ModuleNotFoundError"),
    "workdir-is-a-file": (lambda tmp, run: ["train", f"workdir={_write(tmp / 'f', 'x')}", "model=tiny"], "/f': File exists"),
    "workers-zero": (lambda tmp, run: ["data", "prepare", "--input", "x", "--out", tmp / "o", "--workers", "0"],
                     "--workers: 0 must be >= 1"),
    "shard-mb-negative": (lambda tmp, run: ["data", "prepare", "--input", "x", "--out", tmp / "o", "--shard-mb", "-1"],
                          "must be in (0.0, inf]"),
    "val-fraction-2": (lambda tmp, run: ["data", "prepare", "--input", "x", "--out", tmp / "o", "--val-fraction", "2"],
                       "--val-fraction"),
    "ngram-zero": (lambda tmp, run: ["data", "overlap", "--train", tmp, "--eval", tmp, "--n", "0"], "--n: 0 must be >= 1"),
    "fpr-above-1": (lambda tmp, run: ["data", "overlap", "--train", tmp, "--eval", tmp, "--fpr", "2"], "--fpr"),
    "flops-inf": (lambda tmp, run: ["sweep", "run", "x.py", "--out", tmp, "--dry-run", "--flops-per-sec", "inf"],
                  "is not a finite number"),
    "temperature-negative": (lambda tmp, run: ["sample", tmp, "--prompt", "a", "--temperature", "-1"], "--temperature"),
    "step-negative": (lambda tmp, run: ["ckpt-info", tmp, "--step", "-1"], "--step: -1 must be >= 0"),
    "prompt-not-utf8": (lambda tmp, run: ["sample", run.workdir_path, "--prompt", "caf\udce9"], "not valid UTF-8"),
    "force-foreign-dir-one-file-format": (
        lambda tmp, run: ["export", run.workdir_path, "--format", "safetensors", "--out", _foreign_dir(tmp), "--force"],
        "is a directory but this format (safetensors) writes one file"),
    "force-foreign-dir": (
        lambda tmp, run: ["export", run.workdir_path, "--format", "hf", "--out", _foreign_dir(tmp), "--force"],
        "not written by gpt2-jax"),
    "force-foreign-file": (
        lambda tmp, run: ["export", run.workdir_path, "--format", "gguf", "--out", _write(tmp / "a.gguf", "text"),
                          "--force"], "is not a file of this format (gguf)"),
    "force-current-dir": (lambda tmp, run: ["export", run.workdir_path, "--format", "hf", "--out", "", "--force"],
                          "holds the current directory"),
    "force-parent-dir": (lambda tmp, run: ["export", run.workdir_path, "--format", "hf", "--out", "..", "--force"],
                         "holds the current directory"),
    "force-root": (lambda tmp, run: ["import-hf", tmp, "--out", "/", "--force"], "the root, the home directory"),
    "onnx-out-file-name": (lambda tmp, run: ["export", run.workdir_path, "--format", "onnx", "--out", tmp / "m.onnx"],
                           "ends in '.onnx', a file name"),
    "eval-out-is-a-file": (lambda tmp, run: ["eval", run.workdir_path, "--task", "lambada", "--data", tmp,
                                             "--out", _write(tmp / "out", "x")], "exists and is not a directory"),
    "fit-plot-is-a-file": (lambda tmp, run: ["scaling", "fit", _write(tmp / "r.csv", "params,tokens,loss\n1,2,3\n"),
                                             "--law", "kaplan-n", "--plot", _write(tmp / "p", "x")],
                           "exists and is not a directory"),
    "fit-binary-csv": (lambda tmp, run: ["scaling", "fit", _write(tmp / "r.csv", data=bytes(range(256))), "--law",
                                         "kaplan-n"], "is not a UTF-8 text CSV file"),
    "shard-bit-flipped": (lambda tmp, run: ["train", f"workdir={tmp / 'w'}", f"data.path={_flipped_shards(tmp, run)}",
                                            "model=tiny", "data.vocab=gpt2", "steps=1", "batch_size=8", "data.seq_len=32"],
                          "does not match its sha256"),
    "prepare-out-is-a-file": (lambda tmp, run: ["data", "prepare", "--input", tmp, "--out", _write(tmp / "o", "x")],
                              "/o': File exists"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_every_bad_input_class_is_one_line(tiny_run, tmp_path, monkeypatch, capsys, case):
    setup, needle = BAD_INPUTS[case]
    monkeypatch.chdir(tmp_path)
    argv = setup(tmp_path, tiny_run[0])
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.count("error:") == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err + out and needle in err, err
    if "force" in case:  # nothing the user had was touched
        assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_debug_flag_adds_the_users_traceback(tmp_path, capsys):
    exp = _write(tmp_path / "exp.py", "def get_config():\n    raise RuntimeError('boom')\n")
    assert cli.main(["--debug", "train", str(exp)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {exp}:2: RuntimeError: boom") and "Traceback" in err


def test_a_locked_workdir_refuses_a_second_train_and_prepare(tmp_path, capsys):
    import os
    import socket

    from gpt2_jax.workdir_lock import hold

    with hold(tmp_path / "run", "first run"), hold(tmp_path / "shards", "first prepare"):
        for argv in (["train", f"workdir={tmp_path / 'run'}", "model=tiny"],
                     ["data", "prepare", "--input", tmp_path, "--out", tmp_path / "shards"]):
            code, _, err = run_cli(capsys, *argv)
            assert code == 2 and err.count("\n") == 1, err
            assert f"pid {os.getpid()} on host {socket.gethostname()}" in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()
