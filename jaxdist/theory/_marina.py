"""MARINA: compressed gradient differences with random full synchronisations (THEORY.md §2.4)."""

from __future__ import annotations

import numpy as np

from jaxdist.theory._common import ArrayLike, _nonneg, _out, _pos, _refs, _unit, _workers

__all__ = ["marina_ab_stepsize", "marina_probability", "marina_stepsize"]


_MARINA_REFS = """
    References:
      Gorbunov, Burlachenko, Li, Richtárik, `MARINA: faster non-convex distributed learning
      with compression <https://arxiv.org/abs/2102.07845>`_, 2021 (id unconfirmed).
"""


@_refs(_MARINA_REFS)
def marina_probability(omega: ArrayLike) -> float | np.ndarray:
    """MARINA's synchronisation probability p = 1/(ω+1). THEORY.md §2.4 [V-sec].

    Args:
      omega: compressor variance ω >= 0.

    Returns:
      1/(ω+1).
    """
    return _out(1.0 / (_nonneg("omega", omega) + 1.0))


@_refs(_MARINA_REFS)
def marina_stepsize(
    L: ArrayLike, L_tilde: ArrayLike, omega: ArrayLike, p: ArrayLike, M: ArrayLike
) -> float | np.ndarray:
    """MARINA step size γ = 1/(L + L̃ sqrt((1 − p)ω/(pM))), independent C_m ∈ U(ω).

    THEORY.md §2.4 [V-sec: 3PC code ``L_0 + Lt*sqrt(((1-p)/p)*A_st)`` with A_st = ω/M; the paper's
    form with L̃ = L is 1/(L(1 + sqrt((1−p)ω/(pM)))); theorem number UNVERIFIED]. Nonconvex
    guarantee E||∇f(x̂^K)||² <= 2Δ0/(γK) (:func:`nonconvex_gradient_bound`).

    Args:
      L: smoothness of f, > 0.
      L_tilde: L̃ = sqrt(mean L_m²), > 0.
      omega: compressor variance ω >= 0.
      p: synchronisation probability in (0, 1].
      M: number of workers >= 1.

    Returns:
      1/(L + L̃ sqrt((1 − p)ω/(pM))).
    """
    L, Lt = _pos("L", L), _pos("L_tilde", L_tilde)
    w, p, M = _nonneg("omega", omega), _unit("p", p), _workers("M", M)
    return _out(1.0 / (L + Lt * np.sqrt((1.0 - p) * w / (p * M))))


def marina_ab_stepsize(
    L: ArrayLike, L_tilde: ArrayLike, L_pm: ArrayLike, A: ArrayLike, B: ArrayLike, p: ArrayLike
) -> float | np.ndarray:
    """MARINA step size under the AB inequality: 1/(L + sqrt(((1−p)/p)((A − B)L̃² + B L_±²))).

    THEORY.md §2.4, general AB form of Szlendak, Tyurin, Richtárik 2021 [V-der; V-sec code].
    Perm-K (d >= M) has A = B = 1, so γ = 1/(L + sqrt((1−p)/p) L_±); independent U(ω)
    compressors have A = ω/M, B = 0 (recovering :func:`marina_stepsize`). L_±² is the Hessian
    variance (``Problem.L_pm`` for quadratics).

    Args:
      L: smoothness of f, > 0.
      L_tilde: L̃ = sqrt(mean L_m²), > 0.
      L_pm: Hessian variance L_± >= 0.
      A: AB constant A >= B.
      B: AB constant B >= 0.
      p: synchronisation probability in (0, 1].

    Returns:
      1/(L + sqrt(((1 − p)/p)((A − B)L̃² + B L_±²))).

    References:
      Szlendak, Tyurin, Richtárik, `Permutation compressors for provably faster distributed
      nonconvex optimization <https://arxiv.org/abs/2110.03300>`_, 2021 (id unconfirmed).
    """
    L, Lt, Lpm = _pos("L", L), _pos("L_tilde", L_tilde), _nonneg("L_pm", L_pm)
    A, B, p = _nonneg("A", A), _nonneg("B", B), _unit("p", p)
    if np.any(A < B):
        raise ValueError(f"A must be >= B, got A={A} < B={B}")
    return _out(1.0 / (L + np.sqrt((1.0 - p) / p * ((A - B) * Lt**2 + B * Lpm**2))))
