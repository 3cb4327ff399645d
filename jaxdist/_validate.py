"""Argument checks and key coercion shared by every layer (one implementation of each).

Every public factory and entry point validates its arguments with these functions, so that a bad
value gets the same kind of message everywhere: the parameter's name, what was given and what is
valid. Checks of concrete values happen at construction or trace time; traced values (a
hyperparameter swept by ``vmap``) pass through unchecked, which the callers document.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "as_key",
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "check_prob",
    "check_tree_like",
    "finite_float",
    "is_key",
    "is_traced",
]


def is_traced(x: Any) -> bool:
    """Whether any leaf of ``x`` is a JAX tracer (a value only known at run time)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def check_int(name: str, value: Any, *, low: int | None = 1, high: int | None = None) -> int:
    """``value`` as a Python int in ``[low, high]``; bools, floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(
            f"{name} must be a Python int, got {value!r} of type {type(value).__name__}"
        )
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {name}={value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {name}={value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a Python (or NumPy) bool; ``'no'``, ``0`` and ``None`` are refused."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(
            f"{name} must be True or False, got {value!r} of type {type(value).__name__}"
        )
    return bool(value)


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """``value`` if it is one of the strings ``allowed`` (TypeError for a non-string)."""
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be one of the strings {allowed}, got {value!r} of type "
            f"{type(value).__name__}"
        )
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {name}={value!r}")
    return value


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_traced: bool = True,
) -> Any:
    """A real number (or float array) inside the given bounds, checked elementwise.

    Strings, bools and complex numbers are refused with a message naming ``name``; NaN is
    refused. Traced values pass unchecked when ``allow_traced`` (they are hyperparameters of a
    vmapped sweep); concrete arrays are checked elementwise and returned unchanged.
    """
    if value is None:
        raise TypeError(f"{name} must be a number, got None")
    if is_traced(value):
        if allow_traced:
            return value
        raise TypeError(f"{name} must be a concrete Python number, got a traced value")
    if isinstance(value, bool | np.bool_) or isinstance(value, str | bytes):
        raise TypeError(f"{name} must be a number, got {value!r} of type {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except Exception as e:  # pragma: no cover - exotic objects
        raise TypeError(f"{name} must be a number, got {value!r}") from e
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise TypeError(f"{name} must be a real number, got {value!r} (dtype {arr.dtype})")
    arr = arr.astype(np.float64)
    if np.any(np.isnan(arr)):
        raise ValueError(f"{name} must not be NaN, got {name}={value}")
    bad = np.zeros(arr.shape, bool)
    if low is not None:
        bad |= (arr <= low) if low_open else (arr < low)
    if high is not None:
        bad |= (arr >= high) if high_open else (arr > high)
    if np.any(bad):
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise ValueError(f"{name} must be in {lo}, {hi}, got {name}={value}")
    return value


def check_prob(name: str, value: Any) -> float:
    """A concrete probability ``0 < value <= 1`` as a Python float."""
    check_number(name, value, low=0.0, high=1.0, low_open=True, allow_traced=False)
    arr = np.asarray(value)
    if arr.shape != ():
        raise TypeError(f"{name} must be a single number, got an array of shape {arr.shape}")
    return float(arr)


def is_key(x: Any) -> bool:
    """Whether ``x`` is a typed PRNG key array (``jax.random.key``)."""
    return isinstance(x, jax.Array | np.ndarray) and jax.dtypes.issubdtype(
        x.dtype, jax.dtypes.prng_key
    )


def as_key(key: Any, name: str = "key") -> jax.Array:
    """One PRNG key, typed: an int seed, a typed key or a raw ``uint32[2]`` key.

    Every entry point that takes a key goes through this function, so the same argument means
    the same key everywhere: ``7`` and ``jax.random.key(7)`` are the same key, and a raw key
    ``jax.random.PRNGKey(7)`` is wrapped (``jax.random.wrap_key_data``) into that typed key.
    Integer scalars may be traced (a seed swept by ``vmap``).

    Raises:
      TypeError: for a float array, a string, a bool, or anything else that is not a key.
      ValueError: for an array of several keys.
    """
    if isinstance(key, bool | np.bool_):
        raise TypeError(f"{name} must be an int seed or a PRNG key, got a bool")
    if isinstance(key, int | np.integer):
        return jax.random.key(int(key))
    if is_key(key) or (
        isinstance(key, jax.core.Tracer) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    ):
        if key.shape != ():
            raise ValueError(f"{name} must be a single key, got a key array of shape {key.shape}")
        return key
    if isinstance(key, jax.Array | np.ndarray):
        dtype = key.dtype
        if dtype == jnp.uint32 and key.shape == (2,):
            return jax.random.wrap_key_data(jnp.asarray(key))
        if jnp.issubdtype(dtype, jnp.integer) and key.shape == ():
            return jax.random.key(key)
        raise TypeError(
            f"{name} must be an int seed, a typed key (jax.random.key(seed)) or a raw uint32[2] "
            f"key (jax.random.PRNGKey(seed)); got an array of dtype {dtype} and shape "
            f"{tuple(key.shape)}"
        )
    raise TypeError(
        f"{name} must be an int seed, a typed key (jax.random.key(seed)) or a raw uint32[2] "
        f"key, got {key!r} of type {type(key).__name__}"
    )


def finite_float(name: str, value: Any) -> float:
    """A concrete finite float (for model constants such as latencies and bandwidths)."""
    check_number(name, value, allow_traced=False)
    out = float(np.asarray(value))
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {name}={value}")
    return out


def check_tree_like(what: str, tree: Any, ref: Any, ref_what: str) -> None:
    """Raises ValueError unless ``tree`` has the pytree structure and leaf shapes of ``ref``.

    The message names the first mismatch: ``"<what> has the pytree structure ... but <ref_what>
    has ...: they do not match"`` or ``"<what> leaf i has shape ... but <ref_what> has shape ..."``.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    ref_leaves, ref_treedef = jax.tree_util.tree_flatten(ref)
    if treedef != ref_treedef:
        raise ValueError(
            f"{what} has the pytree structure {treedef} but {ref_what} has {ref_treedef}: "
            "they do not match"
        )
    for i, (a, b) in enumerate(zip(leaves, ref_leaves, strict=True)):
        if tuple(np.shape(a)) != tuple(np.shape(b)):
            raise ValueError(
                f"{what} leaf {i} has shape {tuple(np.shape(a))} but {ref_what} has shape "
                f"{tuple(np.shape(b))}"
            )
