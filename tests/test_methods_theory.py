"""The methods against THEORY.md: rates, neighbourhoods, the Top-1 counterexample, shared keys.

Every run is ``jaxdist.comm.simulate`` over workers inside a ``lax.scan`` over steps, in
float64. Randomised methods are averaged over seeds (a ``vmap`` over keys that re-seed the
method's state, :func:`jaxdist.methods.reseed`, as :func:`jaxdist.run` does). Expectations are
checked one-sidedly against the theorems' bounds with 5 standard errors of slack where the bound
is an inequality, and two-sidedly where the theory gives an equality.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdist.compressors as jc
from jaxdist import comm, problems, theory
from jaxdist.methods import dcgd, dgd, diana, ef14, ef21, marina, reseed

Z = 5.0  # standard errors of slack in Monte-Carlo comparisons


def _quad_grad(x, data_m):
    return data_m["A"] @ x - data_m["b"]


def _run(prob, method, gamma, steps, *, seeds=None, grad=_quad_grad, record=None, x0=None):
    """Trajectory statistics of chain(method, sgd(gamma)).

    ``record(x_old, x_new, state, data_m)`` is evaluated per worker after every step, with
    the parameters before and after it and the new state (default: ``x_new``). Returns an
    array with leading axes (seed, step, worker, ...) when ``seeds`` is given, else
    (step, worker, ...).
    """
    tx = optax.chain(method, optax.sgd(gamma))
    record = record or (lambda x_old, x_new, state, data_m: x_new)
    x_init = jnp.asarray(prob.init_params if x0 is None else x0)

    def per_worker(key, data_m):
        def step(carry, _):
            x, state = carry
            u, state = tx.update(grad(x, data_m), state, x)
            x_new = optax.apply_updates(x, u)
            return (x_new, state), record(x, x_new, state, data_m)

        state0 = tx.init(x_init)
        if key is not None:
            state0 = reseed(state0, key)
        _, out = jax.lax.scan(step, (x_init, state0), length=steps)
        return out

    def run(key):
        out = comm.simulate(per_worker, prob.num_workers, in_axes=(None, 0))(key, prob.data)
        return jnp.moveaxis(out, 0, 1)  # (step, worker, ...)

    if seeds is None:
        return np.asarray(jax.jit(run)(None))
    keys = jax.vmap(jax.random.key)(jnp.arange(seeds))
    return np.asarray(jax.jit(jax.vmap(run))(keys))


def _dist2(prob):
    x_star = jnp.asarray(prob.x_star)
    return lambda x_old, x_new, state, data_m: jnp.sum((x_new - x_star) ** 2)


def _one_sided(samples, bound, what):
    """Mean of i.i.d. samples must not exceed the bound by more than Z standard errors."""
    samples = np.asarray(samples, dtype=np.float64)
    mean = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    excess = mean - Z * se - bound
    assert np.all(excess <= 1e-12 * np.abs(bound)), (what, mean, se, bound)


# ---------------------------------------------------------------------------------------------
# GD and DIANA: linear convergence at the theory step size (THEORY.md §2.1, §2.3).


def test_gd_rate_quadratic_and_logistic(x64):
    for prob, steps in (
        (problems.quadratic(4, 10, L=1.0, mu=0.2, key=0, dtype=jnp.float64), 150),
        (
            problems.logistic_regression(
                "mushrooms", 4, l2=0.1, max_samples=800, dtype=jnp.float64
            ),
            150,
        ),
    ):
        grad = jax.grad(prob.loss)
        gamma = theory.gd_stepsize(prob.L)
        d2 = _run(prob, dgd(), gamma, steps, grad=grad, record=_dist2(prob))[:, 0]
        d0 = float(np.sum((np.asarray(prob.init_params) - prob.x_star) ** 2))
        k = np.arange(1, steps + 1)
        bound = (1 - prob.mu / prob.L) ** k * d0
        # ||x^k - x*||^2 <= (1 - mu/L)^k ||x^0 - x*||^2, up to x*'s own accuracy (1e-15).
        assert np.all(d2 <= bound * (1 + 1e-9) + 1e-24), prob.name
        assert d2[-1] < 0.5 * bound[-1], "not a vacuous check: GD beats the worst case here"


def _diana_lyapunov(prob, omega, gamma, alpha):
    """Per-worker record: ||x - x*||^2 and ||h_m - ∇f_m(x*)||^2 (Ψ is formed afterwards)."""
    x_star = jnp.asarray(prob.x_star)
    grad = jax.grad(prob.loss)

    def record(x_old, x_new, state, data_m):
        # After step k: x^{k+1} and the shifts h_m^{k+1}, i.e. the parts of Ψ^{k+1}.
        h_m = state[0].h_m
        return jnp.stack(
            [jnp.sum((x_new - x_star) ** 2), jnp.sum((h_m - grad(x_star, data_m)) ** 2)]
        )

    weight = theory.diana_lyapunov_weight(gamma, omega, alpha, prob.num_workers)
    return record, weight


@pytest.mark.parametrize("which", ["quadratic", "logistic"])
def test_diana_converges_at_the_theory_rate(x64, which):
    if which == "quadratic":
        prob = problems.quadratic(4, 10, L=1.0, mu=0.2, heterogeneity=1.0, key=0, dtype=jnp.float64)
        k_sparse, steps, seeds = 2, 1000, 16
    else:
        prob = problems.logistic_regression(
            "mushrooms", 4, l2=0.1, max_samples=800, dtype=jnp.float64
        )
        k_sparse, steps, seeds = 40, 300, 8
    c = jc.rand_k(k_sparse)
    omega = c.omega(prob.dim)
    alpha = theory.diana_shift_step(omega)
    gamma = theory.diana_stepsize(prob.L, prob.L_max, omega, prob.num_workers)
    rate = theory.diana_rate(gamma, prob.mu, alpha)
    record, weight = _diana_lyapunov(prob, omega, gamma, alpha)
    out = _run(prob, diana(c), gamma, steps, seeds=seeds, grad=jax.grad(prob.loss), record=record)
    psi = out[:, :, 0, 0] + weight * out[:, :, :, 1].mean(axis=-1)  # (seed, step)
    grads_star = prob.worker_grads(jnp.asarray(prob.x_star))
    d0 = np.sum((np.asarray(prob.init_params) - prob.x_star) ** 2)
    psi0 = d0 + weight * float(np.mean(np.sum(np.asarray(grads_star) ** 2, axis=-1)))
    k = np.arange(1, steps + 1)
    # E Ψ^k <= max(1 - γμ, 1 - α/2)^k Ψ^0 at every step (one-sided, Z standard errors).
    _one_sided(psi, rate**k * psi0, "E psi^k")
    if which == "quadratic":
        # Converges to x* itself (unlike DCGD): relative error ~1e-12 and below.
        rel = out[:, -1, 0, 0].max() / d0
        assert rel < 1e-12, rel
        assert rate**steps > 1e-14  # the bound alone would not certify 1e-12 here


# ---------------------------------------------------------------------------------------------
# DCGD: a neighbourhood of the predicted size (THEORY.md §2.2).


def test_dcgd_rand_k_stalls_in_the_predicted_neighbourhood(x64):
    prob = problems.quadratic(4, 10, L=1.0, mu=0.2, heterogeneity=1.0, key=0, dtype=jnp.float64)
    c = jc.rand_k(2)
    omega, M = c.omega(prob.dim), prob.num_workers
    gamma = theory.dcgd_stepsize(prob.L, prob.L_max, omega, M)
    lower = theory.dcgd_one_step_variance(gamma, omega, prob.sigma_star_sq, M)
    upper = theory.dcgd_neighborhood(gamma, omega, prob.sigma_star_sq, prob.mu, M)
    steps, burn, seeds = 600, 200, 64
    d2 = _run(prob, dcgd(c), gamma, steps, seeds=seeds, record=_dist2(prob), x0=prob.x_star)
    # One step from x*: E||x^1 - x*||^2 = γ²ωσ*²/M exactly (two-sided).
    first = d2[:, 0, 0]
    se1 = first.std(ddof=1) / np.sqrt(seeds)
    assert abs(first.mean() - lower) < Z * se1 + 1e-12, (first.mean(), lower, se1)
    # Stationary E||x - x*||^2: per-seed time averages are i.i.d. across seeds.
    stationary = d2[:, burn:, 0].mean(axis=1)
    mean, se = stationary.mean(), stationary.std(ddof=1) / np.sqrt(seeds)
    assert lower < mean - Z * se and mean + Z * se < upper, (lower, mean, se, upper)


# ---------------------------------------------------------------------------------------------
# The Top-1 counterexample (THEORY.md §3).


def _counterexample():
    return problems.top1_counterexample("paper", t=1.0, dtype=jnp.float64)


def test_counterexample_dcgd_top1_diverges_at_exactly_1_plus_11_gamma_over_6(x64):
    prob = _counterexample()
    for gamma in (0.001, 0.01, 0.1):
        xs = _run(prob, dcgd(jc.top_k(1)), gamma, 60)[:, 0]
        k = np.arange(1, 61)[:, None]
        predicted = (1 + 11 * gamma / 6) ** k * np.asarray(prob.init_params)
        np.testing.assert_allclose(xs / predicted, 1.0, rtol=0, atol=1e-10)


def test_counterexample_ef14_and_ef21_converge_at_theory_step_sizes(x64):
    prob = _counterexample()
    alpha = jc.top_k(1).alpha(3)
    assert alpha == pytest.approx(1 / 3)
    g_nc = theory.ef21_stepsize(prob.L, prob.L_tilde, alpha)
    g_pl = theory.ef21_stepsize(prob.L, prob.L_tilde, alpha, mu=prob.mu)
    assert g_nc == pytest.approx(0.005859, abs=5e-7)
    assert g_pl == pytest.approx(0.004269, abs=5e-7)
    theta, _ = theory.ef21_constants(alpha)
    steps = 3000
    x0 = np.asarray(prob.init_params)

    def psi_record(x_old, x_new, state, data_m):
        # The update at x^t leaves EF21's estimate g_m^t in the state: worker m's part of
        # Ψ^t is f_m(x^t) and ||g_m^t - ∇f_m(x^t)||^2.
        g_m = state[0].g_m
        return jnp.stack(
            [prob.loss(x_old, data_m), jnp.sum((g_m - _quad_grad(x_old, data_m)) ** 2)]
        )

    # EF21, PL step size: Ψ^t = f(x^t) - f* + (γ/θ) G^t <= (1 - γμ)^t Ψ^0 at every t (Thm 3).
    out = _run(prob, ef21(jc.top_k(1)), g_pl, steps, record=psi_record)
    psi = out[:, :, 0].mean(axis=1) - prob.f_star + (g_pl / theta) * out[:, :, 1].mean(axis=1)
    # Ψ^0: g_m^0 = Top1(∇f_m(x^0)) keeps the -11t/2 entry, so G^0 = 2·(9/2)^2 = 40.5.
    assert psi[0] == pytest.approx(
        float(prob.full_loss(jnp.asarray(x0))) + (g_pl / theta) * 40.5, rel=1e-12
    )
    t = np.arange(steps)
    assert np.all(psi <= (1 - g_pl * prob.mu) ** t * psi[0] * (1 + 1e-9))
    # Linear convergence of the iterates (THEORY.md §3: ~5e-7 and ~2e-9 after 3000 steps).
    for method, gamma, tol in (
        (ef21(jc.top_k(1)), g_pl, 5e-6),
        (ef21(jc.top_k(1)), g_nc, 5e-8),
        (ef14(jc.top_k(1)), g_nc, 5e-8),
    ):
        xs = _run(prob, method, gamma, steps)[:, 0]
        norms = np.linalg.norm(xs, axis=1)
        assert norms[-1] < tol, (method, gamma, norms[-1])
        assert norms[-1] < 1e-2 * norms[steps // 2 - 1]  # still decaying linearly
        assert np.all(np.isfinite(norms))


def test_counterexample_dcgd_rand1_converges(x64):
    prob = _counterexample()
    c = jc.rand_k(1)
    omega = c.omega(3)
    assert omega == 2.0
    gamma = theory.dcgd_stepsize(prob.L, prob.L_max, omega, prob.num_workers)
    assert gamma == pytest.approx(0.01583, abs=5e-6)
    steps, seeds = 2000, 8
    d2 = _run(prob, dcgd(c), gamma, steps, seeds=seeds, record=_dist2(prob))[:, :, 0]
    d0 = float(np.sum(np.asarray(prob.init_params) ** 2))
    # σ*² = 0, so the neighbourhood vanishes: E||x^k||^2 <= (1 - γμ)^k ||x^0||^2.
    k = np.arange(1, steps + 1)
    _one_sided(d2, (1 - gamma * prob.mu) ** k * d0, "E||x^k||^2")
    assert d2[:, -1].max() < 1e-16 * d0


# ---------------------------------------------------------------------------------------------
# Shared-key Rand-K loses the 1/M variance reduction (THEORY.md §1.2).


def test_shared_key_rand_k_loses_variance_reduction(x64):
    M, d, K, n = 8, 20, 4, 4000
    rng = np.random.default_rng(0)
    a = rng.standard_normal(d) + 0.3 * rng.standard_normal((M, d))  # similar vectors
    a = jnp.asarray(a)
    a_bar = np.asarray(a).mean(axis=0)
    omega = d / K - 1

    def errors(c):
        f = comm.simulate(lambda key, x: comm.compressed_mean(c, key, x), M, in_axes=(None, 0))
        keys = jax.vmap(jax.random.key)(jnp.arange(n))
        means = jax.jit(jax.vmap(lambda k: f(k, a)[0]))(keys)
        return np.sum((np.asarray(means) - a_bar) ** 2, axis=1)

    shared = errors(jc.rand_k(K, shared=True))
    independent = errors(jc.rand_k(K))
    expected_shared = omega * np.sum(a_bar**2)
    expected_independent = (omega / M) * np.mean(np.sum(np.asarray(a) ** 2, axis=1))
    for err, expected in ((shared, expected_shared), (independent, expected_independent)):
        se = err.std(ddof=1) / np.sqrt(n)
        assert abs(err.mean() - expected) < Z * se, (err.mean(), expected, se)
    assert expected_shared > 5 * expected_independent  # the two regimes are far apart here


# ---------------------------------------------------------------------------------------------
# MARINA (THEORY.md §2.4).


def test_marina_converges_on_a_quadratic(x64):
    prob = problems.quadratic(4, 10, L=1.0, mu=0.2, heterogeneity=1.0, key=0, dtype=jnp.float64)
    c = jc.rand_k(2)
    omega, M = c.omega(prob.dim), prob.num_workers
    p = theory.marina_probability(omega)
    gamma = theory.marina_stepsize(prob.L, prob.L_tilde, omega, p, M)
    steps, seeds = 800, 16
    x_star = jnp.asarray(prob.x_star)

    def record(x_old, x_new, state, data_m):
        # Worker m's gradient at x^{k+1}; averaged over workers afterwards.
        return jnp.concatenate([_quad_grad(x_new, data_m), jnp.sum((x_new - x_star) ** 2)[None]])

    out = _run(prob, marina(c, p), gamma, steps, seeds=seeds, record=record)
    grad_full = out[:, :, :, :-1].mean(axis=2)  # ∇f(x^k), k = 1..K
    grad_sq = np.sum(grad_full**2, axis=-1)
    g0 = np.asarray(prob.full_grad(jnp.asarray(prob.init_params)))
    all_sq = np.concatenate([np.full((seeds, 1), np.sum(g0**2)), grad_sq[:, :-1]], axis=1)
    delta0 = float(prob.full_loss(jnp.asarray(prob.init_params))) - prob.f_star
    # Nonconvex theorem: (1/K) Σ_{k<K} E||∇f(x^k)||^2 <= 2Δ0/(γK).
    _one_sided(all_sq.mean(axis=1), 2 * delta0 / (gamma * steps), "MARINA gradient norm")
    d0 = float(np.sum((np.asarray(prob.init_params) - prob.x_star) ** 2))
    assert out[:, -1, 0, -1].max() < 1e-10 * d0  # and it converges to x* on this quadratic
