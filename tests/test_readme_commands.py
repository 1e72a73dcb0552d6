"""Every command of README's "Using it" block runs (exit status 0), so README stays true.

The block is parsed from README.md: a new command there is tested without touching this file,
as long as its placeholders are in SUBSTITUTIONS (the test fails naming any that is not).
Commands run in order in one scratch directory, so `gpt2-jax train ...` makes the `runs/demo`
checkpoint that the sample/export commands after it read; training commands get SHRINK
appended (later overrides win), so each trains a few steps instead of hundreds.
"""

from __future__ import annotations

import json
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"

# (subcommand or "*", README placeholder) -> value; {name} fields are filled by the test:
#   {hf_model}: a GPT2LMHeadModel.save_pretrained directory (the session's tiny HF model)
#   {checkpoints}: runs/demo/checkpoints, made by the first train command
#   {fresh}: a new, not yet existing directory (one per use)
#   {step}: the newest step of {checkpoints}
#   {text_jsonl}: three documents of tiny Shakespeare as JSONL ({"text": ...} per line)
# The most specific entry wins. Optional groups "[...]" are kept, without their brackets.
SUBSTITUTIONS: dict[tuple[str, str], str] = {
    ("train", "EXPERIMENT.py"): "experiments/shakespeare_tiny.py",
    ("train", "key=value ..."): "workdir=runs/demo",
    ("import-hf", "HF_DIR"): "{hf_model}",
    ("import-hf", "CKPT_DIR"): "{fresh}",
    ("*", "HF_DIR"): "{fresh}",
    ("*", "CKPT_DIR"): "{checkpoints}",
    ("*", "DIR"): "{fresh}",
    ("*", "N"): "{step}",
    ("*", "..."): "--help",
    ("import", "HF_DIR"): "{hf_model}",
    ("*", "NEW_CKPT_DIR"): "{fresh}",
    ("*", "OUT_DIR"): "{fresh}",
    ("*", "OUT_FILE"): "{fresh}.gguf",
    ("eval", "FILE.jsonl"): "{text_jsonl}",
    ("sweep", "SWEEP.py"): "experiments/scaling_tiny_cpu.py",
    ("scaling", "RESULTS.csv"): "experiments/benchmarks/scaling_tiny_cpu/results.csv",
}
# Appended to every `train` command: a few steps of whatever the command configures.
SHRINK = ["steps=3", "batch_size=8", "data.seq_len=32", "log_every=1", "eval_every=0", "ckpt_every=0",
          "sample_tokens=4"]
PLACEHOLDER = re.compile(r"^([A-Z][A-Z0-9_]*(\.py)?|\.\.\.)$|[\[\]]")


def usage_commands() -> list[str]:
    """The command lines of the first ```bash block under "## Using it", comments removed."""
    section = README.read_text().split("\n## Using it", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def substitute(line: str, values: dict) -> list[str]:
    argv = shlex.split(line.replace("[", "").replace("]", ""))
    prog = argv[:3] if argv[0] == "python" else argv[:1]  # "python -m gpt2_jax" or "gpt2-jax"
    rest = " ".join(shlex.quote(a) for a in argv[len(prog):])
    sub = argv[len(prog)] if len(argv) > len(prog) else "*"
    # Longest placeholders first ("key=value ..." before "..."), most specific entry wins.
    for (_, placeholder) in sorted(SUBSTITUTIONS, key=lambda k: -len(k[1])):
        value = SUBSTITUTIONS.get((sub, placeholder), SUBSTITUTIONS.get(("*", placeholder)))
        if value is None:
            continue
        pattern = rf"(?<![\w./-]){re.escape(placeholder)}(?![\w./-])"
        rest = re.sub(pattern, lambda _: shlex.quote(value), rest)
    args = shlex.split(rest)
    left = [a for a in args if PLACEHOLDER.search(a)]
    assert not left, f"README command {line!r} uses placeholder(s) {left}: add them to SUBSTITUTIONS in {__file__}"
    args = [a.format(**values, fresh=values["new"]()) if "{" in a else a for a in args]
    if sub == "train":
        args += SHRINK
    return prog + args


def test_usage_block_is_parsed():
    commands = usage_commands()
    assert commands[0].startswith("gpt2-jax train") and any(c.startswith("gpt2-jax sample") for c in commands)


@pytest.mark.slow
def test_every_usage_command_runs(tmp_path, monkeypatch, hf_tiny):
    from gpt2_jax.checkpoint import finalized_steps
    from gpt2_jax.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments").symlink_to(README.parent / "experiments")
    counter = iter(range(1000))
    values = {"hf_model": str(hf_tiny.path), "checkpoints": "runs/demo/checkpoints", "step": "",
              "new": lambda: str(tmp_path / f"out{next(counter)}"), "text_jsonl": str(tmp_path / "docs.jsonl")}
    lines = (README.parent / "gpt2_jax" / "assets" / "corpora" / "tinyshakespeare.txt").read_text().splitlines()
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": "\n".join(lines[i:i + 20])}) + "\n"
                                                 for i in range(0, 60, 20)))
    ran = []
    for line in usage_commands():
        if pathlib.Path("runs/demo/checkpoints").is_dir():
            values["step"] = str(finalized_steps("runs/demo/checkpoints")[-1])
        argv = substitute(line, values)
        if argv[0] == "gpt2-jax":
            code = main(argv[1:])
        else:  # python -m gpt2_jax ...: the module entry point, in a fresh interpreter
            code = subprocess.run([sys.executable] + argv[1:], capture_output=True, text=True, timeout=300).returncode
        assert code == 0, f"README command {line!r} ran as {argv} and exited {code}"
        ran.append(argv)
    assert ran[0][:3] == ["gpt2-jax", "train", "experiments/shakespeare_tiny.py"]
    assert ["gpt2-jax", "train", "model=tiny", "steps=200", "workdir=runs/t"] == ran[1][:5]
    assert (tmp_path / "runs" / "t" / "checkpoints").is_dir()  # model=tiny on the bundled corpus works
