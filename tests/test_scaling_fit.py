"""Scaling-law fits recover the parameters of synthetic data drawn from each law with noise.

Synthetic tables use the published fits as ground truth (Kaplan et al. 2020 Table 5; Hoffmann
et al. 2022's E, A, B, alpha, beta), multiplicative log-normal noise and fixed seeds. Each
test asserts the true value lies inside the bootstrap interval and the point estimate is close.
Also: fits do not depend on row order, degenerate tables are refused with one clear error, and
the `gpt2-jax scaling fit` command prints a JSON last line and exits 2 on bad input.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gpt2_jax import cli
from gpt2_jax.scaling import ScalingError
from gpt2_jax.scaling.chinchilla import optimal_allocation
from gpt2_jax.scaling.fit import fit_law
from gpt2_jax.scaling.table import Table, load_table

CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
KAPLAN = {"N_c": 8.8e13, "alpha_N": 0.076, "D_c": 5.4e13, "alpha_D": 0.095}


def chinchilla_loss(n, d, p=CHINCHILLA):
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


def noisy(loss, sigma, seed):
    return loss * np.exp(np.random.default_rng(seed).normal(0, sigma, np.shape(loss)))


def _within(result, boot, truth, rtol):
    for name, true in truth.items():
        lo, hi = boot.intervals[name]
        assert lo <= true <= hi, f"{name}: true {true} outside bootstrap interval [{lo}, {hi}]"
        assert result.params[name] == pytest.approx(true, rel=rtol), name


def test_chinchilla_recovers_parameters():
    n, d = (x.ravel() for x in np.meshgrid(np.geomspace(1e6, 1e9, 6), np.geomspace(1e8, 1e11, 6)))
    table = Table.build(n, d, noisy(chinchilla_loss(n, d), 0.002, seed=1))
    result, boot = fit_law(table, "chinchilla", k=100, seed=0)
    _within(result, boot, CHINCHILLA, rtol=0.25)
    assert result.params["alpha"] == pytest.approx(0.34, abs=0.03) and result.params["beta"] == pytest.approx(0.28, abs=0.03)
    # Derived predictions carry intervals too, and match the closed form at the true parameters.
    n_opt = optimal_allocation(CHINCHILLA, table.flops.max())[0]
    lo, hi = boot.intervals["N_opt"]
    assert lo <= n_opt <= hi


def test_kaplan_one_variable_laws_recover_parameters():
    n = np.geomspace(1e5, 1e9, 9)
    table = Table.build(n, np.full_like(n, 1e12), noisy((KAPLAN["N_c"] / n) ** KAPLAN["alpha_N"], 0.002, seed=2))
    result, boot = fit_law(table, "kaplan-n", k=200, seed=0, level=0.99)
    _within(result, boot, {"alpha_N": KAPLAN["alpha_N"]}, rtol=0.05)
    lo, hi = boot.intervals["N_c"]
    assert lo <= KAPLAN["N_c"] <= hi  # N_c = N * L^(1/alpha): loose, as in the paper's own fits
    d = np.geomspace(1e7, 1e11, 9)
    table = Table.build(np.full_like(d, 1e9), d, noisy((KAPLAN["D_c"] / d) ** KAPLAN["alpha_D"], 0.002, seed=3))
    result, boot = fit_law(table, "kaplan-d", k=200, seed=0)
    _within(result, boot, {"alpha_D": KAPLAN["alpha_D"]}, rtol=0.05)
    c = np.geomspace(1e15, 1e21, 8)
    table = Table.build(c / 6e9, np.full_like(c, 1e9), noisy((2.3e8 / c) ** 0.05, 0.001, seed=4), flops=c)
    result, boot = fit_law(table, "kaplan-c", k=200, seed=0)
    _within(result, boot, {"alpha_C": 0.05}, rtol=0.05)


def test_kaplan_nd_recovers_parameters():
    n, d = (x.ravel() for x in np.meshgrid(np.geomspace(1e6, 1e9, 6), np.geomspace(1e8, 1e11, 6)))
    a_n, a_d = KAPLAN["alpha_N"], KAPLAN["alpha_D"]
    loss = ((KAPLAN["N_c"] / n) ** (a_n / a_d) + KAPLAN["D_c"] / d) ** a_d
    table = Table.build(n, d, noisy(loss, 0.001, seed=5))
    result, boot = fit_law(table, "kaplan-nd", k=100, seed=0)
    _within(result, boot, {"alpha_N": a_n, "alpha_D": a_d}, rtol=0.1)
    for name in ("N_c", "D_c"):
        lo, hi = boot.intervals[name]
        assert lo <= KAPLAN[name] <= hi


def _isoflop_table(seed):
    rows = []
    for c in np.geomspace(1e18, 1e21, 4):
        n_opt = optimal_allocation(CHINCHILLA, c)[0]
        for n in n_opt * np.geomspace(0.25, 4, 7):
            rows.append((n, c / (6 * n), c))
    n, d, c = map(np.array, zip(*rows))
    return Table.build(n, d, noisy(chinchilla_loss(n, d), 0.0005, seed), flops=c)


def test_isoflop_and_envelope_recover_allocation_exponents():
    # Under C = 6ND the law implies N_opt ~ C^(beta/(alpha+beta)) and D_opt ~ C^(alpha/(alpha+beta)).
    a = CHINCHILLA["beta"] / (CHINCHILLA["alpha"] + CHINCHILLA["beta"])
    table = _isoflop_table(seed=6)
    result, boot = fit_law(table, "isoflop", k=100, seed=0)
    _within(result, boot, {"a": a, "b": 1 - a}, rtol=0.05)
    assert len(result.extra["profiles"]) == 4
    result, _ = fit_law(table, "envelope")
    assert result.params["a"] == pytest.approx(a, abs=0.12) and result.params["b"] == pytest.approx(1 - a, abs=0.12)


@pytest.mark.parametrize("law", ["kaplan-n", "kaplan-nd", "kaplan-c", "chinchilla", "isoflop", "envelope"])
def test_fits_do_not_depend_on_row_order(law):
    table = _isoflop_table(seed=7)
    order = np.random.default_rng(0).permutation(len(table))
    shuffled = Table.build(table.params[order], table.tokens[order], table.loss[order], table.flops[order])
    a, b = fit_law(table, law)[0], fit_law(shuffled, law)[0]
    assert a.values() == b.values() and a.objective == b.objective


def test_degenerate_tables_are_refused():
    n = np.array([1e6, 1e7, 1e8])
    with pytest.raises(ScalingError, match="has 5 parameters but the table has 3 rows"):
        fit_law(Table.build(n, n * 20, chinchilla_loss(n, n * 20)), "chinchilla")
    d = np.geomspace(1e8, 1e11, 8)
    with pytest.raises(ScalingError, match="at least 2 distinct model sizes"):
        fit_law(Table.build(np.full_like(d, 1e7), d, chinchilla_loss(1e7, d)), "chinchilla")
    with pytest.raises(ScalingError, match="at least 2 distinct model sizes"):
        fit_law(Table.build(np.full_like(d, 1e7), d, chinchilla_loss(1e7, d)), "kaplan-nd")
    with pytest.raises(ScalingError, match="at least 3 distinct model size"):
        fit_law(Table.build(n[:2], n[:2], [3.0, 2.9]), "kaplan-n")
    with pytest.raises(ScalingError, match=r"column 'loss' has a non-positive or non-finite value nan in row 2"):
        Table.build(n, n, [3.0, math.nan, 2.0])
    with pytest.raises(ScalingError, match=r"column 'params' has a non-positive .* -1.0 in row 1"):
        Table.build([-1.0, 2.0, 3.0], n, [3.0, 2.5, 2.0])
    with pytest.raises(ScalingError, match="unknown law 'chinchila' \\(did you mean 'chinchilla'\\?\\); choose one of"):
        fit_law(Table.build(n, n, [3.0, 2.5, 2.0]), "chinchila")


def _write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_cli_fit_json_and_plots(tmp_path, capsys):
    n, d = (x.ravel() for x in np.meshgrid(np.geomspace(1e6, 1e9, 5), np.geomspace(1e8, 1e11, 5)))
    loss = noisy(chinchilla_loss(n, d), 0.002, seed=8)
    csv = _write_csv(tmp_path / "r.csv", ["name", "params", "tokens", "loss", "eval_loss"],
                     [(f"p{i}", n[i], d[i], loss[i], loss[i] * 1.05) for i in range(len(n))])
    assert load_table(csv).flops == pytest.approx(6 * load_table(csv).params * load_table(csv).tokens)
    rc = cli.main(["scaling", "fit", str(csv), "--law", "chinchilla", "--bootstrap", "8", "--seed", "3",
                   "--plot", str(tmp_path / "plots"), "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert rc == 0 and report["law"] == "chinchilla" and set(CHINCHILLA) <= set(report)
    assert set(report["intervals"]) >= set(CHINCHILLA) and report["bootstrap"]["k"] == 8
    assert report["alpha"] == pytest.approx(0.34, abs=0.05)
    for name in ("compute.png", "bootstrap.png", "residuals.png", "figure4.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000, name
    assert not list((tmp_path / "plots").glob(".*tmp*"))
    # Same seed, same intervals.
    cli.main(["scaling", "fit", str(csv), "--law", "chinchilla", "--bootstrap", "8", "--seed", "3", "--json"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["intervals"] == report["intervals"]


@pytest.mark.parametrize("args, message", [
    (["--law", "kaplan"], "error: unknown law 'kaplan'"),
    (["--law", "chinchilla", "--loss-column", "val"], "has no column 'val'"),
    (["--law", "kaplan-n", "--target-flops", "-1"], "--target-flops: -1.0 must be in (0.0, inf]"),
])
def test_cli_fit_bad_input(tmp_path, capsys, args, message):
    csv = _write_csv(tmp_path / "r.csv", ["params", "tokens", "loss"], [(1e6, 1e8, 3.0), (1e7, 1e8, 2.8), (1e8, 1e8, 2.7)])
    assert cli.main(["scaling", "fit", str(csv), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_fit_missing_column_and_nan(tmp_path, capsys):
    csv = _write_csv(tmp_path / "r.csv", ["params", "loss"], [(1e6, 3.0)])
    assert cli.main(["scaling", "fit", str(csv), "--law", "kaplan-n"]) == 2
    assert "has no column 'tokens'" in capsys.readouterr().err
    csv = _write_csv(tmp_path / "n.csv", ["params", "tokens", "loss"], [(1e6, 1e8, 3.0), (1e7, 1e8, "nan")])
    assert cli.main(["scaling", "fit", str(csv), "--law", "kaplan-n"]) == 2
    assert "column 'loss' row 3 is 'nan'" in capsys.readouterr().err
