"""Named experiments: each reproduces a claim of the lecture with one command.

An experiment is data: a problem spec, a tuple of :class:`Arm` values (one method, its
compressor(s) and its step size rule, each a JSON-serialisable spec) and the run length.
:func:`run_experiment` runs every arm with :func:`jaxdist.run`, writes one JSON file per arm, a
CSV summary, and a summary of rounds and bits needed to reach the target accuracy.

**Resume.** Every arm's whole configuration (method and its arguments, compressors, step size
rule, problem spec, number of steps, ``log_every``, seed, jaxdist version) is hashed *without*
building the problem or compiling anything (:meth:`Experiment.config_hash`), and the hash is
stored in the arm's file. A finished arm whose hash matches is loaded (the problem is not even
built when every arm is loaded); an arm whose configuration changed is rerun, never loaded from
the stale file. Files are written atomically (a temporary file, then ``os.replace``), so an
interrupted experiment resumes where it stopped.

This module imports neither JAX nor the rest of jaxdist until an experiment runs, so the
``jaxdist`` command can list the experiments (names and claims) instantly.

Experiments:

* ``bits`` (lecture §1, "bits, not iterations"): ℓ2-logistic regression on the shipped LIBSVM
  *mushrooms* data split over M = 100 workers; GD, DCGD and DIANA with Rand-K (K = d/10, shared
  seed so no index bits), EF21 with Top-K, each at its theory step size (and EF21 once more at
  GD's step 1/L, beyond its theory, as used in practice). DIANA needs more rounds than GD but far
  fewer bits; DCGD stalls at a neighbourhood; EF21's theory step is very conservative.
* ``top1`` (lecture §3): the 3-worker Top-1 example of Beznosikov et al. DCGD-Top1
  diverges at rate exactly 1 + 11γ/6, EF14 and EF21 converge, DCGD with unbiased Rand-1 converges.

Example::

    >>> from jaxdist.experiments import EXPERIMENTS
    >>> exp = EXPERIMENTS["top1"]
    >>> [arm.name for arm in exp.arms]
    ['dcgd_top1', 'ef14_top1', 'ef21_top1', 'dcgd_rand1']
    >>> exp.arms[0].method
    {'name': 'dcgd', 'compressor': {'name': 'top_k', 'k': 1}}
    >>> h = exp.config_hash(exp.arms[0])
    >>> len(h), h == exp.config_hash(exp.arms[0]), h == exp.config_hash(exp.arms[0], seed=1)
    (16, True, False)
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from jaxdist.experiments._claims import atomic_write as _write_atomic
from jaxdist.experiments._claims import config_hash as _hash

__all__ = ["Arm", "Experiment", "EXPERIMENTS", "load_traces", "run_experiment", "summarize"]

# Part of every configuration hash: bump it when the per-arm file layout or the meaning of a
# saved trace changes, so that results written before are rerun, not loaded.
_RESULTS_FORMAT = 2
_SEED_LIMIT = 2**32

Spec = Mapping[str, Any]  # a JSON object: strings, numbers, booleans, lists, nested objects


# ---------------------------------------------------------------------------------------------
# Step size rules: name -> (needs a compressor, gamma(problem, compressor)). Imports are lazy.


def _theory():
    from jaxdist import theory

    return theory


_STEPSIZE_RULES: dict[str, tuple[bool, Callable[[Any, Any], Any]]] = {
    "gd": (False, lambda p, c: _theory().gd_stepsize(p.L)),
    "dcgd": (
        True,
        lambda p, c: _theory().dcgd_stepsize(p.L, p.L_max, c.omega(p.dim), p.num_workers),
    ),
    "diana": (
        True,
        lambda p, c: _theory().diana_stepsize(p.L, p.L_max, c.omega(p.dim), p.num_workers),
    ),
    "ef21": (True, lambda p, c: _theory().ef21_stepsize(p.L, p.L_tilde, c.alpha(p.dim))),
    "ef21_pl": (
        True,
        lambda p, c: _theory().ef21_stepsize(p.L, p.L_tilde, c.alpha(p.dim), p.mu),
    ),
}


def _check_json(what: str, value: Any) -> None:
    try:
        json.dumps(value, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must be JSON-serialisable (strings, numbers, dicts): {e}") from e


def _check_spec(what: str, spec: Any) -> None:
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise TypeError(f"{what} must be a dict with a 'name' (a factory name), got {spec!r}")
    _check_json(what, spec)


@dataclasses.dataclass(frozen=True)
class Arm:
    """One curve of an experiment, declared as JSON-serialisable data.

    Args:
      name: the arm's file name stem (``<out_dir>/<experiment>/<name>.json``).
      label: the legend label (not part of the configuration hash).
      method: the method spec ``{"name": factory, "compressor": spec, **kwargs}``: a factory of
        :mod:`jaxdist.methods` (``"dgd"``, ``"dcgd"``, ``"diana"``, ``"ef21"``, ...), its
        compressor (passed positionally) and keyword arguments. Any dict value with a
        ``"name"`` is a compressor spec ``{"name": factory, **kwargs}`` of
        :mod:`jaxdist.compressors` (e.g. ``{"name": "rand_k", "k": 11}``, or ``"down"``).
        The method's ``key`` defaults to the run's seed.
      stepsize: a positive number, or a theory rule ``{"theory": rule, "scale": s}`` evaluated
        on the problem's constants and the method's compressor; rules: ``"gd"`` (1/L),
        ``"dcgd"``, ``"diana"`` (need ω), ``"ef21"``, ``"ef21_pl"`` (need α); ``scale``
        (default 1) multiplies the rule.

    Returns:
      The arm (a frozen dataclass). Its whole configuration is hashed by
      :meth:`Experiment.config_hash`.
    """

    name: str
    label: str
    method: Spec
    stepsize: float | Spec

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"arm name must be letters, digits and '_', got {self.name!r}")
        _check_spec(f"arm {self.name!r}: method", self.method)
        for key, value in self.method.items():
            if isinstance(value, Mapping):
                _check_spec(f"arm {self.name!r}: method argument {key!r}", value)
        s = self.stepsize
        if isinstance(s, Mapping):
            _check_json(f"arm {self.name!r}: stepsize", s)
            rule = s.get("theory")
            if rule not in _STEPSIZE_RULES:
                raise ValueError(
                    f"arm {self.name!r}: stepsize rule {rule!r} is unknown; choose from "
                    f"{sorted(_STEPSIZE_RULES)} or give a number"
                )
            if _STEPSIZE_RULES[rule][0] and not isinstance(self.method.get("compressor"), Mapping):
                raise ValueError(
                    f"arm {self.name!r}: stepsize rule {rule!r} needs the method's compressor"
                )
            scale = s.get("scale", 1)
            if set(s) - {"theory", "scale"} or not _positive_number(scale):
                raise ValueError(
                    f"arm {self.name!r}: stepsize must be {{'theory': rule, 'scale': s > 0}}, "
                    f"got {dict(s)!r}"
                )
        elif not _positive_number(s):
            raise ValueError(f"arm {self.name!r}: stepsize must be a number > 0, got {s!r}")


def _positive_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A named experiment: a problem spec, its arms, the run length and the target accuracy.

    Args:
      name: the experiment's name (its results folder).
      claim: the one-line claim of the lecture it reproduces.
      problem: the problem spec ``{"name": factory, **kwargs}``: a factory of
        :mod:`jaxdist.problems` and its keyword arguments (data set, number of workers, split,
        the split's seed ``key``, ...).
      arms: the curves, with distinct names.
      num_steps: default number of steps.
      log_every: a point is logged every ``log_every`` steps (and at the last).
      target: the relative accuracy ``(f(x) − f*) / (f(x⁰) − f*)`` that counts as solved.

    Returns:
      The experiment (a frozen dataclass).
    """

    name: str
    claim: str
    problem: Spec
    arms: tuple[Arm, ...]
    num_steps: int
    log_every: int
    target: float

    def __post_init__(self) -> None:
        _check_spec(f"experiment {self.name!r}: problem", self.problem)
        names = [arm.name for arm in self.arms]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"experiment {self.name!r}: arm names must be distinct, got {names}")
        if self.log_every < 1 or self.num_steps < 1:
            raise ValueError(f"experiment {self.name!r}: num_steps and log_every must be >= 1")

    def config(self, arm: Arm, *, num_steps: int | None = None, seed: int = 0) -> dict[str, Any]:
        """The whole configuration of one arm's run, as JSON data (what the hash covers).

        Args:
          arm: one of :attr:`arms`.
          num_steps: number of steps (default :attr:`num_steps`).
          seed: the run's seed.

        Returns:
          A dict: results format, jaxdist version, experiment and arm names, method spec, step
          size spec, problem spec, number of steps, ``log_every`` and seed. The label and the
          target are not part of it (changing them does not rerun anything).
        """
        from jaxdist import __version__

        return copy.deepcopy(
            {
                "format": _RESULTS_FORMAT,
                "jaxdist": __version__,
                "experiment": self.name,
                "arm": arm.name,
                "method": dict(arm.method),
                "stepsize": dict(arm.stepsize)
                if isinstance(arm.stepsize, Mapping)
                else arm.stepsize,
                "problem": dict(self.problem),
                "num_steps": self.num_steps if num_steps is None else int(num_steps),
                "log_every": self.log_every,
                "seed": int(seed),
            }
        )

    def config_hash(self, arm: Arm, *, num_steps: int | None = None, seed: int = 0) -> str:
        """A 16-hex-digit SHA-256 of :meth:`config` (canonical JSON): the key of resume.

        Computed from the specs alone: nothing is built or compiled.

        Args:
          arm: one of :attr:`arms`.
          num_steps: number of steps (default :attr:`num_steps`).
          seed: the run's seed.

        Returns:
          The hash, a string.
        """
        return _hash(self.config(arm, num_steps=num_steps, seed=seed))


# ---------------------------------------------------------------------------------------------
# The experiments. Rand-K / Top-K use K = d // 10 of the mushrooms problem (d = 112 features
# + a bias column = 113, so K = 11); tests check it against the built problem.

_MUSHROOMS_K = 11
_RAND_K = {"name": "rand_k", "k": _MUSHROOMS_K}
_TOP_K = {"name": "top_k", "k": _MUSHROOMS_K}
_TOP1 = {"name": "top_k", "k": 1}
_RAND1 = {"name": "rand_k", "k": 1}

EXPERIMENTS: dict[str, Experiment] = {
    "bits": Experiment(
        name="bits",
        claim="Per transmitted bit, DIANA with Rand-K beats uncompressed GD on many workers; "
        "DCGD stalls at a neighbourhood (lecture §1).",
        problem={
            "name": "logistic_regression",
            "dataset": "mushrooms",
            "num_workers": 100,
            "split": "iid",
            "key": 0,  # the split's seed
            "l2": 1e-2,
        },
        arms=(
            Arm("gd", "GD (no compression)", {"name": "dgd"}, {"theory": "gd"}),
            Arm(
                "dcgd_rand_k",
                f"DCGD, Rand-{_MUSHROOMS_K}",
                {"name": "dcgd", "compressor": _RAND_K},
                {"theory": "dcgd"},
            ),
            Arm(
                "diana_rand_k",
                f"DIANA, Rand-{_MUSHROOMS_K}",
                {"name": "diana", "compressor": _RAND_K},
                {"theory": "diana"},
            ),
            Arm(
                "ef21_top_k",
                f"EF21, Top-{_MUSHROOMS_K}, theory step",
                {"name": "ef21", "compressor": _TOP_K},
                {"theory": "ef21_pl"},
            ),
            Arm(
                "ef21_top_k_gd_step",
                f"EF21, Top-{_MUSHROOMS_K}, GD step 1/L",
                {"name": "ef21", "compressor": _TOP_K},
                {"theory": "gd"},
            ),
        ),
        num_steps=3000,
        log_every=10,
        target=1e-6,
    ),
    "top1": Experiment(
        name="top1",
        claim="DCGD with Top-1 diverges on 3 workers; error feedback (EF14, EF21) fixes it "
        "(lecture §3).",
        problem={"name": "top1_counterexample", "scaling": "paper", "t": 1.0},
        arms=(
            # The first three share EF21's (nonconvex) theory step for Top-1.
            Arm(
                "dcgd_top1",
                "DCGD, Top-1 (diverges)",
                {"name": "dcgd", "compressor": _TOP1},
                {"theory": "ef21"},
            ),
            Arm(
                "ef14_top1",
                "EF14, Top-1",
                {"name": "ef14", "compressor": _TOP1},
                {"theory": "ef21"},
            ),
            Arm(
                "ef21_top1",
                "EF21, Top-1",
                {"name": "ef21", "compressor": _TOP1},
                {"theory": "ef21"},
            ),
            Arm(
                "dcgd_rand1",
                "DCGD, Rand-1 (unbiased)",
                {"name": "dcgd", "compressor": _RAND1},
                {"theory": "dcgd"},
            ),
        ),
        num_steps=2000,
        log_every=10,
        target=1e-8,
    ),
}


# ---------------------------------------------------------------------------------------------
# Building an arm from its specs (imports JAX).


def _factory(module: Any, what: str, name: str) -> Callable[..., Any]:
    public = getattr(module, "__all__", ())
    if name not in public or not callable(getattr(module, name, None)):
        valid = sorted(n for n in public if n[:1].islower() and callable(getattr(module, n)))
        raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(valid)}")
    return getattr(module, name)


def _build_compressor(spec: Spec) -> Any:
    from jaxdist import compressors

    kwargs = {k: _build_value(v) for k, v in spec.items() if k != "name"}
    return _factory(compressors, "compressor", spec["name"])(**kwargs)


def _build_value(value: Any) -> Any:
    return _build_compressor(value) if isinstance(value, Mapping) else value


def _build_method(spec: Spec, seed: int) -> Any:
    from jaxdist import methods

    factory = _factory(methods, "method", spec["name"])
    args = [_build_value(spec["compressor"])] if "compressor" in spec else []
    kwargs = {k: _build_value(v) for k, v in spec.items() if k not in ("name", "compressor")}
    if "key" not in kwargs and "key" in inspect.signature(factory).parameters:
        kwargs["key"] = seed  # the method's own randomness follows the run's seed
    return factory(*args, **kwargs)


def _build_problem(spec: Spec) -> Any:
    from jaxdist import problems

    kwargs = {k: v for k, v in spec.items() if k != "name"}
    return _factory(problems, "problem", spec["name"])(**kwargs)


def _stepsize(arm: Arm, problem: Any) -> float:
    s = arm.stepsize
    if not isinstance(s, Mapping):
        return float(s)
    needs_compressor, rule = _STEPSIZE_RULES[s["theory"]]
    compressor = _build_compressor(arm.method["compressor"]) if needs_compressor else None
    return float(rule(problem, compressor)) * float(s.get("scale", 1))


def _run_arm(arm: Arm, problem: Any, num_steps: int, log_every: int, seed: int) -> tuple:
    """Builds the arm's method on the built problem and runs it: ``(trace, stepsize)``."""
    import jax
    import optax

    from jaxdist.experiments import run

    stepsize = _stepsize(arm, problem)
    tx = optax.chain(_build_method(arm.method, seed), optax.sgd(stepsize))
    trace = run(tx, problem, num_steps, jax.random.key(seed), log_every=log_every)
    return trace, stepsize


# ---------------------------------------------------------------------------------------------
# Summaries and files.


def summarize(trace: Any, target: float) -> dict[str, Any]:
    """Rounds and exact bits per worker until ``f_gap <= target · f_gap[0]`` (None if never).

    Args:
      trace: a :class:`~jaxdist.experiments.Trace` of one run (no sweep axes).
      target: the relative accuracy that counts as solved.

    Returns:
      A dict: ``final_rel_gap``, ``diverged`` (from :attr:`Trace.diverged`), ``rounds_total``,
      ``bits_up_total_per_worker``, ``reached`` and, at the first logged point within the target
      (None when never reached), the rounds, the bits up and down per worker and the local
      gradient evaluations per worker (``grad_evals_to_target``; None in a trace without them).
    """
    import numpy as np

    gap = np.asarray(trace.f_gap, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
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
            grad_evals_to_target=(
                int(trace.series["grad_evals"][i]) if "grad_evals" in trace.series else None
            ),
        )
    else:
        out.update(
            reached=False,
            rounds_to_target=None,
            bits_up_to_target=None,
            bits_down_to_target=None,
            grad_evals_to_target=None,
        )
    return out


def _load_arm(path: str, config: Mapping[str, Any], digest: str) -> tuple[Any, dict, str]:
    """``(trace, saved, "")`` for a finished arm with this hash, else ``(None, {}, why not)``."""
    from jaxdist.experiments._trace import Trace

    try:
        with open(path) as f:
            saved = json.load(f)
    except FileNotFoundError:
        return None, {}, ""
    except (OSError, ValueError) as e:
        return None, {}, f"unreadable result file ({type(e).__name__}), rerunning"
    if not isinstance(saved, dict) or saved.get("config_hash") != digest:
        old = saved.get("config") if isinstance(saved, dict) else None
        if isinstance(old, dict):
            changed = sorted(k for k in config.keys() | old.keys() if config.get(k) != old.get(k))
            what = ", ".join(changed) or "hash"
        else:
            what = "no configuration hash in the file"
        return None, {}, f"configuration changed ({what}), rerunning"
    try:
        trace = Trace.from_dict(saved["trace"])
        float(saved["stepsize"])
    except (KeyError, TypeError, ValueError) as e:
        return None, {}, f"unreadable result file ({type(e).__name__}), rerunning"
    return trace, saved, ""


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _SEED_LIMIT:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def _check_num_steps(num_steps: Any, exp: Experiment) -> int:
    if num_steps is None:
        return exp.num_steps
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    return num_steps


def run_experiment(
    name: str,
    out_dir: str = "results",
    *,
    force: bool = False,
    num_steps: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs the named experiment, loading the arms already finished in ``out_dir``.

    An arm is loaded when its file holds the hash of its current configuration
    (:meth:`Experiment.config_hash`); otherwise (no file, an edited configuration, an
    unreadable file, or ``force``) it is run and its file rewritten atomically. The problem is
    built only if some arm runs. Progress goes to ``log``: one line per arm with ``arm i/n``,
    its label and ``loaded`` or ``ran ... in X s``.

    Args:
      name: a key of :data:`EXPERIMENTS`.
      out_dir: results folder; the experiment writes ``<out_dir>/<name>/<arm>.json``,
        ``summary.json`` and ``summary.csv``.
      force: rerun every arm, even those whose results exist.
      num_steps: override the experiment's number of steps (a positive integer; a point is
        logged every ``log_every`` steps and at the last).
      seed: seed of the runs, an integer in ``[0, 2**32)`` (the runner's key and the methods'
        ``key``).
      log: where progress lines go.

    Returns:
      The summary: per arm, the step size, the configuration hash, whether it was loaded, and
      the rounds / bits to reach the target accuracy (:func:`summarize`).

    Raises:
      ValueError: an unknown ``name``; ``num_steps`` not a positive integer;
        ``seed`` out of range; ``out_dir`` cannot be created.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
    steps = _check_num_steps(num_steps, exp)
    seed = _check_seed(seed)
    folder = os.path.join(out_dir, name)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ValueError(
            f"out_dir {out_dir!r}: cannot create the results folder {folder!r} ({e.strerror})"
        ) from e
    log(f"[{name}] {exp.claim}")
    problem = None
    summary: dict[str, Any] = {
        "experiment": name,
        "claim": exp.claim,
        "target": exp.target,
        "num_steps": steps,
        "seed": seed,
        "arms": {},
    }
    n = len(exp.arms)
    for i, arm in enumerate(exp.arms, 1):
        head = f"[{name}] arm {i}/{n} {arm.label}"
        path = os.path.join(folder, f"{arm.name}.json")
        config = exp.config(arm, num_steps=steps, seed=seed)
        digest = _hash(config)
        if force:
            trace, saved, why = None, {}, "--force, rerunning" if os.path.exists(path) else ""
        else:
            trace, saved, why = _load_arm(path, config, digest)
        if trace is not None:
            stepsize, seconds, status = float(saved["stepsize"]), saved.get("seconds"), "loaded"
            log(f"{head}: loaded ({path}, config {digest})")
        else:
            if why:
                log(f"{head}: {why}")
            if problem is None:
                t = time.perf_counter()
                problem = _build_problem(exp.problem)
                log(
                    f"[{name}] problem {problem.name}: M={problem.num_workers}, "
                    f"d={problem.dim}, L={problem.L:.4g}, mu={problem.mu:.4g} "
                    f"(built in {time.perf_counter() - t:.1f} s)"
                )
            log(f"{head}: running {steps} steps")
            t = time.perf_counter()
            trace, stepsize = _run_arm(arm, problem, steps, exp.log_every, seed)
            seconds, status = round(time.perf_counter() - t, 3), "ran"
            record = {
                "format": _RESULTS_FORMAT,
                "arm": arm.name,
                "label": arm.label,
                "config_hash": digest,
                "config": config,
                "stepsize": stepsize,
                "num_steps": steps,
                "seed": seed,
                "seconds": seconds,
                "trace": trace.to_dict(),
            }
            _write_atomic(path, json.dumps(record))
            log(f"{head}: ran {steps} steps in {seconds:.1f} s")
        s = summarize(trace, exp.target)
        s.update(
            label=arm.label, stepsize=stepsize, config_hash=digest, status=status, seconds=seconds
        )
        summary["arms"][arm.name] = s
    _write_atomic(os.path.join(folder, "summary.json"), json.dumps(summary, indent=1))
    _write_atomic(os.path.join(folder, "summary.csv"), _summary_csv(summary))
    return summary


_CSV_COLUMNS = (
    "arm",
    "label",
    "stepsize",
    "reached",
    "rounds_to_target",
    "bits_up_to_target",
    "bits_down_to_target",
    "grad_evals_to_target",
    "final_rel_gap",
    "diverged",
    "status",
    "config_hash",
)


def _summary_csv(summary: Mapping[str, Any]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for arm, s in summary["arms"].items():
        row = [arm] + [s.get(c) for c in _CSV_COLUMNS[1:]]
        writer.writerow("" if v is None else v for v in row)
    return buf.getvalue()


def load_traces(name: str, out_dir: str = "results") -> dict[str, tuple[str, Any]]:
    """Loads the per-arm traces of a finished experiment: ``{arm: (label, trace)}``.

    Args:
      name: an experiment that has been run into ``out_dir``.
      out_dir: the results folder given to :func:`run_experiment`.

    Returns:
      The arms in the order of the experiment's ``summary.json``, each with its label and its
      :class:`~jaxdist.experiments.Trace`.

    Raises:
      FileNotFoundError: the experiment has not been run into ``out_dir``.
    """
    from jaxdist.experiments._trace import Trace

    folder = os.path.join(out_dir, name)
    with open(os.path.join(folder, "summary.json")) as f:
        arms = json.load(f)["arms"]
    out = {}
    for arm, s in arms.items():
        with open(os.path.join(folder, f"{arm}.json")) as f:
            saved = json.load(f)
        out[arm] = (s.get("label", saved["label"]), Trace.from_dict(saved["trace"]))
    return out
