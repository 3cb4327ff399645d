"""Local-step round-based methods: local GD / FedAvg (partial participation) and Scaffnew.

Checked against THEORY.md §2.8 / §2.10 (the local-GD fixed point, Scaffnew's exact convergence
and Lyapunov bound) and against NumPy per-worker references that replay the documented key path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from jaxdist import comm, theory
from jaxdist.compressors._sampling import bernoulli_coin
from jaxdist.experiments import run
from jaxdist.methods import Oracle, dgd
from jaxdist.methods._base import COIN
from jaxdist.methods._local import LOCAL, fedavg, local_gd, local_sgd, scaffnew
from jaxdist.problems import logistic_regression, quadratic, sample_minibatch

M, D = 4, 5


def _problem(num_workers=M, dim=D, dtype=jnp.float64, delta=0.05):
    return quadratic(
        num_workers, dim, L=1.0, mu=0.1, heterogeneity=1.0, delta=delta, key=3, dtype=dtype
    )


def _history(method, prob, num_rounds, key, seeds=None):
    """Per-worker states after every round (a scan under comm.simulate), keys as the runner's:
    round t gets fold_in(r, t) with r = key, or r = fold_in(key, s) for each of ``seeds``.
    Returns the stacked states, leaves [M, T, ...] (or [S, M, T, ...] with seeds)."""
    key = jax.random.key(key) if isinstance(key, int) else key

    def per_worker(data_m, params, run_key):
        oracle = Oracle(loss=prob.loss, data=data_m)

        def body(s, t):
            s, _ = method.round(s, oracle, jax.random.fold_in(run_key, t))
            return s, {k: v for k, v in s.items() if k != "ledger"}

        s0 = method.init(params)
        _, hist = lax.scan(body, s0, jnp.arange(num_rounds, dtype=jnp.int32))
        return hist

    n = prob.num_workers
    stacked = jnp.broadcast_to(prob.init_params, (n, *prob.init_params.shape))
    fn = comm.simulate(per_worker, n, in_axes=(0, 0, None))
    if seeds is None:
        return jax.jit(fn)(prob.data, stacked, key)
    keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.asarray(seeds, jnp.uint32))
    return jax.jit(jax.vmap(fn, in_axes=(None, None, 0)))(prob.data, stacked, keys)


def _numpy_data(prob):
    return np.asarray(prob.data["A"], np.float64), np.asarray(prob.data["b"], np.float64)


def _round_key(key, t):
    return jax.random.fold_in(jax.random.key(key), t)


# ---------------------------------------------------------------------------------------------
# NumPy references (per-worker loops).


def _ref_local_gd(A, b, x0, gamma, H, num_rounds, key, S=None, eta_s=1.0):
    n = A.shape[0]
    x = np.array(x0, np.float64)
    out = []
    for t in range(num_rounds):
        if S is None or S == n:
            part = list(range(n))
        else:
            k = jax.random.fold_in(_round_key(key, t), COIN)
            part = [int(i) for i in np.asarray(jax.random.permutation(k, n))[:S]]
        models = []
        for m in part:
            y = x.copy()
            for _ in range(H):
                y = y - gamma * (A[m] @ y - b[m])
            models.append(y)
        x = x + eta_s * (np.mean(models, axis=0) - x)
        out.append(x)
    return np.stack(out)


def _coins(key, p, num_rounds):
    return np.array(
        [
            bool(bernoulli_coin(jax.random.fold_in(_round_key(key, t), COIN), p))
            for t in range(num_rounds)
        ]
    )


def _ref_scaffnew(A, b, x0, gamma, p, coins):
    n = A.shape[0]
    x = np.stack([np.array(x0, np.float64)] * n)
    h = np.zeros_like(x)
    xs, hs = [], []
    for theta in coins:
        x_hat = np.stack([x[m] - gamma * (A[m] @ x[m] - b[m] - h[m]) for m in range(n)])
        if theta:
            avg = np.mean([x_hat[j] - (gamma / p) * h[j] for j in range(n)], axis=0)
            x_new = np.stack([avg] * n)
        else:
            x_new = x_hat
        h = h + (p / gamma) * (x_new - x_hat)
        x = x_new
        xs.append(x)
        hs.append(h)
    return np.stack(xs), np.stack(hs)


# ---------------------------------------------------------------------------------------------
# Local GD / FedAvg.


def test_local_gd_converges_to_the_drift_fixed_point(x64):
    prob = _problem()
    A, b = _numpy_data(prob)
    gamma = 0.5 / float(np.max(prob.L_m))
    drift = []
    for H in (1, 2, 8):
        hist = _history(local_gd(gamma, H), prob, 400, 0)
        x_fp = theory.local_gd_fixed_point(A, b, gamma, H)
        x_last = np.asarray(hist["x"])[:, -1]
        np.testing.assert_allclose(x_last, np.broadcast_to(x_fp, x_last.shape), atol=1e-10)
        drift.append(np.linalg.norm(x_fp - np.asarray(prob.x_star)))
    assert drift[0] < 1e-10  # H = 1 is GD: no drift
    assert drift[0] < drift[1] < drift[2]  # the drift grows with H
    assert drift[2] > 1e-3


def test_local_gd_with_one_step_is_gd(x64):
    prob = _problem()
    gamma = 0.7
    ours = run(local_gd(gamma, 1), prob, 30, 0)
    ref = run(optax.chain(dgd(), optax.sgd(gamma)), prob, 30, 0)
    np.testing.assert_allclose(ours.dist_sq, ref.dist_sq, rtol=1e-12, atol=1e-24)
    np.testing.assert_allclose(ours.loss, ref.loss, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(ours.bits_up, ref.bits_up)
    np.testing.assert_array_equal(ours.rounds, ref.rounds)


def test_local_gd_counts_and_numpy_reference(x64):
    prob = _problem()
    A, b = _numpy_data(prob)
    H, T = 3, 12
    trace = run(local_gd(0.3, H, server_learning_rate=0.8), prob, T, 0, log_every=4)
    np.testing.assert_array_equal(trace.rounds, [0, 4, 8, 12])
    np.testing.assert_array_equal(trace.bits_up, np.array([0, 4, 8, 12]) * D * 64)
    np.testing.assert_array_equal(trace.bits_down, np.array([0, 4, 8, 12]) * D * 64)
    np.testing.assert_array_equal(trace.bits_up_total, np.array([0, 4, 8, 12]) * M * D * 64)
    np.testing.assert_array_equal(trace.grad_evals, np.array([0, 4, 8, 12]) * H)
    assert trace.agreed
    ref = _ref_local_gd(A, b, prob.init_params, 0.3, H, T, 0, eta_s=0.8)
    hist = _history(local_gd(0.3, H, server_learning_rate=0.8), prob, T, 0)
    for m in range(M):
        np.testing.assert_allclose(np.asarray(hist["x"])[m], ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        trace.dist_sq[-1], np.sum((ref[-1] - np.asarray(prob.x_star)) ** 2), rtol=1e-12
    )


def test_partial_participation_bits_and_reference(x64):
    n, S, H, T = 8, 3, 2, 10
    prob = _problem(num_workers=n)
    A, b = _numpy_data(prob)
    method = fedavg(0.4, H, num_participants=S)
    trace = run(method, prob, T, 5, log_every=5)
    np.testing.assert_array_equal(trace.rounds, [0, 5, 10])
    np.testing.assert_array_equal(trace.bits_up_total, np.array([0, 5, 10]) * S * D * 64)
    np.testing.assert_array_equal(trace.bits_down_total, np.array([0, 5, 10]) * S * D * 64)
    # per worker: at most every round, and some worker sat out (the max is below T rounds)
    assert trace.bits_up[-1] <= T * D * 64
    assert trace.grad_evals[-1] <= T * H and trace.grad_evals[-1] % H == 0
    ref = _ref_local_gd(A, b, prob.init_params, 0.4, H, T, 5, S=S)
    hist = _history(method, prob, T, 5)
    np.testing.assert_allclose(np.asarray(hist["x"])[0], ref, rtol=0, atol=1e-12)
    # the participants differ between rounds (a fresh shared draw each round)
    parts = {
        tuple(
            sorted(
                np.asarray(jax.random.permutation(jax.random.fold_in(_round_key(5, t), COIN), n))[
                    :S
                ]
            )
        )
        for t in range(T)
    }
    assert len(parts) > 1


def test_partial_participation_ledgers_per_worker(x64):
    """Each worker's ledger holds exactly its own participations; grad_evals = H · those."""
    n, S, H, T = 8, 3, 2, 7
    prob = _problem(num_workers=n)
    method = local_gd(0.4, H, num_participants=S)

    def per_worker(data_m, params):
        oracle = Oracle(loss=prob.loss, data=data_m)

        def body(s, t):
            s, info = method.round(s, oracle, jax.random.fold_in(jax.random.key(1), t))
            return s, info["grad_evals"]

        s, evals = lax.scan(body, method.init(params), jnp.arange(T, dtype=jnp.int32))
        return s["ledger"].up[0], s["ledger"].down[0], evals

    stacked = jnp.broadcast_to(prob.init_params, (n, D))
    up, down, evals = jax.jit(comm.simulate(per_worker, n))(prob.data, stacked)
    chosen = np.zeros((T, n), int)
    for t in range(T):
        k = jax.random.fold_in(jax.random.fold_in(jax.random.key(1), t), COIN)
        chosen[t, np.asarray(jax.random.permutation(k, n))[:S]] = 1
    np.testing.assert_array_equal(np.asarray(up), chosen.sum(0))
    np.testing.assert_array_equal(np.asarray(down), chosen.sum(0))
    np.testing.assert_array_equal(np.asarray(evals), H * chosen.T)


def test_all_participants_equal_full_participation(x64):
    prob = _problem()
    full = run(local_gd(0.4, 3), prob, 20, 2)
    all_s = run(local_gd(0.4, 3, num_participants=M), prob, 20, 2)
    np.testing.assert_allclose(all_s.dist_sq, full.dist_sq, rtol=1e-12, atol=1e-28)
    np.testing.assert_array_equal(all_s.bits_up_total, full.bits_up_total)
    # aliases are the same method
    alias = run(local_sgd(0.4, 3), prob, 20, 2)
    np.testing.assert_array_equal(alias.dist_sq, full.dist_sq)


# ---------------------------------------------------------------------------------------------
# Scaffnew.


def test_scaffnew_converges_to_x_star_and_counts_heads(x64):
    prob = _problem()
    L, mu = float(prob.L), float(prob.mu)
    gamma, p = theory.scaffnew_stepsize(L), theory.scaffnew_probability(L, mu)
    T = 600
    trace = run(scaffnew(gamma, p), prob, T, 0, log_every=100)
    assert trace.dist_sq[-1] < 1e-20
    assert trace.agreed  # params is the last averaged model, the same on every worker
    coins = _coins(0, p, T)
    heads = np.concatenate([[0], np.cumsum(coins)])[::100]
    np.testing.assert_array_equal(trace.rounds, heads)
    np.testing.assert_array_equal(trace.communicated, heads)
    np.testing.assert_array_equal(trace.bits_up, heads * D * 64)
    np.testing.assert_array_equal(trace.grad_evals, np.arange(0, T + 1, 100))
    # about p·T communications, far fewer than rounds
    assert 0.5 * p * T < heads[-1] < 1.5 * p * T


def test_scaffnew_matches_numpy_reference(x64):
    prob = _problem()
    A, b = _numpy_data(prob)
    gamma, p, T = 0.8, 0.3, 40
    coins = _coins(7, p, T)
    assert 0 < coins.sum() < T
    xs, hs = _ref_scaffnew(A, b, prob.init_params, gamma, p, coins)
    hist = _history(scaffnew(gamma, p), prob, T, 7)
    np.testing.assert_allclose(np.swapaxes(np.asarray(hist["x"]), 0, 1), xs, atol=1e-12)
    np.testing.assert_allclose(np.swapaxes(np.asarray(hist["h"]), 0, 1), hs, atol=1e-12)
    assert np.max(np.abs(np.asarray(hist["h"]).sum(0))) < 1e-12  # Σ_m h_m = 0
    # the server model is the last averaged model
    last = np.maximum.accumulate(np.where(coins, np.arange(T), -1))
    server = np.asarray(hist["server"])[0]
    for t in range(T):
        want = np.asarray(prob.init_params) if last[t] < 0 else xs[last[t], 0]
        np.testing.assert_allclose(server[t], want, atol=1e-12)


def test_scaffnew_with_p_one_is_gd(x64):
    prob = _problem()
    gamma = 0.9
    ours = run(scaffnew(gamma, 1.0), prob, 30, 0)
    ref = run(optax.chain(dgd(), optax.sgd(gamma)), prob, 30, 0)
    np.testing.assert_allclose(ours.dist_sq, ref.dist_sq, rtol=1e-12, atol=1e-24)
    np.testing.assert_array_equal(ours.rounds, np.arange(31))
    np.testing.assert_array_equal(ours.bits_up, ref.bits_up)


def test_scaffnew_lyapunov_decreases_in_expectation(x64):
    prob = _problem()
    A, b = _numpy_data(prob)
    L, mu = float(prob.L), float(prob.mu)
    gamma, p = 1.0 / L, 0.4
    x_star = np.asarray(prob.x_star)
    h_star = np.einsum("mij,j->mi", A, x_star) - b  # ∇f_m(x*)
    T, seeds = 60, 8
    weight = theory.scaffnew_lyapunov_weight(gamma, p)
    hist = _history(scaffnew(gamma, p), prob, T, 11, seeds=np.arange(seeds))
    x, h = np.asarray(hist["x"]), np.asarray(hist["h"])  # [S, M, T, d]
    psi = np.sum((x - x_star) ** 2, axis=(1, 3)) + weight * np.sum(
        (h - h_star[:, None]) ** 2, axis=(1, 3)
    )
    psi = np.mean(psi, axis=0)
    psi0 = M * np.sum((np.asarray(prob.init_params) - x_star) ** 2) + weight * np.sum(h_star**2)
    rate = theory.scaffnew_rate(gamma, mu, p)
    bound = psi0 * rate ** np.arange(1, T + 1)
    # E Ψ_t <= (1 − ζ)^t Ψ_0 (THEORY.md §2.8 Thm), Monte Carlo over the seeds
    assert np.all(psi <= bound)
    assert psi[-1] < 1e-3 * psi0


# ---------------------------------------------------------------------------------------------
# Backends, validation.


@pytest.mark.parametrize(
    "method",
    [local_gd(0.4, 2, num_participants=3), scaffnew(0.8, 0.3)],
    ids=["local_gd_partial", "scaffnew"],
)
def test_vmap_equals_shard_map(method):
    prob = _problem(num_workers=8, dtype=jnp.float32)
    vm = run(method, prob, 20, 4, log_every=5)
    sm = run(method, prob, 20, 4, log_every=5, backend="shard_map")
    np.testing.assert_allclose(sm.dist_sq, vm.dist_sq, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sm.loss, vm.loss, rtol=1e-5)
    np.testing.assert_array_equal(sm.rounds, vm.rounds)
    np.testing.assert_array_equal(sm.bits_up_total, vm.bits_up_total)
    np.testing.assert_array_equal(sm.grad_evals, vm.grad_evals)


def test_bad_inputs():
    for lr in (0.0, -0.1):
        with pytest.raises(ValueError, match="learning_rate"):
            local_gd(lr, 2)
        with pytest.raises(ValueError, match="learning_rate"):
            scaffnew(lr, 0.5)
    with pytest.raises(ValueError, match="server_learning_rate"):
        local_gd(0.1, 2, server_learning_rate=0.0)
    with pytest.raises(ValueError, match="local_steps"):
        local_gd(0.1, 0)
    with pytest.raises(TypeError, match="local_steps"):
        local_gd(0.1, 2.0)
    with pytest.raises(ValueError, match="num_participants"):
        local_gd(0.1, 2, num_participants=0)
    for p in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"p must be in \(0, 1\]"):
            scaffnew(0.1, p)
    prob = _problem(dtype=jnp.float32)
    with pytest.raises(ValueError, match="num_participants=5 exceeds"):
        run(local_gd(0.1, 2, num_participants=M + 1), prob, 2, 0)


def test_local_sgd_minibatches_follow_the_key_path(x64):
    """With a batch size, local step h of round t of worker m draws its minibatch from
    worker_key(fold_in(fold_in(k_t, LOCAL), h)) = fold_in(fold_in(fold_in(k_t, LOCAL), h), m)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = np.sign(X @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.normal(size=80))
    prob = logistic_regression((X, y), M, l2=0.1, bias=False, dtype=jnp.float64)
    gamma, H, T, B = 0.5, 2, 3, 5
    trace = run(local_sgd(gamma, H), prob, T, 9, batch_size=B)
    full = run(local_gd(gamma, H), prob, T, 9)
    assert abs(trace.dist_sq[-1] - full.dist_sq[-1]) > 1e-8  # stochastic steps differ
    sampler = getattr(prob, "sample_fn", None) or sample_minibatch
    grad = jax.grad(prob.loss)
    x = jnp.asarray(prob.init_params)
    for t in range(T):
        models = []
        for m in range(M):
            data_m = jax.tree_util.tree_map(lambda a, m=m: a[m], prob.data)
            z = x
            for h in range(H):
                k = jax.random.fold_in(jax.random.fold_in(_round_key(9, t), LOCAL), h)
                z = z - gamma * grad(z, sampler(jax.random.fold_in(k, m), data_m, B))
            models.append(z)
        x = jnp.mean(jnp.stack(models), axis=0)
    want = float(jnp.sum((x - prob.x_star) ** 2))
    np.testing.assert_allclose(trace.dist_sq[-1], want, rtol=1e-10)


def test_traced_hyperparameters_sweep(x64):
    """learning_rate and p may be traced (a vmapped sweep): each swept run equals its own run."""
    prob = _problem()
    sweep = run(
        lambda hp: scaffnew(hp["lr"], hp["p"]),
        prob,
        30,
        3,
        hyperparams={"lr": jnp.array([0.5, 0.8]), "p": jnp.array([0.25, 0.5])},
        log_every=10,
    )
    one = run(scaffnew(0.8, 0.5), prob, 30, 3, log_every=10)
    np.testing.assert_allclose(sweep.dist_sq[1], one.dist_sq, rtol=1e-10, atol=1e-24)
    np.testing.assert_array_equal(sweep.rounds[1], one.rounds)
    assert sweep.rounds[0, -1] != sweep.rounds[1, -1]


def test_scaffnew_communications_grow_like_sqrt_kappa(x64):
    """γ = 1/L, p = 1/√κ on quadratics with exact κ = 10 … 1000 (THEORY.md §2.10): expected
    communications to ‖x − x*‖² ≤ 1e-8‖x⁰ − x*‖² grow like κ^0.5 (measured there 0.488), the
    iterations like κ (1.017); tolerances 0.45–0.6 and 0.9–1.1 as §2.10 states."""
    from jaxdist.problems import heterogeneous_quadratics

    kappas, seeds = np.array([10.0, 31.6, 100.0, 316.0, 1000.0]), 8
    comms, iters = [], []
    for kappa in kappas:
        prob = heterogeneous_quadratics(5, 15, L=1.0, mu=1.0 / kappa, key=1, dtype=jnp.float64)
        L, mu = float(prob.L), float(prob.mu)
        gamma, p = theory.scaffnew_stepsize(L), theory.scaffnew_probability(L, mu)
        T = int(15 * kappa + 200)
        trace = run(scaffnew(gamma, p), prob, T, 0, seeds=jnp.arange(seeds))
        dist, rounds = np.asarray(trace.dist_sq), np.asarray(trace.rounds)  # [seeds, T + 1]
        hit = dist <= 1e-8 * dist[:, :1]
        assert hit.any(axis=1).all(), f"kappa={kappa}: not reached in {T} iterations"
        first = hit.argmax(axis=1)
        comms.append(rounds[np.arange(seeds), first].mean())
        iters.append(first.mean())
    slope_comm = np.polyfit(np.log(kappas), np.log(comms), 1)[0]
    slope_iter = np.polyfit(np.log(kappas), np.log(iters), 1)[0]
    print("scaffnew communications", comms, slope_comm, "iterations", iters, slope_iter)
    assert 0.45 <= slope_comm <= 0.6, (slope_comm, comms)
    assert 0.9 <= slope_iter <= 1.1, (slope_iter, iters)
