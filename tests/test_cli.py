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
