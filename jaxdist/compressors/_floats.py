"""Compressors that act on the floating-point format itself: natural compression, mantissa
truncation and low-precision casts.

They work coordinate by coordinate on the bits of the input (``bitcast`` to an unsigned
integer, read the sign, exponent and mantissa fields), so they are exact and do not depend on
how the backend treats subnormal numbers in arithmetic (XLA:CPU flushes them to zero).

The 9-bit code of :func:`natural` and :func:`truncate` (12 bits for float64, 6 for float16)
is ``sign << e | exponent``. Its ``2 · 2^e`` values are used as follows:

* exponent 0 with sign 0 is zero (``-0.0`` is sent as ``+0.0``);
* exponent 0 with sign 1, which would be "negative zero", is the **NaN** code;
* exponents ``1 ... 2^e - 2`` are the powers of two of the normal range;
* the all-ones exponent is ``±inf``.

So ``inf`` and ``NaN`` survive compression and stay distinguishable.

Gradients (``jax.grad`` through ``compress``): :func:`natural` and :func:`truncate` work on the
bits (``bitcast``), which is piecewise constant, so their gradient is **zero** (no
straight-through estimate); :func:`cast` is a rounding ``astype``, whose gradient rounds the
cotangent to the wire dtype and back (straight-through).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdist.compressors._base import VectorCompressor, config, float_bits, pack_uint, unpack_uint

__all__ = ["natural", "truncate", "cast", "float_layout", "exponent_bits"]

# (total bits, exponent bits, explicit mantissa bits) of the formats the bit-level operators
# understand.
_LAYOUTS = {
    jnp.dtype(jnp.float16): (16, 5, 10),
    jnp.dtype(jnp.bfloat16): (16, 8, 7),
    jnp.dtype(jnp.float32): (32, 8, 23),
    jnp.dtype(jnp.float64): (64, 11, 52),
}
_UINTS = {16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}


def float_layout(dtype, who: str = "this compressor") -> tuple[int, int, int]:
    """``(total bits, exponent bits, mantissa bits)`` of an IEEE-style float dtype.

    Args:
      dtype: float16, bfloat16, float32 or float64.
      who: name used in the error message.

    Returns:
      The three field widths, e.g. ``(32, 8, 23)`` for float32.

    Raises:
      TypeError: for any other dtype (float8 formats have no infinities and other layouts).
    """
    dt = jnp.dtype(dtype)
    if dt not in _LAYOUTS:
        raise TypeError(
            f"{who} supports float16, bfloat16, float32 and float64 inputs; got dtype {dt}"
        )
    return _LAYOUTS[dt]


def exponent_bits(dtype) -> int:
    """Bits of the sign + exponent code of one coordinate: 9 (float32, bfloat16), 12
    (float64), 6 (float16).

    Args:
      dtype: float16, bfloat16, float32 or float64.

    Returns:
      ``1 + (exponent width)``.
    """
    return 1 + float_layout(dtype)[1]


def _fields(v: jax.Array):
    """Sign, biased exponent and mantissa fields of ``v`` as unsigned integers."""
    width, ebits, mbits = float_layout(v.dtype)
    u = _UINTS[width]
    b = jax.lax.bitcast_convert_type(v, u)
    neg = b >> u(width - 1)
    exp = (b >> u(mbits)) & u((1 << ebits) - 1)
    mant = b & u((1 << mbits) - 1)
    return neg, exp, mant


def _canonical(neg, exp, is_nan, dtype):
    """The sign/exponent code: zero is +0, NaN is "negative zero" (sign 1, exponent 0)."""
    u = _UINTS[float_layout(dtype)[0]]
    one, zero = u(1), u(0)
    code_neg = jnp.where(is_nan, one, jnp.where(exp == zero, zero, neg))
    code_exp = jnp.where(is_nan, zero, exp)
    return code_neg, code_exp


def _from_codes(code_neg, code_exp, dtype):
    """Decodes sign/exponent codes into ``±2^(exp - bias)``, ``±0``, ``±inf`` or NaN."""
    width, ebits, mbits = float_layout(dtype)
    u = _UINTS[width]
    code_neg = code_neg.astype(u)
    code_exp = code_exp.astype(u)
    bits = (code_neg << u(width - 1)) | (code_exp << u(mbits))
    nan_bits = u((((1 << ebits) - 1) << mbits) | (1 << (mbits - 1)))  # positive quiet NaN
    bits = jnp.where((code_neg == u(1)) & (code_exp == u(0)), nan_bits, bits)
    return jax.lax.bitcast_convert_type(bits, jnp.dtype(dtype))


def _pack_codes(code_neg, code_exp, dtype):
    ebits = float_layout(dtype)[1]
    code = (code_neg.astype(jnp.uint32) << jnp.uint32(ebits)) | code_exp.astype(jnp.uint32)
    return pack_uint(code, ebits + 1)


def _unpack_codes(packed, d, dtype):
    ebits = float_layout(dtype)[1]
    code = unpack_uint(packed, d, ebits + 1)
    return code >> jnp.uint32(ebits), code & jnp.uint32((1 << ebits) - 1)


# ---------------------------------------------------------------------------------------------
# Natural compression.


def _natural_codes(key, v):
    width, ebits, mbits = float_layout(v.dtype, "natural()")
    u = _UINTS[width]
    neg, exp, mant = _fields(v)
    emax = u((1 << ebits) - 1)
    # One uniform integer per coordinate; its top `mbits` bits are compared with the
    # mantissa, so P(round up) = mant / 2^mbits = (|t| - lo) / lo exactly.
    r = jax.random.bits(key, v.shape, u) >> u(width - mbits)
    up = (r < mant).astype(u)
    is_nan = (exp == emax) & (mant != u(0))
    return _canonical(neg, exp + up, is_nan, v.dtype)


def natural() -> VectorCompressor:
    r"""Natural compression :math:`C_{\rm nat}`: unbiased stochastic rounding to a power of two.

    Unbiased with ω = 1/8 (Horváth et al. 2019, Thm 3). Bits: sign + exponent per coordinate,
    ``9·d`` for float32 and bfloat16, ``12·d`` for float64, ``6·d`` for float16; no norm is sent.

    .. math::

      C_{\rm nat}(t) = \operatorname{sign}(t)\cdot
      \begin{cases} 2^a & \text{with probability } (2^{a+1} - |t|)/2^a, \\
                    2^{a+1} & \text{otherwise,} \end{cases}
      \qquad 2^a \le |t| < 2^{a+1},

    and :math:`C_{\rm nat}(0) = 0`. Writing :math:`|t| = 2^a(1 + f)`, the coordinate's variance
    is :math:`4^a f(1-f)`, i.e. a fraction :math:`f(1-f)/(1+f)^2 \le 1/8` of :math:`t^2`, with
    equality at :math:`f = 1/3` (:math:`|t| = \tfrac43 2^a`); at :math:`|t| = 1.5 \cdot 2^a` it
    is 1/9.

    Implementation: the input is bitcast to an unsigned integer and one uniform integer per
    coordinate is compared with the mantissa field, so the probability of rounding up is the
    mantissa fraction *exactly*. The output has the input's dtype.

    Edge cases (all tested):

    * **zeros** stay zero (``-0.0`` becomes ``+0.0``);
    * **subnormals** ``0 < |t| < 2^{e_min}`` (the smallest normal power of two, ``2^-126`` in
      float32) are rounded to 0 or ``±2^{e_min}`` with probability ``|t| / 2^{e_min}`` of the
      latter: still unbiased, but the variance ``|t|(2^{e_min} - |t|)`` is absolute, not
      relative, so the ω = 1/8 bound holds for inputs whose nonzero entries are normal numbers
      (the sign + exponent code has no room for subnormal powers of two);
    * **overflow**: ``|t|`` in the top binade (above ``2^{e_max}``) rounds up, with probability
      equal to its mantissa fraction, to ``±inf``;
    * **non-finite**: ``±inf`` stays ``±inf`` and NaN stays NaN (sent as the "negative zero"
      code, see the module docstring).

    Returns:
      A :class:`~jaxdist.compressors.Compressor` (unbiased, ``omega(d) = 1/8``).

    References:
      Horváth, Ho, Horváth, Sahu, Canini, Richtárik, `Natural Compression for Distributed
      Deep Learning <https://arxiv.org/abs/1905.10988>`_, 2019.
    """

    def encode(key, v, shape):
        del shape
        return {"codes": _pack_codes(*_natural_codes(key, v), v.dtype)}

    def decode(key, payload, d, dtype, shape):
        del key, shape
        return _from_codes(*_unpack_codes(payload["codes"], d, dtype), dtype)

    def compress(key, v, shape):
        del shape
        return _from_codes(*_natural_codes(key, v), v.dtype)

    return VectorCompressor(
        name="natural()",
        config=config("natural"),
        encode_fn=encode,
        decode_fn=decode,
        compress_fn=compress,
        bits_fn=lambda d, dtype: d * exponent_bits(dtype),
        omega_fn=lambda d: 1.0 / 8.0,
        unbiased=True,
    )


# ---------------------------------------------------------------------------------------------
# Mantissa truncation.


def _truncate_codes(v):
    width, ebits, _ = float_layout(v.dtype, "truncate()")
    u = _UINTS[width]
    neg, exp, mant = _fields(v)
    is_nan = (exp == u((1 << ebits) - 1)) & (mant != u(0))
    return _canonical(neg, exp, is_nan, v.dtype)


def truncate() -> VectorCompressor:
    r"""Mantissa truncation: :math:`C(t) = \operatorname{sign}(t)\, 2^{\lfloor \log_2 |t| \rfloor}`.

    Biased, deterministic, contractive with α = 3/4: :math:`|C(t) - t| < |t|/2`, so
    :math:`\|C(x) - x\|^2 < \tfrac14 \|x\|^2`; the supremum 1/4 is approached as the mantissa
    tends to 1 (:math:`t \to 2^{a+1}`). Bits: sign + exponent per coordinate, ``9·d`` for
    float32 and bfloat16, ``12·d`` for float64, ``6·d`` for float16.

    Edge cases (all tested):

    * zeros stay zero (``-0.0`` becomes ``+0.0``);
    * **subnormals** become 0 (the code has no subnormal powers of two), so α = 3/4 holds for
      inputs in the normal range (the error of a subnormal coordinate is below
      ``2^{2 e_min}``, e.g. ``2^-252`` in float32);
    * **non-finite**: ``±inf`` stays ``±inf`` and NaN stays NaN: the all-ones exponent is kept
      for infinities and NaN gets the otherwise unused "negative zero" code, so the two *can*
      be told apart with ``1 + e`` bits.

    Returns:
      A :class:`~jaxdist.compressors.Compressor` (deterministic, ``alpha(d) = 3/4``).

    References:
      Horváth, Ho, Horváth, Sahu, Canini, Richtárik, `Natural Compression for Distributed
      Deep Learning <https://arxiv.org/abs/1905.10988>`_, 2019 (:func:`natural` is the
      unbiased, randomized counterpart of this operator).
    """

    def encode(key, v, shape):
        del key, shape
        return {"codes": _pack_codes(*_truncate_codes(v), v.dtype)}

    def decode(key, payload, d, dtype, shape):
        del key, shape
        return _from_codes(*_unpack_codes(payload["codes"], d, dtype), dtype)

    def compress(key, v, shape):
        del key, shape
        return _from_codes(*_truncate_codes(v), v.dtype)

    return VectorCompressor(
        name="truncate()",
        config=config("truncate"),
        encode_fn=encode,
        decode_fn=decode,
        compress_fn=compress,
        bits_fn=lambda d, dtype: d * exponent_bits(dtype),
        alpha_fn=lambda d: 0.75,
        deterministic=True,
    )


# ---------------------------------------------------------------------------------------------
# Low-precision cast.


def _check_cast_dtype(dtype) -> np.dtype:
    if dtype is None or isinstance(dtype, bool | int | float):
        raise TypeError(f"cast: dtype must be a floating-point dtype, got dtype={dtype!r}")
    try:
        target = jnp.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"cast: dtype must be a floating-point dtype, got dtype={dtype!r}") from e
    if not jnp.issubdtype(target, jnp.floating):
        raise ValueError(
            f"cast: dtype must be a floating-point dtype (bfloat16, float16, ...), "
            f"got dtype={target}"
        )
    return target


def cast(dtype) -> VectorCompressor:
    r"""Low-precision cast: round to ``dtype`` (round to nearest even) and back.

    Biased, deterministic, contractive with α = 1 − u², where u is the unit roundoff of the
    target (2^-8 for bfloat16, 2^-11 for float16): :math:`|{\rm fl}(t) - t| \le u|t|` for every
    ``t`` in the target's **normal range**, hence :math:`\|C(x) - x\|^2 \le u^2\|x\|^2`.
    Bits: ``d`` times the target width (``16·d`` for bfloat16 and float16).

    Outside the normal range the bound fails: float16 overflows to ``±inf`` above 65504 and its
    subnormals (below ``2^-14``) keep only an absolute precision of ``2^-25``; bfloat16 has the
    float32 exponent range, so from float32 it only loses subnormal precision. NaN stays NaN and
    ``±inf`` stays ``±inf``.

    Args:
      dtype: the wire dtype, a floating-point type no wider than the inputs it will be
        applied to (checked at trace time); typically ``jnp.bfloat16`` or ``jnp.float16``.

    Returns:
      A :class:`~jaxdist.compressors.Compressor` (deterministic, ``alpha(d) = 1 - u^2``).

    Raises:
      TypeError: if ``dtype`` is not a dtype at all (``None``, a number, an unknown name).
      ValueError: if ``dtype`` is not a floating-point dtype, or (when compressing / asking
        for bits) it is wider than the input dtype.
    """
    target = _check_cast_dtype(dtype)
    u = float(jnp.finfo(target).eps) / 2.0

    def check(dtype):
        dtype = jnp.dtype(dtype)
        if target.itemsize > dtype.itemsize:
            raise ValueError(
                f"cast(dtype={target}): the target dtype must be no wider than the input "
                f"dtype {dtype}"
            )

    def encode(key, v, shape):
        del key, shape
        check(v.dtype)
        return {"values": v.astype(target)}

    def decode(key, payload, d, dtype, shape):
        del key, d, shape
        check(dtype)
        return payload["values"].astype(dtype)

    def compress(key, v, shape):
        del key, shape
        check(v.dtype)
        return v.astype(target).astype(v.dtype)

    def bits(d, dtype):
        check(dtype)
        return d * float_bits(target)

    return VectorCompressor(
        name=f"cast(dtype={target})",
        config=config("cast", dtype=target),
        encode_fn=encode,
        decode_fn=decode,
        compress_fn=compress,
        bits_fn=bits,
        alpha_fn=lambda d: 1.0 - u * u,
        deterministic=True,
    )
