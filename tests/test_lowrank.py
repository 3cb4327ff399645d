"""Tests of jaxdist.compressors._lowrank: PowerSGD's rank-r power-iteration compressor."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdist.compressors._base import payload_bits, per_leaf
from jaxdist.compressors._lowrank import _outer_sum_dot, _outer_sum_loop, power_sgd


def matrix(shape, seed=0, dtype="float32"):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype=dtype)


def as64(a):
    return np.asarray(jnp.asarray(a, jnp.float32) if a.dtype == jnp.bfloat16 else a, np.float64)


def vector_view(d):
    n = math.isqrt(d)
    return n, -(-d // n)


def numpy_reference(key, g, rank):
    """PowerSGD step in float64 NumPy from the same Gaussian start Q."""
    g = np.asarray(g, np.float64)
    q = np.asarray(jax.random.normal(key, (g.shape[1], rank), jnp.float32), np.float64)
    p_hat, _ = np.linalg.qr(g @ q)
    return p_hat @ (p_hat.T @ g)


# ---------------------------------------------------------------------------------------------
# Message size.


@pytest.mark.parametrize("shape", [(5, 10), (10, 5), (7, 7), (1, 9), (12, 3)])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_bits_of_a_matrix(shape, rank):
    n, m = shape
    if rank > min(n, m):
        pytest.skip("rank too large for this shape")
    c = power_sgd(rank)
    g = matrix(shape)
    payload = jax.eval_shape(c.encode, jax.random.key(0), g)  # static layout, no compile
    assert payload["p"].shape == (n, rank) and payload["q"].shape == (m, rank)
    assert payload_bits(payload) == c.bits(g) == 32 * rank * (n + m)


@pytest.mark.parametrize("d", [1, 2, 10, 19, 50, 99, 101])
def test_bits_of_a_vector(d):
    n, m = vector_view(d)
    assert n * m >= d and n * m - d < n
    c = power_sgd(1)
    x = matrix((d,))
    payload = jax.eval_shape(c.encode, jax.random.key(0), x)
    assert payload["p"].shape == (n, 1) and payload["q"].shape == (m, 1)
    assert payload_bits(payload) == c.bits(x) == c.bits(d) == 32 * (n + m)


def test_bits_depend_on_the_matrix_shape_not_only_on_d():
    c = power_sgd(2)
    assert c.bits(matrix((4, 25))) == 32 * 2 * 29
    assert c.bits(matrix((100,))) == c.bits(100) == 32 * 2 * 20
    assert c.bits(jax.ShapeDtypeStruct((4, 25), jnp.bfloat16)) == 16 * 2 * 29


def test_forced_shape():
    c = power_sgd(2, shape=(4, 13))  # 52 >= 50 entries: two zeros of padding
    x = matrix((50,))
    payload = c.encode(jax.random.key(1), x)
    assert payload["p"].shape == (4, 2) and payload["q"].shape == (13, 2)
    assert payload_bits(payload) == c.bits(x) == c.bits(50) == 32 * 2 * 17
    # The forced view also applies to a matrix input.
    assert c.bits(matrix((5, 10))) == 32 * 2 * 17
    out = c.compress(jax.random.key(1), x)
    assert out.shape == (50,)


# ---------------------------------------------------------------------------------------------
# The maths.


@pytest.mark.parametrize("shape,rank", [((6, 9), 1), ((9, 6), 3), ((8, 8), 2), ((50,), 3)])
def test_projection_property(shape, rank):
    """||G_hat - G||^2 = ||G||^2 - ||P_hat^T G||^2 <= ||G||^2 for every key and input.

    (With zero padding, ``<=`` in the first relation: the padded entries are dropped.)
    """
    c = power_sgd(rank)
    keys = jax.random.split(jax.random.key(2), 64)
    for seed in range(3):
        g = matrix(shape, seed=seed)
        payload = jax.vmap(c.encode, in_axes=(0, None))(keys, g)
        out = jax.vmap(c.compress, in_axes=(0, None))(keys, g)
        g64 = as64(g).reshape(-1)
        sq = np.sum(g64**2)
        err = np.sum((as64(out).reshape(len(keys), -1) - g64) ** 2, axis=1)
        assert np.all(err <= sq * (1 + 1e-5))
        # P_hat is orthonormal and the error is exactly the energy outside its span.
        p = as64(payload["p"])
        eye = np.broadcast_to(np.eye(rank), (len(keys), rank, rank))
        np.testing.assert_allclose(np.swapaxes(p, 1, 2) @ p, eye, atol=1e-5)
        n, m = shape if len(shape) == 2 else vector_view(shape[0])
        gm = np.pad(g64, (0, n * m - g64.size)).reshape(n, m)
        captured = np.sum((np.swapaxes(p, 1, 2) @ gm) ** 2, axis=(1, 2))
        if n * m == g64.size:
            np.testing.assert_allclose(err, sq - captured, atol=1e-4 * sq)
        else:  # the output's entries in the zero padding are dropped, which only helps
            assert np.all(err <= sq - captured + 1e-4 * sq)


def test_matches_numpy_reference():
    c = power_sgd(3)
    g = matrix((12, 7), seed=4)
    for s in range(4):
        key = jax.random.key(s)
        np.testing.assert_allclose(
            as64(c.compress(key, g)), numpy_reference(key, g, 3), rtol=1e-4, atol=1e-4
        )


@pytest.mark.parametrize("shape", [(5, 8), (8, 5), (1, 7), (30,)])
def test_full_rank_reproduces_the_input(shape, float_dtype):
    n, m = shape if len(shape) == 2 else vector_view(shape[0])
    c = power_sgd(min(n, m))
    g = matrix(shape, seed=5, dtype=float_dtype)
    tol = 1e-4 if float_dtype == "float32" else 1e-10
    keys = jax.random.split(jax.random.key(0), 8)
    out = jax.jit(jax.vmap(c.compress, in_axes=(0, None)))(keys, g)
    assert out.dtype == g.dtype
    for i in range(len(keys)):
        np.testing.assert_allclose(as64(out[i]), as64(g), atol=tol * float(jnp.max(jnp.abs(g))))


def test_rank_deficient_and_zero_inputs_are_finite():
    c = power_sgd(3)
    u = np.arange(1.0, 7.0)
    v = np.linspace(-1.0, 2.0, 5)
    rank_one = jnp.asarray(np.outer(u, v), jnp.float32)
    keys = jax.random.split(jax.random.key(0), 4)
    outs = jax.vmap(c.compress, in_axes=(0, None))(keys, rank_one)
    assert bool(jnp.all(jnp.isfinite(outs)))
    for out in outs:  # the sketch spans the column space, so a rank-1 input is reproduced
        np.testing.assert_allclose(as64(out), as64(rank_one), atol=1e-5 * 12)
    for shape in [(6, 5), (30,)]:
        zero = jnp.zeros(shape, jnp.float32)
        payload = c.encode(jax.random.key(0), zero)
        assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in payload.values())
        out = c.compress(jax.random.key(0), zero)
        np.testing.assert_array_equal(np.asarray(out), np.zeros(shape))


def test_shared_key_gives_the_same_sketch_on_every_worker():
    """With G = I the output is the projector onto span(Q): it exposes the random start."""
    c = power_sgd(2)
    assert c.shared_key and not c.deterministic and not c.unbiased
    assert c.alpha(36) is None and c.omega(36) is None
    eye = jnp.eye(6)
    key = jax.random.key(3)

    def worker(g):
        same = c.compress(key, g)
        own = c.compress(jax.random.fold_in(key, jax.lax.axis_index("workers")), g)
        return same, own

    same, own = jax.vmap(worker, axis_name="workers")(jnp.stack([eye] * 4))
    for i in range(1, 4):
        np.testing.assert_array_equal(np.asarray(same[i]), np.asarray(same[0]))
        assert not np.allclose(np.asarray(own[i]), np.asarray(own[0]))
    proj = as64(same[0])
    np.testing.assert_allclose(proj @ proj, proj, atol=1e-5)  # an orthogonal projector
    np.testing.assert_allclose(np.trace(proj), 2.0, atol=1e-5)  # of rank 2
    q = np.asarray(jax.random.normal(key, (6, 2), jnp.float32), np.float64)
    np.testing.assert_allclose(proj @ q, q, atol=1e-5)  # onto span(Q)


def test_both_matrix_product_paths_agree():
    """The CPU loop and the dot_general used on other platforms compute the same product."""
    a, b = matrix((13, 7), seed=7), matrix((13, 3), seed=8)
    ref = as64(a).T @ as64(b)
    np.testing.assert_allclose(as64(_outer_sum_loop(a, b)), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(as64(_outer_sum_dot(a, b)), ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Contract: dtypes, jit, vmap, determinism, wire form, pytrees.


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("shape", [(6, 9), (50,)])
def test_dtype_shape_and_wire_form(dtype, shape, x64):
    c = power_sgd(2)
    g = matrix(shape, seed=1, dtype=dtype)
    key = jax.random.key(4)
    out = c.compress(key, g)
    assert out.shape == g.shape and out.dtype == g.dtype
    payload = c.encode(key, g)
    assert all(leaf.dtype == g.dtype for leaf in payload.values())
    assert payload_bits(payload) == c.bits(g)
    b = jnp.dtype(dtype).itemsize * 8
    n, m = shape if len(shape) == 2 else vector_view(shape[0])
    assert c.bits(g) == b * 2 * (n + m)
    decoded = c.decode(key, payload, g)
    np.testing.assert_array_equal(as64(decoded), as64(out))
    np.testing.assert_array_equal(as64(jax.jit(c.compress)(key, g)), as64(out))
    # Still a projection after rounding the factors to the wire dtype.
    sq = np.sum(as64(g) ** 2)
    rel = 2e-2 if dtype == "bfloat16" else 1e-5
    assert np.sum((as64(out) - as64(g)) ** 2) <= sq * (1 + rel)


@pytest.mark.parametrize("rank,shape", [(1, (6, 9)), (3, (40,))])
def test_vmap_matches_loop_bitwise_determinism_and_raw_keys(rank, shape):
    c = power_sgd(rank)
    g = matrix(shape, seed=2)
    keys = jax.random.split(jax.random.key(5), 5)
    batched = jax.vmap(c.compress, in_axes=(0, None))(keys, g)
    for i in range(5):
        np.testing.assert_array_equal(np.asarray(batched[i]), np.asarray(c.compress(keys[i], g)))
    # Batched over inputs, and over both under jit (workers with their own keys).
    gs = jnp.stack([g, 2.0 * g, g - 1.0])
    by_input = jax.vmap(c.compress, in_axes=(None, 0))(keys[0], gs)
    both = jax.jit(jax.vmap(c.compress))(keys[:3], gs)
    for i in range(3):
        np.testing.assert_array_equal(
            np.asarray(by_input[i]), np.asarray(c.compress(keys[0], gs[i]))
        )
        np.testing.assert_array_equal(np.asarray(both[i]), np.asarray(c.compress(keys[i], gs[i])))
    np.testing.assert_array_equal(
        np.asarray(c.compress(keys[0], g)), np.asarray(c.compress(keys[0], g))
    )
    assert not np.array_equal(np.asarray(batched[0]), np.asarray(batched[1]))
    raw = jax.random.PRNGKey(0)
    np.testing.assert_array_equal(
        np.asarray(c.compress(raw, g)), np.asarray(c.compress(jax.random.wrap_key_data(raw), g))
    )


def test_pytree_flattened_and_per_leaf():
    tree = {"b": matrix((6,), seed=1), "w": matrix((8, 5), seed=2), "z": matrix((3, 4), seed=3)}
    key = jax.random.key(6)
    # Flattened: one 58-vector, viewed as 7 x 9.
    c = power_sgd(2)
    flat = jnp.concatenate([tree["b"], tree["w"].reshape(-1), tree["z"].reshape(-1)])
    out = c.compress(key, tree)
    got = jnp.concatenate([out["b"], out["w"].reshape(-1), out["z"].reshape(-1)])
    np.testing.assert_array_equal(np.asarray(got), np.asarray(c.compress(key, flat)))
    assert c.bits(tree) == c.bits(58) == 32 * 2 * (7 + 9)
    # Layer-wise: every matrix leaf keeps its shape; the bias is a 2 x 3 view.
    pl = per_leaf(power_sgd(2))
    out = pl.compress(key, tree)
    payload = pl.encode(key, tree)
    decoded = pl.decode(key, payload, tree)
    for leaf in tree:
        assert out[leaf].shape == tree[leaf].shape
        np.testing.assert_array_equal(np.asarray(out[leaf]), np.asarray(decoded[leaf]))
    assert payload_bits(payload) == pl.bits(tree) == 32 * 2 * ((2 + 3) + (8 + 5) + (3 + 4))
    leaves = jax.tree_util.tree_leaves(tree)
    for i, leaf in enumerate(leaves):
        direct = power_sgd(2).compress(jax.random.fold_in(key, i), leaf)
        np.testing.assert_array_equal(
            np.asarray(jax.tree_util.tree_leaves(out)[i]), np.asarray(direct)
        )


# ---------------------------------------------------------------------------------------------
# Bad input.


def test_bad_arguments():
    for bad in (0, -1):
        with pytest.raises(ValueError, match="rank"):
            power_sgd(bad)
    with pytest.raises(TypeError, match="rank"):
        power_sgd(1.5)
    with pytest.raises(ValueError, match="rank"):
        power_sgd(3, shape=(2, 10))
    for bad_shape in ((0, 4), (4, -1)):
        with pytest.raises(ValueError, match="shape"):
            power_sgd(1, shape=bad_shape)
    for bad_shape in ((3,), (2, 3, 4), "ab", (2.0, 3), 6):
        with pytest.raises(TypeError, match="shape"):
            power_sgd(1, shape=bad_shape)
    with pytest.raises(ValueError, match="rank"):
        power_sgd(4).compress(jax.random.key(0), matrix((3, 10)))
    with pytest.raises(ValueError, match="rank"):
        power_sgd(3).bits(5)  # 5 -> 2 x 3 view
    with pytest.raises(ValueError, match="rank"):
        jax.jit(power_sgd(3).compress)(jax.random.key(0), matrix((8,)))
    with pytest.raises(ValueError, match="shape"):
        power_sgd(1, shape=(3, 3)).compress(jax.random.key(0), matrix((10,)))
    with pytest.raises(TypeError, match="dtype"):
        power_sgd(1).compress(jax.random.key(0), jnp.ones((3, 3), jnp.int32))
