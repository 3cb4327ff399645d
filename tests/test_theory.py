"""Tests of jaxdist.theory against the numbers of THEORY.md and small NumPy simulations."""

import math

import numpy as np
import pytest

from jaxdist import problems as P
from jaxdist import theory as T

# ---------------------------------------------------------------------------------------------
# EF21 and the counterexample step sizes (THEORY.md §2.6, §3).


def test_ef21_constants_top1_d3():
    theta, beta = T.ef21_constants(1 / 3)
    assert theta == pytest.approx(0.18350, abs=5e-6)
    assert beta == pytest.approx(3.63299, abs=5e-6)
    assert math.sqrt(beta / theta) == pytest.approx(4.4495, abs=5e-5)


@pytest.mark.parametrize("alpha", [1e-3, 0.1, 1 / 3, 0.5, 0.9, 1.0])
def test_ef21_constants_match_the_code_form(alpha):
    theta, beta = T.ef21_constants(alpha)
    if alpha < 1:
        # EF21 code: t = sqrt(1/(1-a)) - 1, theta = 1 - (1-a)(1+t), beta = (1-a)(1+1/t)
        t = math.sqrt(1 / (1 - alpha)) - 1
        assert theta == pytest.approx(1 - (1 - alpha) * (1 + t), rel=1e-12)
        assert beta == pytest.approx((1 - alpha) * (1 + 1 / t), rel=1e-12)
        # V-der bound sqrt(beta/theta) <= 2/alpha - 1
        assert math.sqrt(beta / theta) <= 2 / alpha - 1 + 1e-12
    else:
        assert (theta, beta) == (1.0, 0.0)


def test_counterexample_stepsizes_from_problem_constants():
    p = P.top1_counterexample("paper")
    alpha_top1 = 1 / 3  # Top-1 in d = 3
    assert T.ef21_stepsize(p.L, p.L_tilde, alpha_top1) == pytest.approx(0.005859, abs=5e-7)
    assert T.ef21_stepsize(p.L, p.L_tilde, alpha_top1, mu=p.mu) == pytest.approx(0.004269, abs=5e-7)
    omega_rand1 = 3 / 1 - 1  # Rand-1 in d = 3
    assert T.dcgd_stepsize(p.L, p.L_max, omega_rand1, p.num_workers) == pytest.approx(
        0.01583, abs=5e-6
    )
    # the PL step size is the min of the two branches
    theta, beta = T.ef21_constants(alpha_top1)
    g = T.ef21_stepsize(p.L, p.L_tilde, alpha_top1, mu=p.mu)
    assert g == min(1 / (p.L + p.L_tilde * math.sqrt(2 * beta / theta)), theta / (2 * p.mu))
    assert T.ef21_rate(g, p.mu) == pytest.approx(1 - g * p.mu)


def test_ef21_gradient_bound():
    assert T.ef21_gradient_bound(2.0, 3.0, 0.1, 0.5, 10) == pytest.approx(2 * 2 / 1 + 3 / 5)


# ---------------------------------------------------------------------------------------------
# GD, Nesterov, DCGD, DIANA, MARINA, Scaffnew.


def test_gd_and_nesterov():
    assert T.gd_stepsize(4.0) == 0.25
    assert T.gd_rate(4.0, 1.0) == 0.75
    assert T.gd_rate(4.0, 1.0, 0.1) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="gamma must be <= 1/L"):
        T.gd_rate(4.0, 1.0, 0.3)
    assert T.nesterov_stepsize(4.0) == 0.25
    assert T.nesterov_momentum(100.0, 1.0) == pytest.approx(9 / 11)
    assert T.nesterov_rate(100.0, 1.0) == pytest.approx(0.9)
    assert T.nonconvex_gradient_bound(1.0, 0.5, 4) == 1.0


def test_gd_rate_is_the_worst_case_contraction_on_a_quadratic():
    # on f = ½ xᵀ diag(mu, L) x, GD with γ = 1/L contracts ||x||² by exactly (1 − μ/L)² <= 1 − μ/L
    L, mu = 10.0, 0.5
    x = np.array([1.0, 0.0])
    x1 = x - T.gd_stepsize(L) * np.array([mu, L]) * x
    assert (x1 @ x1) / (x @ x) <= T.gd_rate(L, mu) + 1e-15


def test_dcgd_formulas():
    g = T.dcgd_stepsize(2.0, 3.0, 4.0, 8)
    assert g == pytest.approx(1 / (2 + 2 * 4 * 3 / 8))
    assert T.dcgd_rate(g, 0.5) == pytest.approx(1 - 0.5 * g)
    assert T.dcgd_neighborhood(0.1, 4.0, 2.0, 0.5, 8) == pytest.approx(2 * 0.1 * 4 * 2 / (0.5 * 8))
    assert T.dcgd_neighborhood(0.1, 4.0, 0.0, 0.5, 8) == 0.0  # interpolation
    assert T.dcgd_stepsize(2.0, 3.0, 0.0, 8) == 0.5  # no compression: GD


def test_dcgd_one_step_variance_monte_carlo():
    # one DCGD step from x* with independent Rand-K: E||x^1 − x*||² = γ²ωσ*²/M exactly
    prob = P.quadratic(4, 6, L=2.0, mu=0.5, heterogeneity=1.5, key=0)
    A = np.asarray(prob.data["A"], np.float64)
    b = np.asarray(prob.data["b"], np.float64)
    g = np.einsum("mij,j->mi", A, prob.x_star) - b
    M, d, k, gamma, N = 4, 6, 2, 0.3, 100_000
    rng = np.random.default_rng(0)
    # Rand-K masks, N draws × M workers: keep k coordinates scaled by d/k
    keys = rng.random((N, M, d))
    masks = keys < np.sort(keys, axis=2)[:, :, [k]]
    err = -gamma * np.mean(np.where(masks, g * (d / k), 0.0), axis=1)  # x^1 − x*
    sq = np.sum(err**2, axis=1)
    expected = T.dcgd_one_step_variance(gamma, d / k - 1, prob.sigma_star_sq, M)
    assert abs(sq.mean() - expected) <= 6 * sq.std(ddof=1) / np.sqrt(N)


def test_diana_formulas():
    w, M = 9.0, 10
    assert T.diana_shift_step(w) == 0.1
    g = T.diana_stepsize(1.0, 2.0, w, M)
    assert g == pytest.approx(1 / (1 + 6 * 9 * 2 / 10))
    assert T.diana_rate(g, 0.1, 0.1) == pytest.approx(max(1 - 0.1 * g, 0.95))
    assert T.diana_rate(0.5, 1.0, 0.1) == pytest.approx(0.95)  # the shift term dominates
    assert T.diana_rate(0.5, 1.0, shift_step=0.1) == T.diana_rate(0.5, 1.0, 0.1)
    assert T.diana_lyapunov_weight(g, w, 0.1, M) == pytest.approx(4 * 9 * g**2 / (0.1 * 10))
    assert T.diana_lyapunov_weight(g, w, shift_step=0.1, M=M) == T.diana_lyapunov_weight(
        g, w, 0.1, M
    )


def test_marina_formulas():
    L, Lt, w, M = 1.0, 2.0, 8.0, 4
    p = T.marina_probability(w)
    assert p == pytest.approx(1 / 9)
    g = T.marina_stepsize(L, Lt, w, p, M)
    assert g == pytest.approx(1 / (1 + 2 * math.sqrt((1 - p) * w / (p * M))))
    # AB form with independent compressors (A = ω/M, B = 0) is the same step size
    assert T.marina_ab_stepsize(L, Lt, 123.0, w / M, 0.0, p) == pytest.approx(g, rel=1e-14)
    # Perm-K: A = B = 1 gives 1/(L + sqrt((1-p)/p) L_pm)
    assert T.marina_ab_stepsize(L, Lt, 0.5, 1.0, 1.0, 0.25) == pytest.approx(
        1 / (1 + math.sqrt(3) * 0.5)
    )
    assert T.marina_stepsize(L, Lt, w, 1.0, M) == 1.0  # p = 1: GD
    with pytest.raises(ValueError, match="A must be >= B"):
        T.marina_ab_stepsize(L, Lt, 0.5, 0.5, 1.0, 0.5)


def test_scaffnew_formulas():
    assert T.scaffnew_stepsize(4.0) == 0.25
    p = T.scaffnew_probability(100.0, 1.0)
    assert p == pytest.approx(0.1)
    assert T.scaffnew_rate(0.01, 1.0, p) == pytest.approx(0.99)
    assert T.scaffnew_rate(0.01, 1.0, 0.05) == pytest.approx(1 - 0.05**2)
    assert T.scaffnew_lyapunov_weight(0.01, 0.1) == pytest.approx(0.01)


# ---------------------------------------------------------------------------------------------
# Local GD fixed point (THEORY.md §2.8), checked by iterating local GD in NumPy.


def _local_gd_round(A, b, x, gamma, H):
    xs = []
    for Am, bm in zip(A, b, strict=True):
        xm = x.copy()
        for _ in range(H):
            xm = xm - gamma * (Am @ xm - bm)
        xs.append(xm)
    return np.mean(xs, axis=0)


@pytest.mark.parametrize("H", [1, 3, 10])
def test_local_gd_fixed_point_by_iteration(H):
    prob = P.quadratic(4, 5, L=2.0, mu=0.5, delta=0.4, heterogeneity=1.0, key=2)
    A = np.asarray(prob.data["A"], np.float64)
    b = np.asarray(prob.data["b"], np.float64)
    gamma = 1.0 / prob.L_max
    x_fp = T.local_gd_fixed_point(A, b, gamma, H)
    Tm, c = T.local_gd_round_map(A, b, gamma, H)
    x = np.zeros(5)
    for r in range(300):
        x_next = _local_gd_round(A, b, x, gamma, H)
        if r < 3:  # the affine round map is exact
            np.testing.assert_allclose(x_next, Tm @ x + c, rtol=1e-12, atol=1e-13)
        x = x_next
    np.testing.assert_allclose(x, x_fp, atol=1e-12)
    np.testing.assert_allclose(Tm @ x_fp + c, x_fp, atol=1e-13)
    if H == 1:
        np.testing.assert_allclose(x_fp, prob.x_star, atol=1e-12)
    else:  # client drift: the fixed point is not x*
        assert np.linalg.norm(x_fp - prob.x_star) > 1e-3


def test_local_gd_fixed_point_limits():
    prob = P.quadratic(3, 4, L=1.0, mu=0.5, delta=0.3, heterogeneity=1.0, key=5)
    A = np.asarray(prob.data["A"], np.float64)
    b = np.asarray(prob.data["b"], np.float64)
    # H → ∞: the mean of the local optima
    x_inf = T.local_gd_fixed_point(A, b, 1.0 / prob.L_max, 400)
    local = np.linalg.solve(A, b[..., None])[..., 0]
    np.testing.assert_allclose(x_inf, local.mean(0), atol=1e-10)
    # identical Hessians: x* for every H
    A_same = np.broadcast_to(A.mean(0), A.shape)
    x_star = np.linalg.solve(A.mean(0), b.mean(0))
    np.testing.assert_allclose(T.local_gd_fixed_point(A_same, b, 0.7, 7), x_star, atol=1e-12)
    with pytest.raises(ValueError, match="H must be"):
        T.local_gd_fixed_point(A, b, 0.1, 0)
    with pytest.raises(ValueError, match="gamma must be in \\(0, inf\\)"):
        T.local_gd_fixed_point(A, b, 0.0, 2)
    with pytest.raises(TypeError, match="H must be a Python int"):
        T.local_gd_fixed_point(A, b, 0.1, 2.0)


# ---------------------------------------------------------------------------------------------
# Similarity.


def test_bregman_and_similarity():
    L_rel, mu_rel = T.bregman_constants(0.5, 1.0)
    assert (L_rel, mu_rel) == (1.0, 0.5)
    assert T.bregman_rate(0.5, 1.0) == 0.5
    assert T.bregman_rate(0.0, 1.0) == 0.0  # identical functions: one step
    assert T.spag_rate(1.5, 1.0) == pytest.approx(0.5)
    tau, theta, eta = T.aeg_sliding_parameters(4.0, 1.0)
    assert (tau, theta, eta) == (0.25, 0.125, 0.25)
    s = T.similarity_bound(1.0, 10_000, 10, 0.01)
    lg = math.log(2 * 10 / 0.01)
    assert s == pytest.approx(math.sqrt(2 * lg / 10_000) + 2 * lg / 30_000)


def test_dane_contraction_bounds_the_quadratic_iteration():
    prob = P.quadratic(5, 6, L=3.0, mu=1.0, delta=0.3, key=4)
    A = np.asarray(prob.data["A"], np.float64)
    A_bar = A.mean(0)
    lam = min(np.linalg.eigvalsh(Am)[0] for Am in A)
    for mu_r in (0.0, 0.5):
        bound = T.dane_quadratic_contraction(prob.delta, mu_r, lam)
        assert bound < 1
        for Am in A:
            K = np.linalg.solve(Am + mu_r * np.eye(6), Am + mu_r * np.eye(6) - A_bar)
            assert np.linalg.norm(K, 2) <= bound * (1 + 1e-12)


# ---------------------------------------------------------------------------------------------
# Arrays, rounds and validation.


def test_array_inputs_broadcast():
    alphas = np.array([0.1, 1 / 3, 1.0])
    g = T.ef21_stepsize(2.0, 3.0, alphas, mu=np.array([[0.5], [1.0]]))
    assert isinstance(g, np.ndarray) and g.shape == (2, 3)
    for i, mu in enumerate((0.5, 1.0)):
        for j, a in enumerate(alphas):
            assert g[i, j] == T.ef21_stepsize(2.0, 3.0, float(a), mu=mu)
    assert isinstance(T.gd_stepsize(2.0), float)
    assert T.dcgd_stepsize(1.0, 1.0, 1.0, np.array([2, 4])).shape == (2,)


def test_rounds_to_accuracy():
    assert T.rounds_to_accuracy(0.5, 1e-3) == 10
    for rate, eps in [(0.9, 1e-6), (0.999, 1e-2), (0.3, 0.5)]:
        k = T.rounds_to_accuracy(rate, eps)
        assert rate**k <= eps < rate ** (k - 1)
    assert T.rounds_to_accuracy(0.9, 1.0) == 0
    assert T.rounds_to_accuracy(0.0, 1e-9) == 1
    np.testing.assert_array_equal(T.rounds_to_accuracy(np.array([0.5, 0.1]), 1e-2), [7, 2])


@pytest.mark.parametrize(
    "fn,match",
    [
        (lambda: T.ef21_constants(0.0), "alpha must be in \\(0, 1\\]"),
        (lambda: T.ef21_constants(1.5), "alpha must be in \\(0, 1\\]"),
        (lambda: T.ef21_stepsize(1.0, 1.0, 0.5, mu=0.0), "mu must be in \\(0, inf\\)"),
        (lambda: T.gd_stepsize(0.0), "L must be in \\(0, inf\\)"),
        (lambda: T.gd_rate(1.0, 2.0), "mu must be <= L"),
        (lambda: T.dcgd_stepsize(1.0, 1.0, -1.0, 2), "omega must be in \\[0, inf\\)"),
        (lambda: T.dcgd_stepsize(1.0, 1.0, 1.0, 0), "M must be in \\[1, inf\\)"),
        (lambda: T.diana_rate(0.1, 1.0, 1.5), "shift_step must be in \\(0, 1\\]"),
        (lambda: T.diana_lyapunov_weight(0.1, 1.0, 0.0, 2), "shift_step must be in"),
        (lambda: T.marina_stepsize(1.0, 1.0, 1.0, 0.0, 2), "p must be in"),
        (lambda: T.scaffnew_rate(0.1, 1.0, 2.0), "p must be in"),
        (lambda: T.rounds_to_accuracy(1.0, 0.1), "rate must be in \\[0, 1\\)"),
        (lambda: T.rounds_to_accuracy(0.5, 0.0), "eps must be in"),
        (lambda: T.gd_stepsize(float("nan")), "must not be NaN"),
        (lambda: T.dane_quadratic_contraction(0.1, 0.0, 0.0), "lambda_min_m \\+ mu_r"),
    ],
)
def test_validation(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()


@pytest.mark.parametrize("bad", ["1.0", True, 1 + 2j, None])
def test_non_numbers_are_type_errors(bad):
    with pytest.raises(TypeError, match="L must be"):
        T.gd_stepsize(bad)


def test_moved_and_renamed_names_say_where_they_went():
    with pytest.raises(AttributeError, match="renamed jaxdist.theory.diana_shift_step"):
        T.diana_alpha  # noqa: B018
    with pytest.raises(AttributeError, match="moved to jaxdist.comm.allreduce_time"):
        T.allreduce_time  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        T.nope  # noqa: B018
    assert not hasattr(T, "p2p_time")


def test_every_public_function_lives_in_its_method_module():
    expected = {
        "_common": {"rounds_to_accuracy", "nonconvex_gradient_bound"},
        "_gd": {
            "gd_stepsize",
            "gd_rate",
            "nesterov_stepsize",
            "nesterov_momentum",
            "nesterov_rate",
        },
        "_diana": {"diana_shift_step", "diana_stepsize", "diana_rate", "diana_lyapunov_weight"},
        "_ef21": {"ef21_constants", "ef21_stepsize", "ef21_rate", "ef21_gradient_bound"},
    }
    modules = {getattr(T, name).__module__ for name in T.__all__}
    assert modules == {
        f"jaxdist.theory.{m}"
        for m in ("_common", "_gd", "_dcgd", "_diana", "_marina", "_ef21", "_local", "_similarity")
    }
    for mod, names in expected.items():
        for name in names:
            assert getattr(T, name).__module__ == f"jaxdist.theory.{mod}", name
    # the package's __all__ is the union of its modules' __all__, with no duplicates
    import importlib

    union = []
    for m in sorted(modules):
        union += importlib.import_module(m).__all__
    union = [n for n in union if n != "ArrayLike"]
    assert sorted(union) == sorted(T.__all__) and len(set(T.__all__)) == len(T.__all__)


def test_docstrings_cite_sources():
    for name in T.__all__:
        doc = getattr(T, name).__doc__
        assert doc and "Args:" in doc and "Returns:" in doc, name
        assert "THEORY.md" in doc or name == "rounds_to_accuracy", name
