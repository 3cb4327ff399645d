"""The ``jaxdist`` command and the named experiments: results, resume, figures."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jaxdist import cli
from jaxdist.experiments import EXPERIMENTS, load_traces, run_experiment


def test_list_and_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip()
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in EXPERIMENTS:
        assert name in out
    assert "rand_k" in out and "perm_k" in out


def test_unknown_experiment_is_an_error(capsys):
    assert cli.main(["run", "nope"]) == 2
    with pytest.raises(ValueError, match="unknown experiment"):
        run_experiment("nope")


def test_counterexample_experiment_resumes_and_plots(tmp_path, capsys):
    out = str(tmp_path)
    assert cli.main(["run", "counterexample", "--out", out, "--steps", "400"]) == 0
    text = capsys.readouterr().out
    assert "figure:" in text
    folder = tmp_path / "counterexample"
    assert (folder / "counterexample.png").stat().st_size > 10_000
    summary = json.loads((folder / "summary.json").read_text())
    arms = summary["arms"]
    # DCGD-Top1 grows at exactly (1 + 11γ/6)^k; error feedback converges (THEORY.md §3).
    traces = load_traces("counterexample", out)
    _, dcgd = traces["dcgd_top1"]
    gamma = arms["dcgd_top1"]["stepsize"]
    growth = dcgd.f_gap[1:] / dcgd.f_gap[:-1]
    np.testing.assert_allclose(growth, (1 + 11 * gamma / 6) ** 20, rtol=1e-4)
    # EF21's PL theorem: f - f* decays at least as (1 - γμ)^T (up to the G^0 term of Ψ^0).
    mu = 7 / 6
    bound = (1 - arms["ef21_top1"]["stepsize"] * mu) ** 400
    for arm in ("ef14_top1", "ef21_top1"):
        assert 0 <= arms[arm]["final_rel_gap"] < min(bound, 1e-2), (arm, bound)
    # Exact bits: Top-1 in d = 3 sends one float32 and a 2-bit index per round.
    _, ef21 = traces["ef21_top1"]
    assert ef21.bits_up[-1] == 400 * (32 + 2)
    # A second call loads every arm instead of rerunning it.
    mtimes = {f: os.path.getmtime(folder / f) for f in os.listdir(folder) if f.endswith(".json")}
    assert cli.main(["run", "counterexample", "--out", out, "--steps", "400", "--no-plot"]) == 0
    assert capsys.readouterr().out.count("loaded from") == len(arms)
    for f, t in mtimes.items():
        if f != "summary.json":
            assert os.path.getmtime(folder / f) == t


def test_bits_experiment_short(tmp_path):
    summary = run_experiment("bits", str(tmp_path), num_steps=20, log=lambda s: None)
    arms = summary["arms"]
    d, k = 113, 11
    # 20 rounds: GD sends d float32 per round, Rand-K with a shared seed k floats, Top-K k floats
    # plus k indices of ceil(log2 d) = 7 bits.
    for s in arms.values():
        assert s["rounds_total"] == 20
    assert arms["gd"]["bits_up_total_per_worker"] == 20 * d * 32
    assert arms["diana_rand_k"]["bits_up_total_per_worker"] == 20 * k * 32
    assert arms["ef21_top_k"]["bits_up_total_per_worker"] == 20 * k * (32 + 7)
