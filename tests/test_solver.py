"""The shared subproblem solver (jaxdist.methods.Solver) and the runner's reports of it:
accuracy against a linear solve, the tolerance rule, the budget, non-finite inner problems,
traced constants, pytrees; SolverWarning and AssumptionWarning from jaxdist.run."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdist.comm._axis import worker_mean
from jaxdist.experiments import AssumptionWarning, SolverWarning, run
from jaxdist.methods import RoundMethod, SolveInfo, Solver
from jaxdist.methods._base import make_ledger
from jaxdist.problems import quadratic


def _spd(d, kappa, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.geomspace(1.0 / kappa, 1.0, d)
    return (Q * lam) @ Q.T, rng.standard_normal(d)


@pytest.mark.parametrize("mu_known", [True, False])
def test_matches_linear_solve_and_meets_its_tolerance(x64, mu_known):
    A, b = _spd(25, 100.0)
    x = np.linalg.solve(A, b)
    A_, b_ = jnp.asarray(A), jnp.asarray(b)
    solver = Solver(max_steps=20_000, rtol=1e-12)
    z, info = jax.jit(
        lambda z0: solver(lambda z: A_ @ z - b_, z0, L=1.0, mu=0.01 if mu_known else 0.0)
    )(jnp.zeros(25))
    assert isinstance(info, SolveInfo) and bool(info.converged)
    g = A @ np.asarray(z) - b
    # the returned point carries the guarantee, and the reported norm is its gradient's norm
    assert np.linalg.norm(g) <= 1e-12 * np.linalg.norm(b) * (1 + 1e-9)
    np.testing.assert_allclose(float(info.grad_norm), np.linalg.norm(g), rtol=1e-3)
    np.testing.assert_allclose(np.asarray(z), x, atol=1e-9 * np.linalg.norm(x) * 100)
    assert 1 < int(info.steps) < 20_000


def test_acceleration_steps_grow_like_sqrt_kappa(x64):
    """AGD with the strong-convexity momentum: steps to a fixed relative accuracy ∝ √κ."""
    kappas = np.array([1e2, 1e3, 1e4])
    steps = []
    for kappa in kappas:
        A, b = _spd(30, kappa, seed=1)
        A_, b_ = jnp.asarray(A), jnp.asarray(b)
        _, info = Solver(max_steps=100_000, rtol=1e-8)(
            lambda z, A_=A_, b_=b_: A_ @ z - b_, jnp.zeros(30), L=1.0, mu=1.0 / kappa
        )
        steps.append(int(info.steps))
    slope = np.polyfit(np.log(kappas), np.log(steps), 1)[0]
    assert 0.4 <= slope <= 0.65, (steps, slope)


def test_budget_and_non_finite_are_reported(x64):
    A, b = _spd(10, 1e3)
    A_, b_ = jnp.asarray(A), jnp.asarray(b)
    z, info = Solver(max_steps=7)(lambda z: A_ @ z - b_, jnp.zeros(10), L=1.0, mu=1e-3)
    assert int(info.steps) == 7 and not bool(info.converged)
    # an overestimated step (L too small) diverges: reported as unsolved, never as converged
    _, info = Solver(max_steps=400)(lambda z: A_ @ z - b_, jnp.zeros(10), L=1e-3, mu=1e-4)
    assert not bool(info.converged)
    nan = lambda z: z * jnp.nan
    _, info = Solver(max_steps=50)(nan, jnp.ones(3), L=1.0)
    assert int(info.steps) == 1 and not bool(info.converged)


def test_already_solved_start_costs_one_evaluation(x64):
    _, info = Solver(atol=1e-3)(lambda z: z, jnp.zeros(4), L=1.0, mu=1.0)
    assert int(info.steps) == 1 and bool(info.converged)


def test_given_first_gradient_is_used_and_counted(x64):
    A, b = _spd(10, 1e2)
    A_, b_ = jnp.asarray(A), jnp.asarray(b)
    calls = []

    def grad(z):
        calls.append(1)
        return A_ @ z - b_

    solver = Solver(max_steps=200, rtol=1e-10)
    z1, info1 = solver(grad, jnp.zeros(10), L=1.0, mu=1e-2)
    n_plain = len(calls)
    z2, info2 = solver(grad, jnp.zeros(10), L=1.0, mu=1e-2, grad0=-b_)
    np.testing.assert_array_equal(np.asarray(z1), np.asarray(z2))
    assert int(info1.steps) == int(info2.steps)  # the caller's evaluation still counts
    assert len(calls) - n_plain == n_plain - 1  # traced once fewer: grad(z0) was not called


def test_rounding_atol_is_the_floor_of_the_dtype():
    from jaxdist.methods._solver import rounding_atol

    eps32 = float(jnp.finfo(jnp.float32).eps)
    assert float(rounding_atol(0.0, jnp.float32, 10.0)) == pytest.approx(2 * eps32 * 10.0)
    assert float(rounding_atol(1.0, jnp.float32, 10.0)) == 1.0  # a larger atol is kept
    assert float(rounding_atol(0.0, jnp.float32, 10.0, factor=64.0)) == pytest.approx(
        64 * eps32 * 10.0
    )
    assert rounding_atol(0.0, jnp.float32, 1.0).dtype == jnp.float32


def test_traced_constants_and_tolerances_under_vmap(x64):
    A, b = _spd(12, 1e3)
    A_, b_ = jnp.asarray(A), jnp.asarray(b)
    solver = Solver(max_steps=50_000)

    def solve(mu, rtol):
        z, info = solver(lambda z: A_ @ z - b_, jnp.zeros(12), L=1.0, mu=mu, rtol=rtol)
        return z, info.steps

    zs, steps = jax.jit(jax.vmap(solve))(
        jnp.array([1e-3, 0.0, 1e-3]), jnp.array([1e-10, 1e-10, 1e-4])
    )
    x = np.linalg.solve(A, b)
    np.testing.assert_allclose(np.asarray(zs[0]), x, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(zs[1]), x, rtol=1e-6)
    assert steps[2] < steps[0] < steps[1]
    # each vmapped entry equals its own unbatched solve
    _, s0 = solve(1e-3, 1e-4)
    assert int(s0) == int(steps[2])


def test_pytree_problem(x64):
    target = {"w": jnp.arange(3.0), "b": jnp.asarray(2.0)}
    grad = lambda z: jax.tree_util.tree_map(lambda a, t: 2.0 * (a - t), z, target)
    z, info = Solver(rtol=1e-12)(
        grad, jax.tree_util.tree_map(jnp.zeros_like, target), L=2.0, mu=2.0
    )
    assert bool(info.converged)
    chex_tree = jax.tree_util.tree_map(lambda a, t: float(jnp.max(jnp.abs(a - t))), z, target)
    assert max(jax.tree_util.tree_leaves(chex_tree)) < 1e-10


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": 2.5}, "max_steps"),
        ({"rtol": -1.0}, "rtol"),
        ({"atol": float("nan")}, "atol"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Solver(**kwargs)


def test_solvers_are_values():
    assert Solver(max_steps=10) == Solver(max_steps=10)
    assert hash(Solver(max_steps=10)) == hash(Solver(max_steps=10))
    assert Solver(max_steps=10) != Solver(max_steps=11)


# ---------------------------------------------------------------------------------------------
# The runner's reports.


def _prox_point(max_steps, lam=1.0, bounds=None):
    """Distributed proximal point: x+ = argmin_z f(z) + ||z - x||²/(2λ), by local solves of
    f_m(z) + ||z - x||²/(2λ) averaged (exact on identical workers; here a test vehicle)."""
    solver = Solver(max_steps=max_steps, rtol=1e-8)

    def init(params):
        return {"x": params, "ledger": make_ledger(params, None, None)}

    def round_fn(state, oracle, key):
        x = state["x"]
        grad = lambda z: oracle.grad(z) + (z - x) / lam
        z, info = solver(grad, x, L=1.0 + 1.0 / lam, mu=1.0 / lam)
        x_new = worker_mean(z)
        ledger = state["ledger"].record(up={"full": 1}, down={"full": 1}, rounds=1)
        out = {
            "grad_evals": info.steps,
            "inner_steps": info.steps,
            "inner_unsolved": 1 - info.converged.astype(jnp.int32),
        }
        return {"x": x_new, "ledger": ledger}, out

    return RoundMethod(init, round_fn, lambda s: s["x"], bounds=bounds)


def test_runner_warns_when_a_solve_hits_its_budget(x64):
    prob = quadratic(4, 8, L=1.0, mu=0.01, key=0, dtype=jnp.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = run(_prox_point(5000), prob, 10, 0)
    assert int(ok["inner_unsolved"][-1]) == 0 and int(ok["inner_steps"][-1]) > 10
    with pytest.warns(SolverWarning, match="above their tolerance"):
        bad = run(_prox_point(2), prob, 10, 0)
    assert int(bad["inner_unsolved"][-1]) == 10  # every round's solve, counted per round
    assert int(bad["inner_steps"][-1]) == 20


def test_runner_warns_when_the_problem_breaks_a_declared_bound(x64):
    prob = quadratic(4, 8, L=1.0, mu=0.01, delta=0.005, key=0, dtype=jnp.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(_prox_point(500, bounds={"delta": 0.01}), prob, 2, 0)
        run(_prox_point(500, bounds={"unknown_constant": 0.0}), prob, 2, 0)  # not known: no check
    with pytest.warns(AssumptionWarning, match="assumes delta <= 0.001"):
        run(_prox_point(500, bounds={"delta": 0.001}), prob, 2, 0)
    # in a sweep every point is checked and the offending point is named
    with pytest.warns(AssumptionWarning, match="lam=2"):
        run(
            lambda hp: _prox_point(500, hp["lam"], bounds={"delta": 0.008 / hp["lam"]}),
            prob,
            2,
            0,
            hyperparams={"lam": jnp.array([1.0, 2.0])},
        )
