"""Tests of jaxdist.problems: the Problem value, quadratics, the Top-1 counterexample, logistic
regression. Constants are checked against brute-force NumPy/JAX computations in float64."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdist import problems as P


def _top1(v):
    """Top-1 in NumPy: keep the entry of largest magnitude (ties: smallest index)."""
    out = np.zeros_like(v)
    i = int(np.argmax(np.abs(v)))
    out[i] = v[i]
    return out


def _np_data(problem):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), problem.data)


# ---------------------------------------------------------------------------------------------
# Quadratics.

QUAD_CASES = [
    # M, d, L, mu, delta, heterogeneity, spectrum
    (4, 6, 10.0, 0.5, 0.3, 2.0, "geometric"),
    (3, 5, 1.0, 1e-2, 0.0, 0.5, "linear"),
    (7, 4, 100.0, 1.0, 1.0, 0.0, "geometric"),  # delta == mu: the PSD edge
    (5, 8, 10.0, 1.0, 2.5, 1.0, "geometric"),  # delta > mu, still PSD for this key
    (1, 3, 2.0, 2.0, 0.0, 0.0, "linear"),
]


@pytest.mark.parametrize("M,d,L,mu,delta,het,spectrum", QUAD_CASES)
def test_quadratic_constants_brute_force(x64, M, d, L, mu, delta, het, spectrum):
    p = P.quadratic(
        M,
        d,
        L=L,
        mu=mu,
        delta=delta,
        heterogeneity=het,
        key=3,
        dtype=jnp.float64,
        spectrum=spectrum,
    )
    A, b = (np.asarray(p.data[k], dtype=np.float64) for k in ("A", "b"))
    assert A.shape == (M, d, d) and b.shape == (M, d)
    assert p.num_workers == M and p.dim == d
    np.testing.assert_array_equal(A, np.swapaxes(A, 1, 2))
    A_bar = A.mean(axis=0)
    ev = np.linalg.eigvalsh(A_bar)
    # requested spectrum attained, and the Problem's constants equal the brute force ones
    np.testing.assert_allclose([ev[0], ev[-1]], [mu, L], rtol=1e-12)
    np.testing.assert_allclose([p.mu, p.L], [ev[0], ev[-1]], rtol=1e-13)
    assert np.all(ev >= mu * (1 - 1e-12)) and np.all(ev <= L * (1 + 1e-12))
    L_m = np.array([np.max(np.abs(np.linalg.eigvalsh(a))) for a in A])
    np.testing.assert_allclose(p.L_m, L_m, rtol=1e-13)
    assert p.L_max == pytest.approx(L_m.max(), rel=1e-13)
    assert p.L_tilde == pytest.approx(np.sqrt(np.mean(L_m**2)), rel=1e-13)
    # every worker is convex (PSD Hessian)
    assert min(np.linalg.eigvalsh(a)[0] for a in A) >= -1e-12 * L
    # similarity: exact and equal to the request
    dl = max(np.max(np.abs(np.linalg.eigvalsh(a - A_bar))) for a in A)
    assert p.delta_exact
    np.testing.assert_allclose(p.delta, dl, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(p.delta, delta, rtol=1e-12, atol=1e-15)
    # x*, f*, sigma*^2 against JAX gradients and losses
    xs = jnp.asarray(p.x_star)
    gnorm = float(jnp.linalg.norm(p.full_grad(xs)))
    assert gnorm <= 1e-12 * max(1.0, L)
    assert p.f_star == pytest.approx(float(p.full_loss(xs)), rel=1e-12, abs=1e-14)
    wg = np.asarray(p.worker_grads(xs))
    np.testing.assert_allclose(wg, np.einsum("mij,j->mi", A, p.x_star) - b, atol=1e-12)
    sig = float(np.mean(np.sum(wg**2, axis=1)))
    np.testing.assert_allclose(p.sigma_star_sq, sig, rtol=1e-10, atol=1e-20)
    np.testing.assert_allclose(p.sigma_star_sq, het**2, rtol=1e-10, atol=1e-20)
    assert np.linalg.norm(p.x_star) == pytest.approx(1.0, rel=1e-12)
    # Hessian variance L_pm: attained by the top eigenvector, an upper bound elsewhere, <= delta
    hv = np.einsum("mij,mjk->ik", A, A) / M - A_bar @ A_bar
    w, V = np.linalg.eigh(0.5 * (hv + hv.T))
    assert p.L_pm**2 == pytest.approx(max(w[-1], 0.0), rel=1e-10, abs=1e-12)
    rng = np.random.default_rng(0)
    for v in [V[:, -1], *rng.standard_normal((5, d))]:
        ratio = (np.mean(np.sum((A @ v) ** 2, axis=1)) - np.sum((A_bar @ v) ** 2)) / (v @ v)
        assert ratio <= p.L_pm**2 * (1 + 1e-10) + 1e-12
    assert p.L_pm <= p.delta * (1 + 1e-12) + 1e-15


def test_quadratic_loss_matches_formula(x64):
    p = P.quadratic(3, 4, L=5.0, mu=0.5, delta=0.2, key=1, dtype=jnp.float64)
    A, b = (np.asarray(p.data[k]) for k in ("A", "b"))
    x = np.random.default_rng(1).standard_normal(4)
    f_m = 0.5 * np.einsum("i,mij,j->m", x, A, x) - b @ x
    np.testing.assert_allclose(np.asarray(p.worker_losses(jnp.asarray(x))), f_m, rtol=1e-13)
    assert float(p.full_loss(jnp.asarray(x))) == pytest.approx(f_m.mean(), rel=1e-13)
    np.testing.assert_allclose(
        np.asarray(p.full_grad(jnp.asarray(x))), A.mean(0) @ x - b.mean(0), atol=1e-13
    )
    # jit and vmap over workers give the same
    loss = jax.jit(p.loss)
    np.testing.assert_allclose(
        [float(loss(jnp.asarray(x), p.worker_data(m))) for m in range(3)], f_m, rtol=1e-13
    )
    assert float(p.suboptimality(p.init_params)) >= 0
    # local optima are the minimizers of the f_m (all A_m > 0 here)
    lo = p.info["local_optima"]
    np.testing.assert_allclose(np.einsum("mij,mj->mi", A, lo), b, atol=1e-12)


def test_quadratic_float32_constants_are_those_of_the_stored_data():
    p = P.quadratic(4, 5, L=3.0, mu=0.3, delta=0.1, key=0)
    assert p.data["A"].dtype == jnp.float32 and p.init_params.dtype == jnp.float32
    A = np.asarray(p.data["A"], dtype=np.float64)
    ev = np.linalg.eigvalsh(A.mean(0))
    np.testing.assert_allclose([p.mu, p.L], [ev[0], ev[-1]], rtol=1e-12)
    np.testing.assert_allclose([p.mu, p.L], [0.3, 3.0], rtol=1e-6)  # float32 rounding only


def test_quadratic_is_deterministic_in_the_key():
    a = P.quadratic(3, 4, delta=0.05, key=7)
    b = P.quadratic(3, 4, delta=0.05, key=7)
    c = P.quadratic(3, 4, delta=0.05, key=8)
    k = P.quadratic(3, 4, delta=0.05, key=jax.random.key(7))
    r = P.quadratic(3, 4, delta=0.05, key=jax.random.PRNGKey(7))
    for other in (b, k, r):  # an int seed, its typed key and its raw key: the same problem
        for leaf in ("A", "b"):
            np.testing.assert_array_equal(np.asarray(a.data[leaf]), np.asarray(other.data[leaf]))
    assert not np.array_equal(np.asarray(a.data["A"]), np.asarray(c.data["A"]))
    with pytest.raises(TypeError):
        P.quadratic(3, 4, 1.0, 0.1)  # everything after dim is keyword-only
    with pytest.raises(ValueError, match="non-negative int seed"):
        P.quadratic(3, 4, key=-1)
    with pytest.raises(TypeError, match="key must be"):
        P.quadratic(3, 4, key="seven")


def test_logistic_key_int_typed_and_raw_agree():
    kw = dict(split="iid", max_samples=120)
    a = P.logistic_regression("mushrooms", 3, key=4, **kw)
    b = P.logistic_regression("mushrooms", 3, key=jax.random.key(4), **kw)
    c = P.logistic_regression("mushrooms", 3, key=jax.random.PRNGKey(4), **kw)
    d = P.logistic_regression("mushrooms", 3, key=5, **kw)
    for other in (b, c):
        np.testing.assert_array_equal(np.asarray(a.data["X"]), np.asarray(other.data["X"]))
    assert not np.array_equal(np.asarray(a.data["X"]), np.asarray(d.data["X"]))
    # without max_samples the iid split is exactly split_iid with the same key
    e = P.logistic_regression("phishing", 4, key=9)
    parts = P.split_iid(11055, 4, key=jax.random.key(9))
    assert all(np.array_equal(u, v) for u, v in zip(e.info["split_indices"], parts, strict=True))
    with pytest.raises(TypeError):
        P.logistic_regression("mushrooms", 3, seed=4)


def test_quadratic_delta_too_large_for_psd_workers(x64):
    with pytest.raises(ValueError, match=r"delta=9.0 is too large.*delta <= mu") as e:
        P.quadratic(5, 8, L=10.0, mu=0.01, delta=9.0, key=1)
    # the reported largest feasible delta is sharp: just below it the smallest eigenvalue of
    # some A_m is ~0, just above it the generator refuses
    bound = float(re.search(r"PSD for delta <= ([0-9.e+-]+)", str(e.value)).group(1))
    p = P.quadratic(5, 8, L=10.0, mu=0.01, delta=bound * (1 - 1e-4), key=1, dtype=jnp.float64)
    assert 0 <= min(p.info["min_eig_m"]) < 1e-2
    with pytest.raises(ValueError, match="too large"):
        P.quadratic(5, 8, L=10.0, mu=0.01, delta=bound * (1 + 1e-4), key=1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_workers=2, dim=3, mu=0.0), "mu must be > 0"),
        (dict(num_workers=2, dim=3, L=1.0, mu=2.0), "L must be >= mu"),
        (dict(num_workers=1, dim=3, delta=0.1), "num_workers=1"),
        (dict(num_workers=1, dim=3, heterogeneity=1.0), "num_workers=1"),
        (dict(num_workers=2, dim=1, L=2.0, mu=1.0), "dim=1"),
        (dict(num_workers=0, dim=3), "num_workers must be"),
        (dict(num_workers=2, dim=0), "dim must be"),
        (dict(num_workers=2, dim=3, L=float("inf")), "L must be finite"),
        (dict(num_workers=2, dim=3, delta=-1.0), "delta must be >= 0"),
        (dict(num_workers=2, dim=3, heterogeneity=-1.0), "heterogeneity must be >= 0"),
        (dict(num_workers=2, dim=3, spectrum="cubic"), "spectrum"),
    ],
)
def test_quadratic_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        P.quadratic(**kwargs)


def test_quadratic_problem_from_matrices_and_errors(x64):
    A = np.stack([np.diag([1.0, 2.0]), np.diag([3.0, 2.0])])
    b = np.array([[1.0, 0.0], [1.0, 4.0]])
    p = P.quadratic_problem(A, b, dtype=jnp.float64)
    np.testing.assert_allclose(p.x_star, [1.0 / 2.0, 2.0 / 2.0])
    assert (p.L, p.mu, p.delta) == (2.0, 2.0, 1.0)
    np.testing.assert_allclose(p.L_m, [2.0, 3.0])
    with pytest.raises(ValueError, match="symmetric"):
        P.quadratic_problem(np.array([[[1.0, 1.0], [0.0, 1.0]]]), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="positive definite"):
        P.quadratic_problem(np.zeros((2, 2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="shape"):
        P.quadratic_problem(np.zeros((2, 3, 3)), np.zeros((2, 2)))


# ---------------------------------------------------------------------------------------------
# The Top-1 counterexample (THEORY.md §3).


@pytest.mark.parametrize("scaling,c", [("paper", 1.0), ("lecture", 2.0)])
def test_counterexample_constants(x64, scaling, c):
    p = P.top1_counterexample(scaling, dtype=jnp.float64)
    assert (p.num_workers, p.dim) == (3, 3)
    assert p.mu == pytest.approx(c * 7 / 6, rel=1e-13)
    assert p.L == pytest.approx(c * 103 / 6, rel=1e-13)
    np.testing.assert_allclose(p.L_m, c * 34.5, rtol=1e-13)
    assert p.L_max == pytest.approx(c * 34.5, rel=1e-13)
    assert p.L_tilde == pytest.approx(c * 34.5, rel=1e-13)
    np.testing.assert_array_equal(p.x_star, np.zeros(3))
    assert p.f_star == 0.0 and p.sigma_star_sq == 0.0
    # the Hessians are c(2 a_m a_m^T + I/2) and sum_m a_m a_m^T = 25 I - 8 11^T
    a = np.array(P._counterexample.COUNTEREXAMPLE_VECTORS)
    np.testing.assert_allclose(np.einsum("mi,mj->ij", a, a), 25 * np.eye(3) - 8 * np.ones((3, 3)))
    np.testing.assert_allclose(
        np.asarray(p.data["A"]), c * (2 * np.einsum("mi,mj->mij", a, a) + 0.5 * np.eye(3))
    )
    A = np.asarray(p.data["A"])
    sim = max(np.max(np.abs(np.linalg.eigvalsh(Am - A.mean(0)))) for Am in A)
    assert p.delta == pytest.approx(sim, rel=1e-13)
    # every f_m(x) = c(<a_m, x>^2 + |x|^2/4)
    x = np.array([0.3, -1.2, 2.0])
    np.testing.assert_allclose(
        np.asarray(p.worker_losses(jnp.asarray(x))), c * ((a @ x) ** 2 + 0.25 * x @ x), rtol=1e-13
    )


@pytest.mark.parametrize("scaling,c", [("paper", 1.0), ("lecture", 2.0)])
@pytest.mark.parametrize("t", [1.0, 0.5, -2.0])
def test_counterexample_top1_numbers(x64, scaling, c, t):
    p = P.top1_counterexample(scaling, t=t, dtype=jnp.float64)
    x0 = np.asarray(p.init_params)
    np.testing.assert_array_equal(x0, [t, t, t])
    g = np.asarray(p.worker_grads(p.init_params))
    # ∇f_1(x0) = c (t/2)(-11, 9, 9), ...
    np.testing.assert_allclose(g[0], c * (t / 2) * np.array([-11.0, 9.0, 9.0]), rtol=1e-13)
    np.testing.assert_allclose(g.mean(0), c * (7 * t / 6) * np.ones(3), rtol=1e-13)
    top1_mean = np.mean([_top1(gm) for gm in g], axis=0)
    np.testing.assert_allclose(top1_mean, -c * (11 * t / 6) * np.ones(3), rtol=1e-13)
    # DCGD with Top-1 stays on the diagonal and grows by exactly 1 + 11 c γ/6 per step
    gamma = 0.01
    x = x0.copy()
    for _ in range(5):
        gx = np.asarray(p.worker_grads(jnp.asarray(x)))
        x_new = x - gamma * np.mean([_top1(gm) for gm in gx], axis=0)
        np.testing.assert_allclose(x_new, (1 + 11 * c * gamma / 6) * x, rtol=1e-13)
        x = x_new


def test_counterexample_errors():
    with pytest.raises(ValueError, match="scaling"):
        P.top1_counterexample("other")
    with pytest.raises(ValueError, match="finite"):
        P.top1_counterexample(t=float("inf"))


# ---------------------------------------------------------------------------------------------
# The Problem value.


def test_problem_is_frozen_and_validated():
    p = P.top1_counterexample()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.L = 1.0
    with pytest.raises(ValueError):
        p.L_m[0] = 0.0  # read-only constants
    with pytest.raises(ValueError, match="leading workers axis"):
        dataclasses.replace(p, data={"A": p.data["A"][:2], "b": p.data["b"]})
    with pytest.raises(ValueError, match="init_params"):
        dataclasses.replace(p, init_params=jnp.zeros(4))
    with pytest.raises(ValueError, match="L_m"):
        dataclasses.replace(p, L_m=np.ones(2))
    assert not p.has_samples
    with pytest.raises(ValueError, match="no samples"):
        p.stochastic_loss(p.init_params, p.worker_data(0), jax.random.key(0), 4)
    assert "M=3" in repr(p) and p.kappa == pytest.approx(103 / 7)
    assert isinstance(p.info["scaling"], str)
    with pytest.raises(TypeError):
        p.info["x"] = 1  # read-only mapping


def test_problem_under_strict_promotion():
    p = P.quadratic(3, 4, delta=0.05, key=0)
    q = P.logistic_regression("mushrooms", 3, max_samples=300)
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        for pr in (p, q):
            jax.block_until_ready(pr.worker_grads(pr.init_params))
        g = q.stochastic_worker_grads(q.init_params, jax.random.key(0), 8)
        assert g.shape == (3, q.dim) and g.dtype == jnp.float32


# ---------------------------------------------------------------------------------------------
# Logistic regression.


@pytest.fixture(scope="module")
def mush():
    """Full mushrooms, 6 workers, float64 (constants, x*, Hessian bounds)."""
    with jax.enable_x64(True):
        return P.logistic_regression("mushrooms", 6, l2=1e-3, dtype=jnp.float64)


def test_logistic_mushrooms_shape_and_labels(x64, mush):
    p = mush
    assert p.dim == 113 and p.num_workers == 6 and p.mu == 1e-3
    d = _np_data(p)
    counts = d["count"].astype(int)
    assert counts.sum() == 8124 and counts.max() - counts.min() <= 1
    for m in range(6):
        n = counts[m]
        assert set(np.unique(d["y"][m, :n])) <= {-1.0, 1.0}
        np.testing.assert_array_equal(d["X"][m, :n, -1], 1.0)  # bias column
        np.testing.assert_array_equal(d["X"][m, n:], 0.0)  # padding
        np.testing.assert_allclose(d["weight"][m, :n], 1.0 / n)
        np.testing.assert_array_equal(d["weight"][m, n:], 0.0)
    assert int(np.sum(d["y"][d["weight"] > 0] == 1)) == 4208  # label 2 -> +1
    assert p.info["label_map"] == {1.0: -1.0, 2.0: 1.0}


def test_logistic_x_star_and_constants(x64, mush):
    p = mush
    xs = jnp.asarray(p.x_star)
    assert p.info["grad_norm_at_x_star"] < 1e-12
    assert float(jnp.linalg.norm(p.full_grad(xs))) < 1e-10
    assert p.f_star == pytest.approx(float(p.full_loss(xs)), rel=1e-13)
    wg = np.asarray(p.worker_grads(xs))
    assert p.sigma_star_sq == pytest.approx(np.mean(np.sum(wg**2, axis=1)), rel=1e-9)
    # the curvature bound is attained at x = 0 (sigma'(0) = 1/4): L and L_m are exact there
    hess = jax.jit(jax.hessian(p.full_loss))
    whess = jax.jit(jax.vmap(jax.hessian(p.loss), in_axes=(None, 0)))
    H0 = np.asarray(hess(jnp.zeros(p.dim)))
    assert np.linalg.eigvalsh(H0)[-1] == pytest.approx(p.L, rel=1e-10)
    Hm0 = np.asarray(whess(jnp.zeros(p.dim), p.data))
    np.testing.assert_allclose(np.linalg.eigvalsh(Hm0)[:, -1], p.L_m, rtol=1e-10)
    # elsewhere they are upper bounds; mu = l2 is a lower bound; delta bounds the similarity
    rng = np.random.default_rng(0)
    for x in [p.x_star, *rng.standard_normal((2, p.dim))]:
        x = jnp.asarray(x)
        ev = np.linalg.eigvalsh(np.asarray(hess(x)))
        assert ev[-1] <= p.L * (1 + 1e-12)
        assert ev[0] >= p.mu * (1 - 1e-9)
        Hm = np.asarray(whess(x, p.data))
        assert np.all(np.linalg.eigvalsh(Hm)[:, -1] <= p.L_m * (1 + 1e-12))
        sim = np.max(np.abs(np.linalg.eigvalsh(Hm - Hm.mean(0))))
        assert sim <= p.delta * (1 + 1e-12)
    assert not p.delta_exact
    Hs = np.asarray(whess(xs, p.data))
    sim_star = np.max(np.abs(np.linalg.eigvalsh(Hs - Hs.mean(0))))
    assert p.info["delta_at_x_star"] == pytest.approx(sim_star, rel=1e-8)


def test_logistic_unequal_sizes_weights_workers_equally(x64):
    sizes = [50, 120, 30]
    p = P.logistic_regression(
        "mushrooms", 3, split="sizes", sizes=sizes, max_samples=200, dtype=jnp.float64, l2=0.01
    )
    d = _np_data(p)
    assert p.info["samples_per_worker"] == tuple(sizes)
    assert d["X"].shape == (3, 120, 113)
    x = np.random.default_rng(2).standard_normal(113) * 0.1
    f_m = []
    for m, n in enumerate(sizes):  # reference: mean over the worker's real samples only
        z = d["y"][m, :n] * (d["X"][m, :n] @ x)
        f_m.append(np.mean(np.logaddexp(0.0, -z)) + 0.005 * x @ x)
    np.testing.assert_allclose(np.asarray(p.worker_losses(jnp.asarray(x))), f_m, rtol=1e-12)
    assert float(p.full_loss(jnp.asarray(x))) == pytest.approx(np.mean(f_m), rel=1e-12)
    assert float(jnp.linalg.norm(p.full_grad(jnp.asarray(p.x_star)))) < 1e-10
    # L_m = lambda_max(A_m^T A_m)/(4 n_m) + l2 with the real samples only
    for m, n in enumerate(sizes):
        Am = d["X"][m, :n]
        assert p.L_m[m] == pytest.approx(np.linalg.eigvalsh(Am.T @ Am)[-1] / (4 * n) + 0.01)


def test_logistic_sampler_draws_real_samples_without_replacement(x64):
    p = P.logistic_regression(
        "mushrooms", 2, split="sizes", sizes=[10, 290], max_samples=300, dtype=jnp.float64
    )
    x = jnp.asarray(np.random.default_rng(0).standard_normal(p.dim) * 0.2)
    N, b = 4000, 4

    @jax.jit  # one compilation for everything below
    def draws(x, key, raw_key, data):
        data0 = jax.tree_util.tree_map(lambda a: a[0], data)
        grad = jax.grad(lambda xx, k: p.stochastic_loss(xx, data0, k, 1))
        keys = jax.random.split(key, N)
        return (
            jax.vmap(lambda k: p.sample(k, data0, b)["X"])(keys),
            p.sample(key, data0, 10),
            jax.vmap(grad, in_axes=(None, 0))(x, keys),
            jax.grad(p.loss)(x, data0),
            p.stochastic_worker_grads(x, key, 5),
            p.sample(raw_key, data0, 3),  # raw uint32 keys work too
        )

    Xb, full, G, true, sg, raw = draws(x, jax.random.key(1), jax.random.PRNGKey(0), p.data)
    G, true = np.asarray(G), np.asarray(true)
    X_real = np.asarray(p.data["X"])[0, :10]
    # which real row every drawn row is (-1: not a real row, e.g. padding)
    match = np.all(np.asarray(Xb)[:, :, None, :] == X_real[None, None], axis=3)  # (N, b, 10)
    assert np.all(match.sum(axis=2) >= 1)  # never padding
    # real rows may coincide (duplicate samples in the data); use the first matching row
    rows = np.argmax(match, axis=2)
    distinct = np.array([len({tuple(X_real[r]) for r in rs}) for rs in rows])
    n_unique = len({tuple(r) for r in X_real})
    assert np.all(distinct == min(b, n_unique))  # no sample twice in a batch
    # a batch of all 10 samples holds each real row once, with weights 1/10
    np.testing.assert_array_equal(np.sort(np.asarray(full["X"]), axis=0), np.sort(X_real, axis=0))
    np.testing.assert_allclose(np.asarray(full["weight"]), 0.1)
    assert int(full["count"]) == 10
    # Monte Carlo: minibatch gradients (batch 1) average to the worker gradient
    se = G.std(axis=0, ddof=1) / np.sqrt(N)
    assert np.all(np.abs(G.mean(0) - true) <= 6 * se + 1e-12)
    assert sg.shape == (2, p.dim) and raw["X"].shape == (3, p.dim)
    with pytest.raises(ValueError, match="batch_size"):
        p.sample(jax.random.key(0), None, 0)
    # a batch larger than the smallest worker is refused, also inside jit (traced counts)
    with pytest.raises(ValueError, match="exceeds the 10 samples of the smallest worker"):
        p.stochastic_worker_grads(x, jax.random.key(0), 11)
    with pytest.raises(ValueError, match="exceeds the 10 samples"):
        jax.jit(lambda d: p.sample_fn(jax.random.key(0), d, 11))(p.worker_data(1))


@pytest.mark.parametrize(
    "split,kw", [("iid", {}), ("by_label", {}), ("dirichlet", {"concentration": 0.5})]
)
def test_logistic_splits(split, kw):
    p = P.logistic_regression("phishing", 4, split=split, max_samples=400, **kw)
    parts = p.info["split_indices"]
    assert sorted(np.concatenate(parts).tolist()) == list(range(400))
    assert p.data["X"].dtype == jnp.float32 and p.dim == 69
    assert p.info["grad_norm_at_x_star"] < 1e-12


def test_logistic_custom_split_and_arrays():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    y = np.where(X[:, 0] + 0.3 * rng.standard_normal(40) > 0, 5.0, 3.0)
    parts = [np.arange(0, 10), np.arange(10, 40)]
    p = P.logistic_regression((X, y), 2, split=parts, bias=False, l2=0.1)
    assert p.dim == 3 and p.info["label_map"] == {3.0: -1.0, 5.0: 1.0}
    assert p.info["samples_per_worker"] == (10, 30)
    assert not p.delta_exact and p.delta > 0
    one = P.logistic_regression((X, y), 1, bias=False, l2=0.1)
    assert one.delta == 0.0 and one.delta_exact and one.sigma_star_sq < 1e-20


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        (dict(split="dirichlet"), ValueError, "needs concentration="),
        (dict(split="dirichlet", alpha=0.5), TypeError, "alpha"),
        (dict(bias=1), TypeError, "bias must be True or False"),
        (dict(split="sizes"), ValueError, "sizes"),
        (dict(split="sizes", sizes=[100, 100]), ValueError, "len\\(sizes\\)"),
        (dict(split="round_robin"), ValueError, "split must be"),
        (dict(l2=0.0), ValueError, "l2 must be > 0"),
        (dict(max_samples=0), ValueError, "max_samples"),
        (dict(split=[np.arange(10)]), ValueError, "cover every sample|parts"),
    ],
)
def test_logistic_errors(kwargs, err, match):
    base = dict(max_samples=200)
    base.update(kwargs)
    with pytest.raises(err, match=match):
        P.logistic_regression("mushrooms", 3, **base)


def test_labels_to_pm1():
    y, mp = P.labels_to_pm1([0, 1, 1, 0])
    np.testing.assert_array_equal(y, [-1, 1, 1, -1])
    y, mp = P.labels_to_pm1([1.0, 1.0])
    np.testing.assert_array_equal(y, [1, 1])
    with pytest.raises(ValueError, match="binary"):
        P.labels_to_pm1([0, 1, 2])


# ---------------------------------------------------------------------------------------------
# The constants of logistic regression without one eigendecomposition per worker.


@pytest.mark.parametrize("M,n,d", [(2, 3, 5), (5, 10, 4), (30, 2, 8), (7, 1, 6), (4, 6, 6)])
def test_gram_and_pruned_deviation_equal_brute_force(M, n, d):
    from jaxdist.problems import _logistic

    rng = np.random.default_rng(M * 100 + n)
    for trial in range(10):
        B = rng.standard_normal((M, n, d)) * rng.random((M, 1, 1)) ** 3
        if trial % 3 == 0:
            B[0] = 0.0  # a worker without curvature
        if trial == 1:  # ||H_0 − H̄|| = λ_max(H̄) is the maximum: the bound's second branch
            B[0] = 0.0
            B[1:] = B[1]
        H = np.swapaxes(B, 1, 2) @ B
        ev = np.linalg.eigvalsh(H)
        np.testing.assert_allclose(
            _logistic._largest_eig_of_gram(B), ev[:, -1], rtol=1e-12, atol=1e-14
        )
        lam, v = _logistic._top_eigenpairs(B)
        np.testing.assert_allclose(np.einsum("mi,mij,mj->m", v, H, v), lam, rtol=1e-10, atol=1e-12)
        ref = np.max(np.abs(np.linalg.eigvalsh(H - H.mean(axis=0))))
        assert _logistic._max_deviation_norm(B) == pytest.approx(ref, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("M,max_samples", [(3, 200), (6, 600), (50, 2000)])
def test_logistic_constants_equal_the_per_worker_eigendecompositions(x64, M, max_samples):
    p = P.logistic_regression("mushrooms", M, max_samples=max_samples, dtype=jnp.float64, l2=0.01)
    d = _np_data(p)
    X, counts = d["X"], d["count"]
    G = np.swapaxes(X, 1, 2) @ X / (4 * counts[:, None, None])
    G_bar = G.mean(0)
    lam = np.linalg.eigvalsh(G)[:, -1]
    np.testing.assert_allclose(p.L_m, lam + 0.01, rtol=1e-12)
    assert p.L == pytest.approx(np.linalg.eigvalsh(G_bar)[-1] + 0.01, rel=1e-12)
    own = (1 - 1 / M) * lam
    rest = np.linalg.eigvalsh(G_bar - G / M)[:, -1]
    assert p.delta == pytest.approx(max(own.max(), rest.max()), rel=1e-12)
    assert rest.max() <= own.max() * (1 + 1e-12)  # why delta needs only the λ_max(G_m)
    assert p.delta == pytest.approx((1 - 1 / M) * (p.L_max - 0.01), rel=1e-12)
    # delta at x*: brute force over all workers
    z = d["y"] * (X @ p.x_star)
    s = 0.5 * (1 + np.tanh(-0.5 * z))
    B = X * np.sqrt(d["weight"] * s * (1 - s))[..., None]
    H = np.swapaxes(B, 1, 2) @ B
    ref = np.max(np.abs(np.linalg.eigvalsh(H - H.mean(0))))
    assert p.info["delta_at_x_star"] == pytest.approx(ref, rel=1e-10)
