"""Compressors are values: equality and hashing by configuration, one interface implemented by
three small types, checked arguments, checked payloads, and the list of factories."""

from __future__ import annotations

import dataclasses
import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from registry import NAMES, build

import jaxdist.compressors as jc
from jaxdist.compressors._base import PerLeaf, Sparsifier, VectorCompressor, payload_bits

X = jnp.asarray(np.random.default_rng(0).normal(size=(5, 10)), jnp.float32)
KEY = jax.random.key(0)


def kw(c):
    return {"worker": 0} if c.needs_axis else {}


# ---------------------------------------------------------------------------------------------
# Equality and hashing.


def test_equal_by_configuration():
    assert jc.rand_k(10) == jc.rand_k(10)
    assert hash(jc.rand_k(10)) == hash(jc.rand_k(10))
    assert jc.rand_k(10) != jc.rand_k(11)
    assert jc.rand_k(10, shared=True) != jc.rand_k(10)
    assert jc.rand_k(10) == jc.rand_k(10, scaled=True, index_coding="seed", shared=False)
    assert jc.rand_k(np.int64(10)) == jc.rand_k(10)  # normalised arguments
    assert jc.cast("bfloat16") == jc.cast(jnp.bfloat16)
    assert jc.dither(2, p=2) == jc.dither(2, p=2.0) != jc.dither(2, p=1)
    assert jc.rand_k(3) != "rand_k(k=3)" and jc.rand_k(3) != None  # noqa: E711
    # same operator, different factory: compared by configuration, so not equal
    assert jc.scaled(jc.rand_k(3)) != jc.rand_k(3, scaled=False)
    assert jc.top_k_quantized(8, jc.natural()) != jc.compose(jc.scaled(jc.natural()), jc.top_k(8))
    assert len({jc.rand_k(10), jc.rand_k(10), jc.rand_k(11)}) == 2  # a dict/set key


# Each factory with its default arguments and one variation of every argument.
VARIATIONS = [
    (
        jc.rand_k,
        {"k": 3},
        [{"k": 4}, {"scaled": False}, {"index_coding": "list"}, {"shared": True}],
    ),
    (
        jc.perm_k,
        {"num_workers": 4},
        [{"num_workers": 5}, {"axis_name": "w"}, {"num_workers": None}],
    ),
    (jc.bernoulli, {"p": 0.5}, [{"p": 0.25}]),
    (jc.top_k, {"k": 3}, [{"k": 2}, {"index_coding": "mask"}]),
    (jc.ternary, {}, [{"coding": "base3"}]),
    (jc.qsgd, {"s": 2}, [{"s": 3}]),
    (jc.dither, {"s": 2}, [{"s": 3}, {"p": 1.0}]),
    (jc.natural_dither, {"s": 2}, [{"s": 3}, {"p": 1.0}]),
    (jc.stochastic_round, {"step": 0.1}, [{"step": 0.2}, {"num_bits": 8}]),
    (jc.cast, {"dtype": "bfloat16"}, [{"dtype": "float16"}]),
    (jc.power_sgd, {"rank": 1}, [{"rank": 2}, {"shape": (5, 10)}]),
    (
        jc.compose,
        {"c2": jc.natural(), "c1": jc.rand_k(3)},
        [{"c1": jc.rand_k(4)}, {"c2": jc.qsgd(2)}],
    ),
    (jc.scaled, {"c": jc.rand_k(3)}, [{"c": jc.rand_k(4)}]),
    (jc.induced, {"biased": jc.top_k(3), "unbiased": jc.rand_k(4)}, [{"unbiased": jc.rand_k(5)}]),
    (
        jc.top_k_quantized,
        {"k": 3, "quantizer": jc.natural()},
        [{"k": 4}, {"quantizer": jc.qsgd(2)}],
    ),
    (jc.per_leaf, {"c": jc.rand_k(3)}, [{"c": jc.rand_k(4)}]),
]


@pytest.mark.parametrize(
    "factory, base, changes", VARIATIONS, ids=lambda v: getattr(v, "__name__", "")
)
def test_every_argument_is_part_of_the_configuration(factory, base, changes):
    a, b = factory(**base), factory(**base)
    assert a == b and hash(a) == hash(b) and a is not b
    for change in changes:
        other = factory(**{**base, **change})
        assert other != a, (factory.__name__, change)


def test_registry_entries_are_equal_to_themselves_and_pairwise_distinct():
    built = [build(name) for name in NAMES]
    for name, c in zip(NAMES, built, strict=True):
        assert c == build(name) and hash(c) == hash(build(name)), name
    assert len(set(built)) == len(built)


def test_a_compressor_is_a_static_argument_of_jit():
    traces = []

    def f(c, key, x):
        traces.append(c.name)
        return c.compress(key, x)

    g = jax.jit(f, static_argnums=0)
    g(jc.rand_k(3), KEY, X)
    g(jc.rand_k(3), jax.random.key(1), X)  # a new but equal value: no retrace
    assert traces == ["rand_k(k=3)"]
    g(jc.rand_k(4), KEY, X)
    g(jc.compose(jc.natural(), jc.rand_k(3)), KEY, X)
    g(jc.compose(jc.natural(), jc.rand_k(3)), KEY, X)
    assert len(traces) == 3


def test_frozen():
    c = jc.rand_k(3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.name = "other"


# ---------------------------------------------------------------------------------------------
# One interface, three small types.


def test_types_and_fields():
    # combinator-only fields live only where they are used
    for c in (jc.natural(), jc.qsgd(2), jc.power_sgd(1), jc.compose(jc.natural(), jc.rand_k(3))):
        assert type(c) is VectorCompressor
        assert not hasattr(c, "kept_fn") and not hasattr(c, "projection")
        assert not hasattr(c, "base") and not hasattr(c, "per_leaf")
    for c in (
        jc.rand_k(3),
        jc.top_k(3),
        jc.bernoulli(0.5),
        jc.identity(),
        jc.perm_k(num_workers=2),
    ):
        assert isinstance(c, Sparsifier) and c.kept_fn(10) in (1, 3, 5, 10)
    assert type(jc.perm_k()) is VectorCompressor  # without M it does not know what it keeps
    assert isinstance(jc.scaled(jc.rand_k(3)), Sparsifier)  # a scaled sparsifier still is one
    pl = jc.per_leaf(jc.rand_k(3))
    assert isinstance(pl, PerLeaf) and isinstance(pl, jc.Compressor)
    assert not isinstance(pl, VectorCompressor) and pl.base == jc.rand_k(3)
    assert jc.per_leaf(pl) is pl
    for name in ("compress", "encode", "decode", "omega", "alpha", "bits"):
        assert "worker" in inspect.signature(getattr(pl, name)).parameters or name in (
            "omega",
            "alpha",
            "bits",
        )


def test_per_leaf_constants_flags_and_keys():
    c = jc.rand_k(3)
    pl = jc.per_leaf(c)
    tree = {"a": jnp.ones(6), "b": jnp.ones((3, 4))}
    assert pl.omega(tree) == max(c.omega(6), c.omega(12)) == 3.0
    assert pl.bits(tree) == 2 * 3 * 32 and pl.omega(12) == c.omega(12)
    assert pl.alpha(tree) is None
    assert jc.per_leaf(jc.top_k(2)).alpha(tree) == min(2 / 6, 2 / 12)
    pm = jc.per_leaf(jc.perm_k(num_workers=2))
    assert pm.needs_axis and pm.shared_key and pm.axis_name == "workers" and pm.unbiased
    out = pm.compress(KEY, tree, worker=1)
    for i, leaf in enumerate(("a", "b")):
        expected = jc.perm_k(num_workers=2).compress(
            jax.random.fold_in(KEY, i), tree[leaf], worker=1
        )
        np.testing.assert_array_equal(out[leaf], expected)


# ---------------------------------------------------------------------------------------------
# Checked arguments: keys, parts of combinators.


def test_keys():
    c = jc.rand_k(3)
    np.testing.assert_array_equal(c.compress(7, X), c.compress(jax.random.key(7), X))  # int seed
    raw = jax.random.PRNGKey(7)
    np.testing.assert_array_equal(c.compress(raw, X), c.compress(jax.random.wrap_key_data(raw), X))
    with pytest.raises(TypeError, match="needs a PRNG key, got key=None"):
        c.compress(None, X)
    with pytest.raises(TypeError, match="key must be"):
        c.compress("seed", X)
    np.testing.assert_array_equal(jc.top_k(3).compress(None, X), jc.top_k(3).compress(KEY, X))
    np.testing.assert_array_equal(
        jc.compose(jc.truncate(), jc.top_k(3)).compress(None, X),
        jc.compose(jc.truncate(), jc.top_k(3)).compress(KEY, X),
    )


def test_combinator_arguments():
    for bad in ("natural", 3, None, jc.natural):
        with pytest.raises(TypeError, match="must be a Compressor"):
            jc.compose(bad, jc.rand_k(3))
        with pytest.raises(TypeError, match="must be a Compressor"):
            jc.scaled(bad)
        with pytest.raises(TypeError, match="must be a Compressor"):
            jc.induced(jc.top_k(2), bad)
        with pytest.raises(TypeError, match="must be a Compressor"):
            jc.top_k_quantized(3, bad)
        with pytest.raises(TypeError, match="per_leaf expects a Compressor"):
            jc.per_leaf(bad)
    with pytest.raises(TypeError, match="^k must be a Python int"):
        jc.top_k_quantized("3", jc.natural())


# ---------------------------------------------------------------------------------------------
# Checked payloads.


def _first_array(payload):
    """Path and leaf of the first non-Packed array of a payload."""
    leaves = jax.tree_util.tree_flatten_with_path(
        payload, is_leaf=lambda x: isinstance(x, jc.Packed)
    )[0]
    for path, leaf in leaves:
        if not isinstance(leaf, jc.Packed):
            return path, leaf
    return leaves[0]


def _replace(payload, path, new):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(
        payload, is_leaf=lambda x: isinstance(x, jc.Packed)
    )
    return jax.tree_util.tree_unflatten(treedef, [new if p == path else leaf for p, leaf in leaves])


def _decode_abstract(c, payload):
    """decode, traced only: the payload is checked at trace time, nothing is compiled."""
    return jax.eval_shape(lambda p: c.decode(KEY, p, X, **kw(c)), payload)


@pytest.mark.parametrize("name", NAMES)
def test_decode_checks_the_payload(name):
    c = build(name)
    payload = jax.eval_shape(lambda k, v: c.encode(k, v, **kw(c)), KEY, X)
    _decode_abstract(c, payload)  # the right payload passes
    if isinstance(c, PerLeaf):
        with pytest.raises(ValueError, match="must be a tuple of 1 messages"):
            _decode_abstract(c, payload + payload)
        payload, c = payload[0], c.base
    path, leaf = _first_array(payload)
    field = jax.tree_util.keystr(path)
    if isinstance(leaf, jc.Packed):
        wrong_shape = jc.Packed(
            jax.ShapeDtypeStruct((leaf.data.shape[0] + 1,), jnp.uint8), leaf.nbits
        )
        wrong_bits = jc.Packed(leaf.data, leaf.nbits - 1)
        with pytest.raises(ValueError, match=r"Packed\(nbits="):
            _decode_abstract(c, _replace(payload, path, wrong_bits))
    else:
        wrong_shape = jax.ShapeDtypeStruct((*leaf.shape, 2), leaf.dtype)
        wrong_dtype = jax.ShapeDtypeStruct(leaf.shape, jnp.int32)
        with pytest.raises(ValueError, match=rf"field {re.escape(field)}.*dtype int32"):
            _decode_abstract(c, _replace(payload, path, wrong_dtype))
    with pytest.raises(ValueError, match=rf"payload field {re.escape(field)}: expected"):
        _decode_abstract(c, _replace(payload, path, wrong_shape))
    if isinstance(payload, dict):
        first = next(iter(payload))
        smaller = {k: v for k, v in payload.items() if k != first}
        with pytest.raises(ValueError, match="missing"):
            _decode_abstract(c, smaller)


def test_payload_error_message():
    c = jc.rand_k(7)
    payload = c.encode(KEY, X)
    with pytest.raises(
        ValueError,
        match=r"payload field \['values'\]: expected shape \(7,\) dtype "
        r"float32, got shape \(6,\) dtype float32",
    ):
        c.decode(KEY, {"values": payload["values"][:6]}, X)
    with pytest.raises(ValueError, match=r"missing \['values'\]"):
        c.decode(KEY, {}, X)
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        c.decode(KEY, {**payload, "extra": jnp.zeros(1)}, X)
    assert payload_bits(payload) == c.bits(X)


# ---------------------------------------------------------------------------------------------
# The list of factories.


def test_factories():
    names = jc.FACTORIES
    assert isinstance(names, tuple) and len(set(names)) == len(names)
    assert set(names) <= set(jc.__all__)
    assert "perm_k_compress" not in jc.__all__ and not hasattr(jc, "perm_k_compress")
    helpers = {"payload_bits"}
    public_functions = {
        n for n in jc.__all__ if inspect.isfunction(getattr(jc, n)) and n not in helpers
    }
    assert set(names) == public_functions
    for name in names:
        sig = inspect.signature(getattr(jc, name))
        assert sig.return_annotation != inspect.Signature.empty, name
