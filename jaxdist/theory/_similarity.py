"""Hessian similarity δ: Bregman GD, SPAG, DANE, accelerated extragradient sliding (THEORY.md §2.9).

δ bounds max_m ||∇²f_m − ∇²f|| (or, for sliding, ||∇²(f − f_1)|| with f_1 the server's function);
under similarity the rounds depend on δ/μ instead of κ = L/μ.
"""

from __future__ import annotations

import numpy as np

from jaxdist.theory._common import ArrayLike, _nonneg, _out, _pos, _unit, _workers

__all__ = [
    "aeg_sliding_parameters",
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
