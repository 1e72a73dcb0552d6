"""`gpt2-jax scaling predict`: out-of-sample prediction with bootstrap intervals, and row filters.

Two tables: synthetic rows from a known Chinchilla-form law with 0.2% multiplicative noise (the
fit on N <= 1e9 must predict the 4e9 rows within 1% and its intervals must cover the noiseless
law), and rows at the model sizes of Hoffmann et al. 2022 (Table A9: 44M-16B) and token counts
that follow the law Besiroglu et al. 2024 refit to Hoffmann's own points (E 1.8172, A 482.01,
B 2085.43, alpha 0.3478, beta 0.3658): a fit on the 8 smallest sizes must recover that law's
prediction at Chinchilla's own (70B, 1.4T) within 1%.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from gpt2_jax import cli
from gpt2_jax.scaling import ScalingError
from gpt2_jax.scaling.rowfilter import parse_filter

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al. 2022, eq. 10
EPOCH = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}  # Besiroglu et al. 2024
HOFFMANN_SIZES = (44e6, 90e6, 140e6, 196e6, 251e6, 425e6, 573e6, 727e6, 1.1e9, 2.1e9, 4.5e9, 9.3e9, 16.2e9)


def law(p, n, d):
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


def _write(path, rows, header=("name", "params", "tokens", "loss")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    rng = np.random.default_rng(0)
    rows = [(f"n{n:g}-d{d:g}", n, d, law(TRUE, n, d) * np.exp(rng.normal(0, 0.002)))
            for n in (1e7, 3e7, 1e8, 3e8, 1e9, 4e9) for d in (1e9, 3e9, 1e10, 3e10)]
    return _write(tmp_path_factory.mktemp("pred") / "synthetic.csv", rows)


def test_predict_left_out_rows_json(synthetic, capsys):
    rc = cli.main(["scaling", "predict", str(synthetic), "--law", "chinchilla", "--fit-on", "params<=1e9",
                   "--bootstrap", "60", "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(out) == 1
    report = json.loads(out[0])
    assert set(report) == {"fit", "predictions"}
    assert report["fit"]["law"] == "chinchilla" and report["fit"]["fit_rows"] == 20
    preds = report["predictions"]
    assert len(preds) == 4 and all(p["params"] == 4e9 for p in preds)
    for p in preds:
        assert set(p) >= {"params", "tokens", "predicted", "low", "high", "measured"}
        truth = law(TRUE, p["params"], p["tokens"])
        assert abs(p["predicted"] - p["measured"]) / p["measured"] < 0.01
        assert p["low"] <= truth <= p["high"], (p, truth)
        assert p["low"] <= p["predicted"] <= p["high"]


def test_measured_is_the_row_itself_not_a_curve_step_at_the_same_tokens(tmp_path, capsys):
    """A sweep table holds a run's end and, at the same (N, D), another run's intermediate step
    (constant lr, higher loss): a left-out end is measured by its own loss, an --at point by the
    run ends at its (N, D)."""
    rows = [(f"n{n:g}-d{d:g}", n, d, 1, law(TRUE, n, d)) for n in (1e7, 3e7, 1e8, 3e8) for d in (1e9, 3e9, 1e10)]
    rows += [("big-end", 1e9, 3e9, 1, 2.50), ("big-long@3e9", 1e9, 3e9, 0, 2.90)]
    path = _write(tmp_path / "curves.csv", rows, header=("name", "params", "tokens", "final", "loss"))
    assert cli.main(["scaling", "predict", str(path), "--law", "chinchilla", "--fit-on", "params<1e9",
                     "--bootstrap", "0", "--json"]) == 0
    measured = {p["name"]: p["measured"] for p in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"]}
    assert measured == {"big-end": 2.50, "big-long@3e9": 2.90}
    assert cli.main(["scaling", "predict", str(path), "--law", "chinchilla", "--fit-on", "params<1e9",
                     "--at", "params=1e9,tokens=3e9", "--bootstrap", "0", "--json"]) == 0
    (point,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"]
    assert point["measured"] == 2.50


def test_predict_at_points_and_table(synthetic, capsys, tmp_path):
    rc = cli.main(["scaling", "predict", str(synthetic), "--law", "kaplan-nd", "--fit-on", "params<1e9",
                   "--at", "params=1e9,tokens=1e10", "--at", "params=1e11,tokens=1e12", "--bootstrap", "20",
                   "--plot", str(tmp_path / "p.png")])
    text = capsys.readouterr().out
    assert rc == 0 and "law kaplan-nd fit on 16 of 24 rows" in text and (tmp_path / "p.png").stat().st_size > 0
    rc = cli.main(["scaling", "predict", str(synthetic), "--law", "kaplan-nd", "--fit-on", "params<1e9",
                   "--at", "params=1e9,tokens=1e10", "--at", "params=1e11,tokens=1e12", "--bootstrap", "0", "--json"])
    preds = json.loads(capsys.readouterr().out)["predictions"]
    assert preds[0]["measured"] is not None and preds[1]["measured"] is None  # only the first is a row
    assert preds[0]["low"] is None  # no bootstrap, no interval


def test_predict_published_chinchilla_law(tmp_path, capsys):
    # Hoffmann's sizes, each at 20 tokens per parameter and at 3x fewer/more tokens.
    rows = [(f"h{i}", n, d, law(EPOCH, n, d)) for i, n in enumerate(HOFFMANN_SIZES) for d in (7 * n, 20 * n, 60 * n)]
    path = _write(tmp_path / "hoffmann.csv", rows)
    rc = cli.main(["scaling", "predict", str(path), "--law", "chinchilla", "--fit-on", "params<=7.3e8",
                   "--at", "params=70e9,tokens=1.4e12", "--bootstrap", "30", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    (chinchilla,) = report["predictions"]
    truth = law(EPOCH, 70e9, 1.4e12)
    assert abs(chinchilla["predicted"] - truth) / truth < 0.01
    assert report["fit"]["alpha"] == pytest.approx(EPOCH["alpha"], rel=0.05)


def test_filter_parser():
    keep = parse_filter("params<=1e9 and tokens>2e9, final==1", ["params", "tokens", "final"])
    assert keep({"params": "1e9", "tokens": "3e9", "final": "1"})
    assert not keep({"params": "2e9", "tokens": "3e9", "final": "1"})
    assert not keep({"params": "1e9", "tokens": "", "final": "1"})  # empty cells fail
    wsd = parse_filter("schedule==wsd, final==1", ["schedule", "final"])
    assert wsd({"schedule": "wsd", "final": "1"}) and not wsd({"schedule": "cosine", "final": "1"})
    for text, message in [("params<=", "is not a comparison"), ("params~1", "is not a comparison"),
                          ("__import__('os')", "is not a comparison"), ("size<1", "has no column 'size'"),
                          ("params<abc", "'abc' is not a number"), ("params<wsd", "a word compares only with"), ("params<nan", "nan compares false"),
                          ("  ", "is empty")]:
        with pytest.raises(ScalingError, match=message):
            parse_filter(text, ["params", "tokens"])


@pytest.mark.parametrize("args, message", [
    (["--law", "chinchilla", "--fit-on", "params<=1e9 or tokens>1"], "is not a comparison"),
    (["--law", "chinchilla", "--fit-on", "width<3"], "has no column 'width'"),
    (["--law", "isoflop", "--fit-on", "params<=1e9"], "predicts an allocation, not a loss"),
    (["--law", "chinchila", "--fit-on", "params<=1e9"], "did you mean 'chinchilla'"),
    (["--law", "chinchilla", "--fit-on", "params<=1"], "keeps none of the 24 rows"),
    (["--law", "chinchilla", "--fit-on", "params>0"], "keeps every row"),
    (["--law", "chinchilla", "--fit-on", "params<1e9", "--at", "params=1e9"], "has no tokens="),
    (["--law", "chinchilla", "--fit-on", "params<1e9", "--at", "params=-1,tokens=1"], "must be a finite number > 0"),
    (["--law", "chinchilla", "--fit-on", "params<1e9", "--loss-column", "bpb"], "has no column 'bpb'"),
])
def test_predict_bad_input(synthetic, capsys, args, message):
    assert cli.main(["scaling", "predict", str(synthetic), *args, "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
