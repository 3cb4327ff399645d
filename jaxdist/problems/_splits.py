"""Splitting a data set across workers: i.i.d., sorted by label, Dirichlet, given sizes, uniform.

Every splitter returns a list of ``num_workers`` sorted ``int64`` index arrays that together cover
``0 .. n-1`` exactly once, with at least one sample per worker; the exception is
:func:`split_uniform`, which gives every worker the same number of disjoint random samples and
leaves the remaining ones out. All randomness comes from the
keyword-only ``key`` (an ``int`` seed or a JAX PRNG key, as everywhere in
:mod:`jaxdist.problems`), through a NumPy generator seeded from the key's data, so a split is a
deterministic function of its arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxdist._validate import check_int, finite_float
from jaxdist.problems._base import numpy_rng

__all__ = [
    "split_iid",
    "split_by_label",
    "split_dirichlet",
    "split_sizes",
    "split_uniform",
    "check_split",
]


def _check_workers(n: int, num_workers: int) -> tuple[int, int]:
    n, num_workers = check_int("n", n), check_int("num_workers", num_workers)
    if num_workers > n:
        raise ValueError(
            f"num_workers must be <= n (every worker needs a sample), got num_workers="
            f"{num_workers} > n={n}"
        )
    return n, num_workers


def _labels(y: Any) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D array of labels, got shape {y.shape}")
    return y


def _finish(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def check_split(splits: Sequence[Any], n: int) -> list[np.ndarray]:
    """Checks that index arrays form a partition of ``0 .. n-1`` with no empty part.

    Args:
      splits: one integer index array per worker.
      n: number of samples.

    Returns:
      The index arrays as sorted ``int64`` NumPy arrays.

    Raises:
      ValueError: an empty worker, an index outside ``[0, n)``, or a sample missing/repeated.
    """
    out = []
    for m, s in enumerate(splits):
        s = np.asarray(s)
        if s.ndim != 1 or (s.size and not np.issubdtype(s.dtype, np.integer)):
            raise ValueError(
                f"split {m} must be a 1-D integer index array, got {s.dtype} {s.shape}"
            )
        if s.size == 0:
            raise ValueError(f"worker {m} has no samples")
        if s.min() < 0 or s.max() >= n:
            raise ValueError(f"worker {m} has an index outside [0, {n})")
        out.append(np.sort(s.astype(np.int64)))
    if not out:
        raise ValueError("splits must contain at least one worker")
    counts = np.bincount(np.concatenate(out), minlength=n)
    if np.any(counts != 1):
        bad = int(np.argmax(counts != 1))
        raise ValueError(
            f"splits must cover every sample exactly once; sample {bad} appears {counts[bad]} times"
        )
    return out


def split_iid(n: int, num_workers: int, *, key: Any = 0) -> list[np.ndarray]:
    """A uniformly random split into ``num_workers`` parts of (almost) equal size.

    Sizes differ by at most one (``np.array_split`` of a random permutation).

    Args:
      n: number of samples.
      num_workers: number of workers M, ``1 <= M <= n``.
      key: an ``int`` seed (>= 0) or a JAX PRNG key.

    Returns:
      A list of M sorted ``int64`` index arrays partitioning ``range(n)``.

    Examples:
      >>> from jaxdist.problems import split_iid
      >>> [p.size for p in split_iid(10, 3, key=0)]
      [4, 3, 3]
    """
    n, num_workers = _check_workers(n, num_workers)
    perm = numpy_rng(key).permutation(n)
    return _finish(np.array_split(perm, num_workers))


def split_by_label(y: Any, num_workers: int) -> list[np.ndarray]:
    """The maximally heterogeneous split: samples sorted by label, cut into equal blocks.

    Samples are stably sorted by label and cut into M contiguous blocks of (almost) equal size,
    so each worker sees as few distinct labels as possible (with two classes and even M, every
    worker but at most one holds a single class). Deterministic, no seed.

    Args:
      y: labels, shape ``(n,)``.
      num_workers: number of workers M, ``1 <= M <= n``.

    Returns:
      A list of M sorted ``int64`` index arrays partitioning ``range(n)``.
    """
    y = _labels(y)
    _, num_workers = _check_workers(y.shape[0], num_workers)
    order = np.argsort(y, kind="stable")
    return _finish(np.array_split(order, num_workers))


def split_dirichlet(
    y: Any,
    num_workers: int,
    concentration: float,
    *,
    key: Any = 0,
    min_size: int = 1,
    max_tries: int = 100,
) -> list[np.ndarray]:
    """Label-skewed split: each class is shared among workers by Dirichlet proportions.

    For every class c the (shuffled) samples of c are cut at the cumulative sums of
    ``p_c ~ Dirichlet(concentration·1_M)``. A small concentration gives each worker few classes
    (heterogeneous); a large one approaches the i.i.d. split. Draws are repeated (up to
    ``max_tries``) until every worker holds at least ``min_size`` samples.

    Args:
      y: labels, shape ``(n,)``.
      num_workers: number of workers M, ``1 <= M <= n``.
      concentration: the Dirichlet concentration (α in the literature), ``> 0`` and finite.
      key: an ``int`` seed (>= 0) or a JAX PRNG key.
      min_size: minimum number of samples per worker (``>= 1``).
      max_tries: number of redraws before giving up (``>= 1``).

    Returns:
      A list of M sorted ``int64`` index arrays partitioning ``range(n)``.

    References:
      Hsu, Qi, Brown, "Measuring the effects of non-identical data distribution for federated
      visual classification", 2019 (the usual Dirichlet label-skew protocol).
    """
    y = _labels(y)
    n, num_workers = _check_workers(y.shape[0], num_workers)
    concentration = finite_float("concentration", concentration)
    if not concentration > 0:
        raise ValueError(f"concentration must be > 0, got concentration={concentration}")
    min_size = check_int("min_size", min_size, low=1)
    max_tries = check_int("max_tries", max_tries, low=1)
    if min_size * num_workers > n:
        raise ValueError(
            f"min_size * num_workers must be <= n, got {min_size} * {num_workers} > n={n}"
        )
    rng = numpy_rng(key)
    classes = np.unique(y)
    by_class = [np.flatnonzero(y == c) for c in classes]
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_workers)]
        for idx in by_class:
            idx = rng.permutation(idx)
            p = rng.dirichlet(np.full(num_workers, concentration))
            cuts = np.round(np.cumsum(p)[:-1] * idx.size).astype(np.int64)
            for m, chunk in enumerate(np.split(idx, cuts)):
                parts[m].append(chunk)
        merged = [np.concatenate(p) for p in parts]
        if min(p.size for p in merged) >= min_size:
            return _finish(merged)
    raise ValueError(
        f"split_dirichlet could not give every worker >= {min_size} samples in {max_tries} "
        f"draws (concentration={concentration}, num_workers={num_workers}, n={n}); increase "
        "concentration or "
        "max_tries, or decrease num_workers"
    )


def split_sizes(n: int, sizes: Sequence[int], *, key: Any = 0) -> list[np.ndarray]:
    """A split with prescribed (possibly unequal) worker sizes.

    Args:
      n: number of samples.
      sizes: one positive size per worker, summing to ``n``.
      key: an ``int`` seed (>= 0) or a JAX PRNG key to shuffle the samples first; ``None``
        keeps the original order (worker 0 gets the first ``sizes[0]`` samples, and so on).

    Returns:
      A list of ``len(sizes)`` sorted ``int64`` index arrays partitioning ``range(n)``.
    """
    sizes_arr = np.asarray(sizes)
    if sizes_arr.ndim != 1 or sizes_arr.size == 0:
        raise ValueError(f"sizes must be a non-empty 1-D sequence, got {sizes!r}")
    if not np.issubdtype(sizes_arr.dtype, np.integer):
        raise TypeError(f"sizes must be integers, got dtype {sizes_arr.dtype}")
    n, _ = _check_workers(n, sizes_arr.size)
    if np.any(sizes_arr < 1):
        raise ValueError(f"every size must be >= 1 (a worker with no samples), got {sizes!r}")
    if int(sizes_arr.sum()) != n:
        raise ValueError(f"sizes must sum to n={n}, got sum={int(sizes_arr.sum())}")
    order = np.arange(n) if key is None else numpy_rng(key).permutation(n)
    return _finish(np.split(order, np.cumsum(sizes_arr)[:-1]))


def split_uniform(
    n: int, num_workers: int, samples_per_worker: int, *, key: Any = 0
) -> list[np.ndarray]:
    """Disjoint uniform subsamples: every worker gets ``samples_per_worker`` random samples.

    The first M·k entries of a uniformly random permutation of ``range(n)`` are cut into M
    blocks of k = ``samples_per_worker``: each worker's set is a uniform sample without
    replacement, the sets are disjoint, and the other n − M·k samples are left out (this is
    *not* a partition unless M·k = n, so :func:`check_split` refuses it; when M·k = n it equals
    ``split_iid(n, M, key=key)``). This is the i.i.d. setting in which the Hessian similarity
    shrinks like L/√k (THEORY.md §2.9).

    Args:
      n: number of samples.
      num_workers: number of workers M >= 1.
      samples_per_worker: k >= 1, with M·k <= n.
      key: an ``int`` seed (>= 0) or a JAX PRNG key.

    Returns:
      A list of M sorted ``int64`` index arrays of size k, pairwise disjoint.

    Raises:
      ValueError: M·k > n, or a count below 1.

    Examples:
      >>> from jaxdist.problems import split_uniform
      >>> [p.size for p in split_uniform(10, 3, 2, key=0)]
      [2, 2, 2]
    """
    n, num_workers = _check_workers(n, num_workers)
    k = check_int("samples_per_worker", samples_per_worker, low=1)
    if num_workers * k > n:
        raise ValueError(
            f"samples_per_worker * num_workers must be <= n={n} (the workers' samples are "
            f"disjoint), got samples_per_worker={k} * num_workers={num_workers} = "
            f"{num_workers * k}"
        )
    perm = numpy_rng(key).permutation(n)[: num_workers * k]
    return _finish(perm.reshape(num_workers, k))
