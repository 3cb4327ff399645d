"""Compression operators: pure functions of a PRNG key and the input.

Every factory returns an immutable :class:`Compressor` with ``compress(key, x)``,
``encode(key, x)`` / ``decode(key, payload, like)`` (the wire form, with
``decode(encode(x)) == compress(x)`` exactly), and the constants ``omega(d)`` (unbiased class
U(ω)), ``alpha(d)`` (contractive class B(α)) and ``bits(d)`` (exact message size).
"""

from jaxdist.compressors._base import Compressor as Compressor
from jaxdist.compressors._base import Packed as Packed
from jaxdist.compressors._base import payload_bits as payload_bits
from jaxdist.compressors._base import per_leaf as per_leaf
from jaxdist.compressors._identity import identity as identity

# -- sparsification (rand_k, perm_k, bernoulli, top_k) --

# -- quantization (ternary, terngrad, qsgd, dither, natural, natural_dither, stochastic_round,
#    truncate, cast, sign, scaled_sign) --

# -- low rank and combinators (power_sgd, compose, scaled, induced, top_k_quantized) --

__all__ = [
    "Compressor",
    "Packed",
    "identity",
    "payload_bits",
    "per_leaf",
]
