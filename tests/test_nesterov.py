"""Distributed Nesterov AGD (jaxdist.methods._nesterov): reference trajectory, backends, bits,
the rate exponent against GD's (THEORY.md §2.10) and the bound of THEORY.md §2.1."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdist import comm, problems, theory
from jaxdist.experiments import run
from jaxdist.methods import dgd
from jaxdist.methods._nesterov import NesterovState, nesterov

M, D = 4, 12


def _problem(kappa=20.0, M=M, d=D, key=3):
    return problems.quadratic(
        M, d, L=1.0, mu=1.0 / kappa, heterogeneity=2.0, key=key, dtype=jnp.float64
    )


def _numpy_reference(prob, gamma, beta, T, y0):
    """y^k and x^k of x^{k+1} = y^k − γ∇f(y^k), y^{k+1} = x^{k+1} + β(x^{k+1} − x^k), y^0 = x^0,
    with ∇f the mean of the workers' gradients."""
    A = np.asarray(prob.data["A"], np.float64)
    b = np.asarray(prob.data["b"], np.float64)
    x_prev = y = np.asarray(y0, np.float64).copy()
    ys, xs = [y.copy()], [x_prev.copy()]
    for _ in range(T):
        g = np.mean(np.einsum("mij,j->mi", A, y) - b, axis=0)
        x = y - gamma * g
        y = x + beta * (x - x_prev)
        x_prev = x
        ys.append(y.copy())
        xs.append(x.copy())
    return np.stack(ys), np.stack(xs)


def _hand_loop(opt, prob, T, y0):
    """A hand-written loop of M simulated workers; returns y^k, x^k = y^k − m^k (worker 0) and
    the final stacked state."""
    Mw = prob.num_workers
    grad = jax.grad(prob.loss)

    def step(carry, _):
        y, s = carry
        g = comm.simulate(grad, Mw)(y, prob.data)
        u, s = comm.simulate(opt.update, Mw)(g, s, y)
        y = optax.apply_updates(y, u)
        return (y, s), (y, y - s.momentum)

    y, s = comm.replicate(jnp.asarray(y0), Mw, opt.init)
    (_, s), (ys, xs) = jax.jit(lambda y, s: jax.lax.scan(step, (y, s), None, length=T))(y, s)
    y0s = np.asarray(y0, np.float64)[None]
    ys = np.concatenate([y0s, np.asarray(ys)[:, 0]])
    xs = np.concatenate([y0s, np.asarray(xs)[:, 0]])
    return ys, xs, s


def _f(prob, x):
    A = np.asarray(prob.data["A"], np.float64).mean(axis=0)
    b = np.asarray(prob.data["b"], np.float64).mean(axis=0)
    return 0.5 * np.einsum("...i,ij,...j->...", x, A, x) - x @ b


def test_matches_numpy_reference(x64):
    prob = _problem(kappa=50.0)
    gamma, beta, T = 0.9 / prob.L, 0.8, 80
    y0 = np.linspace(-1.0, 1.0, D)
    ys, xs, state = _hand_loop(nesterov(gamma, beta), prob, T, y0)
    ys_ref, xs_ref = _numpy_reference(prob, gamma, beta, T, y0)
    scale = np.max(np.abs(ys_ref))
    np.testing.assert_allclose(ys, ys_ref, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(xs, xs_ref, rtol=0, atol=1e-12 * scale)
    assert isinstance(state, NesterovState)
    assert state.momentum.dtype == jnp.float64
    assert np.all(np.asarray(state.count) == T)
    # every worker holds the same model and the same (replicated) momentum
    mom = np.asarray(state.momentum)
    assert np.array_equal(mom, np.broadcast_to(mom[0], mom.shape))
    # the reference really moved: it is not trivially satisfied by a stalled iterate
    assert np.linalg.norm(ys_ref[-1] - ys_ref[0]) > 0.5


def test_theory_defaults_and_zero_momentum(x64):
    prob = _problem(kappa=30.0)
    T, y0 = 40, np.ones(D)
    L, mu = prob.L, prob.mu
    gamma, beta = theory.nesterov_stepsize(L), theory.nesterov_momentum(L, mu)
    ys_def, _, _ = _hand_loop(nesterov(L=L, mu=mu), prob, T, y0)
    ys_exp, _, _ = _hand_loop(nesterov(gamma, beta), prob, T, y0)
    np.testing.assert_array_equal(ys_def, ys_exp)
    ys_ref, _ = _numpy_reference(
        prob, 1.0 / L, (np.sqrt(L / mu) - 1) / (np.sqrt(L / mu) + 1), T, y0
    )
    np.testing.assert_allclose(ys_def, ys_ref, rtol=0, atol=1e-12 * np.max(np.abs(ys_ref)))
    # only the step size defaulted
    ys_lr, _, _ = _hand_loop(nesterov(None, 0.3, L=L), prob, T, y0)
    np.testing.assert_allclose(ys_lr, _numpy_reference(prob, 1.0 / L, 0.3, T, y0)[0], atol=1e-12)
    # β = 0 is distributed GD
    ys_gd, _, _ = _hand_loop(nesterov(0.7, 0.0), prob, T, y0)
    np.testing.assert_allclose(ys_gd, _numpy_reference(prob, 0.7, 0.0, T, y0)[0], atol=1e-12)


def test_run_vmap_equals_shard_map_and_bits(x64):
    prob = _problem(kappa=40.0, M=8)
    gamma, beta, T = 1.0 / prob.L, theory.nesterov_momentum(prob.L, prob.mu), 60
    opt = nesterov(gamma, beta)
    tv = run(opt, prob, T, jax.random.key(0))
    ts = run(opt, prob, T, jax.random.key(0), backend="shard_map")
    for name in ("loss", "dist_sq", "grad_norm_sq"):
        np.testing.assert_allclose(
            getattr(ts, name), getattr(tv, name), rtol=1e-12, atol=1e-15, err_msg=name
        )
    ys_ref, _ = _numpy_reference(prob, gamma, beta, T, np.asarray(prob.init_params))
    dist_ref = np.sum((ys_ref - prob.x_star) ** 2, axis=1)
    np.testing.assert_allclose(tv.dist_sq, dist_ref, rtol=1e-10, atol=1e-15)
    for t in (tv, ts):
        assert np.all(t.agreed)
        steps = np.arange(T + 1)
        np.testing.assert_array_equal(t.step, steps)
        np.testing.assert_array_equal(t.rounds, steps)
        np.testing.assert_array_equal(t.bits_up, steps * D * 64)
        np.testing.assert_array_equal(t.bits_down, steps * D * 64)
        np.testing.assert_array_equal(t.bits_up_total, steps * D * 64 * 8)
        np.testing.assert_array_equal(t.grad_evals, steps)
    # traced hyperparameters (a sweep) on both backends
    hp = {"lr": jnp.array([0.5, 1.0]), "beta": jnp.array([0.3, beta])}
    sv = run(_nest, prob, 20, jax.random.key(0), hyperparams=hp)
    ss = run(_nest, prob, 20, jax.random.key(0), hyperparams=hp, backend="shard_map")
    np.testing.assert_allclose(ss.dist_sq, sv.dist_sq, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sv.dist_sq[1], dist_ref[:21], rtol=1e-10, atol=1e-15)


def test_float32_ledger_bits():
    prob = problems.quadratic(2, 5, L=1.0, mu=0.1, key=0, dtype=jnp.float32)
    t = run(nesterov(0.5, 0.5), prob, 3, jax.random.key(0))
    np.testing.assert_array_equal(t.bits_up, np.arange(4) * 5 * 32)
    np.testing.assert_array_equal(t.bits_down, np.arange(4) * 5 * 32)
    assert t.loss.dtype == np.float32


def test_potential_bound_every_round(x64):
    """THEORY.md §2.1/§2.10: f(x^k) − f* ≤ (1 − 1/√κ)^k (f(x^0) − f* + (μ/2)‖x^0 − x*‖²)."""
    for kappa, key in ((10.0, 0), (100.0, 1), (400.0, 2)):
        prob = _problem(kappa=kappa, key=key)
        L, mu, T = prob.L, prob.mu, 300
        y0 = np.zeros(D)
        _, xs, _ = _hand_loop(nesterov(L=L, mu=mu), prob, T, y0)
        gap = _f(prob, xs) - prob.f_star
        phi0 = gap[0] + 0.5 * mu * np.sum((y0 - prob.x_star) ** 2)
        bound = theory.nesterov_rate(L, mu) ** np.arange(T + 1) * phi0
        ok = gap <= bound + 1e-13 * phi0
        assert ok.all(), (kappa, np.flatnonzero(~ok)[:5], np.max(gap / bound))
        # the bound is not vacuous: the iterates decrease f by orders of magnitude
        assert gap[T] < 1e-3 * gap[0]


def _nest(hp):
    return nesterov(hp["lr"], hp["beta"])


_GD = optax.chain(dgd(), optax.sgd(1.0))  # γ = 1/L with L = 1 for every κ


def _rounds_to(trace, eps=1e-8):
    d = np.asarray(trace.dist_sq).reshape(-1)
    hit = np.flatnonzero(d <= eps * d[0])
    assert hit.size, "did not reach the accuracy"
    return int(np.asarray(trace.step)[hit[0]])


def test_rate_exponent_sqrt_kappa_vs_gd(x64):
    """Rounds to ‖x − x*‖² ≤ 1e-8‖x^0 − x*‖² over κ = 10…1000: slope ≈ 0.5 (THEORY.md §2.10
    tolerance 0.45–0.6) for Nesterov, ≈ 1 (0.9–1.1) for GD. One problem per κ (same shapes, so
    each method compiles once); Nesterov's hyperparameters are traced (a sweep)."""
    kappas = np.geomspace(10.0, 1000.0, 5)
    r_nest, r_gd = [], []
    for i, kappa in enumerate(kappas):
        prob = problems.quadratic(
            2, 10, L=1.0, mu=1.0 / kappa, heterogeneity=1.0, key=10 + i, dtype=jnp.float64
        )
        beta = theory.nesterov_momentum(prob.L, prob.mu)
        hp = {"lr": jnp.array([1.0 / prob.L]), "beta": jnp.array([beta])}
        r_nest.append(_rounds_to(run(_nest, prob, 800, jax.random.key(0), hyperparams=hp)))
        r_gd.append(_rounds_to(run(_GD, prob, int(12 * kappa), jax.random.key(0))))
    slope_nest = np.polyfit(np.log(kappas), np.log(r_nest), 1)[0]
    slope_gd = np.polyfit(np.log(kappas), np.log(r_gd), 1)[0]
    assert 0.45 <= slope_nest <= 0.6, (slope_nest, r_nest)
    assert 0.9 <= slope_gd <= 1.1, (slope_gd, r_gd)
    assert all(n < g for n, g in zip(r_nest[1:], r_gd[1:], strict=True)), (r_nest, r_gd)


def test_traced_hyperparameters_vmap(x64):
    prob = _problem(kappa=20.0)
    y0, T = np.ones(D), 25
    lrs, betas = jnp.array([0.5, 1.0]), jnp.array([0.2, 0.6])

    def final(lr, beta):
        return _hand_loop_traced(nesterov(lr, beta), prob, T, jnp.asarray(y0))

    out = np.asarray(jax.jit(jax.vmap(final))(lrs, betas))
    for i in range(2):
        ref = _numpy_reference(prob, float(lrs[i]), float(betas[i]), T, y0)[0][-1]
        np.testing.assert_allclose(out[i], ref, rtol=0, atol=1e-12)


def _hand_loop_traced(opt, prob, T, y0):
    grad = jax.grad(prob.loss)
    y, s = comm.replicate(y0, prob.num_workers, opt.init)

    def step(carry, _):
        y, s = carry
        g = comm.simulate(grad, prob.num_workers)(y, prob.data)
        u, s = comm.simulate(opt.update, prob.num_workers)(g, s, y)
        return (optax.apply_updates(y, u), s), None

    (y, _), _ = jax.lax.scan(step, (y, s), None, length=T)
    return y[0]


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"learning_rate": 0.0, "momentum": 0.5}, ValueError),
        ({"learning_rate": -1.0, "momentum": 0.5}, ValueError),
        ({"learning_rate": float("nan"), "momentum": 0.5}, ValueError),
        ({"learning_rate": 0.1, "momentum": 1.0}, ValueError),
        ({"learning_rate": 0.1, "momentum": -0.1}, ValueError),
        ({"learning_rate": "0.1", "momentum": 0.5}, TypeError),
        ({"learning_rate": 0.1, "momentum": True}, TypeError),
        ({"momentum": 0.5}, TypeError),  # learning_rate=None needs L
        ({"learning_rate": 0.1, "L": 1.0}, TypeError),  # momentum=None needs mu
        ({"L": 1.0, "mu": 2.0}, ValueError),  # mu > L
        ({"L": -1.0, "mu": 0.1}, ValueError),
    ],
)
def test_bad_hyperparameters(kwargs, exc):
    with pytest.raises(exc):
        nesterov(**kwargs)


def test_bad_gradients_and_extra_args():
    opt = nesterov(0.1, 0.5)
    params = jnp.zeros((2, 3))
    state = comm.simulate(opt.init, 2)(params)
    upd = comm.simulate(opt.update, 2)
    with pytest.raises(ValueError, match="nesterov"):
        upd(jnp.zeros((2, 4)), state, params)
    with pytest.raises(TypeError, match="floating"):
        upd(jnp.zeros((2, 3), jnp.int32), state, params)
    with pytest.raises(TypeError, match="key"):
        comm.simulate(lambda g, s: opt.update(g, s, key=jax.random.key(0)), 2)(params, state)
    with pytest.raises(ValueError, match="nesterov"):
        upd({"w": jnp.zeros((2, 3))}, state, params)
    without_params = comm.simulate(lambda g, s: opt.update(g, s), 2)
    with pytest.raises(ValueError, match="momentum buffer"):
        without_params(jnp.zeros((2, 4)), state)
    u, _ = without_params(jnp.ones((2, 3)), state)  # params are optional
    np.testing.assert_allclose(u, -0.15 * np.ones((2, 3)), rtol=1e-6)
