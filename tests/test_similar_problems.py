"""Problems for the round-based methods: exact similarity δ, exact κ, and δ measured on data.

similar_quadratics and heterogeneous_quadratics (THEORY.md §2.10, "Test problems that make δ
exact") are checked against their construction in float64 to 1e-10; measure_similarity against
the exact δ of quadratics and against jax.hessian on logistic regression; logistic regression with
``samples_per_worker`` against the δ ∝ n^−1/2 law of THEORY.md §2.9 on mushrooms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdist.problems as P

TOL = 1e-10


def _A(p):
    return np.asarray(p.data["A"], dtype=np.float64)


def _norm(S):
    return np.max(np.abs(np.linalg.eigvalsh(S)), axis=-1)


# ---------------------------------------------------------------------------------------------
# similar_quadratics


@pytest.mark.parametrize(
    "M,d,L,mu,delta,het",
    [(4, 20, 1.0, 0.01, 0.1, 1.0), (2, 10, 2.0, 0.5, 0.3, 0.0), (7, 15, 1.0, 1e-3, 0.05, 3.0)],
)
def test_similar_quadratics_exact_constants(x64, M, d, L, mu, delta, het):
    p = P.similar_quadratics(
        M, d, L=L, mu=mu, delta=delta, heterogeneity=het, key=3, dtype=jnp.float64
    )
    A = _A(p)
    A_bar = A.mean(axis=0)
    # the mean Hessian is A: spectrum log-spaced on [mu, L], both ends attained
    np.testing.assert_allclose(np.linalg.eigvalsh(A_bar), np.geomspace(mu, L, d), rtol=TOL)
    assert abs(p.L - L) <= TOL * L and abs(p.mu - mu) <= TOL * mu
    assert abs(p.kappa - L / mu) <= TOL * L / mu
    # δ exact: the server is exactly δ away, nobody further
    dev = _norm(A - A_bar)
    assert abs(dev[0] - delta) <= TOL and abs(p.delta - delta) <= TOL
    assert abs(p.info["delta_server"] - delta) <= TOL
    assert np.all(dev[1:] <= delta * (1 + TOL))
    assert p.delta_exact
    if M > 2:  # the most dissimilar non-server worker is scaled to exactly δ
        assert abs(dev[1:].max() - delta) <= TOL
    else:  # M = 2: A_2 = A − δP
        np.testing.assert_allclose(A[1] - A_bar, -(A[0] - A_bar), atol=TOL)
    # server constants, convex server with A_1 ⪰ A
    ev1 = np.linalg.eigvalsh(A[0])
    assert abs(p.info["L_server"] - ev1[-1]) <= TOL and abs(p.info["mu_server"] - ev1[0]) <= TOL
    assert p.info["mu_server"] >= mu - TOL
    assert np.linalg.eigvalsh(A[0] - A_bar)[0] >= -TOL  # P ⪰ 0
    # heterogeneity exact and x* the minimizer
    x_star = p.x_star
    g = np.einsum("mij,j->mi", A, x_star) - np.asarray(p.data["b"], dtype=np.float64)
    np.testing.assert_allclose(g.mean(axis=0), 0.0, atol=TOL)
    assert abs(np.mean(np.sum(g**2, axis=1)) - het**2) <= TOL * max(1.0, het**2)
    assert abs(p.sigma_star_sq - het**2) <= TOL * max(1.0, het**2)
    assert abs(np.linalg.norm(x_star) - 1.0) <= TOL


def test_similar_quadratics_server_convex_others_indefinite(x64):
    big = P.similar_quadratics(5, 12, L=1.0, mu=0.01, delta=5.0, key=1, dtype=jnp.float64)
    eig = big.info["min_eig_m"]
    assert eig[0] >= 0.01 - TOL  # f_1 stays strongly convex
    assert np.min(eig[1:]) < 0  # some other worker is indefinite
    assert big.info["local_optima"] is None
    assert abs(big.delta - 5.0) <= TOL and big.mu > 0  # f is still mu-strongly convex
    # δ < mu: every worker is positive definite (Weyl), so local optima exist
    small = P.similar_quadratics(5, 12, L=1.0, mu=0.01, delta=0.005, key=1, dtype=jnp.float64)
    assert np.min(small.info["min_eig_m"]) >= 0.01 - 0.005 - TOL
    assert small.info["local_optima"] is not None
    # δ = 0: identical Hessians, similarity exactly zero
    zero = P.similar_quadratics(3, 6, delta=0.0, key=1, dtype=jnp.float64)
    A = _A(zero)
    assert np.all(A == A[0]) and zero.delta == 0.0 and zero.info["delta_server"] == 0.0


def test_similar_quadratics_float32_constants_from_stored_data():
    p = P.similar_quadratics(4, 16, delta=0.2, key=0)  # JAX's default float32
    assert p.data["A"].dtype == jnp.float32
    A = _A(p)
    assert p.delta == pytest.approx(float(np.max(_norm(A - A.mean(axis=0)))), rel=1e-12)
    assert p.delta == pytest.approx(0.2, rel=1e-5) and p.L == pytest.approx(1.0, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# heterogeneous_quadratics


@pytest.mark.parametrize("M,d,L,mu", [(3, 10, 1.0, 1e-3), (6, 25, 5.0, 0.05), (2, 2, 1.0, 0.1)])
def test_heterogeneous_quadratics_exact_kappa(x64, M, d, L, mu):
    p = P.heterogeneous_quadratics(M, d, L=L, mu=mu, heterogeneity=2.0, key=5, dtype=jnp.float64)
    A = _A(p)
    ev = np.linalg.eigvalsh(A)
    np.testing.assert_allclose(ev[:, 0], mu, rtol=TOL)  # every f_m is mu-strongly convex
    np.testing.assert_allclose(ev[:, -1], L, rtol=TOL)  # and L-smooth
    np.testing.assert_allclose(ev[:, -1] / ev[:, 0], L / mu, rtol=TOL)  # κ(f_m) = L/mu
    np.testing.assert_allclose(p.L_m, L, rtol=TOL)
    assert abs(p.L - L) <= TOL * L and abs(p.mu - mu) <= TOL * mu
    assert abs(p.kappa - L / mu) <= TOL * L / mu
    assert abs(p.sigma_star_sq - 4.0) <= TOL * 4.0
    # one shared eigenbasis: the A_m commute
    comm = np.einsum("mij,njk->mnik", A, A) - np.einsum("nij,mjk->mnik", A, A)
    assert np.max(np.abs(comm)) <= 1e-12 * L**2
    assert abs(p.delta - float(np.max(_norm(A - A.mean(axis=0))))) <= TOL
    if d > 2:
        assert p.delta > 0  # different middle spectra
    else:
        assert p.delta <= TOL
    assert p.info["local_optima"] is not None


# ---------------------------------------------------------------------------------------------
# determinism and bad inputs


@pytest.mark.parametrize("make", [P.similar_quadratics, P.heterogeneous_quadratics])
def test_generators_deterministic_per_key(make):
    a = make(3, 6, key=7)
    b = make(3, 6, key=jax.random.key(7))
    c = make(3, 6, key=jax.random.PRNGKey(7))
    d = make(3, 6, key=8)
    for other in (b, c):
        for leaf in ("A", "b"):
            np.testing.assert_array_equal(np.asarray(a.data[leaf]), np.asarray(other.data[leaf]))
    assert not np.array_equal(np.asarray(a.data["A"]), np.asarray(d.data["A"]))
    with pytest.raises(ValueError, match="non-negative int seed"):
        make(3, 6, key=-1)


@pytest.mark.parametrize("make", [P.similar_quadratics, P.heterogeneous_quadratics])
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_workers=1), "num_workers"),
        (dict(mu=0.0), "mu"),
        (dict(mu=-1.0), "mu"),
        (dict(L=0.001, mu=0.01), "L must be >= mu"),
        (dict(heterogeneity=-1.0), "heterogeneity"),
        (dict(dim=1, L=1.0, mu=0.5), "dim=1"),
        (dict(dim=0), "dim"),
        (dict(mu=float("nan")), "mu"),
    ],
)
def test_generators_bad_inputs(make, kwargs, match):
    args = dict(num_workers=3, dim=5)
    args.update(kwargs)
    M, d = args.pop("num_workers"), args.pop("dim")
    with pytest.raises(ValueError, match=match):
        make(M, d, **args)


@pytest.mark.parametrize("delta", [-0.1, float("inf"), float("nan")])
def test_similar_quadratics_bad_delta(delta):
    with pytest.raises(ValueError, match="delta"):
        P.similar_quadratics(3, 5, delta=delta)


# ---------------------------------------------------------------------------------------------
# measure_similarity


def test_measure_similarity_equals_exact_delta_on_quadratics(x64):
    p = P.similar_quadratics(4, 10, delta=0.3, key=2, dtype=jnp.float64)
    s = P.measure_similarity(p)
    assert s["points"].shape == (4, 10) and s["per_point"].shape == (4,)
    np.testing.assert_array_equal(s["points"][0], p.x_star)
    np.testing.assert_allclose(
        np.linalg.norm(s["points"][1:] - p.x_star, axis=1), np.linalg.norm(p.x_star), rtol=1e-12
    )
    assert s["delta"] == p.delta and s["delta_server"] == p.info["delta_server"]
    np.testing.assert_array_equal(s["per_point"], p.delta)
    q = P.quadratic(5, 8, delta=0.05, mu=0.1, key=0, dtype=jnp.float64)
    sq = P.measure_similarity(q, points=np.ones(8))
    assert sq["delta"] == q.delta and sq["points"].shape == (1, 8)
    one = P.quadratic(1, 4, key=0, dtype=jnp.float64)
    assert P.measure_similarity(one, num_points=0)["delta"] == 0.0
    # any other loss goes through jax.hessian in float64, with the same answer
    generic = P.Problem(
        name="wrapped",
        loss=lambda x, dm: P.quadratic_loss(x, dm),
        data=p.data,
        init_params=p.init_params,
        num_workers=p.num_workers,
        dim=p.dim,
        L=p.L,
        L_m=p.L_m,
        mu=p.mu,
        x_star=p.x_star,
    )
    sg = P.measure_similarity(generic, num_points=1)
    assert abs(sg["delta"] - p.delta) <= 1e-12 and abs(sg["delta_server"] - 0.3) <= 1e-12


def test_measure_similarity_logistic_matches_jax_hessian(x64):
    p = P.logistic_regression(
        "mushrooms", 3, l2=1e-2, samples_per_worker=60, key=4, dtype=jnp.float64
    )
    exact = P.measure_similarity(p, key=4)
    # logistic_regression recorded the same measurement (same points for the same key)
    assert exact["delta"] == p.info["delta_measured"]
    assert exact["delta_server"] == p.info["delta_server"]
    assert exact["delta"] >= p.info["delta_at_x_star"] - 1e-12
    assert abs(exact["per_point"][0] - p.info["delta_at_x_star"]) <= 1e-12
    # the proven bound holds and is much larger than the measured value
    assert p.delta >= exact["delta"] and not p.delta_exact
    generic = P.Problem(
        name="wrapped",
        loss=lambda x, dm: p.loss(x, dm),
        data=p.data,
        init_params=p.init_params,
        num_workers=p.num_workers,
        dim=p.dim,
        L=p.L,
        L_m=p.L_m,
        mu=p.mu,
    )
    brute = P.measure_similarity(generic, points=exact["points"][:2])
    np.testing.assert_allclose(brute["per_point"], exact["per_point"][:2], rtol=1e-9)
    np.testing.assert_allclose(brute["per_point_server"], exact["per_point_server"][:2], rtol=1e-9)


def test_measure_similarity_bad_inputs():
    p = P.similar_quadratics(3, 4, key=0)
    with pytest.raises(ValueError, match="points"):
        P.measure_similarity(p, points=np.zeros((2, 5)))
    with pytest.raises(ValueError, match="points"):
        P.measure_similarity(p, points=np.full(4, np.nan))
    with pytest.raises(ValueError, match="num_points"):
        P.measure_similarity(p, num_points=-1)
    with pytest.raises(TypeError, match="problem"):
        P.measure_similarity("mushrooms")


# ---------------------------------------------------------------------------------------------
# uniform samples per worker


def test_split_uniform_disjoint_and_uniform():
    parts = P.split_uniform(100, 4, 20, key=3)
    assert [q.size for q in parts] == [20] * 4
    allidx = np.concatenate(parts)
    assert np.unique(allidx).size == 80 and allidx.min() >= 0 and allidx.max() < 100
    assert all(np.all(np.diff(q) > 0) for q in parts)
    # M·k = n: the same parts as split_iid with the same key
    full = P.split_uniform(100, 4, 25, key=jax.random.key(3))
    assert all(np.array_equal(u, v) for u, v in zip(full, P.split_iid(100, 4, key=3), strict=True))
    # uniform: every sample is chosen with probability M·k/n (mean over keys)
    hits = np.zeros(10)
    for k in range(400):
        for q in P.split_uniform(10, 2, 2, key=k):
            hits[q] += 1
    assert np.all(np.abs(hits / 400 - 0.4) < 0.1)
    with pytest.raises(ValueError, match="samples_per_worker"):
        P.split_uniform(10, 3, 4)
    with pytest.raises(ValueError, match="samples_per_worker"):
        P.split_uniform(10, 3, 0)
    with pytest.raises(TypeError):
        P.split_uniform(10, 3, 2, 0)  # key is keyword-only


def test_logistic_samples_per_worker_layout(x64):
    p = P.logistic_regression(
        "mushrooms", 4, l2=1e-2, samples_per_worker=50, key=1, dtype=jnp.float64
    )
    assert p.info["samples_per_worker"] == (50, 50, 50, 50) and p.info["split"] == "uniform"
    idx = np.concatenate(p.info["split_indices"])
    assert np.unique(idx).size == 200
    parts = P.split_uniform(8124, 4, 50, key=1)
    assert all(np.array_equal(u, v) for u, v in zip(parts, p.info["split_indices"], strict=True))
    assert p.data["X"].shape == (4, 50, 113)
    assert 0 < p.info["delta_measured"] <= p.delta
    assert 0 < p.info["delta_server"] <= p.info["delta_measured"]
    assert p.info["L_server"] == p.L_m[0] and p.info["mu_server"] == 1e-2
    # f_1's Hessian at x = 0 attains L_server (σ'(0) = 1/4)
    X0 = np.asarray(p.data["X"][0], dtype=np.float64)
    top = np.linalg.eigvalsh(X0.T @ X0 / (4 * 50))[-1] + 1e-2
    assert abs(top - p.info["L_server"]) <= 1e-10 * top


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        (dict(samples_per_worker=0), ValueError, "samples_per_worker"),
        (dict(samples_per_worker=3000), ValueError, "samples_per_worker"),
        (dict(samples_per_worker=10, max_samples=20), ValueError, "samples_per_worker"),
        (dict(samples_per_worker=10, split="by_label"), ValueError, "samples_per_worker"),
        (dict(samples_per_worker=2.5), TypeError, "samples_per_worker"),
    ],
)
def test_logistic_bad_samples_per_worker(kwargs, err, match):
    with pytest.raises(err, match=match):
        P.logistic_regression("mushrooms", 4, **kwargs)


def _slope(ns, deltas):
    return float(np.polyfit(np.log(ns), np.log(deltas), 1)[0])


def test_similarity_shrinks_like_one_over_sqrt_n_on_mushrooms(x64):
    """δ measured on mushrooms (M = 4, n i.i.d. rows per worker) falls like n^−1/2 (§2.9).

    The fit is over n = 50 … 800 on the mean of log δ over 3 split keys (one key alone gives
    slopes −0.45 … −0.61). Measured: −0.504.
    """
    ns = [50, 100, 200, 400, 800]
    X, y = P.load_libsvm("mushrooms")
    logd = np.zeros((3, len(ns)))
    for k in range(3):
        for j, n in enumerate(ns):
            p = P.logistic_regression((X, y), 4, l2=1e-2, samples_per_worker=n, key=k)
            logd[k, j] = np.log(p.info["delta_measured"])
    slope = _slope(ns, np.exp(logd.mean(axis=0)))
    assert -0.7 <= slope <= -0.3, slope
