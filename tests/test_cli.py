"""The ``jaxdist`` command end to end: instant help, one-line errors, list, run, resume, plot."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxdist import cli
from jaxdist.experiments import EXPERIMENTS, load_traces

# Runs the parser in a fresh interpreter and reports the exit status, the streams and which
# heavy modules got imported.
_PROBE = """
import contextlib, io, json, sys
from jaxdist.cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    rc = main(json.loads(sys.argv[1]))
heavy = sorted(m for m in ("jax", "jaxlib", "optax", "numpy", "matplotlib") if m in sys.modules)
print(json.dumps({"rc": rc, "out": out.getvalue(), "err": err.getvalue(), "heavy": heavy}))
"""


def _probe(argv: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(proc.stdout)


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"], ["run", "--help"], ["plot", "--help"], ["list", "--help"]],
    ids=" ".join,
)
def test_help_and_version_do_not_import_jax(argv):
    res = _probe(argv)
    assert res["rc"] == 0 and res["err"] == ""
    assert res["heavy"] == [], f"{argv} imported {res['heavy']}"
    if argv == ["--version"]:
        import jaxdist

        assert res["out"].strip() == jaxdist.__version__
    else:
        assert res["out"].startswith("usage: jaxdist")
    if "--help" in argv and argv[0] != "list":
        # The experiments and their claims come from the JAX-free catalogue.
        for name, exp in EXPERIMENTS.items():
            assert name in res["out"]
            assert exp.claim.split()[0] in res["out"]


def test_console_script_help_exits_zero():
    proc = subprocess.run(
        [sys.executable, "-m", "jaxdist.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.startswith("usage: jaxdist")


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["run", "top1", "--steps", "0"], "argument --steps"),
        (["run", "top1", "--seed", "-3"], "argument --seed"),
        (["run", "nope"], "argument NAME"),
        (["plot", "nope"], "argument NAME"),
    ],
)
def test_bad_values_end_to_end_are_one_line_without_jax(argv, flag):
    res = _probe(argv)
    assert res["rc"] == 2 and res["out"] == ""
    err = res["err"]
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert err.startswith(f"jaxdist {argv[0]}: error: {flag}")
    assert "num_steps" not in err and "Traceback" not in err
    assert res["heavy"] == []  # validated before anything is built


def _one_line_error(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


_USAGE_ERRORS = [
    (["run", "nope"], ["argument NAME", "'nope'", "bits", "top1", "'all'"]),
    (["run", "bits", "nope"], ["argument NAME", "'nope'", "top1"]),
    (["run", "top1", "--steps", "0"], ["argument --steps", "positive integer"]),
    (["run", "top1", "--steps", "ten"], ["argument --steps", "'ten'"]),
    (["run", "top1", "--steps", "-5"], ["argument --steps", "'-5'"]),
    (["run", "top1", "--seed", "-1"], ["argument --seed", "[0, 2**32)"]),
    (["run", "top1", "--seed", str(2**32)], ["argument --seed", "[0, 2**32)"]),
    (["run", "top1", "--seed", "1.5"], ["argument --seed", "'1.5'"]),
    (["plot", "nope"], ["argument NAME", "'nope'", "bits", "top1"]),
    (["plot"], ["NAME", "required"]),
    (["frobnicate"], ["invalid choice", "'frobnicate'", "run"]),
    (["run", "--bogus"], ["unrecognized arguments", "--bogus"]),
]


@pytest.mark.parametrize(
    "argv,expected", _USAGE_ERRORS, ids=[" ".join(a) or "-" for a, _ in _USAGE_ERRORS]
)
def test_usage_errors_are_one_line_naming_the_flag(capsys, argv, expected):
    line = _one_line_error(capsys, argv)
    assert line.startswith("jaxdist"), line
    for text in expected:
        assert text in line, (text, line)


def test_out_that_is_a_file_is_an_error(tmp_path, capsys):
    f = tmp_path / "not_a_folder"
    f.write_text("x")
    line = _one_line_error(capsys, ["run", "top1", "--out", str(f)])
    assert "argument --out" in line and str(f) in line
    # A folder under a file: the library refuses it; the CLI names the flag, not `out_dir`.
    line = _one_line_error(capsys, ["run", "top1", "--out", str(f / "sub")])
    assert line.startswith("jaxdist run: error: --out") and "out_dir" not in line
    assert str(f / "sub") in line


def test_library_errors_are_rewritten_with_the_flags(monkeypatch, capsys):
    import jaxdist.experiments

    def bad(*args, **kwargs):
        raise ValueError(
            "num_rounds must be >= 1 and seed\nmust be small (a shared seed), num_steps=7"
        )

    monkeypatch.setattr(jaxdist.experiments, "run_experiment", bad)
    line = _one_line_error(capsys, ["run", "top1"])
    assert line.startswith(
        "jaxdist run: error: --steps must be >= 1 and --seed must be small (a shared seed), "
        "--steps=7"
    )


def test_interrupt_is_one_line_saying_how_to_resume(monkeypatch, capsys):
    import jaxdist.experiments

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jaxdist.experiments, "run_experiment", interrupted)
    assert cli.main(["run", "top1"]) == 130
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "interrupted" in err and "resumes" in err


def test_plot_before_running_says_where_it_looked(tmp_path, capsys):
    out = str(tmp_path / "res")
    line = _one_line_error(capsys, ["plot", "top1", "--out", out])
    summary = os.path.join(out, "top1", "summary.json")
    assert "has not been run" in line and summary in line
    assert f"jaxdist run top1 --out {out}" in line


def _names(line: str, prefix: str) -> list[str]:
    assert line.startswith(prefix), line
    return [n.strip() for n in line[len(prefix) :].split(",")]


def test_list_shows_experiments_methods_and_compressor_factories(capsys):
    import jaxdist.compressors as jc
    import jaxdist.methods as jm

    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "experiments:"
    for name in EXPERIMENTS:
        assert any(line.startswith(f"  {name} ") for line in lines), name
    methods = _names(next(ln for ln in lines if ln.startswith("methods:")), "methods:")
    assert {"dgd", "dcgd", "diana", "ef14", "ef21", "marina"} <= set(methods)
    assert set(methods) <= set(jm.__all__) and all(m[0].islower() for m in methods)
    comps = _names(next(ln for ln in lines if ln.startswith("compressors:")), "compressors:")
    assert {"rand_k", "top_k", "perm_k", "qsgd", "natural", "identity"} <= set(comps)
    for helper in ("payload_bits", "perm_k_compress", "Compressor", "Packed"):
        assert helper not in comps
    if getattr(jc, "FACTORIES", None) is not None:
        assert comps == list(jc.FACTORIES)
    for name in comps:  # every listed name builds a Compressor
        assert callable(getattr(jc, name))


# ---------------------------------------------------------------------------------------------
# A real run of the top1, shared by the tests below. 1000 steps: DCGD-Top1's gap grows
# by (1 + 11γ/6)² per step, past 10⁶ times its start after about 650 steps, still finite.

STEPS = 1000


@pytest.fixture(scope="module")
def counterexample_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("results"))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(["run", "top1", "--out", out, "--steps", str(STEPS)])
    assert rc == 0
    return out, buf.getvalue()


def test_counterexample_reproduces_the_theory(counterexample_run):
    out, text = counterexample_run
    folder = os.path.join(out, "top1")
    assert "figure:" in text
    assert os.path.getsize(os.path.join(folder, "top1.png")) > 10_000
    n = len(EXPERIMENTS["top1"].arms)
    for i, arm in enumerate(EXPERIMENTS["top1"].arms, 1):
        assert f"arm {i}/{n} {arm.label}: ran {STEPS} steps in " in text
    with open(os.path.join(folder, "summary.json")) as f:
        arms = json.load(f)["arms"]
    # DCGD-Top1 grows at exactly (1 + 11γ/6)^k; error feedback converges (THEORY.md §3).
    traces = load_traces("top1", out)
    _, dcgd = traces["dcgd_top1"]
    gamma = arms["dcgd_top1"]["stepsize"]
    assert gamma == pytest.approx(0.005859, rel=1e-3)  # EF21's nonconvex theory step, Top-1
    growth = dcgd.f_gap[1:] / dcgd.f_gap[:-1]
    np.testing.assert_allclose(growth, (1 + 11 * gamma / 6) ** 20, rtol=1e-4)
    # EF21's PL theorem: f - f* decays at least as (1 - γμ)^T (up to the G^0 term of Ψ^0).
    mu = 7 / 6
    bound = (1 - arms["ef21_top1"]["stepsize"] * mu) ** STEPS
    for arm in ("ef14_top1", "ef21_top1"):
        assert 0 <= arms[arm]["final_rel_gap"] < min(bound, 1e-2), (arm, bound)
    # Exact bits: Top-1 in d = 3 sends one float32 and a 2-bit index per round.
    _, ef21 = traces["ef21_top1"]
    assert ef21.bits_up[-1] == STEPS * (32 + 2)


def test_counterexample_dcgd_top1_is_reported_diverged(counterexample_run):
    """DCGD-Top1 grows without bound (still finite here): the summary says 'diverged'.

    Relies on ``Trace.diverged`` covering growth, not only non-finite values.
    """
    out, text = counterexample_run
    with open(os.path.join(out, "top1", "summary.json")) as f:
        arms = json.load(f)["arms"]
    gap = arms["dcgd_top1"]["final_rel_gap"]
    assert np.isfinite(gap) and gap > 1e6  # grown, not overflowed
    assert arms["dcgd_top1"]["diverged"] is True
    for arm in ("ef14_top1", "ef21_top1", "dcgd_rand1"):
        assert arms[arm]["diverged"] is False, arm
    # The printed table: one row per arm, its last column "diverged" only for DCGD-Top1.
    labels = [a.label for a in EXPERIMENTS["top1"].arms]
    rows = {lab: ln for ln in text.splitlines() for lab in labels if ln.startswith(f"  {lab} ")}
    assert len(rows) == len(labels)
    for label, row in rows.items():
        assert (row.split()[-1] == "diverged") == label.startswith("DCGD, Top-1"), row


def test_rerun_loads_every_arm_without_building_the_problem(counterexample_run, monkeypatch):
    out, _ = counterexample_run
    import jaxdist.problems
    from jaxdist.experiments import _named

    def fail(*args, **kwargs):
        raise AssertionError("a finished, unchanged arm must not build the problem or run")

    monkeypatch.setattr(jaxdist.problems, "top1_counterexample", fail)
    monkeypatch.setattr(_named, "_run_arm", fail)
    folder = os.path.join(out, "top1")
    arm_files = [a.name + ".json" for a in EXPERIMENTS["top1"].arms]
    mtimes = {f: os.path.getmtime(os.path.join(folder, f)) for f in arm_files}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(["run", "top1", "--out", out, "--steps", str(STEPS), "--no-plot"])
    assert rc == 0
    text = buf.getvalue()
    n = len(arm_files)
    for i, arm in enumerate(EXPERIMENTS["top1"].arms, 1):
        assert f"arm {i}/{n} {arm.label}: loaded" in text
    assert "running" not in text and "problem" not in text
    for f, t in mtimes.items():
        assert os.path.getmtime(os.path.join(folder, f)) == t
    # In a fresh interpreter the loaded rerun does not even import JAX.
    res = _probe(["run", "top1", "--out", out, "--steps", str(STEPS), "--no-plot"])
    assert res["rc"] == 0 and res["out"].count(": loaded (") == n, res
    assert "jax" not in res["heavy"] and "optax" not in res["heavy"], res["heavy"]
    # The plot command reads the results back, without running anything.
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(["plot", "top1", "--out", out]) == 0
    assert buf.getvalue().strip() == os.path.join(folder, "top1.png")
