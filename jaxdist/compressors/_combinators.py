"""Combinators: build new compressors from old ones, with their constants.

* :func:`compose` ``(c2, c1)``: :math:`C = C_2 \\circ C_1` (quantise what a sparsifier kept, ...);
* :func:`scaled` ``(c)``: :math:`C/(\\omega + 1)`, an unbiased operator turned contractive;
* :func:`induced` ``(biased, unbiased)``: :math:`C_1(x) + C_2(x - C_1(x))`, a contractive
  operator turned unbiased;
* :func:`top_k_quantized` ``(k, quantizer)``: Top-K, then a rescaled quantiser on the kept
  values.

Every combinator acts on the flattened vector; wrap the result in
:func:`~jaxdist.compressors.per_leaf` for layer-wise compression. The parts receive independent
keys (``jax.random.split`` of the caller's key) and the same ``worker`` index. A combinator is
equal to another when it is the same combinator of equal parts. Gradients flow through the
parts by the chain rule (see :mod:`jaxdist.compressors`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxdist._validate import check_int
from jaxdist.compressors._base import (
    Compressor,
    PerLeaf,
    Sparsifier,
    VectorCompressor,
    config,
    float_bits,
)

__all__ = ["compose", "scaled", "induced", "top_k_quantized"]


# ---------------------------------------------------------------------------------------------
# Helpers.


def _require_compressor(c: Any, name: str) -> VectorCompressor:
    if not isinstance(c, Compressor):
        raise TypeError(f"{name} must be a Compressor, got {type(c).__name__}: {c!r}")
    if isinstance(c, PerLeaf) or not isinstance(c, VectorCompressor):
        raise ValueError(
            f"{name}={c.name} is a per_leaf compressor; combinators act on the flattened vector. "
            "Combine the plain compressors and wrap the result: per_leaf(compose(c2, c1))."
        )
    return c


def _require_unbiased(c: VectorCompressor, name: str, what: str) -> None:
    if not c.unbiased:
        raise ValueError(f"{what} needs an unbiased {name}; {name}={c.name} is biased")
    if c.omega_fn is None:
        raise ValueError(
            f"{what} needs an unbiased {name} of a class U(omega); {name}={c.name} has no "
            "variance parameter omega"
        )


def _axis(*cs: VectorCompressor) -> tuple[bool, Any]:
    needs = [c for c in cs if c.needs_axis]
    names = {c.axis_name for c in needs}
    if len(names) > 1:
        listed = ", ".join(f"{c.name}: {c.axis_name!r}" for c in needs)
        raise ValueError(f"the parts read different worker axes ({listed}); use one axis_name")
    return bool(needs), (names.pop() if names else None)


def _split(key: Any) -> tuple[Any, Any]:
    if key is None:  # deterministic parts
        return None, None
    k1, k2 = jax.random.split(key)
    return k1, k2


# ---------------------------------------------------------------------------------------------
# compose


def compose(c2: Compressor, c1: Compressor) -> VectorCompressor:
    """The composition :math:`C(x) = C_2(C_1(x))`, with independent keys for the two parts.

    Unbiased with :math:`\\omega = (\\omega_1 + 1)(\\omega_2 + 1) - 1` when both parts are
    unbiased; contractive with :math:`\\alpha = \\alpha_1 \\alpha_2` when :math:`C_1` is a
    projection sparsifier in :math:`B(\\alpha_1)` and :math:`C_2` (on the kept values) is in
    :math:`B(\\alpha_2)`, where an unbiased :math:`C_2` with :math:`\\omega_2 < 1` counts as
    :math:`\\alpha_2 = 1 - \\omega_2`; otherwise ``alpha`` is ``None``. Bits: the index part of
    :math:`C_1`'s message plus ``c2.bits(K)`` when :math:`C_1` is a sparsifier, else
    ``c2.bits(d)``.

    *Sparsifier first* (``c1`` sends raw kept values: Rand-K, Top-K, Bernoulli, identity, and
    Perm-K built with ``num_workers``, also after :func:`scaled`): :math:`C_2` acts on the
    :math:`K` raw kept values only, and :math:`C_1`'s decoder places
    (and rescales) :math:`C_2`'s output, so
    :math:`C(x) = L_S\\,C_2(x_S)` where :math:`L_S` is :math:`C_1`'s decoding map (for
    Rand-K, :math:`L_S = (d/K)\\,\\cdot` embedding of :math:`S`). The message is :math:`C_1`'s
    with ``"values"`` replaced by :math:`C_2`'s message for the :math:`K`-vector. Otherwise
    :math:`C_2` acts on the decoded :math:`d`-vector :math:`C_1(x)` and only its message is
    sent. In both cases :math:`\\omega_2` and :math:`\\alpha_2` are taken at the dimension
    :math:`C_2` sees (:math:`K` or :math:`d`).

    Unbiased case (Horváth et al. 2019, Thm 5). Given :math:`y = C_1(x)`,
    :math:`\\mathbb{E}[C(x) \\mid y] = y`, so the cross term vanishes:

    .. math::

       \\mathbb{E}\\|C(x) - x\\|^2 = \\mathbb{E}\\|C(x) - y\\|^2 + \\mathbb{E}\\|y - x\\|^2
       \\le \\omega_2 \\mathbb{E}\\|y\\|^2 + \\omega_1\\|x\\|^2
       \\le \\big((\\omega_1 + 1)(\\omega_2 + 1) - 1\\big)\\|x\\|^2 .

    In the sparse case this uses :math:`\\|L_S u\\| = s_S\\|u\\|` (a scaled coordinate
    embedding, true of every sparsifier here), so that
    :math:`\\mathbb{E}\\|L_S(C_2(x_S) - x_S)\\|^2 \\le \\omega_2 \\|L_S x_S\\|^2`. Example:
    Rand-K then natural compression has :math:`\\omega = (9/8)(d/K) - 1` and costs
    :math:`9K` bits plus Rand-K's index bits.

    Contractive case. Let :math:`T = C_1(x)`, a projection of :math:`x` onto the kept
    coordinates :math:`S`, so :math:`\\|T\\|^2 + \\|x - T\\|^2 = \\|x\\|^2` and
    :math:`\\mathbb{E}\\|T\\|^2 \\ge \\alpha_1\\|x\\|^2`. The output :math:`C(x)` is supported on
    :math:`S` and :math:`x - T` vanishes on :math:`S`, so the cross term vanishes again:

    .. math::

       \\mathbb{E}\\|C(x) - x\\|^2 = \\mathbb{E}\\|C_2(x_S) - x_S\\|^2 + \\mathbb{E}\\|x - T\\|^2
       \\le (1 - \\alpha_2)\\mathbb{E}\\|T\\|^2 + \\|x\\|^2 - \\mathbb{E}\\|T\\|^2
       \\le (1 - \\alpha_1\\alpha_2)\\|x\\|^2 .

    With an unbiased :math:`C_2`, :math:`1 - \\alpha_2 = \\omega_2`, i.e.
    :math:`\\alpha = \\alpha_1(1 - \\omega_2)`.

    Flags: ``deterministic`` if both parts are; ``needs_axis`` if either is (they must read the
    same axis). ``shared_key`` if either part needs the same key on every worker (Perm-K,
    shared-seed Rand-K, PowerSGD): the other part's randomness is then shared across workers
    too, which keeps every per-worker constant above but removes the variance reduction that
    independent draws give to an average over workers.

    Args:
      c2: the outer compressor, applied second.
      c1: the inner compressor, applied first.

    Returns:
      A :class:`~jaxdist.compressors.Compressor`.

    Raises:
      TypeError: if ``c1`` or ``c2`` is not a :class:`~jaxdist.compressors.Compressor`.
      ValueError: if a part is ``per_leaf`` (compose first, then apply ``per_leaf``), or
        the parts read different worker axes; at trace time (and from ``omega``/``alpha``/
        ``bits``), if a part does not fit the dimension it sees (e.g. ``k > K``).

    Examples:
      >>> from jaxdist.compressors import compose, natural, rand_k
      >>> c = compose(natural(), rand_k(10))  # natural compression of Rand-10's values
      >>> c.omega(100)  # (9/8)(100/10) - 1
      10.25
      >>> c.bits(100)  # 9 bits per kept value; the indices come from the shared seed
      90

    References:
      Horváth, Ho, Horváth, Sahu, Canini, Richtárik, `Natural Compression for Distributed Deep
      Learning <https://arxiv.org/abs/1905.10988>`_, 2019 (Theorem 5).
    """
    c2 = _require_compressor(c2, "c2")
    c1 = _require_compressor(c1, "c1")
    needs_axis, axis_name = _axis(c1, c2)
    sparse = isinstance(c1, Sparsifier)

    def kept(d: int) -> int:
        return int(c1.kept_fn(d)) if sparse else d

    def inner_shape(d: int, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (kept(d),) if sparse else shape

    def check(d: int, shape: tuple[int, ...]) -> None:
        c1.check(d, shape)
        c2.check(kept(d), inner_shape(d, shape))

    if sparse:

        def encode(key, v, shape, worker=None):
            k1, k2 = _split(key)
            p1 = c1.encode_vec(k1, v, shape, worker)
            if not isinstance(p1, dict) or "values" not in p1:
                raise TypeError(f"c1={c1.name} is a sparsifier: its payload must have 'values'")
            k = kept(v.shape[0])
            values = p1["values"]
            if values.shape != (k,):
                raise ValueError(
                    f"c1={c1.name}: payload values have shape {values.shape}, "
                    f"expected ({k},) = (kept_fn(d),)"
                )
            return {**p1, "values": c2.encode_vec(k2, values, (k,), worker)}

        def decode(key, payload, d, dtype, shape, worker=None):
            k1, k2 = _split(key)
            k = kept(d)
            values = c2.decode_vec(k2, payload["values"], k, dtype, (k,), worker)
            return c1.decode_vec(k1, {**payload, "values": values}, d, dtype, shape, worker)

        def bits(d, dtype, shape):
            k = kept(d)
            index_part = c1.bits_at(d, dtype, shape) - k * float_bits(dtype)
            return index_part + c2.bits_at(k, dtype, (k,))

    else:

        def encode(key, v, shape, worker=None):
            k1, k2 = _split(key)
            return c2.encode_vec(k2, c1.compress_vec(k1, v, shape, worker), shape, worker)

        def decode(key, payload, d, dtype, shape, worker=None):
            _, k2 = _split(key)
            return c2.decode_vec(k2, payload, d, dtype, shape, worker)

        def bits(d, dtype, shape):
            return c2.bits_at(d, dtype, shape)

    omega_fn = None
    if c1.unbiased and c2.unbiased and c1.omega_fn is not None and c2.omega_fn is not None:

        def omega_fn(d):
            return (c1.omega_fn(d) + 1.0) * (c2.omega_fn(kept(d)) + 1.0) - 1.0

    alpha_fn = None
    c2_contracts = c2.alpha_fn is not None or (c2.unbiased and c2.omega_fn is not None)
    if sparse and c1.projection and c1.alpha_fn is not None and c2_contracts:

        def alpha_fn(d):
            a1 = c1.alpha_at(d)
            k = kept(d)
            candidates = []
            if c2.alpha_at(k) is not None:
                candidates.append(c2.alpha_at(k))
            if c2.unbiased and c2.omega_fn is not None and c2.omega_fn(k) < 1.0:
                candidates.append(1.0 - c2.omega_fn(k))
            if a1 is None or not candidates:
                return None
            return a1 * max(candidates)

    return VectorCompressor(
        name=f"compose({c2.name}, {c1.name})",
        config=config("compose", c2=c2, c1=c1),
        encode_fn=encode,
        decode_fn=decode,
        bits_fn=bits,
        bits_uses_shape=True,
        omega_fn=omega_fn,
        alpha_fn=alpha_fn,
        unbiased=c1.unbiased and c2.unbiased,
        shared_key=c1.shared_key or c2.shared_key,
        deterministic=c1.deterministic and c2.deterministic,
        needs_axis=needs_axis,
        axis_name=axis_name,
        check_fn=check,
    )


# ---------------------------------------------------------------------------------------------
# scaled


def scaled(c: Compressor) -> VectorCompressor:
    """The unbiased compressor ``c`` shrunk by :math:`1/(\\omega + 1)`: contractive.

    Contractive with :math:`\\alpha = 1/(\\omega + 1)`, where :math:`\\omega` is ``c.omega(d)``
    (the scaling lemma); biased. Bits: those of ``c`` (same payload; the receiver rescales).

    .. math::

       \\mathbb{E}\\Big\\|\\frac{C(x)}{\\omega + 1} - x\\Big\\|^2
       = \\frac{\\mathbb{E}\\|C(x)\\|^2}{(\\omega + 1)^2} - \\frac{2\\|x\\|^2}{\\omega + 1}
         + \\|x\\|^2
       \\le \\Big(1 - \\frac{1}{\\omega + 1}\\Big)\\|x\\|^2 ,

    using :math:`\\mathbb{E} C(x) = x` and
    :math:`\\mathbb{E}\\|C(x)\\|^2 \\le (\\omega+1)\\|x\\|^2`.
    For scaled Rand-K this is the unscaled mask, :math:`\\alpha = K/d`. A sparsifier stays a
    sparsifier (same ``kept_fn``; the raw kept values are sent and the decoder rescales), so
    :func:`compose` can quantise its kept values.

    Args:
      c: an unbiased compressor with a variance parameter ω.

    Returns:
      A :class:`~jaxdist.compressors.Compressor` with ``alpha(d) = 1 / (c.omega(d) + 1)``.

    Raises:
      TypeError: if ``c`` is not a :class:`~jaxdist.compressors.Compressor`.
      ValueError: if ``c`` is biased or has no ω (e.g. stochastic rounding), or is per_leaf.

    Examples:
      >>> from jaxdist.compressors import rand_k, scaled
      >>> scaled(rand_k(10)).alpha(100)  # 1 / (omega + 1) = K / d
      0.1
    """
    c = _require_compressor(c, "c")
    _require_unbiased(c, "c", "scaled")

    def factor(d: int, dtype: Any) -> jax.Array:
        return jnp.asarray(1.0 / (c.omega_fn(d) + 1.0), dtype=dtype)

    def encode(key, v, shape, worker=None):
        return c.encode_vec(key, v, shape, worker)

    def decode(key, payload, d, dtype, shape, worker=None):
        return c.decode_vec(key, payload, d, dtype, shape, worker) * factor(d, dtype)

    def compress(key, v, shape, worker=None):
        return c.compress_vec(key, v, shape, worker) * factor(v.shape[0], v.dtype)

    common = dict(
        name=f"scaled({c.name})",
        config=config("scaled", c=c),
        encode_fn=encode,
        decode_fn=decode,
        compress_fn=compress,
        bits_fn=c.bits_at,
        bits_uses_shape=True,
        alpha_fn=lambda d: 1.0 / (c.omega_fn(d) + 1.0),
        unbiased=False,
        shared_key=c.shared_key,
        deterministic=c.deterministic,
        needs_axis=c.needs_axis,
        axis_name=c.axis_name,
        check_fn=c.check,
    )
    if isinstance(c, Sparsifier):
        # an unbiased projection is the identity, which scaling keeps a projection
        return Sparsifier(**common, kept_fn=c.kept_fn, projection=c.projection)
    return VectorCompressor(**common)


# ---------------------------------------------------------------------------------------------
# induced


def induced(biased: Compressor, unbiased: Compressor) -> VectorCompressor:
    """The induced compressor :math:`C(x) = C_1(x) + C_2(x - C_1(x))`: unbiased.

    Unbiased with :math:`\\omega = \\omega_2 (1 - \\alpha_1)`, where :math:`C_1` = ``biased``
    is in :math:`B(\\alpha_1)` and :math:`C_2` = ``unbiased`` is in :math:`U(\\omega_2)`, both
    at the dimension :math:`d`. Bits: the sum of the two messages (both are sent).

    With :math:`r = x - C_1(x)` and :math:`C_2`'s key independent of :math:`C_1`'s,
    :math:`\\mathbb{E}[C(x) \\mid C_1(x)] = C_1(x) + r = x` and

    .. math::

       \\mathbb{E}\\|C(x) - x\\|^2 = \\mathbb{E}\\|C_2(r) - r\\|^2
       \\le \\omega_2\\,\\mathbb{E}\\|r\\|^2 \\le \\omega_2 (1 - \\alpha_1)\\|x\\|^2 .

    For example, Top-K then Rand-K' of the residual has :math:`\\omega = (d/K' - 1)(1 - K/d)`,
    far below the :math:`d/K' - 1` of Rand-K' alone when the top entries carry most of the
    energy.

    Args:
      biased: the contractive compressor :math:`C_1` (it needs an ``alpha``).
      unbiased: the unbiased compressor :math:`C_2` applied to the residual.

    Returns:
      A :class:`~jaxdist.compressors.Compressor` whose payload is
      ``{"biased": message of C1, "unbiased": message of C2}``.

    Raises:
      TypeError: if an argument is not a :class:`~jaxdist.compressors.Compressor`.
      ValueError: if ``biased`` has no contraction parameter α, ``unbiased`` is biased or
        has no ω, or either is per_leaf.

    Examples:
      >>> from jaxdist.compressors import induced, rand_k, top_k
      >>> round(induced(top_k(10), rand_k(20)).omega(100), 12)  # (100/20 - 1)(1 - 10/100)
      3.6

    References:
      Horváth, Richtárik, `A Better Alternative to Error Feedback for Communication-Efficient
      Distributed Learning <https://arxiv.org/abs/2006.11077>`_, 2020.
    """
    c1 = _require_compressor(biased, "biased")
    c2 = _require_compressor(unbiased, "unbiased")
    if c1.alpha_fn is None:
        raise ValueError(
            f"induced needs a contractive biased compressor with a parameter alpha; "
            f"biased={c1.name} has none"
        )
    _require_unbiased(c2, "unbiased", "induced")
    needs_axis, axis_name = _axis(c1, c2)

    def check(d, shape):
        c1.check(d, shape)
        c2.check(d, shape)

    def encode(key, v, shape, worker=None):
        k1, k2 = _split(key)
        p1 = c1.encode_vec(k1, v, shape, worker)
        y1 = c1.decode_vec(k1, p1, v.shape[0], v.dtype, shape, worker)
        return {"biased": p1, "unbiased": c2.encode_vec(k2, v - y1, shape, worker)}

    def decode(key, payload, d, dtype, shape, worker=None):
        k1, k2 = _split(key)
        y1 = c1.decode_vec(k1, payload["biased"], d, dtype, shape, worker)
        return y1 + c2.decode_vec(k2, payload["unbiased"], d, dtype, shape, worker)

    def bits(d, dtype, shape):
        return c1.bits_at(d, dtype, shape) + c2.bits_at(d, dtype, shape)

    def omega_fn(d):
        a1 = c1.alpha_at(d)
        if a1 is None:
            return None
        return c2.omega_fn(d) * (1.0 - a1)

    return VectorCompressor(
        name=f"induced({c1.name}, {c2.name})",
        config=config("induced", biased=c1, unbiased=c2),
        encode_fn=encode,
        decode_fn=decode,
        bits_fn=bits,
        bits_uses_shape=True,
        omega_fn=omega_fn,
        unbiased=True,
        shared_key=c1.shared_key or c2.shared_key,
        deterministic=c1.deterministic and c2.deterministic,
        needs_axis=needs_axis,
        axis_name=axis_name,
        check_fn=check,
    )


# ---------------------------------------------------------------------------------------------
# top_k_quantized


def top_k_quantized(k: int, quantizer: Compressor) -> VectorCompressor:
    """Top-K followed by a rescaled unbiased quantiser of the kept values: contractive.

    Contractive with :math:`\\alpha = K / (d(\\omega + 1))`, where :math:`\\omega` is the
    quantiser's ``omega(K)`` on the :math:`K` kept values. Bits:
    ``quantizer.bits(K) + K * ceil(log2 d)`` (Top-K's index list plus the quantised values).

    .. math::

       C(x) = \\frac{Q(\\mathrm{Top}_K(x))}{\\omega + 1} .

    Proof: with :math:`T = \\mathrm{Top}_K(x)`, :math:`T` and :math:`x - T` have disjoint
    supports, so
    :math:`\\mathbb{E}\\|C(x) - x\\|^2 = \\mathbb{E}\\|Q(T)/(\\omega+1) - T\\|^2 + \\|x - T\\|^2
    \\le (1 - \\tfrac{1}{\\omega+1})\\|T\\|^2 + \\|x\\|^2 - \\|T\\|^2
    \\le (1 - \\tfrac{K}{d(\\omega+1)})\\|x\\|^2`, using :func:`scaled` and
    :math:`\\|T\\|^2 \\ge (K/d)\\|x\\|^2`. It is ``compose(scaled(quantizer), top_k(k))``.

    Args:
      k: the number :math:`K` of coordinates kept, :math:`1 \\le K \\le d`.
      quantizer: an unbiased compressor with a variance parameter ω (``natural()``,
        ``qsgd(s)``, ``ternary()``, ...).

    Returns:
      A :class:`~jaxdist.compressors.Compressor` (deterministic iff the quantiser is).

    Raises:
      TypeError: if ``quantizer`` is not a :class:`~jaxdist.compressors.Compressor`.
      ValueError: if ``k < 1`` (or ``k > d`` at trace time), or ``quantizer`` is biased or
        has no ω.

    Examples:
      >>> from jaxdist.compressors import natural, top_k_quantized
      >>> c = top_k_quantized(10, natural())
      >>> round(c.alpha(100), 6)  # 10 / (100 * 9/8)
      0.088889
      >>> c.bits(100)  # 9 * 10 bits of values + 10 * ceil(log2 100) bits of indices
      160

    References:
      Beznosikov, Horváth, Richtárik, Safaryan, `On Biased Compression for Distributed
      Learning <https://arxiv.org/abs/2002.12410>`_, 2020.
    """
    from jaxdist.compressors._sparsification import top_k

    k = check_int("k", k, low=1)
    quantizer = _require_compressor(quantizer, "quantizer")
    _require_unbiased(quantizer, "quantizer", "top_k_quantized")
    sparsifier = top_k(k)
    base = compose(scaled(quantizer), sparsifier)

    def alpha_fn(d):
        kk = int(sparsifier.kept_fn(d))
        return kk / (d * (quantizer.omega_fn(kk) + 1.0))

    return dataclasses.replace(
        base,
        name=f"top_k_quantized(k={k}, {quantizer.name})",
        config=config("top_k_quantized", k=k, quantizer=quantizer),
        alpha_fn=alpha_fn,
    )
