"""Every round-based method through the same checks (a registry of cases, like the per-step
methods' in tests/methods_registry.py): jaxdist.run under vmap equals shard_map on 8 forced CPU
devices; a run is deterministic per key; a second run with another key does not recompile; the
trace's bits are whole messages and its local work is reported; subproblem solves meet their
tolerance at the defaults. Method-specific maths (NumPy references, fixed points, rates) lives in
each method's own test file."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

import jaxdist
from jaxdist import compressors as jc
from jaxdist.experiments import run
from jaxdist.methods import RoundMethod, Solver
from jaxdist.problems import logistic_regression, similar_quadratics

M, D = 8, 6


def _problem(dtype=jnp.float32):
    return similar_quadratics(
        M, D, L=1.0, mu=0.1, delta=0.05, heterogeneity=1.0, key=1, dtype=dtype
    )


@dataclasses.dataclass(frozen=True)
class RoundCase:
    name: str
    build: Callable[[Any], Any]  # problem -> method
    random: bool  # whether the trajectory depends on the run key
    inner: bool = False  # whether it reports subproblem solves
    problem: Callable[[], Any] | None = None  # default: the similar quadratics below
    batch_size: int | None = None  # minibatch size for jaxdist.run (stochastic oracles)

    def make_problem(self):
        return _problem() if self.problem is None else self.problem()


_SOLVER = Solver(max_steps=2000, rtol=1e-5)


def _lserver(p):
    return p.info["L_server"]


def _logistic():
    return logistic_regression("mushrooms", M, max_samples=400, key=0)


CASES = (
    RoundCase("local_gd", lambda p: jaxdist.local_gd(0.5, 4), False),
    RoundCase(
        "local_sgd", lambda p: jaxdist.local_sgd(0.5, 4), True, problem=_logistic, batch_size=5
    ),
    RoundCase("fedavg_partial", lambda p: jaxdist.fedavg(0.5, 3, num_participants=3), True),
    RoundCase("scaffnew", lambda p: jaxdist.scaffnew(1.0 / p.L, 0.3), True),
    RoundCase(
        "fedprox",
        lambda p: jaxdist.methods.fedprox(
            1.0, local_smoothness=float(np.max(p.L_m)), convex=False, solver=_SOLVER
        ),
        False,
        True,
    ),
    RoundCase(
        "scaffold_partial",
        lambda p: jaxdist.methods.scaffold(0.2, 3, num_participants=5),
        True,
    ),
    RoundCase("fedpaq", lambda p: jaxdist.methods.fedpaq(0.3, 3, jc.rand_k(2)), True),
    RoundCase(
        "bregman_gd",
        lambda p: jaxdist.methods.bregman_gd(
            p.info["delta_server"], server_smoothness=_lserver(p), solver=_SOLVER
        ),
        False,
        True,
    ),
    RoundCase(
        "dane",
        lambda p: jaxdist.methods.dane(
            p.delta, local_smoothness=float(np.max(p.L_m)), solver=_SOLVER
        ),
        False,
        True,
    ),
    RoundCase(
        "aeg_sliding",
        lambda p: jaxdist.methods.aeg_sliding(
            p.info["delta_server"], p.mu, server_smoothness=_lserver(p), solver=_SOLVER
        ),
        False,
        True,
    ),
    RoundCase(
        "olga",
        lambda p: jaxdist.methods.olga(
            jc.rand_k(2),
            delta=p.info["delta_server"],
            mu=p.mu,
            server_smoothness=_lserver(p),
            solver=_SOLVER,
        ),
        True,
        True,
    ),
)
NAMES = tuple(c.name for c in CASES)
BY_NAME = {c.name: c for c in CASES}
T = 12


def _run(method, prob, key=0, case=None, **kw):
    if case is not None and case.batch_size is not None:
        kw["batch_size"] = case.batch_size
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no solver, assumption or disagreement warnings
        return run(method, prob, T, key, log_every=4, **kw)


_INT_SERIES = ("bits_up", "bits_down", "bits_up_total", "bits_down_total", "rounds")


@pytest.mark.parametrize("name", NAMES)
def test_vmap_equals_shard_map(name):
    case = BY_NAME[name]
    prob = case.make_problem()
    method = case.build(prob)
    a = _run(method, prob, case=case)
    b = _run(method, prob, case=case, backend="shard_map")
    for s in (*_INT_SERIES, "grad_evals"):
        np.testing.assert_array_equal(a[s], b[s], err_msg=s)
    np.testing.assert_allclose(a.dist_sq, b.dist_sq, rtol=2e-3, atol=1e-6)
    assert set(a.series) == set(b.series)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_per_key_and_compiled_once(name):
    case = BY_NAME[name]
    prob = case.make_problem()
    method = case.build(prob)
    traced = []

    def counted(state, oracle, key):
        traced.append(1)
        return method.round(state, oracle, key)

    wrapped = RoundMethod(method.init, counted, method.params, method.needs_server, method.bounds)
    a = _run(wrapped, prob, key=0, case=case)
    n = len(traced)
    b = _run(wrapped, prob, key=0, case=case)
    c = _run(wrapped, prob, key=1, case=case)
    assert len(traced) == n, "a second run of the same method recompiled"
    for s in a.series:
        np.testing.assert_array_equal(a[s], b[s], err_msg=s)
    differs = not np.array_equal(a.dist_sq, c.dist_sq)
    assert differs == case.random, f"key dependence: {differs}, expected {case.random}"


@pytest.mark.parametrize("name", NAMES)
def test_reports_work_and_whole_messages(name):
    case = BY_NAME[name]
    prob = case.make_problem()
    tr = _run(case.build(prob), prob, case=case)
    assert tr.grad_evals[-1] > 0 and np.all(np.diff(tr.grad_evals) >= 0)
    assert tr.rounds[-1] > 0 and np.all(np.diff(tr.rounds) >= 0)
    # down messages are whole float32 models; totals are at least the per-worker maximum
    assert tr.bits_down[-1] % (32 * prob.dim) == 0
    assert tr.bits_up_total[-1] >= tr.bits_up[-1] > 0
    if case.inner:
        assert tr["inner_steps"][-1] > 0 and tr["inner_unsolved"][-1] == 0
    assert not np.any(tr.diverged) and np.all(np.isfinite(tr.f_gap))


def test_every_round_method_is_public():
    public = {"local_gd", "local_sgd", "fedavg", "scaffnew", "fedprox", "scaffold", "fedpaq"}
    public |= {"bregman_gd", "dane", "aeg_sliding", "olga"}
    for name in public:
        assert getattr(jaxdist, name) is getattr(jaxdist.methods, name)
        assert name in jaxdist.methods.__all__
