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

import jax.numpy as jnp
import numpy as np

from jaxdist._validate import check_bool, check_int, finite_float
from jaxdist.problems._base import Problem, numpy_rng, resolve_dtype, stored
from jaxdist.problems._datasets import load_libsvm
from jaxdist.problems._sampling import sample_minibatch
from jaxdist.problems._splits import (
    check_split,
    split_by_label,
    split_dirichlet,
    split_iid,
    split_sizes,
    split_uniform,
)

__all__ = ["logistic_regression", "logistic_loss", "labels_to_pm1"]


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


def _logistic_sample(key, data_m, batch_size, *, min_count):
    """``batch_size`` of the worker's real samples without replacement, weights 1/batch_size.

    The rows are drawn by :func:`sample_minibatch` among the first ``data_m["count"]`` rows
    (real samples come first; padding rows are never drawn). ``min_count`` is the smallest
    worker's sample count, bound by :func:`logistic_regression`, so that a batch larger than
    some worker's data is refused even when the counts are traced.
    """
    batch_size = check_int("batch_size", batch_size, low=1)
    if batch_size > min_count:
        raise ValueError(
            f"batch_size={batch_size} exceeds the {min_count} samples of the smallest worker "
            "(minibatches are drawn without replacement)"
        )
    rows = sample_minibatch(
        key, {"X": data_m["X"], "y": data_m["y"]}, batch_size, count=data_m["count"]
    )
    return {
        **rows,
        "weight": jnp.full((batch_size,), 1.0 / batch_size, dtype=data_m["weight"].dtype),
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


def _largest_eig_of_gram(C: np.ndarray) -> np.ndarray:
    """λ_max(C_mᵀC_m) for a stack C of shape (M, n, d), from the smaller of the two Gram matrices.

    C_mᵀC_m (d × d) and C_mC_mᵀ (n × n) have the same nonzero eigenvalues, so when n < d the
    n × n one gives the same largest eigenvalue exactly, for a fraction of the cost.
    """
    if C.shape[1] < C.shape[2]:
        gram = C @ np.swapaxes(C, 1, 2)
    else:
        gram = np.swapaxes(C, 1, 2) @ C
    return np.maximum(np.linalg.eigvalsh(gram)[:, -1], 0.0)


def _top_eigenpairs(B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """λ_max(B_mᵀB_m) and a unit top eigenvector v_m (shape (M, d)), via the smaller Gram."""
    if B.shape[1] < B.shape[2]:
        lam, W = np.linalg.eigh(B @ np.swapaxes(B, 1, 2))
        v = np.einsum("mnd,mn->md", B, W[:, :, -1])  # B_mᵀw is a top eigenvector of B_mᵀB_m
        norm = np.linalg.norm(v, axis=1, keepdims=True)
        v = np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)
    else:
        lam, W = np.linalg.eigh(np.swapaxes(B, 1, 2) @ B)
        v = W[:, :, -1]
    return np.maximum(lam[:, -1], 0.0), v


def _max_deviation_norm(B: np.ndarray) -> float:
    """max_m ||H_m − H̄|| exactly, with H_m = B_mᵀB_m ⪰ 0 and H̄ = mean_m H_m.

    Only the workers that can attain the maximum are eigendecomposed. With λ_m = λ_max(H_m),
    v_m its eigenvector and (c, u) the top eigenpair of H̄, every worker satisfies

    * ||H_m − H̄|| <= max((1 − 1/M) λ_m, c), since H_m − H̄ ≼ (1 − 1/M) H_m and
      H̄ − H_m ≼ H̄ (the other H_j are ⪰ 0);
    * ||H_m − H̄|| >= max(λ_m − v_mᵀH̄v_m, c − uᵀH_m u) (Rayleigh quotients),

    so a worker whose upper bound is below the largest lower bound cannot attain the maximum.
    With many workers holding few samples, typically one worker is left.
    """
    M, _, d = B.shape
    flat = B.reshape(-1, d)
    H_bar = flat.T @ flat / M
    ev, V = np.linalg.eigh(H_bar)
    c, u = ev[-1], V[:, -1]
    lam, v = _top_eigenpairs(B)
    lower = np.maximum(
        lam - np.einsum("mi,ij,mj->m", v, H_bar, v), c - np.sum((B @ u) ** 2, axis=1)
    )
    upper = np.maximum((1.0 - 1.0 / M) * lam, c)
    best = float(np.max(lower))
    # keep every worker whose bound reaches the best lower bound (with room for rounding)
    cand = np.flatnonzero(upper >= best - 1e-9 * max(float(np.max(upper)), 1e-300))
    Bc = B[cand]
    H = np.swapaxes(Bc, 1, 2) @ Bc
    return float(np.max(np.abs(np.linalg.eigvalsh(H - H_bar))))


def _directions(key, d, num=3):
    """``num`` independent uniformly random unit vectors in R^d (the points of
    :func:`measure_similarity`: the same generator, so the same directions for the same key)."""
    u = numpy_rng(key).standard_normal((num, d))
    return u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-300)


def _logistic_deviation(X, y, w, points):
    """δ(x) = max_m ||∇²f_m(x) − ∇²f(x)|| and the server's ||∇²f_1(x) − ∇²f(x)|| at each point.

    Exact, in float64: ∇²f_m(x) = B_mᵀB_m + l2·I with B_m = diag(sqrt(w σ'(y aᵀx))) A_m (padding
    rows have w = 0); the l2·I cancels in the differences. ``X``, ``y``, ``w`` are the stored
    data (shapes (M, n_max, d), (M, n_max), (M, n_max)), ``points`` has shape (P, d). Returns two
    float64 arrays of shape (P,).
    """
    M = X.shape[0]
    per = np.zeros(points.shape[0])
    per_server = np.zeros(points.shape[0])
    if M == 1:
        return per, per_server
    for j, x in enumerate(points):  # a few evaluation points, not a worker loop
        s = _sigmoid(y * (X @ x))
        B = X * np.sqrt(w * s * (1.0 - s))[..., None]
        per[j] = _max_deviation_norm(B)
        H_bar = np.einsum("mni,mnj->ij", B, B) / M
        per_server[j] = float(np.max(np.abs(np.linalg.eigvalsh(B[0].T @ B[0] - H_bar))))
    return per, per_server


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


def _resolve_split(split, y, num_workers, *, key, concentration, sizes):
    n = y.shape[0]
    if isinstance(split, str):
        if split == "iid":
            return split_iid(n, num_workers, key=key)
        if split == "by_label":
            return split_by_label(y, num_workers)
        if split == "dirichlet":
            if concentration is None:
                raise ValueError("split='dirichlet' needs concentration= (the Dirichlet parameter)")
            return split_dirichlet(y, num_workers, concentration, key=key)
        if split == "sizes":
            if sizes is None:
                raise ValueError("split='sizes' needs sizes (one sample count per worker)")
            if len(sizes) != num_workers:
                raise ValueError(
                    f"len(sizes) must equal num_workers={num_workers}, got {len(sizes)}"
                )
            return split_sizes(n, sizes, key=key)
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
    key: Any = 0,
    concentration: float | None = None,
    sizes: Sequence[int] | None = None,
    samples_per_worker: int | None = None,
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
      <= max((1 − 1/M)λ_max(G_m), λ_max((1/M)Σ_{j≠m} G_j)), and the second term is at most
      (1/M)Σ_{j≠m} λ_max(G_j), so ``delta = (1 − 1/M) max_m λ_max(G_m) = (1 − 1/M)(L_max −
      l2)``. It is O(L), not the O(L/√n) of THEORY.md §2.9; the exact similarity at the
      optimum, max_m ||∇²f_m(x*) − ∇²f(x*)||, is ``info["delta_at_x_star"]`` (computed
      exactly, eigendecomposing only the workers that can attain the maximum).
    * The server is worker 0: ``info["L_server"] = L_m[0]`` (attained at x = 0, where
      σ' = 1/4) and ``info["mu_server"] = l2`` are f₁'s smoothness and strong convexity.
    * With ``samples_per_worker=n`` every worker holds n rows drawn uniformly at random without
      replacement, disjoint across workers (:func:`split_uniform`; M·n must not exceed the number
      of samples N, the other N − M·n rows are not used). This is the i.i.d. setting of
      THEORY.md §2.9, where the similarity shrinks like L/√n: ``info["delta_measured"]`` and
      ``info["delta_server"]`` hold max_m ||∇²f_m(x) − ∇²f(x)|| and ||∇²f_1(x) − ∇²f(x)||,
      measured exactly by :func:`measure_similarity` (max over x* and 3 random points
      x* + ||x*||·u, drawn from ``key``). ``delta`` stays the proven bound above, valid for every
      x (``delta_exact=False``); use ``info["delta_measured"]`` for a method's δ.

    Args:
      dataset: a shipped data set name (``"mushrooms"``, ``"a9a"``, ``"phishing"``, ``"w8a"``), a
        path to a LIBSVM file (plain or gzip), or a tuple ``(X, y)`` of arrays.
      num_workers: M >= 1.
      split: ``"iid"`` (random, equal sizes), ``"by_label"`` (sorted by label), ``"dirichlet"``
        (needs ``concentration``), ``"sizes"`` (needs ``sizes``), or a sequence of M index
        arrays.
      l2: regularisation λ > 0 (= mu).
      bias: append a constant-1 feature.
      key: an ``int`` seed (>= 0) or a JAX PRNG key for the split and for ``max_samples``;
        with ``split="iid"`` the parts are those of ``split_iid(n, num_workers, key=key)``.
      concentration: Dirichlet concentration for ``split="dirichlet"`` (see
        :func:`split_dirichlet`).
      sizes: per-worker sample counts for ``split="sizes"``.
      samples_per_worker: n >= 1: each worker gets n rows drawn uniformly without replacement,
        disjoint across workers (needs ``split="iid"``, the default, and M·n <= N); see above.
      max_samples: keep a random subset of this many samples (before splitting).
      n_features: number of features of a LIBSVM file (see :func:`load_libsvm`).
      dtype: storage dtype (default: JAX's default float).
      init_params: x^0 (default zeros).
      tol: target gradient norm of the float64 Newton solve.

    Returns:
      A :class:`Problem` with data ``{"X": (M, n_max, d), "y": (M, n_max), "weight": (M,
      n_max), "count": (M,)}``, a minibatch sampler (``sample_fn``: the worker's real samples
      without replacement, :func:`sample_minibatch`, weights 1/batch_size; it refuses a batch
      larger than the smallest worker's data), and ``info`` with the data set, split, sample
      counts, label mapping and solver accuracy.

    Examples:
      >>> from jaxdist.problems import logistic_regression
      >>> p = logistic_regression("mushrooms", 4, l2=1e-2, max_samples=400, key=0)
      >>> p.dim, p.info["samples_per_worker"], p.mu
      (113, (100, 100, 100, 100), 0.01)
      >>> q = logistic_regression("mushrooms", 4, l2=1e-2, samples_per_worker=100, key=0)
      >>> q.info["split"], q.info["samples_per_worker"], q.info["delta_measured"] < q.delta
      ('uniform', (100, 100, 100, 100), True)
    """
    M = check_int("num_workers", num_workers)
    l2 = finite_float("l2", l2)
    if not l2 > 0:
        raise ValueError(f"l2 must be > 0 and finite, got l2={l2}")
    bias = check_bool("bias", bias)
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
        max_samples = check_int("max_samples", max_samples, low=1)
        if max_samples < X.shape[0]:
            keep = np.sort(numpy_rng(key).choice(X.shape[0], size=max_samples, replace=False))
            X, y = X[keep], y[keep]
    if bias:
        X = np.concatenate([X, np.ones((X.shape[0], 1))], axis=1)
    n, d = X.shape
    if samples_per_worker is not None:
        samples_per_worker = check_int("samples_per_worker", samples_per_worker, low=1)
        if not (isinstance(split, str) and split == "iid"):
            raise ValueError(
                "samples_per_worker draws its own uniform split: leave split='iid' (the default), "
                f"got split={split!r}"
            )
        if M * samples_per_worker > X.shape[0]:
            raise ValueError(
                f"samples_per_worker * num_workers must be <= the {X.shape[0]} samples (the "
                f"workers' rows are disjoint), got samples_per_worker={samples_per_worker} * "
                f"num_workers={M} = {M * samples_per_worker}"
            )
        parts = split_uniform(X.shape[0], M, samples_per_worker, key=key)
        split = "uniform"
    else:
        parts = _resolve_split(split, y, M, key=key, concentration=concentration, sizes=sizes)
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
    # G_m = A_mᵀA_m/(4 n_m) = C_mᵀC_m with C_m = A_m/sqrt(4 n_m) (zero padding rows add nothing).
    C = Xp / np.sqrt(4.0 * counts)[:, None, None]
    lam_G = _largest_eig_of_gram(C)  # λ_max(G_m)
    G_bar = np.einsum("mni,mnj->ij", C, C) / M
    lam_bar = float(np.linalg.eigvalsh(G_bar)[-1])
    L_m = lam_G + l2
    L = lam_bar + l2
    # δ bound (see the docstring): the λ_max(Ḡ − G_m/M) terms never exceed the largest
    # (1 − 1/M)λ_max(G_m), so no per-worker d × d eigendecomposition is needed.
    delta = (1.0 - 1.0 / M) * float(np.max(lam_G))

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
    B = Xp * np.sqrt(wp * s * (1.0 - s))[..., None]  # B_mᵀB_m = ∇²f_m(x*) − l2 I
    delta_at = _max_deviation_norm(B) if M > 1 else 0.0

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
        "L_server": float(L_m[0]),
        "mu_server": l2,
    }
    if samples_per_worker is not None:
        pts = np.concatenate(
            [x_star[None], x_star + (float(np.linalg.norm(x_star)) or 1.0) * _directions(key, d)]
        )
        per, per_server = _logistic_deviation(Xp, yp, wp, pts)
        info["delta_measured"] = float(np.max(per))
        info["delta_server"] = float(np.max(per_server))
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
        sample_fn=functools.partial(_logistic_sample, min_count=int(counts.min())),
        info=info,
    )
