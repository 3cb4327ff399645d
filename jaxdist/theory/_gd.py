"""Distributed gradient descent and Nesterov's accelerated method (THEORY.md §2.1).

One round is one all-reduce of the d-dimensional gradient; these are the uncompressed baselines
of the communication complexities O(κ log 1/ε) (GD) and O(sqrt κ log 1/ε) (Nesterov).
"""

from __future__ import annotations

import numpy as np

from jaxdist.theory._common import ArrayLike, _mu_le_L, _out, _pos

__all__ = ["gd_rate", "gd_stepsize", "nesterov_momentum", "nesterov_rate", "nesterov_stepsize"]


def gd_stepsize(L: ArrayLike) -> float | np.ndarray:
    """Gradient descent step size γ = 1/L. THEORY.md §2.1 [standard].

    Args:
      L: smoothness constant of f, > 0.

    Returns:
      1/L.

    Examples:
      >>> from jaxdist import theory
      >>> theory.gd_stepsize(4.0)
      0.25
    """
    return _out(1.0 / _pos("L", L))


def gd_rate(L: ArrayLike, mu: ArrayLike, gamma: ArrayLike | None = None) -> float | np.ndarray:
    """Contraction of ||x^k − x*||² per GD step: 1 − γμ for 0 < γ <= 1/L. THEORY.md §2.1.

    With γ = 1/L this is 1 − μ/L, i.e. O(κ log 1/ε) rounds. [standard]

    Args:
      L: smoothness constant, > 0.
      mu: strong convexity constant, 0 < mu <= L.
      gamma: step size in (0, 1/L]; default 1/L.

    Returns:
      1 − γμ.
    """
    L, mu = _pos("L", L), _pos("mu", mu)
    _mu_le_L(mu, L)
    g = 1.0 / L if gamma is None else _pos("gamma", gamma)
    if np.any(g > 1.0 / L * (1 + 1e-12)):
        raise ValueError(f"gamma must be <= 1/L = {1.0 / L}, got gamma={gamma!r}")
    return _out(1.0 - g * mu)


def nesterov_stepsize(L: ArrayLike) -> float | np.ndarray:
    """Nesterov's accelerated GD step size 1/L. THEORY.md §2.1 [Nesterov 2004, Thm 2.2.3; standard].

    Args:
      L: smoothness constant, > 0.

    Returns:
      1/L.
    """
    return _out(1.0 / _pos("L", L))


def nesterov_momentum(L: ArrayLike, mu: ArrayLike) -> float | np.ndarray:
    """Momentum (sqrt κ − 1)/(sqrt κ + 1), κ = L/μ. THEORY.md §2.1 [standard, not re-read].

    Args:
      L: smoothness constant, > 0.
      mu: strong convexity constant, 0 < mu <= L.

    Returns:
      (sqrt κ − 1)/(sqrt κ + 1).
    """
    L, mu = _pos("L", L), _pos("mu", mu)
    _mu_le_L(mu, L)
    sk = np.sqrt(L / mu)
    return _out((sk - 1.0) / (sk + 1.0))


def nesterov_rate(L: ArrayLike, mu: ArrayLike) -> float | np.ndarray:
    """Rate 1 − 1/sqrt κ of f(x^k) − f* + (μ/2)||x^k − x*||² for Nesterov's method.

    THEORY.md §2.1 [Nesterov 2004, Thm 2.2.3; standard, not re-read] and §2.10 [V-der+MC: the
    bound held with worst ratio 0.78; rounds ∝ κ^0.527]: O(sqrt κ log 1/ε) rounds.

    Args:
      L: smoothness constant, > 0.
      mu: strong convexity constant, 0 < mu <= L.

    Returns:
      1 − sqrt(μ/L).
    """
    L, mu = _pos("L", L), _pos("mu", mu)
    _mu_le_L(mu, L)
    return _out(1.0 - np.sqrt(mu / L))
