"""Exact, fast samplers of random subsets and permutations of ``range(d)``.

Rand-K needs a uniformly random K-subset of the coordinates. ``jax.random.choice(key, d, (k,),
replace=False)`` shuffles all ``d`` indices (sorts ``d`` random keys, twice for large ``d``), which
costs ``O(d log d)`` even when ``k`` is tiny, and its sort-based shuffle is only approximately
uniform (ties between 32-bit sort keys are resolved by position). :func:`sample_subset` draws
``O(min(k, d - k))`` random words and is **exactly** uniform: every k-subset has probability
``1 / C(d, k)``, so the ``d / k``-scaled Rand-K estimator is exactly unbiased.

Method for small ``k`` (``k <= 32`` and ``2k <= d``): **Floyd's algorithm** (Bentley & Floyd,
"A sample of brilliance", CACM 1987), unrolled: for ``j = d - k, ..., d - 1`` draw ``t`` uniform
on ``[0, j]`` and add ``t`` unless it was already chosen, else add ``j``. Every k-subset has
probability exactly ``1 / C(d, k)``; it uses exactly ``k`` random words (both 32-bit halves of
``ceil(k/2)`` split keys, one threefry hash per two words) and ``k(k-1)/2`` comparisons, no sort.
Each ``t`` is ``w mod (j+1)`` of a word ``w`` rejected below ``2**32 mod (j+1)`` (exact); an
attempt with a rejected word is redrawn whole in a ``lax.while_loop`` (the fast path is taken
only when that happens with probability <= 1e-4, e.g. 1.1e-7 for d = 113, k = 11). The output
order is Floyd's, not a uniformly random order.

Method for larger ``k <= d / 2``:

1. Draw ``n`` candidates i.i.d. uniform on ``range(d)``: exact integers from 32-bit words ``w`` by
   ``w mod d``, rejecting the ``2**32 mod d`` lowest words (the accepted words form a multiple of
   ``d`` consecutive integers, so every residue is equally likely).
2. Keep the **first k distinct** accepted values in draw order. For an i.i.d. uniform sequence, the
   sequence of first occurrences is a uniformly random ordering of ``range(d)`` (by symmetry under
   relabelling), so its first ``k`` entries are a uniformly random ordered k-subset. (Taking the
   ``k`` *smallest* distinct values instead would be biased towards small indices.)
3. ``n`` is chosen from Janson's tail bound for sums of geometric variables so that fewer than
   ``k`` distinct values occur with probability at most ``1e-9``; in that event the whole draw is
   repeated with a fresh key (``fold_in(key, attempt)``) inside a ``lax.while_loop``. Rejection
   keeps the result exact; in practice the loop body runs once.

For ``k > d / 2`` the complement (``d - k`` indices) is sampled the same way and the kept indices
are read off a mask in ``O(d)``.

References:
  Janson, `Tail bounds for sums of geometric and exponential variables
  <https://arxiv.org/abs/1709.08157>`_, 2018 (Theorem 2.1).
  Lemire, `Fast random integer generation in an interval <https://arxiv.org/abs/1805.10941>`_, 2019
  (the rejection threshold ``2**32 mod d``).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "sample_subset",
    "random_permutation",
    "num_candidates",
    "expected_draws",
    "coin_threshold",
    "bernoulli_coin",
    "coin_from_word",
]

_WORDS = 1 << 32  # number of distinct 32-bit words
_FAIL_PROB = 1e-9  # target probability that one attempt yields fewer than k distinct values
_MAX_D = (1 << 31) - 1  # indices (and the sentinel d) must fit in int32
_EULER_GAMMA = 0.57721566490153286060651209
_FLOYD_MAX_K = 32  # Floyd's algorithm is unrolled: k(k-1)/2 comparisons
_FLOYD_MAX_FAIL = 1e-4  # largest accepted probability that one Floyd attempt must be redrawn


def _check_sizes(d: int, k: int) -> tuple[int, int]:
    for name, value in (("d", d), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be a static Python int, got {value!r}")
    d, k = int(d), int(k)
    if not 1 <= d <= _MAX_D:
        raise ValueError(f"d must be in [1, 2**31 - 1], got d={d}")
    if not 0 <= k <= d:
        raise ValueError(f"k must satisfy 0 <= k <= d, got k={k}, d={d}")
    return d, k


def _harmonic(n: int) -> float:
    """H_n = sum_{m=1}^n 1/m (exact sum for small n, asymptotic series, error < 1/(252 n^6))."""
    if n <= 64:
        return math.fsum(1.0 / m for m in range(1, n + 1))
    return math.log(n) + _EULER_GAMMA + 1.0 / (2 * n) - 1.0 / (12 * n**2) + 1.0 / (120 * n**4)


def _failure_probabilities(d: int, k: int, n_max: int) -> np.ndarray:
    """``P(fewer than k distinct accepted values after n draws)`` for ``n = 0 .. n_max``.

    Exact Markov chain on the number ``j`` of distinct values seen: a draw is rejected with
    probability ``r``, repeats a seen value with probability ``(1 - r) j / d`` and adds a new one
    with probability ``(1 - r)(d - j)/d``. Float64 arithmetic; ``O(n_max k)`` work.
    """
    r = (_WORDS % d) / _WORDS
    j = np.arange(k + 1, dtype=np.float64)
    stay = r + (1.0 - r) * j / d
    move = (1.0 - r) * (d - j) / d
    prob = np.zeros(k + 1)
    prob[0] = 1.0
    out = np.empty(n_max + 1)
    out[0] = 1.0
    for n in range(1, n_max + 1):
        new = prob * stay
        new[1:] += prob[:-1] * move[:-1]
        new[k] = prob[k] + prob[k - 1] * move[k - 1]  # k distinct values: absorbed
        prob = new
        out[n] = prob[:k].sum()
    return out


def _janson_candidates(d: int, k: int, fail_prob: float) -> int:
    """``ceil(λμ)`` from Janson's bound ``P(T >= λμ) <= λ^{-1}(1 - p_*)^{(λ - 1 - ln λ)μ}``."""
    t = _WORDS % d
    r = t / _WORDS
    q_star = ((k - 1) + r * (d - k + 1)) / d  # 1 - p_*, written without cancellation
    if q_star <= 0.0:  # k == 1 and no rejection: one word always suffices
        return k
    if k <= 4096:
        harm = math.fsum(1.0 / m for m in range(d - k + 1, d + 1))
    else:
        harm = _harmonic(d) - _harmonic(d - k)
    mu = d * harm / (1.0 - r)
    c = -math.log(q_star)
    target = -math.log(fail_prob)

    def log_inv_bound(lam: float) -> float:  # -log of Janson's bound, increasing in lam >= 1
        return math.log(lam) + c * mu * (lam - 1.0 - math.log(lam))

    lo, hi = 1.0, 2.0
    while log_inv_bound(hi) < target:
        hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if log_inv_bound(mid) >= target:
            hi = mid
        else:
            lo = mid
    # a relative safety margin covers the floating-point error of mu
    return max(k, math.ceil(hi * mu * (1.0 + 1e-9)) + 1)


@functools.lru_cache(maxsize=256)
def num_candidates(d: int, k: int, fail_prob: float = _FAIL_PROB) -> int:
    """Number ``n`` of i.i.d. draws after which ``k`` distinct values exist w.p. >= 1 - fail_prob.

    The number ``T`` of 32-bit words needed to see ``k`` distinct accepted values is a sum of
    independent geometric variables with success probabilities
    ``p_j = (1 - r)(d - j)/d``, ``j = 0 .. k-1``, where ``r = (2**32 mod d) / 2**32`` is the
    rejection rate. Janson (2018, Thm 2.1): for ``λ >= 1``,
    ``P(T >= λμ) <= λ^{-1} (1 - p_*)^{(λ - 1 - ln λ) μ}`` with ``μ = E T = Σ 1/p_j`` and
    ``p_* = min p_j``; ``ceil(λμ)`` for the smallest such ``λ`` with bound ``<= fail_prob`` is
    a safe ``n``. When ``k · n`` is small (``<= 4e6``) the exact failure probabilities are
    computed instead (a Markov chain on the number of distinct values) and the smallest
    sufficient ``n`` is returned. The value only affects speed: a failed attempt is redrawn.

    Args:
      d: population size.
      k: number of distinct values needed, ``0 <= k <= d``.
      fail_prob: target failure probability.

    Returns:
      The number of candidates ``n >= k`` to draw.
    """
    d, k = _check_sizes(d, k)
    if k == 0:
        return 0
    n_bound = _janson_candidates(d, k, fail_prob)
    if n_bound == k or k * n_bound > 4_000_000:
        return n_bound
    fail = _failure_probabilities(d, k, n_bound)
    return int(np.argmax(fail <= fail_prob))


def expected_draws(d: int, k: int) -> int:
    """Random 32-bit words :func:`sample_subset` draws for ``(d, k)`` (one attempt).

    A second attempt (probability <= 1e-4 on the Floyd path, <= 1e-9 otherwise) draws as many
    again. ``k`` and ``d - k`` cost the same: for ``k > d/2`` the complement is sampled.

    Args:
      d: population size.
      k: subset size.

    Returns:
      The number of words, ``O(min(k, d - k))``.
    """
    d, k = _check_sizes(d, k)
    small = min(k, d - k)
    return small if _use_floyd(d, small) else num_candidates(d, small)


def _uniform_ints(key: jax.Array, d: int, n: int) -> jax.Array:
    """``n`` i.i.d. exact uniform integers on ``range(d)``, or the sentinel ``d`` if rejected."""
    words = jax.random.bits(key, (n,), jnp.uint32)
    threshold = _WORDS % d  # accepted words [t, 2**32) are a multiple of d consecutive integers
    values = (words % jnp.uint32(d)).astype(jnp.int32)
    if threshold == 0:
        return values
    return jnp.where(words >= jnp.uint32(threshold), values, jnp.int32(d))


_PAIRWISE_MAX_N = 128  # up to this many candidates, an n x n comparison beats a sort


def _first_occurrences(values: jax.Array, d: int) -> jax.Array:
    """Marks the first occurrence of every accepted value (not the sentinel ``d``)."""
    n = values.shape[0]
    if n <= _PAIRWISE_MAX_N:
        earlier = lax.iota(jnp.int32, n)[None, :] < lax.iota(jnp.int32, n)[:, None]
        seen_before = jnp.any((values[:, None] == values[None, :]) & earlier, axis=1)
        return jnp.logical_not(seen_before) & (values < d)
    positions = lax.iota(jnp.int32, n)
    sorted_values, sorted_positions = lax.sort((values, positions), num_keys=1, is_stable=True)
    # stable sort: the first entry of each run of equal values is its first occurrence
    first = jnp.concatenate([jnp.ones((1,), bool), sorted_values[1:] != sorted_values[:-1]])
    first = first & (sorted_values < d)  # rejected words carry the sentinel d
    return jnp.zeros((n,), bool).at[sorted_positions].set(first, unique_indices=True)


def _first_distinct_attempt(key: jax.Array, d: int, k: int, n: int):
    """First ``k`` distinct accepted values of ``n`` i.i.d. draws, in draw order, and success."""
    values = _uniform_ints(key, d, n)
    is_first = _first_occurrences(values, d)
    rank = jnp.cumsum(is_first, dtype=jnp.int32)  # 1-based rank among first occurrences
    slot = jnp.where(is_first & (rank <= k), rank - 1, k)
    out = jnp.zeros((k,), jnp.int32).at[slot].set(values, mode="drop", unique_indices=True)
    return out, rank[-1] >= k


@functools.partial(jax.jit, static_argnums=(1, 2))
def _first_distinct(key: jax.Array, d: int, k: int) -> jax.Array:
    n = num_candidates(d, k)

    def cond(state):
        return jnp.logical_not(state[2])

    def body(state):
        attempt, _, _ = state
        out, ok = _first_distinct_attempt(jax.random.fold_in(key, attempt), d, k, n)
        return attempt + 1, out, ok

    init = (jnp.int32(0), jnp.zeros((k,), jnp.int32), jnp.bool_(False))
    return lax.while_loop(cond, body, init)[1]


def _rejection_threshold(r: int) -> int:
    """Words below this are rejected so that ``w mod r`` is exactly uniform on ``range(r)``."""
    return _WORDS % r


def _floyd_fail_prob(d: int, k: int) -> float:
    """Union bound on the probability that a Floyd attempt has a rejected word (static)."""
    return sum(_rejection_threshold(r) / _WORDS for r in range(d - k + 1, d + 1))


def _use_floyd(d: int, k: int) -> bool:
    return 1 <= k <= _FLOYD_MAX_K and 2 * k <= d and _floyd_fail_prob(d, k) <= _FLOYD_MAX_FAIL


def _key_words(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """``n`` random 32-bit words from the data of split keys, and one more key for retries."""
    probe = jax.random.split(key, 1)
    typed = jnp.issubdtype(probe.dtype, jax.dtypes.prng_key)
    per = (jax.random.key_data(probe) if typed else probe).shape[-1]
    m = -(-n // per)
    keys = jax.random.split(key, m + 1)
    data = jax.random.key_data(keys[:m]) if typed else keys[:m]
    return data.reshape(-1)[:n].astype(jnp.uint32), keys[m]


def _floyd_attempt(words: jax.Array, d: int, k: int) -> tuple[jax.Array, jax.Array]:
    """Floyd's algorithm on ``k`` words; also whether every word was accepted."""
    chosen, ok = [], jnp.bool_(True)
    for step in range(k):
        r = d - k + step + 1  # t is uniform on [0, r - 1] = [0, j]
        w = words[step]
        t = (w % jnp.uint32(r)).astype(jnp.int32)
        threshold = _rejection_threshold(r)
        if threshold:
            ok = ok & (w >= jnp.uint32(threshold))
        if chosen:
            seen = functools.reduce(jnp.logical_or, [t == c for c in chosen])
            t = jnp.where(seen, jnp.int32(r - 1), t)
        chosen.append(t)
    return jnp.stack(chosen), ok


@functools.partial(jax.jit, static_argnums=(1, 2))
def _floyd(key: jax.Array, d: int, k: int) -> jax.Array:
    words, retry = _key_words(key, k)
    out, ok = _floyd_attempt(words, d, k)

    def body(state):
        attempt, _, _ = state
        w, _ = _key_words(jax.random.fold_in(retry, attempt), k)
        o, good = _floyd_attempt(w, d, k)
        return attempt + 1, o, good

    return lax.while_loop(lambda s: jnp.logical_not(s[2]), body, (jnp.int32(0), out, ok))[1]


def _small_subset(key: jax.Array, d: int, k: int) -> jax.Array:
    """A uniform k-subset for ``2k <= d``: Floyd for small k, first-distinct draws otherwise."""
    return _floyd(key, d, k) if _use_floyd(d, k) else _first_distinct(key, d, k)


def sample_subset(key: jax.Array, d: int, k: int) -> jax.Array:
    """Indices of a uniformly random k-subset of ``range(d)``, exactly uniform.

    Every k-subset is returned with probability exactly ``1 / C(d, k)`` (up to the quality of
    the underlying PRNG). Draws ``O(min(k, d - k))`` random 32-bit words and sorts that many
    integers; ``k > d/2`` adds an ``O(d)`` mask pass. Jittable and vmappable (``d`` and ``k``
    are static).

    Args:
      key: a PRNG key (typed ``jax.random.key`` or raw ``uint32[2]``).
      d: population size, a static int in ``[1, 2**31 - 1]``.
      k: subset size, a static int in ``[0, d]``.

    Returns:
      ``int32[k]`` distinct indices in ``range(d)``. Their order is unspecified for ``k <= d/2``
      (Floyd's order, or the draw order of the first-distinct method, which is uniformly
      random); for ``k > d/2`` it is increasing.
    """
    d, k = _check_sizes(d, k)
    if k == 0:
        return jnp.zeros((0,), jnp.int32)
    if k == d:
        return lax.iota(jnp.int32, d)
    if 2 * k <= d:
        return _small_subset(key, d, k)
    dropped = _small_subset(key, d, d - k)
    keep = jnp.ones((d,), bool).at[dropped].set(False, unique_indices=True)
    return jnp.nonzero(keep, size=k)[0].astype(jnp.int32)


def random_permutation(key: jax.Array, n: int) -> jax.Array:
    """An exactly uniform random permutation of ``range(n)``.

    Two stable sorts by fresh 32-bit keys (a key-value radix sort on GPU): the result is the
    order of the elements by the 64-bit composite key (second word, first word). Conditioned on
    the composite keys being distinct, this order is exactly uniform by exchangeability; if two
    tie (probability below ``n**2 / 2**65``) the draw is repeated with ``fold_in(key, attempt)``.
    ``jax.random.permutation`` sorts by fresh 32-bit keys a fixed number of times and does not
    check for ties, which leaves a small bias.

    Args:
      key: a PRNG key.
      n: a static int ``>= 1``.

    Returns:
      ``int32[n]``, a permutation of ``range(n)``.
    """
    n, _ = _check_sizes(n, 0)
    if n == 1:
        return jnp.zeros((1,), jnp.int32)
    return _random_permutation(key, n)


def _permutation_attempt(words: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The order of ``range(n)`` by the composite keys ``(words[1], words[0])``, and whether
    those keys are all distinct (only then is the order an exactly uniform permutation)."""
    n = words.shape[1]
    iota = lax.iota(jnp.int32, n)
    first, perm = lax.sort((words[0], iota), num_keys=1, is_stable=True)
    # the second word is attached to positions of the first order; i.i.d. either way
    second, order = lax.sort((words[1], iota), num_keys=1, is_stable=True)
    perm, first = perm[order], first[order]
    # equal composite keys are adjacent in the final (lexicographic) order
    tie = jnp.any((second[1:] == second[:-1]) & (first[1:] == first[:-1]))
    return perm, jnp.logical_not(tie)


@functools.partial(jax.jit, static_argnums=1)
def _random_permutation(key: jax.Array, n: int) -> jax.Array:
    def body(state):
        attempt, _, _ = state
        words = jax.random.bits(jax.random.fold_in(key, attempt), (2, n), jnp.uint32)
        perm, ok = _permutation_attempt(words)
        return attempt + 1, perm, ok

    init = (jnp.int32(0), jnp.zeros((n,), jnp.int32), jnp.bool_(False))
    return lax.while_loop(lambda s: jnp.logical_not(s[2]), body, init)[1]


# ---------------------------------------------------------------------------------------------
# The exact Bernoulli coin (Bernoulli compressor, MARINA, Scaffnew, partial participation).


def coin_threshold(p: float) -> int:
    """The integer threshold ``T = round(p·2^32)`` (at least 1) of :func:`bernoulli_coin`.

    A coin with a concrete ``p`` is heads with probability exactly ``T / 2^32``
    (``|T/2^32 − p| <= 2^-33``); ``T = 2^32`` means always.
    """
    return min(max(1, round(float(p) * 2**32)), 2**32)


def bernoulli_coin(key: jax.Array, p) -> jax.Array:
    """One exact Bernoulli coin: ``w < T`` for one uniform 32-bit word ``w``.

    For a concrete ``p`` the threshold is :func:`coin_threshold` (heads with probability
    exactly ``T/2^32``); ``T = 2^32`` (``p >= 1 - 2^-33``) is always heads and draws nothing
    (``key`` may then be ``None``). For a traced ``p`` (a swept hyperparameter)
    ``T = floor(p·2^32)`` computed in the float dtype of ``p``: for float32 ``p`` this is exact
    (scaling by a power of two), so the probability is exactly the float32 value of ``p``;
    ``p >= 1`` is always heads. One random word per coin.

    Args:
      key: a PRNG key (the same key on every worker gives the same coin everywhere).
      p: the probability of heads, in (0, 1].

    Returns:
      A boolean scalar.

    Examples:
      >>> from jaxdist.compressors._sampling import bernoulli_coin, coin_threshold
      >>> coin_threshold(0.25) == 2**30  # P(heads) = 2^30 / 2^32 exactly
      True
      >>> bool(bernoulli_coin(None, 1.0))  # always heads, no random word needed
      True
    """
    if _is_concrete(p) and coin_threshold(p) >= 2**32:
        return jnp.ones((), bool)
    return coin_from_word(jax.random.bits(key, (), jnp.uint32), p)


def _is_concrete(p) -> bool:
    return not isinstance(p, jax.core.Tracer) and np.ndim(p) == 0


def coin_from_word(word: jax.Array, p) -> jax.Array:
    """The coin of :func:`bernoulli_coin` for a given uniform 32-bit ``word``: ``word < T``.

    ``T`` is :func:`coin_threshold` for a concrete ``p`` and ``floor(p·2^32)`` for a traced one
    (see :func:`bernoulli_coin`); exactly ``T`` of the ``2^32`` words give heads.

    Args:
      word: a ``uint32`` array (one word per coin).
      p: the probability of heads.

    Returns:
      A boolean array of the shape of ``word``.
    """
    word = jnp.asarray(word, jnp.uint32)
    if _is_concrete(p):
        threshold = coin_threshold(p)
        if threshold >= 2**32:
            return jnp.ones(word.shape, bool)
        return word < jnp.uint32(threshold)
    p = jnp.asarray(p)
    if p.dtype != jnp.float64:  # integers, bfloat16 and float16 are exact in float32
        p = p.astype(jnp.float32)
    scaled = jnp.floor(p * jnp.asarray(2.0**32, p.dtype))
    if p.dtype == jnp.float64:
        below = word.astype(p.dtype) < scaled
    else:  # the largest float32 p < 1 gives T = 2^32 - 256, exactly
        below = word < jnp.clip(scaled, 0, 2.0**32 - 256).astype(jnp.uint32)
    return below | (p >= 1)
