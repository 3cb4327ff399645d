"""Distributed quadratics f_m(x) = ½ xᵀA_m x − b_mᵀx with exact constants.

:func:`quadratic_problem` wraps any given matrices and computes every constant by an
eigendecomposition in float64; :func:`quadratic` generates matrices with a prescribed spectrum
of the mean Hessian, Hessian similarity δ and heterogeneity σ*.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxdist._validate import check_int, finite_float
from jaxdist.problems._base import Problem, numpy_rng, resolve_dtype, stored

__all__ = ["quadratic", "quadratic_problem", "quadratic_loss", "quadratic_constants"]


def quadratic_loss(params, data_m):
    """f_m(x) = ½ xᵀA x − bᵀx for one worker.

    Args:
      params: x, shape ``(d,)``.
      data_m: ``{"A": (d, d), "b": (d,)}``, one worker's slice of ``Problem.data``.

    Returns:
      The scalar f_m(x).
    """
    A, b = data_m["A"], data_m["b"]
    return 0.5 * jnp.dot(params, A @ params) - jnp.dot(b, params)


def _spectral_norm_sym(S: np.ndarray) -> np.ndarray:
    """Spectral norm of (a stack of) symmetric matrices."""
    ev = np.linalg.eigvalsh(S)
    return np.max(np.abs(ev), axis=-1)


def _symmetrized(A: np.ndarray) -> np.ndarray:
    At = np.swapaxes(A, -1, -2)
    scale = float(np.max(np.abs(A))) if A.size else 0.0
    if not np.allclose(A, At, rtol=1e-10, atol=1e-12 * scale):
        raise ValueError("every A_m must be symmetric")
    return 0.5 * (A + At)


def quadratic_constants(A: Any, b: Any) -> dict[str, Any]:
    """Exact constants of f = (1/M) Σ_m (½ xᵀA_m x − b_mᵀx), computed in float64.

    Args:
      A: symmetric matrices, shape ``(M, d, d)``; their mean must be positive definite.
      b: vectors, shape ``(M, d)``.

    Returns:
      A dict with ``L = λ_max(Ā)``, ``mu = λ_min(Ā)``, ``L_m = ||A_m||``, ``x_star = Ā⁻¹b̄``,
      ``f_star``, ``delta = max_m ||A_m − Ā||`` (exact), ``sigma_star_sq = (1/M) Σ ||A_m x* −
      b_m||²``, ``L_pm = sqrt(λ_max((1/M) Σ A_m² − Ā²))`` (THEORY.md §2.4), ``min_eig_m`` (the
      smallest eigenvalue of each A_m) and ``local_optima`` (A_m⁻¹b_m, or ``None`` unless every
      A_m is positive definite).
    """
    A = np.asarray(A, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if A.ndim != 3 or A.shape[1] != A.shape[2] or b.shape != A.shape[:2]:
        raise ValueError(f"A must have shape (M, d, d) and b (M, d), got {A.shape} and {b.shape}")
    A = _symmetrized(A)
    M = A.shape[0]
    # identical Hessians give an exactly zero delta (the float mean of equal values may not)
    A_bar = A[0].copy() if np.all(A == A[0]) else A.mean(axis=0)
    b_bar = b.mean(axis=0)
    ev_bar = np.linalg.eigvalsh(A_bar)
    if ev_bar[0] <= 0:
        raise ValueError(
            f"the mean Hessian must be positive definite, got lambda_min={ev_bar[0]:.3e}"
        )
    ev_m = np.linalg.eigvalsh(A)
    x_star = np.linalg.solve(A_bar, b_bar)
    grads = np.einsum("mij,j->mi", A, x_star) - b
    f_star = float(np.mean(0.5 * np.einsum("i,mij,j->m", x_star, A, x_star) - b @ x_star))
    diff = A - A_bar
    hv = np.einsum("mij,mjk->ik", diff, diff) / M  # = (1/M) Σ A_m² − Ā², PSD, no cancellation
    hv = 0.5 * (hv + hv.T)
    min_eig = ev_m[:, 0]
    local = None
    if np.all(min_eig > 0):
        local = np.linalg.solve(A, b[..., None])[..., 0]
    return {
        "L": float(ev_bar[-1]),
        "mu": float(ev_bar[0]),
        "L_m": np.max(np.abs(ev_m), axis=1),
        "x_star": x_star,
        "f_star": f_star,
        "delta": float(np.max(_spectral_norm_sym(diff))) if M > 1 else 0.0,
        "sigma_star_sq": float(np.mean(np.sum(grads**2, axis=1))),
        "L_pm": float(np.sqrt(max(np.linalg.eigvalsh(hv)[-1], 0.0))),
        "min_eig_m": min_eig,
        "local_optima": local,
    }


def quadratic_problem(
    A: Any,
    b: Any,
    *,
    init_params: Any = None,
    name: str | None = None,
    dtype: Any = None,
    info: dict[str, Any] | None = None,
) -> Problem:
    """A :class:`Problem` from given matrices: f_m(x) = ½ xᵀA_m x − b_mᵀx.

    The data are stored in ``dtype``; the constants (see :func:`quadratic_constants`) are then
    computed exactly, in float64, for the stored values. ``delta`` is exact (``delta_exact``).

    Args:
      A: symmetric matrices, shape ``(M, d, d)``, with a positive definite mean.
      b: vectors, shape ``(M, d)``.
      init_params: x^0 (default zeros).
      name: problem name.
      dtype: storage dtype (default: JAX's default float).
      info: extra entries for ``Problem.info``.

    Returns:
      A :class:`Problem` with data ``{"A": (M, d, d), "b": (M, d)}`` and loss
      :func:`quadratic_loss`. ``info`` holds ``min_eig_m`` and ``local_optima``.
    """
    dt = resolve_dtype(dtype)
    A64 = np.asarray(A, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    if A64.ndim != 3 or b64.ndim != 2:
        raise ValueError(f"A must have shape (M, d, d) and b (M, d), got {A64.shape}, {b64.shape}")
    M, d = b64.shape
    if A64.shape != (M, d, d):
        raise ValueError(f"A must have shape (M, d, d) = {(M, d, d)}, got {A64.shape}")
    A_s, b_s = stored(_symmetrized(A64), dt), stored(b64, dt)
    c = quadratic_constants(A_s, b_s)
    x0 = np.zeros(d) if init_params is None else np.asarray(init_params, dtype=np.float64)
    extra = {"min_eig_m": c["min_eig_m"], "local_optima": c["local_optima"]}
    extra.update(info or {})
    return Problem(
        name=name or f"quadratic(M={M}, d={d})",
        loss=quadratic_loss,
        data={"A": jnp.asarray(A_s, dtype=dt), "b": jnp.asarray(b_s, dtype=dt)},
        init_params=jnp.asarray(x0, dtype=dt),
        num_workers=M,
        dim=d,
        L=c["L"],
        L_m=c["L_m"],
        mu=c["mu"],
        x_star=c["x_star"],
        f_star=c["f_star"],
        delta=c["delta"],
        delta_exact=True,
        sigma_star_sq=c["sigma_star_sq"],
        L_pm=c["L_pm"],
        info=extra,
    )


def _random_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


def quadratic(
    num_workers: int,
    dim: int,
    *,
    L: float = 1.0,
    mu: float = 0.1,
    heterogeneity: float | None = None,
    delta: float = 0.0,
    key: Any = 0,
    dtype: Any = None,
    spectrum: str = "geometric",
    x_star_norm: float = 1.0,
    init_params: Any = None,
) -> Problem:
    """Random distributed quadratics with a prescribed spectrum, similarity δ and heterogeneity.

    .. math::

       f_m(x) = \\tfrac12 x^\\top A_m x - b_m^\\top x, \\qquad
       A_m = \\bar A + E_m, \\quad \\textstyle\\sum_m E_m = 0, \\quad \\max_m \\|E_m\\| = \\delta.

    Construction (all in float64 NumPy from ``key``):

    * **Spectrum.** Ā = Q diag(λ) Qᵀ with a random orthogonal Q and λ spread over [mu, L]
      (``"geometric"``: ``geomspace``; ``"linear"``: ``linspace``), both ends attained, so f is
      L-smooth and mu-strongly convex with these exact constants.
    * **Similarity.** E_m = s·Ā^{1/2} N_m Ā^{1/2} with random symmetric N_m centred across
      workers (Σ_m N_m = 0, so the mean Hessian stays Ā) and the scale s chosen so that
      max_m ||A_m − Ā|| = ``delta`` exactly. Every A_m = Ā^{1/2}(I + sN_m)Ā^{1/2} must be PSD:
      this always holds for ``delta <= mu`` (Weyl: λ_min(A_m) >= mu − delta); larger ``delta``
      is accepted when the draw still gives PSD A_m, else a ``ValueError`` states the largest
      feasible δ for this key. ``delta > 0`` needs M >= 2.
    * **Heterogeneity.** x* is random with ||x*|| = ``x_star_norm``; the gradients at the optimum
      g_m = ∇f_m(x*) are random, centred (Σ g_m = 0, so x* is the minimizer) and scaled so that
      σ*² = (1/M) Σ ||g_m||² = ``heterogeneity²``; then b_m = A_m x* − g_m.

    The requested values are attained exactly in float64 and up to the storage dtype's rounding
    otherwise; the Problem's constants are always recomputed from the stored data.

    Args:
      num_workers: M >= 1.
      dim: d >= 1 (d = 1 needs mu == L).
      L: largest eigenvalue of Ā, ``L >= mu``.
      mu: smallest eigenvalue of Ā, ``mu > 0``.
      heterogeneity: σ* = sqrt((1/M) Σ ||∇f_m(x*)||²) >= 0; default 1.0 for M >= 2, 0.0 for
        M = 1 (where it must be 0).
      delta: Hessian similarity max_m ||A_m − Ā|| >= 0.
      key: an ``int`` seed (>= 0) or a JAX PRNG key (typed or raw); ``7`` and
        ``jax.random.key(7)`` give the same problem.
      dtype: storage dtype (default: JAX's default float).
      spectrum: ``"geometric"`` or ``"linear"``.
      x_star_norm: ||x*|| >= 0.
      init_params: x^0 (default zeros).

    Returns:
      A :class:`Problem` (see :func:`quadratic_problem`).

    Examples:
      >>> import jax
      >>> from jaxdist.problems import quadratic
      >>> p = quadratic(4, 10, L=1.0, mu=0.1, delta=0.05, heterogeneity=2.0, key=0)
      >>> round(p.L, 6), round(p.mu, 6), round(p.delta, 6), round(p.sigma_star_sq, 4)
      (1.0, 0.1, 0.05, 4.0)
      >>> q = quadratic(4, 10, L=1.0, mu=0.1, delta=0.05, heterogeneity=2.0, key=jax.random.key(0))
      >>> bool((p.data["A"] == q.data["A"]).all())
      True
    """
    M, d = check_int("num_workers", num_workers), check_int("dim", dim)
    L, mu, delta = finite_float("L", L), finite_float("mu", mu), finite_float("delta", delta)
    if not mu > 0:
        raise ValueError(f"mu must be > 0, got mu={mu}")
    if not L >= mu:
        raise ValueError(f"L must be >= mu, got L={L} < mu={mu}")
    if d == 1 and L != mu:
        raise ValueError(f"dim=1 has a single eigenvalue: need mu == L, got mu={mu}, L={L}")
    if heterogeneity is None:
        heterogeneity = 1.0 if M > 1 else 0.0
    heterogeneity = finite_float("heterogeneity", heterogeneity)
    if not heterogeneity >= 0:
        raise ValueError(f"heterogeneity must be >= 0, got heterogeneity={heterogeneity}")
    if not delta >= 0:
        raise ValueError(f"delta must be >= 0, got delta={delta}")
    if M == 1 and (delta > 0 or heterogeneity > 0):
        raise ValueError(
            "with num_workers=1 there is no heterogeneity: delta and heterogeneity must be 0, "
            f"got delta={delta}, heterogeneity={heterogeneity}"
        )
    if spectrum not in ("geometric", "linear"):
        raise ValueError(f"spectrum must be 'geometric' or 'linear', got {spectrum!r}")
    x_star_norm = finite_float("x_star_norm", x_star_norm)
    if not x_star_norm >= 0:
        raise ValueError(f"x_star_norm must be >= 0, got x_star_norm={x_star_norm}")

    rng = numpy_rng(key)
    space = np.geomspace if spectrum == "geometric" else np.linspace
    lam = space(mu, L, d) if d > 1 else np.array([L])
    lam[0], lam[-1] = mu, L
    Q = _random_orthogonal(rng, d)
    A_bar = (Q * lam) @ Q.T
    A_bar = 0.5 * (A_bar + A_bar.T)
    A = np.broadcast_to(A_bar, (M, d, d)).copy()
    if delta > 0:
        Z = rng.standard_normal((M, d, d))
        N = 0.5 * (Z + np.swapaxes(Z, 1, 2))
        N -= N.mean(axis=0)
        root = (Q * np.sqrt(lam)) @ Q.T
        E = root @ N @ root
        E = 0.5 * (E + np.swapaxes(E, 1, 2))
        norms = _spectral_norm_sym(E)
        s = delta / np.max(norms)
        worst = -np.min(np.linalg.eigvalsh(N)[:, 0])  # I + sN_m >= 0  iff  s <= 1/worst
        if delta > mu and s * worst > 1.0 + 1e-12:
            raise ValueError(
                f"delta={delta} is too large for PSD workers with this key: the A_m stay PSD "
                f"for delta <= {np.max(norms) / worst:.6g} (delta <= mu={mu} always works)"
            )
        A = A_bar + s * E
    x_star = rng.standard_normal(d)
    nrm = np.linalg.norm(x_star)
    x_star = x_star * (x_star_norm / nrm) if nrm > 0 else x_star
    g = rng.standard_normal((M, d))
    g -= g.mean(axis=0)
    if M > 1 and heterogeneity > 0:
        g *= heterogeneity / np.sqrt(np.mean(np.sum(g**2, axis=1)))
    else:
        g[:] = 0.0
    b = np.einsum("mij,j->mi", A, x_star) - g
    name = (
        f"quadratic(M={M}, d={d}, L={L:g}, mu={mu:g}, delta={delta:g}, "
        f"heterogeneity={heterogeneity:g})"
    )
    info = {
        "requested": {"L": L, "mu": mu, "delta": delta, "sigma_star_sq": heterogeneity**2},
        "spectrum": spectrum,
    }
    return quadratic_problem(A, b, init_params=init_params, name=name, dtype=dtype, info=info)
