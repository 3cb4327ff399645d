"""Tests of jaxdist.compressors._combinators: compose, scaled, induced, top_k_quantized.

Monte-Carlo checks use ``NUM_SAMPLES`` draws and a tolerance of ``Z`` standard errors of the
sample mean (estimated from the sample variance). Several pairs attain their bound exactly
(Rand-K is tight for every x, Bernoulli too, natural compression at |t| = (4/3) 2^a), and for
those the test is two-sided: the measured variance must *equal* the theory.
"""

from __future__ import annotations

import contextlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdist.compressors._base import index_bits, payload_bits, per_leaf
from jaxdist.compressors._combinators import compose, induced, scaled, top_k_quantized
from jaxdist.compressors._floats import natural
from jaxdist.compressors._identity import identity
from jaxdist.compressors._lowrank import power_sgd
from jaxdist.compressors._quantization import qsgd, sign, stochastic_round, ternary
from jaxdist.compressors._sparsification import bernoulli, perm_k, rand_k, top_k

D = 24
NUM_SAMPLES = 20_000
Z = 6.0


def sample_x(d=D, seed=0, dtype="float32", shape=None):
    x = np.random.default_rng(seed).normal(size=d)
    return jnp.asarray(x.reshape(shape) if shape else x, dtype=dtype)


def natural_worst_x(d=D, seed=0):
    """Entries ±(4/3)·2^a: natural compression's variance is exactly 1/8 of x_i² there."""
    rng = np.random.default_rng(seed)
    x = rng.choice([-1.0, 1.0], size=d) * (4.0 / 3.0) * 2.0 ** rng.integers(-3, 4, size=d)
    return jnp.asarray(x, jnp.float32)


def as64(a):
    return np.asarray(jnp.asarray(a, jnp.float32) if a.dtype == jnp.bfloat16 else a, np.float64)


_SAMPLERS = {}


def samples_of(c, x, n=NUM_SAMPLES, seed=123):
    """``n`` draws of C(x), shape (n, d), in float64 (one compiled sampler per compressor)."""
    if id(c) not in _SAMPLERS:
        _SAMPLERS[id(c)] = (c, jax.jit(jax.vmap(c.compress, in_axes=(0, None))))
    keys = jax.random.split(jax.random.key(seed), n)
    return as64(_SAMPLERS[id(c)][1](keys, x))


def assert_unbiased(samples, x):
    x = as64(x)
    mean = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / math.sqrt(len(samples))
    random = se > 0
    np.testing.assert_allclose(mean[~random], x[~random], rtol=1e-6)
    z = np.abs(mean[random] - x[random]) / se[random]
    assert z.max() < Z, f"not unbiased: max z-score {z.max():.2f}"


def error_stats(samples, x):
    """Mean of ||C(x) - x||^2 / ||x||^2 over the samples and its standard error."""
    x = as64(x)
    err = np.sum((samples - x) ** 2, axis=1) / np.sum(x**2)
    return err.mean(), err.std(ddof=1) / math.sqrt(len(err))


def assert_error_at_most(samples, x, bound):
    mean, se = error_stats(samples, x)
    assert mean <= bound * (1 + 1e-6) + Z * se, (mean, se, bound)


def assert_error_equals(samples, x, value):
    mean, se = error_stats(samples, x)
    assert abs(mean - value) <= Z * se + 1e-6 * value, (mean, se, value)


def check_payload(c, x, *, flat=True):
    """payload_bits(encode(x)) == bits(x) (== bits(d) unless the shape matters).

    The payload layout is static, so ``jax.eval_shape`` gives the exact message size without
    running (or compiling) the operator.
    """
    payload = jax.eval_shape(c.encode, jax.random.key(0), x)
    assert payload_bits(payload) == c.bits(x)
    if flat:
        assert c.bits(x) == c.bits(x.size, x.dtype)
    return payload


# ---------------------------------------------------------------------------------------------
# compose: constants and bits.


def test_compose_rand_k_natural_constants_and_bits():
    k = 6
    x = sample_x()
    for coding, index_part in (("seed", 0), ("list", k * index_bits(D)), ("mask", D)):
        c = compose(natural(), rand_k(k, index_coding=coding))
        assert c.unbiased and not c.deterministic and not c.needs_axis
        assert c.omega(D) == pytest.approx((9 / 8) * (D / k) - 1, rel=1e-12)
        assert c.alpha(D) is None
        assert c.bits(D) == 9 * k + index_part
        payload = check_payload(c, x)
        assert set(payload) == set(rand_k(k, index_coding=coding).encode(jax.random.key(0), x))


def test_compose_rand_k_natural_bits_float64_and_bfloat16(x64):
    c = compose(natural(), rand_k(5))
    check_payload(c, sample_x(dtype="float64"))
    assert c.bits(D, "float64") == 12 * 5
    check_payload(c, sample_x(dtype="bfloat16"))
    assert c.bits(D, "bfloat16") == 9 * 5


def test_compose_constants_of_other_pairs():
    x = sample_x()
    # Rand-k2 of Rand-k1's values is Rand-k2 of x: (d/k1)(k1/k2) - 1 = d/k2 - 1.
    c = compose(rand_k(3), rand_k(8))
    assert c.omega(D) == pytest.approx(D / 3 - 1, rel=1e-12)
    assert c.bits(D) == 32 * 3
    check_payload(c, x)
    # Bernoulli of Rand-K's values.
    p = 0.25
    c = compose(bernoulli(p), rand_k(8))
    assert c.omega(D) == pytest.approx((D / 8) / p - 1, rel=1e-8)
    assert c.bits(D) == 1 + 32 * 8
    check_payload(c, x)
    # Dense then dense: qsgd acts on the natural-compressed d-vector; only its message is sent.
    c = compose(qsgd(2), natural())
    assert c.omega(D) == pytest.approx((1 + 1 / 8) * (qsgd(2).omega(D) + 1) - 1, rel=1e-12)
    assert c.bits(D) == qsgd(2).bits(D)
    assert c.alpha(D) is None
    check_payload(c, x)
    # Top-K then natural: contractive with alpha = (K/d)(1 - 1/8); biased.
    c = compose(natural(), top_k(5))
    assert not c.unbiased and c.omega(D) is None
    assert c.alpha(D) == pytest.approx((5 / D) * (7 / 8), rel=1e-12)
    assert c.bits(D) == 9 * 5 + 5 * index_bits(D)
    check_payload(c, x)
    # Unscaled Rand-K (a random projection) then natural.
    c = compose(natural(), rand_k(6, scaled=False))
    assert c.alpha(D) == pytest.approx((6 / D) * (7 / 8), rel=1e-12)
    assert c.omega(D) is None
    # Top-K then a quantiser with omega >= 1 on the K values: no alpha.
    assert qsgd(1).omega(8) >= 1
    assert compose(qsgd(1), top_k(8)).alpha(D) is None
    # A contractive c2 on a dense c1: no alpha, no omega; bits are c2's.
    c = compose(top_k(5), natural())
    assert c.alpha(D) is None and c.omega(D) is None and not c.unbiased
    assert c.bits(D) == top_k(5).bits(D)
    check_payload(c, x)
    # Identity is a sparsifier keeping everything.
    c = compose(natural(), identity())
    assert c.omega(D) == pytest.approx(1 / 8) and c.alpha(D) == pytest.approx(7 / 8)
    assert c.bits(D) == 9 * D


def test_compose_flags_and_worker_axis():
    m = 4
    c = compose(natural(), perm_k(num_workers=m))
    assert c.needs_axis and c.axis_name == "workers" and c.shared_key and c.unbiased
    assert c.omega(D) == pytest.approx(m * (1 + 1 / 8) - 1)
    assert c.bits(D) == 9 * (D // m)
    x = sample_x()
    key = jax.random.key(1)

    def worker(x):
        return c.compress(key, x), c.encode(key, x)

    outs, payloads = jax.vmap(worker, in_axes=None, axis_name="workers", axis_size=m)(x)
    outs = np.asarray(outs)
    support = outs != 0
    assert np.all(support.sum(axis=0) == 1)  # disjoint blocks that cover every coordinate
    assert np.all(support.sum(axis=1) == D // m)
    one = jax.tree_util.tree_map(lambda leaf: leaf[0], payloads)
    assert payload_bits(one) == c.bits(D)
    # Shared-key flag and determinism propagate.
    assert compose(natural(), rand_k(3, shared=True)).shared_key
    assert not compose(natural(), rand_k(3)).shared_key
    assert compose(top_k(2), identity()).deterministic
    assert not compose(natural(), top_k(2)).deterministic
    with pytest.raises(ValueError, match="axis"):
        compose(perm_k(num_workers=2, axis_name="a"), perm_k(num_workers=2, axis_name="b"))


def test_compose_shape_hint_reaches_power_sgd():
    g = sample_x(d=100, shape=(4, 25))
    c = compose(power_sgd(2), natural())
    payload = check_payload(c, g, flat=False)
    assert payload["p"].shape == (4, 2)
    assert c.bits(g) == 32 * 2 * (4 + 25)
    assert c.bits(100) == 32 * 2 * (10 + 10)
    # power_sgd on the K kept values of a sparsifier sees a K-vector (3 x 3 for K = 9).
    c = compose(power_sgd(1), top_k(9))
    assert c.bits(g) == 9 * index_bits(100) + 32 * (3 + 3)
    check_payload(c, g)
    pl = per_leaf(compose(power_sgd(1), natural()))
    tree = {"a": g, "b": sample_x(d=6)}
    payload = jax.eval_shape(pl.encode, jax.random.key(0), tree)
    assert payload_bits(payload) == pl.bits(tree) == 32 * (29 + 5)


# ---------------------------------------------------------------------------------------------
# scaled, induced, top_k_quantized: constants and bits.


def test_scaled_constants_payload_and_bits():
    x = sample_x()
    for base in (rand_k(6), qsgd(2), natural(), bernoulli(0.5)):
        c = scaled(base)
        assert c.alpha(D) == pytest.approx(1 / (base.omega(D) + 1), rel=1e-12)
        assert c.omega(D) is None and not c.unbiased
        assert c.bits(D) == base.bits(D)
        check_payload(c, x)
    for base in (rand_k(6), qsgd(2)):  # same message as c, decoded and divided by omega + 1
        c, omega, key = scaled(base), base.omega(D), jax.random.key(2)
        payload, ref = c.encode(key, x), base.encode(key, x)
        leaves = zip(
            jax.tree_util.tree_leaves(payload), jax.tree_util.tree_leaves(ref), strict=True
        )
        for a, b in leaves:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_allclose(
            as64(c.compress(key, x)), as64(base.compress(key, x)) / (omega + 1), rtol=1e-6
        )
    # Scaled Rand-K is the unscaled mask.
    key = jax.random.key(3)
    np.testing.assert_allclose(
        as64(scaled(rand_k(6)).compress(key, x)),
        as64(rand_k(6, scaled=False).compress(key, x)),
        rtol=1e-6,
    )
    assert scaled(rand_k(6)).kept_fn(D) == 6


def test_induced_constants_and_bits():
    k1, k2 = 4, 6
    c = induced(top_k(k1), rand_k(k2))
    assert c.unbiased and c.alpha(D) is None
    assert c.omega(D) == pytest.approx((D / k2 - 1) * (1 - k1 / D), rel=1e-12)
    assert c.bits(D) == top_k(k1).bits(D) + rand_k(k2).bits(D)
    payload = check_payload(c, sample_x())
    assert set(payload) == {"biased", "unbiased"}
    c = induced(scaled(qsgd(2)), natural())
    alpha = 1 / (qsgd(2).omega(D) + 1)
    assert c.omega(D) == pytest.approx((1 / 8) * (1 - alpha), rel=1e-12)
    check_payload(c, sample_x())


@pytest.mark.parametrize("quantizer", [natural(), qsgd(2), ternary()], ids=lambda q: q.name)
def test_top_k_quantized_constants_and_bits(quantizer):
    k = 8
    c = top_k_quantized(k, quantizer)
    omega = quantizer.omega(k)
    assert c.alpha(D) == pytest.approx(k / (D * (omega + 1)), rel=1e-12)
    assert c.omega(D) is None and not c.unbiased
    assert c.bits(D) == quantizer.bits(k) + k * math.ceil(math.log2(D))
    check_payload(c, sample_x())
    assert c.deterministic == quantizer.deterministic
    # The output lives on the Top-K support.
    x = sample_x()
    out = np.asarray(c.compress(jax.random.key(0), x))
    kept = np.argsort(-np.abs(np.asarray(x)), kind="stable")[:k]
    assert np.all(out[np.setdiff1d(np.arange(D), kept)] == 0)


# ---------------------------------------------------------------------------------------------
# The contract every combinator satisfies.

CASES = {
    "compose_natural_rand_k": lambda: compose(natural(), rand_k(6)),
    "compose_qsgd_natural": lambda: compose(qsgd(2), natural()),
    "compose_natural_top_k": lambda: compose(natural(), top_k(5)),
    "scaled_qsgd": lambda: scaled(qsgd(4)),  # qsgd(3) alone: jit != eager by 1 ulp
    "induced_top_k_rand_k": lambda: induced(top_k(4), rand_k(6, index_coding="list")),
    "top_k_quantized": lambda: top_k_quantized(5, natural()),
}


def dtype_context(dtype):
    return jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()


# float32 for every case; float64 and bfloat16 for the three code paths (sparse compose,
# dense compose, induced) that scaled and top_k_quantized are thin wrappers around.
DTYPE_CASES = [("float32", name) for name in sorted(CASES)] + [
    (dtype, name)
    for dtype in ("float64", "bfloat16")
    for name in ("compose_natural_rand_k", "compose_qsgd_natural", "induced_top_k_rand_k")
]


@pytest.mark.parametrize("dtype,name", DTYPE_CASES)
def test_contract_dtype_wire_form_and_jit(name, dtype):
    with dtype_context(dtype):
        c = CASES[name]()
        x = sample_x(dtype=dtype)
        key = jax.random.key(4)
        out = c.compress(key, x)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert bool(jnp.all(jnp.isfinite(out.astype(jnp.float32))))
        check_payload(c, x)
        payload = c.encode(key, x)
        assert payload_bits(payload) == c.bits(x)
        np.testing.assert_array_equal(as64(c.decode(key, payload, x)), as64(out))
        if dtype == "float32":  # jit gives the eager numbers; raw uint32 keys work
            np.testing.assert_array_equal(as64(jax.jit(c.compress)(key, x)), as64(out))
            raw = jax.random.PRNGKey(4)
            np.testing.assert_array_equal(
                as64(c.compress(raw, x)), as64(c.compress(jax.random.wrap_key_data(raw), x))
            )


@pytest.mark.parametrize("name", sorted(CASES))
def test_contract_vmap_determinism_and_pytrees(name):
    c = CASES[name]()
    x = sample_x()
    keys = jax.random.split(jax.random.key(5), 4)
    batched = jax.jit(jax.vmap(c.compress, in_axes=(0, None)))(keys, x)
    for i in range(4):
        np.testing.assert_array_equal(np.asarray(batched[i]), np.asarray(c.compress(keys[i], x)))
    np.testing.assert_array_equal(
        np.asarray(c.compress(keys[0], x)), np.asarray(c.compress(keys[0], x))
    )
    differs = any(not np.array_equal(batched[0], batched[i]) for i in range(1, 4))
    assert differs != c.deterministic
    tree = {"b": sample_x(d=6, seed=1), "w": sample_x(d=18, seed=2, shape=(3, 6))}
    flat = jnp.concatenate([tree["b"], tree["w"].reshape(-1)])
    out = c.compress(keys[1], tree)
    assert out["w"].shape == (3, 6) and out["b"].shape == (6,)
    got = jnp.concatenate([out["b"], out["w"].reshape(-1)])
    np.testing.assert_array_equal(np.asarray(got), np.asarray(c.compress(keys[1], flat)))
    payload = c.encode(keys[1], tree)
    decoded = c.decode(keys[1], payload, tree)
    for leaf in tree:
        np.testing.assert_array_equal(np.asarray(decoded[leaf]), np.asarray(out[leaf]))
    assert payload_bits(payload) == c.bits(tree) == c.bits(D)


# ---------------------------------------------------------------------------------------------
# Monte Carlo.


def test_mc_compose_rand_k_rand_k_attains_composed_omega():
    """(omega1 + 1)(omega2 + 1) - 1 is attained: Rand-3 of Rand-8 is Rand-3 (exact for all x)."""
    c = compose(rand_k(3), rand_k(8))
    x = sample_x(seed=3)
    s = samples_of(c, x)
    assert_unbiased(s, x)
    omega1, omega2 = D / 8 - 1, 8 / 3 - 1
    assert_error_equals(s, x, (omega1 + 1) * (omega2 + 1) - 1)
    assert c.omega(D) == pytest.approx((omega1 + 1) * (omega2 + 1) - 1)


def test_mc_compose_bernoulli_rand_k_attains_composed_omega():
    c = compose(bernoulli(0.5), rand_k(8))
    x = sample_x(seed=4)
    s = samples_of(c, x)
    assert_unbiased(s, x)
    assert_error_equals(s, x, c.omega(D))


def test_mc_compose_natural_rand_k():
    c = compose(natural(), rand_k(6))
    omega = (9 / 8) * (D / 6) - 1
    x = sample_x(seed=5)  # a generic x: at most omega
    s = samples_of(c, x)
    assert_unbiased(s, x)
    assert_error_at_most(s, x, omega)
    x = natural_worst_x(seed=6)  # natural is tight there, hence so is the composition
    s = samples_of(c, x)
    assert_unbiased(s, x)
    assert_error_equals(s, x, omega)


def test_mc_compose_dense_pair_is_unbiased_within_omega():
    c = compose(qsgd(2), natural())
    x = sample_x(seed=7)
    s = samples_of(c, x)
    assert_unbiased(s, x)
    assert_error_at_most(s, x, c.omega(D))


def test_mc_compose_contractive_natural_top_k_attains_alpha():
    c = compose(natural(), top_k(6))
    x = jnp.where(jnp.arange(D) % 2 == 0, 4.0 / 3.0, -4.0 / 3.0)  # equal |x_i|, worst case
    s = samples_of(c, x)
    assert_error_equals(s, x, 1 - c.alpha(D))
    x = sample_x(seed=9)
    assert_error_at_most(samples_of(c, x), x, 1 - c.alpha(D))


def test_mc_induced():
    k1, k2 = 4, 6
    c = induced(top_k(k1), rand_k(k2))
    omega2 = D / k2 - 1
    x = sample_x(seed=10)
    s = samples_of(c, x)
    assert_unbiased(s, x)
    # Rand-K is exact, so the variance is omega2 * ||x - Top_K(x)||^2 ...
    x64 = as64(x)
    tail = np.sort(x64**2)[: D - k1].sum() / np.sum(x64**2)
    assert_error_equals(s, x, omega2 * tail)
    # ... which is at most omega2 (1 - alpha1), with equality when all |x_i| are equal.
    assert_error_at_most(s, x, c.omega(D))
    flat = jnp.where(jnp.arange(D) % 3 == 0, -1.5, 1.5)
    assert_error_equals(samples_of(c, flat), flat, c.omega(D))


def test_mc_scaled():
    x = sample_x(seed=11)
    c = scaled(qsgd(2))
    assert_error_at_most(samples_of(c, x), x, 1 - c.alpha(D))
    c = scaled(rand_k(6))  # Rand-K is exact: E||C/(w+1) - x||^2 = (1 - K/d)||x||^2
    assert_error_equals(samples_of(c, x), x, 1 - 6 / D)


@pytest.mark.parametrize("quantizer", [natural(), qsgd(2)], ids=lambda q: q.name)
def test_mc_top_k_quantized(quantizer):
    k = 6
    c = top_k_quantized(k, quantizer)
    x = sample_x(seed=12)
    assert_error_at_most(samples_of(c, x), x, 1 - c.alpha(D))
    if quantizer.name == "natural()":
        # Equal magnitudes at natural's worst case: the bound K/(d(w+1)) is attained.
        flat = jnp.where(jnp.arange(D) % 2 == 0, 4.0 / 3.0, -4.0 / 3.0)
        assert_error_equals(samples_of(c, flat), flat, 1 - c.alpha(D))


# ---------------------------------------------------------------------------------------------
# Bad input.


def test_bad_arguments():
    with pytest.raises(TypeError, match="c2"):
        compose(1, identity())
    with pytest.raises(TypeError, match="c1"):
        compose(identity(), "rand_k")
    with pytest.raises(ValueError, match="per_leaf"):
        compose(per_leaf(identity()), identity())
    # c2 acts on K = 5 values: Rand-10 does not fit (k > d), at trace time and for constants.
    c = compose(rand_k(10), rand_k(5))
    with pytest.raises(ValueError, match="k=10"):
        c.compress(jax.random.key(0), sample_x())
    with pytest.raises(ValueError, match="k=10"):
        c.omega(D)
    with pytest.raises(ValueError, match="k=30"):
        compose(natural(), rand_k(30)).bits(D)
    with pytest.raises(ValueError, match="biased"):
        scaled(top_k(3))
    with pytest.raises(ValueError, match="omega"):
        scaled(stochastic_round(0.05))
    with pytest.raises(TypeError, match="c must be a Compressor"):
        scaled(lambda key, x: x)
    with pytest.raises(ValueError, match="biased"):
        induced(sign(), rand_k(3))
    with pytest.raises(ValueError, match="unbiased"):
        induced(top_k(3), top_k(3))
    with pytest.raises(TypeError, match="unbiased"):
        induced(top_k(3), None)
    with pytest.raises(ValueError, match="k"):
        top_k_quantized(0, natural())
    with pytest.raises(ValueError, match="quantizer"):
        top_k_quantized(3, top_k(2))
    with pytest.raises(TypeError, match="quantizer"):
        top_k_quantized(3, 1.0)
    with pytest.raises(ValueError, match="k=30"):
        top_k_quantized(30, natural()).compress(jax.random.key(0), sample_x())
    with pytest.raises(TypeError, match="dtype"):
        compose(natural(), rand_k(3)).compress(jax.random.key(0), jnp.arange(D))
