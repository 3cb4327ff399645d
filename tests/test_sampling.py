"""Tests of the exact subset / permutation samplers behind Rand-K and Perm-K."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxdist.compressors import _sampling
from jaxdist.compressors._sampling import (
    expected_draws,
    num_candidates,
    random_permutation,
    sample_subset,
)

# A chi-square test rejects at this level; over the whole file the false-alarm rate stays < 1e-5.
_P_REJECT = 1e-7

_subset = jax.jit(sample_subset, static_argnums=(1, 2))
_permutation = jax.jit(random_permutation, static_argnums=1)


def _draw(d, k, n, seed=0):
    keys = jax.random.split(jax.random.key(seed), n)
    return np.asarray(jax.vmap(_subset, (0, None, None))(keys, d, k))


def _chi2_pvalue(counts, expected):
    counts = np.asarray(counts, np.float64)
    return stats.chi2.sf(np.sum((counts - expected) ** 2 / expected), df=counts.size - 1)


# -- validity -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "d,k",
    [
        (1, 0),
        (1, 1),
        (2, 1),
        (5, 2),
        (5, 3),
        (113, 11),
        (113, 100),
        (1000, 1),
        (1024, 1),
        (2000, 300),  # sort path (more than 128 candidates)
        (400, 350),  # complement through the sort path
        (2**31 - 1, 5),  # largest d; heavy rejection-free draws
    ],
)
def test_distinct_and_in_range(d, k):
    out = _subset(jax.random.key(3), d, k)
    assert out.shape == (k,) and out.dtype == jnp.int32
    out = np.asarray(out, np.int64)
    assert len(set(out.tolist())) == k
    assert np.all((out >= 0) & (out < d))


def test_many_workers_distinct_and_in_range():
    out = _draw(113, 11, 5000)
    assert out.shape == (5000, 11)
    assert np.all((out >= 0) & (out < 113))
    srt = np.sort(out, axis=1)
    assert np.all(srt[:, 1:] != srt[:, :-1])
    # independent keys give different subsets (P(two equal) = 1/C(113, 11) per pair)
    assert len({tuple(row) for row in srt.tolist()}) == 5000


def test_complement_branch_is_sorted_and_full_is_arange():
    out = np.asarray(_subset(jax.random.key(0), 10, 8))
    assert np.all(np.diff(out) > 0)
    np.testing.assert_array_equal(_subset(jax.random.key(0), 7, 7), np.arange(7))


def test_determinism_and_raw_keys():
    key = jax.random.key(42)
    a = _subset(key, 1000, 30)
    np.testing.assert_array_equal(a, _subset(key, 1000, 30))
    assert not np.array_equal(a, _subset(jax.random.key(43), 1000, 30))
    raw = jax.random.PRNGKey(42)  # raw uint32[2] keys work too
    np.testing.assert_array_equal(
        _subset(raw, 1000, 30), _subset(jax.random.wrap_key_data(raw), 1000, 30)
    )


def test_vmap_matches_loop():
    keys = jax.random.split(jax.random.key(1), 5)
    batched = jax.vmap(_subset, (0, None, None))(keys, 50, 7)
    for i in range(5):
        np.testing.assert_array_equal(batched[i], _subset(keys[i], 50, 7))


def test_bad_sizes():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="k must satisfy"):
        sample_subset(key, 5, 6)
    with pytest.raises(ValueError, match="k must satisfy"):
        sample_subset(key, 5, -1)
    with pytest.raises(ValueError, match="d must be"):
        sample_subset(key, 0, 0)
    with pytest.raises(ValueError, match="d must be"):
        sample_subset(key, 2**31, 1)
    with pytest.raises(TypeError, match="d must be a static Python int"):
        sample_subset(key, 5.0, 1)


# -- uniformity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("d,k", [(6, 3), (6, 2), (6, 4), (5, 1)])
def test_every_subset_equally_likely(d, k):
    n = 30_000
    out = np.sort(_draw(d, k, n, seed=d * 10 + k), axis=1)
    subsets = list(itertools.combinations(range(d), k))
    index = {s: i for i, s in enumerate(subsets)}
    counts = np.bincount([index[tuple(row)] for row in out.tolist()], minlength=len(subsets))
    assert _chi2_pvalue(counts, n / len(subsets)) > _P_REJECT


def test_draw_order_is_uniform():
    """First-distinct path: output in draw order, every ordered tuple equally likely."""
    d, k, n = 5, 2, 20_000
    keys = jax.random.split(jax.random.key(7), n)
    out = np.asarray(jax.jit(jax.vmap(lambda key: _sampling._first_distinct(key, d, k)))(keys))
    counts = np.zeros((d, d))
    np.add.at(counts, (out[:, 0], out[:, 1]), 1)
    off_diagonal = counts[~np.eye(d, dtype=bool)]
    assert np.all(np.diag(counts) == 0)
    assert _chi2_pvalue(off_diagonal, n / (d * (d - 1))) > _P_REJECT


@pytest.mark.parametrize("d,k", [(113, 11), (2000, 300), (300, 200)])
def test_inclusion_probabilities(d, k):
    """Each index is included with probability k/d (6 standard errors, per index)."""
    n = 10_000
    out = _draw(d, k, n, seed=k)
    freq = np.bincount(out.reshape(-1), minlength=d) / n
    p = k / d
    se = math.sqrt(p * (1 - p) / n)
    assert np.max(np.abs(freq - p)) < 6 * se
    assert _chi2_pvalue(freq * n, n * p) > _P_REJECT  # approximate (counts are dependent)


def test_pairs_uniform():
    """Pairwise inclusion frequencies match k(k-1)/(d(d-1)) for every pair."""
    d, k, n = 9, 3, 30_000
    out = _draw(d, k, n, seed=11)
    onehot = np.zeros((n, d))
    np.put_along_axis(onehot, out, 1.0, axis=1)
    pair = (onehot.T @ onehot) / n
    p = k * (k - 1) / (d * (d - 1))
    se = math.sqrt(p * (1 - p) / n)
    assert np.max(np.abs(pair[~np.eye(d, dtype=bool)] - p)) < 6 * se


def test_retry_path_stays_uniform(monkeypatch):
    """With too few candidates most attempts fail; the while_loop redraw must stay exact."""
    d, k, n = 6, 3, 30_000
    monkeypatch.setattr(_sampling, "num_candidates", lambda d, k: k)  # P(success) = 120/216
    jax.clear_caches()  # the samplers are jitted: retrace with the patched candidate count
    try:
        keys = jax.random.split(jax.random.key(5), n)
        fn = jax.jit(jax.vmap(lambda key: _sampling._first_distinct(key, d, k)))
        out = np.sort(np.asarray(fn(keys)), axis=1)
    finally:
        monkeypatch.undo()
        jax.clear_caches()
    subsets = list(itertools.combinations(range(d), k))
    index = {s: i for i, s in enumerate(subsets)}
    counts = np.bincount([index[tuple(row)] for row in out.tolist()], minlength=len(subsets))
    assert _chi2_pvalue(counts, n / len(subsets)) > _P_REJECT
    assert num_candidates(d, k) > k


@pytest.mark.parametrize("path", ["floyd", "first_distinct"])
def test_both_paths_give_every_subset_equally_likely(path):
    d, k, n = 7, 3, 35_000
    assert _sampling._use_floyd(d, k)  # sample_subset takes the Floyd path here
    fn = _sampling._floyd if path == "floyd" else _sampling._first_distinct
    keys = jax.random.split(jax.random.key(3), n)
    out = np.sort(np.asarray(jax.jit(jax.vmap(lambda key: fn(key, d, k)))(keys)), axis=1)
    subsets = list(itertools.combinations(range(d), k))
    index = {s: i for i, s in enumerate(subsets)}
    counts = np.bincount([index[tuple(row)] for row in out.tolist()], minlength=len(subsets))
    assert _chi2_pvalue(counts, n / len(subsets)) > _P_REJECT


def test_floyd_retry_path_stays_uniform(monkeypatch):
    """Rejecting about half of the words (still exactly: the accepted range is a multiple of r)
    makes most Floyd attempts fail; the while_loop redraw must keep the subsets uniform."""
    d, k, n = 6, 3, 30_000
    monkeypatch.setattr(_sampling, "_rejection_threshold", lambda r: (2**32 % r) + r * (2**31 // r))
    jax.clear_caches()
    try:
        keys = jax.random.split(jax.random.key(9), n)
        out = np.asarray(jax.jit(jax.vmap(lambda key: _sampling._floyd(key, d, k)))(keys))
    finally:
        monkeypatch.undo()
        jax.clear_caches()
    out = np.sort(out, axis=1)
    subsets = list(itertools.combinations(range(d), k))
    index = {s: i for i, s in enumerate(subsets)}
    counts = np.bincount([index[tuple(row)] for row in out.tolist()], minlength=len(subsets))
    assert _chi2_pvalue(counts, n / len(subsets)) > _P_REJECT


def test_floyd_used_for_small_k_only():
    assert _sampling._use_floyd(113, 11) and _sampling._floyd_fail_prob(113, 11) < 1e-6
    assert not _sampling._use_floyd(1000, 33)  # beyond the unrolled size
    assert not _sampling._use_floyd(10, 6)  # 2k > d: the complement is sampled instead
    assert expected_draws(113, 11) == 11


def test_smallest_distinct_would_be_biased():
    """Sanity check of the test's power: the k smallest distinct draws are not uniform."""
    d, k, n = 6, 3, 30_000
    words = np.random.default_rng(0).integers(0, d, size=(n, num_candidates(d, k)))
    biased = [tuple(sorted(set(row.tolist()))[:k]) for row in words]
    subsets = list(itertools.combinations(range(d), k))
    index = {s: i for i, s in enumerate(subsets)}
    counts = np.bincount([index[s] for s in biased], minlength=len(subsets))
    assert _chi2_pvalue(counts, n / len(subsets)) < _P_REJECT


# -- the number of candidates -----------------------------------------------------------------


def test_failure_chain_matches_enumeration():
    """The Markov chain for P(fewer than k distinct in n draws) against brute force (d = 4)."""
    d, k = 4, 3  # 2**32 mod 4 == 0: no rejection
    fail = _sampling._failure_probabilities(d, k, 6)
    for n in range(7):
        seqs = itertools.product(range(d), repeat=n)
        exact = np.mean([len(set(s)) < k for s in seqs]) if n else 1.0
        assert fail[n] == pytest.approx(exact, abs=1e-12)


@pytest.mark.parametrize(
    "d,k", [(113, 11), (1000, 300), (10**6, 1000), (2**31 - 1, 50), (10, 5), (1000, 1)]
)
def test_candidates_fail_rarely(d, k):
    """The returned n, and Janson's bound, give failure probability <= 1e-9 (exact chain)."""
    n = num_candidates(d, k)
    janson = _sampling._janson_candidates(d, k, 1e-9)
    fail = _sampling._failure_probabilities(d, k, max(n, janson))
    assert fail[n] <= 1e-9
    assert fail[janson] <= 1e-9
    assert n <= janson
    assert n == 1 or fail[n - 1] > 1e-9 or n == janson  # exact minimum where the chain is used


def test_candidates_are_order_k():
    assert num_candidates(10**6, 10**4) < 1.05 * 10**6 * math.log(1 / (1 - 0.01))
    assert num_candidates(1024, 1) == 1  # no rejection, one draw suffices
    assert num_candidates(10**6, 5 * 10**5) < 1.05 * 10**6 * math.log(2)
    assert expected_draws(100, 90) == 10  # the complement is sampled (by Floyd here)
    assert expected_draws(1000, 960) == num_candidates(1000, 40)  # first-distinct path
    assert expected_draws(7, 7) == expected_draws(7, 0) == 0


# -- permutations -----------------------------------------------------------------------------


def test_random_permutation_uniform():
    n_perm, n = 4, 24_000
    keys = jax.random.split(jax.random.key(9), n)
    perms = np.asarray(jax.vmap(_permutation, (0, None))(keys, n_perm))
    assert np.all(np.sort(perms, axis=1) == np.arange(n_perm))
    all_perms = {p: i for i, p in enumerate(itertools.permutations(range(n_perm)))}
    counts = np.bincount([all_perms[tuple(p)] for p in perms.tolist()], minlength=24)
    assert _chi2_pvalue(counts, n / 24) > _P_REJECT


def test_permutation_tie_detection():
    """With 2-bit keys ties are frequent; the accepted draws must still be exactly uniform."""
    n_perm, n = 4, 60_000
    words = jax.random.bits(jax.random.key(10), (n, 2, n_perm), jnp.uint32) & jnp.uint32(3)
    perms, ok = jax.jit(jax.vmap(_sampling._permutation_attempt))(words)
    perms, ok = np.asarray(perms)[np.asarray(ok)], np.asarray(ok)
    assert 0.3 < ok.mean() < 0.9  # many rejections: the check is exercised
    assert np.all(np.sort(perms, axis=1) == np.arange(n_perm))
    all_perms = {p: i for i, p in enumerate(itertools.permutations(range(n_perm)))}
    counts = np.bincount([all_perms[tuple(p)] for p in perms.tolist()], minlength=24)
    assert _chi2_pvalue(counts, len(perms) / 24) > _P_REJECT
    # without the tie check the order is biased towards the identity (stable sorts)
    all_words = np.asarray(words)
    plain = [tuple(np.lexsort((all_words[i, 0], all_words[i, 1])).tolist()) for i in range(5000)]
    biased = np.bincount([all_perms[p] for p in plain], minlength=24)
    assert _chi2_pvalue(biased, 5000 / 24) < _P_REJECT


def test_random_permutation_sizes():
    np.testing.assert_array_equal(_permutation(jax.random.key(0), 1), [0])
    p = np.asarray(_permutation(jax.random.key(0), 10_000))
    np.testing.assert_array_equal(np.sort(p), np.arange(10_000))


# -- the exact Bernoulli coin ------------------------------------------------------------------

_N_COINS = 4096
_COIN_KEYS = jax.random.split(jax.random.key(30), _N_COINS)


def _words(keys):
    """The one 32-bit word a coin draws from each key, as Python-exact int64."""
    return np.asarray(jax.vmap(lambda k: jax.random.bits(k, (), jnp.uint32))(keys), np.int64)


def test_coin_threshold_values():
    assert _sampling.coin_threshold(0.25) == 2**30
    assert _sampling.coin_threshold(0.3) == round(0.3 * 2**32)
    assert _sampling.coin_threshold(1.0) == 2**32  # always
    assert _sampling.coin_threshold(1 - 2**-34) == 2**32  # rounds to always
    assert _sampling.coin_threshold(1e-12) == 1  # never "never"
    assert abs(_sampling.coin_threshold(0.3) / 2**32 - 0.3) <= 2**-33


@pytest.mark.parametrize("p", [0.3, 0.5, 2.0**-20, 1 - 2**-20, 0.999])
def test_coin_concrete_p_is_exactly_threshold_over_2_32(p):
    """Heads iff the coin's uniform 32-bit word is below T = coin_threshold(p), so
    P(heads) = T / 2^32 exactly (the word is uniform on [0, 2^32))."""
    threshold = _sampling.coin_threshold(p)
    heads = np.asarray(jax.vmap(lambda k: _sampling.bernoulli_coin(k, p))(_COIN_KEYS))
    np.testing.assert_array_equal(heads, _words(_COIN_KEYS) < threshold)
    if 0.01 < p < 0.99:  # and the frequency agrees (6 standard errors)
        se = math.sqrt(p * (1 - p) / _N_COINS)
        assert abs(heads.mean() - threshold / 2**32) < 6 * se


@pytest.mark.parametrize("p", [0.3, 2.0**-30, 0.7, 1 - 2**-24])
def test_coin_traced_float32_p_is_exactly_its_float32_value(p):
    """A traced float32 p: T = floor(p·2^32) of the float32 value, exact in integers, so
    P(heads) = T/2^32 equals the float32 p itself (a power-of-two scaling loses nothing)."""
    p32 = np.float32(p)
    threshold = int(np.floor(np.float64(p32) * 2**32))
    assert threshold / 2**32 == float(p32)
    coin = jax.jit(jax.vmap(_sampling.bernoulli_coin, (0, None)))
    heads = np.asarray(coin(_COIN_KEYS, jnp.float32(p)))
    np.testing.assert_array_equal(heads, _words(_COIN_KEYS) < threshold)
    # a bfloat16 or float16 p counts as its (exact) float32 value
    for low in (jnp.bfloat16, jnp.float16):
        q = jnp.asarray(p, low)
        t_low = int(np.floor(np.float64(np.float32(q)) * 2**32))
        np.testing.assert_array_equal(
            np.asarray(coin(_COIN_KEYS, q)), _words(_COIN_KEYS) < t_low, err_msg=str(low)
        )


def test_coin_traced_float64_p(x64):
    p = 0.3
    coin = jax.jit(jax.vmap(_sampling.bernoulli_coin, (0, None)))
    heads = np.asarray(coin(_COIN_KEYS, jnp.float64(p)))
    np.testing.assert_array_equal(heads, _words(_COIN_KEYS) < math.floor(p * 2**32))


@pytest.mark.parametrize("p", [0.3, 0.5, 2.0**-20, 1e-12, 1 - 2**-20])
def test_coin_boundary_words_concrete_and_traced(p):
    """Exactly the words 0 .. T-1 are heads: T of the 2^32 equally likely words, so
    P(heads) = T/2^32 exactly (concrete p: T = coin_threshold(p); traced float32 p:
    T = floor(p32·2^32))."""
    t_concrete = _sampling.coin_threshold(p)
    t_traced = int(np.floor(np.float64(np.float32(p)) * 2**32))
    traced = jax.jit(_sampling.coin_from_word)
    cases = (
        (t_concrete, lambda w: _sampling.coin_from_word(w, p)),
        (t_traced, lambda w: traced(w, jnp.float32(p))),
    )
    for threshold, coin in cases:
        candidates = {0, 1, threshold - 1, threshold, threshold + 1, 2**32 - 1}
        words = np.array(sorted(w for w in candidates if 0 <= w < 2**32), np.uint32)
        np.testing.assert_array_equal(np.asarray(coin(jnp.asarray(words))), words < threshold)


def test_coin_p_one_is_always_heads():
    coin = jax.vmap(_sampling.bernoulli_coin, (0, None))
    assert np.all(np.asarray(coin(_COIN_KEYS, 1.0)))  # concrete
    assert bool(_sampling.bernoulli_coin(None, 1.0))  # no word is drawn
    for p in (jnp.float32(1.0), jnp.float32(1.5), jnp.int32(1)):  # traced
        assert np.all(np.asarray(jax.jit(coin)(_COIN_KEYS, p)))
    # the largest float32 below 1 is not "always": T = 2^32 - 256
    below = np.float32(1.0) - np.float32(2.0**-24)
    heads = np.asarray(jax.jit(coin)(_COIN_KEYS, jnp.float32(below)))
    np.testing.assert_array_equal(heads, _words(_COIN_KEYS) < 2**32 - 256)


def test_bernoulli_compressor_uses_the_coin():
    """bernoulli(p) sends exactly when bernoulli_coin(key, p) is heads, and its omega is the
    exact 1/p_eff - 1 with p_eff = coin_threshold(p)/2^32."""
    from jaxdist.compressors import bernoulli

    p = 0.3
    c = bernoulli(p)
    x = jnp.arange(1.0, 6.0)
    sent = jax.vmap(lambda k: jnp.any(c.compress(k, x) != 0))(_COIN_KEYS[:512])
    heads = jax.vmap(lambda k: _sampling.bernoulli_coin(k, p))(_COIN_KEYS[:512])
    np.testing.assert_array_equal(np.asarray(sent), np.asarray(heads))
    p_eff = _sampling.coin_threshold(p) / 2**32
    assert c.omega(5) == 1 / p_eff - 1 != 1 / p - 1
