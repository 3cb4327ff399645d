"""The identity operator: no compression (the baseline every method reduces to)."""

from __future__ import annotations

from jaxdist.compressors._base import Sparsifier, config, float_bits


def identity() -> Sparsifier:
    """The identity operator C(x) = x: sends all d values.

    Unbiased with ω = 0 and contractive with α = 1. Bits: ``d · b`` for ``b``-bit floats.
    Gradients: ``jax.grad`` through ``compress`` is the identity.

    Returns:
      A :class:`~jaxdist.compressors.Compressor`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxdist.compressors import identity
      >>> identity().compress(None, jnp.array([1.0, 2.0])).tolist()
      [1.0, 2.0]
      >>> identity().bits(10), identity().omega(10), identity().alpha(10)
      (320, 0.0, 1.0)
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

    return Sparsifier(
        name="identity()",
        config=config("identity"),
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
