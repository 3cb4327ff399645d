"""Sparsification operators: Rand-K, Perm-K, Bernoulli (lazy) and Top-K.

Payload convention shared by every sparsifier (the ``compose`` combinator relies on it): the
payload is a dict whose ``"values"`` entry holds the **raw** kept entries of ``x`` (unscaled, in
``x``'s dtype), plus index information (``"indices"``: a packed index list, ``"mask"``: a packed
``d``-bit mask, ``"flag"``: Bernoulli's one bit, or nothing when the receiver regenerates the
indices from the key). ``decode`` applies any scaling (``d/K``, ``M``, ``1/p``); the scaling is
computed in at least float32 and rounded once to ``x``'s dtype.

Non-finite inputs never crash: an operator passes a kept ``inf``/``nan`` through (scaled, so
``nan`` stays ``nan`` and ``±inf`` stays ``±inf``) and outputs ``0`` at dropped coordinates.
Top-K ranks ``nan`` above ``inf`` above every finite magnitude, so non-finite entries are kept
first and propagate.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdist.compressors._base import (
    Compressor,
    Packed,
    check_int,
    check_k,
    check_prob,
    float_bits,
    index_bits,
    pack_uint,
    unpack_uint,
)
from jaxdist.compressors._sampling import random_permutation, sample_subset

__all__ = ["rand_k", "perm_k", "perm_k_compress", "bernoulli", "top_k"]

_RAND_K_CODINGS = ("seed", "list", "mask", "enumerative")
_TOP_K_CODINGS = ("list", "mask")


# ---------------------------------------------------------------------------------------------
# Shared helpers.


def _scale(values: jax.Array, factor: float) -> jax.Array:
    """``values * factor`` computed in at least float32 and rounded once to ``values.dtype``."""
    dtype = values.dtype
    wide = jnp.promote_types(dtype, jnp.float32)
    return (values.astype(wide) * jnp.asarray(factor, wide)).astype(dtype)


def _scatter(d: int, dtype, indices: jax.Array, values: jax.Array) -> jax.Array:
    """A ``d``-vector holding ``values`` at the distinct in-range ``indices``, zeros elsewhere."""
    return jnp.zeros((d,), dtype).at[indices].set(values, unique_indices=True)


def _pack_mask(indices: jax.Array, d: int) -> Packed:
    mask = jnp.zeros((d,), bool).at[indices].set(True, unique_indices=True)
    return Packed(jnp.packbits(mask, bitorder="little"), d)


def _unpack_mask(packed: Packed, d: int, k: int) -> jax.Array:
    """Increasing indices of the ``k`` set bits of a packed ``d``-bit mask."""
    mask = jnp.unpackbits(packed.data, count=d, bitorder="little").astype(bool)
    return jnp.nonzero(mask, size=k, fill_value=d)[0].astype(jnp.int32)


def _check_coding(index_coding: str, allowed: tuple[str, ...]) -> str:
    if index_coding not in allowed:
        raise ValueError(
            f"index_coding must be one of {allowed}, got index_coding={index_coding!r}"
        )
    return index_coding


def _encode_indices(indices: jax.Array, d: int, coding: str) -> dict:
    if coding == "seed":
        return {}
    if coding == "mask":
        return {"mask": _pack_mask(indices, d)}
    return {"indices": pack_uint(indices, index_bits(d))}  # "list" and "enumerative"


def _decode_indices(payload: dict, d: int, k: int, coding: str) -> jax.Array:
    if coding == "mask":
        return _unpack_mask(payload["mask"], d, k)
    return unpack_uint(payload["indices"], k, index_bits(d)).astype(jnp.int32)


def _index_cost(d: int, k: int, coding: str) -> int:
    if coding == "seed":
        return 0
    if coding == "list":
        return k * index_bits(d)
    if coding == "mask":
        return d
    return (math.comb(d, k) - 1).bit_length()  # ceil(log2 C(d, k)), exact in Python ints


# ---------------------------------------------------------------------------------------------
# Rand-K.


def rand_k(
    k: int, *, scaled: bool = True, index_coding: str = "seed", shared: bool = False
) -> Compressor:
    """Rand-K: keeps ``k`` uniformly random coordinates (scaled by ``d/k`` by default).

    With ``scaled=True`` (default) the operator is **unbiased** with ω = d/k − 1, and the variance
    identity holds with **equality** for every ``x``; with ``scaled=False`` it is the plain mask,
    **contractive** with α = k/d (equality in expectation). Bits: ``k·b`` for the values plus the
    index bits of ``index_coding`` (``b`` = bits per float of ``x``'s dtype).

    .. math::

      C(x) = \\frac{d}{k} \\sum_{i \\in S} x_i e_i, \\quad S \\sim \\mathrm{Unif}\\binom{[d]}{k},
      \\qquad \\mathbb{E}\\|C(x) - x\\|^2 = \\Big(\\frac{d}{k} - 1\\Big)\\|x\\|^2 .

    Index codings (bits on top of ``k·b``):

    * ``"seed"`` (default): 0 bits. The receiver regenerates ``S`` from the key (a shared seed,
      e.g. derived from the round number); the payload holds only the values.
    * ``"list"``: ``k·ceil(log2 d)`` bits, the indices packed with ``pack_uint``.
    * ``"mask"``: ``d`` bits, a packed bitmask (values in increasing index order).
    * ``"enumerative"``: ``ceil(log2 C(d, k))`` bits, the size of the optimal (enumerative /
      combinatorial-number-system) code. This mode is an **accounting** of that code: the
      payload carries the plain index list, so ``payload_bits(encode(x))`` exceeds ``bits(d)``.
      In every other mode ``payload_bits(encode(x)) == bits(d)`` exactly.

    ``S`` is drawn by :func:`~jaxdist.compressors._sampling.sample_subset`: exactly uniform,
    ``O(min(k, d−k))`` random numbers. Kept non-finite entries pass through; dropped ones are 0.

    Args:
      k: number of kept coordinates, ``1 <= k <= d`` (checked when ``d`` is known).
      scaled: multiply the kept values by ``d/k`` (unbiased) or not (contractive mask).
      index_coding: ``"seed"``, ``"list"``, ``"mask"`` or ``"enumerative"``.
      shared: flag the operator as shared-key (``shared_key=True``): methods then pass the same
        key to every worker, so every worker keeps the same support and
        (1/M) Σ_m C(a_m) = C(ā): all-reduce friendly, but with **no** 1/M variance reduction
        (the aggregation error is exactly ω‖ā‖²).

    Returns:
      A :class:`~jaxdist.compressors.Compressor`.

    References:
      Stich, Cordonnier, Jaggi, `Sparsified SGD with memory <https://arxiv.org/abs/1809.07599>`_,
      2018.
    """
    k = check_int("k", k, low=1)
    coding = _check_coding(index_coding, _RAND_K_CODINGS)
    scaled, shared = bool(scaled), bool(shared)

    def factor(d):
        return d / k if scaled else 1.0

    def finish(indices, raw, d, dtype):
        values = _scale(raw, factor(d)) if scaled else raw
        return _scatter(d, dtype, indices, values)

    def encode(key, v, shape):
        del shape
        d = v.shape[0]
        indices = sample_subset(key, d, k)
        if coding == "mask":
            indices = jnp.sort(indices)
        return {"values": v[indices], **_encode_indices(indices, d, coding)}

    def decode(key, payload, d, dtype, shape):
        del shape
        if coding == "seed":
            indices = sample_subset(key, d, k)
        else:
            indices = _decode_indices(payload, d, k, coding)
        return finish(indices, payload["values"], d, dtype)

    def compress(key, v, shape):
        del shape
        indices = sample_subset(key, v.shape[0], k)
        return finish(indices, v[indices], v.shape[0], v.dtype)

    options = []
    if not scaled:
        options.append("scaled=False")
    if coding != "seed":
        options.append(f"index_coding={coding!r}")
    if shared:
        options.append("shared=True")
    name = f"rand_k({', '.join([f'k={k}', *options])})"
    return Compressor(
        name=name,
        encode_fn=encode,
        decode_fn=decode,
        compress_fn=compress,
        bits_fn=lambda d, dtype: k * float_bits(dtype) + _index_cost(d, k, coding),
        omega_fn=(lambda d: d / k - 1.0) if scaled else None,
        alpha_fn=None if scaled else (lambda d: k / d),
        unbiased=scaled,
        shared_key=shared,
        kept_fn=lambda d: k,
        projection=not scaled,
        check_fn=lambda d, shape: check_k(k, d),
    )


# ---------------------------------------------------------------------------------------------
# Perm-K.


def _perm_k_layout(key: jax.Array, d: int, worker, num_workers: int):
    """Coordinates owned by ``worker``, a validity mask, and the decode scale.

    ``d >= M``: ``d' = M·q`` positions (``q = ceil(d/M)``, positions ``>= d`` are padding) are
    permuted by one shared permutation π; worker ``m`` owns ``π[mq : (m+1)q]``, scale ``M``.
    ``M > d``: ``d·ceil(M/d)`` slots are permuted; worker ``m`` takes slot ``π[m]`` and the
    coordinate ``π[m] mod d``, scale ``d``.
    """
    m = jnp.asarray(worker, jnp.int32)
    if d >= num_workers:
        q = -(-d // num_workers)
        perm = random_permutation(key, num_workers * q)
        owned = lax.dynamic_slice_in_dim(perm, m * q, q)
        return owned, owned < d, float(num_workers)
    slots = d * (-(-num_workers // d))
    perm = random_permutation(key, slots)
    owned = lax.dynamic_slice_in_dim(perm, m, 1) % d
    return owned, jnp.ones((1,), bool), float(d)


def _perm_k_encode(key, v, worker, num_workers):
    owned, _, _ = _perm_k_layout(key, v.shape[0], worker, num_workers)
    # padding positions (>= d) read as zeros
    return {"values": v.at[owned].get(mode="fill", fill_value=0)}


def _perm_k_decode(key, payload, d, dtype, worker, num_workers):
    owned, valid, scale = _perm_k_layout(key, d, worker, num_workers)
    values = _scale(payload["values"], scale)
    return jnp.zeros((d,), dtype).at[jnp.where(valid, owned, d)].set(values, mode="drop")


def _worker_axis(axis_name, num_workers):
    try:
        worker = lax.axis_index(axis_name)
        size = lax.axis_size(axis_name)
    except NameError as e:
        raise ValueError(
            f"perm_k must run under the worker axis {axis_name!r}: call it inside "
            f"jax.vmap(..., axis_name={axis_name!r}), a jaxdist.comm backend, or jax.shard_map "
            "over that axis. Outside an axis, use perm_k_compress(key, x, worker, num_workers)."
        ) from e
    if num_workers is not None and size != num_workers:
        raise ValueError(
            f"perm_k(num_workers={num_workers}) runs on the axis {axis_name!r} of size {size}; "
            "num_workers must equal the axis size"
        )
    return worker, size


def _perm_k_bits(num_workers):
    def bits(d, dtype):
        m = _need_workers(num_workers, "bits")
        return (-(-d // m) if d >= m else 1) * float_bits(dtype)

    return bits


def _need_workers(num_workers, what):
    if num_workers is None:
        raise ValueError(
            f"perm_k(num_workers=None): {what}(d) depends on the number of workers M; "
            "build the operator with perm_k(num_workers=M)"
        )
    return num_workers


def perm_k(*, num_workers: int | None = None, axis_name="workers") -> Compressor:
    """Perm-K: correlated sparsification, each worker sends a disjoint random block.

    Each worker's operator alone is Rand-(d/M) scaled by ``M``: **unbiased** with ω = M − 1
    (``d >= M``), or ω = d − 1 (``M > d``). Bits: ``ceil(d/M)·b`` per worker (``b`` if
    ``M > d``) and **no index bits**: all workers derive the blocks from one shared key.

    All workers use the same key, hence one shared permutation π. Case ``d >= M``: the
    ``d' = M·ceil(d/M)`` positions (the last ``d' − d`` are padding) are permuted and worker
    ``m`` owns ``π[mq:(m+1)q]`` (``q = ceil(d/M)``), sends the ``q`` raw values there (zeros in
    padding slots) and the decoder scales them by ``M``. Every coordinate is owned by exactly
    one uniformly random worker (also when ``M`` does not divide ``d``; then a worker's number
    of real coordinates varies between rounds, at most ``q``), so the average of the decoded
    messages satisfies the AB inequality with ``A = B = 1`` and **equality**:

    .. math::

      \\mathbb{E}\\Big\\|\\frac1M\\sum_m C_m(a_m) - \\bar a\\Big\\|^2
      = \\frac1M\\sum_m \\|a_m\\|^2 - \\|\\bar a\\|^2 ,

    which is zero for homogeneous ``a_m = a`` (for every ``d >= M``). Case ``M > d``:
    ``d·ceil(M/d)`` slots are permuted and worker ``m`` sends coordinate ``π[m] mod d`` scaled
    by ``d``; for ``M = q·d`` every coordinate goes to exactly ``q`` workers and
    ``A = B = (d − 1)/(M − 1)`` (with equality).

    The operator reads ``lax.axis_index(axis_name)`` and ``lax.axis_size(axis_name)``, so
    ``compress``/``encode``/``decode`` must run under the worker axis
    (``jax.vmap(..., axis_name="workers")``, a ``jaxdist.comm`` backend or ``jax.shard_map``);
    outside it they raise ``ValueError``. :func:`perm_k_compress` is the same operator with an
    explicit worker index. ``decode`` reconstructs the message of the calling worker. Kept
    non-finite entries pass through (scaled); all other coordinates are 0.

    Args:
      num_workers: the number of workers M. Optional for compressing (the axis size is used;
        if given it must equal the axis size), required for ``omega`` and ``bits``.
      axis_name: the worker axis.

    Returns:
      A :class:`~jaxdist.compressors.Compressor` with ``shared_key=True`` and
      ``needs_axis=True``.

    References:
      Szlendak, Tyurin, Richtárik, `Permutation compressors for provably faster distributed
      nonconvex optimization <https://arxiv.org/abs/2110.03300>`_, 2021.
    """
    if num_workers is not None:
        num_workers = check_int("num_workers", num_workers, low=1)

    def encode(key, v, shape):
        del shape
        worker, size = _worker_axis(axis_name, num_workers)
        return _perm_k_encode(key, v, worker, size)

    def decode(key, payload, d, dtype, shape):
        del shape
        worker, size = _worker_axis(axis_name, num_workers)
        return _perm_k_decode(key, payload, d, dtype, worker, size)

    def omega(d):
        m = _need_workers(num_workers, "omega")
        return float(m - 1) if d >= m else float(d - 1)

    kept = None
    if num_workers is not None:
        kept = lambda d: -(-d // num_workers) if d >= num_workers else 1

    name = "perm_k()" if num_workers is None else f"perm_k(num_workers={num_workers})"
    return Compressor(
        name=name,
        encode_fn=encode,
        decode_fn=decode,
        bits_fn=_perm_k_bits(num_workers),
        omega_fn=omega,
        unbiased=True,
        shared_key=True,
        needs_axis=True,
        axis_name=axis_name,
        kept_fn=kept,
    )


def perm_k_compress(key: jax.Array, x, worker, num_workers: int):
    """Perm-K output of worker ``worker`` out of ``num_workers``, without a worker axis.

    Bitwise equal to what worker ``worker`` computes with ``perm_k().compress(key, x)`` under
    ``jax.vmap(..., axis_name=...)`` with the same (shared) ``key``; usable in Python loops and
    NumPy-style references. Pytrees are flattened as by every compressor.

    Args:
      key: the shared PRNG key (the same for all workers).
      x: an array or pytree of floating-point arrays.
      worker: the worker index in ``[0, num_workers)`` (a Python int or an int32 scalar).
      num_workers: the number of workers M (a static Python int).

    Returns:
      ``C_worker(x)``, with the structure, shapes and dtypes of ``x``.
    """
    num_workers = check_int("num_workers", num_workers, low=1)
    if isinstance(worker, int | np.integer) and not 0 <= int(worker) < num_workers:
        raise ValueError(f"worker must be in [0, num_workers={num_workers}), got worker={worker}")
    single = Compressor(
        name=f"perm_k_compress(worker, num_workers={num_workers})",
        encode_fn=lambda key, v, shape: _perm_k_encode(key, v, worker, num_workers),
        decode_fn=lambda key, p, d, dtype, shape: _perm_k_decode(
            key, p, d, dtype, worker, num_workers
        ),
        bits_fn=_perm_k_bits(num_workers),
    )
    return single.compress(key, x)


# ---------------------------------------------------------------------------------------------
# Bernoulli (lazy) compressor.


def bernoulli(p: float) -> Compressor:
    """Bernoulli ("lazy") compressor: sends ``x/p`` with probability ``p``, else nothing.

    **Unbiased** with ω = 1/p − 1 (equality for every ``x``). Bits: the fixed-size message,
    ``1 + d·b`` (one flag bit plus the worst case of ``d`` values); the *expected* size of a
    variable-length message is ``1 + p·d·b``. One random number per message.

    .. math::

      C(x) = \\begin{cases} x/p & \\text{with probability } p, \\\\ 0 & \\text{otherwise.}
      \\end{cases}

    The coin is exact: a 32-bit word ``w`` is compared with ``T = round(p·2^32)`` (at least 1),
    so the flag is set with probability exactly ``p_eff = T/2^32`` (``|p_eff − p| <= 2^-33``),
    and ``decode`` divides by ``p_eff``; ``omega`` reports ``1/p_eff − 1``. Payload:
    ``{"flag": 1 packed bit, "values": x if sent else zeros}``. Non-finite entries pass
    through (divided by ``p``) when sent; the output is all zeros otherwise.

    Args:
      p: the probability of sending, ``0 < p <= 1``.

    Returns:
      A :class:`~jaxdist.compressors.Compressor`.
    """
    p = check_prob("p", p)
    threshold = max(1, round(p * 2**32))
    always = threshold >= 2**32
    p_eff = 1.0 if always else threshold / 2**32

    def flag_of(key):
        if always:
            return jnp.bool_(True)
        return jax.random.bits(key, (), jnp.uint32) < jnp.uint32(threshold)

    def send(flag, v):
        return jnp.where(flag, v, jnp.zeros_like(v))

    def receive(flag, values, dtype):
        return jnp.where(flag, _scale(values, 1.0 / p_eff), jnp.zeros((), dtype))

    def encode(key, v, shape):
        del shape
        flag = flag_of(key)
        packed = Packed(jnp.packbits(flag[None], bitorder="little"), 1)
        return {"flag": packed, "values": send(flag, v)}

    def decode(key, payload, d, dtype, shape):
        del key, d, shape
        flag = jnp.unpackbits(payload["flag"].data, count=1, bitorder="little")[0].astype(bool)
        return receive(flag, payload["values"], dtype)

    def compress(key, v, shape):
        del shape
        flag = flag_of(key)
        return receive(flag, send(flag, v), v.dtype)

    return Compressor(
        name=f"bernoulli(p={p})",
        encode_fn=encode,
        decode_fn=decode,
        compress_fn=compress,
        bits_fn=lambda d, dtype: 1 + d * float_bits(dtype),
        omega_fn=lambda d: 1.0 / p_eff - 1.0,
        unbiased=True,
        deterministic=always,
        kept_fn=lambda d: d,
    )


# ---------------------------------------------------------------------------------------------
# Top-K.


def _magnitude_keys(v: jax.Array) -> jax.Array:
    """Keys ordered like ``|v|``, with every ``nan`` above ``+inf`` and ties going by index.

    ``lax.top_k`` ranks floats in IEEE total order and keeps the lower index first among equal
    keys. ``|v|`` clears the sign (so ``-0.0`` and ``0.0`` tie) and every ``nan`` is replaced by
    one canonical ``nan`` (so ``nan`` payloads tie, above ``+inf``). Float keys are used rather than
    their integer bit patterns: XLA's CPU TopK is ~16x faster on floats (0.2 s vs 3.3 s at
    d = 1e7, k = 1e5).
    """
    a = jnp.abs(v)
    return jnp.where(jnp.isnan(a), jnp.array(jnp.nan, a.dtype), a)


def top_k(k: int, *, index_coding: str = "list") -> Compressor:
    """Top-K: keeps the ``k`` entries of largest magnitude (ties go to the lower index).

    Deterministic and biased, **contractive** with α = k/d:
    ``‖Top_k(x) − x‖² <= (1 − k/d)‖x‖²`` for every ``x``, with equality when all ``|x_i|`` are
    equal. Bits: ``k·b + k·ceil(log2 d)`` (``"list"``) or ``k·b + d`` (``"mask"``); indices
    cannot come from a seed since they depend on the data.

    NaN handling: ``nan`` counts as larger than ``inf``, which is larger than any finite
    magnitude, so non-finite entries are always kept (and propagate into the output); several
    ``nan`` entries are ranked by index. Selection uses ``lax.top_k`` on ``|x_i|`` with one
    canonical ``nan`` (IEEE total order, stable), so it is exact.

    Args:
      k: number of kept coordinates, ``1 <= k <= d`` (checked when ``d`` is known).
      index_coding: ``"list"`` (packed indices, in decreasing-magnitude order) or ``"mask"``
        (a packed ``d``-bit mask, values in increasing index order).

    Returns:
      A :class:`~jaxdist.compressors.Compressor`.

    References:
      Stich, Cordonnier, Jaggi, `Sparsified SGD with memory <https://arxiv.org/abs/1809.07599>`_,
      2018. Richtárik, Sokolov, Fatkhullin, `EF21: a new, simpler, theoretically better, and
      practically faster error feedback <https://arxiv.org/abs/2106.05203>`_, 2021 (α = k/d).
    """
    k = check_int("k", k, low=1)
    coding = _check_coding(index_coding, _TOP_K_CODINGS)

    def select(v):
        indices = lax.top_k(_magnitude_keys(v), k)[1].astype(jnp.int32)
        return jnp.sort(indices) if coding == "mask" else indices

    def encode(key, v, shape):
        del key, shape
        indices = select(v)
        return {"values": v[indices], **_encode_indices(indices, v.shape[0], coding)}

    def decode(key, payload, d, dtype, shape):
        del key, shape
        indices = _decode_indices(payload, d, k, coding)
        return _scatter(d, dtype, indices, payload["values"])

    def compress(key, v, shape):
        del key, shape
        indices = select(v)
        return _scatter(v.shape[0], v.dtype, indices, v[indices])

    name = f"top_k(k={k})" if coding == "list" else f"top_k(k={k}, index_coding={coding!r})"
    return Compressor(
        name=name,
        encode_fn=encode,
        decode_fn=decode,
        compress_fn=compress,
        bits_fn=lambda d, dtype: k * float_bits(dtype) + _index_cost(d, k, coding),
        alpha_fn=lambda d: k / d,
        deterministic=True,
        kept_fn=lambda d: k,
        projection=True,
        check_fn=lambda d, shape: check_k(k, d),
    )
