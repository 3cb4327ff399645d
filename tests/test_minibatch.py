"""Tests of jaxdist.problems.sample_minibatch: uniform sampling without replacement (b-nice)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdist.problems import sample_minibatch


def _draw_rows(n, b, num_draws, *, count=None, seed=0):
    """Row indices of ``num_draws`` independent minibatches, shape (num_draws, b)."""
    data = {"i": jnp.arange(n), "x": jnp.arange(n, dtype=jnp.float32)[:, None] * jnp.ones(3)}
    keys = jax.random.split(jax.random.key(seed), num_draws)
    fn = jax.jit(jax.vmap(lambda k: sample_minibatch(k, data, b, count=count)))
    out = fn(keys)
    rows = np.asarray(out["i"])
    # every leaf is indexed by the same rows
    np.testing.assert_array_equal(np.asarray(out["x"]), rows[..., None] * np.ones(3))
    return rows


@pytest.mark.parametrize("n,b", [(10, 3), (7, 7), (25, 1), (12, 11)])
def test_inclusion_probability_is_b_over_n(n, b):
    N = 20_000
    rows = _draw_rows(n, b, N)
    assert rows.shape == (N, b)
    # no sample twice in a batch
    assert np.all(np.sort(rows, axis=1)[:, 1:] != np.sort(rows, axis=1)[:, :-1])
    freq = np.stack([(rows == i).any(axis=1) for i in range(n)], axis=1).mean(axis=0)
    p = b / n
    se = np.sqrt(p * (1 - p) / N)
    assert np.all(np.abs(freq - p) <= 5 * se + 1e-12), (freq, p)


def test_pair_inclusion_is_that_of_a_uniform_subset():
    # b-nice sampling: P(i and j both in S) = b(b-1)/(n(n-1)) for every pair i != j; sampling
    # with replacement, or any scheme with the right marginals but correlated rows, fails this.
    n, b, N = 6, 3, 40_000
    rows = _draw_rows(n, b, N, seed=1)
    member = np.stack([(rows == i).any(axis=1) for i in range(n)], axis=1)
    q = b * (b - 1) / (n * (n - 1))
    se = np.sqrt(q * (1 - q) / N)
    for i, j in itertools.combinations(range(n), 2):
        assert abs(np.mean(member[:, i] & member[:, j]) - q) <= 5 * se, (i, j)
    # and every one of the C(6, 3) = 20 subsets appears with frequency 1/20
    subsets = {}
    for r in map(tuple, np.sort(rows, axis=1)):
        subsets[r] = subsets.get(r, 0) + 1
    assert len(subsets) == 20
    se_s = np.sqrt((1 / 20) * (19 / 20) / N)
    assert max(abs(c / N - 1 / 20) for c in subsets.values()) <= 5 * se_s


def test_padding_rows_are_never_drawn_and_real_rows_are_uniform():
    n, count, b, N = 12, 8, 3, 20_000
    rows = _draw_rows(n, b, N, count=count, seed=2)
    assert rows.max() < count
    assert np.all(np.sort(rows, axis=1)[:, 1:] != np.sort(rows, axis=1)[:, :-1])
    freq = np.stack([(rows == i).any(axis=1) for i in range(count)], axis=1).mean(axis=0)
    p = b / count
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / N))


def test_traced_per_worker_counts_under_vmap():
    # three workers with 5, 3 and 8 real rows out of 8, as a logistic problem stores them
    counts = jnp.array([5, 3, 8], jnp.int32)
    data = {"i": jnp.tile(jnp.arange(8), (3, 1))}

    @jax.jit
    def draw(key):
        keys = jax.random.split(key, 3)  # one key per worker
        return jax.vmap(lambda k, d, c: sample_minibatch(k, d, 3, count=c))(keys, data, counts)

    seen = [set(), set(), set()]
    for t in range(200):
        rows = np.asarray(draw(jax.random.key(t))["i"])
        for m in range(3):
            assert len(set(rows[m])) == 3 and rows[m].max() < int(counts[m])
            seen[m] |= set(rows[m].tolist())
    assert [len(s) for s in seen] == [5, 3, 8]


def test_same_draws_as_the_exact_subset_sampler():
    """One subset sampler in the package: Rand-K's (O(b) words, exactly uniform); with a count,
    the first real rows of a permutation, the same whether the count is concrete or traced."""
    from jaxdist.compressors._sampling import sample_subset

    data = {"a": jnp.arange(50.0)}
    for seed in range(5):
        key = jax.random.key(seed)
        got = sample_minibatch(key, data, 7)["a"]
        np.testing.assert_array_equal(np.asarray(got), np.asarray(sample_subset(key, 50, 7)))
        part = sample_minibatch(key, data, 7, count=20)["a"]
        traced = jax.jit(lambda c, key=key: sample_minibatch(key, data, 7, count=c)["a"])
        np.testing.assert_array_equal(np.asarray(part), np.asarray(traced(jnp.int32(20))))
        assert np.all(np.asarray(part) < 20) and len(set(np.asarray(part).tolist())) == 7


def test_keys_pytrees_and_dtypes():
    data = {"X": jnp.ones((9, 2), jnp.float16), "y": (jnp.arange(9, dtype=jnp.int8),)}
    a = sample_minibatch(7, data, 4)
    b = sample_minibatch(jax.random.key(7), data, 4)
    c = sample_minibatch(jax.random.PRNGKey(7), data, 4)
    for other in (b, c):
        np.testing.assert_array_equal(np.asarray(a["y"][0]), np.asarray(other["y"][0]))
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(data)
    assert a["X"].shape == (4, 2) and a["X"].dtype == jnp.float16
    assert a["y"][0].shape == (4,) and a["y"][0].dtype == jnp.int8
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        s = sample_minibatch(jax.random.key(0), data, 3, count=jnp.int32(5))
        assert int(s["y"][0].max()) < 5


def test_x64_counts_and_strict_promotion(x64):
    data = {"x": jnp.arange(6.0)}
    with jax.numpy_dtype_promotion("strict"):
        for count in (jnp.int32(4), jnp.int64(4), 4, np.int16(4)):
            s = sample_minibatch(jax.random.key(1), data, 4, count=count)
            assert sorted(np.asarray(s["x"]).tolist()) == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        (dict(batch_size=11), ValueError, "batch_size=11 exceeds the n=10 samples"),
        (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
        (dict(batch_size=2.0), TypeError, "batch_size must be a Python int"),
        (dict(batch_size=4, count=3), ValueError, "batch_size <= count <= n"),
        (dict(batch_size=4, count=11), ValueError, "batch_size <= count <= n"),
        (dict(batch_size=4, count=5.0), TypeError, "count must be an integer scalar"),
        (dict(batch_size=4, count=np.array([5, 5])), TypeError, "count must be an integer"),
    ],
)
def test_errors(kwargs, err, match):
    data = {"x": jnp.zeros((10, 2))}
    with pytest.raises(err, match=match):
        sample_minibatch(jax.random.key(0), data, **kwargs)


def test_malformed_data():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="same leading size"):
        sample_minibatch(key, {"a": jnp.zeros(5), "b": jnp.zeros(6)}, 2)
    with pytest.raises(ValueError, match="scalar leaf"):
        sample_minibatch(key, {"a": jnp.zeros(5), "count": jnp.int32(5)}, 2)
    with pytest.raises(ValueError, match="no arrays"):
        sample_minibatch(key, {}, 2)
    with pytest.raises(TypeError, match="key must be"):
        sample_minibatch("k", {"a": jnp.zeros(5)}, 2)
