"""The notebooks under experiments/notebooks/: each .ipynb is paired with its jupytext .py and
stored without outputs, and each runs top to bottom (shrunk by GPT2_JAX_NOTEBOOK_SMOKE=1)."""

from __future__ import annotations

import os
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "experiments" / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert {p.stem for p in NOTEBOOKS} >= {"quickstart", "architecture_ablations", "tokenizer_ablation", "scaling"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_paired_and_stripped(path):
    import jupytext

    nb, py = jupytext.read(path), jupytext.read(path.with_suffix(".py"))
    assert [(c.cell_type, c.source) for c in nb.cells] == [(c.cell_type, c.source) for c in py.cells], \
        f"{path.name} and {path.with_suffix('.py').name} differ; run jupytext --sync {path.with_suffix('.py')}"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} is stored with outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    """Executed in a real Jupyter kernel (nbclient); any cell's error fails the test."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("GPT2_JAX_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("GPT2_JAX_NOTEBOOK_FIGURES", str(tmp_path / "figures"))
    # The kernel imports this checkout's gpt2_jax (as pytest does) and gets conftest's CPU setup.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(path.parents[2])] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure was drawn"
    if path.stem != "quickstart":
        assert sorted(p.name for p in (tmp_path / "figures").iterdir())
