"""Common tests every compressor in ``tests/registry.py`` must pass.

The contract: pure and jittable, vmappable over keys (``jit(vmap(compress))`` equals a Python loop
of eager calls bitwise), deterministic per key, no retracing on a second call, same shape and dtype
as the input (every float dtype), ``decode(encode(x)) == compress(x)`` bitwise, ``bits(d)`` equal
to the payload size, pytrees flattened into one vector; and the maths: for every entry the class
constants ω (unbiased class) and α (contractive class) are checked by Monte Carlo on the entry's
worst-case input, **two-sided** where THEORY.md or the factory's docstring states equality and
one-sided where only a bound holds (the table ``CHECKS`` says which and why).

Speed: every entry compiles one sampler, ``jit(vmap(compress))`` over ``NUM_SAMPLES`` keys at one
input shape and dtype, and every Monte-Carlo and vmap check reuses it (``functools.cache`` keyed on
the compressor, which is a hashable value). Everything else runs eagerly or abstractly.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from registry import ACCOUNTING_ONLY, NAMES, NUM_WORKERS, build

from jaxdist.compressors import payload_bits

D_SHAPE = (5, 10)  # d = 50: not a multiple of 8 (packing edge cases) nor of NUM_WORKERS
D = 50
AXIS = "workers"
NUM_SAMPLES = 20_000
# Tolerance in standard errors of the sample mean, estimated from the sample. Per entry about
# 50 coordinates and 2-3 error checks are tested; P(|z| > 6) = 2e-9 each.
Z = 6.0
# Relative allowance for the float32 rounding of the outputs (e.g. x_i·d/k), relative to the
# error itself; the error of a sample is then computed exactly in float64.
ROUND = 1e-5


def kw(c):
    """Operators that need the worker index run as worker 0 (the index passed as data)."""
    return {"worker": 0} if c.needs_axis else {}


def as64(a):
    return np.asarray(jnp.asarray(a, jnp.float32) if a.dtype == jnp.bfloat16 else a, np.float64)


def bitwise_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


# ---------------------------------------------------------------------------------------------
# Inputs (all of shape D_SHAPE, float32: one compiled sampler per entry serves them all).


def _signs(seed):
    return np.random.default_rng(seed).choice([-1.0, 1.0], size=D)


def _as_input(v):
    return jnp.asarray(np.asarray(v, np.float64).reshape(D_SHAPE), jnp.float32)


def gauss(seed=0, scale=1.0):
    return _as_input(scale * np.random.default_rng(seed).normal(size=D))


def equal_magnitude():
    """All |x_i| equal: the worst case of Top-K and of the ternary quantiser."""
    return _as_input(0.7 * _signs(1))


def natural_worst(same_exponent=False):
    """Entries ±(4/3)·2^a: natural compression's variance is exactly x_i²/8 there."""
    a = 0 if same_exponent else np.random.default_rng(2).integers(-3, 4, size=D)
    return _as_input(_signs(3) * (4.0 / 3.0) * 2.0**a)


def terngrad_worst():
    """x = (1, t, ..., t), t = 1/(sqrt(d) + 1): TernGrad's worst case (THEORY.md §1.2)."""
    v = np.full(D, 1.0 / (math.sqrt(D) + 1.0))
    v[0] = 1.0
    return _as_input(v * _signs(4))


def one_hot():
    """A 1-sparse x: the worst case of scaled sign, α(x) = 1/d."""
    v = np.zeros(D)
    v[7] = -2.5
    return _as_input(v)


def mantissa_near_one():
    """|x_i| = (2 - 2^-20)·2^a: truncation's error ratio approaches its supremum 1/4."""
    a = np.random.default_rng(5).integers(-4, 5, size=D)
    return _as_input(_signs(6) * (2.0 - 2.0**-20) * 2.0**a)


def halfway(u):
    """|x_i| = (1 + u)·2^a: round to nearest (even) has its largest relative error u/(1+u)."""
    a = np.random.default_rng(7).integers(-4, 5, size=D)
    return _as_input(_signs(8) * (1.0 + u) * 2.0**a)


def orthonormal_rows():
    """A 5 x 10 matrix G with G G^T = 4 I: every rank-r projection of it loses (1 - r/5)."""
    q, _ = np.linalg.qr(np.random.default_rng(9).normal(size=(10, 5)))
    return _as_input(2.0 * q.T)


# ---------------------------------------------------------------------------------------------
# Exact variances E||C(x) - x||^2 for a given x (NumPy, float64), from THEORY.md §1.2 and the
# factories' docstrings.


def _np(x):
    return np.asarray(x, np.float64).reshape(-1)


def dither_error(s, p):
    """(||x||_p/s)^2 Σ f_i(1 - f_i), f_i = frac(s|x_i|/||x||_p): QSGD, ternary, dithering."""

    def error(x):
        x = _np(x)
        n = np.linalg.norm(x, ord=p)
        y = s * np.abs(x) / n
        f = y - np.floor(y)
        return (n / s) ** 2 * np.sum(f * (1 - f))

    return error


def natural_error(x):
    """Σ lo_i² f_i(1 - f_i) with |x_i| = lo_i(1 + f_i), lo_i a power of two."""
    a = np.abs(_np(x))
    lo = 2.0 ** np.floor(np.log2(np.where(a > 0, a, 1)))
    f = np.where(a > 0, a / lo - 1, 0)
    return np.sum(lo**2 * f * (1 - f))


def natural_dither_error(s, p):
    def error(x):
        x = _np(x)
        n = np.linalg.norm(x, ord=p)
        y = np.abs(x) / n
        lo = 2.0 ** np.floor(np.log2(np.where(y > 0, y, 1)))
        f = y / lo - 1
        var = np.where(y < 2.0 ** (1 - s), y * (2.0 ** (1 - s) - y), lo**2 * f * (1 - f))
        return n**2 * np.sum(var)

    return error


def stochastic_round_error(step):
    def error(x):
        t = _np(x) / step
        f = t - np.floor(t)
        return step**2 * np.sum(f * (1 - f))

    return error


def truncate_error(x):
    a = np.abs(_np(x))
    return np.sum((a - 2.0 ** np.floor(np.log2(a))) ** 2)


def scaled_sign_error(x):
    x = _np(x)
    return np.sum(x**2) - np.sum(np.abs(x)) ** 2 / x.size


def cast_error(u):
    def error(x):
        return (u / (1 + u)) ** 2 * np.sum(_np(x) ** 2)

    return error


def power_sgd_error(rank, n):
    def error(x):
        return (1 - rank / n) * np.sum(_np(x) ** 2)

    return error


# ---------------------------------------------------------------------------------------------
# The table of checks.


@dataclasses.dataclass(frozen=True)
class Check:
    """One Monte-Carlo check of E||C(x) - x||^2 at the input ``x()``.

    ``what``: ``"omega"`` (target ω(d)||x||²), ``"alpha"`` (target (1 - α(d))||x||²), ``"error"``
    (target ``error(x)``, an exact formula) or ``"expands"`` (the error exceeds ||x||²: no α).
    ``how``: ``"equal"`` (two-sided: |mean - target| <= Z SE + rounding) or ``"at_most"``
    (one-sided; ``why`` says why only a bound holds).
    """

    x: Callable[[], jax.Array]
    what: str
    how: str = "equal"
    error: Callable[[jax.Array], float] | None = None
    why: str = ""


def omega_eq(x, why="equality for every x"):
    return Check(x, "omega", "equal", why=why)


def alpha_eq(x, why="equality for every x"):
    return Check(x, "alpha", "equal", why=why)


def exact(x, error):
    return Check(x, "error", "equal", error=error)


QSGD_LOOSE = "the reported ω = min(d/s², √d/s) (Lemma 3.1) exceeds the tight min(d/(4s²), √d/s)"
DITHER_LOOSE = "ω = (d^(1/r)/s)·min(1, d^(1/r)/s) is a bound; the tight value is smaller"

CHECKS: dict[str, tuple[Check, ...]] = {
    "identity": (omega_eq(gauss), alpha_eq(gauss)),
    # Rand-K: E||C(x)||² = (d/k)||x||² exactly for every x, so the Gaussian x is a worst case.
    "rand_k": (omega_eq(gauss), omega_eq(equal_magnitude)),
    "rand_k_list": (omega_eq(gauss),),
    "rand_k_mask": (omega_eq(gauss),),
    "rand_k_enumerative": (omega_eq(gauss),),
    "rand_k_shared": (omega_eq(gauss),),
    "rand_k_unscaled": (alpha_eq(gauss, "E||x - mask(x)||² = (1 - k/d)||x||² for every x"),),
    "rand_k_large": (omega_eq(gauss),),
    # Perm-K, one worker: every coordinate is in its block with probability exactly 1/M.
    "perm_k": (omega_eq(gauss, "each coordinate kept w.p. 1/M, scaled by M: equality"),),
    "bernoulli": (omega_eq(gauss, "x/p_eff w.p. p_eff: equality with the exact p_eff"),),
    "top_k": (
        alpha_eq(equal_magnitude, "all |x_i| equal: the discarded energy is (1 - k/d)||x||²"),
        Check(gauss, "alpha", "at_most", why="a bound for every other x"),
    ),
    "top_k_mask": (alpha_eq(equal_magnitude, "all |x_i| equal"),),
    "ternary": (
        omega_eq(equal_magnitude, "tight ω = √d - 1 attained when all |x_i| are equal"),
        exact(gauss, dither_error(1, 2)),
    ),
    "ternary_base3": (omega_eq(equal_magnitude, "all |x_i| equal"),),
    "terngrad": (
        omega_eq(terngrad_worst, "(√d - 1)/2 attained at (1, t, ..., t), t = 1/(√d + 1)"),
        exact(gauss, dither_error(1, np.inf)),
    ),
    "qsgd": (
        Check(equal_magnitude, "omega", "at_most", why=QSGD_LOOSE),
        exact(gauss, dither_error(4, 2)),
        exact(equal_magnitude, dither_error(4, 2)),
    ),
    "dither_l1": (
        Check(equal_magnitude, "omega", "at_most", why=DITHER_LOOSE + " (here d/s - 1)"),
        exact(gauss, dither_error(3, 1)),
        exact(equal_magnitude, dither_error(3, 1)),
    ),
    "dither_linf": (
        Check(gauss, "omega", "at_most", why=DITHER_LOOSE + " (no x attains it for p = inf)"),
        exact(gauss, dither_error(2, np.inf)),
    ),
    "dither_l2": (
        Check(equal_magnitude, "omega", "at_most", why=DITHER_LOOSE),
        exact(gauss, dither_error(3, 2)),
    ),
    "natural": (
        omega_eq(natural_worst, "ω = 1/8 attained at |t| = (4/3)·2^a"),
        exact(gauss, natural_error),
    ),
    "natural_dither": (
        Check(equal_magnitude, "omega", "at_most", why="Thm 7's ω of Horváth et al. is a bound"),
        exact(gauss, natural_dither_error(4, 2)),
    ),
    "stochastic_round": (exact(lambda: gauss(scale=3.0), stochastic_round_error(0.05)),),
    "truncate": (
        Check(mantissa_near_one, "alpha", "at_most", why="the supremum 1/4 is not attained"),
        exact(mantissa_near_one, truncate_error),  # within 1e-6 of the supremum, see below
        exact(gauss, truncate_error),
    ),
    "cast_bf16": (
        Check(lambda: halfway(2.0**-8), "alpha", "at_most", why="u² > the sup (u/(1+u))²"),
        exact(lambda: halfway(2.0**-8), cast_error(2.0**-8)),
    ),
    "cast_fp16": (
        Check(lambda: halfway(2.0**-11), "alpha", "at_most", why="u² > (u/(1+u))²"),
        exact(lambda: halfway(2.0**-11), cast_error(2.0**-11)),
    ),
    "sign": (Check(lambda: gauss(scale=0.01), "expands"),),
    "scaled_sign": (
        alpha_eq(one_hot, "α = 1/d attained by a 1-sparse x"),
        exact(gauss, scaled_sign_error),
    ),
    "power_sgd": (
        exact(orthonormal_rows, power_sgd_error(2, 5)),
        Check(gauss, "error", "at_most", error=lambda x: np.sum(_np(x) ** 2), why="a projection"),
    ),
    "compose_natural_rand_k": (
        omega_eq(natural_worst, "Rand-K exact, natural exact at ±(4/3)·2^a: (9/8)(d/K) - 1"),
    ),
    "compose_qsgd_natural": (
        Check(natural_worst, "omega", "at_most", why="QSGD's ω is a bound: " + QSGD_LOOSE),
    ),
    "scaled_rand_k": (alpha_eq(gauss, "scaled Rand-K is the unscaled mask: α = K/d exactly"),),
    "induced_top_k_rand_k": (
        omega_eq(equal_magnitude, "||x - Top_K(x)||² = (1 - K/d)||x||² and Rand-K exact"),
    ),
    "top_k_quantized": (
        alpha_eq(lambda: natural_worst(same_exponent=True), "Top-K and natural both attained"),
    ),
    "per_leaf_rand_k": (omega_eq(gauss, "one leaf: Rand-K's equality"),),
}


def test_every_registry_entry_has_checks():
    assert set(CHECKS) == set(NAMES)
    for name in NAMES:
        c = build(name)
        whats = {check.what for check in CHECKS[name]}
        assert (c.omega(D) is not None) == ("omega" in whats), name
        assert (c.alpha(D) is not None) == ("alpha" in whats), name
        for check in CHECKS[name]:
            assert check.how in ("equal", "at_most")
            assert check.how == "equal" or check.why, f"{name}: say why only a bound holds"


# ---------------------------------------------------------------------------------------------
# The compiled sampler.

KEYS = jax.random.split(jax.random.key(123), NUM_SAMPLES)


@functools.cache
def sampler(c):
    """``jit(vmap(compress))`` over keys for one input; ``traces`` counts its traces."""
    traces = []

    def draw(keys, x):
        traces.append(1)
        return jax.vmap(lambda k: c.compress(k, x, **kw(c)))(keys)

    return jax.jit(draw), traces


def samples_of(c, x):
    """``NUM_SAMPLES`` draws of C(x) as rows (float64), one row for a deterministic C."""
    out = np.asarray(sampler(c)[0](KEYS, x), np.float64).reshape(NUM_SAMPLES, D)
    return out[:1] if c.deterministic else out


# ---------------------------------------------------------------------------------------------
# Contract tests.


@pytest.mark.parametrize("name", NAMES)
def test_wire_form_bits_and_eager(name):
    """Eager: decode(encode(x)) == compress(x) bitwise; payload bits == bits(d); shape/dtype."""
    c = build(name)
    x = gauss()
    key = KEYS[0]
    direct = c.compress(key, x, **kw(c))
    assert direct.shape == x.shape and direct.dtype == x.dtype
    assert bool(jnp.all(jnp.isfinite(direct)))
    payload = c.encode(key, x, **kw(c))
    bitwise_equal(c.decode(key, payload, x, **kw(c)), direct)
    assert c.bits(x) == c.bits(x.size) == c.bits(jax.ShapeDtypeStruct(x.shape, x.dtype))
    if name in ACCOUNTING_ONLY:
        assert payload_bits(payload) > c.bits(x)  # the optimal code is shorter than the payload
    else:
        assert payload_bits(payload) == c.bits(x)
    # jit(vmap(compress)) over keys gives the eager numbers
    bitwise_equal(sampler(c)[0](KEYS, x)[0], direct)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
def test_shape_dtype_and_bits_in_every_dtype(name, dtype):
    """Abstractly (no compilation): the output keeps the shape and dtype, and the payload has
    exactly bits(x) bits, for every float dtype. (Each module's tests run the operators in
    every dtype; here the registry's combinations are covered without compiling them.)"""
    with jax.enable_x64(dtype == "float64"):
        c = build(name)
        x = jax.ShapeDtypeStruct(D_SHAPE, jnp.dtype(dtype))
        out = jax.eval_shape(lambda k, v: c.compress(k, v, **kw(c)), KEYS[0], x)
        assert out.shape == x.shape and out.dtype == x.dtype
        payload = jax.eval_shape(lambda k, v: c.encode(k, v, **kw(c)), KEYS[0], x)
        if name not in ACCOUNTING_ONLY:
            assert payload_bits(payload) == c.bits(x) == c.bits(D, dtype)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_matches_loop_determinism_and_no_retrace(name):
    c = build(name)
    x, y = gauss(), gauss(seed=1)
    draw, traces = sampler(c)
    batched = draw(KEYS, x)
    for i in (1, 2, 3):  # the vmapped, jitted draws equal a Python loop of eager calls
        bitwise_equal(batched[i], c.compress(KEYS[i], x, **kw(c)))
    bitwise_equal(draw(KEYS, x), batched)  # deterministic per key
    rows = np.asarray(batched[:8]).reshape(8, -1)
    differs = any(not np.array_equal(rows[0], r) for r in rows[1:])
    assert differs != c.deterministic, f"deterministic={c.deterministic} but differs={differs}"
    draw(jax.random.split(jax.random.key(9), NUM_SAMPLES), y).block_until_ready()
    assert len(traces) == 1  # new keys and a new x of the same shape: no retrace


@pytest.mark.parametrize("name", NAMES)
def test_pytree_flattened_like_one_vector(name):
    c = build(name)
    tree = {"b": gauss(seed=1).reshape(-1)[:5], "w": gauss(seed=2).reshape(-1)[:45].reshape(5, 9)}
    flat = jnp.concatenate([tree["b"], tree["w"].reshape(-1)])
    key = KEYS[4]
    out = c.compress(key, tree, **kw(c))
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(tree)
    assert out["w"].shape == (5, 9) and out["b"].shape == (5,)
    decoded = c.decode(key, c.encode(key, tree, **kw(c)), tree, **kw(c))
    for leaf in ("b", "w"):
        bitwise_equal(out[leaf], decoded[leaf])
    if not name.startswith("per_leaf"):
        got = jnp.concatenate([out["b"], out["w"].reshape(-1)])
        bitwise_equal(got, c.compress(key, flat, **kw(c)))
        assert c.bits(tree) == c.bits(flat.size)


@pytest.mark.parametrize("name", NAMES)
def test_integer_and_bool_input_refused(name):
    c = build(name)
    for bad in (jnp.arange(50, dtype=jnp.int32), jnp.ones(50, dtype=bool)):
        with pytest.raises(TypeError, match="dtype"):
            c.compress(KEYS[0], bad, **kw(c))


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_input_does_not_crash(name):
    c = build(name)
    x = gauss().reshape(-1).at[3].set(jnp.nan).at[8].set(jnp.inf).reshape(D_SHAPE)
    out = c.compress(KEYS[0], x, **kw(c))
    assert out.shape == x.shape and out.dtype == x.dtype


@pytest.mark.parametrize("name", [n for n in NAMES if build(n).needs_axis])
def test_worker_index_as_data_equals_the_axis_index(name):
    c = build(name)
    xs = jnp.stack([gauss(seed=m) for m in range(NUM_WORKERS)])
    key = KEYS[5]
    by_axis = jax.vmap(lambda v: c.compress(key, v), axis_name=AXIS)(xs)
    by_data = jax.vmap(lambda m, v: c.compress(key, v, worker=m))(jnp.arange(NUM_WORKERS), xs)
    bitwise_equal(by_axis, by_data)
    for m in range(NUM_WORKERS):
        bitwise_equal(c.compress(key, xs[m], worker=m), by_axis[m])


# ---------------------------------------------------------------------------------------------
# Monte Carlo: the class constants.


def assert_unbiased(name, samples, x):
    x = _np(x)
    if len(samples) == 1:  # a deterministic unbiased C must be the identity
        np.testing.assert_array_equal(samples[0], x)
        return
    mean = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / math.sqrt(len(samples))
    random = se > 0
    np.testing.assert_allclose(mean[~random], x[~random], rtol=1e-6)
    z = np.abs(mean[random] - x[random]) / se[random]
    assert z.max() < Z, f"{name}: not unbiased, max z-score {z.max():.2f}"


@pytest.mark.parametrize("name", NAMES)
def test_monte_carlo_class_constants(name):
    """E||C(x) - x||^2 against ω||x||², (1 - α)||x||² or an exact formula, per ``CHECKS``."""
    c = build(name)
    for check in CHECKS[name]:
        x = check.x()
        samples = samples_of(c, x)
        sq = float(np.sum(_np(x) ** 2))
        err = np.sum((samples - _np(x)) ** 2, axis=1)
        mean = err.mean()
        se = err.std(ddof=1) / math.sqrt(len(err)) if len(err) > 1 else 0.0
        if c.unbiased:
            assert_unbiased(name, samples, x)
        if check.what == "expands":  # no α in (0, 1] can hold
            assert np.all(err > sq), (name, err.min() / sq)
            assert c.alpha(D) is None and c.omega(D) is None
            continue
        if check.what == "omega":
            target = c.omega(D) * sq
        elif check.what == "alpha":
            alpha = c.alpha(D)
            assert 0 < alpha <= 1
            target = (1 - alpha) * sq
        else:
            target = check.error(x)
        tol = Z * se + ROUND * max(target, mean)
        info = f"{name} {check.what} {check.how}: E err/||x||² = {mean / sq:.6g} ± {se / sq:.2g}"
        info += f", target {target / sq:.6g}"
        if check.how == "equal":
            assert abs(mean - target) <= tol, info
        else:
            assert mean <= target + tol, info


def test_truncate_approaches_its_supremum():
    """α = 3/4 is tight: at mantissa 1 - 2^-20 the error ratio is within 1e-6 of 1/4."""
    c = build("truncate")
    x = mantissa_near_one()
    ratio = truncate_error(x) / np.sum(_np(x) ** 2)
    assert 1 - c.alpha(D) - 1e-6 < ratio < 1 - c.alpha(D)
