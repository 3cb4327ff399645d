"""The three-worker quadratic on which Top-1 compressed GD diverges (THEORY.md §3).

Beznosikov, Horváth, Richtárik, Safaryan, `On biased compression for distributed learning
<https://arxiv.org/abs/2002.12410>`_, 2020, Example 1 (recalled; the numbers below are
verified numerically in THEORY.md §6 and in ``tests/test_problems.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxdist.problems._base import Problem
from jaxdist.problems._quadratic import quadratic_problem

__all__ = ["top1_counterexample", "COUNTEREXAMPLE_VECTORS"]

#: The vectors a_1, a_2, a_3 of the counterexample.
COUNTEREXAMPLE_VECTORS = ((-3.0, 2.0, 2.0), (2.0, -3.0, 2.0), (2.0, 2.0, -3.0))


def top1_counterexample(scaling: str = "paper", t: float = 1.0, *, dtype: Any = None) -> Problem:
    """The lecture's counterexample: DCGD with Top-1 diverges for every step size.

    M = d = 3 with a_1 = (−3, 2, 2), a_2 = (2, −3, 2), a_3 = (2, 2, −3), x^0 = (t, t, t) and

    * ``scaling="paper"``: f_m(x) = ⟨a_m, x⟩² + ¼||x||² (Hessian 2a_m a_mᵀ + ½I);
    * ``scaling="lecture"``: f_m(x) = 2⟨a_m, x⟩² + ½||x||² (everything doubled).

    At x^0 the true gradient is (7t/6)(1, 1, 1) but the mean of the Top-1 compressed worker
    gradients is −(11t/6)(1, 1, 1) (paper; 7t/3 and −11t/3 in the lecture scaling), so
    x^{k+1} = (1 + 11γ/6) x^k. Constants (paper scaling; doubled in the lecture scaling):
    mu = 7/6, L = 103/6, L_m = 34.5 for every m, x* = 0, f* = 0, σ*² = 0 (interpolation); δ
    and L_± are computed exactly.

    Args:
      scaling: ``"paper"`` or ``"lecture"``.
      t: the starting point is (t, t, t).
      dtype: storage dtype (default: JAX's default float).

    Returns:
      A quadratic :class:`Problem` (see :func:`quadratic_problem`).

    References:
      Beznosikov, Horváth, Richtárik, Safaryan, `On biased compression for distributed
      learning <https://arxiv.org/abs/2002.12410>`_, 2020 (Example 1).
    """
    if scaling == "paper":
        c = 1.0
    elif scaling == "lecture":
        c = 2.0
    else:
        raise ValueError(f"scaling must be 'paper' or 'lecture', got {scaling!r}")
    t = float(t)
    if not np.isfinite(t):
        raise ValueError(f"t must be finite, got t={t}")
    a = np.asarray(COUNTEREXAMPLE_VECTORS)
    A = c * (2.0 * np.einsum("mi,mj->mij", a, a) + 0.5 * np.eye(3))
    b = np.zeros((3, 3))
    return quadratic_problem(
        A,
        b,
        init_params=np.full(3, t),
        name=f"top1_counterexample(scaling={scaling!r}, t={t:g})",
        dtype=dtype,
        info={"scaling": scaling, "t": t, "a": a},
    )
