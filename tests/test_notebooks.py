"""The notebooks run top to bottom (code cells executed in order, figures on Agg)."""

from __future__ import annotations

import json
import pathlib

import jax
import matplotlib
import matplotlib.pyplot
import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, capsys):
    matplotlib.use("Agg")
    nb = json.loads(path.read_text())
    namespace = {"__name__": "notebook"}
    x64 = jax.config.jax_enable_x64  # a notebook may enable float64: not for the other tests
    try:
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs"), f"{path.name}: strip outputs before committing"
                exec(compile("".join(cell["source"]), str(path), "exec"), namespace)
    finally:
        jax.config.update("jax_enable_x64", x64)
        matplotlib.pyplot.close("all")
    assert "f - f* =" in capsys.readouterr().out
