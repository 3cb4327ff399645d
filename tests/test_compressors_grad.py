"""How gradients flow through every compressor of ``tests/registry.py`` (``jax.grad`` through
``compress`` with the key fixed), as documented in :mod:`jaxdist.compressors`.

For the cotangent ``w`` the test computes ``grad_x <w, C(x)>`` and compares it with the rule of
the entry's kind:

* ``linear``: the operator is linear in ``x`` for a fixed key, the gradient is ``C(w)``;
* ``mask``: Top-K, the cotangent on the kept coordinates (the support is piecewise constant);
* ``zero``: piecewise-constant quantisers give a zero gradient (not a straight-through one);
* ``norm``: ``C(x) = ||x||_p u(x)`` with piecewise-constant ``u``: ``<w, C(x)>/||x||_p ∇||x||_p``;
* ``induced`` and ``power_sgd``: the chain rule (checked against the parts, or finite
  differences in float64).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from registry import NAMES, build

import jaxdist.compressors as jc

D_SHAPE = (5, 10)

RULES = {
    "identity": ("linear",),
    "rand_k": ("linear",),
    "rand_k_list": ("linear",),
    "rand_k_mask": ("linear",),
    "rand_k_enumerative": ("linear",),
    "rand_k_shared": ("linear",),
    "rand_k_unscaled": ("linear",),
    "rand_k_large": ("linear",),
    "perm_k": ("linear",),
    "bernoulli": ("linear",),
    "cast_bf16": ("linear",),  # the cotangent is rounded to bfloat16 and back
    "cast_fp16": ("linear",),
    "scaled_rand_k": ("linear",),
    "per_leaf_rand_k": ("linear",),
    "top_k": ("mask",),
    "top_k_mask": ("mask",),
    "natural": ("zero",),
    "truncate": ("zero",),
    "stochastic_round": ("zero",),
    "sign": ("zero",),
    "compose_natural_rand_k": ("zero",),
    "compose_qsgd_natural": ("zero",),  # QSGD of natural(x), which has zero gradient
    "top_k_quantized": ("zero",),  # natural compression of the kept values
    "ternary": ("norm", 2),
    "ternary_base3": ("norm", 2),
    "qsgd": ("norm", 2),
    "dither_l2": ("norm", 2),
    "natural_dither": ("norm", 2),
    "dither_l1": ("norm", 1),
    "scaled_sign": ("norm", 1),  # C(x) = (||x||_1/d) sign(x)
    "terngrad": ("norm", np.inf),
    "dither_linf": ("norm", np.inf),
    "induced_top_k_rand_k": ("induced",),
    "power_sgd": ("power_sgd",),
}


def _x(seed):
    return jnp.asarray(np.random.default_rng(seed).normal(size=D_SHAPE), jnp.float32)


def _grad_norm(x, p):
    x = np.asarray(x, np.float64)
    if p == 2:
        return x / np.linalg.norm(x)
    if p == 1:
        return np.sign(x)
    g = np.zeros_like(x).reshape(-1)
    j = np.argmax(np.abs(x))
    g[j] = np.sign(x.reshape(-1)[j])
    return g.reshape(x.shape)


def test_every_registry_entry_has_a_rule():
    assert set(RULES) == set(NAMES)


@pytest.mark.parametrize("name", [n for n in NAMES if RULES[n][0] != "power_sgd"])
def test_gradient_rule(name):
    c = build(name)
    kw = {"worker": 0} if c.needs_axis else {}
    key = jax.random.key(3)
    x, w = _x(0), _x(1)
    grad = np.asarray(jax.grad(lambda v: jnp.vdot(w, c.compress(key, v, **kw)))(x), np.float64)
    out = np.asarray(c.compress(key, x, **kw), np.float64)
    kind = RULES[name]
    if kind[0] == "linear":
        expected = np.asarray(c.compress(key, w, **kw), np.float64)
    elif kind[0] == "mask":
        expected = np.where(out != 0, np.asarray(w, np.float64), 0.0)
    elif kind[0] == "zero":
        expected = np.zeros(D_SHAPE)
    elif kind[0] == "norm":
        p = kind[1]
        norm = np.linalg.norm(np.asarray(x, np.float64).reshape(-1), ord=p)
        expected = np.vdot(np.asarray(w, np.float64), out) / norm * _grad_norm(x, p)
    else:  # induced(top_k(5), rand_k(10)): C(x) = T(x) + R(x - T(x)), R with the second key
        kept = np.asarray(jc.top_k(5).compress(None, x)) != 0
        r_of_w = np.asarray(jc.rand_k(10).compress(jax.random.split(key)[1], w), np.float64)
        expected = np.where(kept, np.asarray(w, np.float64), r_of_w)
    np.testing.assert_allclose(grad, expected, rtol=2e-5, atol=1e-6, err_msg=name)
    if kind[0] != "zero":
        assert np.any(grad != 0), name


def test_power_sgd_gradient_matches_finite_differences(x64):
    """PowerSGD is differentiable (through the QR of P = G Q): jax.grad agrees with central
    differences in float64."""
    c = jc.power_sgd(2)
    key = jax.random.key(4)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6)), jnp.float64)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(4, 6)), jnp.float64)
    f = jax.jit(lambda v: jnp.vdot(w, c.compress(key, v)))
    grad = np.asarray(jax.grad(f)(x))
    assert np.any(grad != 0)
    eps = 1e-6
    for seed in range(3):
        v = jnp.asarray(np.random.default_rng(10 + seed).normal(size=(4, 6)), jnp.float64)
        fd = (float(f(x + eps * v)) - float(f(x - eps * v))) / (2 * eps)
        np.testing.assert_allclose(np.sum(grad * np.asarray(v)), fd, rtol=1e-6)
