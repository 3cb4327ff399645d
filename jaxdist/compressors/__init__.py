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
from jaxdist.compressors._combinators import compose as compose
from jaxdist.compressors._combinators import induced as induced
from jaxdist.compressors._combinators import scaled as scaled
from jaxdist.compressors._combinators import top_k_quantized as top_k_quantized
from jaxdist.compressors._floats import cast as cast
from jaxdist.compressors._floats import natural as natural
from jaxdist.compressors._floats import truncate as truncate
from jaxdist.compressors._identity import identity as identity
from jaxdist.compressors._lowrank import power_sgd as power_sgd
from jaxdist.compressors._quantization import dither as dither
from jaxdist.compressors._quantization import natural_dither as natural_dither
from jaxdist.compressors._quantization import qsgd as qsgd
from jaxdist.compressors._quantization import scaled_sign as scaled_sign
from jaxdist.compressors._quantization import sign as sign
from jaxdist.compressors._quantization import stochastic_round as stochastic_round
from jaxdist.compressors._quantization import ternary as ternary
from jaxdist.compressors._quantization import terngrad as terngrad
from jaxdist.compressors._sparsification import bernoulli as bernoulli
from jaxdist.compressors._sparsification import perm_k as perm_k
from jaxdist.compressors._sparsification import perm_k_compress as perm_k_compress
from jaxdist.compressors._sparsification import rand_k as rand_k
from jaxdist.compressors._sparsification import top_k as top_k

__all__ = [
    "Compressor",
    "Packed",
    "bernoulli",
    "cast",
    "compose",
    "dither",
    "identity",
    "induced",
    "natural",
    "natural_dither",
    "payload_bits",
    "per_leaf",
    "perm_k",
    "perm_k_compress",
    "power_sgd",
    "qsgd",
    "rand_k",
    "scaled",
    "scaled_sign",
    "sign",
    "stochastic_round",
    "ternary",
    "terngrad",
    "top_k",
    "top_k_quantized",
]
