"""The notebooks run top to bottom (code cells executed in order, figures on Agg)."""

from __future__ import annotations

import json
import pathlib

import matplotlib
import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, capsys):
    matplotlib.use("Agg")
    nb = json.loads(path.read_text())
    namespace = {"__name__": "notebook"}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path.name}: strip outputs before committing"
            exec(compile("".join(cell["source"]), str(path), "exec"), namespace)
    assert "f - f* =" in capsys.readouterr().out
