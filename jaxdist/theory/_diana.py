"""DIANA: compressed gradient differences with learned shifts (THEORY.md §2.3).

Worker m sends Δ_m = C_m(∇f_m(x) − h_m) with C_m ∈ U(ω) and moves its shift h_m by the **shift
step** (``shift_step``, α in the papers and THEORY.md): h_m ← h_m + shift_step·Δ_m. The shifts learn
∇f_m(x*), so DIANA converges to x* exactly in O((κ(1 + ω/M) + ω) log 1/ε) rounds.
"""

from __future__ import annotations

import numpy as np

from jaxdist.theory._common import ArrayLike, _nonneg, _out, _pos, _refs, _unit, _workers

__all__ = ["diana_lyapunov_weight", "diana_rate", "diana_shift_step", "diana_stepsize"]


_DIANA_REFS = """
    References:
      Mishchenko, Gorbunov, Takáč, Richtárik, `Distributed learning with compressed gradient
      differences <https://arxiv.org/abs/1901.09269>`_, 2019 (id unconfirmed); Horváth,
      Kovalev, Mishchenko, Stich, Richtárik, `Stochastic distributed learning with gradient
      quantization and variance reduction <https://arxiv.org/abs/1904.05115>`_, 2019 (id
      unconfirmed).
"""


@_refs(_DIANA_REFS)
def diana_shift_step(omega: ArrayLike) -> float | np.ndarray:
    """DIANA's shift step 1/(ω+1), the largest the theory allows. THEORY.md §2.3 [V-der, V-sec].

    Worker m updates its shift by h_m ← h_m + shift_step·C_m(∇f_m(x) − h_m); any
    0 < shift_step <= 1/(ω+1) works (the key lemma of §2.3). THEORY.md calls it α; jaxdist keeps
    ``alpha`` for the contraction parameter of a compressor.

    Args:
      omega: compressor variance ω >= 0.

    Returns:
      1/(ω+1).

    Examples:
      >>> from jaxdist import theory
      >>> theory.diana_shift_step(9.0)  # Rand-K with d/K = 10
      0.1
    """
    return _out(1.0 / (_nonneg("omega", omega) + 1.0))


@_refs(_DIANA_REFS)
def diana_stepsize(
    L: ArrayLike, L_max: ArrayLike, omega: ArrayLike, M: ArrayLike
) -> float | np.ndarray:
    """DIANA step size γ = 1/(L + 6ωL_max/M). THEORY.md §2.3 [V-der; V-sec DIANA-RR code].

    Args:
      L: smoothness of f, > 0.
      L_max: max_m L_m, > 0.
      omega: compressor variance ω >= 0.
      M: number of workers >= 1.

    Returns:
      1/(L + 6ωL_max/M).
    """
    L, Lm, w, M = _pos("L", L), _pos("L_max", L_max), _nonneg("omega", omega), _workers("M", M)
    return _out(1.0 / (L + 6.0 * w * Lm / M))


@_refs(_DIANA_REFS)
def diana_rate(gamma: ArrayLike, mu: ArrayLike, shift_step: ArrayLike) -> float | np.ndarray:
    """DIANA's linear rate max{1 − γμ, 1 − shift_step/2} of the Lyapunov function Ψ^k.

    THEORY.md §2.3 [V-src abstract of 1904.05115 for the complexity O((κ(1 + ω/M) + ω) log 1/ε);
    V-der for the constants]. Ψ^k = ||x^k − x*||² + (4ωγ²/(αM))(1/M) Σ ||h_m^k − ∇f_m(x*)||²
    with α = ``shift_step`` (see :func:`diana_lyapunov_weight`).

    Args:
      gamma: step size, 0 < γ <= :func:`diana_stepsize`.
      mu: strong convexity of f, > 0.
      shift_step: the shift step α in (0, 1/(ω+1)] (:func:`diana_shift_step`).

    Returns:
      max(1 − γμ, 1 − shift_step/2).

    Examples:
      >>> from jaxdist import theory
      >>> omega, M = 9.0, 10
      >>> gamma = theory.diana_stepsize(1.0, 1.0, omega, M)
      >>> theory.diana_rate(gamma, 0.1, theory.diana_shift_step(omega))  # 1 − γμ, γ = 1/6.4
      0.984375
    """
    g, mu, a = _pos("gamma", gamma), _pos("mu", mu), _unit("shift_step", shift_step)
    return _out(np.maximum(1.0 - g * mu, 1.0 - a / 2.0))


@_refs(_DIANA_REFS)
def diana_lyapunov_weight(
    gamma: ArrayLike, omega: ArrayLike, shift_step: ArrayLike, M: ArrayLike
) -> float | np.ndarray:
    """The weight 4ωγ²/(αM) of the shift error in DIANA's Lyapunov function (α = shift step).

    THEORY.md §2.3 [V-der]: Ψ^k = ||x^k − x*||² + weight · (1/M) Σ ||h_m^k − ∇f_m(x*)||².

    Args:
      gamma: step size > 0.
      omega: compressor variance ω >= 0.
      shift_step: the shift step α in (0, 1].
      M: number of workers >= 1.

    Returns:
      4ωγ²/(α·M).
    """
    g, w = _pos("gamma", gamma), _nonneg("omega", omega)
    return _out(4.0 * w * g**2 / (_unit("shift_step", shift_step) * _workers("M", M)))
