"""The notebook API (gpt2_jax/notebook.py) over the real training loop, and bits per byte:
bytes per token in the shard manifest, bits/byte in metrics.jsonl, the tokenizer choices."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import threading
import time

import numpy as np
import pytest

from gpt2_jax.config import ConfigError

TINY = {"model": "tiny", "model.n_vocab": 512, "steps": 8, "batch_size": 8, "data.seq_len": 32, "log_every": 2,
        "eval_every": 4, "eval_batches": 2, "ckpt_every": 4, "optim.warmup_steps": 2, "optim.lr": 3e-3}
GPT1 = {"model.ln_placement": "post", "model.final_ln": False, "model.residual_scaling": False}
CORPUS_BYTES = 1_115_394  # gpt2_jax/assets/corpora/tinyshakespeare.txt


@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory):
    from gpt2_jax import notebook

    root = tmp_path_factory.mktemp("nb")
    return root, notebook.runs({"gpt2": {}, "gpt1": GPT1}, seeds=(0, 1), base=TINY, root=root, progress=False)


@pytest.mark.slow
def test_runs_metrics_params_and_bits_per_byte(grid_runs):
    root, all_runs = grid_runs
    assert [(r.label, r.seed, r.step, r.stopped) for r in all_runs] == [
        ("gpt2", 0, 8, None), ("gpt2", 1, 8, None), ("gpt1", 0, 8, None), ("gpt1", 1, 8, None)]
    first = all_runs[0]
    assert first.workdir == root / "gpt2" / "seed0" and first.checkpoint.is_dir()
    assert list(first.metrics["step"]) == [2, 4, 6, 8]
    manifest = json.loads((first.workdir / "data" / "manifest.json").read_text())
    assert manifest["n_vocab"] == 512  # data.vocab=auto: a 512-token BBPE for model.n_vocab=512
    bpt = {s: manifest["splits"][s]["bytes_per_token"] for s in ("train", "val")}
    m = first.metrics
    np.testing.assert_allclose(m["bits_per_byte"], m["loss"] / math.log(2) / bpt["train"], rtol=1e-9)
    evaluated = m.dropna(subset=["eval_loss"])
    assert list(evaluated["step"]) == [4, 8]
    np.testing.assert_allclose(evaluated["eval_bits_per_byte"], evaluated["eval_loss"] / math.log(2) / bpt["val"])
    assert "ln_f" in first.params and "ln_f" not in all_runs[2].params
    assert all_runs[2].config.model.ablations() == {"ln_placement": "post", "final_ln": False, "residual_scaling": False}
    assert all_runs[0].final("loss") != all_runs[1].final("loss")  # seeds differ
    with pytest.raises(ConfigError, match="logged no 'bleu'"):
        first.final("bleu")


@pytest.mark.slow
def test_compare_summary_and_load(grid_runs):
    import jax
    import matplotlib

    from gpt2_jax import notebook

    root, all_runs = grid_runs
    fig = notebook.compare(all_runs, metric="eval_bits_per_byte")
    assert isinstance(fig, matplotlib.figure.Figure)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["gpt2 (n=2)", "gpt1 (n=2)"]
    mean = np.mean([r.metrics.dropna(subset=["eval_bits_per_byte"])["eval_bits_per_byte"] for r in all_runs[:2]], axis=0)
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), mean)
    assert len(ax.collections) == 2  # one min..max band per label
    table = notebook.summary(all_runs, metric="eval_bits_per_byte")
    assert list(table.index) == ["gpt2", "gpt1"] and list(table["seeds"]) == [2, 2]
    values = [r.final("eval_bits_per_byte") for r in all_runs[2:]]
    assert table.loc["gpt1", "mean"] == pytest.approx(np.mean(values))
    assert table.loc["gpt1", "std"] == pytest.approx(np.std(values, ddof=1))

    loaded = notebook.load(all_runs[2].workdir, label="gpt1")
    assert loaded.step == 8 and loaded.config == all_runs[2].config
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, jax.device_get(loaded.params),
                                                         jax.device_get(all_runs[2].params)))
    assert loaded.metrics.equals(all_runs[2].metrics)


@pytest.mark.slow
def test_finished_run_loads_and_other_model_is_refused(grid_runs, capfd):
    from gpt2_jax import notebook

    root, all_runs = grid_runs
    done = all_runs[0]
    again = notebook.run(done.config, progress=False)  # finished: nothing trains, nothing is appended
    assert again.step == 8 and again.metrics.equals(done.metrics)
    with pytest.raises(ConfigError, match=r"different model .*model\.ln_placement.*use a new workdir"):
        notebook.run(done.config, {"model.ln_placement": "post"}, progress=False)
    err = capfd.readouterr().err
    assert not re.search(r"^[IWE]\d{4} |absl", err, re.M), err  # no stray absl (Orbax) log lines


@pytest.mark.slow
def test_interrupt_stops_cleanly_and_the_run_resumes(tmp_path):
    """SIGINT (a notebook's interrupt button) stops at a step boundary with a checkpoint; the same
    call again resumes from it and finishes."""
    from gpt2_jax import notebook

    overrides = {**TINY, "steps": 40, "log_every": 1, "ckpt_every": 0, "eval_every": 0, "workdir": tmp_path / "w"}
    metrics = tmp_path / "w" / "metrics.jsonl"

    def interrupt_after_first_logged_step():
        deadline = time.time() + 300
        while time.time() < deadline and not (metrics.is_file() and metrics.read_text().strip()):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_after_first_logged_step, daemon=True).start()
    first = notebook.run(overrides, progress=False)
    assert first.stopped == "SIGINT" and 1 <= first.step < 40
    assert (tmp_path / "w" / "checkpoints" / str(first.step)).is_dir()
    second = notebook.run(overrides, progress=False)
    assert second.stopped is None and second.step == 40
    assert f"resuming from {tmp_path / 'w' / 'checkpoints'} at step {first.step}" in second.log
    assert list(second.metrics["step"]) == list(range(1, 41))


def test_bad_overrides_are_one_line_errors():
    from gpt2_jax import notebook

    with pytest.raises(ConfigError, match="unknown config key 'model.layers'"):
        notebook.make_config({"model.layers": 2})
    with pytest.raises(ConfigError, match="must be a list of key=value strings or a dict"):
        notebook.make_config("steps=3")
    assert notebook.make_config(["steps=3"], {"model.final_ln": False}).model.final_ln is False


def test_manifest_bytes_per_token_and_logged_bits_per_byte(tiny_run):
    """Every byte of the bundled corpus is counted once (train + val), and the training log's
    bits/byte is its loss converted with the manifest's bytes per token."""
    run, _ = tiny_run
    manifest = json.loads((run.workdir_path / "data" / "manifest.json").read_text())
    splits = manifest["splits"]
    assert splits["train"]["text_bytes"] + splits["val"]["text_bytes"] == CORPUS_BYTES
    for s in ("train", "val"):
        assert splits[s]["bytes_per_token"] == splits[s]["text_bytes"] / splits[s]["tokens"]
    assert 3.0 < splits["train"]["bytes_per_token"] < 4.5  # GPT-2's vocabulary on English prose
    records = [json.loads(line) for line in (run.workdir_path / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        assert r["bits_per_byte"] == pytest.approx(r["loss"] / math.log(2) / splits["train"]["bytes_per_token"])
        if "eval_loss" in r:
            assert r["eval_bits_per_byte"] == pytest.approx(r["eval_loss"] / math.log(2) / splits["val"]["bytes_per_token"])


@pytest.mark.parametrize("vocab,n_vocab", [("bytes", 257), ("sp:400", 400), ("bbpe:300", 300)])
def test_tokenizer_choices_for_the_bundled_corpus(vocab, n_vocab, tmp_path):
    from gpt2_jax.config import TrainConfig, apply_overrides
    from gpt2_jax.tokenizer import load_tokenizer
    from gpt2_jax.train import resolve_data

    cfg = apply_overrides(TrainConfig(), [f"workdir={tmp_path}", f"data.vocab={vocab}", f"model.n_vocab={n_vocab}"])
    manifest = json.loads((resolve_data(cfg, say=lambda _: None) / "manifest.json").read_text())
    assert manifest["n_vocab"] == n_vocab
    splits = manifest["splits"]
    assert splits["train"]["text_bytes"] + splits["val"]["text_bytes"] == CORPUS_BYTES
    if vocab == "bytes":  # one token per byte, plus the one <|endoftext|> after the document
        assert splits["train"]["tokens"] + splits["val"]["tokens"] == CORPUS_BYTES + 1
    tok = load_tokenizer(str(tmp_path / "vocab"))
    text = "ROMEO: But, soft! what light through yonder window breaks?"
    assert tok.decode(tok.encode(text)) == text


def test_auto_vocab_follows_the_model(tmp_path):
    from gpt2_jax.config import DataConfig

    assert [DataConfig().vocab_for(n) for n in (50257, 257, 4096)] == ["gpt2", "bytes", "bbpe:4096"]
    assert DataConfig(vocab="sp:512").vocab_for(4096) == "sp:512"
    with pytest.raises(ConfigError, match=r"data.vocab='wordpiece' must be one of auto, gpt2, bytes, bbpe:N"):
        DataConfig(vocab="wordpiece")
    from gpt2_jax.config import TrainConfig, apply_overrides

    from gpt2_jax.train import resolve_data

    with pytest.raises(ConfigError, match="model.n_vocab=100 implies no vocabulary for the bundled corpus"):
        resolve_data(apply_overrides(TrainConfig(), ["model.n_vocab=100", f"workdir={tmp_path}"]), say=print)
    assert not (tmp_path / "data").exists()
