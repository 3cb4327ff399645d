"""The lecture's claims as checked experiments: every claim passes at the quick size, a check
given wrong data fails, units resume and never load stale results, the index pages and the CLI."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os

import pytest

from jaxdist import cli
from jaxdist.experiments import Context, reproduce
from jaxdist.experiments.claims import CLAIMS, get_claim


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("claims"))
    lines: list[str] = []
    index = reproduce(out, quick=True, log=lines.append)
    return out, index, lines


def _results(out, name):
    with open(os.path.join(out, name, "results.json")) as f:
        return json.load(f)


def test_every_claim_passes_at_the_quick_size(quick):
    out, index, lines = quick
    assert list(index) == list(CLAIMS)
    for name, entry in index.items():
        assert "error" not in entry, (name, entry.get("traceback"))
        assert entry["verdict"]["passed"], (name, entry["verdict"]["details"])
        assert entry["figures"], name
        for fig in entry["figures"]:
            assert os.path.getsize(os.path.join(out, fig)) > 10_000, fig
        assert {f.rsplit(".", 1)[1] for f in entry["figures"]} == {"png", "pdf"}
    # progress: one line per claim with its position, and a verdict line each
    for i, name in enumerate(CLAIMS, 1):
        assert any(line.startswith(f"[{i}/{len(CLAIMS)}] {name} ") for line in lines)
        assert any(line.startswith(f"[{name}] PASS: ") for line in lines)


def test_index_pages_list_every_claim_and_verdict(quick):
    out, index, _ = quick
    with open(os.path.join(out, "index.md")) as f:
        md = f.read()
    with open(os.path.join(out, "index.html")) as f:
        page = f.read()
    for name, entry in index.items():
        assert f"## {name}" in md and f"id='{name}'" in page
        for fig in entry["figures"]:
            if fig.endswith(".png"):
                assert f"]({fig})" in md and f"src='{fig}'" in page
    assert md.count("**PASS**") == len(CLAIMS)


def _break(name, results):
    """Wrong data for each claim's check: the claim's key number moved off its prediction."""
    r = copy.deepcopy(results)
    if name == "compressor_constants":
        r["rows"][0]["measured"] *= 1.2  # rand_k's ω off by 20 %
    elif name == "counterexample":
        r["lecture"]["arms"]["dcgd_top1"]["stepsize"] *= 1.5  # growth no longer 1 + 11γ/3
    elif name == "local_steps":
        arms = r["arms"]
        arms["local_gd_H32"]["fixed_point_rel"], arms["local_gd_H8"]["fixed_point_rel"] = (
            arms["local_gd_H8"]["fixed_point_rel"],
            arms["local_gd_H32"]["fixed_point_rel"],
        )
    elif name == "acceleration":
        for p in r["arms"]["nesterov"]:
            p["rounds"] = int(p["rounds"] * p["kappa"] ** 0.3)  # slope 0.8, not 0.5
    elif name == "bits_vs_workers":
        for p in r["points"]:  # DIANA sends as many bits as GD: no gain anywhere
            p["diana_rand_k"]["bits_up"] = p["gd"]["bits_up"]
    elif name == "compressed_gd":
        arm = r["arms"]["dcgd"]
        arm["dist_mean"] = [10 * v for v in arm["dist_mean"]]  # a plateau 10× above the radius
    elif name == "shared_randomness":
        for row in r["rows"]:  # shared-key Rand-K averaged down by M, as if independent
            if row["kind"] == "shared":
                row["measured"] /= 4
    elif name == "bidirectional":
        r["arms"]["ef21_p"]["bits_down"] = r["arms"]["diana"]["bits_down"]  # no downlink saving
    elif name == "topology":
        for row in r["per_round"]:  # Perm-K's ledger charging the whole vector, not a block
            if row["method"] == "diana_perm_k":
                row["bits_up"] = [0, row["d"] * 32]
                row["bits_up_total"] = [0, row["M"] * row["d"] * 32]
    elif name == "neural_network":
        ef = r["arms"]["ef14"]  # EF14 trained no better than Top-5 without error feedback
        ef["test_accuracy"] = r["arms"]["top_k"]["test_accuracy"]
    elif name == "similarity":
        r["deltas"] = [row[:] for row in [r["deltas"][0]] * len(r["deltas"])]  # δ flat in n
    else:  # pragma: no cover - a new claim must add its wrong data here
        raise AssertionError(f"no wrong data for claim {name!r}")
    return r


@pytest.mark.parametrize("name", list(CLAIMS))
def test_a_check_fails_on_wrong_data(quick, name):
    out, _, _ = quick
    claim = get_claim(name)
    results = _results(out, name)
    assert claim.check(results).passed
    broken = claim.check(_break(name, results))
    assert not broken.passed and "FAIL" in broken.text and broken.summary.startswith("FAIL")


def test_a_rerun_loads_every_unit(quick):
    out, _, _ = quick
    lines: list[str] = []
    index = reproduce(out, quick=True, plots=False, log=lines.append)
    for name, entry in index.items():
        assert entry["units"]["ran"] == 0 and entry["units"]["loaded"] >= 1, (name, entry)
        assert entry["verdict"]["passed"]


def test_units_resume_after_an_interrupt_and_never_load_stale_results(tmp_path):
    calls = []

    def unit(value):
        calls.append(value)
        return {"value": value}

    ctx = Context("demo", str(tmp_path / "demo"), "quick", log=lambda _: None)
    assert ctx.unit("a", {"x": 1}, lambda: unit(1)) == {"value": 1}

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ctx.unit("b", {"x": 2}, interrupted)
    assert sorted(os.listdir(tmp_path / "demo" / "units")) == ["a.json"]  # nothing half-written
    ctx = Context("demo", str(tmp_path / "demo"), "quick", log=lambda _: None)
    assert ctx.unit("a", {"x": 1}, lambda: unit(99)) == {"value": 1}  # loaded, not rerun
    assert ctx.unit("b", {"x": 2}, lambda: unit(2)) == {"value": 2}
    assert calls == [1, 2] and ctx.units_loaded == 1 and ctx.units_run == 1
    # an edited configuration, another seed, size or claim version: rerun, never loaded stale
    assert ctx.unit("a", {"x": 3}, lambda: unit(3)) == {"value": 3}
    for kwargs in ({"seed": 1}, {"version": 2}):
        other = Context("demo", str(tmp_path / "demo"), "quick", log=lambda _: None, **kwargs)
        assert other.unit("a", {"x": 3}, lambda: unit(4)) == {"value": 4}
    full = Context("demo", str(tmp_path / "demo"), "full", log=lambda _: None)
    assert full.unit("a", {"x": 3}, lambda: unit(5)) == {"value": 5}
    forced = Context("demo", str(tmp_path / "demo"), "full", force=True, log=lambda _: None)
    assert forced.unit("a", {"x": 3}, lambda: unit(6)) == {"value": 6}
    assert calls == [1, 2, 3, 4, 4, 5, 6]  # every changed key reran its unit


def test_a_failing_claim_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    import jaxdist.experiments.claims as claims_pkg

    real = claims_pkg.get_claim

    def broken(name):
        claim = real(name)
        if name == "compressor_constants":
            import dataclasses

            def run(ctx):
                raise RuntimeError("boom")

            return dataclasses.replace(claim, run=run)
        return claim

    monkeypatch.setattr(claims_pkg, "get_claim", broken)
    index = reproduce(
        str(tmp_path),
        names=["compressor_constants", "acceleration"],
        quick=True,
        plots=False,
        log=lambda _: None,
    )
    assert index["compressor_constants"]["error"] == "RuntimeError: boom"
    assert index["acceleration"]["verdict"]["passed"]
    with open(tmp_path / "index.md") as f:
        assert "**ERROR**" in f.read()


def test_cli_reproduce_and_run_a_claim(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert cli.main(["reproduce", "--quick", "--only", "acceleration", "--out", out]) == 0
    text = capsys.readouterr().out
    assert "acceleration             PASS" in text and "index.html" in text
    assert os.path.isfile(os.path.join(out, "index.html"))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(["run", "acceleration", "--quick", "--out", out, "--no-plot"]) == 0
    assert "[acceleration] PASS" in buf.getvalue()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["reproduce", "--only", "nope"], "argument --only: unknown claim 'nope'; choose from "),
        (["run", "nope"], "unknown experiment or claim 'nope'"),
        (["reproduce", "--seed", "-1"], "argument --seed"),
        (["run", "counterexample", "--steps", "5"], "argument --steps: sets the length of the"),
    ],
)
def test_cli_errors_are_one_line(capsys, argv, expected):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


def test_cli_plot_redraws_a_claim_from_its_results(quick, capsys):
    out, index, _ = quick
    png = os.path.join(out, index["acceleration"]["figures"][0])
    os.remove(png)
    assert cli.main(["plot", "acceleration", "--out", out]) == 0
    assert png in capsys.readouterr().out and os.path.getsize(png) > 10_000
    assert cli.main(["plot", "acceleration", "--out", os.path.join(out, "nowhere")]) == 2
    assert "has not been run into" in capsys.readouterr().err
