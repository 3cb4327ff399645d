"""The :class:`Compressor` value and the machinery every operator shares.

A compressor is an immutable, hashable value built by a lower_snake factory (``rand_k(10)``,
``natural()``, ...). Two compressors are equal when they were built by the same factory with
the same (normalised) arguments: ``rand_k(10) == rand_k(10)``, ``rand_k(10) != rand_k(11)``,
and combinators compare by their parts. So a compressor can be a dict key or a static argument
of :func:`jax.jit`.

Three concrete types implement the one interface of :class:`Compressor` (``compress``,
``encode``, ``decode``, ``omega``, ``alpha``, ``bits`` and the flags):

* :class:`VectorCompressor`: an operator written once, for a flat vector
  :math:`v \\in \\mathbb{R}^d`, as a pair of pure functions

  - ``encode_fn(key, v, shape) -> payload``: the wire message, a pytree of arrays with static
    shapes (kept values, packed index/sign/level bits, norms);
  - ``decode_fn(key, payload, d, dtype, shape) -> v_hat``;

  (operators that need the worker index, ``needs_axis=True``, take it as one more argument
  ``worker``: ``None`` means "read it from the worker axis"). ``shape`` is the static shape of
  the array the vector came from (``(d,)`` for a flattened pytree); only structure-aware
  operators (PowerSGD) look at it. A pytree is flattened into **one** vector (the theory's
  :math:`x \\in \\mathbb{R}^d`). ``compress = decode ∘ encode`` by construction, unless the
  factory supplies a faster direct ``compress_fn``, which the test-suite checks is *bitwise*
  equal to ``decode ∘ encode``.
* :class:`Sparsifier`: a :class:`VectorCompressor` whose payload is a dict with the raw kept
  values under ``"values"`` (Rand-K, Top-K, Perm-K, Bernoulli, identity); it also knows how
  many values it keeps (``kept_fn``) and whether it is a projection. Only the combinators read
  these two fields.
* :class:`PerLeaf` (built by :func:`per_leaf`): a compressor applied leaf by leaf.

Bits are exact integers computed in Python from the static message layout: ``bits(d)`` equals
:func:`payload_bits` of the payload, where a :class:`Packed` field counts the bits it holds (not
the padding of its last byte) and every other array counts ``size * itemsize * 8``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdist._validate import as_key

PyTree = Any
Payload = Any
DTypeLike = Any

__all__ = [
    "Compressor",
    "VectorCompressor",
    "Sparsifier",
    "PerLeaf",
    "Packed",
    "pack_uint",
    "unpack_uint",
    "payload_bits",
    "float_bits",
    "compute_dtype",
    "index_bits",
    "check_k",
    "config",
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


def _is_packed(x: Any) -> bool:
    return isinstance(x, Packed)


def payload_bits(payload: Payload) -> int:
    """Exact size in bits of a (single, unbatched) payload.

    Args:
      payload: a message returned by ``encode`` (or its ``jax.eval_shape``).

    Returns:
      The number of bits: a :class:`Packed` field counts its ``nbits``, every other array
      ``size * itemsize * 8``.
    """
    leaves = jax.tree_util.tree_leaves(payload, is_leaf=_is_packed)
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


def compute_dtype(dtype: DTypeLike) -> Any:
    """The arithmetic dtype for inputs of ``dtype``: float64 for float64, else float32.

    bfloat16 and float16 inputs are computed in float32 and rounded once at the end. Written
    out (not ``jnp.promote_types``) so that it holds under strict dtype promotion.
    """
    return jnp.dtype(jnp.float64) if jnp.dtype(dtype) == jnp.float64 else jnp.dtype(jnp.float32)


def index_bits(d: int) -> int:
    """Bits of one index into ``range(d)``: ``ceil(log2 d)`` (0 for d = 1)."""
    return max(int(d) - 1, 0).bit_length()


def check_k(k: int, d: int, name: str = "k") -> None:
    """Trace-time check of a sparsity level against the dimension: ``1 <= k <= d``."""
    if k > d:
        raise ValueError(f"{name}={k} is larger than the dimension d={d}; need 1 <= {name} <= d")


def config(factory: str, **arguments: Any) -> tuple:
    """The hashable configuration of a compressor: its factory and all its arguments.

    Factories pass their arguments *after* validation and normalisation (Python ints, floats,
    bools, strings, NumPy dtypes, tuples and the part compressors of a combinator), so equal
    configurations build equal operators.
    """
    return (factory, tuple(arguments.items()))


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


def _is_dim(d: Any) -> bool:
    return isinstance(d, int | np.integer) and not isinstance(d, bool)


def _resolve_dim(d: Any) -> tuple[int, Any, tuple[int, ...]]:
    """``d`` may be an int, an array/ShapeDtypeStruct or a pytree of them."""
    if _is_dim(d):
        return int(d), jnp.float32, (int(d),)
    leaves, _ = _leaves(d)
    dtype = _common_dtype(leaves)
    size = sum(int(np.prod(leaf.shape, dtype=np.int64)) for leaf in leaves)
    shape = tuple(leaves[0].shape) if len(leaves) == 1 else (size,)
    return size, dtype, shape


def _structure(like: PyTree):
    """Dimension, dtype, matrix-shape hint and the inverse of flattening, for ``like``."""
    leaves, treedef = _leaves(like)
    dtype = _common_dtype(leaves)
    shapes = [tuple(leaf.shape) for leaf in leaves]
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    dim = sum(sizes)
    shape = shapes[0] if len(leaves) == 1 else (dim,)
    splits = list(np.cumsum(sizes)[:-1])

    def unflatten(v):
        if len(leaves) == 1:
            return jax.tree_util.tree_unflatten(treedef, [v.reshape(shapes[0])])
        parts = jnp.split(v, splits)
        return jax.tree_util.tree_unflatten(
            treedef, [p.reshape(s) for p, s in zip(parts, shapes, strict=True)]
        )

    return dim, dtype, shape, unflatten


def _flatten(x: PyTree):
    x = jax.tree_util.tree_map(jnp.asarray, x)
    dim, dtype, shape, unflatten = _structure(x)
    leaves = jax.tree_util.tree_leaves(x)
    if len(leaves) == 1:
        v = leaves[0].reshape(-1)
    else:
        v = jnp.concatenate([leaf.reshape(-1) for leaf in leaves])
    return v, dtype, shape, unflatten


# ---------------------------------------------------------------------------------------------
# Payload validation.


def _dtype_of(leaf: Any) -> Any:
    dtype = getattr(leaf, "dtype", None)
    return jnp.dtype(dtype) if dtype is not None else np.asarray(leaf).dtype


def _describe(leaf: Any) -> str:
    if isinstance(leaf, Packed):
        return f"Packed(nbits={leaf.nbits}, data shape {tuple(np.shape(leaf.data))})"
    return f"shape {tuple(np.shape(leaf))} dtype {_dtype_of(leaf)}"


def _check_payload(name: str, expected: Payload, payload: Payload) -> None:
    """Raises ``ValueError`` naming the first payload field that differs from ``expected``."""
    exp, _ = jax.tree_util.tree_flatten_with_path(expected, is_leaf=_is_packed)
    try:
        got, _ = jax.tree_util.tree_flatten_with_path(payload, is_leaf=_is_packed)
    except Exception as e:  # pragma: no cover - objects that are not pytrees at all
        raise ValueError(f"{name}.decode: the payload is not a pytree: {payload!r}") from e
    exp_paths = [jax.tree_util.keystr(p) for p, _ in exp]
    got_paths = [jax.tree_util.keystr(p) for p, _ in got]
    if exp_paths != got_paths:
        missing = [p for p in exp_paths if p not in got_paths]
        extra = [p for p in got_paths if p not in exp_paths]

        def fields(paths):
            return ", ".join(p or "(the payload itself)" for p in paths) or "none"

        raise ValueError(
            f"{name}.decode: the payload does not have the structure of this compressor's "
            f"messages: expected the fields {fields(exp_paths)}, got {fields(got_paths)}"
            + (f"; missing {fields(missing)}" if missing else "")
            + (f"; unexpected {fields(extra)}" if extra else "")
        )
    for (path, e), (_, g) in zip(exp, got, strict=True):
        field = jax.tree_util.keystr(path) or "(the payload itself)"
        if isinstance(e, Packed) != isinstance(g, Packed):
            raise ValueError(
                f"{name}.decode: payload field {field}: expected {_describe(e)}, got {_describe(g)}"
            )
        if isinstance(e, Packed):
            same = e.nbits == g.nbits and tuple(e.data.shape) == tuple(np.shape(g.data))
            same = same and _dtype_of(g.data) == jnp.dtype(e.data.dtype)
        else:
            same = tuple(e.shape) == tuple(np.shape(g)) and _dtype_of(g) == jnp.dtype(e.dtype)
        if not same:
            raise ValueError(
                f"{name}.decode: payload field {field}: expected {_describe(e)}, got {_describe(g)}"
            )


# ---------------------------------------------------------------------------------------------
# The Compressor interface.


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Compressor:
    """A compression operator: pure functions of a PRNG key and the input.

    Build one with a factory (:func:`~jaxdist.compressors.rand_k`, ...), never directly. A
    compressor is an immutable value: equal (``==``) and of equal hash when built by the same
    factory with the same arguments, so it can be a static argument of :func:`jax.jit`.

    Attributes:
      name: short name with parameters, e.g. ``"rand_k(k=10)"``.
      config: the hashable configuration ``(factory, ((argument, value), ...))`` that defines
        equality; a combinator's configuration holds its part compressors.
      unbiased: ``E C(x) = x`` (class U(ω)).
      shared_key: the operator is meant to receive the *same* key on every worker
        (shared-seed Rand-K, Perm-K, PowerSGD); methods then do not fold in the worker index.
      deterministic: the output does not depend on the key.
      needs_axis: the output depends on the worker index (Perm-K): it is passed as data
        (``worker=m``) or, by default, read from ``lax.axis_index(axis_name)``.
      axis_name: the worker axis such an operator reads (``None`` otherwise).
    """

    name: str
    config: tuple
    unbiased: bool = False
    shared_key: bool = False
    deterministic: bool = False
    needs_axis: bool = False
    axis_name: Any = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Compressor):
            return NotImplemented
        return self.config == other.config

    def __hash__(self) -> int:
        return hash(self.config)

    def __repr__(self) -> str:
        return f"Compressor({self.name})"

    def _key(self, key: Any) -> Any:
        """The key as a typed PRNG key (``None`` is accepted by deterministic operators)."""
        if key is None:
            if self.deterministic:
                return None
            raise TypeError(f"{self.name} is randomised: it needs a PRNG key, got key=None")
        return as_key(key)

    # -- the interface -------------------------------------------------------------------------

    def compress(self, key: Any, x: PyTree, *, worker: Any = None) -> PyTree:
        """Returns C(x): same structure, shapes and dtypes as ``x``.

        Args:
          key: a PRNG key (typed, raw ``uint32[2]`` or an int seed; ``None`` for a
            deterministic operator).
          x: an array or a pytree of floating-point arrays (flattened into one vector unless
            the operator is :func:`per_leaf`).
          worker: the worker index ``m`` as data (an int or an int32 scalar, possibly traced),
            for operators that depend on it (``needs_axis``); ``None`` reads
            ``lax.axis_index(axis_name)``. Other operators ignore it.

        Returns:
          The compressed pytree.
        """
        raise NotImplementedError

    def encode(self, key: Any, x: PyTree, *, worker: Any = None) -> Payload:
        """Returns the wire message for ``x``: a pytree of static-shape arrays.

        Args:
          key: as for :meth:`compress`.
          x: as for :meth:`compress`.
          worker: as for :meth:`compress`.

        Returns:
          The payload; :func:`payload_bits` of it is ``bits(x)``.
        """
        raise NotImplementedError

    def decode(self, key: Any, payload: Payload, like: PyTree, *, worker: Any = None) -> PyTree:
        """Reconstructs C(x) from ``payload``; ``like`` gives the structure, shapes and dtypes.

        Args:
          key: the key given to :meth:`encode` (shared-key operators regenerate their indices
            from it).
          payload: the message.
          like: a pytree with the structure, shapes and dtypes of ``x`` (arrays or
            ``jax.ShapeDtypeStruct``).
          worker: the *sender's* worker index, for operators that depend on it.

        Returns:
          ``C(x)``, bitwise equal to :meth:`compress` with the same key (and worker).

        Raises:
          ValueError: if the payload does not have the structure, shapes and dtypes of this
            operator's messages for ``like`` (the message names the field).
        """
        raise NotImplementedError

    def omega(self, d: Any) -> float | None:
        """Variance parameter ω(d) of the unbiased class U(ω), or ``None`` if not unbiased.

        Args:
          d: the dimension, or an array / pytree whose size gives it.

        Returns:
          ω, or ``None``.
        """
        raise NotImplementedError

    def alpha(self, d: Any) -> float | None:
        """Contraction parameter α(d) of the class B(α), or ``None`` if no worst-case α exists.

        Args:
          d: the dimension, or an array / pytree whose size gives it.

        Returns:
          α, or ``None``.
        """
        raise NotImplementedError

    def bits(self, d: Any, dtype: DTypeLike | None = None) -> int:
        """Exact size in bits of one message for a ``d``-vector (or for the pytree ``d``).

        Includes values, indices, norms and signs; index bits are 0 when the receiver
        regenerates the indices from a shared key.

        Args:
          d: the dimension, or an array / pytree (its size, dtype and shape are used).
          dtype: the float dtype; by default the dtype of ``d`` when it is an array/pytree,
            else float32.

        Returns:
          The number of bits, a Python int.
        """
        raise NotImplementedError


def _call(fn: Callable[..., Any], needs_worker: bool, worker: Any, *args: Any) -> Any:
    return fn(*args, worker) if needs_worker else fn(*args)


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class VectorCompressor(Compressor):
    """An operator on the flattened vector, defined by its encoder and decoder functions.

    Built by the factories; see the module docstring for the signatures of ``encode_fn``,
    ``decode_fn`` and ``compress_fn``. ``bits_fn(d, dtype)`` (or ``bits_fn(d, dtype, shape)``
    with ``bits_uses_shape``) gives the message size, ``omega_fn(d)``/``alpha_fn(d)`` the
    constants, and ``check_fn(d, shape)`` refuses inputs the operator does not fit.
    """

    encode_fn: Callable[..., Payload]
    decode_fn: Callable[..., jax.Array]
    bits_fn: Callable[..., int]
    omega_fn: Callable[[int], float | None] | None = None
    alpha_fn: Callable[[int], float | None] | None = None
    compress_fn: Callable[..., jax.Array] | None = None
    check_fn: Callable[[int, tuple[int, ...]], None] | None = None
    bits_uses_shape: bool = False

    # -- the vector-level protocol (used by the pytree methods and by the combinators) ---------

    def check(self, d: int, shape: tuple[int, ...]) -> None:
        """Refuses a ``d``-vector (from an array of ``shape``) that the operator does not fit."""
        if d < 1:
            raise ValueError(f"{self.name}: the input has no entries (d = {d})")
        if self.check_fn is not None:
            self.check_fn(d, shape)

    def encode_vec(self, key, v: jax.Array, shape: tuple[int, ...], worker=None) -> Payload:
        """The message for the flat vector ``v``."""
        return _call(self.encode_fn, self.needs_axis, worker, key, v, shape)

    def decode_vec(self, key, payload, d: int, dtype, shape, worker=None) -> jax.Array:
        """The flat ``d``-vector of ``dtype`` decoded from ``payload``."""
        return _call(self.decode_fn, self.needs_axis, worker, key, payload, d, dtype, shape)

    def compress_vec(self, key, v: jax.Array, shape: tuple[int, ...], worker=None) -> jax.Array:
        """``C(v)`` for the flat vector ``v`` (the direct path, bitwise ``decode ∘ encode``)."""
        if self.compress_fn is not None:
            return _call(self.compress_fn, self.needs_axis, worker, key, v, shape)
        payload = self.encode_vec(key, v, shape, worker)
        return self.decode_vec(key, payload, v.shape[0], v.dtype, shape, worker)

    def bits_at(self, d: int, dtype: DTypeLike, shape: tuple[int, ...]) -> int:
        """Bits of one message for a ``d``-vector of ``dtype`` that came from an array of
        ``shape`` (only operators with ``bits_uses_shape``, e.g. PowerSGD, look at the shape)."""
        if self.bits_uses_shape:
            return int(self.bits_fn(d, dtype, shape))
        return int(self.bits_fn(d, dtype))

    def omega_at(self, d: int) -> float | None:
        """ω at the dimension ``d`` (``None`` if the operator has none)."""
        return None if self.omega_fn is None else self.omega_fn(d)

    def alpha_at(self, d: int) -> float | None:
        """α at the dimension ``d`` (``None`` if the operator has none)."""
        return None if self.alpha_fn is None else self.alpha_fn(d)

    # -- the pytree interface ----------------------------------------------------------------

    def compress(self, key, x, *, worker=None):
        key = self._key(key)
        v, _, shape, unflatten = _flatten(x)
        self.check(v.shape[0], shape)
        return unflatten(self.compress_vec(key, v, shape, worker))

    def encode(self, key, x, *, worker=None):
        key = self._key(key)
        v, _, shape, _ = _flatten(x)
        self.check(v.shape[0], shape)
        return self.encode_vec(key, v, shape, worker)

    def decode(self, key, payload, like, *, worker=None):
        key = self._key(key)
        dim, dtype, shape, unflatten = _structure(like)
        self.check(dim, shape)
        expected = jax.eval_shape(
            lambda: self.encode_vec(key, jnp.zeros((dim,), dtype), shape, worker)
        )
        _check_payload(self.name, expected, payload)
        return unflatten(self.decode_vec(key, payload, dim, dtype, shape, worker))

    def omega(self, d):
        dim, _, shape = _resolve_dim(d)
        self.check(dim, shape)
        return self.omega_at(dim)

    def alpha(self, d):
        dim, _, shape = _resolve_dim(d)
        self.check(dim, shape)
        return self.alpha_at(dim)

    def bits(self, d, dtype=None):
        dim, inferred, shape = _resolve_dim(d)
        self.check(dim, shape)
        return self.bits_at(dim, jnp.dtype(dtype if dtype is not None else inferred), shape)


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Sparsifier(VectorCompressor):
    """A :class:`VectorCompressor` that sends raw kept entries (Rand-K, Top-K, Perm-K, ...).

    Its payload is a dict whose ``"values"`` entry holds the ``kept_fn(d)`` raw kept entries of
    the input (unscaled, in its dtype); the decoder places and rescales them. ``projection``:
    the operator is the orthogonal projection onto the kept coordinates (no rescaling).
    """

    kept_fn: Callable[[int], int]
    projection: bool = False


# ---------------------------------------------------------------------------------------------
# Per-leaf (layer-wise) compression.


def _leaf_keys(key: Any, n: int) -> list[Any]:
    if key is None:
        return [None] * n
    return [jax.random.fold_in(key, i) for i in range(n)]


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class PerLeaf(Compressor):
    """``base`` applied to every leaf of a pytree separately (built by :func:`per_leaf`)."""

    base: VectorCompressor

    def _map(self, key, x, fn):
        key = self._key(key)
        leaves, treedef = _leaves(jax.tree_util.tree_map(jnp.asarray, x))
        keys = _leaf_keys(key, len(leaves))
        return [fn(k, leaf) for k, leaf in zip(keys, leaves, strict=True)], treedef

    def compress(self, key, x, *, worker=None):
        outs, treedef = self._map(key, x, lambda k, v: self.base.compress(k, v, worker=worker))
        return jax.tree_util.tree_unflatten(treedef, outs)

    def encode(self, key, x, *, worker=None):
        outs, _ = self._map(key, x, lambda k, v: self.base.encode(k, v, worker=worker))
        return tuple(outs)

    def decode(self, key, payload, like, *, worker=None):
        key = self._key(key)
        leaves, treedef = _leaves(like)
        if not isinstance(payload, tuple | list) or len(payload) != len(leaves):
            got = f"a {type(payload).__name__}"
            if isinstance(payload, tuple | list):
                got += f" of {len(payload)} messages"
            raise ValueError(
                f"{self.name}.decode: the payload must be a tuple of {len(leaves)} messages (one "
                f"per leaf of like), got {got}"
            )
        keys = _leaf_keys(key, len(leaves))
        outs = [
            self.base.decode(k, p, leaf, worker=worker)
            for k, p, leaf in zip(keys, payload, leaves, strict=True)
        ]
        return jax.tree_util.tree_unflatten(treedef, outs)

    def _leafwise(self, d, attr, reduce, **kwargs):
        if _is_dim(d):
            return getattr(self.base, attr)(d, **kwargs)
        leaves, _ = _leaves(d)
        values = [getattr(self.base, attr)(leaf, **kwargs) for leaf in leaves]
        if any(v is None for v in values):
            return None
        return reduce(values)

    def omega(self, d):
        return self._leafwise(d, "omega", max)

    def alpha(self, d):
        return self._leafwise(d, "alpha", min)

    def bits(self, d, dtype=None):
        return self._leafwise(d, "bits", sum, dtype=dtype)


def per_leaf(c: Compressor) -> Compressor:
    """Applies ``c`` to every leaf of a pytree separately (layer-wise compression).

    By default every compressor flattens a pytree into one vector (so Top-K ranks across all
    leaves); ``per_leaf(c)`` compresses leaf by leaf instead. Leaf ``i`` gets the key
    ``fold_in(key, i)`` and the same ``worker``; a 2-D leaf keeps its matrix shape (PowerSGD
    compresses it as a matrix). Constants: ``omega`` is the largest leaf ω, ``alpha`` the
    smallest leaf α, ``bits`` the sum over leaves; given an int ``d`` they are those of ``c``.
    The flags are those of ``c``. ``per_leaf(per_leaf(c))`` is ``per_leaf(c)``.

    Args:
      c: the compressor to apply leaf by leaf.

    Returns:
      A :class:`Compressor` whose payload is a tuple with one message per leaf.

    Raises:
      TypeError: if ``c`` is not a compressor.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxdist.compressors import per_leaf, top_k
      >>> c = per_leaf(top_k(1))
      >>> tree = {"a": jnp.array([3.0, 1.0]), "b": jnp.array([2.0, -1.0])}
      >>> {k: v.tolist() for k, v in c.compress(None, tree).items()}  # Top-1 of each leaf
      {'a': [3.0, 0.0], 'b': [2.0, 0.0]}
      >>> top_k(1).compress(None, tree)["b"].tolist()  # flattened: one Top-1 over all leaves
      [0.0, 0.0]
      >>> c.bits(tree)  # two messages of 32 + 1 bits
      66
    """
    if isinstance(c, PerLeaf):
        return c
    if not isinstance(c, VectorCompressor):
        raise TypeError(f"per_leaf expects a Compressor, got {type(c).__name__}: {c!r}")
    return PerLeaf(
        name=f"per_leaf({c.name})",
        config=config("per_leaf", c=c),
        unbiased=c.unbiased,
        shared_key=c.shared_key,
        deterministic=c.deterministic,
        needs_axis=c.needs_axis,
        axis_name=c.axis_name,
        base=c,
    )
