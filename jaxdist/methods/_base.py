"""Shared machinery of the per-step methods: keys, tree arithmetic, ledgers, checks.

Key schedule (documented, and relied on by the NumPy references in the tests). At ``init`` the
method stores ``state.key = fold_in(key, salt)``. At the step with counter ``t`` it uses

* ``step = fold_in(base, t)`` with ``base = state.key``, or ``fold_in(extra_key, salt)``
  when ``update`` is given a ``key=`` extra argument;
* ``fold_in(step, UPLINK)`` for the workers' compressors, which
  :func:`jaxdist.comm.compressed_mean` turns into ``fold_in(., m)`` for worker ``m``
  (unless the compressor is shared-key);
* ``fold_in(step, DOWNLINK)`` for the server's compressor (the same on every worker);
* ``fold_in(step, COIN)`` for shared coins (MARINA).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdist.comm._ledger import Ledger
from jaxdist.compressors._base import Compressor, float_bits

PyTree = Any

UPLINK = 0
DOWNLINK = 1
COIN = 2

__all__ = ["UPLINK", "DOWNLINK", "COIN", "init_key", "step_key", "purpose_key"]


# ---------------------------------------------------------------------------------------------
# Keys.


def _is_key_array(x: Any) -> bool:
    return isinstance(x, jax.Array | np.ndarray) and jax.dtypes.issubdtype(
        x.dtype, jax.dtypes.prng_key
    )


def as_key(key: Any, name: str = "key") -> jax.Array:
    """An int seed, a typed key or a raw ``uint32[2]`` key, as a JAX key array."""
    if isinstance(key, bool):
        raise TypeError(f"{name} must be an int seed or a PRNG key, got a bool")
    if isinstance(key, int | np.integer):
        return jax.random.key(int(key))
    if _is_key_array(key):
        if key.shape != ():
            raise ValueError(f"{name} must be a single key, got a key array of shape {key.shape}")
        return key
    if isinstance(key, jax.Array | np.ndarray):
        arr = jnp.asarray(key)
        if arr.dtype == jnp.uint32 and arr.shape == (2,):
            return arr
        if jnp.issubdtype(arr.dtype, jnp.integer) and arr.shape == ():
            return jax.random.key(arr)
    raise TypeError(
        f"{name} must be an int seed, a typed key (jax.random.key) or a raw uint32[2] key, "
        f"got {key!r}"
    )


def check_salt(salt: Any) -> int:
    if isinstance(salt, bool) or not isinstance(salt, int | np.integer):
        raise TypeError(f"salt must be a Python int, got {salt!r}")
    if not 0 <= int(salt) < 2**31:
        raise ValueError(f"salt must be in [0, 2**31), got salt={salt}")
    return int(salt)


def init_key(key: Any, salt: int) -> jax.Array:
    """The key stored in a method's state: ``fold_in(key, salt)``."""
    return jax.random.fold_in(as_key(key), salt)


def step_key(state_key: jax.Array, count: jax.Array, extra_key: Any, salt: int) -> jax.Array:
    """The key of the step with counter ``count`` (see the module docstring)."""
    base = state_key if extra_key is None else jax.random.fold_in(as_key(extra_key), salt)
    return jax.random.fold_in(base, count)


def purpose_key(step: jax.Array, purpose: int) -> jax.Array:
    """The key for one use within a step (``UPLINK``, ``DOWNLINK`` or ``COIN``)."""
    return jax.random.fold_in(step, purpose)


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
    return jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, p.dtype), params)


def tree_select(pred: Any, a: PyTree, b: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


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


def _is_traced(x: Any) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def check_unit_interval(name: str, value: Any, *, allow_zero: bool = False) -> Any:
    """Checks ``0 < value <= 1`` (elementwise) when ``value`` is concrete; tracers pass."""
    if value is None or _is_traced(value):
        return value
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a number or a float array, got {value!r}") from e
    if isinstance(value, bool) or np.asarray(value).dtype == bool:
        raise TypeError(f"{name} must be a number or a float array, got a bool")
    low_ok = arr >= 0 if allow_zero else arr > 0
    if not np.all(low_ok & (arr <= 1)):
        bound = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name} must be in {bound}, got {name}={value}")
    return value


def check_mode(mode: Any) -> str:
    if mode not in ("dense", "gather"):
        raise ValueError(f"mode must be 'dense' or 'gather', got mode={mode!r}")
    return mode


def resolve(value: Any, count: jax.Array) -> Any:
    """A hyperparameter that may be a schedule (a callable of the step counter)."""
    return value(count) if callable(value) else value
