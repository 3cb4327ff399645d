"""ℓ2-regularised logistic regression on LIBSVM data, split across workers.

Worker m holds n_m samples (a_i, y_i), y_i ∈ {−1, +1}, and

.. math::

   f_m(x) = \\frac{1}{n_m} \\sum_{i \\in S_m} \\log(1 + e^{-y_i a_i^\\top x})
            + \\frac{\\lambda}{2}\\|x\\|^2,
   \\qquad f = \\frac1M \\sum_m f_m .

Workers are weighted equally whatever their n_m (with unequal splits f is *not* the plain mean
over all samples). Shapes are static: every worker's samples are padded to ``n_max = max n_m``
with zero rows, and ``data["weight"]`` is ``1/n_m`` on real samples and ``0`` on padding.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdist.problems._base import Problem, resolve_dtype, stored
from jaxdist.problems._datasets import load_libsvm
from jaxdist.problems._splits import (
    _rng,
    check_split,
    split_by_label,
    split_dirichlet,
    split_iid,
    split_sizes,
)

__all__ = ["logistic_regression", "logistic_loss", "logistic_sample", "labels_to_pm1"]


def logistic_loss(params, data_m, *, l2):
    """f_m(x) = Σ_i w_i log(1 + exp(−y_i a_iᵀx)) + (l2/2)||x||² for one worker.

    Args:
      params: x, shape ``(d,)``.
      data_m: ``{"X": (n, d), "y": (n,), "weight": (n,), "count": ()}``; the weights are 1/n_m
        on the worker's real samples and 0 on padding rows.
      l2: the regularisation λ (bound with ``functools.partial`` in ``Problem.loss``).

    Returns:
      The scalar f_m(x).
    """
    z = data_m["y"] * (data_m["X"] @ params)
    return jnp.sum(data_m["weight"] * jnp.logaddexp(0.0, -z)) + 0.5 * l2 * jnp.dot(params, params)


def logistic_sample(key, data_m, batch_size):
    """``batch_size`` of the worker's real samples, uniform with replacement, weights 1/batch_size.

    Padding rows are never drawn (indices are drawn in ``[0, count)``; real samples come first).

    Args:
      key: a PRNG key (typed or raw).
      data_m: one worker's data (see :func:`logistic_loss`).
      batch_size: static number of samples.

    Returns:
      A batch with the structure of ``data_m``; ``logistic_loss(params, batch)`` is an unbiased
      estimate of f_m(params).
    """
    idx = jax.random.randint(key, (batch_size,), 0, data_m["count"])
    w = data_m["weight"]
    return {
        "X": data_m["X"][idx],
        "y": data_m["y"][idx],
        "weight": jnp.full((batch_size,), 1.0 / batch_size, dtype=w.dtype),
        "count": jnp.asarray(batch_size, dtype=data_m["count"].dtype),
    }


def labels_to_pm1(y: Any) -> tuple[np.ndarray, dict[float, float]]:
    """Maps binary labels to ±1: the smaller label to −1, the larger to +1.

    Labels already in {−1, +1} are kept (also when only one of them occurs).

    Args:
      y: 1-D labels with at most two distinct values.

    Returns:
      ``(y_pm1, mapping)`` with float64 labels in {−1, +1} and the mapping used.
    """
    y = np.asarray(y, dtype=np.float64)
    vals = np.unique(y)
    if set(vals.tolist()) <= {-1.0, 1.0}:
        return y.copy(), {v: v for v in vals.tolist()}
    if vals.size != 2:
        raise ValueError(
            f"logistic regression needs binary labels, got {vals.size} distinct values "
            f"{vals[:10].tolist()}"
        )
    mapping = {float(vals[0]): -1.0, float(vals[1]): 1.0}
    return np.where(y == vals[1], 1.0, -1.0), mapping


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _newton(A, y, w, l2, *, tol=1e-12, max_iter=100):
    """Minimizes Σ w_i log(1+exp(−y_i a_iᵀx)) + (l2/2)||x||² in float64 (damped Newton)."""
    d = A.shape[1]
    eye = np.eye(d)

    def value(x):
        return float(np.sum(w * np.logaddexp(0.0, -y * (A @ x))) + 0.5 * l2 * x @ x)

    def grad_hess(x):
        s = _sigmoid(-y * (A @ x))  # = 1 − σ(y aᵀx)
        g = -(A.T @ (w * y * s)) + l2 * x
        B = A * np.sqrt(w * s * (1.0 - s))[:, None]
        H = B.T @ B + l2 * eye
        return g, H

    x = np.zeros(d)
    fx = value(x)
    g, H = grad_hess(x)
    gnorm = float(np.linalg.norm(g))
    best = gnorm
    stall = 0
    it = 0
    while it < max_iter:
        it += 1
        step = np.linalg.solve(H, g)
        t = 1.0
        while True:  # Armijo backtracking (a full step is accepted near the optimum)
            x_new = x - t * step
            f_new = value(x_new)
            if f_new <= fx - 1e-4 * t * float(g @ step) or t < 1e-10:
                break
            t *= 0.5
        x, fx = x_new, f_new
        g, H = grad_hess(x)
        gnorm = float(np.linalg.norm(g))
        if gnorm <= tol:
            break
        if gnorm < 0.5 * best:
            best, stall = gnorm, 0
        else:
            stall += 1
            if stall >= 3:  # rounding floor reached
                break
    return x, gnorm, it


def _resolve_split(split, y, num_workers, *, seed, alpha, sizes):
    n = y.shape[0]
    if isinstance(split, str):
        if split == "iid":
            return split_iid(n, num_workers, seed)
        if split == "by_label":
            return split_by_label(y, num_workers)
        if split == "dirichlet":
            if alpha is None:
                raise ValueError("split='dirichlet' needs alpha (the Dirichlet concentration)")
            return split_dirichlet(y, num_workers, alpha, seed)
        if split == "sizes":
            if sizes is None:
                raise ValueError("split='sizes' needs sizes (one sample count per worker)")
            if len(sizes) != num_workers:
                raise ValueError(
                    f"len(sizes) must equal num_workers={num_workers}, got {len(sizes)}"
                )
            return split_sizes(n, sizes, seed)
        raise ValueError(
            f"split must be 'iid', 'by_label', 'dirichlet', 'sizes' or a sequence of index "
            f"arrays, got {split!r}"
        )
    parts = check_split(split, n)
    if len(parts) != num_workers:
        raise ValueError(f"split has {len(parts)} parts but num_workers={num_workers}")
    return parts


def logistic_regression(
    dataset: str | os.PathLike | tuple[Any, Any],
    num_workers: int,
    *,
    split: str | Sequence[Any] = "iid",
    l2: float = 1e-3,
    bias: bool = True,
    seed: Any = 0,
    alpha: float | None = None,
    sizes: Sequence[int] | None = None,
    max_samples: int | None = None,
    n_features: int | None = None,
    dtype: Any = None,
    init_params: Any = None,
    tol: float = 1e-12,
) -> Problem:
    """ℓ2-regularised logistic regression, f_m(x) = mean_i log(1 + exp(−y_i a_iᵀx)) + (l2/2)||x||².

    Labels are mapped to ±1 (:func:`labels_to_pm1`: mushrooms {1,2} and phishing {0,1} become
    {−1,+1}); with ``bias`` a constant-1 column is appended (mushrooms: 112 + 1 = 113 features).

    Constants (float64, from the stored data; A_m is worker m's n_m × d sample matrix):

    * ``L_m = λ_max(A_mᵀA_m)/(4 n_m) + l2`` and ``L = λ_max((1/M) Σ_m A_mᵀA_m/(4 n_m)) + l2``
      (exact bounds on the Hessians, since σ'(t) <= 1/4), ``mu = l2``.
    * ``x_star``, ``f_star``: damped Newton in float64 until ||∇f|| <= ``tol``;
      ``info["grad_norm_at_x_star"]`` reports the achieved norm. ``sigma_star_sq`` at that x*.
    * ``delta`` is an **upper bound** (``delta_exact=False``) valid for all x: writing
      G_m = A_mᵀA_m/(4 n_m) ⪰ H_m(x) = ∇²f_m(x) − l2·I ⪰ 0,
      ∇²f_m − ∇²f = (1 − 1/M)H_m − (1/M)Σ_{j≠m} H_j has norm
      <= max((1 − 1/M)λ_max(G_m), λ_max(Ḡ − G_m/M)). It is O(L), not the O(L/√n) of
      THEORY.md §2.9; the exact similarity at the optimum, max_m ||∇²f_m(x*) − ∇²f(x*)||, is
      ``info["delta_at_x_star"]``.

    Args:
      dataset: a shipped data set name (``"mushrooms"``, ``"a9a"``, ``"phishing"``, ``"w8a"``), a
        path to a LIBSVM file (plain or gzip), or a tuple ``(X, y)`` of arrays.
      num_workers: M >= 1.
      split: ``"iid"`` (random, equal sizes), ``"by_label"`` (sorted by label), ``"dirichlet"``
        (needs ``alpha``), ``"sizes"`` (needs ``sizes``), or a sequence of M index arrays.
      l2: regularisation λ > 0 (= mu).
      bias: append a constant-1 feature.
      seed: ``int`` or JAX key for the split and for ``max_samples``.
      alpha: Dirichlet concentration for ``split="dirichlet"``.
      sizes: per-worker sample counts for ``split="sizes"``.
      max_samples: keep a random subset of this many samples (before splitting).
      n_features: number of features of a LIBSVM file (see :func:`load_libsvm`).
      dtype: storage dtype (default: JAX's default float).
      init_params: x^0 (default zeros).
      tol: target gradient norm of the float64 Newton solve.

    Returns:
      A :class:`Problem` with data ``{"X": (M, n_max, d), "y": (M, n_max), "weight": (M,
      n_max), "count": (M,)}``, a minibatch sampler (:func:`logistic_sample`), and ``info`` with
      the data set, split, sample counts, label mapping and solver accuracy.
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int | np.integer):
        raise TypeError(f"num_workers must be an int, got {num_workers!r}")
    M = int(num_workers)
    l2 = float(l2)
    if not l2 > 0 or not np.isfinite(l2):
        raise ValueError(f"l2 must be > 0 and finite, got l2={l2}")
    dt = resolve_dtype(dtype)

    if isinstance(dataset, tuple):
        X, y_raw = (np.asarray(a, dtype=np.float64) for a in dataset)
        ds_name = "arrays"
        if X.ndim != 2 or y_raw.shape != (X.shape[0],):
            raise ValueError(
                f"(X, y) must have shapes (n, d) and (n,), got {X.shape}, {y_raw.shape}"
            )
    else:
        X, y_raw = load_libsvm(dataset, n_features=n_features)
        ds_name = os.path.basename(os.fspath(dataset))
    y, label_map = labels_to_pm1(y_raw)
    if max_samples is not None:
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ValueError(f"max_samples must be an int >= 1, got max_samples={max_samples!r}")
        if max_samples < X.shape[0]:
            keep = np.sort(_rng(seed).choice(X.shape[0], size=max_samples, replace=False))
            X, y = X[keep], y[keep]
    if bias:
        X = np.concatenate([X, np.ones((X.shape[0], 1))], axis=1)
    n, d = X.shape
    parts = _resolve_split(split, y, M, seed=seed, alpha=alpha, sizes=sizes)
    counts = np.array([p.size for p in parts], dtype=np.int64)
    n_max = int(counts.max())

    Xs = stored(X, dt)
    Xp = np.zeros((M, n_max, d))
    yp = np.ones((M, n_max))
    wp = np.zeros((M, n_max))
    for m, p in enumerate(parts):  # host-side data layout, not a worker loop in JAX
        Xp[m, : p.size] = Xs[p]
        yp[m, : p.size] = y[p]
        wp[m, : p.size] = 1.0 / p.size
    wp = stored(wp, dt)  # 1/n_m as the problem holds it
    XtX = np.swapaxes(Xp, 1, 2) @ Xp  # (M, d, d)
    G = XtX / (4.0 * counts[:, None, None])
    G_bar = G.mean(axis=0)
    lam_G = np.linalg.eigvalsh(G)[:, -1]
    L_m = lam_G + l2
    L = float(np.linalg.eigvalsh(G_bar)[-1]) + l2
    if M > 1:
        own = (1.0 - 1.0 / M) * lam_G
        rest = np.linalg.eigvalsh(G_bar - G / M)[:, -1]
        delta = float(np.max(np.maximum(own, rest)))
    else:
        delta = 0.0

    # x*, f*: the pooled problem, each sample weighted by w_i / M.
    real = wp.reshape(-1) > 0
    A_all = Xp.reshape(M * n_max, d)[real]
    y_all = yp.reshape(-1)[real]
    w_all = wp.reshape(-1)[real] / M
    x_star, gnorm, iters = _newton(A_all, y_all, w_all, l2, tol=tol)
    if gnorm > max(tol, 1e-8):
        warnings.warn(
            f"Newton's method stopped at gradient norm {gnorm:.3e} > tol={tol:g} after {iters} "
            "iterations; x_star and f_star are approximate",
            RuntimeWarning,
            stacklevel=2,
        )
    z = yp * (Xp @ x_star)  # (M, n_max)
    f_m = np.sum(wp * np.logaddexp(0.0, -z), axis=1) + 0.5 * l2 * x_star @ x_star
    s = _sigmoid(-z)
    grads = -(np.swapaxes(Xp, 1, 2) @ (wp * yp * s)[..., None])[..., 0] + l2 * x_star
    B = Xp * np.sqrt(wp * s * (1.0 - s))[..., None]
    H = np.swapaxes(B, 1, 2) @ B  # ∇²f_m(x*) − l2 I
    delta_at = float(np.max(np.abs(np.linalg.eigvalsh(H - H.mean(axis=0))))) if M > 1 else 0.0

    x0 = np.zeros(d) if init_params is None else np.asarray(init_params, dtype=np.float64)
    data = {
        "X": jnp.asarray(Xp, dtype=dt),
        "y": jnp.asarray(yp, dtype=dt),
        "weight": jnp.asarray(wp, dtype=dt),
        "count": jnp.asarray(counts, dtype=jnp.int32),
    }
    split_name = split if isinstance(split, str) else "custom"
    info = {
        "dataset": ds_name,
        "n_samples": n,
        "samples_per_worker": tuple(int(c) for c in counts),
        "split": split_name,
        "l2": l2,
        "bias": bool(bias),
        "label_map": label_map,
        "grad_norm_at_x_star": gnorm,
        "newton_iterations": iters,
        "delta_at_x_star": delta_at,
        "split_indices": tuple(parts),
    }
    return Problem(
        name=f"logistic_regression({ds_name}, M={M}, split={split_name}, l2={l2:g})",
        loss=functools.partial(logistic_loss, l2=l2),
        data=data,
        init_params=jnp.asarray(x0, dtype=dt),
        num_workers=M,
        dim=d,
        L=L,
        L_m=L_m,
        mu=l2,
        x_star=x_star,
        f_star=float(np.mean(f_m)),
        delta=delta,
        delta_exact=M == 1,
        sigma_star_sq=float(np.mean(np.sum(grads**2, axis=1))),
        L_pm=None,
        sample_fn=logistic_sample,
        info=info,
    )
