r"""Test problems for the round-based methods: exact Hessian similarity δ and exact κ.

:func:`similar_quadratics` builds quadratics whose server (worker 0) is convex and exactly δ
away from the mean Hessian (what Bregman GD, AEG sliding and OLGA assume),
:func:`heterogeneous_quadratics` builds workers that all have the condition number of f (for κ
sweeps), and
:func:`measure_similarity` measures max_m ||∇²f_m(x) − ∇²f(x)|| of any problem at a few points
(exactly, in float64). THEORY.md §2.9 (similarity) and §2.10 ("Test problems that make δ exact").
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdist._validate import check_int, finite_float
from jaxdist.problems._base import Problem, numpy_rng, resolve_dtype, stored
from jaxdist.problems._logistic import _directions, _logistic_deviation, logistic_loss
from jaxdist.problems._quadratic import (
    _random_orthogonal,
    _spectral_norm_sym,
    _symmetrized,
    quadratic_loss,
    quadratic_problem,
)

__all__ = ["similar_quadratics", "heterogeneous_quadratics", "measure_similarity"]


def _check_common(num_workers, dim, L, mu, heterogeneity):
    M = check_int("num_workers", num_workers, low=2)
    d = check_int("dim", dim)
    L, mu = finite_float("L", L), finite_float("mu", mu)
    if not mu > 0:
        raise ValueError(f"mu must be > 0, got mu={mu}")
    if not L >= mu:
        raise ValueError(f"L must be >= mu, got L={L} < mu={mu}")
    if d == 1 and L != mu:
        raise ValueError(f"dim=1 has a single eigenvalue: need mu == L, got mu={mu}, L={L}")
    heterogeneity = finite_float("heterogeneity", heterogeneity)
    if not heterogeneity >= 0:
        raise ValueError(f"heterogeneity must be >= 0, got heterogeneity={heterogeneity}")
    return M, d, L, mu, heterogeneity


def _linear_terms(rng, A, heterogeneity):
    """b_m = A_m x* − g_m with ||x*|| = 1 and centred g_m, (1/M) Σ ||g_m||² = heterogeneity²."""
    M, d, _ = A.shape
    x_star = rng.standard_normal(d)
    x_star /= np.linalg.norm(x_star)
    g = rng.standard_normal((M, d))
    g -= g.mean(axis=0)
    if heterogeneity > 0:
        g *= heterogeneity / np.sqrt(np.mean(np.sum(g**2, axis=1)))
    else:
        g[:] = 0.0
    return np.einsum("mij,j->mi", A, x_star) - g


def _scale_to_unit_norm(B: np.ndarray, N: np.ndarray) -> float:
    """The s > 0 with max_m ||B + s N_m|| = 1, given ||B|| < 1 (the norm is convex in s).

    Newton's method from the right of the root (g(s) = max_m ||B + sN_m|| is convex and
    g(0) < 1, so its tangents stay on the right and the iterates decrease to the root), then
    a last step back to the left so that g(s) <= 1 holds in floating point.
    """
    nmax = float(np.max(_spectral_norm_sym(N)))
    if nmax == 0.0:
        return 0.0
    b = float(_spectral_norm_sym(B))

    def g_and_slope(s):
        norms = _spectral_norm_sym(B + s * N)
        m = int(np.argmax(norms))
        ev, V = np.linalg.eigh(B + s * N[m])  # the worst worker only
        v, sign = (V[:, -1], 1.0) if ev[-1] >= -ev[0] else (V[:, 0], -1.0)
        return float(norms[m]), sign * float(v @ N[m] @ v)

    s = (1.0 + b) / nmax  # g(s) >= s·max||N_m|| − ||B|| = 1: right of the root
    for _ in range(100):
        val, slope = g_and_slope(s)
        if val - 1.0 <= 1e-15:
            break
        s_new = s - (val - 1.0) / max(slope, 1e-300)
        if not s_new < s:  # rounding floor
            break
        s = max(s_new, 0.0)
    shrink = 1e-15
    while g_and_slope(s)[0] > 1.0:  # land on the feasible side (a few ulps)
        s *= 1.0 - shrink
        shrink *= 2.0
    return s


def similar_quadratics(
    num_workers: int,
    dim: int,
    *,
    L: float = 1.0,
    mu: float = 0.01,
    delta: float = 0.1,
    heterogeneity: float = 1.0,
    key: Any = 0,
    dtype: Any = None,
    init_params: Any = None,
) -> Problem:
    r"""Quadratics with a convex server exactly δ-similar to the mean (THEORY.md §2.10).

    .. math::

       f_m(x) = \tfrac12 x^\top A_m x - b_m^\top x, \qquad
       A_1 = A + \delta P, \qquad
       A_m = A - \frac{\delta}{M-1} P + \delta R_m \quad (m \ge 2), \qquad
       \sum_{m \ge 2} R_m = 0,

    so that the mean of the A_m is exactly A. Construction (float64 NumPy from ``key``):

    * **Mean Hessian.** A = Q diag(λ) Qᵀ with a random orthogonal Q and λ log-spaced on
      [mu, L], both ends attained: f is L-smooth and mu-strongly convex with these exact constants.
    * **Server** (worker 0, the f₁ of Bregman GD, AEG sliding and OLGA). P = ZZᵀ/||ZZᵀ|| with a
      Gaussian d × d matrix Z, so P ⪰ 0 and ||P|| = 1: A₁ ⪰ A is positive definite (f₁ is
      mu-strongly convex) and ||A₁ − A|| = δ exactly.
    * **Other workers.** R_m = s N_m with random symmetric N_m centred over m >= 2 and the
      largest s with max_{m>=2} ||−P/(M−1) + sN_m|| = 1 (Newton's method on this convex
      function of s), so ||A_m − A|| <= δ with equality for the most dissimilar one (for M = 2,
      A₂ = A − δP). These A_m may be indefinite (for δ > mu they usually are): only f and f₁
      are convex, which is all that server-side similarity methods assume.
    * **Heterogeneity.** x* is random with ||x*|| = 1, the gradients g_m = ∇f_m(x*) are random,
      centred and scaled so that σ*² = (1/M) Σ ||g_m||² = ``heterogeneity²``; b_m = A_m x* − g_m.

    The problem is built by :func:`quadratic_problem`, so L, mu, x*, σ*² and
    ``delta = max_m ||A_m − Ā||`` are recomputed exactly, in float64, from the stored data
    (``delta_exact=True``); they equal the requested values up to the storage dtype's rounding.
    ``info`` adds ``delta_server = ||A₁ − Ā||``, ``L_server = λ_max(A₁)`` and
    ``mu_server = λ_min(A₁)`` (>= mu up to rounding), computed the same way. With these
    constants Bregman GD needs O((1 + 2δ/mu) log 1/ε) rounds and AEG sliding
    O(sqrt(δ/mu) log 1/ε) (THEORY.md §2.9, §2.10).

    Args:
      num_workers: M >= 2 (worker 0 is the server).
      dim: d >= 1 (d = 1 needs mu == L).
      L: largest eigenvalue of the mean Hessian A, ``L >= mu``.
      mu: smallest eigenvalue of A, ``mu > 0``.
      delta: the similarity δ = ||A₁ − A|| >= max_{m>=2} ||A_m − A||, ``delta >= 0``.
      heterogeneity: σ* = sqrt((1/M) Σ ||∇f_m(x*)||²) >= 0.
      key: an ``int`` seed (>= 0) or a JAX PRNG key (typed or raw); ``7`` and
        ``jax.random.key(7)`` give the same problem.
      dtype: storage dtype (default: JAX's default float).
      init_params: x^0 (default zeros).

    Returns:
      A :class:`Problem` (see :func:`quadratic_problem`) whose ``info`` holds ``delta_server``,
      ``L_server``, ``mu_server``, ``min_eig_m``, ``local_optima`` (``None`` when some A_m is
      not positive definite) and the ``requested`` values.

    Raises:
      ValueError: M < 2, mu <= 0, L < mu, delta < 0, heterogeneity < 0, or a bad key or dim.

    Examples:
      >>> from jaxdist.problems import similar_quadratics
      >>> p = similar_quadratics(4, 20, L=1.0, mu=0.01, delta=0.1, key=0)
      >>> round(p.L, 6), round(p.mu, 6), round(p.delta, 6), round(p.info["delta_server"], 6)
      (1.0, 0.01, 0.1, 0.1)
      >>> bool(p.info["mu_server"] >= 0.01 - 1e-6), round(p.sigma_star_sq, 4)
      (True, 1.0)

    References:
      Hendrikx, Xiao, Bubeck, Bach, Massoulié, `Statistically Preconditioned Accelerated
      Gradient Method for Distributed Optimization <https://arxiv.org/abs/2002.10726>`_, 2020;
      Kovalev, Beznosikov, Borodich, Gasnikov, Scutari, `Optimal Gradient Sliding and its
      Application to Distributed Optimization Under Similarity
      <https://arxiv.org/abs/2205.15136>`_, 2022.
    """
    M, d, L, mu, heterogeneity = _check_common(num_workers, dim, L, mu, heterogeneity)
    delta = finite_float("delta", delta)
    if not delta >= 0:
        raise ValueError(f"delta must be >= 0, got delta={delta}")
    dt = resolve_dtype(dtype)
    rng = numpy_rng(key)

    lam = np.geomspace(mu, L, d) if d > 1 else np.array([L])
    lam[0], lam[-1] = mu, L
    Q = _random_orthogonal(rng, d)
    A_bar = (Q * lam) @ Q.T
    A_bar = 0.5 * (A_bar + A_bar.T)
    A = np.broadcast_to(A_bar, (M, d, d)).copy()
    Z = rng.standard_normal((d, d))
    P = Z @ Z.T
    P = 0.5 * (P + P.T)
    P /= np.linalg.eigvalsh(P)[-1]
    if delta > 0:
        B = -P / (M - 1)
        if M > 2:
            Y = rng.standard_normal((M - 1, d, d))
            N = 0.5 * (Y + np.swapaxes(Y, 1, 2))
            N -= N.mean(axis=0)
            s = _scale_to_unit_norm(B, N)
        else:
            N, s = np.zeros((1, d, d)), 0.0
        A[0] = A_bar + delta * P
        A[1:] = A_bar + delta * (B + s * N)
    b = _linear_terms(rng, A, heterogeneity)

    # The server's constants, from the data exactly as quadratic_problem stores them.
    A_s = stored(_symmetrized(A), dt)
    A_mean = A_s[0].copy() if np.all(A_s == A_s[0]) else A_s.mean(axis=0)
    ev_server = np.linalg.eigvalsh(A_s[0])
    info = {
        "delta_server": float(_spectral_norm_sym(A_s[0] - A_mean)) if delta > 0 else 0.0,
        "L_server": float(ev_server[-1]),
        "mu_server": float(ev_server[0]),
        "requested": {"L": L, "mu": mu, "delta": delta, "sigma_star_sq": heterogeneity**2},
    }
    name = (
        f"similar_quadratics(M={M}, d={d}, L={L:g}, mu={mu:g}, delta={delta:g}, "
        f"heterogeneity={heterogeneity:g})"
    )
    return quadratic_problem(A, b, init_params=init_params, name=name, dtype=dtype, info=info)


def heterogeneous_quadratics(
    num_workers: int,
    dim: int,
    *,
    L: float = 1.0,
    mu: float = 0.01,
    heterogeneity: float = 1.0,
    key: Any = 0,
    dtype: Any = None,
    init_params: Any = None,
) -> Problem:
    r"""Quadratics whose workers all have the condition number of f (κ sweeps, THEORY.md §2.10).

    .. math::

       f_m(x) = \tfrac12 x^\top A_m x - b_m^\top x, \qquad
       A_m = Q \operatorname{diag}(\mu, \lambda_{m,2}, \dots, \lambda_{m,d-1}, L)\, Q^\top,
       \qquad \lambda_{m,i} \in [\mu, L],

    with one random orthogonal Q for all workers and independent log-uniform middle eigenvalues
    λ_{m,i} per worker, so the mean A = Q diag(mean_m λ_m) Qᵀ also has the extreme eigenvalues
    mu and L: every f_m and f are mu-strongly convex and L-smooth, κ(f) = κ(f_m) = L/mu exactly,
    and L_m = L. The workers differ in their middle spectrum (δ = max_m ||A_m − A|| > 0 unless
    d <= 2 or mu == L) and in b_m: x* is random with ||x*|| = 1, the gradients g_m = ∇f_m(x*) are
    random, centred and scaled so that σ*² = (1/M) Σ ||g_m||² = ``heterogeneity²``, and
    b_m = A_m x* − g_m. The constants are recomputed exactly from the stored data by
    :func:`quadratic_problem`. Use it to check rates in κ: e.g. distributed Nesterov needs
    O(sqrt(κ) log 1/ε) rounds (THEORY.md §2.1, §2.10).

    Args:
      num_workers: M >= 2.
      dim: d >= 1 (d = 1 needs mu == L).
      L: the largest eigenvalue of every A_m (and of A), ``L >= mu``.
      mu: the smallest eigenvalue of every A_m (and of A), ``mu > 0``.
      heterogeneity: σ* = sqrt((1/M) Σ ||∇f_m(x*)||²) >= 0.
      key: an ``int`` seed (>= 0) or a JAX PRNG key (typed or raw).
      dtype: storage dtype (default: JAX's default float).
      init_params: x^0 (default zeros).

    Returns:
      A :class:`Problem` (see :func:`quadratic_problem`); ``info["local_optima"]`` holds the
      A_m⁻¹b_m.

    Raises:
      ValueError: M < 2, mu <= 0, L < mu, heterogeneity < 0, or a bad key or dim.

    Examples:
      >>> from jaxdist.problems import heterogeneous_quadratics
      >>> p = heterogeneous_quadratics(3, 10, L=1.0, mu=1e-3, key=0)
      >>> round(p.kappa, 3), [round(float(v), 6) for v in p.L_m], p.info["min_eig_m"].round(6)
      (1000.0, [1.0, 1.0, 1.0], array([0.001, 0.001, 0.001]))

    References:
      Nesterov, `Lectures on Convex Optimization
      <https://doi.org/10.1007/978-3-319-91578-4>`_, 2018, §2.1 (the κ-dependence these
      problems test); Arjevani, Shamir, `Communication Complexity of Distributed Convex
      Learning and Optimization <https://arxiv.org/abs/1506.01900>`_, 2015.
    """
    M, d, L, mu, heterogeneity = _check_common(num_workers, dim, L, mu, heterogeneity)
    rng = numpy_rng(key)
    Q = _random_orthogonal(rng, d)
    lam = np.empty((M, d))
    if d > 2:
        lam[:, 1:-1] = np.exp(rng.uniform(np.log(mu), np.log(L), size=(M, d - 2)))
    lam[:, 0], lam[:, -1] = mu, L
    A = np.einsum("ij,mj,kj->mik", Q, lam, Q)
    A = 0.5 * (A + np.swapaxes(A, 1, 2))
    b = _linear_terms(rng, A, heterogeneity)
    info = {
        "requested": {"L": L, "mu": mu, "sigma_star_sq": heterogeneity**2},
        "eigenvalues_m": lam,
    }
    name = (
        f"heterogeneous_quadratics(M={M}, d={d}, L={L:g}, mu={mu:g}, "
        f"heterogeneity={heterogeneity:g})"
    )
    return quadratic_problem(A, b, init_params=init_params, name=name, dtype=dtype, info=info)


def _np64(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), tree)


def _generic_hessians(problem: Problem, points: np.ndarray) -> list[np.ndarray]:
    """∇²f_m(x) of every worker at each point, by ``jax.hessian`` of the loss in float64."""

    def cast(a):
        a = np.asarray(a)
        return jnp.asarray(a, jnp.float64) if np.issubdtype(a.dtype, np.floating) else a

    out = []
    with jax.enable_x64(True):
        data = jax.tree_util.tree_map(cast, problem.data)
        hess = jax.jit(jax.vmap(jax.hessian(problem.loss), in_axes=(None, 0)))
        for x in points:  # a few evaluation points
            H = np.asarray(hess(jnp.asarray(x, jnp.float64), data), dtype=np.float64)
            out.append(0.5 * (H + np.swapaxes(H, 1, 2)))
    return out


def _deviation_from_hessians(H: np.ndarray) -> tuple[float, float]:
    M = H.shape[0]
    H_bar = H[0].copy() if np.all(H == H[0]) else H.mean(axis=0)
    if M == 1:
        return 0.0, 0.0
    norms = _spectral_norm_sym(H - H_bar)
    return float(np.max(norms)), float(norms[0])


def measure_similarity(
    problem: Problem, points: Any = None, *, num_points: int = 3, key: Any = 0
) -> dict[str, Any]:
    r"""The Hessian similarity of a problem, measured exactly (float64) at a few points.

    .. math::

       \delta(x) = \max_m \|\nabla^2 f_m(x) - \nabla^2 f(x)\|, \qquad
       \delta_1(x) = \|\nabla^2 f_1(x) - \nabla^2 f(x)\|, \qquad
       \nabla^2 f = \frac1M \sum_m \nabla^2 f_m,

    in the spectral norm, at x* and at ``num_points`` points x* + ||x*||·u_j with independent
    uniformly random unit directions u_j (radius 1 when x* = 0; the centre is ``init_params``
    when x* is unknown), or at the given ``points``. δ(x) <= δ for every x is the similarity
    assumption of THEORY.md §2.9 (δ₁ is the server's version that AEG sliding needs); for n
    i.i.d. samples per worker it is O(L sqrt(log(d)/n)).

    The Hessians are exact: A_m for :func:`quadratic_problem` problems (then δ(x) = ``delta``
    everywhere), A_mᵀ diag(w σ'(·)) A_m + l2·I (σ' of the margins, w = 1/n_m on the worker's rows)
    for :func:`logistic_regression`, and ``jax.hessian`` of the loss in float64 for any other
    problem (d × d per worker: for moderate d).

    Args:
      problem: a :class:`Problem`.
      points: the points, shape ``(P, d)`` or ``(d,)``; default x* and ``num_points`` random ones.
      num_points: number of random points besides x* (>= 0; ignored when ``points`` is given).
      key: an ``int`` seed (>= 0) or a JAX PRNG key for the random directions.

    Returns:
      A dict with ``"delta"`` (max of δ(x) over the points), ``"delta_server"`` (max of δ₁(x)),
      ``"per_point"`` and ``"per_point_server"`` (float64 arrays of shape ``(P,)``) and
      ``"points"`` (float64, shape ``(P, d)``).

    Raises:
      ValueError: ``points`` of the wrong shape or not finite, or a bad ``num_points``.

    Examples:
      >>> from jaxdist.problems import measure_similarity, similar_quadratics
      >>> p = similar_quadratics(3, 8, delta=0.2, key=1)
      >>> s = measure_similarity(p)
      >>> round(s["delta"], 5), round(s["delta_server"], 5), s["points"].shape
      (0.2, 0.2, (4, 8))

    References:
      Arjevani, Shamir, `Communication Complexity of Distributed Convex Learning and
      Optimization <https://arxiv.org/abs/1506.01900>`_, 2015 (δ-related functions);
      Hendrikx et al., `Statistically Preconditioned Accelerated Gradient Method for
      Distributed Optimization <https://arxiv.org/abs/2002.10726>`_, 2020 (δ = O(L/√n)).
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a Problem, got {type(problem).__name__}")
    d = problem.dim
    if points is None:
        num_points = check_int("num_points", num_points, low=0)
        centre = (
            np.asarray(problem.x_star, dtype=np.float64)
            if problem.x_star is not None
            else np.asarray(problem.init_params, dtype=np.float64)
        )
        radius = float(np.linalg.norm(centre)) or 1.0
        pts = np.concatenate([centre[None], centre + radius * _directions(key, d, num_points)])
    else:
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim == 1:
            pts = pts[None]
        if pts.ndim != 2 or pts.shape[1] != d or pts.shape[0] == 0:
            raise ValueError(f"points must have shape (P, {d}) or ({d},), got {np.shape(points)}")
        if not np.all(np.isfinite(pts)):
            raise ValueError("points must be finite")

    loss = problem.loss
    if loss is quadratic_loss:
        kind = "quadratic"
    elif isinstance(loss, functools.partial) and loss.func is logistic_loss:
        kind = "logistic"
    else:
        kind = "generic"
    if kind == "logistic":
        data = _np64(problem.data)
        per, per_server = _logistic_deviation(data["X"], data["y"], data["weight"], pts)
    else:
        if kind == "quadratic":
            dev = _deviation_from_hessians(_symmetrized(np.asarray(problem.data["A"], np.float64)))
            out = [dev] * pts.shape[0]
        else:
            out = [_deviation_from_hessians(H) for H in _generic_hessians(problem, pts)]
        per = np.array([o[0] for o in out], dtype=np.float64)
        per_server = np.array([o[1] for o in out], dtype=np.float64)
    return {
        "delta": float(np.max(per)),
        "delta_server": float(np.max(per_server)),
        "per_point": per,
        "per_point_server": per_server,
        "points": pts,
    }
