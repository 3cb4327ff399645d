"""Hessian similarity δ: Bregman GD, SPAG, DANE, accelerated extragradient sliding (THEORY.md §2.9).

δ bounds max_m ||∇²f_m − ∇²f|| (or, for sliding, ||∇²(f − f_1)|| with f_1 the server's function);
under similarity the rounds depend on δ/μ instead of κ = L/μ.
"""

from __future__ import annotations

import numpy as np

from jaxdist.theory._common import ArrayLike, _nonneg, _out, _pos, _unit, _workers

__all__ = [
    "aeg_inner_rtol",
    "aeg_sliding_parameters",
    "aeg_sliding_rate",
    "bregman_constants",
    "bregman_rate",
    "dane_quadratic_contraction",
    "similarity_bound",
    "spag_rate",
]


def bregman_constants(
    delta: ArrayLike, mu: ArrayLike
) -> tuple[float | np.ndarray, float | np.ndarray]:
    """Relative smoothness 1 and relative strong convexity μ/(μ + 2δ) of f w.r.t. φ.

    THEORY.md §2.9 [V-der]: with the server's reference φ(x) = f_1(x) + (δ/2)||x||² and
    ||∇²f_1 − ∇²f|| <= δ, ∇²f ≼ ∇²φ ≼ (1 + 2δ/μ)∇²f, so κ_rel = 1 + 2δ/μ.

    Args:
      delta: Hessian similarity δ >= 0.
      mu: strong convexity of f, > 0.

    Returns:
      ``(L_rel, mu_rel)`` = ``(1.0, μ/(μ + 2δ))``.
    """
    d, mu = _nonneg("delta", delta), _pos("mu", mu)
    return _out(np.ones_like(d * mu)), _out(mu / (mu + 2.0 * d))


def bregman_rate(delta: ArrayLike, mu: ArrayLike) -> float | np.ndarray:
    """Bregman (mirror) GD rate 1 − 1/κ_rel = 2δ/(μ + 2δ) of f(x^k) − f*.

    THEORY.md §2.9 [V-der for κ_rel; the rate theorem of Lu, Freund, Nesterov 2018 is
    UNVERIFIED in its theorem number]: O((1 + δ/μ) log 1/ε) communications.

    Args:
      delta: Hessian similarity δ >= 0.
      mu: strong convexity of f, > 0.

    Returns:
      2δ/(μ + 2δ).

    References:
      Lu, Freund, Nesterov, `Relatively smooth convex optimization by first-order methods, and
      applications <https://arxiv.org/abs/1610.05708>`_, 2018 (id unconfirmed).
    """
    d, mu = _nonneg("delta", delta), _pos("mu", mu)
    return _out(2.0 * d / (mu + 2.0 * d))


def spag_rate(delta: ArrayLike, mu: ArrayLike) -> float | np.ndarray:
    """Order of SPAG's accelerated rate, 1 − 1/sqrt(κ_rel) with κ_rel = 1 + 2δ/μ.

    THEORY.md §2.9 [V-src abstract: the rate depends on sqrt(κ_rel); constants and the adaptive
    gain G_t are UNVERIFIED]. Indicative only.

    Args:
      delta: Hessian similarity δ >= 0.
      mu: strong convexity of f, > 0.

    Returns:
      1 − 1/sqrt(1 + 2δ/μ).

    References:
      Hendrikx, Xiao, Bubeck, Bach, Massoulié, `Statistically preconditioned accelerated gradient
      method for distributed optimization <https://arxiv.org/abs/2002.10726>`_, 2020 (id
      unconfirmed).
    """
    d, mu = _nonneg("delta", delta), _pos("mu", mu)
    return _out(1.0 - 1.0 / np.sqrt(1.0 + 2.0 * d / mu))


def dane_quadratic_contraction(
    delta: ArrayLike, mu_r: ArrayLike, lambda_min_m: ArrayLike
) -> float | np.ndarray:
    """Per-round contraction (δ + μ_r)/(λ_min(A_m) + μ_r) of DANE (η = 1) on quadratics.

    THEORY.md §2.9 [V-der+MC]: x_m^{k+1} − x* = (A_m + μ_r I)^{-1}(A_m + μ_r I − A)(x^k − x*). The
    bound is < 1 only when δ < λ_min(A_m).

    Args:
      delta: Hessian similarity δ >= 0.
      mu_r: DANE's proximal parameter μ_r >= 0.
      lambda_min_m: min_m λ_min(A_m) >= 0 (with lambda_min_m + mu_r > 0).

    Returns:
      (δ + μ_r)/(λ_min + μ_r).

    References:
      Shamir, Srebro, Zhang, `Communication-efficient distributed optimization using an
      approximate Newton-type method <https://arxiv.org/abs/1312.7853>`_, 2014 (id unconfirmed).
    """
    d, r, lam = (
        _nonneg("delta", delta),
        _nonneg("mu_r", mu_r),
        _nonneg("lambda_min_m", lambda_min_m),
    )
    if np.any(lam + r <= 0):
        raise ValueError("lambda_min_m + mu_r must be > 0")
    return _out((d + r) / (lam + r))


def aeg_sliding_parameters(
    delta: ArrayLike, mu: ArrayLike
) -> tuple[float | np.ndarray, float | np.ndarray, float | np.ndarray]:
    """Parameters (τ, θ, η) of accelerated extragradient sliding (AEG), with L_p = δ.

    THEORY.md §2.10 [V-sec: a public NumPy implementation matches the constants recalled in
    §2.9; the paper text was not reachable]: τ = min{1, sqrt(μ/δ)/2}, θ = 1/(2δ),
    η = min{1/(2μ), 1/(2 sqrt(μδ))}, for p = f − f_1 with ||∇²p|| <= δ. The method needs
    O(sqrt(δ/μ) log 1/ε) communication rounds [V-src abstract; MC exponent 0.519 in §2.10], two
    per iteration. The exact potential factor of the theorem is UNVERIFIED.

    Args:
      delta: similarity δ = L_p > 0 of the server's f_1 to f.
      mu: strong convexity of f, > 0.

    Returns:
      ``(tau, theta, eta)``.

    Examples:
      >>> from jaxdist import theory
      >>> theory.aeg_sliding_parameters(delta=4.0, mu=1.0)
      (0.25, 0.125, 0.25)

    References:
      Kovalev, Beznosikov, Borodich, Gasnikov, Scutari, `Optimal gradient sliding and its
      application to distributed optimization under similarity
      <https://arxiv.org/abs/2205.15136>`_, 2022.
    """
    d, mu = _pos("delta", delta), _pos("mu", mu)
    tau = np.minimum(1.0, np.sqrt(mu / d) / 2.0)
    theta = 1.0 / (2.0 * d)
    eta = np.minimum(1.0 / (2.0 * mu), 1.0 / (2.0 * np.sqrt(mu * d)))
    return _out(tau), _out(theta), _out(eta)


def aeg_sliding_rate(delta: ArrayLike, mu: ArrayLike) -> float | np.ndarray:
    """Per-iteration contraction 1 − τ of AEG sliding's potential, τ = min{1, sqrt(μ/δ)/2}.

    THEORY.md §2.10 [V-sec constants; MC: the potential (1/η)||x − x*||² + (2/τ)(f(x_f) − f*)
    contracts every iteration by at most 1 − τ; the theorem's exact factor is UNVERIFIED]. Two
    communication rounds per iteration, so O(sqrt(δ/μ) log 1/ε) rounds.

    Args:
      delta: similarity δ = L_p > 0 of the server's f_1 to f.
      mu: strong convexity of f, > 0.

    Returns:
      1 − min{1, sqrt(μ/δ)/2}.

    Examples:
      >>> from jaxdist import theory
      >>> theory.aeg_sliding_rate(delta=4.0, mu=1.0)
      0.75

    References:
      Kovalev, Beznosikov, Borodich, Gasnikov, Scutari, `Optimal gradient sliding and its
      application to distributed optimization under similarity
      <https://arxiv.org/abs/2205.15136>`_, 2022.
    """
    d, mu = _pos("delta", delta), _pos("mu", mu)
    return _out(1.0 - np.minimum(1.0, np.sqrt(mu / d) / 2.0))


def aeg_inner_rtol(delta: ArrayLike, server_smoothness: ArrayLike) -> float | np.ndarray:
    """AEG's computable inner accuracy (L_p/√3)/(L_q + 1/θ), a tolerance relative to ||∇A(x_g)||.

    THEORY.md §2.10 [V-der]: the inner problem A(z) = <∇p(x_g), z> + ||z − x_g||²/(2θ) + q(z)
    is (L_q + 1/θ)-smooth and 1/θ-strongly convex, so ||x_g − argmin A|| >= ||∇A(x_g)||/(L_q +
    1/θ), and ||∇A(z)|| <= (L_p/√3)||∇A(x_g)||/(L_q + 1/θ) implies the paper's criterion
    ||∇A(z)||² <= (L_p²/3)||x_g − argmin A||² (its wording UNVERIFIED). With θ = 1/(2L_p) and
    L_p = δ this is (δ/√3)/(L_q + 2δ).

    Args:
      delta: similarity δ = L_p > 0.
      server_smoothness: L_q = L_1 > 0, the smoothness of the server's f_1.

    Returns:
      (δ/√3)/(L_q + 2δ).

    Examples:
      >>> from jaxdist import theory
      >>> round(theory.aeg_inner_rtol(delta=1.0, server_smoothness=1.0), 6)
      0.19245

    References:
      Kovalev, Beznosikov, Borodich, Gasnikov, Scutari, `Optimal gradient sliding and its
      application to distributed optimization under similarity
      <https://arxiv.org/abs/2205.15136>`_, 2022.
    """
    d, Lq = _pos("delta", delta), _pos("server_smoothness", server_smoothness)
    return _out((d / np.sqrt(3.0)) / (Lq + 2.0 * d))


def similarity_bound(
    L: ArrayLike, n: ArrayLike, d: ArrayLike, rho: ArrayLike = 0.01
) -> float | np.ndarray:
    """High-probability similarity δ <= L sqrt(2 log(2d/ρ)/n) + (2L/(3n)) log(2d/ρ).

    THEORY.md §2.9 [V-der from the matrix Bernstein inequality, Tropp 2012 (theorem number
    UNVERIFIED)]: n i.i.d. samples per worker with 0 ≼ ∇²ℓ ≼ L·I; holds with probability
    >= 1 − ρ for one worker.

    Args:
      L: bound on the per-sample Hessians, > 0.
      n: samples per worker >= 1.
      d: dimension >= 1.
      rho: failure probability in (0, 1].

    Returns:
      The bound on ||∇²f_m − E∇²ℓ||.

    References:
      Tropp, `User-friendly tail bounds for sums of random matrices
      <https://arxiv.org/abs/1004.4389>`_, 2012 (id unconfirmed).
    """
    L, n, d, rho = _pos("L", L), _workers("n", n), _workers("d", d), _unit("rho", rho)
    lg = np.log(2.0 * d / rho)
    return _out(L * np.sqrt(2.0 * lg / n) + 2.0 * L * lg / (3.0 * n))


# --- OLGA ---


def olga_parameters(
    delta: ArrayLike, mu: ArrayLike, num_workers: ArrayLike, omega: ArrayLike, p: ArrayLike = None
) -> tuple[float | np.ndarray, float | np.ndarray, float | np.ndarray, float | np.ndarray]:
    r"""Cor. 1's parameters (p, θ, τ, α) of OLGA for an unbiased compressor U(ω) on M workers.

    THEORY.md §2.10 (OLGA, [V-src, full text]):

    .. math::

       p = \frac{1}{\gamma_\omega}, \quad
       \theta = \min\Big\{\frac{\sqrt{pM}}{8\delta\sqrt\omega}, \frac{1}{2\delta}\Big\}, \quad
       \tau = \min\Big\{\frac14\sqrt{\frac{\mu\theta}{p}}, \frac14\Big\}, \quad
       \alpha = \frac{\theta}{8p\tau},

    with :math:`\gamma_\omega = 1 + \omega` (= d/K for Rand-K, THEORY's statement; for any
    unbiased compressor, the factor :math:`E\|Q(x)\|^2 \le (1 + \omega)\|x\|^2`), and
    θ = 1/(2δ) for ω = 0. Then μα = 2τ whenever τ < 1/4 [V-der], and the rate is
    :func:`olga_rate`.

    Args:
      delta: similarity δ > 0 of the server's f_1 to f.
      mu: strong convexity μ > 0 of f.
      num_workers: M >= 1.
      omega: the compressor's variance ω >= 0.
      p: the inner-loop parameter in (0, 1] (default 1/(1 + ω)).

    Returns:
      ``(p, theta, tau, alpha)``.

    Examples:
      >>> from jaxdist import theory
      >>> p, theta, tau, alpha = theory.olga_parameters(0.1, 0.01, num_workers=16, omega=9.0)
      >>> round(p, 4), round(theta, 4), round(tau, 4), round(0.01 * alpha, 4)  # μα = 2τ
      (0.1, 0.527, 0.0574, 0.1148)

    References:
      Bylinkin, Beznosikov, `Accelerated methods with compressed communications for
      distributed optimization problems under data similarity
      <https://arxiv.org/abs/2412.16414>`_, 2024 (Corollary 1).
    """
    d, mu = _pos("delta", delta), _pos("mu", mu)
    M, w = _workers("num_workers", num_workers), _nonneg("omega", omega)
    p = 1.0 / (1.0 + w) if p is None else _unit("p", p)
    cap = 1.0 / (2.0 * d)
    with np.errstate(divide="ignore"):
        theta = np.where(w > 0, np.sqrt(p * M) / (8.0 * d * np.sqrt(w)), np.inf)
    theta = np.minimum(theta, cap)
    tau = np.minimum(np.sqrt(mu * theta / p) / 4.0, 0.25)
    alpha = theta / (8.0 * p * tau)
    return _out(p), _out(theta), _out(tau), _out(alpha)


def olga_rate(tau: ArrayLike) -> float | np.ndarray:
    r"""OLGA's per-iteration contraction 1 − τ of the potential
    :math:`\Phi_k = (1/\alpha + \mu)\|z_k - x^\star\|^2 + (2/\tau)(f(y_k) - f^\star)`.

    THEORY.md §2.10 ("rate exactly 1 − τ [V-der]", μα = 2τ with Cor. 1's choices). Theorem
    1's statement was not reachable: the potential's form is derived from the update rules for
    the idealised step (exact inner loop, :math:`G_k = \nabla f(y_{k+1})`) and checked in
    Monte Carlo for OLGA itself [V-der+MC]: :math:`\mathbb E\,\Phi_k \le (1 - \tau)^k
    \Phi_0` (see :func:`jaxdist.methods.olga`).

    .. math::

       \rho = 1 - \tau.

    Args:
      tau: OLGA's coupling τ in (0, 1/2].

    Returns:
      1 − τ.

    References:
      Bylinkin, Beznosikov, `Accelerated methods with compressed communications for
      distributed optimization problems under data similarity
      <https://arxiv.org/abs/2412.16414>`_, 2024 (Theorem 1).
    """
    t = _unit("tau", tau)
    if np.any(t > 0.5):
        raise ValueError(f"tau must be <= 1/2 for the rate 1 - tau, got tau={tau}")
    return _out(1.0 - t)


__all__ += ["olga_parameters", "olga_rate"]
