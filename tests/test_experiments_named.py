"""Named experiments: declarative arms, the configuration hash, resume, atomic results."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

import jaxdist
from jaxdist.experiments import EXPERIMENTS, Arm, Experiment, _named, run_experiment

STEPS = 20  # two logged points per arm: enough to exercise files, small enough to be quick


def _run(out, lines=None, **kwargs):
    log = (lambda s: None) if lines is None else lines.append
    return run_experiment("top1", str(out), num_steps=STEPS, log=log, **kwargs)


def _read(path):
    with open(path) as f:
        return f.read()


def _arm_files(out):
    folder = os.path.join(str(out), "top1")
    return {a.name: os.path.join(folder, a.name + ".json") for a in EXPERIMENTS["top1"].arms}


def _replace_arm(monkeypatch, index, **changes):
    exp = EXPERIMENTS["top1"]
    arms = list(exp.arms)
    arms[index] = dataclasses.replace(arms[index], **changes)
    monkeypatch.setitem(EXPERIMENTS, "top1", dataclasses.replace(exp, arms=tuple(arms)))
    return arms[index]


def _forbid_building(monkeypatch):
    import jaxdist.problems

    def fail(*args, **kwargs):
        raise AssertionError("must not build the problem or run")

    monkeypatch.setattr(jaxdist.problems, "top1_counterexample", fail)
    monkeypatch.setattr(_named, "_run_arm", fail)


# ---------------------------------------------------------------------------------------------
# Declarative arms and the hash.


def test_arms_are_json_data_and_the_catalogue_imports_no_jax():
    code = (
        "import json, sys\n"
        "from jaxdist.experiments import EXPERIMENTS\n"
        "h = {n: [e.config_hash(a) for a in e.arms] for n, e in EXPERIMENTS.items()}\n"
        "json.dumps([e.config(a) for e in EXPERIMENTS.values() for a in e.arms])\n"
        "print(json.dumps({'h': h, 'jax': 'jax' in sys.modules, 'np': 'numpy' in sys.modules}))\n"
    )
    res = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    assert res["jax"] is False and res["np"] is False
    # The same hashes in this process: they depend on the specs only.
    for name, exp in EXPERIMENTS.items():
        assert res["h"][name] == [exp.config_hash(a) for a in exp.arms]
        assert len(set(res["h"][name])) == len(exp.arms)


def test_hash_covers_the_whole_configuration(monkeypatch):
    exp = EXPERIMENTS["bits"]
    arm = exp.arms[2]  # DIANA, Rand-K
    base = exp.config_hash(arm)
    assert exp.config(arm)["method"] == {"name": "diana", "compressor": {"name": "rand_k", "k": 11}}
    variants = [
        (
            exp,
            dataclasses.replace(
                arm, method={"name": "dcgd", "compressor": arm.method["compressor"]}
            ),
        ),
        (
            exp,
            dataclasses.replace(
                arm, method={**arm.method, "compressor": {"name": "rand_k", "k": 12}}
            ),
        ),
        (exp, dataclasses.replace(arm, method={**arm.method, "alpha": 0.5})),
        (exp, dataclasses.replace(arm, method={**arm.method, "down": {"name": "rand_k", "k": 11}})),
        (exp, dataclasses.replace(arm, stepsize={"theory": "diana", "scale": 0.5})),
        (exp, dataclasses.replace(arm, stepsize=0.01)),
        (dataclasses.replace(exp, problem={**exp.problem, "dataset": "phishing"}), arm),
        (dataclasses.replace(exp, problem={**exp.problem, "num_workers": 10}), arm),
        (dataclasses.replace(exp, problem={**exp.problem, "split": "by_label"}), arm),
        (dataclasses.replace(exp, problem={**exp.problem, "key": 1}), arm),
        (dataclasses.replace(exp, log_every=20), arm),
    ]
    hashes = [e.config_hash(a) for e, a in variants]
    hashes += [exp.config_hash(arm, num_steps=1000), exp.config_hash(arm, seed=1)]
    assert base not in hashes and len(set(hashes)) == len(hashes)
    # Neither the label nor the target is part of it.
    assert exp.config_hash(dataclasses.replace(arm, label="renamed")) == base
    assert dataclasses.replace(exp, target=1e-3).config_hash(arm) == base
    # The version is.
    monkeypatch.setattr(jaxdist, "__version__", jaxdist.__version__ + ".post1")
    assert exp.config_hash(arm) != base


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"stepsize": {"theory": "adam"}}, "rule 'adam' is unknown"),
        ({"stepsize": {"theory": "diana", "scale": -1}}, "stepsize must be"),
        ({"stepsize": 0}, "number > 0"),
        ({"stepsize": float("nan")}, "number > 0"),
        ({"method": {"name": "dgd"}}, "needs the method's compressor"),
        ({"name": "a/b"}, "arm name"),
    ],
)
def test_bad_arm_specs_are_rejected_at_definition(changes, match):
    arm = EXPERIMENTS["bits"].arms[2]
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(arm, **changes)


def test_non_json_specs_are_rejected():
    with pytest.raises(TypeError, match="JSON"):
        Arm("x", "x", {"name": "dcgd", "compressor": {"name": "top_k", "k": object()}}, 0.1)
    with pytest.raises(TypeError, match="'name'"):
        Arm("x", "x", {"compressor": {"name": "top_k", "k": 1}}, 0.1)
    exp = EXPERIMENTS["top1"]
    with pytest.raises(ValueError, match="distinct"):
        dataclasses.replace(exp, arms=exp.arms + exp.arms[:1])
    with pytest.raises(ValueError, match="num_steps and log_every must be >= 1"):
        Experiment("e", "c", exp.problem, exp.arms, num_steps=15, log_every=0, target=1e-3)


def test_unknown_factories_are_a_value_error_listing_the_valid_ones(monkeypatch, tmp_path):
    _replace_arm(monkeypatch, 0, method={"name": "dcgd", "compressor": {"name": "top_kk", "k": 1}})
    with pytest.raises(ValueError, match=r"unknown compressor 'top_kk'; choose from .*top_k"):
        _run(tmp_path)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_steps": 0}, "num_steps must be a positive integer, got 0"),
        ({"num_steps": 2.0}, "num_steps must be a positive integer"),
        ({"num_steps": True}, "num_steps must be a positive integer"),
        ({"seed": -1}, r"seed must be an integer in \[0, 2\*\*32\)"),
        ({"seed": 2**32}, "seed must be"),
    ],
)
def test_run_experiment_rejects_bad_values_by_name(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        run_experiment("top1", str(tmp_path), log=lambda s: None, **kwargs)
    assert not os.listdir(tmp_path)  # nothing written
    with pytest.raises(ValueError, match=r"unknown experiment 'nope'; choose from bits"):
        run_experiment("nope", str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Resume.


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One real run of the top1: its folder, log lines and summary."""
    out = tmp_path_factory.mktemp("finished")
    lines = []
    summary = _run(out, lines)
    return out, lines, summary


def _copy(finished, tmp_path):
    shutil.copytree(finished[0] / "top1", tmp_path / "top1")
    return _arm_files(tmp_path)


def _quick_runner(finished, monkeypatch):
    """Replaces the compile-and-run of an arm by the finished trace (the files stay real)."""
    from jaxdist.experiments._trace import Trace

    traces = {
        name: Trace.from_dict(json.loads(_read(path))["trace"])
        for name, path in _arm_files(finished[0]).items()
    }
    calls = []

    def run_arm(arm, problem, num_steps, log_every, seed):
        calls.append((arm.name, num_steps, seed))
        return traces[arm.name], 0.01

    monkeypatch.setattr(_named, "_run_arm", run_arm)
    return calls


@pytest.fixture
def quick_runner(finished, monkeypatch):
    return _quick_runner(finished, monkeypatch)


def test_first_run_writes_hashed_configurations(finished):
    out, lines, summary = finished
    files = _arm_files(out)
    exp = EXPERIMENTS["top1"]
    n = len(exp.arms)
    assert sum("problem top1_counterexample" in s for s in lines) == 1
    for i, arm in enumerate(exp.arms, 1):
        assert any(s.startswith(f"[top1] arm {i}/{n} {arm.label}: ran ") for s in lines)
        saved = json.loads(_read(files[arm.name]))
        assert saved["config_hash"] == exp.config_hash(arm, num_steps=STEPS)
        assert saved["config"] == exp.config(arm, num_steps=STEPS)
        assert summary["arms"][arm.name]["status"] == "ran"
        assert summary["arms"][arm.name]["config_hash"] == saved["config_hash"]
    assert not [f for f in os.listdir(out / "top1") if f.endswith(".tmp")]


def test_resume_loads_unchanged_arms_and_reruns_edited_ones(finished, tmp_path, monkeypatch):
    first = finished[2]
    files = _copy(finished, tmp_path)
    exp = EXPERIMENTS["top1"]
    n = len(exp.arms)
    # Rerun: everything loaded, the problem is not even built.
    with monkeypatch.context() as m:
        _forbid_building(m)
        lines = []
        second = _run(tmp_path, lines)
    assert sum(": loaded (" in s for s in lines) == n
    for arm in exp.arms:
        a, b = first["arms"][arm.name], second["arms"][arm.name]
        assert b["status"] == "loaded"
        assert {k: v for k, v in a.items() if k != "status"} == {
            k: v for k, v in b.items() if k != "status"
        }

    # Edit the step size of one arm: that arm reruns for real (and says why), the others load.
    edited = _replace_arm(monkeypatch, 1, stepsize={"theory": "ef21", "scale": 0.5})
    before = {k: os.path.getmtime(p) for k, p in files.items()}
    lines = []
    third = _run(tmp_path, lines)
    assert any(f"arm 2/{n} {edited.label}: configuration changed (stepsize)" in s for s in lines)
    assert sum(": loaded (" in s for s in lines) == n - 1
    assert third["arms"][edited.name]["status"] == "ran"
    assert third["arms"][edited.name]["stepsize"] == pytest.approx(
        0.5 * first["arms"][edited.name]["stepsize"]
    )
    assert (
        third["arms"][edited.name]["final_rel_gap"] != first["arms"][edited.name]["final_rel_gap"]
    )
    for name, path in files.items():
        assert (os.path.getmtime(path) != before[name]) == (name == edited.name), name
    # ... and from then on the edited arm is loaded too.
    with monkeypatch.context() as m:
        _forbid_building(m)
        lines = []
        _run(tmp_path, lines)
    assert sum(": loaded (" in s for s in lines) == n


def test_other_seed_or_steps_or_force_rerun(finished, tmp_path, quick_runner):
    _copy(finished, tmp_path)
    names = [a.name for a in EXPERIMENTS["top1"].arms]
    for kwargs, why, call in [
        ({"seed": 1}, "configuration changed (seed), rerunning", (STEPS, 1)),
        ({"force": True}, "--force, rerunning", (STEPS, 0)),
        ({"num_steps": 2 * STEPS}, "configuration changed (num_steps), rerunning", (2 * STEPS, 0)),
    ]:
        quick_runner.clear()
        lines = []
        summary = run_experiment(
            "top1", str(tmp_path), log=lines.append, **{"num_steps": STEPS, **kwargs}
        )
        assert sum(s.endswith(why) for s in lines) == len(names), lines
        assert all(s["status"] == "ran" for s in summary["arms"].values())
        assert quick_runner == [(name, *call) for name in names]


def test_interrupted_run_resumes(finished, tmp_path, monkeypatch):
    real = _named._run_arm
    calls = []

    def interrupt_second(*args, **kwargs):
        calls.append(args[0].name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(_named, "_run_arm", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path)
    folder = tmp_path / "top1"
    arms = EXPERIMENTS["top1"].arms
    assert sorted(os.listdir(folder)) == [arms[0].name + ".json"]  # no temporary file, no summary
    quick = _quick_runner(finished, monkeypatch)
    lines = []
    summary = _run(tmp_path, lines)
    assert [s["status"] for s in summary["arms"].values()] == ["loaded"] + ["ran"] * (len(arms) - 1)
    assert [c[0] for c in quick] == [a.name for a in arms[1:]]
    assert (
        json.loads((folder / "summary.json").read_text())["arms"].keys() == summary["arms"].keys()
    )


def test_unreadable_or_interrupted_writes_never_corrupt(
    finished, tmp_path, quick_runner, monkeypatch
):
    files = _copy(finished, tmp_path)
    folder = tmp_path / "top1"
    arms = EXPERIMENTS["top1"].arms
    # A truncated file (a crash of some other writer) is rerun, not trusted.
    text = _read(files[arms[2].name])
    with open(files[arms[2].name], "w") as f:
        f.write(text[: len(text) // 2])
    lines = []
    summary = _run(tmp_path, lines)
    assert any(s.endswith("unreadable result file (JSONDecodeError), rerunning") for s in lines)
    assert summary["arms"][arms[2].name]["status"] == "ran"
    assert [c[0] for c in quick_runner] == [arms[2].name]
    json.loads(_read(files[arms[2].name]))

    # Interrupted while writing: the previous file stays whole and no temporary file is left.
    before = {k: _read(p) for k, p in files.items()}

    def interrupt_fsync(fd):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", interrupt_fsync)
        with pytest.raises(KeyboardInterrupt):
            _run(tmp_path, force=True)
    assert {k: _read(p) for k, p in files.items()} == before
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------
# The bits experiment, at a tiny size.


def test_bits_experiment_short(tmp_path):
    summary = run_experiment("bits", str(tmp_path), num_steps=STEPS, log=lambda s: None)
    arms = summary["arms"]
    d, k = 113, 11
    assert _named._MUSHROOMS_K == d // 10
    # 20 rounds: GD sends d float32 per round, Rand-K with a shared seed k floats, Top-K k floats
    # plus k indices of ceil(log2 d) = 7 bits.
    for s in arms.values():
        assert s["rounds_total"] == STEPS
    assert arms["gd"]["bits_up_total_per_worker"] == STEPS * d * 32
    assert arms["diana_rand_k"]["bits_up_total_per_worker"] == STEPS * k * 32
    assert arms["ef21_top_k"]["bits_up_total_per_worker"] == STEPS * k * (32 + 7)
    # Theory step sizes: EF21's is far below GD's 1/L, which the last arm uses.
    assert arms["ef21_top_k_gd_step"]["stepsize"] == arms["gd"]["stepsize"]
    assert arms["ef21_top_k"]["stepsize"] < arms["gd"]["stepsize"] / 10
    csv = (tmp_path / "bits" / "summary.csv").read_text().splitlines()
    assert csv[0].startswith("arm,label,stepsize") and len(csv) == 1 + len(arms)
