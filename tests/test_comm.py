"""Tests of jaxdist.comm: backends, worker keys, collectives, compressed aggregation, ledgers."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdist.compressors as jc
from jaxdist import comm, testing
from jaxdist.comm import Ledger

M = 4
D = 12


def _per_worker(x, y):
    """Exercises every collective; y is shared (in_axes None)."""
    m = comm.axis_index()
    s = comm.worker_sum(x)
    mean = comm.worker_mean({"a": x, "b": 2.0 * x})
    mx = comm.worker_max(x)
    gathered = comm.worker_gather(x)
    size = comm.axis_size()
    out = comm.uniform_cond(m >= 0, lambda v: comm.worker_mean(v) + y, lambda v: v, x)
    return {
        "m": m,
        "sum": s,
        "mean": mean,
        "max": mx,
        "gathered": gathered,
        "size": jnp.asarray(size),
        "cond": out,
    }


def _inputs():
    x = jax.random.normal(jax.random.key(3), (M, D))
    return x, jnp.float32(0.5)


# ---------------------------------------------------------------------------------------------
# Backends.


def test_collectives_values_vmap():
    x, y = _inputs()
    out = comm.simulate(_per_worker, M, in_axes=(0, None))(x, y)
    np.testing.assert_array_equal(out["m"], np.arange(M))
    np.testing.assert_array_equal(out["size"], np.full(M, M))
    np.testing.assert_allclose(out["sum"][0], np.sum(np.asarray(x), 0), rtol=1e-6)
    np.testing.assert_allclose(out["mean"]["b"][1], 2 * np.mean(np.asarray(x), 0), rtol=1e-6)
    np.testing.assert_array_equal(out["max"][2], np.max(np.asarray(x), 0))
    np.testing.assert_array_equal(out["gathered"][3], x)
    np.testing.assert_allclose(out["cond"][0], np.mean(np.asarray(x), 0) + 0.5, rtol=1e-6)


def test_backends_agree():
    """Index, size, max and gather agree bitwise. Sums and means may differ in the last bit
    between vmap and shard_map, because XLA's CPU all-reduce adds the workers in order while
    the vmapped reduce uses a tree order; both equal NumPy's sums to rounding."""
    backend = "shard_map"
    x, y = _inputs()
    res = testing.run_backends(
        _per_worker, M, (x, y), backends=("vmap", backend), in_axes=(0, None)
    )
    exact = ("m", "size", "max", "gathered")
    testing.assert_trees_equal(
        {k: res["vmap"][k] for k in exact}, {k: res[backend][k] for k in exact}, err_msg=backend
    )
    sums = ("sum", "mean", "cond")
    testing.assert_trees_close(
        {k: res["vmap"][k] for k in sums},
        {k: res[backend][k] for k in sums},
        bitwise=False,
        rtol=1e-6,
        atol=1e-6,
        err_msg=backend,
    )
    testing.assert_workers_agree(res[backend]["sum"])


def test_workers_switches_backend_and_uses_eight_devices():
    assert len(jax.devices()) >= 8
    x = jnp.arange(8.0 * 3).reshape(8, 3)
    f = lambda v: comm.worker_mean(v) * (comm.axis_index() + 1).astype(v.dtype)  # noqa: E731
    a = comm.workers(f, 8, backend="vmap")(x)
    b = comm.workers(f, 8, backend="shard_map")(x)
    np.testing.assert_allclose(a, b, rtol=1e-6)  # small integers: exact in any order
    np.testing.assert_array_equal(a, np.mean(np.asarray(x), 0) * np.arange(1, 9)[:, None])
    c = comm.workers(f, 8, backend="shard_map", mesh=comm.make_worker_mesh(8))(x)
    testing.assert_trees_equal(b, c)


def test_on_mesh_pytree_prefix_in_axes_and_out_axes_none():
    x = {"stacked": jnp.arange(12.0).reshape(4, 3), "shared": jnp.ones(3)}

    def f(d):
        return comm.worker_mean(d["stacked"]) + d["shared"]

    axes = ({"stacked": 0, "shared": None},)
    a = comm.simulate(f, 4, in_axes=axes, out_axes=None)(x)
    b = comm.on_mesh(f, in_axes=axes, out_axes=None)(x)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3,)


def test_unbound_axis_error():
    x = jnp.ones(3)
    for fn in (
        lambda: comm.axis_index(),
        lambda: comm.axis_size(),
        lambda: comm.worker_mean(x),
        lambda: comm.worker_sum(x),
        lambda: comm.worker_max(x),
        lambda: comm.worker_gather(x),
        lambda: comm.worker_key(jax.random.key(0)),
        lambda: jax.jit(lambda v: comm.worker_mean(v))(x),
        # Bound under a different name: still a clear error naming the missing axis.
        lambda: jax.vmap(lambda v: comm.worker_mean(v), axis_name="batch")(jnp.ones((2, 3))),
    ):
        with pytest.raises(ValueError, match="worker axis 'workers' is not bound.*simulate"):
            fn()
    # A shared key needs no axis.
    key = jax.random.key(0)
    assert comm.worker_key(key, shared=True) is key


def test_method_without_axis_raises_clear_error():
    from jaxdist.methods import dgd

    opt = dgd()
    state = opt.init(jnp.zeros(3))
    with pytest.raises(ValueError, match="not bound"):
        opt.update(jnp.ones(3), state)


def test_mesh_errors():
    f = lambda v: comm.worker_mean(v)  # noqa: E731
    with pytest.raises(ValueError, match="num_workers=9 but only 8"):
        comm.workers(f, 9, backend="shard_map")
    with pytest.raises(ValueError, match="size 4 but num_workers=2"):
        comm.workers(f, 2, backend="shard_map", mesh=comm.make_worker_mesh(4))
    with pytest.raises(ValueError, match="mesh has axes"):
        comm.on_mesh(f, comm.make_worker_mesh(4, axis_name="data"))
    with pytest.raises(ValueError, match="leading axis of size num_workers=4"):
        comm.on_mesh(f, comm.make_worker_mesh(4))(jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="backend must be one of"):
        comm.workers(f, 2, backend="pmap")
    with pytest.raises(ValueError, match="num_workers must be >= 1"):
        comm.simulate(f, 0)
    with pytest.raises(TypeError, match="num_workers must be a Python int"):
        comm.simulate(f, 2.0)


# ---------------------------------------------------------------------------------------------
# Keys.


@pytest.mark.parametrize("raw", [False, True])
def test_worker_keys(raw):
    key = jax.random.PRNGKey(7) if raw else jax.random.key(7)

    def f(_):
        return (
            jax.random.normal(comm.worker_key(key), (2,)),
            jax.random.normal(comm.worker_key(key, shared=True), (2,)),
        )

    ind, shared = comm.simulate(f, M)(jnp.zeros(M))
    for m in range(M):
        np.testing.assert_array_equal(ind[m], jax.random.normal(jax.random.fold_in(key, m), (2,)))
        np.testing.assert_array_equal(shared[m], jax.random.normal(key, (2,)))
    assert len({tuple(np.asarray(r)) for r in ind}) == M


def test_uniform_cond_runs_a_real_cond_under_vmap():
    def f(x, flag):
        return comm.uniform_cond(flag, lambda v: comm.worker_mean(v), lambda v: 2.0 * v, x)

    jaxpr = str(jax.make_jaxpr(comm.simulate(f, M, in_axes=(0, None)))(jnp.ones((M, 2)), True))
    assert "cond[" in jaxpr and "select_n" not in jaxpr
    x = jnp.arange(8.0).reshape(M, 2)
    out = comm.simulate(f, M, in_axes=(0, None))(x, False)
    np.testing.assert_array_equal(out, 2.0 * x)


@pytest.mark.parametrize("backend", ["vmap", "shard_map"])
def test_uniform_cond_makes_a_per_worker_predicate_uniform(backend):
    """A predicate true on worker 0 only: every worker must take the true branch (the pmax
    makes the decision uniform). Without it, worker 0 would double and the others not, and on
    a mesh the mean in the true branch would be entered by worker 0 alone."""

    def f(x):
        pred = comm.axis_index() == 0
        return comm.uniform_cond(pred, lambda v: 2.0 * comm.worker_mean(v), lambda v: v, x)

    x = jnp.arange(8.0).reshape(M, 2)
    out = jax.jit(comm.workers(f, M, backend=backend))(x)
    np.testing.assert_array_equal(out, np.broadcast_to(2.0 * np.mean(np.asarray(x), 0), (M, 2)))


def test_on_mesh_places_unplaced_inputs_on_an_explicit_mesh():
    """jax.make_mesh defaults to Explicit axes, which do not reshard unplaced arrays by
    themselves; on_mesh places the inputs as its specs say, eagerly and under jit."""
    mesh = jax.make_mesh((8,), ("workers",))
    assert mesh.axis_types[0] == jax.sharding.AxisType.Explicit
    x = jnp.arange(16.0).reshape(8, 2)
    f = comm.on_mesh(lambda v, s: comm.worker_sum(v) + s, mesh, in_axes=(0, None))
    expected = np.broadcast_to(np.sum(np.asarray(x), 0) + 1.0, (8, 2))
    np.testing.assert_array_equal(np.asarray(f(x, jnp.ones(2))), expected)
    np.testing.assert_array_equal(np.asarray(jax.jit(f)(x, jnp.ones(2))), expected)


def test_more_workers_than_devices_is_refused_clearly():
    f = lambda v: comm.worker_mean(v)  # noqa: E731
    with pytest.raises(ValueError, match="more workers than devices is not supported"):
        comm.on_mesh(f, comm.make_worker_mesh(8))(jnp.ones((16, 2)))
    with pytest.raises(ValueError, match="num_workers=16 but only 8"):
        comm.workers(f, 16, backend="shard_map")


def test_varying_marks_per_worker_state_under_shard_map():
    mesh = comm.make_worker_mesh(M)
    seen = {}

    def f(x):
        z = comm.varying(jnp.zeros(3))
        seen["zeros"] = jax.typeof(jnp.zeros(3)).manual_axis_type.varying
        seen["varying"] = jax.typeof(z).manual_axis_type.varying
        seen["already"] = jax.typeof(comm.varying(x)).manual_axis_type.varying
        return x

    jax.shard_map(f, mesh=mesh, in_specs=jax.P("workers"), out_specs=jax.P("workers"))(
        jnp.ones((M, 3))
    )
    assert seen == {
        "zeros": frozenset(),
        "varying": frozenset({"workers"}),
        "already": frozenset({"workers"}),
    }
    # No-op under vmap and without an axis.
    np.testing.assert_array_equal(comm.varying(jnp.ones(2)), np.ones(2))
    out = comm.simulate(lambda v: comm.varying(v), M)(jnp.ones((M, 2)))
    np.testing.assert_array_equal(out, np.ones((M, 2)))


def test_replicate_params_and_states():
    from jaxdist.methods import diana

    opt = optax.chain(diana(jc.rand_k(2)), optax.sgd(0.1))
    params = {"w": jnp.arange(3.0), "b": jnp.float32(1.0)}
    stacked = comm.replicate(params, M)
    np.testing.assert_array_equal(stacked["w"], np.broadcast_to(np.arange(3.0), (M, 3)))
    assert stacked["b"].shape == (M,)
    stacked2, state = comm.replicate(params, M, opt.init)
    testing.assert_trees_equal(stacked2, stacked)
    assert state[0].h_m["w"].shape == (M, 3)
    _, state_sm = comm.replicate(params, M, opt.init, backend="shard_map")
    testing.assert_trees_equal(jax.device_get(state_sm), jax.device_get(state))
    with pytest.raises(ValueError, match="no array leaves"):
        comm.replicate({}, M)


# ---------------------------------------------------------------------------------------------
# Compressed aggregation.


def _aggregation_compressors():
    """(compressor, bitwise): placement decoders agree bitwise across modes and backends."""
    return [
        (jc.identity(), True),
        (jc.rand_k(3), True),
        (jc.rand_k(3, shared=True), True),
        (jc.top_k(3), True),
        (jc.perm_k(num_workers=M), True),
        (jc.natural(), True),
        # QSGD decodes with arithmetic (norm * level / s); differently batched programs may
        # round it differently in the last bit.
        (jc.qsgd(4), False),
    ]


@functools.cache
def _agg_fn(c, mode, backend):
    def f(x):
        return comm.compressed_mean(c, jax.random.key(11), x, mode=mode, return_local=True)

    return jax.jit(comm.workers(f, M, backend=backend))


@pytest.mark.parametrize(
    "c,bitwise", _aggregation_compressors(), ids=lambda v: getattr(v, "name", str(v))
)
def test_compressed_mean_modes_and_backends_agree(c, bitwise):
    x = jax.random.normal(jax.random.key(5), (M, D))
    ref_mean, ref_local = _agg_fn(c, "dense", "vmap")(x)
    # The mean is (1/M) Σ C_m(x_m) with C_m's key fold_in(key, m) (or key itself if shared).
    key = jax.random.key(11)
    if not c.needs_axis:
        keys = [key if c.shared_key else jax.random.fold_in(key, m) for m in range(M)]
        single = jax.jit(c.compress)
        for m in range(M):
            # Unbatched vs vmapped programs: XLA may round a norm differently (1 ulp).
            np.testing.assert_allclose(ref_local[m], single(keys[m], x[m]), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ref_mean[0], np.mean(np.asarray(ref_local), 0), rtol=1e-6)
    testing.assert_workers_agree(ref_mean)
    # (dense mode under shard_map is covered by every method in tests/test_methods.py)
    for mode, backend in (("gather", "vmap"), ("gather", "shard_map")):
        out = _agg_fn(c, mode, backend)(x)
        if bitwise:
            testing.assert_trees_equal(out, (ref_mean, ref_local), err_msg=f"{mode}/{backend}")
        else:
            for a, b in zip(out, (ref_mean, ref_local), strict=True):
                np.testing.assert_allclose(a, b, rtol=3e-7, atol=1e-7, err_msg=f"{mode}/{backend}")
        testing.assert_workers_agree(out[0])


def test_compressed_mean_bad_mode():
    with pytest.raises(ValueError, match="mode must be one of"):
        comm.simulate(
            lambda x: comm.compressed_mean(jc.identity(), jax.random.key(0), x, mode="ring"), 2
        )(jnp.ones((2, 3)))


# ---------------------------------------------------------------------------------------------
# Ledger.


def test_ledger_is_a_pytree_of_int32_counts_with_static_sizes():
    led = Ledger.create(up={"compressed": 100, "full": 3200}, down={"full": 3200})
    leaves, treedef = jax.tree_util.tree_flatten(led)
    assert [leaf.dtype for leaf in leaves] == [jnp.int32] * 3
    assert [leaf.shape for leaf in leaves] == [(2,), (1,), ()]
    again = jax.tree_util.tree_unflatten(treedef, leaves)
    assert again.up_sizes == (100, 3200) and again.down_kinds == ("full",)
    # jittable record with traced counts
    rec = jax.jit(lambda led, c: led.record(up={"full": c, "compressed": 1 - c}, rounds=1))
    led = rec(led, jnp.int32(1))
    led = rec(led, jnp.int32(0))
    led = led.record(down=jnp.array([2]))
    assert led.bits_up() == 3300 and led.bits_down() == 6400 and led.num_rounds() == 2
    assert led.counts() == {"up": {"compressed": 1, "full": 1}, "down": {"full": 2}}
    assert isinstance(led.bits_up(), int)


def test_ledger_bits_are_exact_beyond_float_precision():
    size = 2**40 + 3  # not representable next to large counts in float32/float64 sums
    led = Ledger.create(up={"a": size, "b": 1}, down={})
    led = led.record(up=jnp.array([2**20 + 1, 7], jnp.int32))
    expected = (2**20 + 1) * size + 7
    assert led.bits_up() == expected
    assert float(np.float32(expected)) != expected
    assert led.bits_down() == 0


def test_ledger_batched_returns_int64_arrays():
    led = Ledger.create(up={"c": 10**9}, down={"full": 96})
    f = comm.simulate(lambda lg: lg.record(up={"c": comm.axis_index() + 3}, down={"full": 1}), 3)
    batched = f(jax.tree_util.tree_map(lambda a: jnp.stack([a] * 3), led))
    bits = batched.bits_up()
    assert bits.dtype == np.int64 and bits.tolist() == [3 * 10**9, 4 * 10**9, 5 * 10**9]
    assert batched.bits_down().tolist() == [96] * 3


def test_ledger_errors():
    with pytest.raises(TypeError, match="exact int"):
        Ledger.create(up={"a": 1.5})
    with pytest.raises(ValueError, match=">= 0 bits"):
        Ledger.create(up={"a": -1})
    led = Ledger.create(up={"a": 1})
    with pytest.raises(ValueError, match="unknown up message kind"):
        led.record(up={"b": 1})
    with pytest.raises(TypeError, match="on the host"):
        jax.jit(lambda lg: lg.bits_up())(led)


def test_find_ledgers_and_total_traffic_in_a_chain():
    from jaxdist.methods import dcgd, dgd

    c = jc.identity()
    opt = optax.chain(dgd(), optax.sgd(0.1), dcgd(c, salt=1))
    params = {"w": jnp.zeros((M, 5)), "b": jnp.zeros((M,))}
    state = comm.simulate(opt.init, M)(params)
    step = jax.jit(comm.simulate(opt.update, M))
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    for _ in range(3):
        _, state = step(grads, state, params)
    ledgers = comm.find_ledgers(state)
    assert len(ledgers) == 2
    traffic = comm.total_traffic(state)
    per_step = 2 * 6 * 32  # two transforms, 6 floats each
    assert traffic.bits_up.tolist() == [3 * per_step] * M
    assert traffic.bits_down.tolist() == [3 * per_step] * M
    assert traffic.rounds.tolist() == [3] * M
    assert comm.total_traffic(()) == (0, 0, 0)


def test_count_compilations():
    f = jax.jit(lambda x: x * 3)
    x = jnp.ones(3)
    x2 = jnp.zeros(3)
    y = jnp.ones(4)
    with testing.count_compilations() as logs:
        f(x)
    assert len(logs) == 1
    with testing.count_compilations() as logs:
        f(x)
        f(x2)
    assert logs == []
    with testing.count_compilations() as logs:
        f(y)
    assert len(logs) == 1
