"""The :class:`Compressor` value and the machinery every operator shares.

A compressor is an immutable value built by a lower_snake factory (``rand_k(10)``,
``natural()``, ...). The operator itself is written once, for a flat vector
:math:`v \\in \\mathbb{R}^d`, as a pair of pure functions

* ``encode_fn(key, v, shape) -> payload``: the wire message, a pytree of arrays with static
  shapes (kept values, packed index/sign/level bits, norms);
* ``decode_fn(key, payload, d, dtype, shape) -> v_hat``.

``shape`` is the static shape of the array the vector came from (``(d,)`` for a flattened
pytree); only structure-aware operators (PowerSGD) look at it.

:class:`Compressor` lifts these to pytrees: by default the leaves are flattened into one vector
(the theory's :math:`x \\in \\mathbb{R}^d`); :func:`per_leaf` compresses leaf by leaf.
``compress = decode ∘ encode`` by construction, unless the factory supplies a faster direct
``compress_fn``, which the test-suite checks is *bitwise* equal to ``decode ∘ encode``.

Bits are exact integers computed in Python from the static message layout: ``bits(d)`` equals
:func:`payload_bits` of the payload, where a :class:`Packed` field counts the bits it holds (not
the padding of its last byte) and every other array counts ``size * itemsize * 8``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
Payload = Any
DTypeLike = Any

__all__ = [
    "Compressor",
    "Packed",
    "pack_uint",
    "unpack_uint",
    "payload_bits",
    "float_bits",
    "index_bits",
    "check_int",
    "check_prob",
    "check_k",
    "per_leaf",
]


# ---------------------------------------------------------------------------------------------
# Packed bit fields.


@jax.tree_util.register_pytree_node_class
class Packed:
    """A bit field of ``nbits`` bits stored little-endian in a ``uint8`` array.

    ``data`` has ``ceil(nbits / 8)`` bytes; only ``nbits`` of them count in the message size.
    ``nbits`` is static (pytree auxiliary data), so payloads keep static shapes under jit.
    """

    def __init__(self, data: jax.Array, nbits: int):
        self.data = data
        self.nbits = int(nbits)

    def tree_flatten(self):
        return (self.data,), self.nbits

    @classmethod
    def tree_unflatten(cls, nbits, children):
        return cls(children[0], nbits)

    def __repr__(self) -> str:
        return f"Packed(nbits={self.nbits}, data={self.data!r})"


def pack_uint(values: jax.Array, width: int) -> Packed:
    """Packs unsigned integers ``values`` (any int dtype, each < 2**width) into a bit stream."""
    values = jnp.asarray(values).astype(jnp.uint32).reshape(-1)
    n = values.shape[0]
    if width == 0 or n == 0:
        return Packed(jnp.zeros((0,), jnp.uint8), 0)
    shifts = jnp.arange(width, dtype=jnp.uint32)
    bit_matrix = ((values[:, None] >> shifts[None, :]) & jnp.uint32(1)).astype(jnp.uint8)
    data = jnp.packbits(bit_matrix.reshape(-1), bitorder="little")
    return Packed(data, n * width)


def unpack_uint(packed: Packed, n: int, width: int) -> jax.Array:
    """Inverse of :func:`pack_uint`: the first ``n`` integers of ``width`` bits, as ``uint32``."""
    if width == 0 or n == 0:
        return jnp.zeros((n,), jnp.uint32)
    bits = jnp.unpackbits(packed.data, count=n * width, bitorder="little")
    bit_matrix = bits.reshape(n, width).astype(jnp.uint32)
    shifts = jnp.arange(width, dtype=jnp.uint32)
    return jnp.sum(bit_matrix << shifts[None, :], axis=1, dtype=jnp.uint32)


def payload_bits(payload: Payload) -> int:
    """Exact size in bits of a (single, unbatched) payload."""
    leaves = jax.tree_util.tree_leaves(payload, is_leaf=lambda x: isinstance(x, Packed))
    total = 0
    for leaf in leaves:
        if isinstance(leaf, Packed):
            total += leaf.nbits
        else:
            leaf = jnp.asarray(leaf) if not hasattr(leaf, "dtype") else leaf
            total += int(np.prod(leaf.shape, dtype=np.int64)) * jnp.dtype(leaf.dtype).itemsize * 8
    return total


def float_bits(dtype: DTypeLike) -> int:
    """Bits of one float of ``dtype`` on the wire (32 for float32, 16 for bfloat16, ...)."""
    return jnp.dtype(dtype).itemsize * 8


def index_bits(d: int) -> int:
    """Bits of one index into ``range(d)``: ``ceil(log2 d)`` (0 for d = 1)."""
    return max(int(d) - 1, 0).bit_length()


# ---------------------------------------------------------------------------------------------
# Validation helpers (raised at construction or trace time, naming the parameter and the bound).


def check_int(name: str, value: Any, *, low: int = 1, high: int | None = None) -> int:
    """Checks that ``value`` is a Python integer in ``[low, high]`` and returns it."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        kind = type(value).__name__
        raise TypeError(f"{name} must be a Python int, got {value!r} of type {kind}")
    value = int(value)
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {name}={value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {name}={value}")
    return value


def check_prob(name: str, value: Any) -> float:
    """Checks ``0 < value <= 1`` for a concrete number and returns it as a float."""
    try:
        value = float(value)
    except TypeError as e:
        raise TypeError(f"{name} must be a number in (0, 1], got {value!r}") from e
    if not (0.0 < value <= 1.0) or math.isnan(value):
        raise ValueError(f"{name} must be in (0, 1], got {name}={value}")
    return value


def check_k(k: int, d: int, name: str = "k") -> None:
    """Trace-time check of a sparsity level against the dimension: ``1 <= k <= d``."""
    if k > d:
        raise ValueError(f"{name}={k} is larger than the dimension d={d}; need 1 <= {name} <= d")


# ---------------------------------------------------------------------------------------------
# Flattening pytrees into the theory's vector.


def _leaves(x: PyTree) -> tuple[list[Any], Any]:
    leaves, treedef = jax.tree_util.tree_flatten(x)
    if not leaves:
        raise ValueError("cannot compress an empty pytree (it has no array leaves)")
    return leaves, treedef


def _check_float_dtype(dtype: DTypeLike, what: str = "input") -> None:
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"compressors act on floating-point arrays; the {what} has dtype {dtype}. "
            "Cast integer or boolean data to a float dtype first."
        )


def _common_dtype(leaves: list[Any]) -> Any:
    dtypes = {jnp.dtype(leaf.dtype) for leaf in leaves}
    for dt in dtypes:
        _check_float_dtype(dt)
    if len(dtypes) > 1:
        names = ", ".join(sorted(str(d) for d in dtypes))
        raise TypeError(
            f"the pytree mixes dtypes ({names}); flattened compression needs one dtype. "
            "Cast the leaves to a common dtype or use jaxdist.compressors.per_leaf(c)."
        )
    return dtypes.pop()


def _resolve_dim(d: Any) -> tuple[int, Any, tuple[int, ...]]:
    """``d`` may be an int, an array/ShapeDtypeStruct or a pytree of them."""
    if isinstance(d, int | np.integer) and not isinstance(d, bool):
        return int(d), jnp.float32, (int(d),)
    leaves, _ = _leaves(d)
    dtype = _common_dtype(leaves)
    size = sum(int(np.prod(leaf.shape, dtype=np.int64)) for leaf in leaves)
    shape = tuple(leaves[0].shape) if len(leaves) == 1 else (size,)
    return size, dtype, shape


# ---------------------------------------------------------------------------------------------
# The Compressor value.


@dataclasses.dataclass(frozen=True, eq=False)
class Compressor:
    """A compression operator: pure functions of a PRNG key and the input.

    Build one with a factory (:func:`~jaxdist.compressors.rand_k`, ...), never directly.

    Attributes:
      name: short name with parameters, e.g. ``"rand_k(k=10)"``.
      unbiased: ``E C(x) = x`` (class U(ω)).
      shared_key: the operator is meant to receive the *same* key on every worker
        (shared-seed Rand-K, Perm-K); methods then do not fold in the worker index.
      deterministic: the output does not depend on the key.
      needs_axis: the operator calls collectives on ``axis_name`` (Perm-K, PowerSGD over workers).
      axis_name: the worker axis such an operator reads (``None`` otherwise).
      bits_uses_shape: ``bits_fn(d, dtype, shape)`` also receives the static input shape (a
        4 x 25 and a 10 x 10 matrix cost different amounts under PowerSGD).
    """

    name: str
    encode_fn: Callable[..., Payload]
    decode_fn: Callable[..., jax.Array]
    bits_fn: Callable[[int, Any], int]
    omega_fn: Callable[[int], float] | None = None
    alpha_fn: Callable[[int], float] | None = None
    compress_fn: Callable[..., jax.Array] | None = None
    unbiased: bool = False
    shared_key: bool = False
    deterministic: bool = False
    needs_axis: bool = False
    axis_name: Any = None
    kept_fn: Callable[[int], int] | None = None
    projection: bool = False
    check_fn: Callable[[int, tuple[int, ...]], None] | None = None
    per_leaf: bool = False
    base: Compressor | None = None
    bits_uses_shape: bool = False

    # -- constants -------------------------------------------------------------------------

    def omega(self, d: Any) -> float | None:
        """Variance parameter ω(d) of the unbiased class U(ω), or ``None`` if not unbiased.

        ``d`` is the dimension, or an array / pytree whose size gives it.
        """
        if self.per_leaf:
            return self._leafwise(d, "omega", max)
        if self.omega_fn is None:
            return None
        dim, _, shape = _resolve_dim(d)
        self._check(dim, shape)
        return self.omega_fn(dim)

    def alpha(self, d: Any) -> float | None:
        """Contraction parameter α(d) of the class B(α), or ``None`` if no worst-case α exists."""
        if self.per_leaf:
            return self._leafwise(d, "alpha", min)
        if self.alpha_fn is None:
            return None
        dim, _, shape = _resolve_dim(d)
        self._check(dim, shape)
        return self.alpha_fn(dim)

    def bits(self, d: Any, dtype: DTypeLike | None = None) -> int:
        """Exact size in bits of one message for a ``d``-vector (or for the pytree ``d``).

        Includes values, indices, norms and signs; index bits are 0 when the receiver
        regenerates the indices from a shared key. ``dtype`` defaults to the dtype of ``d``
        when ``d`` is an array/pytree, else float32.
        """
        if self.per_leaf:
            return self._leafwise(d, "bits", sum, dtype=dtype)
        dim, inferred, shape = _resolve_dim(d)
        self._check(dim, shape)
        return self.bits_at(dim, jnp.dtype(dtype if dtype is not None else inferred), shape)

    def bits_at(self, d: int, dtype: DTypeLike, shape: tuple[int, ...]) -> int:
        """Bits of one message for a ``d``-vector of ``dtype`` that came from an array of
        ``shape`` (only operators with ``bits_uses_shape``, e.g. PowerSGD, look at the shape)."""
        if self.bits_uses_shape and not self.per_leaf:
            return int(self.bits_fn(d, dtype, shape))
        return int(self.bits_fn(d, dtype))

    def _leafwise(self, d, attr, reduce, **kwargs):
        if isinstance(d, int | np.integer):
            return getattr(self.base, attr)(d, **kwargs)
        leaves, _ = _leaves(d)
        values = [getattr(self.base, attr)(leaf, **kwargs) for leaf in leaves]
        if any(v is None for v in values):
            return None
        return reduce(values)

    def _check(self, dim: int, shape: tuple[int, ...]) -> None:
        if dim < 1:
            raise ValueError(f"{self.name}: the input has no entries (d = {dim})")
        if self.check_fn is not None:
            self.check_fn(dim, shape)

    # -- operators ---------------------------------------------------------------------------

    def compress(self, key: jax.Array, x: PyTree) -> PyTree:
        """Returns C(x): same structure, shapes and dtypes as ``x``."""
        if self.per_leaf:
            return self._map_leaves(key, x, lambda c, k, leaf: c.compress(k, leaf))
        v, dtype, shape, unflatten = self._flatten(x)
        if self.compress_fn is not None:
            out = self.compress_fn(key, v, shape)
        else:
            out = self.decode_fn(key, self.encode_fn(key, v, shape), v.shape[0], dtype, shape)
        return unflatten(out)

    def encode(self, key: jax.Array, x: PyTree) -> Payload:
        """Returns the wire message for ``x``: a pytree of static-shape arrays."""
        if self.per_leaf:
            leaves, _ = _leaves(x)
            keys = _leaf_keys(key, len(leaves))
            return tuple(self.base.encode(k, leaf) for k, leaf in zip(keys, leaves, strict=True))
        v, _, shape, _ = self._flatten(x)
        return self.encode_fn(key, v, shape)

    def decode(self, key: jax.Array, payload: Payload, like: PyTree) -> PyTree:
        """Reconstructs C(x) from ``payload``; ``like`` gives the structure, shapes and dtypes.

        ``key`` must be the key given to :meth:`encode` (shared-key operators regenerate
        their indices from it).
        """
        if self.per_leaf:
            leaves, treedef = _leaves(like)
            keys = _leaf_keys(key, len(leaves))
            outs = [
                self.base.decode(k, p, leaf)
                for k, p, leaf in zip(keys, payload, leaves, strict=True)
            ]
            return jax.tree_util.tree_unflatten(treedef, outs)
        dim, dtype, shape, unflatten = self._structure(like)
        return unflatten(self.decode_fn(key, payload, dim, dtype, shape))

    # -- helpers -----------------------------------------------------------------------------

    def _structure(self, like: PyTree):
        leaves, treedef = _leaves(like)
        dtype = _common_dtype(leaves)
        shapes = [tuple(leaf.shape) for leaf in leaves]
        sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
        dim = sum(sizes)
        shape = shapes[0] if len(leaves) == 1 else (dim,)
        self._check(dim, shape)
        splits = list(np.cumsum(sizes)[:-1])

        def unflatten(v):
            if len(leaves) == 1:
                return jax.tree_util.tree_unflatten(treedef, [v.reshape(shapes[0])])
            parts = jnp.split(v, splits)
            return jax.tree_util.tree_unflatten(
                treedef, [p.reshape(s) for p, s in zip(parts, shapes, strict=True)]
            )

        return dim, dtype, shape, unflatten

    def _flatten(self, x: PyTree):
        x = jax.tree_util.tree_map(jnp.asarray, x)
        dim, dtype, shape, unflatten = self._structure(x)
        leaves = jax.tree_util.tree_leaves(x)
        if len(leaves) == 1:
            v = leaves[0].reshape(-1)
        else:
            v = jnp.concatenate([leaf.reshape(-1) for leaf in leaves])
        return v, dtype, shape, unflatten

    def _map_leaves(self, key, x, fn):
        leaves, treedef = _leaves(x)
        keys = _leaf_keys(key, len(leaves))
        outs = [fn(self.base, k, leaf) for k, leaf in zip(keys, leaves, strict=True)]
        return jax.tree_util.tree_unflatten(treedef, outs)

    def __repr__(self) -> str:
        return f"Compressor({self.name})"


def _leaf_keys(key: jax.Array, n: int) -> list[jax.Array]:
    return [jax.random.fold_in(key, i) for i in range(n)]


def per_leaf(c: Compressor) -> Compressor:
    """Applies ``c`` to every leaf of a pytree separately (layer-wise compression).

    Leaf ``i`` gets the key ``fold_in(key, i)``; a 2-D leaf keeps its matrix shape (PowerSGD
    compresses it as a matrix). Constants: ``omega`` is the largest leaf ω, ``alpha`` the
    smallest leaf α, ``bits`` the sum over leaves; given an int ``d`` they are those of ``c``.

    Args:
      c: the compressor to apply leaf by leaf.

    Returns:
      A :class:`Compressor` whose payload is a tuple with one message per leaf.
    """
    if not isinstance(c, Compressor):
        raise TypeError(f"per_leaf expects a Compressor, got {type(c).__name__}")
    if c.per_leaf:
        return c
    return dataclasses.replace(
        c,
        name=f"per_leaf({c.name})",
        per_leaf=True,
        base=c,
        compress_fn=None,
        kept_fn=None,
    )
