"""Local steps (THEORY.md §2.8): local GD / FedAvg and FedProx drift on quadratics, Scaffnew."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxdist._validate import check_int
from jaxdist.theory._common import ArrayLike, _mu_le_L, _out, _pos, _refs, _unit

__all__ = [
    "fedprox_fixed_point",
    "local_gd_fixed_point",
    "local_gd_round_map",
    "scaffnew_lyapunov_weight",
    "scaffnew_probability",
    "scaffnew_rate",
    "scaffnew_stepsize",
]


def _local_gd_matrices(
    A: Any, b: Any, gamma: float, H: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    A = np.asarray(A, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if A.ndim != 3 or A.shape[1] != A.shape[2] or b.shape != A.shape[:2]:
        raise ValueError(f"A must have shape (M, d, d) and b (M, d), got {A.shape} and {b.shape}")
    gamma = float(_pos("gamma", gamma))
    H = check_int("H", H, low=1)
    M, d = b.shape
    step = np.eye(d) - gamma * A  # (M, d, d)
    S = np.broadcast_to(np.eye(d), (M, d, d)).copy()
    Q = np.zeros((M, d, d))
    for _ in range(H):  # Q = Σ_{h<H} (I − γA_m)^h, S = (I − γA_m)^H
        Q += S
        S = S @ step
    Q *= gamma
    P = np.eye(d) - S  # = Q A_m
    return P, Q, b


def local_gd_round_map(
    A: ArrayLike, b: ArrayLike, gamma: float, H: int
) -> tuple[np.ndarray, np.ndarray]:
    """The exact round map x⁺ = T x + c of local GD on quadratics f_m = ½xᵀA_m x − b_mᵀx.

    THEORY.md §2.8 [V-der+MC]: every worker takes H steps x ← x − γ(A_m x − b_m) from x, then the
    models are averaged, so x⁺ = x − (1/M) Σ_m (P_m x − Q_m b_m) with
    P_m = I − (I − γA_m)^H and Q_m = γ Σ_{h<H} (I − γA_m)^h (P_m = Q_m A_m; no inverse needed).

    Args:
      A: Hessians, shape ``(M, d, d)``.
      b: linear terms, shape ``(M, d)``.
      gamma: local step size > 0.
      H: local steps per round, >= 1.

    Returns:
      ``(T, c)`` with ``T = I − (1/M) Σ P_m`` (shape ``(d, d)``) and ``c = (1/M) Σ Q_m b_m``.

    References:
      Khaled, Mishchenko, Richtárik, `Tighter theory for local SGD on identical and heterogeneous
      data <https://arxiv.org/abs/1909.04746>`_, 2020 (id unconfirmed).
    """
    P, Q, b = _local_gd_matrices(A, b, gamma, H)
    d = b.shape[1]
    return np.eye(d) - P.mean(axis=0), np.einsum("mij,mj->i", Q, b) / b.shape[0]


def local_gd_fixed_point(A: ArrayLike, b: ArrayLike, gamma: float, H: int) -> np.ndarray:
    """The fixed point of local GD on quadratics: x_fp = (Σ_m P_m)^{-1} Σ_m P_m x_m*.

    THEORY.md §2.8 [V-der+MC], with P_m = I − (I − γA_m)^H and x_m* = A_m^{-1} b_m (computed as
    Σ Q_m b_m, so singular A_m are fine). x_fp ≠ x* in general; H = 1 gives x*, H → ∞ gives
    mean_m x_m*, identical Hessians give x* for any H. If γ <= 1/L_max and every A_m ≻ 0, the
    round map (:func:`local_gd_round_map`) contracts to x_fp.

    Args:
      A: Hessians, shape ``(M, d, d)``.
      b: linear terms, shape ``(M, d)``.
      gamma: local step size > 0.
      H: local steps per round, >= 1.

    Returns:
      x_fp, shape ``(d,)``, float64.

    References:
      Khaled, Mishchenko, Richtárik, `Tighter theory for local SGD on identical and heterogeneous
      data <https://arxiv.org/abs/1909.04746>`_, 2020 (id unconfirmed).
    """
    P, Q, b = _local_gd_matrices(A, b, gamma, H)
    return np.linalg.solve(P.sum(axis=0), np.einsum("mij,mj->i", Q, b))


def fedprox_fixed_point(A: ArrayLike, b: ArrayLike, mu: float) -> np.ndarray:
    r"""The fixed point of FedProx with exact proximal steps on quadratics f_m = ½xᵀA_m x − b_mᵀx.

    THEORY.md §2.10 [V-src]: the exact prox of f_m at w is (A_m + μI)⁻¹(b_m + μw), so with full
    participation and server step 1 the round map is w⁺ = w − (1/M) Σ_m P_m (w − w_m*) with
    P_m = (A_m + μI)⁻¹A_m, the local-GD formula with this P_m:

    .. math::

       w_{fp} = \Big(\sum_m (A_m + \mu I)^{-1}A_m\Big)^{-1} \sum_m (A_m + \mu I)^{-1} b_m .

    It is biased (w_fp ≠ x* on heterogeneous data); the bias decreases as μ grows and vanishes
    only as μ → ∞ (where FedProx becomes GD with step 1/μ); identical Hessians give x*. No
    inverse of A_m is needed, so singular A_m are fine as long as Σ_m P_m is invertible.

    Args:
      A: Hessians, shape ``(M, d, d)``.
      b: linear terms, shape ``(M, d)``.
      mu: proximal weight μ > 0.

    Returns:
      w_fp, shape ``(d,)``, float64.

    Raises:
      ValueError: bad shapes or ``mu <= 0``.

    References:
      Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, `Federated optimization in heterogeneous
      networks <https://arxiv.org/abs/1812.06127>`_, 2020.
    """
    A = np.asarray(A, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if A.ndim != 3 or A.shape[1] != A.shape[2] or b.shape != A.shape[:2]:
        raise ValueError(f"A must have shape (M, d, d) and b (M, d), got {A.shape} and {b.shape}")
    mu = float(_pos("mu", mu))
    d = b.shape[1]
    shifted = A + mu * np.eye(d)
    P = np.linalg.solve(shifted, A)  # (A_m + μI)⁻¹ A_m
    q = np.linalg.solve(shifted, b[..., None])[..., 0]  # (A_m + μI)⁻¹ b_m
    return np.linalg.solve(P.sum(axis=0), q.sum(axis=0))


_PROXSKIP_REFS = """
    References:
      Mishchenko, Malinovsky, Stich, Richtárik, `ProxSkip: yes! Local gradient steps provably
      lead to communication acceleration! Finally! <https://arxiv.org/abs/2202.09357>`_, 2022.
"""


@_refs(_PROXSKIP_REFS)
def scaffnew_stepsize(L: ArrayLike) -> float | np.ndarray:
    """Scaffnew / ProxSkip step size γ = 1/L (any 0 < γ <= 1/L). THEORY.md §2.8 [V-sec Thm 6].

    Args:
      L: smoothness constant, > 0 (of every f_m in the federated form).

    Returns:
      1/L.
    """
    return _out(1.0 / _pos("L", L))


@_refs(_PROXSKIP_REFS)
def scaffnew_probability(L: ArrayLike, mu: ArrayLike) -> float | np.ndarray:
    """Scaffnew's communication probability p = 1/sqrt κ = sqrt(μ/L). THEORY.md §2.8.

    With γ = 1/L this gives O(κ log 1/ε) iterations and O(sqrt κ log 1/ε) expected
    communications [V-src ICML abstract; V-sec Thm 6].

    Args:
      L: smoothness constant, > 0.
      mu: strong convexity constant, 0 < mu <= L.

    Returns:
      sqrt(μ/L).
    """
    L, mu = _pos("L", L), _pos("mu", mu)
    _mu_le_L(mu, L)
    return _out(np.sqrt(mu / L))


@_refs(_PROXSKIP_REFS)
def scaffnew_rate(gamma: ArrayLike, mu: ArrayLike, p: ArrayLike) -> float | np.ndarray:
    """Scaffnew's rate max{1 − γμ, 1 − p²} of Ψ_t. THEORY.md §2.8 [V-sec Thm 6].

    Ψ_t = ||x_t − x*||² + (γ²/p²)||h_t − h*||² (see :func:`scaffnew_lyapunov_weight`).

    Args:
      gamma: step size in (0, 1/L].
      mu: strong convexity > 0.
      p: communication probability in (0, 1].

    Returns:
      max(1 − γμ, 1 − p²).
    """
    g, mu, p = _pos("gamma", gamma), _pos("mu", mu), _unit("p", p)
    return _out(np.maximum(1.0 - g * mu, 1.0 - p**2))


@_refs(_PROXSKIP_REFS)
def scaffnew_lyapunov_weight(gamma: ArrayLike, p: ArrayLike) -> float | np.ndarray:
    """The weight γ²/p² of the control-variate error in Scaffnew's Ψ_t. THEORY.md §2.8 [V-sec].

    Args:
      gamma: step size > 0.
      p: communication probability in (0, 1].

    Returns:
      γ²/p².
    """
    return _out(_pos("gamma", gamma) ** 2 / _unit("p", p) ** 2)
