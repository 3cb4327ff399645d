"""Named experiments: each reproduces a claim of the lecture with one command.

An experiment is a list of :class:`Arm` values (one method with its theory step size on one
problem); :func:`run_experiment` runs every arm with :func:`jaxdist.run`, writes one JSON file
per arm (so an interrupted experiment resumes where it stopped: finished arms are loaded, not
rerun), a CSV summary, and a summary of rounds and bits needed to reach the target accuracy.

Experiments:

* ``bits`` (lecture §1, "bits, not iterations"): ℓ2-logistic regression on the shipped LIBSVM
  *mushrooms* data split over M = 100 workers; GD, DCGD and DIANA with Rand-K (K = d/10, shared
  seed so no index bits), EF21 with Top-K, each at its theory step size (and EF21 once more at
  GD's step 1/L, beyond its theory, as used in practice). DIANA needs more rounds than GD but far
  fewer bits; DCGD stalls at a neighbourhood; EF21's theory step is very conservative.
* ``counterexample`` (lecture §3): the 3-worker Top-1 example of Beznosikov et al. DCGD-Top1
  diverges at rate exactly 1 + 11γ/6, EF14 and EF21 converge, DCGD with unbiased Rand-1 converges.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from jaxdist import compressors as jc
from jaxdist import methods, problems, theory
from jaxdist.experiments._runner import run
from jaxdist.experiments._trace import Trace

__all__ = ["Arm", "Experiment", "EXPERIMENTS", "load_traces", "run_experiment", "summarize"]


@dataclasses.dataclass(frozen=True)
class Arm:
    """One curve of an experiment: a method, its step size and a short label."""

    name: str
    label: str
    make: Callable[[], optax.GradientTransformation]
    stepsize: float


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A named experiment: a problem, its arms, the run length and the target accuracy."""

    name: str
    claim: str
    problem: Callable[[], problems.Problem]
    arms: Callable[[problems.Problem], list[Arm]]
    num_steps: int
    log_every: int
    target: float  # relative accuracy (f(x) − f*) / (f(x⁰) − f*) that counts as "solved"


def _bits_problem() -> problems.Problem:
    return problems.logistic_regression("mushrooms", 100, l2=1e-2)


def _bits_arms(p: problems.Problem) -> list[Arm]:
    d, m = p.dim, p.num_workers
    k = max(1, d // 10)
    rand = jc.rand_k(k)
    top = jc.top_k(k)
    omega = rand.omega(d)
    return [
        Arm("gd", "GD (no compression)", methods.dgd, float(theory.gd_stepsize(p.L))),
        Arm(
            "dcgd_rand_k",
            f"DCGD, Rand-{k}",
            lambda: methods.dcgd(rand),
            float(theory.dcgd_stepsize(p.L, p.L_max, omega, m)),
        ),
        Arm(
            "diana_rand_k",
            f"DIANA, Rand-{k}",
            lambda: methods.diana(rand),
            float(theory.diana_stepsize(p.L, p.L_max, omega, m)),
        ),
        Arm(
            "ef21_top_k",
            f"EF21, Top-{k}, theory step",
            lambda: methods.ef21(top),
            float(theory.ef21_stepsize(p.L, p.L_tilde, top.alpha(d), p.mu)),
        ),
        Arm(
            "ef21_top_k_gd_step",
            f"EF21, Top-{k}, GD step 1/L",
            lambda: methods.ef21(top),
            float(theory.gd_stepsize(p.L)),
        ),
    ]


def _counterexample_problem() -> problems.Problem:
    return problems.top1_counterexample()


def _counterexample_arms(p: problems.Problem) -> list[Arm]:
    top1 = jc.top_k(1)
    rand1 = jc.rand_k(1)
    ef21_gamma = float(theory.ef21_stepsize(p.L, p.L_tilde, top1.alpha(p.dim)))
    return [
        Arm("dcgd_top1", "DCGD, Top-1 (diverges)", lambda: methods.dcgd(top1), ef21_gamma),
        Arm("ef14_top1", "EF14, Top-1", lambda: methods.ef14(top1), ef21_gamma),
        Arm("ef21_top1", "EF21, Top-1", lambda: methods.ef21(top1), ef21_gamma),
        Arm(
            "dcgd_rand1",
            "DCGD, Rand-1 (unbiased)",
            lambda: methods.dcgd(rand1),
            float(theory.dcgd_stepsize(p.L, p.L_max, rand1.omega(p.dim), p.num_workers)),
        ),
    ]


EXPERIMENTS: dict[str, Experiment] = {
    "bits": Experiment(
        name="bits",
        claim="Per transmitted bit, DIANA with Rand-K beats uncompressed GD on many workers; "
        "DCGD stalls at a neighbourhood (lecture §1).",
        problem=_bits_problem,
        arms=_bits_arms,
        num_steps=3000,
        log_every=10,
        target=1e-6,
    ),
    "counterexample": Experiment(
        name="counterexample",
        claim="DCGD with Top-1 diverges on 3 workers; error feedback (EF14, EF21) fixes it "
        "(lecture §3).",
        problem=_counterexample_problem,
        arms=_counterexample_arms,
        num_steps=2000,
        log_every=10,
        target=1e-8,
    ),
}


def summarize(trace: Trace, target: float) -> dict[str, Any]:
    """Rounds and exact bits per worker until ``f_gap <= target · f_gap[0]`` (None if never)."""
    gap = np.asarray(trace.f_gap, np.float64)
    rel = gap / gap[0]
    hit = np.flatnonzero(np.isfinite(rel) & (rel <= target))
    out: dict[str, Any] = {
        "final_rel_gap": float(rel[-1]),
        "diverged": bool(np.asarray(trace.diverged).any()),
        "rounds_total": int(trace.rounds[-1]),
        "bits_up_total_per_worker": int(trace.bits_up[-1]),
    }
    if hit.size:
        i = int(hit[0])
        out.update(
            reached=True,
            rounds_to_target=int(trace.rounds[i]),
            bits_up_to_target=int(trace.bits_up[i]),
            bits_down_to_target=int(trace.bits_down[i]),
        )
    else:
        out.update(
            reached=False, rounds_to_target=None, bits_up_to_target=None, bits_down_to_target=None
        )
    return out


def run_experiment(
    name: str,
    out_dir: str = "results",
    *,
    force: bool = False,
    num_steps: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs the named experiment, resuming from the per-arm files already in ``out_dir``.

    Args:
      name: a key of :data:`EXPERIMENTS`.
      out_dir: results folder; the experiment writes ``<out_dir>/<name>/<arm>.json``,
        ``summary.json`` and ``summary.csv``.
      force: rerun arms whose results exist.
      num_steps: override the experiment's number of steps (a multiple of its ``log_every``).
      seed: PRNG seed of the runs.
      log: where progress lines go.

    Returns:
      The summary: per arm, the step size and the rounds / bits to reach the target accuracy.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose from {sorted(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
    steps = exp.num_steps if num_steps is None else int(num_steps)
    if steps < exp.log_every or steps % exp.log_every:
        raise ValueError(f"num_steps must be a positive multiple of {exp.log_every}, got {steps}")
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    t0 = time.perf_counter()
    problem = exp.problem()
    log(f"[{name}] {exp.claim}")
    log(
        f"[{name}] problem {problem.name}: M={problem.num_workers}, d={problem.dim}, "
        f"L={problem.L:.4g}, mu={problem.mu:.4g} ({time.perf_counter() - t0:.1f} s)"
    )
    arms = exp.arms(problem)
    summary: dict[str, Any] = {
        "experiment": name,
        "claim": exp.claim,
        "target": exp.target,
        "num_steps": steps,
        "seed": seed,
        "arms": {},
    }
    for i, arm in enumerate(arms, 1):
        path = os.path.join(folder, f"{arm.name}.json")
        meta_ok = False
        if os.path.exists(path) and not force:
            with open(path) as f:
                saved = json.load(f)
            meta_ok = saved.get("num_steps") == steps and saved.get("seed") == seed
        if meta_ok:
            trace = Trace.from_dict(saved["trace"])
            log(f"[{name}] {i}/{len(arms)} {arm.label}: loaded from {path}")
        else:
            t = time.perf_counter()
            tx = optax.chain(arm.make(), optax.sgd(arm.stepsize))
            trace = run(tx, problem, steps, jax.random.key(seed), log_every=exp.log_every)
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(
                    {
                        "arm": arm.name,
                        "label": arm.label,
                        "stepsize": arm.stepsize,
                        "num_steps": steps,
                        "seed": seed,
                        "trace": trace.to_dict(),
                    },
                    f,
                )
            os.replace(tmp, path)  # atomic: a killed run never leaves a half-written result
            log(
                f"[{name}] {i}/{len(arms)} {arm.label}: {steps} steps in "
                f"{time.perf_counter() - t:.1f} s"
            )
        s = summarize(trace, exp.target)
        s.update(label=arm.label, stepsize=arm.stepsize)
        summary["arms"][arm.name] = s
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    _write_summary_csv(summary, os.path.join(folder, "summary.csv"))
    return summary


def _write_summary_csv(summary: dict[str, Any], path: str) -> None:
    cols = [
        "arm",
        "label",
        "stepsize",
        "reached",
        "rounds_to_target",
        "bits_up_to_target",
        "bits_down_to_target",
        "final_rel_gap",
        "diverged",
    ]
    with open(path, "w") as f:
        f.write(",".join(cols) + "\n")
        for arm, s in summary["arms"].items():
            row = [arm] + [s.get(c) for c in cols[1:]]
            f.write(",".join("" if v is None else str(v) for v in row) + "\n")


def load_traces(name: str, out_dir: str = "results") -> dict[str, tuple[str, Trace]]:
    """Loads the per-arm traces of a finished experiment: ``{arm: (label, trace)}``."""
    folder = os.path.join(out_dir, name)
    with open(os.path.join(folder, "summary.json")) as f:
        order = list(json.load(f)["arms"])
    out = {}
    for arm in order:
        with open(os.path.join(folder, f"{arm}.json")) as f:
            saved = json.load(f)
        out[arm] = (saved["label"], Trace.from_dict(saved["trace"]))
    return out
