"""compressed_mean (jaxdist.comm._aggregate): gather mode decodes every sender's payload with the
sender's key and worker index passed as data, and equals the dense mode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdist.compressors as jc
from jaxdist.comm._aggregate import compressed_mean

M, D = 4, 10

CASES = [
    jc.rand_k(3),
    jc.rand_k(3, shared=True),
    jc.perm_k(num_workers=M),
    jc.perm_k(),
    jc.compose(jc.natural(), jc.perm_k(num_workers=M)),
    jc.scaled(jc.perm_k(num_workers=M)),
    jc.per_leaf(jc.perm_k(num_workers=M)),
    jc.induced(jc.top_k(2), jc.perm_k(num_workers=M)),
]


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_gather_equals_dense_and_the_senders_messages(c):
    key = jax.random.key(11)
    x = jax.random.normal(jax.random.key(5), (M, D))

    def run(mode):
        return jax.jit(
            jax.vmap(
                lambda v: compressed_mean(c, key, v, mode=mode, return_local=True),
                axis_name="workers",
            )
        )(x)

    dense, gather = run("dense"), run("gather")
    for a, b in zip(dense, gather, strict=True):
        np.testing.assert_array_equal(a, b)
    mean, local = gather

    # the local messages are C_m(x_m) with the documented keys and worker indices
    def expected(m, v):  # perm_k() takes M from the axis, so the axis is bound here
        k = key if c.shared_key else jax.random.fold_in(key, m)
        return c.compress(k, v, worker=m)

    want = jax.vmap(expected, axis_name="workers")(jnp.arange(M), x)
    np.testing.assert_array_equal(local, want)
    np.testing.assert_allclose(mean[0], np.mean(np.asarray(local), 0), rtol=1e-6, atol=1e-7)


def test_gather_needs_no_axis_inside_the_decoder():
    """The receiver's decode runs under a plain vmap over jnp.arange(M): the decoder of a
    Perm-K message reads the index passed as data, not the axis."""
    c = jc.perm_k(num_workers=M)
    key = jax.random.key(3)
    x = jax.random.normal(jax.random.key(4), (M, D))
    payloads = jax.vmap(lambda v: c.encode(key, v), axis_name="workers")(x)
    decoded = jax.vmap(lambda m, p: c.decode(key, p, x[0], worker=m))(jnp.arange(M), payloads)
    expected = jax.vmap(lambda v: c.compress(key, v), axis_name="workers")(x)
    np.testing.assert_array_equal(decoded, expected)


def test_axis_mismatch():
    c = jc.perm_k(num_workers=M, axis_name="w")
    with pytest.raises(ValueError, match="reads the worker axis 'w'"):
        jax.vmap(
            lambda v: compressed_mean(c, jax.random.key(0), v, mode="gather"), axis_name="workers"
        )(jnp.ones((M, D)))
