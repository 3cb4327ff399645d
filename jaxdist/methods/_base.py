"""Shared machinery of the methods: the key path, tree arithmetic, ledgers, checks.

**The key path** (the one rule for all randomness in jaxdist; the NumPy references in the tests
replay it):

* A per-step method (an optax transformation) stores ``base = fold_in(key, salt)`` in its state
  at ``init`` (``key``: an int seed or a PRNG key, coerced by :func:`jaxdist._validate.as_key`;
  ``salt`` tells apart two transformations built with the same key). There is no other entry:
  ``update`` takes no key.
* The step with counter ``t`` uses ``k_t = fold_in(base, t)``, and within it
  ``fold_in(k_t, UPLINK)`` for the workers' compressors, ``fold_in(k_t, DOWNLINK)`` for the
  server's, ``fold_in(k_t, COIN)`` for shared coins (MARINA's synchronisation).
* A round-based method receives the key of its round as an argument
  (``round(state, oracle, key)``) and derives its draws from it the same way.
* Per-worker draws use :func:`jaxdist.comm.worker_key`: ``fold_in(k, m)`` for worker ``m``
  (independent), or ``k`` itself (shared: Perm-K, shared-seed Rand-K, coins). A receiver that
  decodes sender ``m``'s message uses the same function with ``index=m``.
* :func:`jaxdist.run` with run key ``r`` (``fold_in(key, seed)`` for a swept seed) gives round
  ``t`` the key ``fold_in(r, t)`` and re-seeds every per-step method of the state once at
  ``init`` with :func:`reseed` (``base <- fold_in(base, w)``, ``w`` one 32-bit word of ``r``),
  so that two seeds draw independently even for a transformation built with a fixed ``key``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdist._validate import (
    as_key,
    check_choice,
    check_int,
    check_number,
    check_tree_like,
    is_key,
    is_traced,
)
from jaxdist.comm._aggregate import MODES
from jaxdist.comm._axis import AxisName, varying
from jaxdist.comm._ledger import Ledger
from jaxdist.compressors._base import Compressor, float_bits

PyTree = Any

UPLINK = 0
DOWNLINK = 1
COIN = 2

__all__ = ["UPLINK", "DOWNLINK", "COIN", "init_key", "step_key", "purpose_key", "reseed"]


# ---------------------------------------------------------------------------------------------
# Keys.


def check_salt(salt: Any) -> Any:
    """A salt in ``[0, 2**31)``: a Python int, or a traced integer (``optax.inject_hyperparams``
    turns every numeric argument into an array)."""
    if is_traced(salt) or (isinstance(salt, jax.Array) and jnp.issubdtype(salt.dtype, jnp.integer)):
        return salt
    return check_int("salt", salt, low=0, high=2**31 - 1)


def init_key(key: Any, salt: Any) -> jax.Array:
    """The key stored in a per-step method's state: ``fold_in(key, salt)``."""
    return jax.random.fold_in(as_key(key), salt)


def step_key(state_key: jax.Array, count: jax.Array) -> jax.Array:
    """The key of the step with counter ``count``: ``fold_in(state_key, count)``."""
    return jax.random.fold_in(state_key, count)


def purpose_key(step: jax.Array, purpose: int) -> jax.Array:
    """The key for one use within a step (``UPLINK``, ``DOWNLINK`` or ``COIN``)."""
    return jax.random.fold_in(step, purpose)


def reseed(state: PyTree, key: Any) -> PyTree:
    """Re-seeds every per-step method inside ``state`` from ``key``.

    Every typed PRNG key leaf ``k`` of the state (the ``key`` field of jaxdist method states)
    becomes ``fold_in(k, w)`` with ``w`` one 32-bit word drawn from ``key``; everything else is
    unchanged. :func:`jaxdist.run` applies it once at ``init`` so that runs with different keys
    or seeds draw independently. Raw ``uint32`` keys (optax's own noise transforms) are not
    touched.

    Args:
      state: a method state (e.g. an ``optax.chain`` state tuple).
      key: an int seed or a PRNG key.

    Returns:
      The re-seeded state.
    """
    word = jax.random.bits(as_key(key), (), jnp.uint32)

    def fold(x):
        if is_key(x) or (
            isinstance(x, jax.core.Tracer) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
        ):
            if x.shape == ():
                return jax.random.fold_in(x, word)
            flat = jax.vmap(lambda k: jax.random.fold_in(k, word))(x.reshape(-1))
            return flat.reshape(x.shape)  # a stacked state (one key per worker)
        return x

    return jax.tree_util.tree_map(fold, state)


# ---------------------------------------------------------------------------------------------
# Tree arithmetic that keeps every leaf's dtype.


def tree_add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x, y: (x + y).astype(x.dtype), a, b)


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x, y: (x - y).astype(x.dtype), a, b)


def tree_scale(s: Any, a: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x: (jnp.asarray(s, x.dtype) * x).astype(x.dtype), a)


def tree_axpy(s: Any, x: PyTree, y: PyTree) -> PyTree:
    """``y + s * x`` leafwise, in the dtype of ``y``."""
    return jax.tree_util.tree_map(
        lambda u, v: (v + jnp.asarray(s, v.dtype) * u.astype(v.dtype)).astype(v.dtype), x, y
    )


def zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def tree_zeros(params: PyTree) -> PyTree:
    """Zeros like ``params`` (replicated: the same on every worker)."""
    return jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, p.dtype), params)


def worker_zeros(params: PyTree, axis_name: AxisName) -> PyTree:
    """Zeros like ``params`` for *per-worker* state (shifts, errors, local estimates).

    Marked varying over the worker axis under ``shard_map`` (:func:`jaxdist.comm.varying`), so
    the state has the same type before and after a step and fits a ``lax.scan`` carry.
    """
    return varying(tree_zeros(params), axis_name)


def check_extra(extra: dict[str, Any]) -> None:
    """Refuses the old ``key=`` extra argument of ``update``: randomness comes from the key in
    the state only (the key path above). Other extra arguments (for other transformations of
    an ``optax.chain``) are ignored."""
    if "key" in extra:
        raise TypeError(
            "jaxdist methods draw from the key stored in their state (key= and salt= at "
            "construction); update() takes no key. To re-seed a state use "
            "jaxdist.methods.reseed(state, key)."
        )


def check_grads(name: str, grads: PyTree, like: PyTree, what: str = "params") -> None:
    """Trace-time check that ``grads`` matches ``like`` (structure, shapes) and is floating.

    Raises:
      ValueError: different pytree structures or leaf shapes (naming the first mismatch).
      TypeError: a non-floating gradient leaf.
    """
    check_tree_like(f"{name}: the gradient", grads, like, f"the {what} it was initialised with")
    for i, g in enumerate(jax.tree_util.tree_leaves(grads)):
        dtype = jnp.result_type(g)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{name}: gradients must be floating-point arrays, got leaf {i} of dtype "
                f"{dtype}; cast it first (integer gradients cannot be averaged exactly)"
            )


def tree_select(pred: Any, a: PyTree, b: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


def tree_norm(tree: PyTree) -> jax.Array:
    """Euclidean norm of all leaves of ``tree`` together."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in leaves))


def tree_dtype(name: str, tree: PyTree) -> Any:
    """The common dtype of ``tree``'s leaves; a tree without array leaves is refused."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise ValueError(f"{name}: params has no array leaves")
    return jnp.result_type(*leaves)


# ---------------------------------------------------------------------------------------------
# Sizes, ledgers and checks.


def dense_bits(params: PyTree) -> int:
    """Exact bits of one uncompressed message with the shapes and dtypes of ``params``."""
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("params has no array leaves")
    total = 0
    for leaf in leaves:
        size = int(np.prod(leaf.shape, dtype=np.int64))
        total += size * float_bits(leaf.dtype)
    return total


def make_ledger(
    params: PyTree, up: Compressor | None, down: Compressor | None, *, full_up: bool = False
) -> Ledger:
    """The ledger of a method: uplink "compressed" (and "full"), downlink "full"/"compressed"."""
    full = dense_bits(params)
    up_kinds: dict[str, int] = {}
    if up is None:
        up_kinds["full"] = full
    else:
        up_kinds["compressed"] = int(up.bits(params))
        if full_up:
            up_kinds["full"] = full
    down_kinds = {"full": full} if down is None else {"compressed": int(down.bits(params))}
    return Ledger.create(up=up_kinds, down=down_kinds)


def one_step_counts(ledger: Ledger, **up: Any) -> Ledger:
    """One communication round: the given uplink counts and one downlink message."""
    down_kind = ledger.down_kinds[0]
    return ledger.record(up=up, down={down_kind: 1}, rounds=1)


def check_compressor(c: Any, name: str) -> Compressor:
    if not isinstance(c, Compressor):
        raise TypeError(f"{name} must be a jaxdist Compressor, got {type(c).__name__}")
    return c


def check_downlink(c: Any, name: str = "down") -> Compressor | None:
    if c is None:
        return None
    c = check_compressor(c, name)
    if c.needs_axis:
        raise ValueError(
            f"{name}={c.name} reads the worker axis; the downlink compressor is applied once, "
            "by the server, to the aggregate (use a single-message operator such as top_k or "
            "rand_k)"
        )
    return c


def check_unit_interval(name: str, value: Any, *, allow_zero: bool = False) -> Any:
    """Checks ``0 < value <= 1`` (elementwise) when ``value`` is concrete.

    Traced values (a hyperparameter swept by ``vmap`` or injected by
    ``optax.inject_hyperparams``) are not range-checked: they are only known at run time.
    """
    if value is None:
        return value
    return check_number(name, value, low=0.0, high=1.0, low_open=not allow_zero)


def check_mode(mode: Any) -> str:
    return check_choice("mode", mode, MODES)


def resolve(value: Any, count: jax.Array) -> Any:
    """A hyperparameter that may be a schedule (a callable of the step counter)."""
    return value(count) if callable(value) else value
