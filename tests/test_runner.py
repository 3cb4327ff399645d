"""Tests of the compiled runner :func:`jaxdist.experiments.run` and its :class:`Trace`."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdist.compressors as jc
from jaxdist import comm
from jaxdist.comm import NetworkModel, make_worker_mesh
from jaxdist.experiments import Trace, run
from jaxdist.experiments._runner import DisagreementWarning
from jaxdist.methods import Oracle, RoundMethod, as_round, dcgd, dgd, diana, ef21, reseed
from jaxdist.problems import quadratic, sample_minibatch, top1_counterexample
from jaxdist.testing import count_compilations

# Compiling dominates the cost of these tests: jax.jit caches the compiled run on the method
# value and the loss, so tests share these objects (and their shapes).
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
# scan == a Python loop of the same per-worker round.


def test_scan_matches_python_loop_bitwise(quad4):
    """The compiled run equals a Python loop of jitted rounds of the same method (CPU):
    the documented key path (round t gets fold_in(key, t); the state is re-seeded from the
    run key) and the metrics at the consensus model, computed here by hand."""
    num_steps, key = 12, jax.random.key(5)
    trace = run(TX, quad4, num_steps, key)
    m = quad4.num_workers
    method = as_round(TX)
    data = jax.tree_util.tree_map(jnp.asarray, quad4.data)
    x_star = jnp.asarray(quad4.x_star, jnp.float32)
    params0 = comm.replicate(jnp.asarray(quad4.init_params), m)
    init = jax.jit(comm.simulate(lambda p: reseed(method.init(p), key), m))

    def one_round(state, data_m, t):
        oracle = Oracle(quad4.loss, data_m)
        return method.round(state, oracle, jax.random.fold_in(key, t))[0]

    def metrics(state, data_m):
        x = method.params(state)
        f, g = jax.value_and_grad(quad4.loss)(x, data_m)
        return comm.worker_mean(f), jnp.sum(comm.worker_mean(g) ** 2), jnp.sum((x - x_star) ** 2)

    step = jax.jit(comm.simulate(one_round, m, in_axes=(0, 0, None)))
    observe = jax.jit(comm.simulate(metrics, m))
    state = init(params0)
    seen = []
    for t in range(num_steps + 1):
        seen.append([np.asarray(v[0]) for v in observe(state, data)])
        if t < num_steps:
            state = step(state, data, jnp.int32(t))
    for i, name in enumerate(("loss", "grad_norm_sq", "dist_sq")):
        np.testing.assert_array_equal(trace[name], np.stack([s[i] for s in seen]), err_msg=name)
    # The ledger counted one compressed message up and one dense message down per round.
    led = comm.find_ledgers(state)[0]
    assert led.num_rounds().tolist() == [num_steps] * m == [int(trace.rounds[-1])] * m
    np.testing.assert_array_equal(trace.grad_evals, np.arange(num_steps + 1))
    np.testing.assert_array_equal(trace.consensus_sq, np.zeros(num_steps + 1))
    assert trace.agreed and not trace.diverged
    assert trace.f_gap[-1] < 0.5 * trace.f_gap[0]  # DIANA converges: the loop did run


def test_log_every_subsamples_the_same_run_and_logs_the_last_round(quad4):
    key = jax.random.key(1)
    every1 = run(TX, quad4, 10, key)
    every4 = run(TX, quad4, 10, key, log_every=4)  # 4 does not divide 10
    np.testing.assert_array_equal(every4.step, [0, 4, 8, 10])
    for name in every1.series:  # the same rounds, bitwise (CPU)
        np.testing.assert_array_equal(every4[name], every1[name][[0, 4, 8, 10]], err_msg=name)
    assert run(TX, quad4, 3, key, log_every=7).step.tolist() == [0, 3]


def test_not_retraced_and_not_recompiled(quad4):
    """A second call with another key, other seeds or hyperparameter values, or other data
    of the same shapes reuses the compiled program (jax.jit's own cache)."""
    calls = []

    @chex.assert_max_traces(n=8)  # a constant number of traces, whatever the run's length
    def loss(params, data_m):
        calls.append(1)
        return quad4.loss(params, data_m)

    prob = dataclasses.replace(quad4, loss=loss)
    first = run(TX, prob, 60, jax.random.key(0))
    assert 0 < len(calls) <= 8
    calls.clear()
    other = dataclasses.replace(prob, data=jax.tree_util.tree_map(lambda a: a * 1.5, prob.data))
    with count_compilations() as logs:
        second = run(TX, prob, 60, jax.random.key(1))
        third = run(TX, prob, 60, jax.random.key(0))
        scaled = run(TX, other, 60, jax.random.key(0))
    assert calls == [] and logs == []
    # The other key really changed the run (the compressor is random); the same key did not.
    assert not np.array_equal(first.loss, second.loss)
    np.testing.assert_array_equal(first.loss, third.loss)
    assert not np.array_equal(first.loss, scaled.loss)
    # Sweeps: other values and other seeds of the same lengths, no recompilation either.
    hp = {"lr": jnp.array([0.1, 0.2])}
    run(make_diana_ternary, quad4, 6, 0, hyperparams=hp, seeds=jnp.array([0, 1]))
    with count_compilations() as logs:
        run(
            make_diana_ternary,
            quad4,
            6,
            3,
            hyperparams={"lr": jnp.array([0.3, 0.4])},
            seeds=jnp.array([5, 9]),
        )
    assert logs == []


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


def _sq_dist_to_data_mean(params, data_m):
    """A metric with per-worker data: ‖x − mean of this worker's rows‖²."""
    return jnp.sum((params - jnp.mean(data_m, axis=0)) ** 2)


def test_user_metrics_are_worker_means_at_the_model_on_both_backends():
    """metrics={name: (fn, data)}: mean_m fn(x̄, data_m) at every logged round, in the sweep's
    shape, the same under vmap and shard_map; fn = the problem's loss gives the loss series."""
    prob = quadratic(8, 16, L=1.0, mu=0.1, key=0)
    extra = jax.random.normal(jax.random.key(9), (8, 5, 16))
    metrics = {"again": (prob.loss, prob.data), "spread": (_sq_dist_to_data_mean, extra)}
    sweep = {"hyperparams": {"lr": jnp.array([0.1, 0.3])}}
    key = jax.random.key(2)
    by_vmap = run(make_diana_ternary, prob, 12, key, log_every=4, metrics=metrics, **sweep)
    np.testing.assert_allclose(by_vmap.series["again"], by_vmap.loss, rtol=1e-6)
    assert by_vmap.series["spread"].shape == (2, 4)
    # by hand at the final model (every worker holds the same one): the mean over workers
    fin = run(make_diana_ternary, prob, 12, key, metrics=metrics, **sweep)
    assert fin.series["spread"].shape == (2, 13)
    by_mesh = run(
        make_diana_ternary,
        prob,
        12,
        key,
        log_every=4,
        metrics=metrics,
        backend="shard_map",
        **sweep,
    )
    for name in ("again", "spread"):
        np.testing.assert_allclose(by_mesh.series[name], by_vmap.series[name], rtol=2e-5)


def test_user_metric_matches_a_numpy_evaluation_of_the_final_model(quad4):
    extra = np.random.default_rng(0).normal(size=(4, 3, 6)).astype(np.float32)
    tx = optax.chain(dgd(), optax.sgd(0.5))
    trace = run(tx, quad4, 7, 0, metrics={"spread": (_sq_dist_to_data_mean, extra)})
    # dgd keeps every worker on the same model: replay it with the loss's gradient by hand
    x = np.asarray(quad4.init_params, np.float64)
    for _ in range(7):
        x = x - 0.5 * np.asarray(quad4.full_grad(jnp.asarray(x, jnp.float32)), np.float64)
    want = np.mean([np.sum((x - extra[m].mean(axis=0)) ** 2) for m in range(4)])
    np.testing.assert_allclose(trace.series["spread"][-1], want, rtol=1e-4)


@pytest.mark.parametrize(
    "metrics, error, match",
    [
        ({"loss": (_sq_dist_to_data_mean, np.zeros((4, 2, 6)))}, ValueError, "built-in series"),
        ({"a": _sq_dist_to_data_mean}, TypeError, r"pair \(fn, data\)"),
        ({"a": (_sq_dist_to_data_mean, np.zeros((3, 6)))}, ValueError, "leading worker axis"),
        ({"a": (lambda x, d: d @ x, np.zeros((4, 2, 6)))}, ValueError, "must be a scalar"),
        ([("a", None)], TypeError, "metrics must be a dict"),
    ],
)
def test_user_metrics_validation(quad4, metrics, error, match):
    with pytest.raises(error, match=match):
        run(optax.chain(dgd(), optax.sgd(0.5)), quad4, 2, 0, metrics=metrics)


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
    # Modelled time: 700 dense parameter-server rounds, each as in the cost model.
    ps_model = NetworkModel(latency=1e-4, seconds_per_bit=1e-10)
    ps = trace.modelled_time(ps_model)
    np.testing.assert_allclose(ps[1], 700 * (2 * 1e-4 + 2 * m * d * 32 * 1e-10), rtol=1e-12)
    links = trace.modelled_time(
        NetworkModel(latency=1e-4, seconds_per_bit=1e-10, topology="independent_links")
    )
    np.testing.assert_allclose(links[3], 2100 * 2 * (1e-4 + d * 32 * 1e-10), rtol=1e-12)
    assert ps[0] == 0 and links[0] == 0
    timed = run(optax.chain(dgd(), optax.sgd(0.5)), prob, 1400, 0, log_every=700, network=ps_model)
    np.testing.assert_allclose(timed.time, ps[:3], rtol=1e-12)


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
    # Growth is divergence too: at γ = 0.01 f grows by (1 + 11γ/6)^400 ≈ 1.4e3, finite.
    strict = run(make_dcgd_top1, prob, 200, 0, hyperparams={"lr": gammas}, divergence_factor=100)
    np.testing.assert_array_equal(strict.diverged, [True, True])
    assert np.isfinite(strict.f_gap[0]).all()
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
    fixed = run(
        optax.chain(ef21(jc.top_k(1)), optax.sgd(0.02)), prob, 200, 0, divergence_factor=100
    )
    assert not fixed.diverged and fixed.f_gap[-1] < 1e-3 * fixed.f_gap[0]


# ---------------------------------------------------------------------------------------------
# Machine-readable output.


def _assert_traces_equal(a: Trace, b: Trace) -> None:
    for f in dataclasses.fields(Trace):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "series":
            assert list(x) == list(y)
            x, y = dict(x), dict(y)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, f.name
            np.testing.assert_array_equal(x, y, err_msg=f.name)  # NaN == NaN here
        elif isinstance(x, dict):
            assert x.keys() == y.keys()
            for k in x:
                if isinstance(x[k], np.ndarray):
                    assert x[k].dtype == y[k].dtype, k
                    np.testing.assert_array_equal(x[k], y[k])
                else:
                    assert x[k] == y[k], k  # metadata
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

    # Minibatches of 2: the documented key path (round t: fold_in(run_key, t); worker w's
    # minibatch: worker_key of it, fold_in(., w)), replayed outside the runner.
    seeds = (0, 1)
    small = run(tx, prob, 5, 0, batch_size=2, seeds=jnp.array(seeds))

    for s, seed in enumerate(seeds):
        run_key = jax.random.fold_in(jax.random.key(0), seed)
        x, expected = np.zeros(d), []
        for k in range(6):
            expected.append(f(x))
            grads = []
            for w in range(m):
                bkey = jax.random.fold_in(jax.random.fold_in(run_key, k), w)
                batch = np.asarray(sample_minibatch(bkey, b[w], 2), np.float64)
                assert len({tuple(r) for r in batch}) == 2  # without replacement
                grads.append(x - batch.mean(axis=0))
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
    with pytest.raises(TypeError, match="callable hp -> method"):
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
    with pytest.raises(ValueError, match=r"params0 leaf 0 has shape \(7,\).*\(6,\)"):
        run(tx, quad4, 2, key, params0=jnp.zeros(7))
    with pytest.raises(ValueError, match="pytree structure"):
        run(tx, quad4, 2, key, params0={"x": jnp.zeros(6)})
    with pytest.raises(TypeError, match="key must be an int seed, a typed key"):
        run(tx, quad4, 2, jnp.zeros(2))
    with pytest.raises(TypeError, match="round-based method"):
        run(object(), quad4, 2, key)
    with pytest.raises(ValueError, match=r"divergence_factor must be in \(1"):
        run(tx, quad4, 2, key, divergence_factor=0.5)


def test_raw_and_int_keys_agree(quad4):
    typed = run(TX, quad4, 12, jax.random.key(4))
    raw = run(TX, quad4, 12, jax.random.PRNGKey(4))
    as_int = run(TX, quad4, 12, 4)
    np.testing.assert_array_equal(raw.loss, typed.loss)
    np.testing.assert_array_equal(as_int.loss, typed.loss)


# ---------------------------------------------------------------------------------------------
# Workers that do not agree; round-based methods through the same runner.


def test_workers_that_never_agree_are_shown_plainly(quad4):
    """optax.sgd alone (no jaxdist method): every worker descends its own f_m. The trace
    takes the metrics at the average model, records the consensus distance and warns."""
    with pytest.warns(DisagreementWarning, match="consensus distance"):
        trace = run(optax.sgd(0.1), quad4, 20, 0, log_every=10)
    assert trace.consensus_sq[0] == 0 and np.all(trace.consensus_sq[1:] > 1e-3)
    assert not trace.agreed
    assert np.all(trace.f_gap >= -1e-6)  # f at the average model is >= f*: never negative
    # optax.masked(diana, mask) leaves the unmasked leaves un-averaged: the drift shows.
    params = {"a": jnp.zeros(3), "b": jnp.zeros(3)}

    class Split(NamedTuple):
        num_workers: int
        data: Any
        init_params: Any

        @staticmethod
        def loss(p, t):
            return 0.5 * jnp.sum((p["a"] - t) ** 2) + 0.5 * jnp.sum((p["b"] - t) ** 2)

    targets = jnp.arange(12.0).reshape(4, 3)
    masked = optax.chain(optax.masked(diana(jc.rand_k(2)), {"a": True, "b": False}), optax.sgd(0.1))
    with pytest.warns(DisagreementWarning):
        drift = run(masked, Split(4, targets, params), 10, 0)
    assert drift.consensus_sq[-1] > 0
    fixed = optax.chain(
        optax.multi_transform({"c": diana(jc.rand_k(2)), "d": dgd()}, {"a": "c", "b": "d"}),
        optax.sgd(0.1),
    )
    assert run(fixed, Split(4, targets, params), 10, 0).agreed


def _toy_local_gd(steps: int, lr: float) -> RoundMethod:
    """H local GD steps from the average, then average (the lecture's local GD), with its
    own info entries: a minimal round-based method written against the protocol."""

    def init(params):
        return {
            "x": params,
            "ledger": comm.Ledger.create(up={"full": 32 * 6}, down={"full": 32 * 6}),
        }

    def round_fn(state, oracle, key):
        def local(x, _):
            return x - lr * oracle.grad(x), None

        x, _ = jax.lax.scan(local, state["x"], None, length=steps)
        x = comm.worker_mean(x)
        ledger = state["ledger"].record(up={"full": 1}, down={"full": 1}, rounds=1)
        f1 = oracle.server_value_and_grad(x)[0]
        return {"x": x, "ledger": ledger}, {"grad_evals": steps, "server_loss": f1}

    return RoundMethod(init, round_fn, lambda s: s["x"], needs_server=True)


def test_round_based_method_through_the_runner(quad4):
    """The runner knows only rounds: a round-based method's info becomes series (integers
    cumulated, floats as they are), its ledger gives bits and rounds, vmap == shard_map."""
    method = _toy_local_gd(3, 0.2)
    trace = run(method, quad4, 8, 0, log_every=4)
    np.testing.assert_array_equal(trace.grad_evals, [0, 12, 24])
    np.testing.assert_array_equal(trace.rounds, [0, 4, 8])
    np.testing.assert_array_equal(trace.bits_up, [0, 4 * 192, 8 * 192])
    assert trace.server_loss.dtype == np.float32 and trace.agreed
    # The same local GD by hand in NumPy; the server's f_1 is worker 0's function.
    A = np.asarray(quad4.data["A"], np.float64)
    b = np.asarray(quad4.data["b"], np.float64)
    x = np.asarray(quad4.init_params, np.float64)
    for _ in range(8):
        xs = np.stack([x] * 4)
        for _ in range(3):
            xs = xs - 0.2 * (np.einsum("mij,mj->mi", A, xs) - b)
        x = xs.mean(0)
    data_0 = jax.tree_util.tree_map(lambda a: a[0], quad4.data)
    np.testing.assert_allclose(trace.dist_sq[-1], np.sum((x - quad4.x_star) ** 2), rtol=1e-4)
    np.testing.assert_allclose(
        trace.server_loss[-1], float(quad4.loss(jnp.asarray(x, jnp.float32), data_0)), rtol=1e-4
    )
    sm = run(method, quad4, 8, 0, log_every=4, backend="shard_map")
    np.testing.assert_allclose(sm.loss, trace.loss, rtol=1e-5)
    np.testing.assert_array_equal(sm.grad_evals, trace.grad_evals)
    assert trace.f_gap[-1] < trace.f_gap[0]
