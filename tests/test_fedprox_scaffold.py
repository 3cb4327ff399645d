"""FedProx, SCAFFOLD and FedPAQ (compressed local steps): round-based methods on the round protocol.

Checked against THEORY.md §2.8 / §2.10 (FedProx's biased exact-prox fixed point and its
γ-inexactness, SCAFFOLD's option II and its convergence to x* without drift, rounds ∝ κ) and
against NumPy per-worker references that replay the documented key path (participants from a
shared permutation of fold_in(k, COIN), FedPAQ's compressor from fold_in(fold_in(k, UPLINK), m)).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxdist import comm
from jaxdist.compressors import identity, perm_k, rand_k, top_k
from jaxdist.experiments import AssumptionWarning, SolverWarning, run
from jaxdist.methods import Oracle, Solver
from jaxdist.methods._base import COIN, UPLINK
from jaxdist.methods._fedprox import fedprox
from jaxdist.methods._local import fedpaq, local_gd
from jaxdist.methods._scaffold import scaffold
from jaxdist.problems import quadratic, quadratic_problem
from jaxdist.theory._local import fedprox_fixed_point, local_gd_fixed_point

M, D = 4, 5
EXACT = Solver(max_steps=3000, rtol=1e-14)


def _problem(num_workers=M, dim=D, dtype=jnp.float64, mu=0.3, delta=0.2):
    return quadratic(
        num_workers, dim, L=1.0, mu=mu, heterogeneity=1.0, delta=delta, key=3, dtype=dtype
    )


def _history(method, prob, num_rounds, key, seeds=None):
    """Per-worker states and infos after every round (a scan under comm.simulate), round t
    keyed fold_in(r, t) as the runner does, r = key (or fold_in(key, s) for each of ``seeds``).
    Returns (states, infos), leaves [M, T, ...] (or [S, M, T, ...] with seeds)."""
    key = jax.random.key(key)

    def per_worker(data_m, params, run_key):
        oracle = Oracle(loss=prob.loss, data=data_m)

        def body(s, t):
            s, info = method.round(s, oracle, jax.random.fold_in(run_key, t))
            return s, ({k: v for k, v in s.items() if k != "ledger"}, info)

        _, hist = lax.scan(body, method.init(params), jnp.arange(num_rounds, dtype=jnp.int32))
        return hist

    n = prob.num_workers
    stacked = jnp.broadcast_to(prob.init_params, (n, *prob.init_params.shape))
    fn = comm.simulate(per_worker, n, in_axes=(0, 0, None))
    if seeds is None:
        return jax.jit(fn)(prob.data, stacked, key)
    keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.asarray(seeds, jnp.uint32))
    return jax.jit(jax.vmap(fn, in_axes=(None, None, 0)))(prob.data, stacked, keys)


def _ledgers(method, prob, num_rounds, key):
    """Each worker's final (up, down) message counts of the first kind."""

    def per_worker(data_m, params):
        oracle = Oracle(loss=prob.loss, data=data_m)

        def body(s, t):
            return method.round(s, oracle, jax.random.fold_in(jax.random.key(key), t))[0], None

        s, _ = lax.scan(body, method.init(params), jnp.arange(num_rounds, dtype=jnp.int32))
        return s["ledger"].up[0], s["ledger"].down[0]

    n = prob.num_workers
    stacked = jnp.broadcast_to(prob.init_params, (n, *prob.init_params.shape))
    up, down = jax.jit(comm.simulate(per_worker, n))(prob.data, stacked)
    return np.asarray(up), np.asarray(down)


def _numpy_data(prob):
    return np.asarray(prob.data["A"], np.float64), np.asarray(prob.data["b"], np.float64)


def _round_key(key, t):
    return jax.random.fold_in(jax.random.key(key), t)


def _parts(key, t, n, S):
    if S is None or S == n:
        return list(range(n))
    k = jax.random.fold_in(_round_key(key, t), COIN)
    return [int(i) for i in np.asarray(jax.random.permutation(k, n))[:S]]


def _chosen(key, T, n, S):
    out = np.zeros((T, n), int)
    for t in range(T):
        out[t, _parts(key, t, n, S)] = 1
    return out


# ---------------------------------------------------------------------------------------------
# NumPy references.


def _ref_fedprox(A, b, x0, mu, T, key, S=None, eta_s=1.0):
    n, d = b.shape
    x = np.array(x0, np.float64)
    out = []
    for t in range(T):
        models = [
            np.linalg.solve(A[m] + mu * np.eye(d), b[m] + mu * x) for m in _parts(key, t, n, S)
        ]
        x = x + eta_s * (np.mean(models, axis=0) - x)
        out.append(x)
    return np.stack(out)


def _ref_scaffold(A, b, x0, lr, K, T, key, S=None, eta_g=1.0):
    """Returns the server x, c and the per-worker c_i after every round, and the mean local
    gradient of each participant along its K steps (NaN for idle workers)."""
    n, d = b.shape
    x, c = np.array(x0, np.float64), np.zeros(d)
    ci = np.zeros((n, d))
    xs, cs, cis, means = [], [], [], []
    for t in range(T):
        part = _parts(key, t, n, S)
        dys, dcs = [], []
        mean_g = np.full((n, d), np.nan)
        new_ci = ci.copy()
        for m in part:
            y, grads = x.copy(), []
            for _ in range(K):
                g = A[m] @ y - b[m]
                grads.append(g)
                y = y - lr * (g - ci[m] + c)
            c_plus = ci[m] - c + (x - y) / (K * lr)
            dys.append(y - x)
            dcs.append(c_plus - ci[m])
            new_ci[m] = c_plus
            mean_g[m] = np.mean(grads, axis=0)
        x = x + eta_g * np.mean(dys, axis=0)
        c = c + np.sum(dcs, axis=0) / n
        ci = new_ci
        xs.append(x)
        cs.append(c)
        cis.append(ci.copy())
        means.append(mean_g)
    return np.stack(xs), np.stack(cs), np.stack(cis), np.stack(means)


def _ref_fedpaq(A, b, x0, lr, H, T, key, c, S=None, eta_s=1.0):
    """FedPAQ replaying the compressor draws: worker m of round t compresses with
    fold_in(fold_in(k_t, UPLINK), m) (k_t itself for a shared-key operator)."""
    n, _ = b.shape
    x = np.array(x0, np.float64)
    out = []
    for t in range(T):
        k_up = jax.random.fold_in(_round_key(key, t), UPLINK)
        msgs = []
        for m in _parts(key, t, n, S):
            y = x.copy()
            for _ in range(H):
                y = y - lr * (A[m] @ y - b[m])
            k = k_up if c.shared_key else jax.random.fold_in(k_up, m)
            kw = {"worker": m} if c.needs_axis else {}
            msg = c.compress(k, jnp.asarray(y - x, jnp.float64), **kw)
            msgs.append(np.asarray(msg, np.float64))
        x = x + eta_s * np.mean(msgs, axis=0)
        out.append(x)
    return np.stack(out)


# ---------------------------------------------------------------------------------------------
# FedProx.


def test_fedprox_fixed_point_is_biased_and_shrinks_with_mu(x64):
    prob = _problem()
    A, b = _numpy_data(prob)
    x_star = np.asarray(prob.x_star)
    mus = (0.3, 1.0, 3.0, 30.0, 300.0)
    bias = [np.linalg.norm(fedprox_fixed_point(A, b, mu) - x_star) for mu in mus]
    assert bias[0] > 1e-2
    assert all(a > c for a, c in zip(bias, bias[1:], strict=False))  # decreasing in μ
    assert bias[-1] > 0 and bias[-1] < 1e-2 * bias[0]  # tends to x* only as μ → ∞
    # the round map's fixed point: w = mean_m prox_m(w)
    w = fedprox_fixed_point(A, b, 1.0)
    prox = [np.linalg.solve(A[m] + np.eye(D), b[m] + w) for m in range(M)]
    np.testing.assert_allclose(np.mean(prox, axis=0), w, atol=1e-13)
    # identical Hessians: no bias
    same = np.broadcast_to(A.mean(0), A.shape)
    np.testing.assert_allclose(
        fedprox_fixed_point(same, b, 1.0), np.linalg.solve(A.mean(0), b.mean(0)), atol=1e-12
    )
    with pytest.raises(ValueError, match="mu"):
        fedprox_fixed_point(A, b, 0.0)


def test_fedprox_converges_to_the_exact_prox_fixed_point(x64):
    prob = _problem()
    A, b = _numpy_data(prob)
    mus = jnp.array([0.3, 1.0, 3.0])
    trace = run(
        lambda hp: fedprox(hp["mu"], local_smoothness=prob.L_max, solver=EXACT),
        prob,
        300,
        0,
        hyperparams={"mu": mus},
        log_every=300,
    )
    hist = _history(fedprox(1.0, local_smoothness=prob.L_max, solver=EXACT), prob, 300, 0)
    x_last = np.asarray(hist[0]["x"])[:, -1]
    np.testing.assert_allclose(x_last[0], fedprox_fixed_point(A, b, 1.0), rtol=0, atol=1e-10)
    x_star = np.asarray(prob.x_star)
    for i, mu in enumerate(np.asarray(mus)):
        want = np.sum((fedprox_fixed_point(A, b, float(mu)) - x_star) ** 2)
        np.testing.assert_allclose(trace.dist_sq[i, -1], want, rtol=1e-9)
    assert np.all(trace.inner_unsolved == 0)
    np.testing.assert_array_equal(trace.grad_evals, trace.inner_steps)
    assert np.all(trace.inner_steps[:, -1] > 300)  # at least one solver step per round


def test_fedprox_numpy_reference_partial_participation_and_bits(x64):
    n, S, T, mu = 6, 2, 15, 0.7
    prob = _problem(num_workers=n)
    A, b = _numpy_data(prob)
    method = fedprox(
        mu, local_smoothness=prob.L_max, solver=EXACT, num_participants=S, server_learning_rate=0.8
    )
    ref = _ref_fedprox(A, b, prob.init_params, mu, T, 5, S=S, eta_s=0.8)
    states, infos = _history(method, prob, T, 5)
    for m in range(n):
        np.testing.assert_allclose(np.asarray(states["x"])[m], ref, rtol=0, atol=1e-10)
    chosen = _chosen(5, T, n, S)
    steps = np.asarray(infos["inner_steps"]).T  # [T, n]
    assert np.all(steps[chosen == 1] >= 1) and np.all(steps[chosen == 0] == 0)
    np.testing.assert_array_equal(np.asarray(infos["grad_evals"]), np.asarray(infos["inner_steps"]))
    np.testing.assert_array_equal(np.asarray(infos["inner_unsolved"]), 0)
    up, down = _ledgers(method, prob, T, 5)
    np.testing.assert_array_equal(up, chosen.sum(0))
    np.testing.assert_array_equal(down, chosen.sum(0))
    trace = run(method, prob, T, 5, log_every=5)
    np.testing.assert_array_equal(trace.rounds, [0, 5, 10, 15])
    np.testing.assert_array_equal(trace.bits_up_total, np.array([0, 5, 10, 15]) * S * D * 64)
    np.testing.assert_array_equal(trace.bits_down_total, np.array([0, 5, 10, 15]) * S * D * 64)


def test_fedprox_solves_are_gamma_inexact(x64):
    """One participant per round (S = 1, server step 1), so w^{t+1} is that worker's solution:
    ‖∇h_m(w^{t+1})‖ <= γ‖∇f_m(w^t)‖ holds for every solve, and inexact solves are cheaper."""
    n, S, T, mu, gamma = 4, 1, 25, 0.5, 0.3
    prob = _problem(num_workers=n)
    A, b = _numpy_data(prob)
    L_f = prob.L_max
    states, infos = _history(
        fedprox(mu, local_smoothness=L_f, inexactness=gamma, num_participants=S), prob, T, 2
    )
    _, infos_exact = _history(
        fedprox(mu, local_smoothness=L_f, num_participants=S, solver=EXACT), prob, T, 2
    )
    xs = np.concatenate([np.asarray(prob.init_params)[None], np.asarray(states["x"])[0]])
    ratios = []
    for t in range(T):
        (m,) = _parts(2, t, n, S)
        w, z = xs[t], xs[t + 1]
        grad_h = A[m] @ z - b[m] + mu * (z - w)
        ratios.append(np.linalg.norm(grad_h) / np.linalg.norm(A[m] @ w - b[m]))
    ratios = np.array(ratios)
    assert np.all(ratios <= gamma * (1 + 1e-12))
    assert np.max(ratios) > 1e-2 * gamma  # really inexact, not solved to machine precision
    steps = np.asarray(infos["inner_steps"]).sum(0)  # one participant: the sum over workers
    steps_exact = np.asarray(infos_exact["inner_steps"]).sum(0)
    assert np.all(steps >= 1) and np.all(steps < steps_exact)
    np.testing.assert_array_equal(np.asarray(infos["inner_unsolved"]), 0)


def test_fedprox_small_budget_reports_unsolved_and_warns(x64):
    prob = _problem()
    method = fedprox(0.1, local_smoothness=prob.L_max, solver=Solver(max_steps=2, rtol=1e-12))
    with pytest.warns(SolverWarning, match="subproblem"):
        trace = run(method, prob, 6, 0, log_every=3)
    np.testing.assert_array_equal(trace.inner_unsolved, [0, 3, 6])  # every worker, every round
    np.testing.assert_array_equal(trace.inner_steps, [0, 6, 12])
    # a bound smaller than the problem's L_max is reported
    with pytest.warns(AssumptionWarning, match="L_max"):
        run(fedprox(1.0, local_smoothness=0.5 * prob.L_max, solver=EXACT), prob, 2, 0)


def test_fedprox_float32_default_solver_stops_at_rounding():
    """float32 cannot certify rtol = 1e-10: the default solver stops at the rounding floor
    (a few dozen steps, every solve converged) instead of spending its budget and warning."""
    prob = _problem(dtype=jnp.float32)
    method = fedprox(0.1, local_smoothness=prob.L_max)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SolverWarning)
        trace = run(method, prob, 20, 0, log_every=20)
    assert int(trace.inner_unsolved[-1]) == 0
    assert int(trace.inner_steps[-1]) < 0.2 * 20 * M * 500  # far below the budget


# ---------------------------------------------------------------------------------------------
# SCAFFOLD.


def test_scaffold_converges_to_x_star_where_local_gd_drifts(x64):
    prob = _problem()
    A, b = _numpy_data(prob)
    K, lr = 5, 0.5 / (5 * prob.L_max)
    ours = run(scaffold(lr, K), prob, 400, 0, log_every=100)
    assert ours.dist_sq[-1] < 1e-20  # ‖x − x*‖ < 1e-10
    drift = run(local_gd(lr, K), prob, 400, 0, log_every=100)
    x_fp = local_gd_fixed_point(A, b, lr, K)
    want = np.sum((x_fp - np.asarray(prob.x_star)) ** 2)
    np.testing.assert_allclose(drift.dist_sq[-1], want, rtol=1e-8)
    assert want > 1e-6
    np.testing.assert_array_equal(ours.grad_evals, np.arange(0, 401, 100) * K)
    np.testing.assert_array_equal(ours.bits_up, np.arange(0, 401, 100) * 2 * D * 64)
    np.testing.assert_array_equal(ours.bits_down, np.arange(0, 401, 100) * 2 * D * 64)


def test_scaffold_numpy_reference_partial_participation(x64):
    n, S, K, T, lr = 8, 3, 4, 12, 0.3
    prob = _problem(num_workers=n)
    A, b = _numpy_data(prob)
    method = scaffold(lr, K, num_participants=S, server_learning_rate=0.8)
    xs, cs, cis, means = _ref_scaffold(A, b, prob.init_params, lr, K, T, 7, S=S, eta_g=0.8)
    states, infos = _history(method, prob, T, 7)
    for m in range(n):
        np.testing.assert_allclose(np.asarray(states["x"])[m], xs, rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(states["c"])[m], cs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.swapaxes(np.asarray(states["c_i"]), 0, 1), cis, atol=1e-12)
    # c = (1/N) Σ c_i throughout; idle workers keep their c_i
    np.testing.assert_allclose(cs, cis.mean(axis=1), atol=1e-12)
    chosen = _chosen(7, T, n, S)
    assert 0 < chosen[:, 0].sum() < T
    for t in range(1, T):
        idle = chosen[t] == 0
        np.testing.assert_array_equal(
            np.asarray(states["c_i"])[idle, t], np.asarray(states["c_i"])[idle, t - 1]
        )
    # option II: c_i⁺ is the mean local gradient along the K steps (participants)
    took_part = chosen == 1
    np.testing.assert_allclose(cis[took_part], means[took_part], atol=1e-12)
    np.testing.assert_array_equal(np.asarray(infos["grad_evals"]).T, K * chosen)
    up, down = _ledgers(method, prob, T, 7)
    np.testing.assert_array_equal(up, 2 * chosen.sum(0))
    np.testing.assert_array_equal(down, 2 * chosen.sum(0))
    trace = run(method, prob, T, 7, log_every=4)
    np.testing.assert_array_equal(trace.rounds, [0, 4, 8, 12])
    np.testing.assert_array_equal(trace.bits_up_total, np.array([0, 4, 8, 12]) * S * 2 * D * 64)
    np.testing.assert_allclose(
        trace.dist_sq[-1], np.sum((xs[-1] - np.asarray(prob.x_star)) ** 2), rtol=1e-10
    )


def _kappa_problem(kappa, n=4, d=10, seed=0):
    """Quadratics sharing one eigenbasis with common extreme eigenvalues 1/κ and 1 (so κ(f) =
    κ(f_m) = κ exactly), different middle eigenvalues and b_m (THEORY.md §2.10)."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    mu = 1.0 / kappa
    A = []
    for _ in range(n):
        lam = np.concatenate([[mu], np.exp(rng.uniform(np.log(mu), 0.0, d - 2)), [1.0]])
        A.append((Q * lam) @ Q.T)
    b = rng.standard_normal((n, d))
    return quadratic_problem(np.stack(A), b, dtype=jnp.float64)


@pytest.mark.slow
def test_scaffold_rounds_grow_linearly_in_kappa(x64):
    """η_l = 1/(KL), η_g = 1: rounds to ‖x − x*‖² <= 1e-8‖x⁰ − x*‖² grow like κ^≈1 (THEORY.md
    §2.10 measured 1.03)."""
    K, kappas, rounds = 5, np.array([10.0, 30.0, 100.0, 300.0]), []
    for kappa in kappas:
        prob = _kappa_problem(kappa)
        T = int(12 * kappa * np.log(10.0) + 100)
        trace = run(scaffold(1.0 / (K * prob.L), K), prob, T, 0)
        rel = trace.dist_sq / trace.dist_sq[0]
        hit = np.nonzero(rel <= 1e-8)[0]
        assert hit.size, f"kappa={kappa}: not reached in {T} rounds"
        rounds.append(hit[0])
    slope = np.polyfit(np.log(kappas), np.log(rounds), 1)[0]
    print("scaffold rounds", rounds, "slope", slope)
    assert 0.9 <= slope <= 1.1, (slope, rounds)  # THEORY.md §2.10 tolerance


# ---------------------------------------------------------------------------------------------
# FedPAQ.


@pytest.mark.parametrize("S", [None, 3])
def test_fedpaq_with_identity_is_local_gd(x64, S):
    prob = _problem(num_workers=6)
    ours = run(fedpaq(0.4, 3, identity(), num_participants=S), prob, 20, 2, log_every=5)
    ref = run(local_gd(0.4, 3, num_participants=S), prob, 20, 2, log_every=5)
    np.testing.assert_array_equal(ours.dist_sq, ref.dist_sq)
    np.testing.assert_array_equal(ours.bits_up_total, ref.bits_up_total)
    np.testing.assert_array_equal(ours.bits_down_total, ref.bits_down_total)
    np.testing.assert_array_equal(ours.grad_evals, ref.grad_evals)


@pytest.mark.parametrize(
    "compressor,S",
    [
        (rand_k(2), None),
        (rand_k(2), 3),
        (rand_k(2, shared=True), 3),
        (perm_k(num_workers=6), None),
    ],
    ids=["rand_k", "rand_k_partial", "shared_rand_k_partial", "perm_k"],
)
def test_fedpaq_numpy_reference_and_bits(x64, compressor, S):
    n, H, T, lr = 6, 3, 6, 0.3
    prob = _problem(num_workers=n)
    A, b = _numpy_data(prob)
    method = fedpaq(lr, H, compressor, num_participants=S, server_learning_rate=0.5)
    ref = _ref_fedpaq(A, b, prob.init_params, lr, H, T, 4, compressor, S=S, eta_s=0.5)
    states, _ = _history(method, prob, T, 4)
    for m in range(n):
        np.testing.assert_allclose(np.asarray(states["x"])[m], ref, rtol=0, atol=1e-12)
    trace = run(method, prob, T, 4, log_every=3)
    s = n if S is None else S
    msg = compressor.bits(jnp.zeros(D, jnp.float64))
    assert msg < D * 64
    np.testing.assert_array_equal(trace.bits_up_total, np.array([0, 3, 6]) * s * msg)
    np.testing.assert_array_equal(trace.bits_down_total, np.array([0, 3, 6]) * s * D * 64)
    if S is not None:  # each worker's ledger holds exactly its own participations
        up, down = _ledgers(method, prob, T, 4)
        chosen = _chosen(4, T, n, S)
        np.testing.assert_array_equal(up, chosen.sum(0))
        np.testing.assert_array_equal(down, chosen.sum(0))
    np.testing.assert_allclose(
        trace.dist_sq[-1], np.sum((ref[-1] - np.asarray(prob.x_star)) ** 2), rtol=1e-10
    )


def test_fedpaq_update_is_unbiased(x64):
    """Monte Carlo over round keys: the mean of FedPAQ's first step is local GD's first step,
    within 5 standard errors per coordinate (the exact Rand-K variance of the average)."""
    prob = _problem()
    A, b = _numpy_data(prob)
    H, lr, k, seeds = 3, 0.3, 2, 4000
    states, _ = _history(fedpaq(lr, H, rand_k(k)), prob, 1, 0, seeds=np.arange(seeds))
    x1 = np.asarray(states["x"])[:, 0, 0]  # [seeds, d]
    x0 = np.asarray(prob.init_params)
    v = []
    for m in range(M):
        y = x0.copy()
        for _ in range(H):
            y = y - lr * (A[m] @ y - b[m])
        v.append(y - x0)
    v = np.array(v)
    want = x0 + v.mean(0)
    var = (D / k - 1.0) * np.sum(v**2, axis=0) / M**2  # Var of (1/M)Σ C_m(v_m), per coordinate
    se = np.sqrt(var / seeds)
    assert np.all(np.abs(x1.mean(0) - want) <= 5 * se)
    np.testing.assert_allclose(x1.var(0), var, rtol=0.15)  # and the variance is Rand-K's


def test_fedpaq_converges_to_a_neighbourhood(x64):
    """With a constant step FedPAQ reaches a neighbourhood of local GD's fixed point x_fp
    whose size shrinks with the server step (≈ ∝ η_s: the individual updates do not vanish
    at x_fp, so the compression noise stays)."""
    prob = _problem()
    A, b = _numpy_data(prob)
    lr, H, T = 0.3, 3, 1500
    x_fp = local_gd_fixed_point(A, b, lr, H)
    start = np.sum((np.asarray(prob.init_params) - x_fp) ** 2)
    floors = []
    for eta_s in (0.3, 0.03):
        states, _ = _history(fedpaq(lr, H, rand_k(2), server_learning_rate=eta_s), prob, T, 1)
        err = np.sum((np.asarray(states["x"])[0] - x_fp) ** 2, axis=1)
        floors.append(err[T // 2 :].mean())
    print("fedpaq floors / start", np.array(floors) / start)
    assert floors[1] < 2e-2 * start  # a neighbourhood of x_fp
    assert floors[1] > 1e-4 * start  # which does not shrink to 0
    assert floors[1] < 0.2 * floors[0]  # smaller with a smaller server step (≈ 10x here)


# ---------------------------------------------------------------------------------------------
# Backends, validation.


@pytest.mark.parametrize(
    "make",
    [
        lambda p: scaffold(0.2, 3, num_participants=3),
        lambda p: fedpaq(0.3, 2, rand_k(2), num_participants=3),
        lambda p: fedprox(0.5, local_smoothness=p.L_max, inexactness=0.01, num_participants=3),
    ],
    ids=["scaffold_partial", "fedpaq_partial", "fedprox_partial"],
)
def test_vmap_equals_shard_map(make):
    prob = _problem(num_workers=8, dtype=jnp.float32)
    method = make(prob)
    vm = run(method, prob, 12, 4, log_every=4)
    sm = run(method, prob, 12, 4, log_every=4, backend="shard_map")
    np.testing.assert_allclose(sm.dist_sq, vm.dist_sq, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sm.loss, vm.loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(sm.rounds, vm.rounds)
    np.testing.assert_array_equal(sm.bits_up_total, vm.bits_up_total)
    np.testing.assert_array_equal(sm.grad_evals, vm.grad_evals)


def test_bad_inputs():
    for mu in (0.0, -1.0):
        with pytest.raises(ValueError, match="mu"):
            fedprox(mu, local_smoothness=1.0)
    for g in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="inexactness"):
            fedprox(1.0, local_smoothness=1.0, inexactness=g)
    with pytest.raises(ValueError, match="local_smoothness"):
        fedprox(1.0, local_smoothness=0.0)
    with pytest.raises(TypeError, match="solver"):
        fedprox(1.0, local_smoothness=1.0, solver=100)
    with pytest.raises(ValueError, match="server_learning_rate"):
        fedprox(1.0, local_smoothness=1.0, server_learning_rate=0.0)
    for lr in (0.0, -0.1):
        with pytest.raises(ValueError, match="local_learning_rate"):
            scaffold(lr, 2)
        with pytest.raises(ValueError, match="learning_rate"):
            fedpaq(lr, 2, rand_k(2))
    with pytest.raises(ValueError, match="local_steps"):
        scaffold(0.1, 0)
    with pytest.raises(ValueError, match="local_steps"):
        fedpaq(0.1, 0, rand_k(2))
    with pytest.raises(ValueError, match="server_learning_rate"):
        scaffold(0.1, 2, server_learning_rate=-1.0)
    with pytest.raises(ValueError, match="num_participants"):
        scaffold(0.1, 2, num_participants=0)
    with pytest.raises(ValueError, match=r"unbiased compressor.*top_k"):
        fedpaq(0.1, 2, top_k(2))
    with pytest.raises(TypeError, match="compressor"):
        fedpaq(0.1, 2, None)
    prob = _problem(dtype=jnp.float32)
    for method in (
        scaffold(0.1, 2, num_participants=M + 1),
        fedpaq(0.1, 2, rand_k(2), num_participants=M + 1),
        fedprox(1.0, local_smoothness=prob.L_max, num_participants=M + 1),
    ):
        with pytest.raises(ValueError, match="num_participants=5 exceeds"):
            run(method, prob, 2, 0)
    with pytest.raises(ValueError, match="reads the worker axis"):
        run(fedpaq(0.1, 2, perm_k(num_workers=M), num_participants=2), prob, 2, 0)
