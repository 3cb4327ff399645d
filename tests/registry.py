"""Registry of every compressor under test: drives the common tests.

Each entry is ``(name, factory, kwargs)``. The common tests build ``factory(**kwargs)`` and check
the contract every compressor must satisfy (see ``test_compressors_common.py``).
"""

from __future__ import annotations

import jaxdist.compressors as jc

# Number of workers of the operators that need the worker index (Perm-K); the common tests pass
# the index as data (``worker=0``) and check it against the axis index under ``jax.vmap``.
NUM_WORKERS = 4

COMPRESSORS_UNDER_TEST = (
    ("identity", jc.identity, {}),
    ("rand_k", jc.rand_k, {"k": 7}),
    ("rand_k_list", jc.rand_k, {"k": 7, "index_coding": "list"}),
    ("rand_k_mask", jc.rand_k, {"k": 7, "index_coding": "mask"}),
    ("rand_k_enumerative", jc.rand_k, {"k": 7, "index_coding": "enumerative"}),
    ("rand_k_shared", jc.rand_k, {"k": 7, "shared": True}),
    ("rand_k_unscaled", jc.rand_k, {"k": 7, "scaled": False}),
    ("rand_k_large", jc.rand_k, {"k": 40}),
    ("perm_k", jc.perm_k, {"num_workers": NUM_WORKERS}),
    ("bernoulli", jc.bernoulli, {"p": 0.3}),
    ("top_k", jc.top_k, {"k": 5}),
    ("top_k_mask", jc.top_k, {"k": 5, "index_coding": "mask"}),
    ("ternary", jc.ternary, {}),
    ("ternary_base3", jc.ternary, {"coding": "base3"}),
    ("terngrad", jc.terngrad, {}),
    ("qsgd", jc.qsgd, {"s": 4}),
    ("dither_l1", jc.dither, {"s": 3, "p": 1.0}),
    ("dither_linf", jc.dither, {"s": 2, "p": float("inf")}),
    ("natural", jc.natural, {}),
    ("natural_dither", jc.natural_dither, {"s": 4}),
    ("stochastic_round", jc.stochastic_round, {"step": 0.05}),
    ("truncate", jc.truncate, {}),
    ("cast_bf16", jc.cast, {"dtype": "bfloat16"}),
    ("cast_fp16", jc.cast, {"dtype": "float16"}),
    ("dither_l2", jc.dither, {"s": 3}),
    ("sign", jc.sign, {}),
    ("scaled_sign", jc.scaled_sign, {}),
    ("power_sgd", jc.power_sgd, {"rank": 2}),
    ("compose_natural_rand_k", lambda: jc.compose(jc.natural(), jc.rand_k(10)), {}),
    ("compose_qsgd_natural", lambda: jc.compose(jc.qsgd(s=2), jc.natural()), {}),
    ("scaled_rand_k", lambda: jc.scaled(jc.rand_k(10)), {}),
    ("induced_top_k_rand_k", lambda: jc.induced(jc.top_k(5), jc.rand_k(10)), {}),
    ("top_k_quantized", lambda: jc.top_k_quantized(8, jc.natural()), {}),
    ("per_leaf_rand_k", lambda: jc.per_leaf(jc.rand_k(3)), {}),
)


def build(name: str):
    for entry_name, factory, kwargs in COMPRESSORS_UNDER_TEST:
        if entry_name == name:
            return factory(**kwargs)
    raise KeyError(name)


NAMES = tuple(entry[0] for entry in COMPRESSORS_UNDER_TEST)

# Accounting-only codings: ``bits`` counts the optimal code, the payload carries a plainer one.
ACCOUNTING_ONLY = {"rand_k_enumerative"}
