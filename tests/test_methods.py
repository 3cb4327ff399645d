"""Common tests of every per-step method, driven by ``tests/methods_registry.py``.

Backends. A step of M workers runs under ``vmap`` (``jaxdist.comm.simulate``) and under
``shard_map`` (``jaxdist.comm.on_mesh``, and a user's own ``jax.shard_map`` + ``lax.scan``
loop with JAX's default checks) on 8 forced CPU devices. The float64 NumPy references of
``tests/reference.py`` (a real per-worker loop written from the papers' update rules) are
compared with the jaxdist trajectories to 1e-12.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from methods_registry import BY_NAME, NAMES, Replay

import jaxdist.compressors as jc
from jaxdist import comm, problems, testing
from jaxdist.methods import (
    accumulate,
    apply_if_finite,
    dcgd,
    dgd,
    diana,
    ef14,
    ef21_p,
    marina,
    reseed,
)

M = 8  # one worker per forced CPU device
D = 16
T = 3  # steps per compiled trajectory
LR = 0.05
NOISE = 0.01  # stochastic gradients: nothing assumes full local gradients


def build(name, **overrides):
    """The method, and the optimizer of the common tests: chain(method, sgd) (or the primal
    EF21-P alone, which includes its step size)."""
    case = BY_NAME[name]
    method = case.build(M, **overrides)
    if case.primal:
        return method, method
    return method, optax.chain(method, optax.sgd(LR))


class _Separable:
    """f_m(x) = ½ Σ_i a_mi x_i² − b_m·x: heterogeneous, strongly convex, and with an
    elementwise gradient, so the only reductions in a step are the methods' collectives (a
    batched matvec may sum in another order than an unbatched one, which would blur the
    bitwise backend comparison)."""

    def __init__(self):
        rng = np.random.default_rng(0)
        a = rng.uniform(0.2, 1.0, (M, D)).astype(np.float32)
        b = rng.standard_normal((M, D)).astype(np.float32)
        self.data = {"a": jnp.asarray(a), "b": jnp.asarray(b)}
        self.init_params = jnp.zeros(D, jnp.float32)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        self.x_star = b64.sum(0) / a64.sum(0)
        self.f_star = self.full_loss(self.x_star)

    def full_loss(self, x):
        a, b = (np.asarray(v, np.float64) for v in (self.data["a"], self.data["b"]))
        x = np.asarray(x, np.float64)
        return float(np.mean(0.5 * np.sum(a * x**2, axis=1) - b @ x))


@functools.cache
def _problem():
    return _Separable()


def _grad(x, data_m):
    return data_m["a"] * x - data_m["b"]


def _stack(x):
    return jnp.broadcast_to(x, (M, *jnp.shape(x)))


def _noisy_grad(x, data_m, key):
    # Uniform noise: bits to float, no transcendental function whose vectorised and scalar
    # implementations could round differently.
    noise = NOISE * (jax.random.uniform(comm.worker_key(key), x.shape) - 0.5)
    return _grad(x, data_m) + noise


def _step(tx):
    """Per-worker training step with a noisy (stochastic) gradient; key shared (in_axes None)."""

    def step(x, state, data_m, key):
        u, state = tx.update(_noisy_grad(x, data_m, key), state, x)
        return optax.apply_updates(x, u), state, u

    return step


_IN_AXES = (0, 0, 0, None)


@functools.cache
def _compiled(name, backend):
    _, tx = build(name)
    return jax.jit(comm.workers(_step(tx), M, backend=backend, in_axes=_IN_AXES))


def _initial(name, **overrides):
    _, tx = build(name, **overrides)
    return comm.replicate(_problem().init_params + 0.5, M, tx.init)


def _run(step, x, state, steps, first=0):
    """An ordinary Python training loop."""
    data = _problem().data
    for t in range(first, first + steps):
        x, state, u = step(x, state, data, jax.random.key(t))
    return x, state, u


def _close(bitwise):
    return functools.partial(testing.assert_trees_close, bitwise=bitwise, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Backends.


@pytest.mark.parametrize("name", NAMES)
def test_vmap_equals_shard_map(name):
    """vmap == shard_map on 8 CPU devices, one worker per device.

    The same up to the order of the sums over workers: under ``vmap`` a ``psum`` is a reduce
    over the stacked axis (XLA sums in a tree order); XLA's CPU all-reduce across devices adds
    the workers one after the other. So methods aggregating with ``pmean`` (mode="dense")
    agree to rounding (rtol 1e-5 after T = 3 steps), and methods with mode="gather" (each
    worker sums the gathered messages itself, in the same order on both backends) agree
    bitwise when XLA does not contract multiply-adds (``--xla_cpu_max_isa=AVX``).
    """
    kwargs = BY_NAME[name].kwargs(M)
    no_fma = not testing.xla_contracts_fma()
    x0, s0 = _initial(name)
    ref = _run(_compiled(name, "vmap"), x0, s0, T)
    sm = jax.device_get(_run(_compiled(name, "shard_map"), x0, s0, T))
    gather = kwargs.get("mode") == "gather" and BY_NAME[name].factory is not marina
    _close(no_fma and gather)(ref, sm, err_msg=f"{name}: vmap vs shard_map")
    testing.assert_workers_agree(sm[2], err_msg=f"{name}: shard_map workers")


def _user_loop(tx, steps):
    """What a user writes: a per-worker function with tx.init inside and lax.scan over
    tx.update, under a plain jax.shard_map or jax.vmap."""

    def per_worker(x, data_m, key):
        state = tx.init(x)

        def body(carry, t):
            x, state = carry
            g = _noisy_grad(x, data_m, jax.random.fold_in(key, t))
            u, state = tx.update(g, state, x)
            return (optax.apply_updates(x, u), state), u

        (x, state), us = jax.lax.scan(body, (x, state), jnp.arange(steps))
        return x, us

    return per_worker


@pytest.mark.parametrize("name", NAMES)
def test_user_written_shard_map_and_scan(name):
    """A user's own jax.shard_map (default check_vma) + lax.scan around tx.init/tx.update on
    jax.make_mesh's default (Explicit) mesh of 8 devices equals the same code under vmap:
    every method's state keeps its varying-axis types through a step."""
    _, tx = build(name)
    per_worker = _user_loop(tx, 4)
    mesh = jax.make_mesh((M,), ("workers",))
    x0 = _stack(_problem().init_params + 0.5)
    key = jax.random.key(3)

    def block_fn(xb, db, key):  # shard_map passes blocks of one worker: squeeze and restack
        x, us = per_worker(xb[0], jax.tree_util.tree_map(lambda a: a[0], db), key)
        return x[None], us[None]

    sm = jax.jit(
        jax.shard_map(
            block_fn,
            mesh=mesh,
            in_specs=(P("workers"), P("workers"), P()),
            out_specs=(P("workers"), P("workers")),
        )
    )
    place = lambda a: jax.device_put(a, NamedSharding(mesh, P("workers")))  # noqa: E731
    data = jax.tree_util.tree_map(place, _problem().data)
    out_sm = jax.device_get(sm(place(x0), data, key))
    out_vmap = jax.jit(jax.vmap(per_worker, in_axes=(0, 0, None), axis_name="workers"))(
        x0, _problem().data, key
    )
    _close(False)(out_vmap, out_sm, err_msg=name)
    testing.assert_workers_agree(out_sm[1], err_msg=name)


# ---------------------------------------------------------------------------------------------
# A Python training loop: compilation, stability, determinism, ledgers.


@pytest.mark.parametrize("name", NAMES)
def test_training_loop_compiles_once_stable_deterministic(name):
    case = BY_NAME[name]
    step = _compiled(name, "vmap")
    prob = _problem()
    x0, s0 = _initial(name)
    x1, s1, u1 = _run(step, x0, s0, 1)

    # The rest of the loop: no compilation, and the state keeps its structure, shapes and
    # dtypes (it is a valid lax.scan carry).
    x, s = x1, s1
    with testing.count_compilations() as logs:
        for t in range(1, 40):
            x, s, u = step(x, s, prob.data, jax.random.key(t))
            chex.assert_trees_all_equal_shapes_and_dtypes(s, s0)
        jax.block_until_ready(x)
    assert logs == [], f"{name} recompiled: {logs}"
    # Every worker receives bitwise identical updates and holds identical parameters.
    testing.assert_workers_agree(u1, err_msg=name)
    testing.assert_workers_agree(x, err_msg=name)
    # It trains: chain(method, sgd) with stochastic gradients in a Python loop.
    f0 = float(prob.full_loss(x0[0]))
    assert float(prob.full_loss(x[0])) < f0 - 0.5 * (f0 - prob.f_star), name
    # Determinism per key; another key changes the draws of randomised methods only.
    testing.assert_trees_equal(_run(step, x0, s0, 1), (x1, s1, u1), err_msg=name)
    # (3 steps: MARINA's first step is always a full synchronisation.)
    u3 = _run(step, x0, s0, 3)[2]
    if case.factory is dgd:  # DGD takes no key
        u_other = u3
    else:
        _, s0_other = _initial(name, key=jax.random.key(123))
        u_other = _run(step, x0, s0_other, 3)[2]
    assert (not np.array_equal(np.asarray(u_other), np.asarray(u3))) == case.randomised
    # Ledger: one round and one uplink message per step, with the compressors' exact sizes.
    led = comm.find_ledgers(s)[0]
    up, down = case.ledger_sizes(M, D)
    assert (led.up_sizes, led.down_sizes) == (up, down)
    assert led.num_rounds().tolist() == [40] * M
    assert np.asarray(led.up).sum(axis=-1).tolist() == [40] * M
    if len(up) == 1:
        assert led.bits_up().tolist() == [40 * up[0]] * M
    assert led.bits_down().tolist() == [40 * down[0]] * M
    method_state = s if hasattr(s, "_fields") else s[0]
    assert method_state.count.dtype == jnp.int32
    assert np.asarray(method_state.count).tolist() == [40] * M


@pytest.mark.parametrize("name", NAMES)
def test_chain_with_adam_python_loop(name):
    """Any optax optimizer after the method: chain(method, adam) with stochastic gradients.

    (optax's adam computes its bias correction from an int32 count with a float: not strict
    dtype promotion, so this test runs with JAX's standard promotion.)"""
    case = BY_NAME[name]
    overrides = {"learning_rate": None} if case.primal else {}
    tx = optax.chain(case.build(M, **overrides), optax.adam(0.1))
    prob = _problem()
    x, state = comm.replicate(prob.init_params + 0.5, M, tx.init)
    step = jax.jit(comm.workers(_step(tx), M, in_axes=_IN_AXES))
    f0 = prob.full_loss(x[0])
    with jax.numpy_dtype_promotion("standard"):
        for t in range(25):
            x, state, u = step(x, state, prob.data, jax.random.key(t))
    testing.assert_workers_agree(u, err_msg=name)
    assert prob.full_loss(x[0]) < f0 - 0.5 * (f0 - prob.f_star), name


def test_abstract_init():
    spec = {
        "w": jax.ShapeDtypeStruct((3, 4), jnp.float32),
        "b": jax.ShapeDtypeStruct((4,), jnp.float32),
    }
    for name in NAMES:
        method, _ = build(name)
        state = jax.eval_shape(method.init, spec)
        leaves = jax.tree_util.tree_leaves(state)
        assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)
        if not BY_NAME[name].primal:
            concrete = method.init(spec)  # directly on ShapeDtypeStructs, as optax allows
            assert jax.tree_util.tree_structure(concrete) == jax.tree_util.tree_structure(state)


def test_chain_with_sgd_python_loop_converges():
    """The README usage: optax.chain(diana(rand_k), sgd) in a Python loop, pytree params."""
    prob = _problem()
    tx = optax.chain(diana(jc.rand_k(4)), optax.sgd(0.5))
    params, state = comm.replicate({"x": prob.init_params}, M, tx.init)

    def step(params, state, data_m):
        grads = {"x": _grad(params["x"], data_m)}
        u, state = tx.update(grads, state, params)
        return optax.apply_updates(params, u), state

    step = jax.jit(comm.simulate(step, M))
    for _ in range(300):
        params, state = step(params, state, prob.data)
    err = np.linalg.norm(np.asarray(params["x"][0], np.float64) - prob.x_star)
    assert err < 1e-3 * np.linalg.norm(prob.x_star)
    # DIANA with Rand-K (seed-coded indices): exactly T·K·32 bits up per worker.
    assert state[0].ledger.bits_up().tolist() == [300 * 4 * 32] * M
    assert state[0].ledger.bits_down().tolist() == [300 * D * 32] * M


# ---------------------------------------------------------------------------------------------
# The key path.


def test_key_path_salt_seed_and_reseed():
    c = jc.rand_k(2)
    g = jax.random.normal(jax.random.key(0), (M, D))
    upd = jax.jit(
        comm.simulate(lambda g, s, m: m.update(g, s)[0], M, in_axes=(0, 0, None)), static_argnums=2
    )

    def out(**kw):
        method = dcgd(c, **kw)
        return upd(g, comm.simulate(method.init, M)(g), method)

    a = out(salt=0)
    assert not np.array_equal(a, out(salt=1))  # another salt, other draws
    assert not np.array_equal(a, out(key=1))
    testing.assert_trees_equal(out(key=jax.random.key(0)), a)  # int seed s = key(s)
    testing.assert_trees_equal(out(key=jax.random.PRNGKey(0)), a)  # raw key = the typed key
    # The step key is fold_in(fold_in(key, salt), count): replayed by hand.
    k = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 0), 0)
    expected = np.mean(
        [
            np.asarray(c.compress(jax.random.fold_in(jax.random.fold_in(k, 0), m), g[m]))
            for m in range(M)
        ],
        axis=0,
    )
    np.testing.assert_allclose(a[0], expected, rtol=1e-6)
    # Two methods chained with the same key but different salts hold different keys.
    chained = comm.simulate(optax.chain(dcgd(c, salt=0), dcgd(c, salt=1)).init, M)(g)
    assert not np.array_equal(
        jax.random.key_data(chained[0].key), jax.random.key_data(chained[1].key)
    )
    # update() takes no key: the old key= extra argument is refused, not silently ignored.
    method = dcgd(c)
    state = comm.simulate(method.init, M)(g)
    with pytest.raises(TypeError, match="update\\(\\) takes no key"):
        comm.simulate(lambda g, s: method.update(g, s, key=jax.random.key(1)), M)(g, state)
    # reseed folds one word of the key into every typed key of the state, nothing else.
    re1 = reseed(state, 1)
    assert not np.array_equal(jax.random.key_data(re1.key), jax.random.key_data(state.key))
    testing.assert_trees_equal(re1.ledger, state.ledger)
    testing.assert_trees_equal(reseed(state, jax.random.key(1)), re1)
    assert not np.array_equal(upd(g, re1, method), upd(g, state, method))
    # DGD draws nothing and stores no key.
    assert "key" not in dgd().init(jnp.zeros(3))._fields


def test_hyperparameter_sweep_is_a_vmap():
    """shift_step (DIANA) and p (MARINA) may be traced arrays: a sweep is a vmap over them."""
    prob = _problem()
    x0 = _stack(prob.init_params)
    c = jc.top_k(4)

    def run(shift, p):
        out = []
        for method in (diana(c, shift), marina(c, p)):
            tx = optax.chain(method, optax.sgd(LR))

            def per_worker(x, data_m, tx=tx):
                state = tx.init(x)
                for _ in range(3):
                    u, state = tx.update(_grad(x, data_m), state, x)
                    x = optax.apply_updates(x, u)
                return x, state[0].ledger.up

            out.append(comm.simulate(per_worker, M)(x0, prob.data))
        return out

    shifts = jnp.array([0.1, 0.9])
    ps = jnp.array([0.05, 1.0])
    swept = jax.jit(jax.vmap(run))(shifts, ps)
    single = jax.jit(run)
    for i in range(2):
        testing.assert_trees_close(
            jax.tree_util.tree_map(lambda a, i=i: a[i], swept),
            single(shifts[i], ps[i]),
            bitwise=False,
            rtol=1e-6,
            atol=1e-7,
        )
    # shift_step matters for DIANA; p = 1 synchronises every step, p = 0.05 rarely.
    assert not np.allclose(swept[0][0][0], swept[0][0][1])
    marina_up = np.asarray(swept[1][1])  # (sweep, workers, kinds = (compressed, full))
    assert marina_up[1, 0].tolist() == [0, 3]
    assert marina_up[0, 0, 1] < 3


def test_inject_hyperparams_changes_a_hyperparameter_mid_run():
    """optax.inject_hyperparams traces every numeric argument (key, salt, shift_step): the
    recipe of the docs works and a changed shift_step takes effect."""
    prob = _problem()
    opt = optax.inject_hyperparams(diana)(jc.rand_k(4), shift_step=0.5)
    x, state = comm.replicate(prob.init_params, M, opt.init)
    step = jax.jit(comm.simulate(lambda x, s, d: opt.update(_grad(x, d), s, x), M))
    u_a, s_a = step(x, state, prob.data)
    state.hyperparams["shift_step"] = jnp.full((M,), 0.25)
    u_b, s_b = step(x, state, prob.data)
    testing.assert_trees_equal(u_a, u_b)  # same draws, same estimate at the first step...
    np.testing.assert_allclose(s_b.inner_state.h_m, 0.5 * s_a.inner_state.h_m, rtol=1e-6)
    plain = diana(jc.rand_k(4), 0.5)
    ps = comm.simulate(plain.init, M)(x)
    u_p, _ = jax.jit(comm.simulate(lambda x, s, d: plain.update(_grad(x, d), s, x), M))(
        x, ps, prob.data
    )
    testing.assert_trees_equal(u_p, u_a)  # ... and the injected method is the plain one


def test_marina_cond_is_real_under_vmap():
    method = marina(jc.rand_k(3), 0.5)
    g = jnp.ones((M, D))
    state = comm.simulate(method.init, M)(g)
    jaxpr = str(jax.make_jaxpr(comm.simulate(method.update, M))(g, state))
    assert "cond[" in jaxpr


# ---------------------------------------------------------------------------------------------
# Wrappers whose decision is uniform over the worker axis.


@pytest.mark.parametrize("backend", ["vmap", "shard_map"])
def test_apply_if_finite_skips_on_every_worker(backend):
    """A NaN gradient on one worker of 8: every worker skips (no collective is entered by
    some workers only, which would abort a mesh), and the next finite step applies."""
    opt = apply_if_finite(optax.chain(diana(jc.rand_k(4)), optax.sgd(0.1)), 2)
    x, state = comm.replicate(jnp.zeros(D), M, opt.init)
    step = jax.jit(comm.workers(lambda g, s, x: opt.update(g, s, x), M, backend=backend))
    g = jnp.ones((M, D)).at[5, 3].set(jnp.nan)
    u, s1 = jax.device_get(step(g, state, x))
    np.testing.assert_array_equal(u, np.zeros((M, D)))
    assert s1.total_notfinite.tolist() == [1] * M
    assert s1.inner_state[0].ledger.num_rounds().tolist() == [0] * M  # nothing was sent
    u2, s2 = jax.device_get(step(jnp.ones((M, D)), s1, x))
    testing.assert_workers_agree(u2)
    assert np.all(u2 != 0) or np.any(u2 != 0)
    assert s2.inner_state[0].ledger.num_rounds().tolist() == [1] * M
    assert s2.notfinite_count.tolist() == [0] * M
    # After max_consecutive_errors skips in a row the update is applied anyway.
    s = s1
    for _ in range(2):
        _, s = step(g, s, x)
    assert np.asarray(s.inner_state[0].ledger.num_rounds()).tolist() == [1] * M


def test_accumulate_communicates_once_per_k_micro_steps():
    """accumulate(inner, 4): the compressor and the all-reduce run once per 4 micro-steps and
    the ledger counts exactly that; the emitted update is inner's on the mean gradient."""
    k = 4
    inner = optax.chain(dcgd(jc.rand_k(3)), optax.sgd(0.1))
    opt = accumulate(inner, k)
    x, state = comm.replicate(jnp.zeros(D), M, opt.init)
    step = jax.jit(comm.simulate(lambda g, s, x: opt.update(g, s, x), M))
    grads = [jax.random.normal(jax.random.key(i), (M, D)) for i in range(2 * k)]
    outs = []
    for g in grads:
        u, state = step(g, state, x)
        outs.append(u)
    led = state.inner_state[0].ledger
    assert led.num_rounds().tolist() == [2] * M
    assert led.bits_up().tolist() == [2 * jc.rand_k(3).bits(D)] * M
    for i, u in enumerate(outs):
        if i % k != k - 1:
            np.testing.assert_array_equal(u, np.zeros((M, D)))
    # The first emitted update equals inner's update on the mean of the first k gradients.
    _, ref_state = comm.replicate(jnp.zeros(D), M, inner.init)
    mean = sum(grads[:k]) / k
    ref_u, _ = jax.jit(comm.simulate(lambda g, s, x: inner.update(g, s, x), M))(mean, ref_state, x)
    np.testing.assert_allclose(outs[k - 1], ref_u, rtol=1e-6, atol=1e-7)
    jaxpr = str(
        jax.make_jaxpr(comm.simulate(lambda g, s, x: opt.update(g, s, x), M))(grads[0], state, x)
    )
    assert "cond[" in jaxpr  # a real branch: the compressor runs only when emitting


# ---------------------------------------------------------------------------------------------
# Errors.


def test_errors():
    top = jc.top_k(2)
    with pytest.raises(ValueError, match="not unbiased.*shift_step"):
        diana(top)
    with pytest.raises(ValueError, match="not unbiased.*shift_step"):
        ef21_p(top, top)
    diana(top, shift_step=0.5)  # explicit shift_step is fine
    with pytest.raises(ValueError, match=r"shift_step must be in \(0, 1\]"):
        diana(jc.rand_k(2), shift_step=1.5)
    for p in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError, match=r"p must be in \(0, 1\]"):
            marina(jc.rand_k(2), p)
    with pytest.raises(TypeError, match="p must be a number"):
        marina(jc.rand_k(2), "0.5")
    with pytest.raises(TypeError, match="Compressor"):
        dcgd("top_k")
    with pytest.raises(ValueError, match="mode must be one of"):
        ef14(top, mode="allreduce")
    with pytest.raises(ValueError, match="reads the worker axis"):
        dcgd(jc.rand_k(2), down=jc.perm_k())
    with pytest.raises(TypeError, match="salt must be a Python int"):
        diana(jc.rand_k(2), salt=0.5)
    with pytest.raises(TypeError, match="key must be an int seed, a typed key"):
        dcgd(top, key="seed").init(jnp.zeros(3))
    with pytest.raises(TypeError, match="dtype float32"):
        dcgd(top, key=jnp.zeros(2)).init(jnp.zeros(3))
    primal = ef21_p(jc.rand_k(2), top, learning_rate=0.1)
    g = jnp.ones((M, D))
    state = comm.simulate(primal.init, M)(g)
    with pytest.raises(ValueError, match="needs params"):
        comm.simulate(lambda g, s: primal.update(g, s), M)(g, state)


@pytest.mark.parametrize("name", NAMES)
def test_mismatched_gradients_are_refused(name):
    """Gradients with another pytree structure, another shape, or an integer dtype than the
    parameters the state was built for: a clear error at trace time, never a silent result."""
    method, _ = build(name)
    params = {"w": jnp.zeros((M, 4)), "b": jnp.zeros((M, 3))}
    state = comm.simulate(method.init, M)(params)
    update = comm.simulate(lambda g, s, p: method.update(g, s, p), M)
    with pytest.raises(ValueError, match="do not match"):
        update({"w": jnp.zeros((M, 4))}, state, params)
    with pytest.raises(ValueError, match="shape"):
        update({"w": jnp.zeros((M, 5)), "b": jnp.zeros((M, 3))}, state, params)
    ints = {"w": jnp.zeros((M, 4), jnp.int32), "b": jnp.zeros((M, 3), jnp.int32)}
    with pytest.raises(TypeError, match="floating-point"):
        update(ints, state, params)


# ---------------------------------------------------------------------------------------------
# NumPy references (float64): a real per-worker loop written from the papers' updates.

REF_T = 20
REF_M = 4
REF_D = 10


@pytest.mark.parametrize("name", NAMES)
def test_matches_numpy_reference(name, x64):
    """chain(method, sgd(γ)) in float64 equals the papers' update rules to 1e-12 relative,
    with random draws replayed from jaxdist's key path (methods_registry.Replay)."""
    case = BY_NAME[name]
    kw = case.kwargs(REF_M)
    gamma = kw.get("learning_rate") or (0.1 if case.randomised else 0.3)
    method = case.build(REF_M)
    prob = problems.quadratic(
        REF_M, REF_D, L=1.0, mu=0.2, heterogeneity=1.0, key=3, dtype=jnp.float64
    )
    A = np.asarray(prob.data["A"])
    b = np.asarray(prob.data["b"])
    x0 = np.asarray(prob.x_star) + np.linspace(-1.0, 1.0, REF_D)
    tx = method if case.primal else optax.chain(method, optax.sgd(gamma))

    def per_worker(x, data_m):
        def step(carry, _):
            x, state = carry
            u, state = tx.update(data_m["A"] @ x - data_m["b"], state, x)
            x = optax.apply_updates(x, u)
            return (x, state), x

        _, xs = jax.lax.scan(step, (x, tx.init(x)), length=REF_T)
        return jnp.concatenate([x[None], xs])

    xs = jax.jit(comm.simulate(per_worker, REF_M, in_axes=(None, 0)))(jnp.asarray(x0), prob.data)
    assert xs.dtype == jnp.float64
    testing.assert_workers_agree(xs)
    replay = Replay(salt=kw.get("salt", 0))
    G = reference.quadratic_grads(A, b)
    expected = case.reference(kw, G, x0, gamma, REF_T, replay, REF_M)
    scale = np.max(np.abs(expected))
    np.testing.assert_allclose(np.asarray(xs[0]), expected, rtol=0, atol=1e-12 * scale)
    # Not a trivial trajectory: it moved.
    assert np.linalg.norm(expected[-1] - expected[0]) > 1e-2
