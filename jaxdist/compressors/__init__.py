"""Compression operators: pure functions of a PRNG key and the input.

Every factory returns an immutable :class:`Compressor` with ``compress(key, x)``,
``encode(key, x)`` / ``decode(key, payload, like)`` (the wire form, with
``decode(encode(x)) == compress(x)`` exactly), and the constants ``omega(d)`` (unbiased class
U(ω)), ``alpha(d)`` (contractive class B(α)) and ``bits(d)`` (exact message size).
:data:`FACTORIES` lists the factories (operators, then combinators).

**Values.** A compressor is a value: two compressors are equal, and hash equally, when they come
from the same factory with the same arguments (``rand_k(10) == rand_k(10)``,
``rand_k(10) != rand_k(10, shared=True)``; a combinator compares by its parts), so a compressor
can be a dict key or a static argument of :func:`jax.jit`. Arguments are checked when the
compressor is built: a wrong type is a ``TypeError`` and a wrong value a ``ValueError``, both
naming the parameter (``rand_k(5, scaled='no')``, ``bernoulli('0.5')``); ``decode`` refuses a
payload of the wrong structure, shape or dtype with a ``ValueError`` naming the field; and
integer or boolean inputs are refused (``TypeError``).

**The worker index.** ``compress``, ``encode`` and ``decode`` take a keyword ``worker=None``. Only
operators with ``needs_axis`` (Perm-K, and combinators containing it) use it: ``worker=m`` passes
the index as data (an int or an int32 scalar, possibly traced); ``None`` reads
``lax.axis_index(axis_name)`` under the worker axis. Every other operator ignores it.

**Pytrees.** By default a pytree is compressed as **one** flattened vector (the leaves
concatenated in ``jax.tree_util`` order: the theory's :math:`x \\in \\mathbb{R}^d`), and the
output is unflattened to the input's structure. So Top-K ranks the entries of all leaves (all
layers of a model) together, Rand-K draws its ``k`` coordinates among all of them, a norm-based
quantiser (QSGD, ternary, scaled sign, ...) sends one norm for the whole tree, and ``bits``,
``omega`` and ``alpha`` are those of the total dimension ``d``; all leaves must then share one
dtype. Wrap a compressor in :func:`per_leaf` to compress leaf by leaf (layer-wise: ``k``
entries and one norm per leaf, leaf ``i`` keyed by ``fold_in(key, i)``; a 2-D leaf stays a
matrix for PowerSGD).

**Gradients** (``jax.grad`` through ``compress``, with the key fixed; each rule is tested):

* ``identity``, ``rand_k``, ``perm_k``, ``bernoulli``, ``scaled(c)`` of these: linear in ``x``,
  so the gradient is the same operator applied to the cotangent (same support, same scale).
* ``cast``: linear; the cotangent is rounded to the wire dtype and back (straight-through).
* ``top_k``: the support is piecewise constant in ``x``: the cotangent on the kept
  coordinates, 0 elsewhere.
* ``natural``, ``truncate``, ``stochastic_round``, ``sign``: piecewise constant (bit
  manipulation, rounding, comparisons): the gradient is **zero**, not a straight-through
  estimate.
* norm-scaled quantisers (``ternary``, ``terngrad``, ``qsgd``, ``dither``, ``natural_dither``,
  ``scaled_sign``): ``C(x) = ‖x‖_p · u(x)`` with piecewise-constant levels ``u``; the
  gradient flows through the norm only: ``⟨g, C(x)⟩ / ‖x‖_p · ∇‖x‖_p`` for the cotangent
  ``g`` (``p = 2``: ``x/‖x‖``; ``p = 1`` and scaled sign: ``sign(x)``; ``p = ∞``: one
  coordinate).
* ``power_sgd``: differentiable, including the dependence of the orthonormal factor on ``x``
  through the QR decomposition.
* combinators (``compose``, ``induced``, ``top_k_quantized``, ``per_leaf``): the chain rule
  through their parts (so anything that contains ``natural`` has zero gradient).
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
from jaxdist.compressors._sparsification import rand_k as rand_k
from jaxdist.compressors._sparsification import top_k as top_k

FACTORIES: tuple[str, ...] = (
    # operators
    "identity",
    "rand_k",
    "perm_k",
    "bernoulli",
    "top_k",
    "ternary",
    "terngrad",
    "qsgd",
    "dither",
    "natural_dither",
    "stochastic_round",
    "sign",
    "scaled_sign",
    "natural",
    "truncate",
    "cast",
    "power_sgd",
    # combinators
    "compose",
    "scaled",
    "induced",
    "top_k_quantized",
    "per_leaf",
)
"""Names of the public compressor factories: the operators, then the combinators."""

__all__ = [
    "FACTORIES",
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
    "truncate",
]
