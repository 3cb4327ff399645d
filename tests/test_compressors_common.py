"""Common tests every compressor in ``tests/registry.py`` must pass.

The contract: pure and jittable, vmappable over keys, deterministic per key, same shape and dtype
as the input, ``decode(encode(x)) == compress(x)`` bitwise, ``bits(d)`` equal to the payload size,
pytrees flattened consistently; and the maths: unbiasedness, ``E||C(x) - x||^2 <= omega ||x||^2``
for the unbiased class and ``<= (1 - alpha) ||x||^2`` for the contractive class, checked by Monte
Carlo with tolerances derived from the sample standard error.
"""

from __future__ import annotations

import contextlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from registry import ACCOUNTING_ONLY, NAMES, NUM_WORKERS, build

from jaxdist.compressors import payload_bits

D_SHAPE = (5, 10)  # d = 50: not a multiple of 8 (packing edge cases) nor of NUM_WORKERS
AXIS = "workers"


def on_worker(c, fn, *args):
    """Runs ``fn(*args)``; operators that need the worker axis run as worker 0 of NUM_WORKERS."""
    if not c.needs_axis:
        return fn(*args)
    out = jax.vmap(
        lambda *a: fn(*a), in_axes=(None,) * len(args), axis_name=AXIS, axis_size=NUM_WORKERS
    )(*args)
    return jax.tree_util.tree_map(lambda y: y[0], out)


def sample_x(dtype="float32", shape=D_SHAPE, seed=0):
    x = np.random.default_rng(seed).normal(size=shape)
    return jnp.asarray(x, dtype=dtype)


def bitwise_equal(a, b):
    a = np.asarray(jnp.asarray(a, jnp.float32) if a.dtype == jnp.bfloat16 else a)
    b = np.asarray(jnp.asarray(b, jnp.float32) if b.dtype == jnp.bfloat16 else b)
    np.testing.assert_array_equal(a, b)


def dtype_context(dtype):
    return jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
def test_shape_and_dtype_kept(name, dtype):
    with dtype_context(dtype):
        c = build(name)
        x = sample_x(dtype)
        out = on_worker(c, c.compress, jax.random.key(1), x)
        assert out.shape == x.shape
        assert out.dtype == x.dtype
        assert bool(jnp.all(jnp.isfinite(out.astype(jnp.float32))))


@pytest.mark.parametrize("name", NAMES)
def test_decode_encode_equals_compress_and_bits(name):
    c = build(name)
    x = sample_x()
    key = jax.random.key(3)
    direct = on_worker(c, c.compress, key, x)
    payload = on_worker(c, c.encode, key, x)
    decoded = on_worker(c, lambda k, p: c.decode(k, p, x), key, payload)
    bitwise_equal(direct, decoded)
    # jit gives the same numbers as eager execution.
    bitwise_equal(direct, on_worker(c, jax.jit(c.compress), key, x))
    # The payload is exactly bits(d) bits, and bits(d) agrees for an int d and an array.
    assert c.bits(x) == c.bits(x.size)
    if name in ACCOUNTING_ONLY:
        assert payload_bits(payload) > c.bits(x)  # the optimal code is shorter than the payload
    else:
        assert payload_bits(payload) == c.bits(x)


@pytest.mark.parametrize("name", NAMES)
def test_determinism_and_key_dependence(name):
    c = build(name)
    x = sample_x()
    k1, k2 = jax.random.key(5), jax.random.key(6)
    a = on_worker(c, c.compress, k1, x)
    bitwise_equal(a, on_worker(c, c.compress, k1, x))
    others = [on_worker(c, c.compress, jax.random.key(s), x) for s in range(10, 14)]
    others.append(on_worker(c, c.compress, k2, x))
    differs = any(not np.array_equal(np.asarray(a), np.asarray(o)) for o in others)
    assert differs != c.deterministic, f"deterministic={c.deterministic} but differs={differs}"


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_keys_matches_loop(name):
    c = build(name)
    x = sample_x()
    keys = jax.random.split(jax.random.key(7), 4)
    batched = on_worker(c, jax.vmap(c.compress, in_axes=(0, None)), keys, x)
    for i in range(4):
        bitwise_equal(batched[i], on_worker(c, c.compress, keys[i], x))


@pytest.mark.parametrize("name", NAMES)
def test_pytree_flattened_like_one_vector(name):
    c = build(name)
    tree = {"b": sample_x(shape=(7,), seed=1), "w": sample_x(shape=(6, 8), seed=2)}
    flat = jnp.concatenate([tree["b"], tree["w"].reshape(-1)])
    key = jax.random.key(9)
    out = on_worker(c, c.compress, key, tree)
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(tree)
    assert out["w"].shape == (6, 8) and out["b"].shape == (7,)
    payload = on_worker(c, c.encode, key, tree)
    decoded = on_worker(c, lambda k, p: c.decode(k, p, tree), key, payload)
    for leaf in ("b", "w"):
        bitwise_equal(out[leaf], decoded[leaf])
    if not c.per_leaf:
        ref = on_worker(c, c.compress, key, flat)
        got = jnp.concatenate([out["b"], out["w"].reshape(-1)])
        bitwise_equal(got, ref)
        assert c.bits(tree) == c.bits(flat.size)


@pytest.mark.parametrize("name", NAMES)
def test_no_recompilation(name):
    c = build(name)
    x = sample_x()
    traces = []

    def fn(key, x):
        traces.append(1)
        return on_worker(c, c.compress, key, x)

    jitted = jax.jit(fn)
    jitted(jax.random.key(0), x).block_until_ready()
    jitted(jax.random.key(1), x + 1.0).block_until_ready()
    assert len(traces) == 1


@pytest.mark.parametrize("name", NAMES)
def test_integer_and_bool_input_refused(name):
    c = build(name)
    for bad in (jnp.arange(50, dtype=jnp.int32), jnp.ones(50, dtype=bool)):
        with pytest.raises(TypeError, match="dtype"):
            on_worker(c, c.compress, jax.random.key(0), bad)


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_input_does_not_crash(name):
    c = build(name)
    x = sample_x().reshape(-1).at[3].set(jnp.nan).at[8].set(jnp.inf)
    out = on_worker(c, jax.jit(c.compress), jax.random.key(0), x)
    assert out.shape == x.shape and out.dtype == x.dtype


# ---------------------------------------------------------------------------------------------
# Monte Carlo: the class constants.

NUM_SAMPLES = 20_000
Z = 6.0  # standard errors; with d = 50 coordinates the family-wise false alarm rate is < 1e-7


def mc_samples(c, x, n=NUM_SAMPLES, seed=123):
    keys = jax.random.split(jax.random.key(seed), n)
    fn = jax.jit(jax.vmap(c.compress, in_axes=(0, None)))
    return np.asarray(on_worker(c, fn, keys, x), dtype=np.float64)


@pytest.mark.parametrize("name", NAMES)
def test_monte_carlo_class_constants(name):
    c = build(name)
    x = sample_x().reshape(-1)
    d = x.size
    if c.deterministic:
        samples = np.asarray(on_worker(c, c.compress, jax.random.key(0), x), np.float64)[None]
    else:
        samples = mc_samples(c, x)
    x64 = np.asarray(x, np.float64)
    sq = np.sum(x64**2)
    err = np.sum((samples - x64) ** 2, axis=1)
    err_mean = err.mean()
    err_se = err.std(ddof=1) / math.sqrt(len(err)) if len(err) > 1 else 0.0

    if c.unbiased and c.deterministic:
        np.testing.assert_array_equal(samples[0], x64)  # a deterministic unbiased C is the identity
    elif c.unbiased:
        mean = samples.mean(axis=0)
        se = samples.std(axis=0, ddof=1) / math.sqrt(len(samples))
        random_coords = se > 0
        np.testing.assert_allclose(mean[~random_coords], x64[~random_coords], rtol=1e-6)
        z = np.abs(mean[random_coords] - x64[random_coords]) / se[random_coords]
        assert z.max() < Z, f"{name}: not unbiased, max z-score {z.max():.2f}"
    omega = c.omega(d)
    if omega is not None:
        assert err_mean <= omega * sq * (1 + 1e-6) + Z * err_se, (name, err_mean / sq, omega)
    alpha = c.alpha(d)
    if alpha is not None:
        assert 0 < alpha <= 1
        bound = (1 - alpha) * sq
        assert err_mean <= bound * (1 + 1e-6) + Z * err_se, (name, err_mean / sq, 1 - alpha)
