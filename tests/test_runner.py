"""Tests of the compiled runner :func:`jaxdist.experiments.run` and its :class:`Trace`."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdist.compressors as jc
from jaxdist import theory
from jaxdist.comm import make_worker_mesh
from jaxdist.experiments import Trace, run
from jaxdist.experiments._runner import _get_program, _Spec
from jaxdist.methods import dcgd, dgd, diana, ef21
from jaxdist.problems import quadratic, top1_counterexample
from jaxdist.testing import count_compilations

# Compiling dominates the cost of these tests: the runner caches its compiled program on the
# identity of the method and the loss, so tests share these objects (and their shapes).
QUAD4 = quadratic(4, 6, L=1.0, mu=0.2, key=3)
# DIANA with ternary compression: random (keys and seeds matter) with per-worker state (shifts).
TX = optax.chain(diana(jc.ternary()), optax.sgd(0.2))


@pytest.fixture(scope="module")
def quad4():
    return QUAD4


def make_diana_ternary(hp):
    return optax.chain(diana(jc.ternary()), optax.sgd(hp["lr"]))


def make_dcgd_top1(hp):
    return optax.chain(dcgd(jc.top_k(1)), optax.sgd(hp["lr"]))


def _dcgd_sgd(lr, compressor):
    return optax.chain(dcgd(compressor), optax.sgd(lr))


# ---------------------------------------------------------------------------------------------
# scan == a Python loop of the same jitted step.


def test_scan_matches_python_loop_bitwise(quad4):
    """The compiled scan equals a Python loop of the same jitted per-worker step (CPU)."""
    num_steps, key = 12, jax.random.key(5)
    trace = run(TX, quad4, num_steps, key)

    spec = _Spec(
        num_workers=4,
        num_steps=num_steps,
        log_every=1,
        backend="vmap",
        mesh=None,
        axis_name="workers",
        batch_size=None,
        hp_names=None,
        has_seeds=False,
        has_x_star=True,
    )
    prog = _get_program(TX, quad4.loss, None, spec)  # the program run() just used
    data = jax.tree_util.tree_map(jnp.asarray, quad4.data)
    params0 = jnp.asarray(quad4.init_params)
    x_star = jnp.asarray(quad4.x_star, params0.dtype)
    init = jax.jit(prog.map_workers(lambda d: prog.init(params0, None), (0,)))
    step = jax.jit(prog.map_workers(lambda c, d, k: prog.step(c, k, d, key, None), (0, 0, None)))
    observe = jax.jit(prog.map_workers(lambda c, d: prog.observe(c, d, x_star), (0, 0)))
    carry = init(data)
    seen = []
    for k in range(num_steps + 1):
        seen.append(jax.tree_util.tree_map(lambda a: np.asarray(a[0]), observe(carry, data)))
        if k < num_steps:
            carry = step(carry, data, jnp.int32(k))
    for name in ("loss", "grad_norm_sq", "dist_sq"):
        looped = np.stack([s[name] for s in seen])
        np.testing.assert_array_equal(getattr(trace, name), looped, err_msg=name)
    # The ledger counted one compressed message up and one dense message down per step.
    up_counts, down_counts, rounds = seen[-1]["ledgers"][0]
    assert up_counts.tolist() == [num_steps] and down_counts.tolist() == [num_steps]
    assert int(rounds) == num_steps == trace.rounds[-1]
    # and the loss decreased (DIANA converges): a sanity check that the loop did run.
    assert trace.f_gap[-1] < 0.5 * trace.f_gap[0]


def test_log_every_subsamples_the_same_run(quad4):
    key = jax.random.key(1)
    every1 = run(TX, quad4, 12, key)
    every4 = run(TX, quad4, 12, key, log_every=4)
    np.testing.assert_array_equal(every4.step, [0, 4, 8, 12])
    for name in ("bits_up", "bits_down", "rounds", "bits_up_total"):
        np.testing.assert_array_equal(getattr(every4, name), getattr(every1, name)[::4])
    for name in ("loss", "grad_norm_sq", "dist_sq"):  # the same steps, bitwise (CPU)
        np.testing.assert_array_equal(getattr(every4, name), getattr(every1, name)[::4], name)


def test_not_retraced_and_not_recompiled(quad4):
    """The step is traced a constant number of times; a new key does not recompile."""
    calls = []

    def loss(params, data_m):
        calls.append(1)
        return quad4.loss(params, data_m)

    prob = dataclasses.replace(quad4, loss=loss)
    run(TX, prob, 3, jax.random.key(0))
    traced_short = len(calls)
    assert 0 < traced_short <= 4  # one gradient in the step, one value_and_grad per observe
    calls.clear()
    first = run(TX, prob, 60, jax.random.key(0))  # a new num_steps is a new program ...
    assert len(calls) == traced_short  # ... traced as often, whatever the length of the scan
    calls.clear()
    with count_compilations() as logs:
        second = run(TX, prob, 60, jax.random.key(1))
        third = run(TX, prob, 60, jax.random.key(0))
    assert calls == [] and logs == []
    # The other key really changed the run (the compressor is random); the same key did not.
    assert not np.array_equal(first.loss, second.loss)
    np.testing.assert_array_equal(first.loss, third.loss)


# ---------------------------------------------------------------------------------------------
# Backends and sweeps.


def test_vmap_matches_shard_map_on_8_devices():
    """8 workers, one per forced CPU device, with a sweep inside: the same trace as vmap."""
    prob = quadratic(8, 16, L=1.0, mu=0.1, key=0)
    key = jax.random.key(2)
    sweep = {"hyperparams": {"lr": jnp.array([0.1, 0.3])}, "seeds": jnp.array([0, 1])}
    by_vmap = run(make_diana_ternary, prob, 20, key, log_every=5, **sweep)
    by_mesh = run(make_diana_ternary, prob, 20, key, log_every=5, backend="shard_map", **sweep)
    mesh = make_worker_mesh(8)
    by_mesh2 = run(
        make_diana_ternary, prob, 20, key, log_every=5, backend="shard_map", mesh=mesh, **sweep
    )
    assert by_mesh.backend == "shard_map" and by_mesh.sweep_shape == (2, 2)
    for name in ("bits_up", "bits_down", "bits_up_total", "bits_down_total", "rounds"):
        np.testing.assert_array_equal(getattr(by_mesh, name), getattr(by_vmap, name))
    for name in ("loss", "grad_norm_sq", "dist_sq"):
        # pmean is an all-reduce on the mesh and a batched reduction under vmap: the float32
        # sums may round differently in the last bit, nothing more.
        np.testing.assert_allclose(
            getattr(by_mesh, name), getattr(by_vmap, name), rtol=2e-5, atol=1e-7, err_msg=name
        )
        np.testing.assert_array_equal(getattr(by_mesh2, name), getattr(by_mesh, name))
    assert np.all(by_vmap.f_gap[..., -1] < 0.5 * by_vmap.f_gap[..., 0])
    assert not np.array_equal(by_vmap.loss[0, 0], by_vmap.loss[0, 1])  # seeds matter


def test_sweep_matches_separate_runs(quad4):
    """3 step sizes x 2 seeds in one program == the 6 separate runs."""
    key = jax.random.key(7)
    lrs = jnp.array([0.05, 0.2, 0.5], jnp.float32)
    seeds = jnp.array([3, 11])
    sweep = run(make_diana_ternary, quad4, 12, key, hyperparams={"lr": lrs}, seeds=seeds)
    assert sweep.sweep_shape == (3, 2)
    assert sweep.loss.shape == (3, 2, 13) and sweep.bits_up.shape == (3, 2, 13)
    assert sweep.sweep_axes == ("hyperparams", "seeds")
    np.testing.assert_array_equal(sweep.seeds, [3, 11])
    for i in range(3):
        for j in range(2):
            # Run (i, j) alone: step size lrs[i] and the key fold_in(key, seeds[j]). (A sweep of
            # one value, so the six runs share one compiled program.)
            single = run(
                make_diana_ternary,
                quad4,
                12,
                jax.random.fold_in(key, int(seeds[j])),
                hyperparams={"lr": lrs[i : i + 1]},
            )[0]
            for name in ("bits_up", "bits_down", "rounds"):
                np.testing.assert_array_equal(getattr(sweep, name)[i, j], getattr(single, name))
            for name in ("loss", "grad_norm_sq", "dist_sq"):
                # Batching over the sweep may change float32 kernels (the last bits); the loss
                # (about 0.1 in size, a difference of O(1) terms) gets an absolute tolerance.
                np.testing.assert_allclose(
                    getattr(sweep, name)[i, j],
                    getattr(single, name),
                    rtol=1e-5,
                    atol=1e-6,
                    err_msg=f"{name} lr={lrs[i]} seed={seeds[j]}",
                )
    # A plain run (no sweep at all) with the same transformation agrees too.
    plain = run(TX, quad4, 12, jax.random.fold_in(key, 11))
    np.testing.assert_allclose(sweep.loss[1, 1], plain.loss, rtol=1e-5, atol=1e-6)
    # Different seeds give different (random) runs; selecting one run keeps its labels.
    assert not np.array_equal(sweep.loss[1, 0], sweep.loss[1, 1])
    sub = sweep[1]
    assert sub.sweep_shape == (2,) and sub.hyperparams == {} and sub.seeds.tolist() == [3, 11]
    sub = sweep[:, 0]
    assert sub.sweep_shape == (3,) and sub.seeds is None and sub.hyperparams["lr"].shape == (3,)


def test_seeds_only_sweep(quad4):
    key = jax.random.key(0)
    trace = run(TX, quad4, 12, key, seeds=np.array([0, 1, 2]))
    assert trace.sweep_shape == (3,) and trace.sweep_axes == ("seeds",)
    single = run(TX, quad4, 12, jax.random.fold_in(key, 2))
    np.testing.assert_allclose(trace.loss[2], single.loss, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Exact bits.


def test_exact_bits_rand_k(quad4):
    """dcgd(rand_k(k)), indices regenerated from the shared key: bits_up = T·k·32 exactly."""
    d, k, steps = quad4.dim, 2, 9
    trace = run(_dcgd_sgd(0.1, jc.rand_k(k)), quad4, steps, jax.random.key(0), log_every=3)
    assert trace.bits_up.dtype == np.int64
    np.testing.assert_array_equal(trace.step, [0, 3, 6, 9])
    np.testing.assert_array_equal(trace.bits_up, trace.step * k * 32)
    np.testing.assert_array_equal(trace.bits_down, trace.step * d * 32)  # dense broadcast
    np.testing.assert_array_equal(trace.bits_up_total, 4 * trace.step * k * 32)
    np.testing.assert_array_equal(trace.bits_down_total, 4 * trace.step * d * 32)
    np.testing.assert_array_equal(trace.rounds, trace.step)


def test_exact_bits_rand_k_with_index_list(quad4):
    """With explicit indices each message also carries k·ceil(log2 d) bits."""
    d, k, steps = quad4.dim, 3, 6
    c = jc.rand_k(k, index_coding="list")
    trace = run(_dcgd_sgd(0.1, c), quad4, steps, jax.random.key(0))
    per_message = 32 * k + k * 3  # ceil(log2 6) = 3
    assert c.bits(d) == per_message
    np.testing.assert_array_equal(trace.bits_up, np.arange(steps + 1) * per_message)


class _Separable(NamedTuple):
    """f_m(x) = ½‖x − b_m‖²: a tiny problem with a large dimension."""

    num_workers: int
    data: Any
    init_params: Any

    @staticmethod
    def loss(params, b):
        return 0.5 * jnp.sum(jnp.square(params - b))


def test_exact_bits_beyond_int32():
    """dgd with d = 2^15 floats for 2100 steps: 2.2e9 bits per worker (> 2^31), exact int64."""
    d, steps, m = 2**15, 2100, 2
    b = jnp.stack([jnp.ones(d), -jnp.ones(d)])
    prob = _Separable(m, b, jnp.zeros(d))
    trace = run(optax.chain(dgd(), optax.sgd(0.5)), prob, steps, jax.random.key(0), log_every=700)
    expected = np.array([0, 700, 1400, 2100], np.int64) * d * 32
    assert expected[-1] == 2_202_009_600 > 2**31 and m * expected[-1] > 2**32
    assert trace.bits_up.dtype == np.int64 and trace.bits_up_total.dtype == np.int64
    np.testing.assert_array_equal(trace.bits_up, expected)
    np.testing.assert_array_equal(trace.bits_down, expected)
    np.testing.assert_array_equal(trace.bits_up_total, m * expected)
    assert np.isnan(trace.f_gap).all() and np.isnan(trace.dist_sq).all()  # no f*, x* given
    assert not trace.diverged
    np.testing.assert_allclose(trace.loss[-1], 0.5 * d, rtol=1e-6)  # f(0) = f(x*) = d/2
    # Modelled time: 700 dense parameter-server rounds, each as in jaxdist.theory.
    alpha, beta = 1e-4, 1e-10
    ps = trace.modelled_time(alpha, beta)
    np.testing.assert_allclose(
        ps[1], 700 * theory.parameter_server_time(m, d, 32, alpha, beta), rtol=1e-12
    )
    links = trace.modelled_time(alpha, beta, model="independent_links")
    np.testing.assert_allclose(links[3], 2100 * 2 * theory.p2p_time(d * 32, alpha, beta))
    assert ps[0] == 0 and links[0] == 0
    with pytest.raises(ValueError, match="model must be"):
        trace.modelled_time(alpha, beta, model="ring")


def test_method_without_ledger_reports_zero_traffic(quad4):
    mean = optax.GradientTransformationExtraArgs(
        lambda p: optax.EmptyState(),
        lambda g, s, p=None, **kw: (jax.lax.pmean(g, "workers"), s),
    )
    trace = run(optax.chain(mean, optax.sgd(0.5)), quad4, 12, 0)
    assert not trace.bits_up.any() and not trace.bits_down_total.any() and not trace.rounds.any()
    # Plain averaged GD with step 1/(2L) contracts the distance to x* at least by (1 - mu/(2L)).
    assert np.all(trace.dist_sq[1:] <= (1 - 0.2 / 2) ** 2 * trace.dist_sq[:-1] * (1 + 1e-5))


# ---------------------------------------------------------------------------------------------
# Divergence is data.


def test_top1_counterexample_diverges_as_data():
    """DCGD-Top1 on the 3-worker counterexample: x^k = (1 + 11γ/6)^k x^0, then overflow."""
    prob = top1_counterexample()  # paper scaling, x^0 = (1, 1, 1), f* = 0, x* = 0
    gammas = jnp.array([0.01, 0.5], jnp.float32)
    trace = run(make_dcgd_top1, prob, 200, jax.random.key(0), hyperparams={"lr": gammas})
    np.testing.assert_array_equal(trace.diverged, [False, True])
    # On the diagonal x^k = (1 + 11γ/6)^k x^0, so f(x^k) = f(x^0)(1 + 11γ/6)^{2k} with
    # f(x^0) = 1.75, and ||x^k||² = 3(1 + 11γ/6)^{2k}. Float32 rounding moves the iterate off
    # the diagonal by a few ulps; at γ = 0.01 that stays tiny for all 200 steps (measured
    # relative error 7e-7), at γ = 0.5 the off-diagonal part grows faster than the diagonal
    # one (about 4x per step), so the closed form is checked on the first 13 points only
    # (measured error <= 8e-7 there) and afterwards the run just blows up faster.
    k = trace.step
    for i, n in ((0, 201), (1, 13)):
        growth = (1 + 11 * float(gammas[i]) / 6) ** (2 * k[:n])
        np.testing.assert_allclose(trace.f_gap[i, :n], 1.75 * growth, rtol=1e-5)
        np.testing.assert_allclose(trace.dist_sq[i, :n], 3 * growth, rtol=1e-5)
    assert np.isfinite(trace.f_gap[0]).all() and np.all(np.diff(trace.f_gap[0]) > 0)
    blown = trace.f_gap[1]
    first_bad = int(np.argmax(~np.isfinite(blown)))
    assert 13 < first_bad < 200 and not np.isfinite(blown[first_bad:]).any()
    assert np.all(np.diff(blown[:first_bad]) > 0) and blown[first_bad - 1] > 1e30
    assert np.isnan(trace.grad_norm_sq[1, -1]) or np.isinf(trace.grad_norm_sq[1, -1])
    # Bits keep counting after the overflow: a diverged run still communicated.
    np.testing.assert_array_equal(trace.rounds[1], trace.step)
    # EF21 on the same problem converges (same program structure, another method).
    # (γ = 0.02 is about 3.4x EF21's nonconvex step 0.00586, which THEORY.md §3 reports still
    # converges; measured f_gap ratio after 200 steps: 7.6e-5.)
    fixed = run(optax.chain(ef21(jc.top_k(1)), optax.sgd(0.02)), prob, 200, 0)
    assert not fixed.diverged and fixed.f_gap[-1] < 1e-3 * fixed.f_gap[0]


# ---------------------------------------------------------------------------------------------
# Machine-readable output.


def _assert_traces_equal(a: Trace, b: Trace) -> None:
    for f in dataclasses.fields(Trace):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, f.name
            np.testing.assert_array_equal(x, y, err_msg=f.name)  # NaN == NaN here
        elif isinstance(x, dict):
            assert x.keys() == y.keys()
            for k in x:
                assert x[k].dtype == y[k].dtype
                np.testing.assert_array_equal(x[k], y[k])
        else:
            assert x == y, f.name


def test_json_round_trip_with_nonfinite_values(tmp_path):
    prob = top1_counterexample()
    trace = run(
        make_dcgd_top1, prob, 200, jax.random.key(0), hyperparams={"lr": jnp.array([0.01, 0.5])}
    )
    assert trace.diverged[1] and not np.isfinite(trace.f_gap[1]).all()
    assert np.isnan(trace.f_gap[1]).any() or np.isinf(trace.f_gap[1]).any()
    path = tmp_path / "trace.json"
    text = trace.to_json(str(path), indent=1)
    assert path.read_text() == text

    def no_constants(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    json.loads(text, parse_constant=no_constants)  # strict JSON: no bare NaN / Infinity
    back = Trace.from_json(text)
    _assert_traces_equal(trace, back)
    _assert_traces_equal(trace, Trace.from_dict(trace.to_dict()))


def test_csv_has_one_row_per_run_and_logged_step(quad4, tmp_path):
    trace = run(
        make_diana_ternary,
        quad4,
        12,
        0,
        hyperparams={"lr": jnp.array([0.1, 0.2, 0.3])},
        seeds=jnp.array([5, 6]),
    )
    text = trace.to_csv(str(tmp_path / "t.csv"))
    assert (tmp_path / "t.csv").read_text() == text
    lines = text.strip().split("\n")
    header = lines[0].split(",")
    assert header[:3] == ["lr", "seed", "step"] and header[-1] == "diverged"
    assert len(lines) == 1 + 3 * 2 * 13
    row = dict(zip(header, lines[1 + 2 * 13 + 13 + 2].split(","), strict=True))  # lr 1, seed 1
    assert row["lr"] == "0.2" and row["seed"] == "6" and row["step"] == "2"
    assert int(row["bits_up"]) == int(trace.bits_up[1, 1, 2])
    assert np.float32(row["loss"]) == trace.loss[1, 1, 2]
    assert np.float64(row["f_gap"]) == trace.f_gap[1, 1, 2]
    _assert_traces_equal(
        trace, Trace.from_json(trace.to_json())
    )  # with a seeds axis too  # shortest float32 repr round-trips


# ---------------------------------------------------------------------------------------------
# Minibatches.


def test_minibatches_with_the_default_sampler():
    """A full-size minibatch (without replacement) is the full local gradient, reordered."""
    rng = np.random.default_rng(0)
    m, n, d = 4, 10, 3
    b = jnp.asarray(rng.normal(size=(m, n, d)), jnp.float32)

    class Samples(NamedTuple):
        num_workers: int
        data: Any
        init_params: Any

        @staticmethod
        def loss(params, b_m):
            return 0.5 * jnp.mean(jnp.sum(jnp.square(params - b_m), axis=-1))

    prob = Samples(m, b, jnp.zeros(d))
    tx = optax.chain(dgd(), optax.sgd(0.5))
    b64 = np.asarray(b, np.float64)

    def f(x):
        return 0.5 * np.mean(np.sum((x - b64) ** 2, axis=-1))

    # Full gradients: ∇f(x) = x − mean(b), so x_{k+1} = x_k − 0.5 (x_k − mean(b)).
    x, expected = np.zeros(d), []
    for _ in range(6):
        expected.append(f(x))
        x = x - 0.5 * (x - b64.mean(axis=(0, 1)))
    same = run(tx, prob, 5, 0, batch_size=n)  # every sample, in a random order
    np.testing.assert_allclose(same.loss, expected, rtol=1e-5)

    # Minibatches of 2: the documented key schedule, replayed outside the runner.
    seeds = (0, 1)
    small = run(tx, prob, 5, 0, batch_size=2, seeds=jnp.array(seeds))

    for s, seed in enumerate(seeds):
        run_key = jax.random.fold_in(jax.random.key(0), seed)
        x, expected = np.zeros(d), []
        for k in range(6):
            expected.append(f(x))
            grads = []
            for w in range(m):
                bkey = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(run_key, 1), k), w)
                idx = np.asarray(jax.random.choice(bkey, n, (2,), replace=False))
                grads.append(x - b64[w, idx].mean(axis=0))
            x = x - 0.5 * np.mean(grads, axis=0)
        np.testing.assert_allclose(small.loss[s], expected, rtol=1e-5, err_msg=f"seed {seed}")
    assert not np.array_equal(small.loss[0], small.loss[1])
    with pytest.raises(ValueError, match="batch_size=11 exceeds"):
        run(tx, prob, 5, 0, batch_size=11)


def test_minibatch_needs_samples(quad4):
    with pytest.raises(ValueError, match="no samples"):
        run(TX, quad4, 2, 0, batch_size=1)


# ---------------------------------------------------------------------------------------------
# Errors.


def test_errors(quad4):
    tx = TX
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        run(tx, quad4, 0, key)
    with pytest.raises(ValueError, match="log_every must divide num_steps"):
        run(tx, quad4, 10, key, log_every=3)
    with pytest.raises(ValueError, match="log_every must be >= 1"):
        run(tx, quad4, 10, key, log_every=0)
    with pytest.raises(ValueError, match="backend must be one of"):
        run(tx, quad4, 10, key, backend="pmap")
    make = make_diana_ternary
    with pytest.raises(ValueError, match="equal lengths"):
        run(make, quad4, 2, key, hyperparams={"lr": jnp.ones(3), "mom": jnp.ones(2)})
    with pytest.raises(ValueError, match="1-D array"):
        run(make, quad4, 2, key, hyperparams={"lr": jnp.ones((2, 2))})
    with pytest.raises(ValueError, match="non-empty dict"):
        run(make, quad4, 2, key, hyperparams={})
    with pytest.raises(TypeError, match="callable hp -> GradientTransformation"):
        run(tx, quad4, 2, key, hyperparams={"lr": jnp.ones(2)})
    with pytest.raises(TypeError, match="pass hyperparams"):
        run(make, quad4, 2, key)
    with pytest.raises(TypeError, match="seeds must be an integer array"):
        run(tx, quad4, 2, key, seeds=jnp.array([0.5]))
    with pytest.raises(TypeError, match="num_steps must be a Python int"):
        run(tx, quad4, 2.0, key)
    with pytest.raises(ValueError, match="one worker per device"):
        run(tx, quad4, 2, key, backend="shard_map", mesh=make_worker_mesh(8))
    with pytest.raises(ValueError, match="only used with"):
        run(tx, quad4, 2, key, mesh=make_worker_mesh(4))
    with pytest.raises(ValueError, match="no axis named"):
        run(tx, quad4, 2, key, backend="shard_map", mesh=make_worker_mesh(4, axis_name="w"))


def test_raw_and_int_keys_agree(quad4):
    typed = run(TX, quad4, 12, jax.random.key(4))
    raw = run(TX, quad4, 12, jax.random.PRNGKey(4))
    as_int = run(TX, quad4, 12, 4)
    np.testing.assert_array_equal(raw.loss, typed.loss)
    np.testing.assert_array_equal(as_int.loss, typed.loss)
