"""Common tests of every per-step method, driven by the registry ``METHODS_UNDER_TEST``.

Backends. A step of M workers is run three ways and compared bitwise:

* ``vmap``: ``jaxdist.comm.simulate`` (jitted);
* ``shard_map``: ``jaxdist.comm.on_mesh`` on 8 forced CPU devices, one worker per device;
* ``loop``: ``jaxdist.testing.loop``, a Python loop over workers (one thread per worker,
  eager, collectives emulated by message passing; see its docstring). Operators that call
  ``jax.lax`` collectives themselves (Perm-K) are not emulated there.

The float64 NumPy references of ``tests/reference.py`` (a real per-worker loop written from
the papers' update rules) are compared with the jaxdist trajectories at the end of the file.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference

import jaxdist.compressors as jc
from jaxdist import comm, problems, testing
from jaxdist.methods import (
    bidirectional,
    dcgd,
    dgd,
    diana,
    ef14,
    ef21,
    ef21_p,
    marina,
)
from jaxdist.methods._base import COIN, DOWNLINK, UPLINK

M = 8  # one worker per forced CPU device
D = 16
T = 3  # steps per compiled trajectory
LR = 0.05

METHODS_UNDER_TEST = (
    ("dgd", dgd, {}),
    ("dcgd_rand_k", dcgd, {"compressor": jc.rand_k(3)}),
    ("bidirectional", bidirectional, {"up": jc.rand_k(4, shared=True), "down": jc.top_k(6)}),
    ("diana_rand_k", diana, {"compressor": jc.rand_k(3)}),
    ("diana_natural_gather", diana, {"compressor": jc.natural(), "mode": "gather"}),
    ("diana_perm_k", diana, {"compressor": jc.perm_k(num_workers=M)}),
    ("ef14_top_k", ef14, {"compressor": jc.top_k(3)}),
    ("ef21_top_k", ef21, {"compressor": jc.top_k(3), "mode": "gather"}),
    ("marina_rand_k", marina, {"compressor": jc.rand_k(3), "p": 0.5}),
    ("ef21_p", ef21_p, {"up": jc.natural(), "down": jc.top_k(4)}),
    ("ef21_p_primal", ef21_p, {"up": jc.natural(), "down": jc.top_k(4), "learning_rate": LR}),
)
NAMES = tuple(entry[0] for entry in METHODS_UNDER_TEST)
_ENTRIES = {name: (factory, kwargs) for name, factory, kwargs in METHODS_UNDER_TEST}
NOISE = 0.01  # stochastic gradients: nothing assumes full local gradients


def _compressors(kwargs):
    return [v for v in kwargs.values() if isinstance(v, jc.Compressor)]


def _is_random(kwargs):
    return any(not c.deterministic for c in _compressors(kwargs)) or "p" in kwargs


def _needs_axis(kwargs):
    return any(c.needs_axis for c in _compressors(kwargs))


def _expected_sizes(name):
    """(uplink sizes, downlink sizes) in bits, from the compressors' own bit counts."""
    factory, kwargs = _ENTRIES[name]
    full = D * 32
    if factory is dgd:
        return (full,), (full,)
    if factory in (bidirectional, ef21_p):
        return (kwargs["up"].bits(D),), (kwargs["down"].bits(D),)
    up = (kwargs["compressor"].bits(D),) + ((full,) if factory is marina else ())
    return up, (full,)


def build(name, **overrides):
    """The method, and the optimizer of the common tests: chain(method, sgd) (or the primal
    EF21-P alone, which includes its step size)."""
    factory, kwargs = _ENTRIES[name]
    method = factory(**{**kwargs, **overrides})
    if "learning_rate" in kwargs:
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
        self._a, self._b = a64, b64

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


def _step(tx):
    """Per-worker training step with a noisy (stochastic) gradient; key shared (in_axes None)."""

    def step(x, state, data_m, key):
        # Uniform noise: bits to float, no transcendental function whose vectorised and
        # scalar implementations could round differently.
        noise = NOISE * (jax.random.uniform(comm.worker_key(key), x.shape) - 0.5)
        u, state = tx.update(_grad(x, data_m) + noise, state, x)
        return optax.apply_updates(x, u), state, u

    return step


_IN_AXES = (0, 0, 0, None)


@functools.cache
def _compiled(name, backend):
    _, tx = build(name)
    return jax.jit(comm.workers(_step(tx), M, backend=backend, in_axes=_IN_AXES))


def _initial(name, **overrides):
    _, tx = build(name, **overrides)
    x0 = _stack(_problem().init_params + 0.5)
    return x0, comm.simulate(tx.init, M)(x0)


def _run(step, x, state, steps, first=0):
    """An ordinary Python training loop."""
    data = _problem().data
    for t in range(first, first + steps):
        x, state, u = step(x, state, data, jax.random.key(t))
    return x, state, u


# ---------------------------------------------------------------------------------------------
# Common tests.


@pytest.mark.parametrize("name", NAMES)
def test_vmap_equals_loop_and_shard_map(name):
    """vmap == Python loop over workers == shard_map on 8 CPU devices.

    * vmap vs loop: bitwise, when XLA does not contract ``a*b + c`` into fused multiply-adds
      (``--xla_cpu_max_isa=AVX``). With contraction the jitted program rounds some
      multiply-adds once where the eager loop rounds twice: rtol 1e-5 after T = 3 steps.
    * vmap vs shard_map: the same, except for the order of the sums over workers. Under
      ``vmap`` a ``psum`` is a reduce over the stacked axis (XLA sums in a tree order);
      XLA's CPU all-reduce across devices adds the workers one after the other. So methods
      aggregating with ``pmean`` (mode="dense") agree to rounding (rtol 1e-5), and methods
      with mode="gather" (each worker sums the gathered messages itself, in the same order
      on both backends) agree bitwise.
    """
    factory, kwargs = _ENTRIES[name]
    no_fma = not testing.xla_contracts_fma()
    x0, s0 = _initial(name)
    ref = _run(_compiled(name, "vmap"), x0, s0, T)
    sm = _run(_compiled(name, "shard_map"), x0, s0, T)
    close = functools.partial(testing.assert_trees_close, rtol=1e-5, atol=1e-6)
    gather = kwargs.get("mode") == "gather" and factory is not marina
    close(ref, sm, bitwise=no_fma and gather, err_msg=f"{name}: vmap vs shard_map")
    testing.assert_workers_agree(sm[2], err_msg=f"{name}: shard_map workers")
    if not _needs_axis(kwargs):
        _, tx = build(name)
        lp = _run(testing.loop(_step(tx), M, in_axes=_IN_AXES), x0, s0, T)
        close(ref, lp, bitwise=no_fma, err_msg=f"{name}: vmap vs loop")


@pytest.mark.parametrize("name", NAMES)
def test_training_loop_compiles_once_stable_deterministic(name):
    _, kwargs = _ENTRIES[name]
    step = _compiled(name, "vmap")
    prob = _problem()
    x0, s0 = _initial(name)
    x1, s1, u1 = _run(step, x0, s0, 1)

    # The rest of the loop: no compilation, and the state keeps its structure, shapes and
    # dtypes (it is a valid lax.scan carry).
    def spec(state):
        leaves, treedef = jax.tree_util.tree_flatten(state)
        return treedef, [(leaf.shape, leaf.dtype) for leaf in leaves]

    x, s = x1, s1
    with testing.count_compilations() as logs:
        for t in range(1, 40):
            x, s, u = step(x, s, prob.data, jax.random.key(t))
            assert spec(s) == spec(s0)
        jax.block_until_ready(x)
    assert logs == [], f"{name} recompiled: {logs}"
    # Every worker receives bitwise identical updates and holds identical parameters.
    testing.assert_workers_agree(u1, err_msg=name)
    testing.assert_workers_agree(x, err_msg=name)
    # It trains: chain(method, sgd) with stochastic gradients in a Python loop.
    f0 = float(prob.full_loss(x0[0]))
    assert float(prob.full_loss(x[0])) < f0 - 0.5 * (f0 - prob.f_star), name
    # Determinism per key; another key changes the draws of randomised methods.
    testing.assert_trees_equal(_run(step, x0, s0, 1), (x1, s1, u1), err_msg=name)
    # (3 steps: MARINA's first step is always a full synchronisation.)
    _, s0_other = _initial(name, key=jax.random.key(123))
    u3 = _run(step, x0, s0, 3)[2]
    u_other = _run(step, x0, s0_other, 3)[2]
    assert (not np.array_equal(np.asarray(u_other), np.asarray(u3))) == _is_random(kwargs)
    # Ledger: one round and one uplink message per step, with the compressors' exact sizes.
    led = comm.find_ledgers(s)[0]
    up, down = _expected_sizes(name)
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
    """Any optax optimizer after the method: chain(method, adam) with stochastic gradients."""
    factory, kwargs = _ENTRIES[name]
    if "learning_rate" in kwargs:  # the primal EF21-P is a complete optimizer: use its
        kwargs = {**kwargs, "learning_rate": None}  # gradient-units form before adam
    tx = optax.chain(factory(**kwargs), optax.adam(0.1))
    prob = _problem()
    x = _stack(prob.init_params + 0.5)
    state = comm.simulate(tx.init, M)(x)
    step = jax.jit(comm.workers(_step(tx), M, in_axes=_IN_AXES))
    f0 = prob.full_loss(x[0])
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
        if name != "ef21_p_primal":
            concrete = method.init(spec)  # directly on ShapeDtypeStructs, as optax allows
            assert jax.tree_util.tree_structure(concrete) == jax.tree_util.tree_structure(state)


def test_chain_with_sgd_python_loop_converges():
    """The README usage: optax.chain(diana(rand_k), sgd) in a Python loop, pytree params."""
    prob = _problem()
    tx = optax.chain(diana(jc.rand_k(4)), optax.sgd(0.5))
    params = {"x": _stack(prob.init_params)}
    state = comm.simulate(tx.init, M)(params)

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
# Keys, salts, hyperparameters, ledgers, errors.


def test_salt_and_extra_key():
    c = jc.rand_k(2)
    g = jax.random.normal(jax.random.key(0), (M, D))
    method = dcgd(c)
    update = jax.jit(
        comm.simulate(
            lambda g, s, k: method.update(g, s, key=k)[0],
            M,
            in_axes=(0, 0, None),
        )
    )
    plain = jax.jit(comm.simulate(lambda g, s: method.update(g, s)[0], M))

    def init(**kw):
        return comm.simulate(dcgd(c, **kw).init, M)(g)

    a = plain(g, init(salt=0))
    # The salt is folded into the stored key: another salt, other draws.
    assert not np.array_equal(a, plain(g, init(salt=1)))
    assert not np.array_equal(a, plain(g, init(key=1)))
    testing.assert_trees_equal(plain(g, init(key=jax.random.key(0))), a)  # int seed s = key(s)
    plain(g, init(key=jax.random.PRNGKey(0)))  # raw uint32 keys work
    # Two methods chained with the same key but different salts hold different keys.
    chained = comm.simulate(optax.chain(dcgd(c, salt=0), dcgd(c, salt=1)).init, M)(g)
    assert not np.array_equal(
        jax.random.key_data(chained[0].key), jax.random.key_data(chained[1].key)
    )
    # A key= extra argument replaces the stored key (folded with the salt).
    k = jax.random.key(9)
    e1 = update(g, init(key=0), k)
    testing.assert_trees_equal(update(g, init(key=5), k), e1)
    assert not np.array_equal(e1, a)


def test_hyperparameter_sweep_is_a_vmap():
    """alpha (DIANA) and p (MARINA) may be traced arrays: a sweep is a vmap over them."""
    prob = _problem()
    x0 = _stack(prob.init_params)
    c = jc.top_k(4)

    def run(alpha, p):
        out = []
        for method in (diana(c, alpha), marina(c, p)):
            tx = optax.chain(method, optax.sgd(LR))

            def per_worker(x, data_m, tx=tx):
                state = tx.init(x)
                for _ in range(3):
                    u, state = tx.update(_grad(x, data_m), state, x)
                    x = optax.apply_updates(x, u)
                return x, state[0].ledger.up

            out.append(comm.simulate(per_worker, M)(x0, prob.data))
        return out

    alphas = jnp.array([0.1, 0.9])
    ps = jnp.array([0.05, 1.0])
    swept = jax.jit(jax.vmap(run))(alphas, ps)
    single = jax.jit(run)
    for i in range(2):
        testing.assert_trees_close(
            jax.tree_util.tree_map(lambda a, i=i: a[i], swept),
            single(alphas[i], ps[i]),
            bitwise=False,
            rtol=1e-6,
            atol=1e-7,
        )
    # alpha matters for DIANA; p = 1 synchronises every step, p = 0.05 rarely.
    assert not np.allclose(swept[0][0][0], swept[0][0][1])
    marina_up = np.asarray(swept[1][1])  # (sweep, workers, kinds = (compressed, full))
    assert marina_up[1, 0].tolist() == [0, 3]
    assert marina_up[0, 0, 1] < 3


def test_marina_cond_is_real_under_vmap():
    method = marina(jc.rand_k(3), 0.5)
    g = jnp.ones((M, D))
    state = comm.simulate(method.init, M)(g)
    jaxpr = str(jax.make_jaxpr(comm.simulate(method.update, M))(g, state))
    assert "cond[" in jaxpr


def test_errors():
    top = jc.top_k(2)
    with pytest.raises(ValueError, match="not unbiased.*alpha"):
        diana(top)
    with pytest.raises(ValueError, match="not unbiased.*alpha"):
        ef21_p(top, top)
    diana(top, alpha=0.5)  # explicit alpha is fine
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\]"):
        diana(jc.rand_k(2), alpha=1.5)
    for p in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError, match=r"p must be in \(0, 1\]"):
            marina(jc.rand_k(2), p)
    with pytest.raises(TypeError, match="Compressor"):
        dcgd("top_k")
    with pytest.raises(ValueError, match="mode must be"):
        ef14(top, mode="allreduce")
    with pytest.raises(ValueError, match="reads the worker axis"):
        bidirectional(jc.rand_k(2), jc.perm_k())
    with pytest.raises(TypeError, match="salt must be a Python int"):
        dgd(salt=0.5)
    with pytest.raises(TypeError, match="an int seed, a typed key"):
        dcgd(top, key="seed").init(jnp.zeros(3))
    primal = ef21_p(jc.rand_k(2), top, learning_rate=0.1)
    g = jnp.ones((M, D))
    state = comm.simulate(primal.init, M)(g)
    with pytest.raises(ValueError, match="needs params"):
        comm.simulate(lambda g, s: primal.update(g, s), M)(g, state)


# ---------------------------------------------------------------------------------------------
# NumPy references (float64): a real per-worker loop written from the papers' updates.

REF_T = 20
REF_GAMMA = 0.3
REF_M = 4
REF_D = 10


def _replay(c, seed=0, salt=0):
    """Reproduces jaxdist's key schedule for the reference (see jaxdist.methods._base)."""
    stored = jax.random.fold_in(jax.random.key(seed), salt)
    compress = jax.jit(c.compress)

    def f(v, m, t, link):
        k = jax.random.fold_in(jax.random.fold_in(stored, t), UPLINK if link == "up" else DOWNLINK)
        if link == "up" and not c.shared_key:
            k = jax.random.fold_in(k, m)
        return np.asarray(compress(k, jnp.asarray(v, jnp.float64)), dtype=np.float64)

    return f


def _coins(p, seed=0, salt=0):
    stored = jax.random.fold_in(jax.random.key(seed), salt)
    return lambda t: bool(
        jax.random.bernoulli(
            jax.random.fold_in(jax.random.fold_in(stored, t), COIN), jnp.float32(p)
        )
    )


def _np_top(k):
    return lambda v, m, t, link: reference.top_k(v, k)


def _ref_cases():
    top, rk = jc.top_k(3), jc.rand_k(3)
    g = REF_GAMMA
    return {
        "gd": (dgd(), g, lambda G, x0: reference.gd(G, x0, g, REF_T)),
        "dcgd_top_k": (dcgd(top), g, lambda G, x0: reference.dcgd(G, x0, g, REF_T, _np_top(3))),
        "bidirectional_top_k": (
            bidirectional(top, jc.top_k(5)),
            g,
            lambda G, x0: reference.dcgd(G, x0, g, REF_T, _np_top(3), down=_np_top(5)),
        ),
        "diana_top_k": (
            diana(top, 0.5),
            g,
            lambda G, x0: reference.diana(G, x0, g, REF_T, _np_top(3), 0.5),
        ),
        "diana_down_top_k": (
            diana(top, 0.5, down=jc.top_k(6)),
            g,
            lambda G, x0: reference.diana(G, x0, g, REF_T, _np_top(3), 0.5, down=_np_top(6)),
        ),
        "diana_rand_k": (  # default alpha = 1/(omega + 1) = K/d; keys replayed
            diana(rk),
            0.1,
            lambda G, x0: reference.diana(G, x0, 0.1, REF_T, _replay(rk), 3 / REF_D),
        ),
        "ef14_top_k": (ef14(top), g, lambda G, x0: reference.ef14(G, x0, g, REF_T, _np_top(3))),
        "ef21_top_k": (ef21(top), g, lambda G, x0: reference.ef21(G, x0, g, REF_T, _np_top(3))),
        "marina_rand_k": (  # coins and keys replayed
            marina(rk, 0.3, salt=2),
            0.1,
            lambda G, x0: reference.marina(
                G, x0, 0.1, REF_T, _replay(rk, salt=2), _coins(0.3, salt=2)
            ),
        ),
        "ef21_p_top_k": (
            ef21_p(top, jc.top_k(4), alpha=0.5),
            g,
            lambda G, x0: reference.ef21_p(G, x0, g, REF_T, _np_top(3), _np_top(4), 0.5),
        ),
        "ef21_p_primal_top_k": (
            ef21_p(top, jc.top_k(4), alpha=0.5, learning_rate=g),
            None,
            lambda G, x0: reference.ef21_p(G, x0, g, REF_T, _np_top(3), _np_top(4), 0.5),
        ),
    }


@pytest.mark.parametrize("case", sorted(_ref_cases()))
def test_matches_numpy_reference(case, x64):
    """chain(method, sgd(γ)) in float64 equals the papers' update rules to 1e-12 relative."""
    method, gamma, ref = _ref_cases()[case]
    prob = problems.quadratic(
        REF_M, REF_D, L=1.0, mu=0.2, heterogeneity=1.0, key=3, dtype=jnp.float64
    )
    A = np.asarray(prob.data["A"])
    b = np.asarray(prob.data["b"])
    x0 = np.asarray(prob.x_star) + np.linspace(-1.0, 1.0, REF_D)
    tx = method if gamma is None else optax.chain(method, optax.sgd(gamma))

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
    expected = ref(reference.quadratic_grads(A, b), x0)
    scale = np.max(np.abs(expected))
    np.testing.assert_allclose(np.asarray(xs[0]), expected, rtol=0, atol=1e-12 * scale)
    # Not a trivial trajectory: it moved.
    assert np.linalg.norm(expected[-1] - expected[0]) > 1e-2
