"""Compressed distributed GD (DCGD / QSGD-style) with unbiased compressors (THEORY.md §2.2).

Workers send C_m(∇f_m(x)) with independent C_m ∈ U(ω); the method converges linearly only to a
neighbourhood of radius O(γωσ*²/(μM)), which vanishes under interpolation (σ*² = 0).
"""

from __future__ import annotations

import numpy as np

from jaxdist.theory._common import ArrayLike, _nonneg, _out, _pos, _workers

__all__ = ["dcgd_neighborhood", "dcgd_one_step_variance", "dcgd_rate", "dcgd_stepsize"]


def dcgd_stepsize(
    L: ArrayLike, L_max: ArrayLike, omega: ArrayLike, M: ArrayLike
) -> float | np.ndarray:
    """DCGD step size γ = 1/(L + 2ωL_max/M) (independent unbiased C_m ∈ U(ω)).

    THEORY.md §2.2, theorem [V-der] (expected smoothness A = L + 2ωL_max/M; unified SGD theory of
    Gorbunov, Hanzely, Richtárik 2020, https://arxiv.org/abs/1905.11261, id unconfirmed).
    Example: the §3 counterexample with Rand-1 (ω = 2) gives γ = 0.01583.

    Args:
      L: smoothness of f, > 0.
      L_max: max_m L_m, > 0.
      omega: compressor variance ω >= 0.
      M: number of workers >= 1.

    Returns:
      1/(L + 2ωL_max/M).

    References:
      Khirirat, Feyzmahdavian, Johansson 2018; Alistarh et al., `QSGD
      <https://arxiv.org/abs/1610.02132>`_, 2017.
    """
    L, Lm, w, M = _pos("L", L), _pos("L_max", L_max), _nonneg("omega", omega), _workers("M", M)
    return _out(1.0 / (L + 2.0 * w * Lm / M))


def dcgd_rate(gamma: ArrayLike, mu: ArrayLike) -> float | np.ndarray:
    """DCGD contraction 1 − γμ of E||x^k − x*||² (up to the neighbourhood). THEORY.md §2.2 [V-der].

    Args:
      gamma: step size, 0 < γ <= :func:`dcgd_stepsize`.
      mu: strong convexity of f, > 0.

    Returns:
      1 − γμ.
    """
    return _out(1.0 - _pos("gamma", gamma) * _pos("mu", mu))


def dcgd_neighborhood(
    gamma: ArrayLike, omega: ArrayLike, sigma_star_sq: ArrayLike, mu: ArrayLike, M: ArrayLike
) -> float | np.ndarray:
    """Radius 2γωσ*²/(μM) of DCGD's neighbourhood in E||x^k − x*||². THEORY.md §2.2 [V-der].

    E||x^k − x*||² <= (1 − γμ)^k ||x^0 − x*||² + 2γωσ*²/(μM) for γ <= 1/(L + 2ωL_max/M).

    Args:
      gamma: step size > 0.
      omega: compressor variance ω >= 0.
      sigma_star_sq: σ*² = (1/M) Σ ||∇f_m(x*)||² >= 0.
      mu: strong convexity of f, > 0.
      M: number of workers >= 1.

    Returns:
      2γωσ*²/(μM).
    """
    g, w = _pos("gamma", gamma), _nonneg("omega", omega)
    s, mu, M = _nonneg("sigma_star_sq", sigma_star_sq), _pos("mu", mu), _workers("M", M)
    return _out(2.0 * g * w * s / (mu * M))


def dcgd_one_step_variance(
    gamma: ArrayLike, omega: ArrayLike, sigma_star_sq: ArrayLike, M: ArrayLike
) -> float | np.ndarray:
    """E||x^1 − x*||² = γ²ωσ*²/M for one DCGD step started at x* with Rand-K (E||C(x)||² exact).

    THEORY.md §2.2 [V-der+MC]: the neighbourhood is real (lower bound on the stationary error).

    Args:
      gamma: step size > 0.
      omega: Rand-K variance ω = d/K − 1 >= 0.
      sigma_star_sq: σ*² >= 0.
      M: number of workers >= 1.

    Returns:
      γ²ωσ*²/M.
    """
    g, w = _pos("gamma", gamma), _nonneg("omega", omega)
    return _out(g**2 * w * _nonneg("sigma_star_sq", sigma_star_sq) / _workers("M", M))
