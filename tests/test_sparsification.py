"""Tests of Rand-K, Perm-K, Bernoulli and Top-K (jaxdist.compressors._sparsification).

Monte-Carlo checks vmap over many keys and compare with THEORY.md §1.2 within 6 standard errors
estimated from the sample; the exact identities (decode ∘ encode, bits, Top-K's deterministic
bound, Perm-K's disjoint cover) are checked exactly.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxdist.compressors._base import payload_bits, per_leaf
from jaxdist.compressors._sparsification import bernoulli, perm_k, rand_k, top_k

N_MC = 20_000  # Monte-Carlo samples
Z = 6.0  # tolerance in standard errors


def _ceil_log2(d):
    return math.ceil(math.log2(d)) if d > 1 else 0


# name, factory, THEORY.md bits formula bits(d, b), random?
CASES = {
    "rand_k": (lambda: rand_k(3), lambda d, b: 3 * b, True),
    "rand_k_list": (
        lambda: rand_k(3, index_coding="list"),
        lambda d, b: 3 * b + 3 * _ceil_log2(d),
        True,
    ),
    "rand_k_mask": (lambda: rand_k(12, index_coding="mask"), lambda d, b: 12 * b + d, True),
    "rand_k_enum": (
        lambda: rand_k(3, index_coding="enumerative"),
        lambda d, b: 3 * b + math.ceil(math.log2(math.comb(d, 3))),
        True,
    ),
    "rand_k_unscaled": (lambda: rand_k(3, scaled=False), lambda d, b: 3 * b, True),
    "rand_k_shared": (lambda: rand_k(3, shared=True), lambda d, b: 3 * b, True),
    "bernoulli": (lambda: bernoulli(0.5), lambda d, b: 1 + d * b, True),
    "top_k": (lambda: top_k(3), lambda d, b: 3 * b + 3 * _ceil_log2(d), False),
    "top_k_mask": (lambda: top_k(3, index_coding="mask"), lambda d, b: 3 * b + d, False),
}


def _x(shape=(4, 5), dtype="float32", seed=0):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32).astype(dtype)


def _bitwise_equal(a, b):
    """Same dtype, shape and bits; NaNs must match in position (not payload: backends differ)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    if jnp.issubdtype(a.dtype, jnp.floating):
        nan_a, nan_b = np.isnan(a.astype(np.float64)), np.isnan(b.astype(np.float64))
        np.testing.assert_array_equal(nan_a, nan_b)
        a, b = np.where(nan_a, 0, a).astype(a.dtype), np.where(nan_b, 0, b).astype(b.dtype)
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def _tree_bitwise_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        _bitwise_equal(u, v)


def _within(estimate_samples, target, what):
    """Mean of the samples equals ``target`` within Z standard errors (per coordinate)."""
    s = np.asarray(estimate_samples, np.float64)
    mean = s.mean(axis=0)
    se = s.std(axis=0, ddof=1) / math.sqrt(s.shape[0])
    err = np.abs(mean - target)
    assert np.all(err <= Z * se + 1e-12 * np.abs(target)), (
        f"{what}: estimate {mean} vs theory {target} (|diff| {err}, {Z} SE = {Z * se})"
    )


def _mc(c, x, n=N_MC, seed=0):
    keys = jax.random.split(jax.random.key(seed), n)
    return np.asarray(jax.jit(jax.vmap(c.compress, (0, None)))(keys, x), np.float64)


# -- contract tests common to the per-vector sparsifiers -------------------------------------


def _check_roundtrip(c, name, x, bits_formula, compressed, key):
    payload = c.encode(key, x)
    assert payload["values"].dtype == x.dtype
    _bitwise_equal(c.decode(key, payload, x), compressed)
    b = jnp.dtype(x.dtype).itemsize * 8
    assert c.bits(x) == bits_formula(x.size, b) == c.bits(x.size, x.dtype)
    if name == "rand_k_enum":
        assert payload_bits(payload) > c.bits(x)  # an accounting of the optimal code
    else:
        assert payload_bits(payload) == c.bits(x)


@pytest.mark.parametrize("name", CASES)
def test_roundtrip_bits(name):
    """float32: decode(encode(x)) == compress(x) bitwise; payload bits == bits(d) == THEORY.md."""
    factory, bits_formula, _ = CASES[name]
    c = factory()
    x = _x()
    key = jax.random.key(1)
    y = c.compress(key, x)
    assert y.shape == x.shape and y.dtype == x.dtype
    _check_roundtrip(c, name, x, bits_formula, y, key)


@pytest.mark.parametrize("name", ["rand_k", "rand_k_unscaled", "bernoulli", "top_k"])
def test_jit_vmap_determinism(name):
    """jit(vmap over keys) == eager per key, deterministic per key, different keys differ."""
    factory, bits_formula, random = CASES[name]
    c = factory()
    x = _x()
    keys = jax.random.split(jax.random.key(3), 16)
    batched = jax.jit(jax.vmap(c.compress, (0, None)))
    ys = batched(keys, x)
    assert ys.shape == (16, *x.shape) and ys.dtype == x.dtype
    _bitwise_equal(batched(keys, x), ys)  # deterministic per key
    for i in range(2):
        _bitwise_equal(c.compress(keys[i], x), ys[i])  # eager == jit(vmap)
    distinct = {np.asarray(y).tobytes() for y in ys}
    assert (len(distinct) > 1) if random else (len(distinct) == 1)
    _bitwise_equal(jax.jit(c.decode)(keys[1], jax.jit(c.encode)(keys[1], x), x), ys[1])
    raw = jax.random.PRNGKey(3)  # raw uint32 keys work
    _bitwise_equal(c.compress(raw, x), c.compress(jax.random.wrap_key_data(raw), x))


@pytest.mark.parametrize("name", CASES)
def test_low_precision_dtypes(name):
    factory, bits_formula, _ = CASES[name]
    c = factory()
    for dtype in ("bfloat16", "float16"):
        x = _x(dtype=dtype)
        key = jax.random.key(1)
        y = c.compress(key, x)
        assert y.shape == x.shape and y.dtype == x.dtype
        _check_roundtrip(c, name, x, bits_formula, y, key)


@pytest.mark.parametrize("name", ["rand_k", "rand_k_mask", "bernoulli", "top_k"])
def test_float64(name, x64):
    factory, bits_formula, _ = CASES[name]
    c = factory()
    x = _x(dtype="float64")
    assert x.dtype == jnp.float64
    key = jax.random.key(1)
    y = c.compress(key, x)
    assert y.dtype == jnp.float64 and y.shape == x.shape
    _check_roundtrip(c, name, x, bits_formula, y, key)


@pytest.mark.parametrize("name", ["rand_k", "bernoulli", "top_k"])
def test_pytree_and_per_leaf(name):
    c = CASES[name][0]()
    tree = {"a": _x((4, 5), seed=1), "b": _x((20,), seed=2), "c": _x((2, 2, 5), seed=3)}
    key = jax.random.key(4)
    y = c.compress(key, tree)
    assert jax.tree_util.tree_structure(y) == jax.tree_util.tree_structure(tree)
    for u, v in zip(jax.tree_util.tree_leaves(y), jax.tree_util.tree_leaves(tree), strict=True):
        assert u.shape == v.shape and u.dtype == v.dtype
    _tree_bitwise_equal(c.decode(key, c.encode(key, tree), tree), y)
    flat = jnp.concatenate([leaf.reshape(-1) for leaf in jax.tree_util.tree_leaves(tree)])
    y_flat = jnp.concatenate([leaf.reshape(-1) for leaf in jax.tree_util.tree_leaves(y)])
    _bitwise_equal(c.compress(key, flat), y_flat)  # flattened compression
    assert c.bits(tree) == c.bits(60)

    pl = per_leaf(c)
    z = pl.compress(key, tree)
    _tree_bitwise_equal(pl.decode(key, pl.encode(key, tree), tree), z)
    for i, (leaf, out) in enumerate(
        zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(z), strict=True)
    ):
        _bitwise_equal(out, c.compress(jax.random.fold_in(key, i), leaf))
    assert pl.bits(tree) == 3 * c.bits(20)
    assert payload_bits(pl.encode(key, tree)) == pl.bits(tree)


@pytest.mark.parametrize("name", CASES)
def test_integer_input_raises(name):
    c = CASES[name][0]()
    with pytest.raises(TypeError, match="floating-point"):
        c.compress(jax.random.key(0), jnp.arange(20))
    with pytest.raises(TypeError, match="floating-point"):
        c.compress(jax.random.key(0), jnp.ones(20, bool))


def test_bad_parameters():
    with pytest.raises(ValueError, match="k must be >= 1"):
        rand_k(0)
    with pytest.raises(TypeError, match="k must be a Python int"):
        rand_k(2.5)
    with pytest.raises(ValueError, match="k=5 is larger than the dimension d=3"):
        rand_k(5).compress(jax.random.key(0), jnp.ones(3))
    with pytest.raises(ValueError, match="k=5 is larger than the dimension d=3"):
        rand_k(5).bits(3)
    with pytest.raises(ValueError, match="index_coding"):
        rand_k(2, index_coding="elias")
    with pytest.raises(ValueError, match="index_coding"):
        top_k(2, index_coding="seed")  # Top-K indices depend on the data
    with pytest.raises(ValueError, match="k must be >= 1"):
        top_k(-1)
    with pytest.raises(ValueError, match="k=4 is larger than the dimension d=2"):
        top_k(4).compress(jax.random.key(0), jnp.ones(2))
    for p in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"p must be in \(0, 1\]"):
            bernoulli(p)
    with pytest.raises(ValueError, match="p must not be NaN"):
        bernoulli(float("nan"))
    with pytest.raises(ValueError, match="num_workers must be >= 1"):
        perm_k(num_workers=0)


def test_bad_argument_types_name_the_parameter():
    for bad in ("no", 1, None, np.float32(1.0)):
        with pytest.raises(TypeError, match="scaled must be True or False"):
            rand_k(5, scaled=bad)
        with pytest.raises(TypeError, match="shared must be True or False"):
            rand_k(5, shared=bad)
    assert rand_k(5, scaled=np.bool_(False)) == rand_k(5, scaled=False)  # NumPy bools are bools
    for bad in ("0.5", "abc", None, True, [0.5], 1j):
        with pytest.raises(TypeError, match="^p must be"):
            bernoulli(bad)
    for bad in (3, None, b"seed"):
        with pytest.raises(TypeError, match="index_coding must be one of the strings"):
            rand_k(2, index_coding=bad)
        with pytest.raises(TypeError, match="index_coding must be one of the strings"):
            top_k(2, index_coding=bad)
    for bad in ("3", 3.0, True):
        with pytest.raises(TypeError, match="^k must be a Python int"):
            rand_k(bad)
        with pytest.raises(TypeError, match="^k must be a Python int"):
            top_k(bad)
        with pytest.raises(TypeError, match="^num_workers must be a Python int"):
            perm_k(num_workers=bad)
    with pytest.raises(TypeError, match="axis_name must be hashable"):
        perm_k(axis_name=["workers"])


def test_constants():
    assert rand_k(3).omega(12) == pytest.approx(3.0) and rand_k(3).alpha(12) is None
    assert rand_k(3, scaled=False).alpha(12) == pytest.approx(0.25)
    assert rand_k(3, scaled=False).omega(12) is None
    assert bernoulli(0.25).omega(7) == 3.0 and bernoulli(0.3).omega(7) == pytest.approx(7 / 3)
    assert top_k(3).alpha(12) == pytest.approx(0.25) and top_k(3).omega(12) is None
    assert rand_k(3).unbiased and not rand_k(3, scaled=False).unbiased
    assert rand_k(3, shared=True).shared_key and not rand_k(3).shared_key
    assert top_k(3).deterministic and top_k(3).projection and rand_k(3, scaled=False).projection
    assert not rand_k(3).projection
    assert rand_k(3).kept_fn(10) == 3 and top_k(2).kept_fn(10) == 2
    # enumerative bits: ceil(log2 C(d, k)) exactly, also where floats would round wrongly
    assert rand_k(1, index_coding="enumerative").bits(1024) == 32 + 10
    assert rand_k(1, index_coding="enumerative").bits(1025) == 32 + 11
    assert (
        rand_k(500, index_coding="enumerative").bits(10**6)
        == 500 * 32 + (math.comb(10**6, 500) - 1).bit_length()
    )
    assert rand_k(4, index_coding="enumerative").bits(4) == 4 * 32  # one subset: 0 bits


# -- Rand-K ---------------------------------------------------------------------------------------


def _spiky(d):
    x = np.full(d, 0.01)
    x[3] = 5.0
    x[-1] = -2.0
    return jnp.asarray(x, jnp.float32)


@pytest.mark.parametrize("which", ["normal", "spiky"])
def test_rand_k_unbiased_variance_equality(which):
    d, k = 12, 3
    x = _x((d,), seed=5) if which == "normal" else _spiky(d)
    c = rand_k(k)
    out = _mc(c, x)
    xs = np.asarray(x, np.float64)
    _within(out, xs, "E C(x)")
    omega = c.omega(d)
    _within(np.sum((out - xs) ** 2, axis=1), omega * np.sum(xs**2), "E||C(x) - x||^2")
    # ||C(x)||^2 = (d/k)^2 Σ_S x_i^2 exactly; its mean is (ω + 1)||x||^2
    _within(np.sum(out**2, axis=1), (omega + 1) * np.sum(xs**2), "E||C(x)||^2")


def test_rand_k_unscaled_contraction_equality():
    d, k = 12, 4
    x = _x((d,), seed=6)
    c = rand_k(k, scaled=False)
    out = _mc(c, x)
    xs = np.asarray(x, np.float64)
    _within(np.sum((out - xs) ** 2, axis=1), (1 - c.alpha(d)) * np.sum(xs**2), "E||C - x||^2")
    _within(out, (k / d) * xs, "E C(x) = (k/d) x")
    kept = out != 0
    np.testing.assert_array_equal(np.where(kept, out, 0), np.where(kept, xs, 0))  # unscaled


def test_rand_k_large_k_and_d():
    """Complement branch (k > d/2) and a large d: k nonzeros, scaled by d/k, in the input."""
    for d, k in [(50, 40), (100_000, 1000)]:
        x = jnp.arange(1, d + 1, dtype=jnp.float32)
        y = np.asarray(jax.jit(rand_k(k, index_coding="list").compress)(jax.random.key(8), x))
        nz = np.flatnonzero(y)
        assert nz.size == k
        np.testing.assert_allclose(y[nz], (nz + 1) * (d / k), rtol=1e-6)


def test_rand_k_independent_vs_shared_workers():
    """M workers: independent keys average the noise (ω/M); a shared key does not (ω)."""
    m_workers, d, k = 4, 12, 3
    a = np.array(jax.random.normal(jax.random.key(9), (m_workers, d)), np.float32)
    a[:, 0] += 2.0  # a common component, so ||ā||^2 is not small
    a = jnp.asarray(a)
    a64 = np.asarray(a, np.float64)
    abar = a64.mean(axis=0)
    c, c_shared = rand_k(k), rand_k(k, shared=True)
    omega = c.omega(d)

    def independent(key):
        keys = jax.vmap(lambda m: jax.random.fold_in(key, m))(jnp.arange(m_workers))
        return jnp.mean(jax.vmap(c.compress)(keys, a), axis=0)

    def shared(key):
        mean = jnp.mean(jax.vmap(c_shared.compress, (None, 0))(key, a), axis=0)
        return mean, c_shared.compress(key, jnp.mean(a, axis=0))

    keys = jax.random.split(jax.random.key(10), N_MC)
    ind, (sha, c_of_mean) = jax.jit(jax.vmap(lambda k: (independent(k), shared(k))))(keys)
    ind, sha = np.asarray(ind, np.float64), np.asarray(sha, np.float64)
    mean_sq = np.mean(np.sum(a64**2, axis=1))
    _within(np.sum((ind - abar) ** 2, axis=1), omega / m_workers * mean_sq, "independent")
    _within(np.sum((sha - abar) ** 2, axis=1), omega * np.sum(abar**2), "shared")
    # shared support: the mean of the compressed vectors is C(ā) (up to float rounding)
    np.testing.assert_allclose(sha, c_of_mean, rtol=1e-5, atol=1e-6)


def test_rand_k_nonfinite():
    d, k = 10, 4
    x = jnp.asarray([jnp.nan, jnp.inf, -jnp.inf, 1, 2, 3, 4, 5, 6, 7], jnp.float32)
    c = rand_k(k)
    for seed in range(8):
        key = jax.random.key(seed)
        y = np.asarray(c.compress(key, x))
        kept = np.asarray(c.compress(key, jnp.ones(d))) != 0  # the support depends on the key only
        assert kept.sum() == k
        np.testing.assert_array_equal(y[~kept], 0.0)
        expected = np.asarray(x) * (d / k)
        np.testing.assert_array_equal(y[kept], expected[kept].astype(np.float32))  # nan == nan
    y = np.asarray(rand_k(d).compress(jax.random.key(0), x))  # k = d keeps all of them
    np.testing.assert_array_equal(y, np.asarray(x))


# -- Bernoulli --------------------------------------------------------------------------------


def test_bernoulli_unbiased_variance():
    d, p = 8, 0.3
    x = _x((d,), seed=11)
    c = bernoulli(p)
    out = _mc(c, x)
    xs = np.asarray(x, np.float64)
    _within(out, xs, "E C(x)")
    _within(np.sum((out - xs) ** 2, axis=1), c.omega(d) * np.sum(xs**2), "E||C(x) - x||^2")
    sent = np.any(out != 0, axis=1)
    _within(sent.astype(np.float64), p, "P(send)")
    # all-or-nothing: a sent message is x/p
    np.testing.assert_allclose(out[sent], np.broadcast_to(xs / p, out[sent].shape), rtol=1e-6)


def test_bernoulli_p_one_and_nonfinite():
    x = jnp.asarray([jnp.nan, jnp.inf, 1.0, -2.0])
    c = bernoulli(1.0)
    assert c.deterministic and c.omega(4) == 0.0
    _bitwise_equal(c.compress(jax.random.key(0), x), x)
    c = bernoulli(0.5)
    outs = [np.asarray(c.compress(jax.random.key(s), x)) for s in range(16)]
    sent = [o for o in outs if not np.all(o == 0)]
    assert 0 < len(sent) < 16  # both outcomes occur (P(fail) = 2^-15)
    for o in sent:
        np.testing.assert_array_equal(o, np.asarray([np.nan, np.inf, 2.0, -4.0], np.float32))


# -- Top-K ----------------------------------------------------------------------------------------


def _top_k_reference(x, k):
    """NumPy Top-K: nan first, then decreasing |x|, ties by increasing index."""
    x = np.asarray(x)
    x64 = x.astype(np.float64)
    nan = np.isnan(x64)
    mag = np.where(nan, 0.0, np.abs(x64))
    order = np.lexsort((np.arange(x.size), -mag, -nan.astype(int)))  # last key is primary
    out = np.zeros_like(x)
    out[order[:k]] = x[order[:k]]
    return out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_top_k_matches_reference_and_bound(dtype):
    d, k = 16, 5
    c = top_k(k)
    keys = jax.random.split(jax.random.key(12), 500)
    scales = jnp.exp(jax.random.normal(jax.random.key(13), (500, 1)) * 3)
    xs = (jax.vmap(lambda key: jax.random.normal(key, (d,)))(keys) * scales).astype(dtype)
    # force ties: round half the rows to a coarse grid
    xs = xs.at[::2].set(jnp.round(xs[::2]))
    ys = jax.jit(jax.vmap(c.compress, (None, 0)))(jax.random.key(0), xs)
    xs64, ys64 = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    for x, y in zip(np.asarray(xs), np.asarray(ys), strict=True):
        np.testing.assert_array_equal(y, _top_k_reference(x, k))
    err = np.sum((ys64 - xs64) ** 2, axis=1)
    bound = (1 - c.alpha(d)) * np.sum(xs64**2, axis=1)
    assert np.all(err <= bound * (1 + 1e-12))


def test_top_k_worst_case_equality_and_ties():
    d, k = 16, 4
    signs = np.where(np.asarray(jax.random.bernoulli(jax.random.key(14), 0.5, (d,))), 1.0, -1.0)
    x = jnp.asarray(0.7 * signs, jnp.float32)
    y = top_k(k).compress(None, x)
    xs, ys = np.asarray(x, np.float64), np.asarray(y, np.float64)
    assert np.sum((ys - xs) ** 2) == pytest.approx((1 - k / d) * np.sum(xs**2), rel=1e-12)
    np.testing.assert_array_equal(np.flatnonzero(ys), np.arange(k))  # ties: lower index first
    y = top_k(2).compress(None, jnp.asarray([1.0, -3.0, 3.0, 2.0, -3.0]))
    np.testing.assert_array_equal(y, [0.0, -3.0, 3.0, 0.0, 0.0])
    y = top_k(2).compress(None, jnp.asarray([0.0, -0.0, 0.0]))  # signed zeros tie
    np.testing.assert_array_equal(np.signbit(np.asarray(y)), [False, True, False])


def test_top_k_nonfinite():
    x = jnp.asarray([1.0, jnp.nan, -jnp.inf, 5.0, -jnp.nan, 1e30], jnp.float32)
    y = np.asarray(top_k(3).compress(None, x))
    np.testing.assert_array_equal(y, np.float32([0.0, np.nan, -np.inf, 0.0, np.nan, 0.0]))
    y = np.asarray(top_k(4, index_coding="mask").compress(None, x))
    np.testing.assert_array_equal(y, np.float32([0.0, np.nan, -np.inf, 0.0, np.nan, 1e30]))
    y = np.asarray(top_k(1).compress(None, jnp.asarray([2.0, jnp.inf, jnp.nan])))
    assert np.isnan(y[2]) and y[0] == 0 and y[1] == 0  # nan ranks above inf


# -- Perm-K -----------------------------------------------------------------------------------


def _perm_k_round(c, key, a):
    """All M decoded messages for a shared key, simulated with vmap over the worker axis."""
    return jax.vmap(c.compress, (None, 0), axis_name="workers")(key, a)


def _perm_k_mc(a, n=N_MC, seed=0):
    c = perm_k(num_workers=a.shape[0])
    keys = jax.random.split(jax.random.key(seed), n)
    return np.asarray(jax.jit(jax.vmap(lambda key: _perm_k_round(c, key, a)))(keys), np.float64)


def _workers(m, d, seed):
    a = np.array(jax.random.normal(jax.random.key(seed), (m, d)), np.float32)
    a[:, 1] += 1.5  # a shared component: heterogeneous but correlated workers
    return jnp.asarray(a)


@pytest.mark.parametrize("m,d", [(4, 12), (3, 10), (6, 3), (5, 2)])
def test_perm_k_unbiased_omega_ab_equality(m, d):
    """Per worker: E C_m(a_m) = a_m and E||C_m(a_m) − a_m||² = ω||a_m||². Aggregate (AB with
    equality): E||mean C_m(a_m) − ā||² = A (1/M)Σ||a_m||² − B||ā||² with A = B = 1 (d >= M) or
    A = B = (d − 1)/(M − 1) (M = q·d)."""
    a = _workers(m, d, seed=m * d)
    out = _perm_k_mc(a)  # (N, M, d)
    a64 = np.asarray(a, np.float64)
    _within(out.reshape(N_MC, -1), a64.reshape(-1), "E C_m(a_m)")
    omega = perm_k(num_workers=m).omega(d)
    assert omega == (m - 1 if d >= m else d - 1)
    per_worker = np.sum((out - a64) ** 2, axis=2)  # (N, M)
    _within(per_worker, omega * np.sum(a64**2, axis=1), "E||C_m(a_m) - a_m||^2")
    if d >= m or m % d == 0:
        abar = a64.mean(axis=0)
        ab = 1.0 if d >= m else (d - 1) / (m - 1)
        target = ab * (np.mean(np.sum(a64**2, axis=1)) - np.sum(abar**2))
        _within(np.sum((out.mean(axis=1) - abar) ** 2, axis=1), target, "AB equality")


@pytest.mark.parametrize("m,d", [(4, 12), (4, 10), (6, 3)])
def test_perm_k_disjoint_cover_and_homogeneous(m, d):
    """d >= M: disjoint blocks covering [d] (also when M does not divide d); M = q·d: every
    coordinate sent q times. Homogeneous a_m = a: the average is exactly a (zero error)."""
    c = perm_k(num_workers=m)
    keys = jax.random.split(jax.random.key(15), 50)
    a = jnp.broadcast_to(_x((d,), seed=16), (m, d))

    @jax.jit
    def supports_and_means(key):
        support = _perm_k_round(c, key, jnp.ones((m, d))) != 0
        return support, jnp.mean(_perm_k_round(c, key, a), axis=0)

    supports, means = jax.vmap(supports_and_means)(keys)
    supports = np.asarray(supports)
    owners = supports.sum(axis=1)  # (keys, d): how many workers send each coordinate
    if d >= m:
        np.testing.assert_array_equal(owners, 1)
        assert np.all(supports.sum(axis=2) <= -(-d // m))  # at most q = ceil(d/M) per worker
    else:
        np.testing.assert_array_equal(owners, m // d)
    if m & (m - 1) == 0 and d >= m:
        np.testing.assert_array_equal(means, jnp.broadcast_to(a[0], means.shape))  # exactly 0
    else:
        np.testing.assert_allclose(means, jnp.broadcast_to(a[0], means.shape), rtol=2e-6)


@pytest.mark.parametrize("m,d", [(3, 10), (6, 3)])
def test_perm_k_vmap_matches_loop(m, d):
    c = perm_k()
    a = _workers(m, d, seed=17)
    key = jax.random.key(18)

    @jax.jit
    def simulate(key, a):
        payloads = jax.vmap(c.encode, (None, 0), axis_name="workers")(key, a)
        decoded = jax.vmap(c.decode, (None, 0, None), axis_name="workers")(key, payloads, a[0])
        return _perm_k_round(c, key, a), decoded, payloads

    simulated, decoded, payloads = simulate(key, a)
    _bitwise_equal(decoded, simulated)
    c_m = perm_k(num_workers=m)
    single = jax.jit(lambda key, x, w: c_m.compress(key, x, worker=w))
    for w in range(m):  # a Python loop over workers, no axis; the index is data
        _bitwise_equal(single(key, a[w], w), simulated[w])
        _bitwise_equal(c_m.compress(key, a[w], worker=w), simulated[w])  # eager, concrete
        message = jax.tree_util.tree_map(lambda leaf, w=w: leaf[w], payloads)
        _bitwise_equal(c_m.decode(key, message, a[w], worker=w), simulated[w])
    one = jax.tree_util.tree_map(lambda leaf: leaf[0], payloads)
    assert payload_bits(one) == perm_k(num_workers=m).bits(d) == (-(-d // m) * 32 if d >= m else 32)


def test_perm_k_shard_map_matches_vmap():
    m, d = 8, 20
    c = perm_k(num_workers=m)
    a = _workers(m, d, seed=19)
    key = jax.random.key(20)
    mesh = jax.make_mesh((m,), ("workers",))
    a_sharded = jax.device_put(a, jax.sharding.NamedSharding(mesh, P("workers")))
    sharded = jax.jit(
        jax.shard_map(
            lambda key, x: c.compress(key, x[0])[None],
            mesh=mesh,
            in_specs=(P(), P("workers")),
            out_specs=P("workers"),
        )
    )(key, a_sharded)
    _bitwise_equal(sharded, _perm_k_round(c, key, a))


def test_perm_k_pytree_dtypes_and_nonfinite(x64):
    m = 3
    c = perm_k(num_workers=m)
    tree = {"w": jnp.ones((m, 2, 3)), "b": jnp.ones((m, 2))}
    dtypes = ["float64", "float32", "bfloat16", "float16"]
    a = jnp.asarray([[jnp.nan, jnp.inf, 1.0, 2.0]] * m)

    @jax.jit
    def run(key):
        out = jax.vmap(c.compress, (None, 0), axis_name="workers")(key, tree)
        by_dtype = [_perm_k_round(c, key, jnp.ones((m, 7), dt)) for dt in dtypes]
        return out, by_dtype, _perm_k_round(c, key, a), _perm_k_round(c, key, jnp.ones_like(a))

    key = jax.random.key(21)
    out, by_dtype, y, owner = run(key)
    assert out["w"].dtype == jnp.float64
    # 8 coordinates, each sent by exactly one worker, scaled by M
    assert float(out["b"].sum() + out["w"].sum()) == 8 * m
    single = jax.jit(lambda key, x, w: c.compress(key, x, worker=w))
    for w in range(m):
        mine = jax.tree_util.tree_map(lambda leaf, w=w: leaf[w], tree)
        expected = jax.tree_util.tree_map(lambda leaf, w=w: leaf[w], out)
        _tree_bitwise_equal(single(key, mine, w), expected)
    for dtype, z in zip(dtypes, by_dtype, strict=True):
        assert z.dtype == jnp.dtype(dtype) and z.shape == (m, 7)
    y, owner = np.asarray(y), np.asarray(owner) != 0
    np.testing.assert_array_equal(y[~owner], 0.0)
    np.testing.assert_array_equal(y[owner], (np.asarray(a) * m)[owner])  # nan/inf pass through
    with pytest.raises(TypeError, match="floating-point"):
        jax.vmap(c.compress, (None, 0), axis_name="workers")(key, jnp.ones((m, 4), jnp.int32))


def test_perm_k_errors():
    x = jnp.ones(10)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="perm_k must run under the worker axis 'workers'"):
        perm_k().compress(key, x)
    with pytest.raises(ValueError, match="perm_k must run under the worker axis 'workers'"):
        jax.jit(perm_k().encode)(key, x)
    with pytest.raises(ValueError, match="worker axis 'w'"):
        jax.vmap(perm_k(axis_name="w").compress, (None, 0), axis_name="workers")(
            key, jnp.ones((2, 3))
        )
    with pytest.raises(ValueError, match="num_workers must equal the axis size"):
        jax.vmap(perm_k(num_workers=4).compress, (None, 0), axis_name="workers")(
            key, jnp.ones((3, 10))
        )
    with pytest.raises(ValueError, match="num_workers=None"):
        perm_k().omega(10)
    with pytest.raises(ValueError, match="num_workers=None"):
        perm_k().bits(10)
    c = perm_k(num_workers=4, axis_name="w")
    assert c.shared_key and c.needs_axis and c.unbiased and c.axis_name == "w"
    assert c.omega(10) == 3.0 and c.omega(3) == 2.0
    assert c.bits(10) == 3 * 32 and c.bits(3) == 32 and c.bits(8, "bfloat16") == 2 * 16
    assert c.kept_fn(10) == 3 and c.kept_fn(2) == 1


def test_perm_k_worker_as_data():
    """worker=m as data: a Python int, a traced int32 (vmap over jnp.arange(M) without an
    axis name), or the axis index by default; all give the same messages."""
    m, d = 4, 10
    c = perm_k(num_workers=m)
    a = _workers(m, d, seed=22)
    key = jax.random.key(23)
    by_axis = _perm_k_round(c, key, a)
    by_data = jax.jit(jax.vmap(lambda w, x: c.compress(key, x, worker=w)))(jnp.arange(m), a)
    _bitwise_equal(by_data, by_axis)
    # without num_workers, worker= under the axis takes M from the axis size
    free = jax.vmap(lambda x: perm_k().compress(key, x, worker=jnp.int32(2)), axis_name="workers")(
        a
    )
    _bitwise_equal(free, jax.vmap(lambda x: c.compress(key, x, worker=2))(a))
    # a receiver decodes every sender's message with the sender's index as data
    payloads = jax.vmap(c.encode, (None, 0), axis_name="workers")(key, a)
    decoded = jax.vmap(lambda w, p: c.decode(key, p, a[0], worker=w))(jnp.arange(m), payloads)
    _bitwise_equal(decoded, by_axis)
    # a concrete worker index overrides the axis index
    second = jax.vmap(lambda x: c.compress(key, x, worker=1), axis_name="workers")(a)
    _bitwise_equal(second, jax.vmap(lambda x: c.compress(key, x, worker=1))(a))


def test_perm_k_worker_errors_and_traced_out_of_range_is_nan():
    m, d = 4, 10
    c = perm_k(num_workers=m)
    key, x = jax.random.key(24), _x((d,), seed=25)
    for bad in (4, -1, 100):
        with pytest.raises(ValueError, match=f"worker={bad} is out of range for M=4"):
            c.compress(key, x, worker=bad)
        with pytest.raises(ValueError, match=f"worker={bad} is out of range for M=4"):
            c.encode(key, x, worker=bad)
    with pytest.raises(ValueError, match="worker=4 is out of range for M=4"):
        c.decode(key, c.encode(key, x, worker=0), x, worker=4)
    for bad in (1.0, True, "1", jnp.ones(2, jnp.int32)):
        with pytest.raises(TypeError, match="worker must be an integer scalar"):
            c.compress(key, x, worker=bad)
    with pytest.raises(TypeError, match="worker must be an integer scalar"):
        jax.jit(lambda w: c.compress(key, x, worker=w))(1.0)
    with pytest.raises(ValueError, match=r"the number of workers M must be static.*num_workers=M"):
        perm_k().compress(key, x, worker=0)
    # Traced and out of range: the payload values and the output are all NaN, never another
    # worker's block (documented in perm_k's docstring).
    compress = jax.jit(lambda w: c.compress(key, x, worker=w))
    encode = jax.jit(lambda w: c.encode(key, x, worker=w))
    decode = jax.jit(lambda w, p: c.decode(key, p, x, worker=w))
    good = encode(0)
    for bad in (-1, 4, 7):
        assert np.all(np.isnan(np.asarray(compress(bad))))
        assert np.all(np.isnan(np.asarray(encode(bad)["values"])))
        assert np.all(np.isnan(np.asarray(decode(bad, good))))
    for w in range(m):  # in range, the traced path equals the concrete one
        _bitwise_equal(compress(w), c.compress(key, x, worker=w))
        assert not np.any(np.isnan(np.asarray(compress(w))))


@pytest.mark.parametrize("m,d", [(4, 12), (6, 3)])
def test_perm_k_linear_gradient(m, d):
    """With the key and worker fixed, Perm-K is linear: grad <w, C(x)> = C(w)."""
    c = perm_k(num_workers=m)
    key, x, w = jax.random.key(26), _x((d,), seed=27), _x((d,), seed=28)
    for worker in range(m):
        grad = jax.grad(lambda v, worker=worker: jnp.vdot(w, c.compress(key, v, worker=worker)))(x)
        np.testing.assert_allclose(grad, c.compress(key, w, worker=worker), rtol=1e-6)
