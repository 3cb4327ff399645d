"""Quantization compressors: norm + sign + levels (ternary, TernGrad, QSGD, random and natural
dithering), stochastic rounding to a grid, and sign compression.

Conventions shared by the norm-based operators (:func:`ternary`, :func:`terngrad`,
:func:`qsgd`, :func:`dither`, :func:`natural_dither`, :func:`scaled_sign`):

* The scale (a norm of ``x``) is sent in the **input dtype**, and the levels are computed from
  the value actually sent, so the operator is unbiased with respect to what the receiver sees.
  Arithmetic runs in float32 (float64 for float64 inputs); the decoded values are rounded to
  the input dtype, which for bfloat16/float16 adds a rounding error of relative size 2^-8 /
  2^-11 to the levels ``norm · ℓ/s`` (exactly representable for ternary and natural dithering).
* The norm is computed without overflow (scaled by the largest entry) and is never below
  ``max_i |x_i|``, so every probability is in [0, 1]. Its sum is taken in a fixed pairwise
  order, so the output is bitwise the same under jit, eager execution and vmap.
* ``x = 0`` gives 0 (no division by zero).
* **Non-finite inputs**: if the sent scale is not finite (an ``inf``/``NaN`` entry, or a norm
  that overflows the input dtype, e.g. float16 above 65504) the output is **all NaN**.
* Subnormal inputs may be flushed to zero by the backend's arithmetic (XLA:CPU does).
* Bernoulli draws use one 32-bit uniform integer per coordinate (64-bit for float64):
  ``P(round up) = round(p · 2^32) / 2^32``, exact for ``p >= 2^-9`` and within ``2^-33``
  otherwise.
* **Pytrees** are one flattened vector: one norm for all leaves (wrap in
  :func:`~jaxdist.compressors.per_leaf` for one norm per leaf).
* **Gradients** (``jax.grad`` through ``compress``, key fixed): the output is
  ``‖x‖_p · u(x)`` with piecewise-constant levels ``u``, so the gradient flows through the sent
  norm only, ``⟨g, C(x)⟩/‖x‖_p · ∇‖x‖_p`` for the cotangent ``g``; the rounding itself has zero
  gradient. :func:`stochastic_round` and :func:`sign` (no norm) have a **zero** gradient.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxdist._validate import check_choice, check_int, check_number
from jaxdist.compressors._base import (
    VectorCompressor,
    compute_dtype,
    config,
    float_bits,
    pack_uint,
    unpack_uint,
)

__all__ = [
    "ternary",
    "terngrad",
    "qsgd",
    "dither",
    "natural_dither",
    "stochastic_round",
    "sign",
    "scaled_sign",
    "qsgd_tight_omega",
    "dither_tight_omega",
]

_MAX_QSGD_LEVELS = 2**31 - 1  # 1 + ceil(log2(s + 1)) <= 32 bits per coordinate
_MAX_NATURAL_LEVELS = 126  # the smallest level 2^(1-s) must be a normal float32


# ---------------------------------------------------------------------------------------------
# Shared helpers.


def _uint_for(cdtype):
    return jnp.uint64 if cdtype == jnp.float64 else jnp.uint32


def _random_uints(key, shape, cdtype):
    """One uniform unsigned integer per coordinate: 32 bits (64 for float64 arithmetic)."""
    return jax.random.bits(key, shape, _uint_for(cdtype))


def _threshold(p, cdtype):
    """``round(p · 2^W)`` as a W-bit unsigned integer, for ``0 <= p < 1`` (NaN counts as 0).

    ``r < _threshold(p)`` with ``r`` uniform on W bits is a Bernoulli(p) draw: exact when
    ``p · 2^W`` is an integer (``p >= 2^-9`` in float32), else off by at most ``2^-(W+1)``.
    """
    w = 64 if cdtype == jnp.float64 else 32
    p = jnp.where(p > 0, p, 0)
    return jnp.round(p * (2.0**w)).astype(_uint_for(cdtype))


def _pairwise_sum(v):
    """Sum of a 1-D array in a fixed pairwise order, using elementwise adds only.

    XLA may sum a ``reduce`` in any order, and does so differently in a fused (jit) program and
    in eager execution; elementwise adds are never reassociated. The select in front (an
    identity, NaN stays NaN) keeps a product that feeds the first adds from being contracted
    into a fused multiply-add inside a jit fusion but not in eager execution (XLA:CPU does
    contract; an optimization barrier or a bitcast round trip is simplified away). The sum is
    then bitwise the same under jit, eager execution, vmap and any fusion, and accurate to
    O(log d) roundings.
    """
    v = jnp.where(v == v, v, jnp.nan)
    leftovers = []
    while v.shape[0] > 1:
        if v.shape[0] % 2:
            leftovers.append(v[-1])
            v = v[:-1]
        h = v.shape[0] // 2
        v = v[:h] + v[h:]
    total = v[0]
    for extra in reversed(leftovers):  # smallest partial sums first
        total = total + extra
    return total


def _lp_norm(a, p):
    """The l_p norm of ``a >= 0`` (compute dtype), scaled by ``max a`` to avoid overflow.

    The result is ``>= max a`` exactly, so ``a / norm <= 1``. An ``inf`` entry gives ``inf``,
    a NaN entry gives NaN, ``a = 0`` gives 0.
    """
    m = jnp.max(a)
    if math.isinf(p):
        return m
    ok = (m > 0) & jnp.isfinite(m)
    ms = jnp.where(ok, m, 1)
    b = a * (1 / ms)
    if p == 1:
        n = ms * _pairwise_sum(b)
    elif p == 2:
        n = ms * jnp.sqrt(_pairwise_sum(b * b))
    else:
        n = ms * _pairwise_sum(b**p) ** (1.0 / p)
    return jnp.where(ok, jnp.maximum(n, ms), m)


def _check_scalar(name: str, value, **bounds) -> float:
    """A concrete real scalar within ``bounds`` (see :func:`jaxdist._validate.check_number`)."""
    check_number(name, value, allow_traced=False, **bounds)
    if np.ndim(value) != 0:
        raise TypeError(f"{name} must be a single number, got an array of shape {np.shape(value)}")
    return float(np.asarray(value))


def _check_p(p) -> float:
    """The norm index ``p >= 1`` (``math.inf`` allowed)."""
    return _check_scalar("p", p, low=1.0)


def _check_coding(coding, allowed: tuple[str, ...]) -> str:
    return check_choice("coding", coding, allowed)


def _level_bits(s: int) -> int:
    """ceil(log2(s + 1)): bits of a level in {0, ..., s}."""
    return int(s).bit_length()


def _norm_and_ratio(v, p):
    """The sent norm (input dtype) and ``|x_i| / norm`` in [0, 1] in the compute dtype (0 where
    the norm is 0 or not finite). A true division, so the largest entry of an l_inf-scaled
    vector gets exactly 1."""
    c = compute_dtype(v.dtype)
    a = jnp.abs(v.astype(c))
    norm = _lp_norm(a, p).astype(v.dtype)
    nc = norm.astype(c)
    ok = (nc > 0) & jnp.isfinite(nc)
    ratio = jnp.where(ok, jnp.minimum(a / jnp.where(ok, nc, 1), 1), 0)
    return norm, ratio


def _finish(mag, neg, nc, dtype):
    out = jnp.where(neg, -mag, mag)
    return jnp.where(jnp.isfinite(nc), out, jnp.nan).astype(dtype)


# ---------------------------------------------------------------------------------------------
# Random (standard) dithering: ternary, TernGrad, QSGD.


def _dither_levels(key, v, s: int, p: float):
    """Norm (input dtype), negative-sign mask and levels in {0, ..., s} (uint32)."""
    c = compute_dtype(v.dtype)
    norm, ratio = _norm_and_ratio(v, p)
    y = ratio * s  # s |x_i| / ||x||, in [0, s]
    lo = jnp.floor(y)
    up = _random_uints(key, v.shape, c) < _threshold(y - lo, c)
    level = lo.astype(jnp.uint32) + up.astype(jnp.uint32)
    level = jnp.minimum(level, jnp.uint32(s))  # float32 cannot represent every s > 2^24
    neg = (v < 0) & (level > 0)
    return norm, neg, level


def _dither_values(norm, neg, level, s: int, dtype):
    c = compute_dtype(dtype)
    nc = norm.astype(c)
    # Multiply by 1/s rounded once (not `nc / s`: XLA rewrites a division by a constant inside
    # jit but not in eager execution, which would break bitwise reproducibility).
    mag = level.astype(c) * (nc * (1.0 / s))
    return _finish(mag, neg.astype(bool), nc, dtype)


def _dither_compressor(name, cfg, s, p, omega_fn, *, coding="fixed"):
    width = _level_bits(s)

    def encode(key, v, shape):
        del shape
        norm, neg, level = _dither_levels(key, v, s, p)
        if coding == "base3":
            return {"norm": norm, "trits": _pack_trits(neg, level)}
        if coding == "2bit":
            return {"norm": norm, "sign": pack_uint(neg, 1), "mask": pack_uint(level, 1)}
        return {"norm": norm, "sign": pack_uint(neg, 1), "level": pack_uint(level, width)}

    def decode(key, payload, d, dtype, shape):
        del key, shape
        if coding == "base3":
            neg, level = _unpack_trits(payload["trits"], d)
        elif coding == "2bit":
            neg = unpack_uint(payload["sign"], d, 1)
            level = unpack_uint(payload["mask"], d, 1)
        else:
            neg = unpack_uint(payload["sign"], d, 1)
            level = unpack_uint(payload["level"], d, width)
        return _dither_values(payload["norm"], neg, level, s, dtype)

    def compress(key, v, shape):
        del shape
        return _dither_values(*_dither_levels(key, v, s, p), s, v.dtype)

    def bits(d, dtype):
        if coding == "base3":
            return float_bits(dtype) + 8 * (-(-d // 5))
        return float_bits(dtype) + d * (1 + width)

    return VectorCompressor(
        name=name,
        config=cfg,
        encode_fn=encode,
        decode_fn=decode,
        compress_fn=compress,
        bits_fn=bits,
        omega_fn=omega_fn,
        unbiased=True,
    )


_POW3 = np.array([[1, 3, 9, 27, 81]], np.uint32)  # 3^j, shape (1, 5)


def _pack_trits(neg, level):
    """Five trits (0, +1 -> 1, -1 -> 2) per byte: byte = sum_j t_j 3^j <= 242."""
    t = level.astype(jnp.uint32) + neg.astype(jnp.uint32)
    d = t.shape[0]
    groups = -(-d // 5)
    t = jnp.pad(t, (0, 5 * groups - d)).reshape(groups, 5)
    byte = jnp.sum(t * jnp.asarray(_POW3), axis=1, dtype=jnp.uint32)
    return pack_uint(byte, 8)


def _unpack_trits(packed, d):
    groups = -(-d // 5)
    byte = unpack_uint(packed, groups, 8)
    t = ((byte[:, None] // jnp.asarray(_POW3)) % jnp.uint32(3)).reshape(-1)[:d]
    return t == jnp.uint32(2), (t != jnp.uint32(0)).astype(jnp.uint32)


def ternary(*, coding: str = "2bit") -> VectorCompressor:
    r"""Three-level ℓ2 quantization: send ``||x||_2`` and, per coordinate, a sign and a coin.

    Unbiased with the **tight** ω = √d − 1. Bits: ``b + 2d`` (``coding="2bit"``: a sign bit
    and a mask bit per coordinate) or ``b + 8⌈d/5⌉`` (``coding="base3"``: five trits per byte,
    close to the entropy bound ``d log2 3``), with ``b`` the bits of the input dtype (the norm).

    .. math::

      C(x)_i = \|x\|_2 \operatorname{sign}(x_i)\, \xi_i, \qquad
      \xi_i \sim \mathrm{Bernoulli}(|x_i| / \|x\|_2).

    The variance is exactly
    :math:`\mathbb{E}\|C(x) - x\|^2 = (\|x\|_1/\|x\|_2 - 1)\|x\|_2^2 \le (\sqrt d - 1)\|x\|^2`,
    with equality when all :math:`|x_i|` are equal, so √d − 1 is the exact worst case. QSGD's
    Lemma 3.1 (Alistarh et al.) gives √d at s = 1: a valid but not tight bound. This is
    ``qsgd(1)`` (same output for the same key). The expected number of nonzeros is
    :math:`\|x\|_1/\|x\|_2 \le \sqrt d`.

    Non-finite inputs give an all-NaN output; ``x = 0`` gives 0 (see the module docstring).

    Args:
      coding: ``"2bit"`` (default) or ``"base3"``; both decode to the same vector.

    Returns:
      A :class:`~jaxdist.compressors.Compressor` (unbiased, ``omega(d) = sqrt(d) - 1``).

    Raises:
      TypeError: if ``coding`` is not a string.
      ValueError: if ``coding`` is not one of the two codings.

    References:
      Alistarh, Grubic, Li, Tomioka, Vojnovic, `QSGD: Communication-Efficient SGD via Gradient
      Quantization and Encoding <https://arxiv.org/abs/1610.02132>`_, 2017.
    """
    coding = _check_coding(coding, ("2bit", "base3"))
    return _dither_compressor(
        f"ternary(coding={coding!r})",
        config("ternary", coding=coding),
        1,
        2.0,
        lambda d: math.sqrt(d) - 1.0,
        coding=coding,
    )


def terngrad() -> VectorCompressor:
    r"""TernGrad: ternary quantization with the ℓ∞ scale.

    Unbiased with the tight ω = (√d − 1)/2. Bits: ``b + 2d`` (the scale ``||x||_∞`` in the
    input dtype, a sign bit and a mask bit per coordinate).

    .. math::

      C(x)_i = \|x\|_\infty \operatorname{sign}(x_i)\, \xi_i, \qquad
      \xi_i \sim \mathrm{Bernoulli}(|x_i| / \|x\|_\infty).

    The variance is exactly :math:`\|x\|_1\|x\|_\infty - \|x\|_2^2`; its worst ratio to
    :math:`\|x\|^2` is (√d − 1)/2, attained at :math:`x = (1, t, \dots, t)`,
    :math:`t = 1/(\sqrt d + 1)`. This is ``dither(1, p=inf)`` (same output for the same key).
    Only the quantizer is implemented, not TernGrad's layer-wise scaling or gradient clipping.

    Non-finite inputs give an all-NaN output; ``x = 0`` gives 0.

    Returns:
      A :class:`~jaxdist.compressors.Compressor` (unbiased, ``omega(d) = (sqrt(d) - 1)/2``).

    References:
      Wen, Xu, Yan, Wu, Wang, Chen, Li, `TernGrad: Ternary Gradients to Reduce Communication
      in Distributed Deep Learning <https://arxiv.org/abs/1705.07878>`_, 2017.
    """
    return _dither_compressor(
        "terngrad()",
        config("terngrad"),
        1,
        math.inf,
        lambda d: (math.sqrt(d) - 1.0) / 2.0,
        coding="2bit",
    )


def qsgd_tight_omega(d: int, s: int) -> float:
    """The tight QSGD variance bound ``min(d/(4 s^2), sqrt(d)/s)`` (see :func:`qsgd`).

    Args:
      d: dimension.
      s: number of levels.

    Returns:
      The smallest ω valid for every ``x`` (the first branch is attained).
    """
    return min(d / (4.0 * s * s), math.sqrt(d) / s)


def qsgd(s: int) -> VectorCompressor:
    r"""QSGD with ``s`` uniform levels of ``|x_i| / ||x||_2``.

    Unbiased with ω = min(d/s², √d/s) (Alistarh et al. 2017, Lemma 3.1). Bits (fixed-length
    coding): ``b + d(1 + ⌈log2(s + 1)⌉)``: the norm in the input dtype, then a sign bit and a
    level in {0, ..., s} per coordinate. (The paper's Elias coding is shorter in expectation but
    has a data-dependent length.)

    .. math::

      Q_s(x)_i = \|x\|_2 \operatorname{sign}(x_i)\, \xi_i / s, \qquad
      \xi_i = \ell_i + \mathrm{Bernoulli}(p_i),\quad
      \ell_i = \lfloor s|x_i|/\|x\|_2 \rfloor,\ p_i = s|x_i|/\|x\|_2 - \ell_i.

    The variance is exactly :math:`(\|x\|^2/s^2)\sum_i p_i(1 - p_i)`, so the tight bound is
    :math:`\min(d/(4s^2), \sqrt d/s)` (:func:`qsgd_tight_omega`): the paper's d/s² branch is
    loose by a factor 4, and d/(4s²) is attained when every :math:`|x_i|/\|x\| = (\ell+1/2)/s`.
    ``omega`` returns the paper's value, as the methods' step sizes in the literature assume.
    ``qsgd(1)`` is :func:`ternary`; ``qsgd(s)`` is ``dither(s, p=2)``.

    Non-finite inputs give an all-NaN output; ``x = 0`` gives 0. For ``s > 2^24`` the float32
    arithmetic resolves the levels only approximately.

    Args:
      s: number of levels, an integer in ``[1, 2^31 - 1]``.

    Returns:
      A :class:`~jaxdist.compressors.Compressor` (unbiased).

    Raises:
      TypeError: if ``s`` is not an int (``4.0`` and ``"4"`` are refused).
      ValueError: if ``s`` is out of range.

    References:
      Alistarh, Grubic, Li, Tomioka, Vojnovic, `QSGD: Communication-Efficient SGD via Gradient
      Quantization and Encoding <https://arxiv.org/abs/1610.02132>`_, 2017.
    """
    s = check_int("s", s, low=1, high=_MAX_QSGD_LEVELS)
    return _dither_compressor(
        f"qsgd(s={s})",
        config("qsgd", s=s),
        s,
        2.0,
        lambda d: min(d / float(s * s), math.sqrt(d) / s),
    )


def dither_tight_omega(d: int, s: int, p: float = 2.0) -> float:
    """Tight variance bound of ``dither(s, p)``: ``min(d^(2/r)/(4 s^2), d^(1/r)/s)``, r = min(p, 2).

    Args:
      d: dimension.
      s: number of levels.
      p: the norm.

    Returns:
      The bound; the first branch is attained when every ``|x_i|`` is equal and ``s/d`` (for
      p <= 2: ``s d^(1/p - 1)``) has fractional part 1/2.
    """
    r = min(float(p), 2.0)
    return min(d ** (2.0 / r) / (4.0 * s * s), d ** (1.0 / r) / s)


def dither(s: int, *, p: float = 2.0) -> VectorCompressor:
    r"""Random (standard) dithering :math:`D^{p,s}_{\rm sta}`: ``s`` uniform levels in the ℓ_p norm.

    Unbiased with ω = (d^{1/r}/s)·min(1, d^{1/r}/s), r = min(p, 2). Bits: as :func:`qsgd`,
    ``b + d(1 + ⌈log2(s + 1)⌉)``.

    .. math::

      C(x)_i = \|x\|_p \operatorname{sign}(x_i)\, \xi_i / s, \qquad
      \xi_i = \lfloor y_i \rfloor + \mathrm{Bernoulli}(y_i - \lfloor y_i \rfloor),\quad
      y_i = s|x_i|/\|x\|_p.

    ``dither(s, p=2)`` is :func:`qsgd` and ``dither(1, p=inf)`` is :func:`terngrad` (same
    outputs for the same key; their ω differ: those functions report their own, tighter,
    constants).

    About ω. The variance is exactly :math:`(\|x\|_p/s)^2 \sum_i p_i(1-p_i)` with
    :math:`p_i` the fractional part of :math:`y_i`. Using :math:`p(1-p) \le \min(1/4, y)`,
    :math:`\|x\|_p \le d^{1/r - 1/2}\|x\|_2` and :math:`\|x\|_1 \le \sqrt d\|x\|_2` gives the
    tight bound :math:`\min(d^{2/r}/(4s^2), d^{1/r}/s)` (:func:`dither_tight_omega`), whose
    first branch is attained (all :math:`|x_i|` equal, :math:`y_i = 1/2 \bmod 1`). ``omega``
    returns :math:`(d^{1/r}/s)\min(1, d^{1/r}/s) \ge` that bound. THEORY.md §1.2 (transcribed
    from Horváth et al., Table 1) has :math:`\min(1, d^{1/2}/s)` in the second factor; for p = 2
    the two agree, but for p < 2 and s > √d it is violated (p = 1, d = 64, s = 32, x = 1:
    the variance is :math:`\|x\|^2` while that formula gives :math:`\|x\|^2/2`), so this
    library uses :math:`d^{1/r}` in both places, as in natural dithering's ω.

    Non-finite inputs give an all-NaN output; ``x = 0`` gives 0. The ℓ_1 norm of float16
    inputs overflows above 65504 (output all NaN).

    Args:
      s: number of levels, an integer in ``[1, 2^31 - 1]``.
      p: the norm, a number ``>= 1`` or ``math.inf`` (keyword-only, default 2).

    Returns:
      A :class:`~jaxdist.compressors.Compressor` (unbiased).

    Raises:
      TypeError: if ``s`` is not an int or ``p`` not a real number.
      ValueError: if ``s`` or ``p`` is out of range (or ``p`` is NaN).

    References:
      Horváth, Ho, Horváth, Sahu, Canini, Richtárik, `Natural Compression for Distributed
      Deep Learning <https://arxiv.org/abs/1905.10988>`_, 2019;
      Alistarh et al., `QSGD <https://arxiv.org/abs/1610.02132>`_, 2017.
    """
    s = check_int("s", s, low=1, high=_MAX_QSGD_LEVELS)
    p = _check_p(p)
    r = min(p, 2.0)

    def omega(d):
        a = d ** (1.0 / r) / s
        return a * min(1.0, a)

    return _dither_compressor(f"dither(s={s}, p={p})", config("dither", s=s, p=p), s, p, omega)


# ---------------------------------------------------------------------------------------------
# Natural dithering.


def _natural_dither_levels(key, v, s: int, p: float):
    """Norm, negative-sign mask and level codes k in {0, ..., s}: k = 0 is 0, k >= 1 is
    2^(k - s)."""
    c = compute_dtype(v.dtype)
    norm, y = _norm_and_ratio(v, p)  # y = |x_i| / ||x||_p in [0, 1]
    if c == jnp.float64:
        u, width, mbits, bias = jnp.uint64, 64, 52, 1023
    else:
        u, width, mbits, bias = jnp.uint32, 32, 23, 127
    yb = jax.lax.bitcast_convert_type(y, u)
    e = (yb >> u(mbits)).astype(jnp.int32) - bias  # 2^e <= y < 2^(e+1) for normal y
    mant = yb & u((1 << mbits) - 1)
    big = e >= 1 - s  # y >= 2^(1-s): round between 2^e and 2^(e+1), P(up) = mant / 2^mbits
    small_p = jnp.where(big, 0, y * (2.0 ** (s - 1)))  # y < 2^(1-s): between 0 and 2^(1-s)
    thr = jnp.where(big, mant << u(width - mbits), _threshold(small_p, c))
    up = _random_uints(key, v.shape, c) < thr
    k_lo = jnp.where(big, e + s, 0).astype(jnp.uint32)
    level = k_lo + up.astype(jnp.uint32)
    neg = (v < 0) & (level > 0)
    return norm, neg, level


def _pow2(e, cdtype):
    """Exact 2^e for integer e in the normal range of ``cdtype``."""
    if cdtype == jnp.float64:
        u, mbits, bias = jnp.uint64, 52, 1023
    else:
        u, mbits, bias = jnp.uint32, 23, 127
    return jax.lax.bitcast_convert_type((e + bias).astype(u) << u(mbits), cdtype)


def _natural_dither_values(norm, neg, level, s: int, dtype):
    c = compute_dtype(dtype)
    nc = norm.astype(c)
    k = level.astype(jnp.int32)
    scale = _pow2(jnp.maximum(k - s, 1 - s), c)
    mag = jnp.where(k > 0, nc * scale, 0)
    return _finish(mag, neg.astype(bool), nc, dtype)


def natural_dither(s: int, *, p: float = 2.0) -> VectorCompressor:
    r"""Natural dithering :math:`D^{p,s}_{\rm nat}`: stochastic rounding of ``|x_i|/||x||_p`` to
    the levels ``0, 2^{1-s}, ..., 1/2, 1``.

    Unbiased with ω = 1/8 + d^{1/r} 2^{1−s} min(1, d^{1/r} 2^{1−s}), r = min(p, 2)
    (Horváth et al. 2019, Thm 7). Bits (fixed-length): ``b + d(1 + ⌈log2(s + 1)⌉)``: the norm in
    the input dtype, then a sign bit and one of the s + 1 levels per coordinate.

    With :math:`y_i = |x_i|/\|x\|_p`: if :math:`y_i \ge 2^{1-s}` it is rounded between the
    neighbouring powers of two as in :func:`~jaxdist.compressors.natural` (variance
    :math:`\le y_i^2/8`, the mantissa compared exactly with one uniform integer); below
    :math:`2^{1-s}` it is rounded between 0 and :math:`2^{1-s}` (variance
    :math:`y_i(2^{1-s} - y_i)`). The decoded values :math:`\|x\|_p 2^{k-s}` are exact in the
    input dtype (unless they underflow it).

    Non-finite inputs give an all-NaN output; ``x = 0`` gives 0.

    Args:
      s: number of nonzero levels, an integer in ``[1, 126]`` (the smallest level
        ``2^{1-s}`` must be a normal float32).
      p: the norm, a number ``>= 1`` or ``math.inf`` (keyword-only, default 2).

    Returns:
      A :class:`~jaxdist.compressors.Compressor` (unbiased).

    Raises:
      TypeError: if ``s`` is not an int or ``p`` not a real number.
      ValueError: if ``s`` or ``p`` is out of range (or ``p`` is NaN).

    References:
      Horváth, Ho, Horváth, Sahu, Canini, Richtárik, `Natural Compression for Distributed
      Deep Learning <https://arxiv.org/abs/1905.10988>`_, 2019.
    """
    s = check_int("s", s, low=1, high=_MAX_NATURAL_LEVELS)
    p = _check_p(p)
    r = min(p, 2.0)
    width = _level_bits(s)

    def omega(d):
        a = d ** (1.0 / r) * 2.0 ** (1 - s)
        return 0.125 + a * min(1.0, a)

    def encode(key, v, shape):
        del shape
        norm, neg, level = _natural_dither_levels(key, v, s, p)
        return {"norm": norm, "sign": pack_uint(neg, 1), "level": pack_uint(level, width)}

    def decode(key, payload, d, dtype, shape):
        del key, shape
        neg = unpack_uint(payload["sign"], d, 1)
        level = unpack_uint(payload["level"], d, width)
        return _natural_dither_values(payload["norm"], neg, level, s, dtype)

    def compress(key, v, shape):
        del shape
        return _natural_dither_values(*_natural_dither_levels(key, v, s, p), s, v.dtype)

    return VectorCompressor(
        name=f"natural_dither(s={s}, p={p})",
        config=config("natural_dither", s=s, p=p),
        encode_fn=encode,
        decode_fn=decode,
        compress_fn=compress,
        bits_fn=lambda d, dtype: float_bits(dtype) + d * (1 + width),
        omega_fn=omega,
        unbiased=True,
    )


# ---------------------------------------------------------------------------------------------
# Stochastic rounding to a grid.


def stochastic_round(step: float, *, num_bits: int = 16) -> VectorCompressor:
    r"""Unbiased stochastic rounding to the grid ``step · Z``, sent as signed integers.

    Unbiased (inside the representable range), but in **no** U(ω) class: the variance is
    absolute, :math:`\mathbb{E}\|C(x) - x\|^2 = \mathrm{step}^2 \sum_i f_i(1 - f_i) \le
    d\,\mathrm{step}^2/4` with :math:`f_i` the fractional part of :math:`x_i/\mathrm{step}`,
    and does not shrink with :math:`\|x\|`. So ``omega(d)`` and ``alpha(d)`` are ``None`` while
    ``unbiased`` is ``True``. Bits: ``d · num_bits`` (no scale is sent: ``step`` is known to
    both sides).

    .. math::

      C(x)_i = \mathrm{step}\,\bigl(\lfloor x_i/\mathrm{step} \rfloor
               + \mathrm{Bernoulli}(f_i)\bigr).

    The integer codes are two's-complement ``num_bits`` integers, **saturating** at
    ``[-2^{num_bits-1}, 2^{num_bits-1} - 1]``: the operator is unbiased only for
    ``x_i/step`` inside that range (and, in float32, for ``|x_i/step| < 2^24``, beyond which the
    fractional part is not resolved). ``±inf`` saturates to the extreme codes; **NaN is sent as
    code 0** (there is no NaN integer), so a NaN coordinate decodes to 0. The decoded values
    ``code · step`` are rounded to the input dtype.

    Args:
      step: the grid spacing, a finite number ``> 0``.
      num_bits: bits per coordinate, an integer in ``[1, 32]`` (keyword-only, default 16).

    Returns:
      A :class:`~jaxdist.compressors.Compressor` (unbiased, ``omega`` is ``None``).

    Raises:
      TypeError: if ``step`` is not a real number or ``num_bits`` not an int.
      ValueError: if ``step <= 0`` or not finite, or ``num_bits`` is outside ``[1, 32]``.

    References:
      Horváth, Ho, Horváth, Sahu, Canini, Richtárik, `Natural Compression for Distributed
      Deep Learning <https://arxiv.org/abs/1905.10988>`_, 2019 (Thm 4, rounding to integers).
    """
    step = _check_scalar("step", step, low=0.0, low_open=True)
    if not math.isfinite(step):
        raise ValueError(f"step must be a finite number > 0, got step={step}")
    nb = check_int("num_bits", num_bits, low=1, high=32)
    lo, hi = -(2 ** (nb - 1)), 2 ** (nb - 1) - 1
    mask = (1 << nb) - 1
    inv_step = 1.0 / step

    def codes(key, v):
        c = compute_dtype(v.dtype)
        t = v.astype(c) * inv_step  # see _dither_values: no division by a constant
        q = jnp.floor(t)
        up = _random_uints(key, v.shape, c) < _threshold(t - q, c)
        cf = jnp.clip(q + up.astype(c), lo, hi)
        # `hi` may round up to 2^(nb-1) in float32: saturate it in integers.
        ci = jnp.where(cf >= 2.0 ** (nb - 1), hi, cf.astype(jnp.int32))
        ci = jnp.where(jnp.isnan(t), 0, ci)
        return ci

    def values(ci, dtype):
        c = compute_dtype(dtype)
        return (ci.astype(c) * step).astype(dtype)

    def encode(key, v, shape):
        del shape
        u = jax.lax.bitcast_convert_type(codes(key, v), jnp.uint32) & jnp.uint32(mask)
        return {"codes": pack_uint(u, nb)}

    def decode(key, payload, d, dtype, shape):
        del key, shape
        u = unpack_uint(payload["codes"], d, nb)
        shift = jnp.uint32(32 - nb)  # sign-extend the num_bits-bit two's complement codes
        ci = jax.lax.bitcast_convert_type(u << shift, jnp.int32) >> jnp.int32(32 - nb)
        return values(ci, dtype)

    def compress(key, v, shape):
        del shape
        return values(codes(key, v), v.dtype)

    return VectorCompressor(
        name=f"stochastic_round(step={step}, num_bits={nb})",
        config=config("stochastic_round", step=step, num_bits=nb),
        encode_fn=encode,
        decode_fn=decode,
        compress_fn=compress,
        bits_fn=lambda d, dtype: d * nb,
        unbiased=True,
    )


# ---------------------------------------------------------------------------------------------
# Sign compression.


def sign() -> VectorCompressor:
    r"""Sign compression :math:`C(x) = \operatorname{sign}(x)`, with :math:`0 \mapsto +1`.

    Biased and **not** contractive: its output has norm √d whatever ``||x||`` is, so no α
    exists (``alpha(d)`` and ``omega(d)`` are ``None``); signSGD-type methods need extra
    assumptions or the :func:`scaled_sign` variant. Bits: ``d`` (one bit per coordinate).

    ``-0.0`` and NaN map to ``+1`` (one bit cannot represent NaN); ``±inf`` map to ``±1``.

    Returns:
      A :class:`~jaxdist.compressors.Compressor` (deterministic).

    References:
      Karimireddy, Rebjock, Stich, Jaggi, `Error Feedback Fixes SignSGD and other Gradient
      Compression Schemes <https://arxiv.org/abs/1901.09847>`_, 2019.
    """

    def values(neg, dtype):
        return jnp.where(neg.astype(bool), -1, 1).astype(dtype)

    def encode(key, v, shape):
        del key, shape
        return {"sign": pack_uint(v < 0, 1)}

    def decode(key, payload, d, dtype, shape):
        del key, shape
        return values(unpack_uint(payload["sign"], d, 1), dtype)

    def compress(key, v, shape):
        del key, shape
        return values(v < 0, v.dtype)

    return VectorCompressor(
        name="sign()",
        config=config("sign"),
        encode_fn=encode,
        decode_fn=decode,
        compress_fn=compress,
        bits_fn=lambda d, dtype: d,
        deterministic=True,
    )


def scaled_sign() -> VectorCompressor:
    r"""Scaled sign :math:`C(x) = (\|x\|_1/d)\operatorname{sign}(x)`, with :math:`0 \mapsto +1`.

    Biased, deterministic, contractive with α = 1/d in the worst case. Bits: ``d + b`` (a sign
    bit per coordinate and the scale in the input dtype).

    .. math::

      \|C(x) - x\|^2 = \|x\|_2^2 - \|x\|_1^2/d \qquad\text{exactly,}

    (also with the convention 0 ↦ +1, since :math:`\operatorname{sign}(x_i)x_i = |x_i|`), so
    :math:`\alpha(x) = \|x\|_1^2/(d\|x\|_2^2) \in [1/d, 1]`: 1/d for a 1-sparse ``x``, 1 when
    all :math:`|x_i|` are equal.

    The scale is computed as :math:`\sum_i |x_i|/d` (no overflow for finite inputs). A
    non-finite scale (an ``inf``/``NaN`` entry, or float16 overflow) gives an all-NaN output.

    Returns:
      A :class:`~jaxdist.compressors.Compressor` (deterministic, ``alpha(d) = 1/d``).

    References:
      Karimireddy, Rebjock, Stich, Jaggi, `Error Feedback Fixes SignSGD and other Gradient
      Compression Schemes <https://arxiv.org/abs/1901.09847>`_, 2019.
    """

    def scale_of(v):
        c = compute_dtype(v.dtype)
        return _pairwise_sum(jnp.abs(v.astype(c)) * (1.0 / v.shape[0])).astype(v.dtype)

    def values(scale, neg, dtype):
        sc = scale.astype(compute_dtype(dtype))
        return _finish(sc, neg.astype(bool), sc, dtype)

    def encode(key, v, shape):
        del key, shape
        return {"scale": scale_of(v), "sign": pack_uint(v < 0, 1)}

    def decode(key, payload, d, dtype, shape):
        del key, shape
        return values(payload["scale"], unpack_uint(payload["sign"], d, 1), dtype)

    def compress(key, v, shape):
        del key, shape
        return values(scale_of(v), v < 0, v.dtype)

    return VectorCompressor(
        name="scaled_sign()",
        config=config("scaled_sign"),
        encode_fn=encode,
        decode_fn=decode,
        compress_fn=compress,
        bits_fn=lambda d, dtype: d + float_bits(dtype),
        alpha_fn=lambda d: 1.0 / d,
        deterministic=True,
    )
