"""Tests of the quantization compressors (jaxdist.compressors._quantization / _floats).

Monte-Carlo checks use N independent keys (vmap) and compare with tolerances derived from the
sample: per-coordinate unbiasedness with a Bonferroni-corrected Gaussian critical value, and
exact variance formulas (THEORY.md §1.2) within 6 standard errors.
"""

from __future__ import annotations

import contextlib
import math
import statistics

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxdist.compressors._base import payload_bits
from jaxdist.compressors._floats import cast, natural, truncate
from jaxdist.compressors._quantization import (
    dither,
    dither_tight_omega,
    natural_dither,
    qsgd,
    qsgd_tight_omega,
    scaled_sign,
    sign,
    stochastic_round,
    ternary,
    terngrad,
)

N_MC = 20_000
K_SE = 6.0  # standard errors allowed in Monte-Carlo comparisons
FAMILY_ALPHA = 1e-6  # family-wise false-alarm rate of the per-coordinate unbiasedness test

DTYPES = ["float32", "float64", "bfloat16", "float16"]
EXP_BITS = {"float32": 8, "float64": 11, "bfloat16": 8, "float16": 5}
WIDTH = {"float32": 32, "float64": 64, "bfloat16": 16, "float16": 16}
UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


RNG_X = np.random.default_rng(11).normal(size=16).astype(np.float32)  # the MC test vector

# Shared compressor objects, so that Monte-Carlo programs compile once per (compressor, shape).
TERNARY, TERNGRAD, NATURAL = ternary(), terngrad(), natural()


def _lb(s):  # ceil(log2(s + 1))
    return math.ceil(math.log2(s + 1))


# (id, factory, randomised, bits formula (d, b) -> int) -- formulas written from THEORY.md.
CASES = [
    ("ternary_2bit", lambda: ternary(), True, lambda d, b: b + 2 * d),
    ("ternary_base3", lambda: ternary(coding="base3"), True, lambda d, b: b + 8 * math.ceil(d / 5)),
    ("terngrad", lambda: terngrad(), True, lambda d, b: b + 2 * d),
    ("qsgd3", lambda: qsgd(3), True, lambda d, b: b + d * (1 + _lb(3))),
    ("dither4_p1", lambda: dither(4, p=1), True, lambda d, b: b + d * (1 + _lb(4))),
    ("dither2_pinf", lambda: dither(2, p=math.inf), True, lambda d, b: b + d * (1 + _lb(2))),
    ("natural", lambda: natural(), True, None),  # d * (1 + exponent bits)
    ("natural_dither5", lambda: natural_dither(5), True, lambda d, b: b + d * (1 + _lb(5))),
    ("stoch_round", lambda: stochastic_round(0.25, num_bits=6), True, lambda d, b: 6 * d),
    ("truncate", lambda: truncate(), False, None),
    ("cast_bf16", lambda: cast(jnp.bfloat16), False, lambda d, b: 16 * d),
    ("cast_f16", lambda: cast(jnp.float16), False, lambda d, b: 16 * d),
    ("sign", lambda: sign(), False, lambda d, b: d),
    ("scaled_sign", lambda: scaled_sign(), False, lambda d, b: d + b),
]


@contextlib.contextmanager
def _dtype_ctx(name):
    if name == "float64":
        with jax.enable_x64(True):
            yield jnp.dtype(name)
    else:
        yield jnp.dtype(name)


def _as_uint(a):
    a = np.asarray(a)
    return a.view(UINT[a.dtype.itemsize])


def _bitwise_equal(a, b):
    return all(
        la.dtype == lb.dtype and np.array_equal(_as_uint(la), _as_uint(lb))
        for la, lb in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


_JIT_CACHE: dict = {}


def _jit(c, what="compress"):
    """One jitted function per (compressor object, kind), so repeated calls reuse compilations."""
    k = (id(c), what)
    if k not in _JIT_CACHE:
        if what == "compress":
            f = c.compress
        elif what == "roundtrip":
            f = lambda key, x: c.decode(key, c.encode(key, x), x)  # noqa: E731
        else:  # "mc"
            f = jax.vmap(c.compress, in_axes=(0, None))
        _JIT_CACHE[k] = (c, jax.jit(f))  # keep c alive so its id is not reused
    return _JIT_CACHE[k][1]


def _mc(c, x, n=N_MC, seed=0):
    """n independent draws of c.compress(key_i, x) as a float64 NumPy array (n, d)."""
    keys = jax.random.split(jax.random.key(seed), n)
    out = _jit(c, "mc")(keys, jnp.asarray(x))
    return np.asarray(out, np.float64).reshape(n, -1)


def _compress(c, x, key=0):
    return np.asarray(_jit(c)(jax.random.key(key), jnp.asarray(x)))


def _assert_unbiased(samples, x, rel_round=1e-6):
    """Per-coordinate z-test with a Bonferroni-corrected critical value."""
    x = np.asarray(x, np.float64).reshape(-1)
    n, d = samples.shape
    z = statistics.NormalDist().inv_cdf(1 - FAMILY_ALPHA / (2 * d))
    mean = samples.mean(0)
    se = samples.std(0, ddof=1) / math.sqrt(n)
    tol = z * se + rel_round * np.abs(x).max()
    bad = np.abs(mean - x) > tol
    assert not bad.any(), (mean[bad], x[bad], tol[bad])


def _assert_mean(values, expected, rel_round=1e-6):
    """The sample mean of ``values`` equals ``expected`` within K_SE standard errors."""
    m = values.mean()
    se = values.std(ddof=1) / math.sqrt(values.size)
    assert abs(m - expected) <= K_SE * se + rel_round * abs(expected), (m, expected, se)
    return m, se


def _sq_err(samples, x):
    return ((samples - np.asarray(x, np.float64).reshape(1, -1)) ** 2).sum(1)


# ---------------------------------------------------------------------------------------------
# Contract: dtype, shapes, jit, vmap, determinism, decode∘encode, bits, pytrees.


_CONTRACT_KEYS = (3, 4, 5)  # batched keys; the first one is also used unbatched
_contract_cache: dict = {}


def _contract_results(dtype_name):
    """Runs every compressor of CASES on one pytree in ONE jitted program per dtype (compiling
    14 small programs separately costs ~3x more) and caches the NumPy results."""
    if dtype_name in _contract_cache:
        return _contract_cache[dtype_name]
    with _dtype_ctx(dtype_name) as dtype:
        rng = np.random.default_rng(1)
        x = {
            "w": jnp.asarray(rng.normal(size=(4, 8)), dtype),
            "b": jnp.asarray([0.0, -1.0, 2.0, 3.5, 1e-3], dtype),
        }
        # The default threefry keys for float32; the cheaper-to-compile "rbg" implementation
        # for the other dtypes (which also checks that any key implementation works).
        impl = "threefry2x32" if dtype_name == "float32" else "rbg"
        keys = jnp.stack([jax.random.key(k, impl=impl) for k in _CONTRACT_KEYS])
        comps = [factory() for _, factory, _, _ in CASES]

        def run(keys, x):
            out = []
            for c in comps:
                payload = c.encode(keys[0], x)
                out.append(
                    (
                        c.compress(keys[0], x),
                        payload,
                        c.decode(keys[0], payload, x),
                        jax.vmap(c.compress, in_axes=(0, None))(keys, x),
                    )
                )
            return out

        f = jax.jit(run)
        first = f(keys, x)
        again = f(keys, x)
        results = {}
        for (name, *_), c, res, res2 in zip(CASES, comps, first, again, strict=True):
            y, payload, z, batched = res
            results[name] = dict(
                c=c,
                x=jax.tree.map(np.asarray, x),
                y=jax.tree.map(np.asarray, y),
                y_again=jax.tree.map(np.asarray, res2[0]),
                z=jax.tree.map(np.asarray, z),
                batched=jax.tree.map(np.asarray, batched),
                payload_bits=payload_bits(payload),
                payload_ndims=[leaf.ndim for leaf in jax.tree.leaves(payload)],
            )
    _contract_cache[dtype_name] = results
    return results


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_contract(case, dtype_name):
    """dtype/shape/structure kept; jit; vmap over keys; determinism per key; different keys
    differ (randomised ones); decode(encode(x)) == compress(x) bitwise; payload_bits ==
    bits(d) == the THEORY.md formula; pytree round trip."""
    name, _, randomised, bits_formula = case
    r = _contract_results(dtype_name)[name]
    c, x, y, z, batched = r["c"], r["x"], r["y"], r["z"], r["batched"]
    with _dtype_ctx(dtype_name) as dtype:
        d, b = 37, WIDTH[dtype_name]
        assert jax.tree.structure(y) == jax.tree.structure(x)
        assert jax.tree.structure(z) == jax.tree.structure(x)
        for leaf, ref in zip(jax.tree.leaves(y), jax.tree.leaves(x), strict=True):
            assert leaf.shape == ref.shape and leaf.dtype == ref.dtype == dtype
        assert _bitwise_equal(y, z)  # decode ∘ encode == compress
        assert _bitwise_equal(y, r["y_again"])  # deterministic per key
        # vmap over keys: row 0 is the unbatched draw; rows 0 and 1 (other keys) differ.
        assert batched["w"].shape == (3, 4, 8) and batched["b"].shape == (3, 5)
        row0 = jax.tree.map(lambda a: a[0], batched)
        row1 = jax.tree.map(lambda a: a[1], batched)
        tol = 2 * float(jnp.finfo(dtype).eps)
        for k in y:
            np.testing.assert_allclose(
                row0[k].astype(np.float64), y[k].astype(np.float64), rtol=tol, atol=0
            )
        assert (not _bitwise_equal(row0, row1)) == randomised
        # Exact bits: payload == bits(d) == the THEORY.md formula.
        expected = (
            bits_formula(d, b) if bits_formula is not None else d * (1 + EXP_BITS[dtype_name])
        )
        assert r["payload_bits"] == c.bits(x) == c.bits(d, dtype) == expected
        assert all(n <= 1 for n in r["payload_ndims"])  # flat static-shape arrays


def test_raw_uint32_keys_and_array_input():
    """Raw (legacy) uint32 keys work and give the same result as the typed key."""
    x = jnp.asarray(RNG_X)
    raw = jax.random.PRNGKey(3)
    typed = jax.random.wrap_key_data(raw)
    f = jax.jit(lambda k, x: [c.compress(k, x) for c in (qsgd(2), natural(), natural_dither(3))])
    assert _bitwise_equal(f(raw, x), f(typed, x))


def test_bits_of_plain_array_and_default_dtype():
    assert ternary().bits(1000) == 32 + 2000
    assert ternary(coding="base3").bits(1000) == 32 + 1600
    assert qsgd(1).bits(10) == 32 + 20 and qsgd(4).bits(10) == 32 + 40
    assert natural().bits(10) == 90 and truncate().bits(10, jnp.float16) == 60
    assert natural().bits(10, jnp.bfloat16) == 90
    assert stochastic_round(1.0, num_bits=32).bits(7) == 224
    assert scaled_sign().bits(jnp.zeros((3, 3), jnp.bfloat16)) == 9 + 16


# ---------------------------------------------------------------------------------------------
# Constants and flags.


def test_constants():
    d = 100
    assert ternary().omega(d) == pytest.approx(9.0)
    assert terngrad().omega(d) == pytest.approx(4.5)
    assert qsgd(2).omega(d) == pytest.approx(min(d / 4, 10 / 2))
    assert qsgd(20).omega(d) == pytest.approx(min(d / 400, 10 / 20))
    assert qsgd_tight_omega(d, 20) == pytest.approx(d / 1600)
    assert dither(2, p=2).omega(d) == pytest.approx(qsgd(2).omega(d))
    assert dither(3, p=math.inf).omega(d) == pytest.approx(qsgd(3).omega(d))
    assert dither(5, p=1).omega(d) == pytest.approx((d / 5) * min(1, d / 5))
    assert natural().omega(d) == 0.125
    a = math.sqrt(d) * 2.0 ** (1 - 4)
    assert natural_dither(4).omega(d) == pytest.approx(0.125 + a * min(1, a))
    a = d * 2.0 ** (1 - 8)
    assert natural_dither(8, p=1).omega(d) == pytest.approx(0.125 + a * min(1, a))
    assert stochastic_round(0.1).omega(d) is None and stochastic_round(0.1).alpha(d) is None
    assert stochastic_round(0.1).unbiased
    assert truncate().alpha(d) == 0.75 and truncate().omega(d) is None
    assert cast(jnp.bfloat16).alpha(d) == 1 - 2.0**-16
    assert cast(jnp.float16).alpha(d) == 1 - 2.0**-22
    assert sign().alpha(d) is None and sign().omega(d) is None
    assert scaled_sign().alpha(d) == pytest.approx(1 / d)
    for c in (ternary(), terngrad(), qsgd(3), dither(2), natural(), natural_dither(3)):
        assert c.unbiased and not c.deterministic and c.alpha(d) is None
    for c in (truncate(), cast(jnp.bfloat16), sign(), scaled_sign()):
        assert c.deterministic and not c.unbiased


# ---------------------------------------------------------------------------------------------
# Bad parameters.


@pytest.mark.parametrize(
    "make, param",
    [
        (lambda: ternary(coding="3bit"), "coding"),
        (lambda: qsgd(0), "s"),
        (lambda: qsgd(-2), "s"),
        (lambda: qsgd(2**31), "s"),
        (lambda: dither(0), "s"),
        (lambda: dither(2, p=0.5), "p"),
        (lambda: dither(2, p=float("nan")), "p"),
        (lambda: natural_dither(0), "s"),
        (lambda: natural_dither(127), "s"),
        (lambda: natural_dither(3, p=0.99), "p"),
        (lambda: stochastic_round(0.0), "step"),
        (lambda: stochastic_round(-1.0), "step"),
        (lambda: stochastic_round(float("inf")), "step"),
        (lambda: stochastic_round(float("nan")), "step"),
        (lambda: stochastic_round(0.1, num_bits=0), "num_bits"),
        (lambda: stochastic_round(0.1, num_bits=33), "num_bits"),
        (lambda: cast(jnp.int32), "dtype"),
        (lambda: cast(jnp.float32).compress(jax.random.key(0), jnp.ones(3, jnp.bfloat16)), "dtype"),
        (lambda: cast(jnp.float32).bits(3, jnp.float16), "dtype"),
    ],
)
def test_bad_parameters(make, param):
    with pytest.raises(ValueError, match=rf"\b{param}\b"):
        make()


@pytest.mark.parametrize(
    "make, param",
    [
        (lambda: ternary(coding=2), "coding"),
        (lambda: qsgd(2.5), "s"),
        (lambda: qsgd(4.0), "s"),
        (lambda: qsgd("4"), "s"),
        (lambda: qsgd(True), "s"),
        (lambda: dither(2.0), "s"),
        (lambda: dither(2, p="2"), "p"),
        (lambda: dither(2, p=True), "p"),
        (lambda: dither(2, p=None), "p"),
        (lambda: natural_dither(3.0), "s"),
        (lambda: natural_dither(3, p="inf"), "p"),
        (lambda: stochastic_round("0.1"), "step"),
        (lambda: stochastic_round(None), "step"),
        (lambda: stochastic_round([0.1, 0.2]), "step"),
        (lambda: stochastic_round(0.1, num_bits=8.0), "num_bits"),
        (lambda: cast("not-a-dtype"), "dtype"),
        (lambda: cast(None), "dtype"),
        (lambda: cast(16), "dtype"),
    ],
)
def test_bad_parameter_types(make, param):
    """Wrong types are TypeErrors that name the parameter (strings are never parsed)."""
    with pytest.raises(TypeError, match=rf"\b{param}\b"):
        make()


def test_integer_input_is_type_error():
    for c in (qsgd(2), natural(), truncate()):
        with pytest.raises(TypeError):
            c.compress(jax.random.key(0), jnp.arange(4))


# ---------------------------------------------------------------------------------------------
# Equivalences between operators (same key -> same output).


def test_ternary_is_qsgd1_and_terngrad_is_dither1_inf():
    x = jnp.asarray(np.random.default_rng(2).normal(size=50), jnp.float32)
    comps = (ternary(), ternary(coding="base3"), qsgd(1), dither(1, p=2), terngrad())
    comps += (dither(1, p=math.inf),)
    t2, t3, q1, d1, tg, dinf = jax.jit(lambda k, x: [c.compress(k, x) for c in comps])(
        jax.random.key(7), x
    )
    assert _bitwise_equal(t2, t3) and _bitwise_equal(t2, q1) and _bitwise_equal(t2, d1)
    assert _bitwise_equal(tg, dinf)
    t2 = np.asarray(t2)
    assert 0 < np.count_nonzero(t2) < 50
    assert np.allclose(np.abs(t2[t2 != 0]), np.linalg.norm(np.asarray(x, np.float64)), rtol=1e-6)


def test_dimension_one_is_exact():
    """d = 1: ternary, TernGrad and natural dithering send |x| and the sign: C(x) = x."""
    comps = (ternary(), terngrad(), natural_dither(4), dither(1, p=1))
    x = jnp.asarray([-0.37], jnp.float32)
    outs = jax.jit(lambda k, x: [c.compress(k, x) for c in comps])(jax.random.key(0), x)
    for c, out in zip(comps, outs, strict=True):
        assert _bitwise_equal(out, x), c.name
    assert comps[0].omega(1) == comps[1].omega(1) == 0.0


# ---------------------------------------------------------------------------------------------
# Monte Carlo: unbiasedness and exact variances (formulas of THEORY.md, in NumPy float64).


def _dither_var(x, s, p):
    """Exact E||C(x) - x||^2 of dither(s, p): (||x||_p/s)^2 sum f(1-f), f = frac(s|x|/||x||_p)."""
    x = np.asarray(x, np.float64)
    n = np.linalg.norm(x, ord=p)
    y = s * np.abs(x) / n
    f = y - np.floor(y)
    return (n / s) ** 2 * np.sum(f * (1 - f))


def _natural_var(x):
    """sum lo^2 f(1 - f) with |x| = lo (1 + f)."""
    a = np.abs(np.asarray(x, np.float64))
    lo = 2.0 ** np.floor(np.log2(np.where(a > 0, a, 1)))
    f = np.where(a > 0, a / lo - 1, 0)
    return np.sum(lo**2 * f * (1 - f))


def _natural_dither_var(x, s, p):
    x = np.asarray(x, np.float64)
    n = np.linalg.norm(x, ord=p)
    y = np.abs(x) / n
    small = y < 2.0 ** (1 - s)
    lo = 2.0 ** np.floor(np.log2(np.where(y > 0, y, 1)))
    f = y / lo - 1
    var = np.where(small, y * (2.0 ** (1 - s) - y), lo**2 * f * (1 - f))
    return n**2 * np.sum(var)


MC_CASES = [
    ("ternary", TERNARY, lambda x: _dither_var(x, 1, 2)),
    ("ternary_base3", ternary(coding="base3"), lambda x: _dither_var(x, 1, 2)),
    ("terngrad", TERNGRAD, lambda x: _dither_var(x, 1, np.inf)),
    ("qsgd3", qsgd(3), lambda x: _dither_var(x, 3, 2)),
    ("dither3_p1", dither(3, p=1), lambda x: _dither_var(x, 3, 1)),
    ("dither2_p1.5", dither(2, p=1.5), lambda x: _dither_var(x, 2, 1.5)),
    ("dither2_pinf", dither(2, p=math.inf), lambda x: _dither_var(x, 2, np.inf)),
    ("natural", NATURAL, _natural_var),
    ("natural_dither3", natural_dither(3), lambda x: _natural_dither_var(x, 3, 2)),
    ("natural_dither2_p1", natural_dither(2, p=1), lambda x: _natural_dither_var(x, 2, 1)),
    (
        "natural_dither4_pinf",
        natural_dither(4, p=math.inf),
        lambda x: _natural_dither_var(x, 4, np.inf),
    ),
]


@pytest.mark.parametrize("name, c, var_fn", MC_CASES, ids=[m[0] for m in MC_CASES])
def test_mc_unbiased_exact_variance_and_omega(name, c, var_fn):
    x = RNG_X
    samples = _mc(c, x)
    _assert_unbiased(samples, x)
    v = var_fn(x)
    errs = _sq_err(samples, x)
    _assert_mean(errs, v)
    sq = float(np.sum(np.asarray(x, np.float64) ** 2))
    # The exact variance, and the Monte-Carlo estimate, are within the advertised omega.
    assert v <= c.omega(x.size) * sq
    assert errs.mean() <= c.omega(x.size) * sq + K_SE * errs.std(ddof=1) / math.sqrt(errs.size)


def test_mc_float64_unbiased_per_coordinate_and_on_a_projection(x64):
    x = np.random.default_rng(5).normal(size=40)
    g = np.random.default_rng(6).normal(size=40)
    comps = (qsgd(2), natural(), natural_dither(3, p=1), stochastic_round(0.3, num_bits=8))
    keys = jax.random.split(jax.random.key(1), 10_000)
    outs = jax.jit(jax.vmap(lambda k, x: [c.compress(k, x) for c in comps], in_axes=(0, None)))(
        keys, jnp.asarray(x, jnp.float64)
    )
    for c, out in zip(comps, outs, strict=True):
        assert out.dtype == jnp.float64, c.name
        samples = np.asarray(out)
        _assert_unbiased(samples, x, rel_round=1e-12)
        _assert_mean(samples @ g, float(x @ g), rel_round=1e-12)


def test_ternary_worst_case_attains_tight_omega():
    d = 16
    x = np.where(np.arange(d) % 3 == 0, -1.0, 1.0).astype(np.float32)  # all |x_i| equal
    sq = float(d)
    assert _dither_var(x, 1, 2) == pytest.approx((math.sqrt(d) - 1) * sq, rel=1e-12)
    assert TERNARY.omega(d) == pytest.approx(math.sqrt(d) - 1)
    m, se = _assert_mean(_sq_err(_mc(TERNARY, x), x), TERNARY.omega(d) * sq)
    assert se > 0
    # QSGD's Lemma 3.1 at s = 1 gives sqrt(d) = 4 > 3: valid, not tight.
    assert qsgd(1).omega(d) == pytest.approx(math.sqrt(d))


def test_ternary_exact_variance_is_l1_over_l2_formula():
    x = RNG_X.astype(np.float64)
    expected = (np.abs(x).sum() / np.linalg.norm(x) - 1) * np.sum(x**2)
    assert _dither_var(x, 1, 2) == pytest.approx(expected, rel=1e-12)
    _assert_mean(_sq_err(_mc(TERNARY, RNG_X), RNG_X), expected)
    # Expected number of nonzeros: ||x||_1 / ||x||_2.
    nnz = (_mc(TERNARY, RNG_X) != 0).sum(1)
    _assert_mean(nnz.astype(np.float64), np.abs(x).sum() / np.linalg.norm(x))


def test_terngrad_worst_case():
    d = 16
    x = np.full(d, 1 / (math.sqrt(d) + 1), np.float32)
    x[0] = 1.0
    xd = x.astype(np.float64)
    exact = np.abs(xd).sum() * np.abs(xd).max() - np.sum(xd**2)
    assert exact == pytest.approx(_dither_var(x, 1, np.inf), rel=1e-12)
    assert exact / np.sum(xd**2) == pytest.approx(TERNGRAD.omega(d), rel=1e-6)
    _assert_mean(_sq_err(_mc(TERNGRAD, x), x), exact)


def test_qsgd_tight_bound_attained_and_below_lemma():
    d, s = 16, 6
    x = np.where(np.arange(d) % 2 == 0, 1.0, -1.0).astype(np.float32)  # |x_i|/||x|| = 1/4
    # s |x_i| / ||x|| = 1.5 = l + 1/2 with l = 1: every coordinate has p_i = 1/2.
    c = qsgd(s)
    tight = qsgd_tight_omega(d, s)
    assert tight == pytest.approx(d / (4 * s * s)) and tight < c.omega(d)
    assert _dither_var(x, s, 2) == pytest.approx(tight * d, rel=1e-12)
    _assert_mean(_sq_err(_mc(c, x), x), tight * d)
    # On random inputs the (exact and Monte-Carlo) variance stays below the tight bound.
    for seed in range(3):
        xr = np.random.default_rng(seed).normal(size=d).astype(np.float32)
        v = _dither_var(xr, s, 2)
        assert v <= tight * np.sum(xr.astype(np.float64) ** 2)
        _assert_mean(_sq_err(_mc(c, xr, seed=seed), xr), v)


def test_dither_p1_worst_case_violates_theory_md_formula():
    """p = 1, d = 64, s = 32, x = 1: every y_i = 1/2 and the variance is ||x||^2 exactly.

    THEORY.md's (d/s) min(1, sqrt(d)/s) = 0.5 is violated; the omega used here (2) and the
    tight bound (1) hold.
    """
    d, s = 64, 32
    x = np.ones(d, np.float32)
    c = dither(s, p=1)
    assert _dither_var(x, s, 1) == pytest.approx(d)
    m, se = _assert_mean(_sq_err(_mc(c, x, n=5000), x), float(d))
    theory_md = (d / s) * min(1.0, math.sqrt(d) / s)
    assert m / d - K_SE * se / d > theory_md
    assert dither_tight_omega(d, s, 1) == pytest.approx(1.0)
    assert c.omega(d) >= 1.0


@pytest.mark.parametrize("p", [1.0, 1.5, 2.0, 3.0, math.inf])
def test_dither_omega_on_adversarial_inputs(p):
    """Exact variances of dither(s, p) never exceed the tight bound, which never exceeds omega,
    on equal-magnitude, spiky and graded inputs over a grid of (d, s)."""
    for d in (4, 16, 64, 256):
        for s in (1, 2, 3, 8, 32, 100):
            c = dither(s, p=p)
            tight = dither_tight_omega(d, s, p)
            assert tight <= c.omega(d) + 1e-12
            for x in (
                np.ones(d),
                np.r_[1.0, np.full(d - 1, 1 / (math.sqrt(d) + 1))],
                np.linspace(0.1, 1.0, d),
                np.ones(d) * (np.arange(d) < max(1, d // 3)),
            ):
                assert _dither_var(x, s, p) <= tight * np.sum(x**2) * (1 + 1e-9)


def test_natural_dither_omega_on_adversarial_inputs():
    """Natural dithering's exact variance never exceeds its omega over a grid of inputs."""
    for p in (1.0, 2.0, math.inf):
        for d in (4, 16, 64, 256):
            for s in (1, 2, 3, 5, 8):
                c = natural_dither(s, p=p)
                for x in (
                    np.ones(d),
                    np.full(d, 4.0 / 3.0) * 2.0 ** -np.arange(d),
                    np.r_[1.0, np.full(d - 1, 1 / (math.sqrt(d) + 1))],
                    np.linspace(0.01, 1.0, d),
                ):
                    assert _natural_dither_var(x, s, p) <= c.omega(d) * np.sum(x**2) * (1 + 1e-9)


def test_natural_worst_and_mid_mantissa():
    exps = np.arange(-4, 4)
    for frac, ratio in ((1 / 3, 1 / 8), (0.5, 1 / 9)):
        x = ((1 + frac) * 2.0**exps).astype(np.float32)
        x = np.r_[x, -x]
        exact = _natural_var(x)
        assert exact / np.sum(x.astype(np.float64) ** 2) == pytest.approx(ratio, rel=1e-6)
        samples = _mc(NATURAL, x)
        _assert_unbiased(samples, x)
        _assert_mean(_sq_err(samples, x), exact)


def test_natural_matches_numpy_reference_bitwise():
    """Round up iff (top 23 bits of one uniform uint32 per coordinate) < mantissa field."""
    key = jax.random.key(9)
    rng = np.random.default_rng(3)
    x = (rng.normal(size=1000) * 10.0 ** np.arange(-5, 5).repeat(100)).astype(np.float32)
    out = np.asarray(_jit(NATURAL)(key, jnp.asarray(x)))
    r = np.asarray(jax.random.bits(key, (1000,), jnp.uint32)) >> 9
    bits = x.view(np.uint32)
    ref_bits = (bits & 0xFF800000) + (r < (bits & 0x7FFFFF)).astype(np.uint32) * (1 << 23)
    assert np.array_equal(out.view(np.uint32), ref_bits)


def test_natural_edge_cases():
    f32 = np.float32
    x = np.zeros(16, f32)
    x[:9] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -2.0, 0.75, np.finfo(f32).max]
    out = _compress(NATURAL, x, key=1)
    assert out[0] == 0 and out[1] == 0 and not np.signbit(out[1])  # -0 -> +0
    assert out[2] == np.inf and out[3] == -np.inf and np.isnan(out[4])
    assert out[5] == 1.0 and out[6] == -2.0 and out[7] in (0.5, 1.0)
    assert out[8] in (2.0**127, np.inf)
    assert _bitwise_equal(out, _jit(NATURAL, "roundtrip")(jax.random.key(1), jnp.asarray(x)))
    # Overflow: 1.5 * 2^127 (top binade) rounds up to inf with probability 1/2.
    top = np.full(16, 1.5 * 2.0**127, f32)
    samples = _mc(NATURAL, top)
    assert set(np.unique(samples)) == {2.0**127, np.inf}
    frac_inf = np.isinf(samples).mean()
    assert abs(frac_inf - 0.5) <= K_SE * math.sqrt(0.25 / samples.size)


@pytest.mark.parametrize("dtype_name", ["float32", "float16", "bfloat16"])
def test_natural_subnormals_unbiased(dtype_name):
    """Subnormals are rounded to 0 or the smallest normal, with the right probability."""
    dt = jnp.dtype(dtype_name)
    tiny = float(jnp.finfo(dt).smallest_normal)
    vals = np.linspace(0.1, 0.9, 8) * tiny
    x = np.asarray(jnp.asarray(np.r_[vals, -vals], dt))  # exact subnormals of the dtype
    xd = x.astype(np.float64)
    assert np.all(np.abs(xd) < tiny) and np.all(xd != 0)
    samples = _mc(NATURAL, x)
    assert set(np.unique(np.abs(samples))) == {0.0, tiny}
    _assert_unbiased(samples, xd, rel_round=0)


def test_truncate_exact_and_contraction():
    c = truncate()
    rng = np.random.default_rng(4)
    x = (rng.normal(size=4000) * 10.0 ** rng.integers(-30, 30, size=4000)).astype(np.float32)
    # Near mantissa 1 the ratio approaches 1/4 from below.
    x[:6] = np.nextafter(np.float32(2.0) * 2.0 ** np.arange(-3, 3, dtype=np.float32), 0)
    out = _compress(c, x).astype(np.float64)
    xd = x.astype(np.float64)
    ref = np.sign(xd) * 2.0 ** np.floor(np.log2(np.abs(xd)))
    assert np.array_equal(out, ref)
    assert np.all(np.abs(out - xd) < np.abs(xd) / 2)
    assert np.sum((out - xd) ** 2) < (1 - c.alpha(x.size)) * np.sum(xd**2)
    ratio = np.sum((out[:6] - xd[:6]) ** 2) / np.sum(xd[:6] ** 2)
    assert 0.25 - 1e-6 < ratio < 0.25


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_truncate_edge_cases(dtype_name):
    with _dtype_ctx(dtype_name) as dt:
        tiny = float(jnp.finfo(dt).smallest_normal)
        x = jnp.asarray([0.0, -0.0, np.inf, -np.inf, np.nan, 0.4 * tiny, -0.4 * tiny, -3.0], dt)
        assert float(x[5]) != 0  # a real subnormal
        out = np.asarray(jax.jit(truncate().compress)(jax.random.key(0), x), np.float64)
        assert out[0] == 0 and out[1] == 0 and not np.signbit(out[1])
        assert out[2] == np.inf and out[3] == -np.inf and np.isnan(out[4])
        assert out[5] == 0 and out[6] == 0 and out[7] == -2.0


def test_stochastic_round_variance_saturation_nonfinite():
    step = 0.25
    c = stochastic_round(step, num_bits=8)
    x = RNG_X * 3
    samples = _mc(c, x)
    _assert_unbiased(samples, x)
    t = np.asarray(x, np.float64) / step
    f = t - np.floor(t)
    exact = step**2 * np.sum(f * (1 - f))
    _assert_mean(_sq_err(samples, x), exact)
    assert exact <= x.size * step**2 / 4
    assert np.array_equal(np.round(samples / step), samples / step)  # on the grid
    # The variance is absolute: scaling x down does not shrink it, so no omega exists.
    xs = (RNG_X / 1e5).astype(np.float32)
    errs = _sq_err(_mc(c, xs), xs)
    assert errs.mean() > 100 * np.sum(xs.astype(np.float64) ** 2)
    # Saturation at [-128, 127] * step, non-finite inputs; decode(encode) agrees.
    z = np.zeros(16, np.float32)
    z[:7] = [1e6, -1e6, np.inf, -np.inf, np.nan, 31.75, -32.0]
    out = _compress(c, z)
    np.testing.assert_array_equal(out[:7], [31.75, -32.0, 31.75, -32.0, 0.0, 31.75, -32.0])
    assert _bitwise_equal(out, _jit(c, "roundtrip")(jax.random.key(0), jnp.asarray(z)))
    # num_bits = 32 saturates at the int32 range.
    c32 = stochastic_round(1.0, num_bits=32)
    big = jnp.asarray([3e9, -3e9, 2.0**31 - 128, -5.0], jnp.float32)
    out = np.asarray(_jit(c32, "roundtrip")(jax.random.key(0), big))
    np.testing.assert_array_equal(out, np.float32([2**31 - 1, -(2**31), 2.0**31 - 128, -5.0]))


def test_scaled_sign_identity_and_alpha(x64):
    c = scaled_sign()
    rng = np.random.default_rng(8)
    f = jax.jit(c.compress)
    for x in (rng.normal(size=30), np.r_[0.0, 0.0, rng.normal(size=28)], np.eye(1, 30)[0]):
        out = np.asarray(f(jax.random.key(0), jnp.asarray(x, jnp.float64)))
        err = np.sum((out - x) ** 2)
        identity = np.sum(x**2) - np.abs(x).sum() ** 2 / x.size
        assert err == pytest.approx(identity, rel=1e-12, abs=1e-15)
        assert err <= (1 - c.alpha(x.size)) * np.sum(x**2) * (1 + 1e-12)
        assert np.all(out[x == 0] > 0)  # 0 -> +1
    # 1-sparse x attains the worst case alpha = 1/d.
    assert err == pytest.approx((1 - c.alpha(30)) * np.sum(x**2), rel=1e-12)


def test_sign_values_and_not_contractive():
    x = np.zeros(8, np.float32)
    x[:7] = [0.0, -0.0, 2.0, -3.0, np.inf, -np.inf, np.nan]
    out = _compress(sign(), x)
    np.testing.assert_array_equal(out, [1, 1, 1, -1, 1, -1, 1, 1])
    # ||sign(x) - x||^2 / ||x||^2 is unbounded as x -> 0 (no alpha in (0, 1] works).
    small = np.full(8, 1e-3)
    o = _compress(sign(), small.astype(np.float32))
    assert np.sum((o - small) ** 2) / np.sum(small**2) > 1e5


@pytest.mark.parametrize("target", ["bfloat16", "float16"])
def test_cast_matches_reference_and_alpha(target):
    c = cast(jnp.dtype(target))
    rng = np.random.default_rng(9)
    x = (rng.normal(size=5000) * 10.0 ** rng.integers(-3, 4, size=5000)).astype(np.float32)
    ref_dtype = ml_dtypes.bfloat16 if target == "bfloat16" else np.float16
    info = jnp.finfo(jnp.dtype(target))
    x = x[(np.abs(x) >= float(info.smallest_normal)) & (np.abs(x) <= float(info.max))]
    out = _compress(c, x)
    ref = x.astype(ref_dtype).astype(np.float32)
    assert np.array_equal(out.view(np.uint32), ref.view(np.uint32))
    u = float(info.eps) / 2
    xd = x.astype(np.float64)
    assert np.all(np.abs(out - xd) <= u * np.abs(xd))  # normal range
    assert np.sum((out - xd) ** 2) <= (1 - c.alpha(x.size)) * np.sum(xd**2)


def test_cast_nonfinite_and_float16_range():
    x = jnp.asarray([1e5, -1e5, np.nan, np.inf, 1e-7], jnp.float32)
    out = np.asarray(jax.jit(cast(jnp.float16).compress)(jax.random.key(0), x))
    assert out[0] == np.inf and out[1] == -np.inf and np.isnan(out[2]) and out[3] == np.inf
    assert abs(out[4] - 1e-7) > 2.0**-11 * 1e-7  # float16 subnormal: relative precision lost
    outb = np.asarray(jax.jit(cast(jnp.bfloat16).compress)(jax.random.key(0), x))
    assert np.isfinite(outb[0]) and np.isnan(outb[2]) and outb[3] == np.inf
    # Casting float16 inputs to bfloat16 (same width) is allowed.
    xh = jnp.asarray([1.0, 3.0e4], jnp.float16)
    assert jax.jit(cast(jnp.bfloat16).compress)(jax.random.key(0), xh).dtype == jnp.float16


# ---------------------------------------------------------------------------------------------
# Non-finite inputs, zero and overflow for the norm-based operators.

NORM_BASED = [
    ternary(),
    ternary(coding="base3"),
    terngrad(),
    qsgd(4),
    dither(3, p=1),
    natural_dither(3),
    scaled_sign(),
]


def test_norm_based_nonfinite_zero_and_overflow():
    rows = np.zeros((5, 8), np.float32)
    rows[:3, :3] = [[1.0, np.inf, -2.0], [1.0, -np.inf, -2.0], [1.0, np.nan, -2.0]]
    rows[4, :3] = [1e38, -1e38, 1e37]  # finite, but the squares overflow float32
    big16 = jnp.full(100, 10000.0, jnp.float16)  # the l2 norm (1e5) overflows float16

    @jax.jit
    def run(key, rows, big16):
        out = []
        for c in NORM_BASED:
            comp = jax.vmap(c.compress, in_axes=(None, 0))(key, rows)
            rt = jax.vmap(lambda x: c.decode(key, c.encode(key, x), x))(rows)  # noqa: B023
            out.append((comp, rt, c.compress(key, big16)))
        return out

    for c, (comp, rt, out16) in zip(NORM_BASED, run(jax.random.key(0), rows, big16), strict=True):
        comp, rt = np.asarray(comp), np.asarray(rt)
        assert _bitwise_equal(comp, rt), c.name
        assert np.all(np.isnan(comp[:3])), c.name  # inf / -inf / NaN entry -> all NaN
        assert np.all(comp[3] == 0), c.name  # x = 0 -> 0
        assert np.all(np.isfinite(comp[4])), c.name  # no overflow inside the norm
        out16 = np.asarray(out16, np.float64)
        if c.name in ("terngrad()", "scaled_sign()"):  # max / mean of |x| do not overflow
            assert np.all(out16 == 10000.0), c.name
        else:
            assert np.all(np.isnan(out16)), c.name


def test_eager_equals_jit_bitwise():
    """Norm sums use a fixed pairwise order without fused multiply-adds, and no division by a
    constant, so eager execution and jit agree bitwise (XLA reorders `reduce`, contracts
    multiply-adds and rewrites divisions by constants only inside jit)."""
    x = jnp.asarray(np.random.default_rng(12).normal(size=50), jnp.float32)
    key = jax.random.key(2)
    for c in (
        qsgd(3),
        dither(3, p=1),
        natural_dither(3, p=1),
        scaled_sign(),
        stochastic_round(0.3),
    ):
        assert _bitwise_equal(c.compress(key, x), _jit(c)(key, x)), c.name
