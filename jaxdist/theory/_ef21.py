"""EF21: error feedback with contractive compressors C ∈ B(α) (THEORY.md §2.6).

Here ``alpha`` is the contraction parameter of the compressor (E||C(x) − x||² <= (1 − α)||x||²),
as everywhere in jaxdist (``Compressor.alpha(d)``).
"""

from __future__ import annotations

import numpy as np

from jaxdist.theory._common import ArrayLike, _nonneg, _out, _pos, _refs, _unit, _workers

__all__ = ["ef21_constants", "ef21_gradient_bound", "ef21_rate", "ef21_stepsize"]


_EF21_REFS = """
    References:
      Richtárik, Sokolov, Fatkhullin, `EF21: a new, simpler, theoretically better, and
      practically faster error feedback <https://arxiv.org/abs/2106.05203>`_, 2021.
"""


@_refs(_EF21_REFS)
def ef21_constants(alpha: ArrayLike) -> tuple[float | np.ndarray, float | np.ndarray]:
    """EF21's θ = 1 − sqrt(1 − α) and β = (1 − α)/(1 − sqrt(1 − α)). THEORY.md §2.6 [V-src poster].

    For α = 1 (no compression) θ = 1 and β = 0. Example: Top-1 in d = 3 (α = 1/3) gives
    θ = 0.18350, β = 3.63299, sqrt(β/θ) = 4.4495.

    Args:
      alpha: contraction parameter of C ∈ B(α), in (0, 1].

    Returns:
      ``(theta, beta)``.

    Examples:
      >>> from jaxdist import theory
      >>> theta, beta = theory.ef21_constants(1 / 3)  # Top-1 in d = 3
      >>> round(theta, 5), round(beta, 5)
      (0.1835, 3.63299)
    """
    a = _unit("alpha", alpha)
    r = np.sqrt(1.0 - a)
    theta = 1.0 - r
    beta = (1.0 - a) / theta
    return _out(theta), _out(beta)


@_refs(_EF21_REFS)
def ef21_stepsize(
    L: ArrayLike, L_tilde: ArrayLike, alpha: ArrayLike, mu: ArrayLike | None = None
) -> float | np.ndarray:
    """EF21's theoretical step size: nonconvex, or PL when ``mu`` is given.

    THEORY.md §2.6 [V-src poster Thm 2 and Thm 3]:

    * nonconvex: γ = 1/(L + L̃ sqrt(β/θ));
    * PL (f − f* <= ||∇f||²/(2μ)): γ = min{1/(L + L̃ sqrt(2β/θ)), θ/(2μ)}.

    For the §3 counterexample (paper scaling, Top-1, α = 1/3): 0.005859 and 0.004269.

    Args:
      L: smoothness of f, > 0.
      L_tilde: L̃ = sqrt(mean L_m²), > 0.
      alpha: contraction parameter in (0, 1].
      mu: PL constant > 0, or ``None`` for the nonconvex step size.

    Returns:
      The step size γ.
    """
    L, Lt = _pos("L", L), _pos("L_tilde", L_tilde)
    theta, beta = (np.asarray(v) for v in ef21_constants(alpha))
    if mu is None:
        return _out(1.0 / (L + Lt * np.sqrt(beta / theta)))
    mu = _pos("mu", mu)
    return _out(np.minimum(1.0 / (L + Lt * np.sqrt(2.0 * beta / theta)), theta / (2.0 * mu)))


@_refs(_EF21_REFS)
def ef21_rate(gamma: ArrayLike, mu: ArrayLike) -> float | np.ndarray:
    """EF21's PL rate 1 − γμ of Ψ^t = f(x^t) − f* + (γ/θ)G^t. THEORY.md §2.6 [V-src poster Thm 3].

    Args:
      gamma: step size, 0 < γ <= :func:`ef21_stepsize` with ``mu``.
      mu: PL constant > 0.

    Returns:
      1 − γμ.
    """
    return _out(1.0 - _pos("gamma", gamma) * _pos("mu", mu))


@_refs(_EF21_REFS)
def ef21_gradient_bound(
    delta0: ArrayLike, G0: ArrayLike, gamma: ArrayLike, theta: ArrayLike, T: ArrayLike
) -> float | np.ndarray:
    """EF21 nonconvex bound E||∇f(x̂^T)||² <= 2Δ0/(γT) + E[G^0]/(θT). THEORY.md §2.6 [V-src Thm 2].

    Args:
      delta0: f(x^0) − f^inf >= 0.
      G0: G^0 = (1/M) Σ ||g_m^0 − ∇f_m(x^0)||² >= 0.
      gamma: step size > 0.
      theta: θ from :func:`ef21_constants`, in (0, 1].
      T: number of iterations >= 1.

    Returns:
      2Δ0/(γT) + G^0/(θT).
    """
    d0, g0 = _nonneg("delta0", delta0), _nonneg("G0", G0)
    g, th, T = _pos("gamma", gamma), _unit("theta", theta), _workers("T", T)
    return _out(2.0 * d0 / (g * T) + g0 / (th * T))
