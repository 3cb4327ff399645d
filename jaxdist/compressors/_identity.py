"""The identity operator: no compression (the baseline every method reduces to)."""

from __future__ import annotations

from jaxdist.compressors._base import Compressor, float_bits


def identity() -> Compressor:
    """The identity operator C(x) = x: sends all d values.

    Unbiased with ω = 0 and contractive with α = 1. Bits: ``d · b`` for ``b``-bit floats.

    Returns:
      A :class:`~jaxdist.compressors.Compressor`.
    """

    def encode(key, v, shape):
        del key, shape
        return {"values": v}

    def decode(key, payload, d, dtype, shape):
        del key, d, dtype, shape
        return payload["values"]

    def compress(key, v, shape):
        del key, shape
        return v

    return Compressor(
        name="identity()",
        encode_fn=encode,
        decode_fn=decode,
        compress_fn=compress,
        bits_fn=lambda d, dtype: d * float_bits(dtype),
        omega_fn=lambda d: 0.0,
        alpha_fn=lambda d: 1.0,
        unbiased=True,
        deterministic=True,
        kept_fn=lambda d: d,
        projection=True,
    )
