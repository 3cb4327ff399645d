"""Minibatches: uniform sampling without replacement of one worker's samples (b-nice sampling).

This is the one minibatch sampler of jaxdist: every problem's ``sample_fn`` draws its rows with
:func:`sample_minibatch`, and the runner uses it for data without a ``sample_fn``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdist._validate import as_key, check_int, is_traced

# The one exact subset sampler of the package (Rand-K's), shared with the compressors.
from jaxdist.compressors._sampling import sample_subset

__all__ = ["sample_minibatch"]

PyTree = Any


def sample_minibatch(key: Any, data_m: PyTree, batch_size: int, *, count: Any = None) -> PyTree:
    """``batch_size`` of one worker's samples, uniformly **without** replacement (b-nice sampling).

    The rows of a worker are the entries along axis 0 of every leaf of ``data_m``. A subset S of
    b = ``batch_size`` distinct rows is drawn uniformly among all b-subsets (so every row is in
    the batch with probability b/n, and no row twice), and every leaf is indexed by S along
    axis 0 (in an unspecified order). With weights 1/b this makes the mean loss over the batch an
    unbiased estimate of the mean over the n rows, with variance ((n − b)/(n − 1)) σ²/b.

    The subset is drawn by the exact subset sampler behind Rand-K (``sample_subset`` of
    ``jaxdist/compressors/_sampling.py``: O(b) random words, every b-subset with probability
    exactly 1/C(n, b)). With ``count`` (padded data, e.g. one count per worker under ``vmap``)
    the batch is the first b real rows of ``jax.random.permutation(key, n)`` instead (JAX's
    sort-based shuffle, exact up to ties among its 32-bit sort keys; O(n log n) per draw), the
    same draws whether ``count`` is concrete or traced. Pure, jittable and vmappable (over
    ``key``, ``data_m`` and ``count``).

    Args:
      key: a PRNG key (typed, a raw ``uint32[2]`` key, or an int seed).
      data_m: one worker's data: a pytree of arrays with the same leading size n.
      batch_size: b, a static Python int with ``1 <= b <= n``.
      count: optional number of leading rows that are real samples (the rest is padding, never
        drawn): an int or an integer scalar array, possibly traced (e.g. a per-worker count
        under ``vmap``). A concrete ``count`` must satisfy ``batch_size <= count <= n``; a
        traced one cannot be checked, so a caller that passes one must know ``batch_size <=
        count`` (as :func:`logistic_regression`'s sampler does, which checks the smallest
        worker's count when it is called).

    Returns:
      A pytree with the structure of ``data_m`` whose leaves have leading size ``batch_size``.

    Raises:
      ValueError: ``batch_size > n`` (or a concrete ``count``), leaves with different leading
        sizes or without a leading axis, or no leaves.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxdist.problems import sample_minibatch
      >>> data_m = {"x": jnp.arange(10.0), "y": jnp.arange(10) % 2}
      >>> batch = sample_minibatch(jax.random.key(0), data_m, 4)
      >>> batch["x"].shape, bool((batch["y"] == batch["x"].astype(int) % 2).all())
      ((4,), True)
      >>> len(set(batch["x"].tolist()))  # no duplicates
      4
      >>> padded = sample_minibatch(jax.random.key(1), data_m, 3, count=5)  # rows 5..9: padding
      >>> bool((padded["x"] < 5).all())
      True
    """
    key = as_key(key)
    batch_size = check_int("batch_size", batch_size, low=1)
    leaves = jax.tree_util.tree_leaves(data_m)
    if not leaves:
        raise ValueError("data_m has no arrays to draw samples from")
    sizes = {jnp.shape(a)[0] if jnp.ndim(a) >= 1 else None for a in leaves}
    if None in sizes:
        raise ValueError(
            "every leaf of data_m needs a leading samples axis, got a scalar leaf; keep "
            "per-worker scalars (such as a sample count) out of the sampled pytree"
        )
    if len(sizes) > 1:
        raise ValueError(
            f"every leaf of data_m must have the same leading size (the samples axis), got "
            f"sizes {sorted(sizes)}"
        )
    (n,) = sizes
    if batch_size > n:
        raise ValueError(
            f"batch_size={batch_size} exceeds the n={n} samples of the worker (minibatches are "
            "drawn without replacement)"
        )
    if count is None:
        # O(b) random words (Floyd / first-distinct), not a sort of all n rows
        idx = sample_subset(key, n, batch_size)
    else:
        if not is_traced(count):
            c = np.asarray(count)
            if c.shape != () or not np.issubdtype(c.dtype, np.integer) or c.dtype == bool:
                raise TypeError(f"count must be an integer scalar, got {count!r}")
            if not batch_size <= int(c) <= n:
                raise ValueError(
                    f"count must satisfy batch_size <= count <= n, got batch_size={batch_size}, "
                    f"count={int(c)}, n={n}"
                )
        # The real rows in the random order of a permutation of all n (the same draws whether
        # count is concrete or traced, e.g. one per worker under vmap): its first b real rows
        # are a uniform b-subset of them (a uniform permutation restricted to a subset is
        # uniform on it).
        perm = jax.random.permutation(key, n)
        real = perm < jnp.asarray(count).astype(perm.dtype)
        (pos,) = jnp.nonzero(real, size=batch_size)
        idx = perm[pos]
    return jax.tree_util.tree_map(lambda a: jnp.take(a, idx, axis=0), data_m)
