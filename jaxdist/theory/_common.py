"""What every theory function shares: argument checks, the output convention, generic bounds.

The checks are thin wrappers of :func:`jaxdist._validate.check_number` (one implementation of
argument checking in jaxdist), applied elementwise to NumPy arrays; they return float64 arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike

from jaxdist._validate import check_number

__all__ = ["ArrayLike", "nonconvex_gradient_bound", "rounds_to_accuracy"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _check(name: str, v: Any, **bounds: Any) -> np.ndarray:
    check_number(name, v, allow_traced=False, **bounds)
    return np.asarray(v, dtype=np.float64)


def _arr(name: str, v: Any) -> np.ndarray:
    """Any real number or array of them (no NaN)."""
    return _check(name, v)


def _pos(name: str, v: Any) -> np.ndarray:
    """Elementwise > 0."""
    return _check(name, v, low=0.0, low_open=True)


def _nonneg(name: str, v: Any) -> np.ndarray:
    """Elementwise >= 0."""
    return _check(name, v, low=0.0)


def _unit(name: str, v: Any) -> np.ndarray:
    """Elementwise in (0, 1]: probabilities, contraction parameters, shift steps."""
    return _check(name, v, low=0.0, high=1.0, low_open=True)


def _workers(name: str, v: Any) -> np.ndarray:
    """Elementwise >= 1: numbers of workers, iterations, samples, dimensions."""
    return _check(name, v, low=1.0)


def _mu_le_L(mu: np.ndarray, L: np.ndarray) -> None:
    if np.any(mu > L):
        raise ValueError(f"mu must be <= L, got mu={mu} > L={L}")


def _refs(text: str) -> Callable[[_F], _F]:
    """Appends a shared References section to a docstring (no-op under ``python -OO``)."""

    def wrap(fn: _F) -> _F:
        if fn.__doc__:
            fn.__doc__ = fn.__doc__.rstrip() + "\n" + text.rstrip() + "\n    "
        return fn

    return wrap


def _out(a: Any) -> float | np.ndarray:
    """A Python float for a 0-d result, else a float64 array."""
    a = np.asarray(a, dtype=np.float64)
    return float(a) if a.ndim == 0 else a


def rounds_to_accuracy(rate: ArrayLike, eps: ArrayLike) -> int | np.ndarray:
    """Smallest k with ``rate**k <= eps``: rounds for a linear rate to shrink a quantity by eps.

    Args:
      rate: contraction factor in [0, 1).
      eps: relative accuracy in (0, 1].

    Returns:
      ``ceil(log(eps) / log(rate))`` (0 if eps = 1, 1 if rate = 0), as an int for scalar input
      and an int64 array otherwise.

    Examples:
      >>> from jaxdist import theory
      >>> theory.rounds_to_accuracy(0.5, 1e-3)  # 0.5**10 < 1e-3 < 0.5**9
      10
      >>> theory.rounds_to_accuracy(theory.gd_rate(L=10.0, mu=1.0), 1e-6)
      132
    """
    r = _check("rate", rate, low=0.0, high=1.0, high_open=True)
    e = _unit("eps", eps)
    with np.errstate(divide="ignore"):
        k = np.where(e >= 1, 0.0, np.where(r == 0, 1.0, np.ceil(np.log(e) / np.log(r))))
    return int(k) if k.ndim == 0 else k.astype(np.int64)


def nonconvex_gradient_bound(
    delta0: ArrayLike, gamma: ArrayLike, T: ArrayLike
) -> float | np.ndarray:
    """2Δ0/(γT): bound on min_k ||∇f(x^k)||² (or the average) after T steps.

    THEORY.md §2.1 (GD with γ = 1/L: 2LΔ0/T) and §2.4 (MARINA, with γ from
    :func:`marina_stepsize`). [standard; MARINA: V-sec]

    Args:
      delta0: f(x^0) − f^inf >= 0.
      gamma: step size > 0.
      T: number of iterations >= 1.

    Returns:
      The bound 2Δ0/(γT).
    """
    return _out(2.0 * _nonneg("delta0", delta0) / (_pos("gamma", gamma) * _workers("T", T)))
