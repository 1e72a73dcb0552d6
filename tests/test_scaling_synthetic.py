"""The synthetic Markov source (gpt2_jax/scaling/synthetic.py) and `gpt2-jax data synthetic`:
the entropy rate against closed forms and against the empirical likelihood of its own samples."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from gpt2_jax import cli
from gpt2_jax.data import cli as data_cli
from gpt2_jax.data.errors import DataError
from gpt2_jax.scaling.synthetic import Source, _stationary, markov_source


def _entropy_bits(p) -> float:
    p = np.asarray(p, dtype=float)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def test_iid_source_has_the_entropy_of_its_one_row():
    source = markov_source(alphabet=10, order=0, support=5, seed=3)
    row = source.transition[0]
    assert np.count_nonzero(row) == 5 and row.sum() == pytest.approx(1.0)
    assert source.entropy_rate == pytest.approx(_entropy_bits(row), abs=1e-12)
    assert source.window_floor(64) == pytest.approx(source.entropy_rate)  # no context to miss


def test_two_state_chain_matches_the_closed_form():
    a, b = 0.3, 0.1  # P(0 -> 1), P(1 -> 0)
    transition = np.array([[1 - a, a], [b, 1 - b]])
    pi = _stationary(transition, alphabet=2, order=1)
    assert pi == pytest.approx([b / (a + b), a / (a + b)], abs=1e-9)
    source = Source("ab", 1, transition, pi)
    closed_form = b / (a + b) * _entropy_bits([a, 1 - a]) + a / (a + b) * _entropy_bits([b, 1 - b])
    assert source.entropy_rate == pytest.approx(closed_form, abs=1e-9)
    # Every target of a window has the one symbol of context an order-1 chain needs.
    assert source.window_floor(10) == pytest.approx(closed_form, abs=1e-9)


def test_empirical_likelihood_of_a_sample_converges_to_the_entropy_rate():
    source = markov_source(alphabet=8, order=2, support=3, seed=5)
    x = source.sample(200_000, seed=11)
    # -log2 P(x_t | x_{t-2}, x_{t-1}) computed here, independently of Source.log2_likelihood.
    contexts = x[:-2] * 8 + x[1:-1]
    empirical = float(-np.log2(source.transition[contexts, x[2:]]).mean())
    assert empirical == pytest.approx(source.entropy_rate, abs=0.01)
    assert source.log2_likelihood(x) / (len(x) - 2) == pytest.approx(empirical, rel=1e-9)
    # The tolerance separates H from the natural wrong answers: rows weighted equally instead of
    # by pi, and the entropy given one symbol of context.
    unweighted = float(np.mean([_entropy_bits(r) for r in source.transition]))
    assert abs(unweighted - source.entropy_rate) > 0.03
    assert abs(source.conditional_entropies()[1] - source.entropy_rate) > 0.1
    # pi is the contexts' long-run frequency.
    frequency = np.bincount(contexts, minlength=64) / len(contexts)
    assert np.abs(frequency - source.stationary).max() < 0.005


def test_block_entropy_is_the_chain_rule_sum_of_conditional_entropies():
    source = markov_source(alphabet=6, order=3, support=3, seed=2)
    ladder = source.conditional_entropies()
    assert ladder[-1] == pytest.approx(source.entropy_rate, abs=1e-9)
    assert all(h0 >= h1 - 1e-9 for h0, h1 in zip(ladder, ladder[1:]))  # more context never hurts
    assert source.block_entropy() == pytest.approx(sum(ladder[:3]), abs=1e-6)
    # Windows of 5 targets: the first two are predicted from 1 and 2 symbols, the rest from 3.
    assert source.window_floor(5) == pytest.approx((ladder[1] + ladder[2] + 3 * ladder[3]) / 5, abs=1e-12)
    assert source.window_floor(5) > source.entropy_rate


def test_chains_whose_entropy_rate_depends_on_the_start_are_refused():
    two_islands = np.array([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]])
    with pytest.raises(DataError, match="2 closed classes"):
        _stationary(two_islands, alphabet=4, order=1)
    with pytest.raises(DataError, match="did not converge in 3 steps"):
        _stationary(np.array([[0.9, 0.1], [0.2, 0.8]]), alphabet=2, order=1, max_iter=3)


def test_periodic_and_transient_contexts_get_the_right_pi():
    periodic = np.array([[0, 0.5, 0.5], [1, 0, 0], [1, 0, 0]])  # 0 -> {1, 2} -> 0: period 2
    assert _stationary(periodic, alphabet=3, order=1) == pytest.approx([0.5, 0.25, 0.25], abs=1e-9)
    leaky = np.array([[0.5, 0.5, 0], [0.5, 0.5, 0], [0.3, 0.3, 0.4]])  # symbol 2 is never re-entered
    pi = _stationary(leaky, alphabet=3, order=1)
    assert pi[2] == 0.0 and pi[:2] == pytest.approx([0.5, 0.5], abs=1e-9)


def test_the_same_seed_gives_the_same_source_and_sample():
    one, two = markov_source(12, 2, 4, seed=7), markov_source(12, 2, 4, seed=7)
    assert np.array_equal(one.transition, two.transition)
    assert np.array_equal(one.sample(1000, 1), two.sample(1000, 1))
    assert not np.array_equal(one.transition, markov_source(12, 2, 4, seed=8).transition)


def test_cli_writes_the_corpus_and_its_entropy_rate(tmp_path, capsys):
    out = tmp_path / "corpus"
    argv = ["data", "synthetic", "--out", str(out), "--bytes", "5000", "--alphabet", "8", "--order", "2",
            "--support", "3", "--seed", "4"]
    assert cli.main(argv) == 0
    text = (out / "corpus.txt").read_text(encoding="ascii")
    info = json.loads((out / "source.json").read_text())
    assert len(text) == 5000 and set(text) <= set("abcdefgh")
    assert info["entropy_rate_bits_per_byte"] == pytest.approx(markov_source(8, 2, 3, seed=4).entropy_rate)
    assert info["order"] == 2 and info["support"] == 3 and info["bytes"] == 5000
    printed = capsys.readouterr().out
    assert "entropy rate" in printed
    # The printed next step makes byte-vocabulary shards of it (1 token per byte, the tail as validation).
    step = printed.split("next: gpt2-jax ", 1)[1].split()
    assert step[:2] == ["data", "prepare"] and "bytes" in step
    assert cli.main([*step, "--workers", "1", "--no-progress"]) == 0
    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    assert (manifest["vocab"], manifest["vocab_source"], manifest["n_vocab"]) == ("bytes", "bytes", 257)
    assert manifest["splits"]["train"]["bytes_per_token"] == 1.0
    assert manifest["splits"]["train"]["tokens"] + manifest["splits"]["val"]["tokens"] == 5000 + 1  # + <|endoftext|>
    again = tmp_path / "again"
    assert cli.main([*argv[:2], "--out", str(again), *argv[4:]]) == 0
    assert (again / "corpus.txt").read_text(encoding="ascii") == text  # deterministic from the seed


@pytest.mark.parametrize("args, message", [
    (["--alphabet", "1"], "must be >= 2"),
    (["--alphabet", "63"], "alphabet 63 must be in 2..62"),
    (["--alphabet", "4", "--support", "5"], "support 5 must be in 2..alphabet (4)"),
    (["--support", "1"], "must be >= 2"),
    (["--order", "-1"], "must be >= 0"),
    (["--bytes", "0"], "must be >= 1"),
    (["--concentration", "0"], "must be in (0.0"),
    (["--alphabet", "62", "--order", "5"], "contexts is more than"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, args, message):
    argv = ["data", "synthetic", "--out", str(tmp_path / "c"), "--bytes", "100", *args]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists()


def test_an_interrupted_write_leaves_nothing(tmp_path, capsys, monkeypatch):
    """The corpus and its source.json appear together or not at all."""
    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data_cli, "json", types.SimpleNamespace(dumps=fail))  # the second file's writer
    assert cli.main(["data", "synthetic", "--out", str(tmp_path / "c"), "--bytes", "100"]) != 0
    assert "No space left" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_long_corpus_gets_the_max_chars_it_needs(tmp_path, capsys, monkeypatch):
    import gpt2_jax.data.clean as clean

    monkeypatch.setattr(clean, "MAX_CHARS", 50)  # the default, scaled down for a fast test
    assert cli.main(["data", "synthetic", "--out", str(tmp_path / "c"), "--bytes", "100"]) == 0
    assert "--max-chars 100" in capsys.readouterr().out


def test_an_existing_output_directory_is_refused(tmp_path, capsys):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("x")
    assert cli.main(["data", "synthetic", "--out", str(tmp_path / "c"), "--bytes", "100"]) == 2
    err = capsys.readouterr().err
    assert "exists and is not empty" in err and err.count("\n") == 1
