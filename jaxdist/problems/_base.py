"""The :class:`Problem` value: per-worker data, a per-worker loss, and the problem's constants.

A problem is the finite-sum objective of distributed optimization,

.. math::

   f(x) = \\frac{1}{M} \\sum_{m=1}^{M} f_m(x), \\qquad f_m(x) = \\text{loss}(x, \\text{data}_m),

where ``data`` is a pytree whose leaves have a leading ``workers`` axis of size M and
``data_m = tree_map(lambda a: a[m], data)``. Workers are weighted equally, whatever their number
of samples (f_m is the mean over the worker's own samples): see :func:`logistic_regression`.

Constants are computed once, in float64 NumPy, from the data *as stored* (after the cast to the
problem's dtype), so they are exact for the problem that is actually optimized.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdist._validate import as_key, is_traced

__all__ = ["Problem"]

PyTree = Any


def _readonly(a: Any) -> np.ndarray | None:
    if a is None:
        return None
    a = np.array(a, dtype=np.float64)
    a.flags.writeable = False
    return a


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """An immutable distributed optimization problem f = (1/M) Σ_m f_m and its constants.

    Build one with a generator (:func:`quadratic`, :func:`top1_counterexample`,
    :func:`logistic_regression`) or directly. A runner uses ``loss`` and ``data`` per worker
    (``jax.vmap(step, axis_name="workers")`` over the leading axis of ``data``); tests use the
    vectorized helpers :meth:`full_loss`, :meth:`full_grad` and :meth:`worker_grads`.

    Constants follow THEORY.md's notation: f is ``L``-smooth and ``mu``-strongly convex, f_m is
    ``L_m[m]``-smooth, ``L_max = max L_m``, ``L_tilde = sqrt(mean L_m²)``, ``sigma_star_sq =
    (1/M) Σ ||∇f_m(x*)||²``, ``delta`` bounds the Hessian similarity ``max_m sup_x ||∇²f_m(x) −
    ∇²f(x)||`` (exact when ``delta_exact``, else an upper bound), and ``L_pm`` is MARINA's
    Hessian variance ``L_±`` (THEORY.md §2.4) where known.

    Attributes:
      name: a short description, e.g. ``"quadratic(M=4, d=10)"``.
      loss: ``loss(params, data_m) -> scalar``, the loss f_m of one worker; pure and jittable.
      data: pytree of arrays with leading axis ``num_workers``.
      init_params: the starting point x^0, shape ``(dim,)``.
      num_workers: M.
      dim: d, the number of parameters.
      L: smoothness constant of f.
      L_m: per-worker smoothness constants, float64 array of shape ``(M,)``.
      mu: strong convexity constant of f (0 if not strongly convex).
      x_star: the minimizer (float64, shape ``(dim,)``) or ``None`` if unknown.
      f_star: f(x*) in float64, or ``None``.
      delta: Hessian similarity constant (see above), or ``None``.
      delta_exact: whether ``delta`` is exact (True) or an upper bound (False).
      sigma_star_sq: (1/M) Σ ||∇f_m(x*)||², or ``None``.
      L_pm: Hessian variance L_± (THEORY.md §2.4), or ``None`` if not computed.
      sample_fn: ``sample_fn(key, data_m, batch_size) -> batch`` drawing ``batch_size`` of the
        worker's real samples uniformly without replacement (with :func:`sample_minibatch`),
        such that ``loss(params, batch)`` is an unbiased estimate of f_m(params); ``None`` if
        the problem has no samples.
      info: read-only mapping of extra facts (data set, split, solver accuracy, ...).
    """

    name: str
    loss: Callable[[jax.Array, PyTree], jax.Array]
    data: PyTree
    init_params: jax.Array
    num_workers: int
    dim: int
    L: float
    L_m: np.ndarray
    mu: float
    x_star: np.ndarray | None = None
    f_star: float | None = None
    delta: float | None = None
    delta_exact: bool = True
    sigma_star_sq: float | None = None
    L_pm: float | None = None
    sample_fn: Callable[[jax.Array, PyTree, int], PyTree] | None = None
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "num_workers", int(self.num_workers))
        set_(self, "dim", int(self.dim))
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")
        for leaf in jax.tree_util.tree_leaves(self.data):
            if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != self.num_workers:
                raise ValueError(
                    "every leaf of data needs a leading workers axis of size "
                    f"num_workers={self.num_workers}, got a leaf of shape {jnp.shape(leaf)}"
                )
        if jnp.shape(self.init_params) != (self.dim,):
            raise ValueError(
                f"init_params must have shape (dim,) = ({self.dim},), got "
                f"{jnp.shape(self.init_params)}"
            )
        L_m = _readonly(self.L_m)
        if L_m.shape != (self.num_workers,):
            raise ValueError(f"L_m must have shape ({self.num_workers},), got {L_m.shape}")
        set_(self, "L_m", L_m)
        x_star = _readonly(self.x_star)
        if x_star is not None and x_star.shape != (self.dim,):
            raise ValueError(f"x_star must have shape ({self.dim},), got {x_star.shape}")
        set_(self, "x_star", x_star)
        set_(self, "L", float(self.L))
        set_(self, "mu", float(self.mu))
        for name in ("f_star", "delta", "sigma_star_sq", "L_pm"):
            set_(self, name, _opt_float(getattr(self, name)))
        set_(self, "info", MappingProxyType(dict(self.info)))

    # -- derived constants ---------------------------------------------------------------------

    @property
    def L_max(self) -> float:
        """max_m L_m."""
        return float(np.max(self.L_m))

    @property
    def L_tilde(self) -> float:
        """sqrt((1/M) Σ_m L_m²), EF21's and MARINA's L̃."""
        return float(np.sqrt(np.mean(self.L_m**2)))

    @property
    def kappa(self) -> float:
        """Condition number L/mu (``inf`` if mu = 0)."""
        return self.L / self.mu if self.mu > 0 else math.inf

    @property
    def dtype(self):
        """The floating dtype of the parameters."""
        return jnp.asarray(self.init_params).dtype

    # -- evaluation helpers (vectorized over workers, jittable) --------------------------------

    def worker_data(self, m: int) -> PyTree:
        """The data slice of worker ``m`` (no leading axis)."""
        return jax.tree_util.tree_map(lambda a: a[m], self.data)

    def worker_losses(self, params: jax.Array) -> jax.Array:
        """The vector (f_1(x), ..., f_M(x)), shape ``(M,)``."""
        return _worker_losses(self.loss, params, self.data)

    def full_loss(self, params: jax.Array) -> jax.Array:
        """f(x) = (1/M) Σ_m f_m(x)."""
        return _full_loss(self.loss, params, self.data)

    def full_grad(self, params: jax.Array) -> jax.Array:
        """∇f(x), shape ``(dim,)``."""
        return _full_grad(self.loss, params, self.data)

    def worker_grads(self, params: jax.Array) -> jax.Array:
        """The per-worker gradients ∇f_m(x), shape ``(M, dim)``."""
        return _worker_grads(self.loss, params, self.data)

    def suboptimality(self, params: jax.Array) -> jax.Array:
        """f(x) − f* (requires ``f_star``)."""
        if self.f_star is None:
            raise ValueError(f"problem {self.name!r} has no known f_star")
        return self.full_loss(params) - self.f_star

    # -- minibatches -----------------------------------------------------------------------------

    @property
    def has_samples(self) -> bool:
        """Whether the problem is a finite sum with a minibatch sampler."""
        return self.sample_fn is not None

    def sample(self, key: jax.Array, data_m: PyTree, batch_size: int) -> PyTree:
        """``batch_size`` of the worker's real samples, uniformly without replacement.

        Args:
          key: a PRNG key (typed or raw).
          data_m: one worker's data (no leading workers axis).
          batch_size: number of samples drawn, a static positive int.

        Returns:
          A pytree with the structure of ``data_m`` such that ``loss(params, batch)`` is an
          unbiased estimate of f_m(params).

        Raises:
          ValueError: the problem has no samples, or ``batch_size`` is not an int in
            ``[1, n_m]`` for every worker.
        """
        if self.sample_fn is None:
            raise ValueError(f"problem {self.name!r} has no samples to draw minibatches from")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got batch_size={batch_size!r}")
        return self.sample_fn(key, data_m, batch_size)

    def stochastic_loss(
        self, params: jax.Array, data_m: PyTree, key: jax.Array, batch_size: int
    ) -> jax.Array:
        """``loss(params, sample(key, data_m, batch_size))``: an unbiased estimate of f_m."""
        return self.loss(params, self.sample(key, data_m, batch_size))

    def stochastic_worker_grads(
        self, params: jax.Array, key: jax.Array, batch_size: int
    ) -> jax.Array:
        """Independent minibatch gradients of every worker, shape ``(M, dim)``.

        Worker m uses ``jax.random.fold_in(key, m)``, as a per-worker key from
        ``fold_in(key, axis_index)`` would.
        """
        if self.sample_fn is None:
            raise ValueError(f"problem {self.name!r} has no samples to draw minibatches from")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got batch_size={batch_size!r}")
        return _stochastic_worker_grads(
            self.loss, self.sample_fn, batch_size, params, self.data, key
        )

    def __repr__(self) -> str:
        return (
            f"Problem({self.name}, M={self.num_workers}, d={self.dim}, L={self.L:.6g}, "
            f"mu={self.mu:.6g}, L_max={self.L_max:.6g})"
        )


# Jitted helpers: the loss (and sampler) are static, the data are arguments (not constants).


@functools.partial(jax.jit, static_argnums=0)
def _worker_losses(loss, params, data):
    return jax.vmap(loss, in_axes=(None, 0))(params, data)


@functools.partial(jax.jit, static_argnums=0)
def _full_loss(loss, params, data):
    return jnp.mean(jax.vmap(loss, in_axes=(None, 0))(params, data))


@functools.partial(jax.jit, static_argnums=0)
def _full_grad(loss, params, data):
    return jax.grad(lambda p: jnp.mean(jax.vmap(loss, in_axes=(None, 0))(p, data)))(params)


@functools.partial(jax.jit, static_argnums=0)
def _worker_grads(loss, params, data):
    return jax.vmap(jax.grad(loss), in_axes=(None, 0))(params, data)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _stochastic_worker_grads(loss, sample_fn, batch_size, params, data, key):
    keys = jax.vmap(lambda m: jax.random.fold_in(key, m))(
        jnp.arange(jax.tree_util.tree_leaves(data)[0].shape[0])
    )

    def grad_m(d, k):
        return jax.grad(lambda p: loss(p, sample_fn(k, d, batch_size)))(params)

    return jax.vmap(grad_m)(data, keys)


def numpy_rng(key: Any, name: str = "key") -> np.random.Generator:
    """The NumPy generator a problem or split draws from: seeded from the key's data.

    ``key`` is coerced with :func:`jaxdist._validate.as_key` (an int seed, a typed key or a raw
    ``uint32[2]`` key), and the words of ``jax.random.key_data(key)`` are read as one unsigned
    integer (most significant word first) that seeds ``np.random.default_rng``. So ``7``,
    ``jax.random.key(7)`` and ``jax.random.PRNGKey(7)`` give the same generator, and an int seed
    ``s`` gives ``np.random.default_rng(s)``.

    Raises:
      ValueError: a negative int seed (its key depends on ``jax_enable_x64``).
      TypeError: a traced key (problems are built on the host), or anything ``as_key`` refuses.
    """
    if isinstance(key, int | np.integer) and not isinstance(key, bool) and key < 0:
        raise ValueError(
            f"{name} must be a non-negative int seed or a PRNG key, got {name}={key} (the key of "
            "a negative seed depends on jax_enable_x64)"
        )
    k = as_key(key, name)
    if is_traced(k):
        raise TypeError(f"{name} must be concrete: problems and splits are built on the host")
    words = np.asarray(jax.random.key_data(k), dtype=np.uint32).ravel()
    return np.random.default_rng(int.from_bytes(words.astype(">u4").tobytes(), "big"))


def resolve_dtype(dtype: Any = None) -> np.dtype:
    """The floating dtype data are stored in: ``dtype`` made canonical (float64 needs x64).

    ``None`` means JAX's default float (float32, or float64 when ``jax_enable_x64`` is on).
    """
    dt = jax.dtypes.canonicalize_dtype(np.float64 if dtype is None else dtype)
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype, got {dtype!r}")
    return np.dtype(dt)


def stored(a: Any, dtype: np.dtype) -> np.ndarray:
    """``a`` rounded to ``dtype`` and back to float64: the values the problem really holds."""
    return np.asarray(a, dtype=np.float64).astype(dtype).astype(np.float64)
