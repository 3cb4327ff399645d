"""The compiled runner: :func:`run` turns a whole experiment into one jitted program.

The runner knows only rounds (:mod:`jaxdist.methods._round`): a per-step optax transformation
is hosted by :class:`~jaxdist.methods.PerStep` (one gradient, one ``update``, one
``apply_updates``), a round-based method runs as it is. Structure of the program (one
``jax.jit``, cached by JAX on the static configuration):

* **workers** are mapped with ``jax.vmap(..., axis_name=axis_name)`` (``backend="vmap"``) or
  ``jax.shard_map`` with one worker per device (``backend="shard_map"``);
* inside each worker, a **sweep** over hyperparameters and seeds is a ``vmap``;
* each run is a ``lax.scan`` over logged blocks of ``log_every`` rounds (plus the remaining
  rounds when ``log_every`` does not divide the number of rounds): only logged points are
  stored.

At a logged point the metrics are taken at the method's model ``x_m = params(state)``: with
``x_0`` worker 0's copy (broadcast exactly by a ``psum``), ``x̄ = x_0 + mean_m(x_m − x_0)``
(so ``x̄ = x_0`` bitwise when every worker holds the same model), ``f(x̄) = mean_m f_m(x̄)``,
``∇f(x̄)``, ``‖x̄ − x*‖²`` and the consensus distance ``mean_m ‖x_m − x̄‖²``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh

from jaxdist._validate import as_key, check_int, check_number, check_tree_like
from jaxdist.comm import (
    axis_index,
    exact_bits,
    find_ledgers,
    make_worker_mesh,
    sum_exact,
    worker_max,
    worker_mean,
    worker_sum,
    workers,
)
from jaxdist.experiments._trace import CORE_SERIES, Trace
from jaxdist.methods._base import reseed
from jaxdist.methods._round import Oracle, as_round

__all__ = ["run", "AssumptionWarning", "DisagreementWarning", "SolverWarning"]

PyTree = Any

_BACKENDS = ("vmap", "shard_map")


class DisagreementWarning(UserWarning):
    """The workers of a run ended with different models (a positive consensus distance)."""


class SolverWarning(UserWarning):
    """A subproblem solve of the run ended above its tolerance (budget spent or non-finite):
    the method's ``info["inner_unsolved"]`` counts them."""


class AssumptionWarning(UserWarning):
    """The problem violates a bound the method's parameters assume (``RoundMethod.bounds``),
    e.g. a similarity δ smaller than the problem's: the method's guarantee does not apply."""


# ---------------------------------------------------------------------------------------------
# The static configuration of a run (the static argument of the jitted program).


@dataclasses.dataclass(frozen=True)
class _Spec:
    method: Any  # a round-based method, or a callable hp -> method (with hp_names)
    loss: Callable
    sampler: Callable | None
    num_workers: int
    num_steps: int
    log_every: int
    backend: str
    mesh: Mesh | None
    axis_name: Any
    batch_size: int | None
    hp_names: tuple[str, ...] | None
    has_seeds: bool
    needs_server: bool
    metric_fns: tuple[tuple[str, Callable], ...] = ()

    def make_method(self, hp: Mapping[str, jax.Array] | None) -> Any:
        if self.hp_names is None:
            return as_round(self.method)
        return as_round(self.method(dict(hp)))


def _sq_norm(tree: PyTree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return sum(jnp.sum(jnp.square(leaf)) for leaf in leaves)


def _all_finite(tree: PyTree) -> jax.Array:
    out = jnp.ones((), bool)
    for leaf in jax.tree_util.tree_leaves(tree):
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            out = out & jnp.all(jnp.isfinite(leaf))
    return out


def _all_equal(y: PyTree) -> jax.Array:
    """Whether every leaf of ``y = x_m − x_0`` is exactly zero (this worker agrees)."""
    out = jnp.ones((), bool)
    for leaf in jax.tree_util.tree_leaves(y):
        out = out & jnp.all(leaf == 0)
    return out


def _tree_sub(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x, y: x - y, a, b)


def _tree_add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x, y: x + y, a, b)


def _is_int(x: Any) -> bool:
    return jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_


def _info_zeros(info_shapes: Mapping[str, Any]) -> dict[str, jax.Array]:
    out = {}
    for name, sd in info_shapes.items():
        if sd.shape != ():
            raise ValueError(
                f"info[{name!r}] of the method's round must be a scalar, got shape {sd.shape}"
            )
        out[name] = jnp.zeros((), jnp.int32 if _is_int(sd) else sd.dtype)
    return out


def _info_accumulate(acc: dict[str, jax.Array], info: Mapping[str, Any]) -> dict[str, jax.Array]:
    out = {}
    for name, total in acc.items():
        value = jnp.asarray(info[name])
        if _is_int(total):
            out[name] = total + value.astype(jnp.int32)
        else:
            out[name] = value.astype(total.dtype)
    return out


# ---------------------------------------------------------------------------------------------
# One worker, one run.


def _observe(spec: _Spec, method, state, acc, data_m, x_star, metric_data_m) -> dict[str, Any]:
    axis = spec.axis_name
    x_m = method.params(state)
    is_first = axis_index(axis) == 0
    x_0 = worker_sum(
        jax.tree_util.tree_map(lambda v: jnp.where(is_first, v, jnp.zeros_like(v)), x_m), axis
    )
    y = _tree_sub(x_m, x_0)
    y_bar = worker_mean(y, axis)
    consensus = jnp.maximum(worker_mean(_sq_norm(y), axis) - _sq_norm(y_bar), 0)
    # Every worker holds the same model (the usual case): evaluate at it directly, as a user's
    # own loop would; otherwise at the average model. The flag is uniform (a pmax), so under
    # vmap this is a real branch.
    differ = worker_max(jnp.logical_not(_all_equal(y)).astype(jnp.int32), axis) > 0
    x_bar = lax.cond(differ, lambda: _tree_add(x_0, y_bar), lambda: x_m)
    loss_m, grad_m = jax.value_and_grad(spec.loss)(x_bar, data_m)
    f = worker_mean(loss_m, axis)
    gn = _sq_norm(worker_mean(grad_m, axis))
    if x_star is None:
        dist = jnp.zeros_like(gn)
    else:
        dist = _sq_norm(_tree_sub(x_bar, x_star))
    local_ok = _all_finite(x_m) & jnp.isfinite(f) & jnp.isfinite(gn) & jnp.isfinite(dist)
    finite = worker_max(jnp.logical_not(local_ok).astype(jnp.int32), axis) == 0
    ledgers = tuple(
        (
            jnp.asarray(led.up, jnp.int32),
            jnp.asarray(led.down, jnp.int32),
            jnp.asarray(led.rounds, jnp.int32),
        )
        for led in find_ledgers(state)
    )
    # the user's metrics, each the mean over the workers of fn(x̄, this worker's share)
    user = {name: worker_mean(fn(x_bar, metric_data_m[name]), axis) for name, fn in spec.metric_fns}
    return {
        "loss": f,
        "grad_norm_sq": gn,
        "dist_sq": dist,
        "consensus_sq": consensus.astype(gn.dtype),
        "finite": finite,
        "ledgers": ledgers,
        "info": dict(acc),
        "metrics": user,
    }


def _run_one(spec: _Spec, data_m, server_data, state, run_key, hp, x_star, metric_data_m):
    """The scan of one run of one worker from its initial state."""
    method = spec.make_method(hp)
    oracle = Oracle(
        loss=spec.loss,
        data=data_m,
        sample=spec.sampler,
        batch_size=spec.batch_size,
        server_data=server_data,
        axis_name=spec.axis_name,
    )

    def one_round(carry, t):
        state, acc = carry
        state, info = method.round(state, oracle, jax.random.fold_in(run_key, t))
        return state, _info_accumulate(acc, info)

    info_shapes = jax.eval_shape(lambda s: method.round(s, oracle, run_key)[1], state)
    acc0 = _info_zeros(info_shapes)
    every = spec.log_every
    num_blocks, rest = divmod(spec.num_steps, every)

    def block(carry, b):
        metrics = _observe(spec, method, carry[0], carry[1], data_m, x_star, metric_data_m)
        if every == 1:
            return one_round(carry, b), metrics
        ts = b * every + jnp.arange(every, dtype=jnp.int32)
        carry, _ = lax.scan(lambda c, t: (one_round(c, t), None), carry, ts)
        return carry, metrics

    carry, metrics = lax.scan(block, (state, acc0), jnp.arange(num_blocks, dtype=jnp.int32))
    points = [metrics]
    if rest:  # log_every does not divide the number of rounds: log round num_blocks·every too
        points.append(
            _stacked(_observe(spec, method, carry[0], carry[1], data_m, x_star, metric_data_m))
        )
        ts = num_blocks * every + jnp.arange(rest, dtype=jnp.int32)
        carry, _ = lax.scan(lambda c, t: (one_round(c, t), None), carry, ts)
    points.append(
        _stacked(_observe(spec, method, carry[0], carry[1], data_m, x_star, metric_data_m))
    )
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a, axis=0), *points)


def _stacked(metrics):
    return jax.tree_util.tree_map(lambda a: a[None], metrics)


def _sweep(spec: _Spec, fn: Callable, state_axis: int | None) -> Callable:
    """vmaps ``fn(state, run_key, hp)`` over seeds (run keys) and hyperparameters."""
    if spec.has_seeds:
        fn = jax.vmap(fn, in_axes=(state_axis, 0, None))
    if spec.hp_names is not None:
        fn = jax.vmap(fn, in_axes=(state_axis, None, 0))
    return fn


def _init_one(spec: _Spec, params0, run_key, hp):
    return reseed(spec.make_method(hp).init(params0), run_key)


def _map_workers(spec: _Spec, fn: Callable, in_axes: tuple[int | None, ...]) -> Callable:
    return workers(
        fn,
        spec.num_workers,
        backend=spec.backend,
        mesh=spec.mesh,
        axis_name=spec.axis_name,
        in_axes=in_axes,
    )


def _program(data, server_data, params0, key, hp_values, seeds, x_star, metric_data, spec: _Spec):
    if spec.has_seeds:
        run_keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(seeds)
    else:
        run_keys = key
    # Every worker holds its own copy of the parameters and state (as on a mesh). The initial
    # state is built by a separate mapped stage with stacked outputs, so the scan's carry is
    # batched over workers (and sweeps) from the start.
    stacked = jax.tree_util.tree_map(
        lambda p: jnp.broadcast_to(p, (spec.num_workers, *p.shape)), params0
    )

    def init_worker(params_m, run_keys, hp_values):
        fn = lambda p, rk, hp: _init_one(spec, p, rk, hp)
        return _sweep(spec, fn, None)(params_m, run_keys, hp_values)

    def run_worker(data_m, state_m, server_data, run_keys, hp_values, x_star, metric_data_m):
        fn = lambda s, rk, hp: _run_one(spec, data_m, server_data, s, rk, hp, x_star, metric_data_m)
        return _sweep(spec, fn, 0)(state_m, run_keys, hp_values)

    state0 = _map_workers(spec, init_worker, (0, None, None))(stacked, run_keys, hp_values)
    mapped = _map_workers(spec, run_worker, (0, 0, None, None, None, None, 0))
    return mapped(data, state0, server_data, run_keys, hp_values, x_star, metric_data)


_jitted_program = jax.jit(_program, static_argnames=("spec",))


def _ledger_sizes(spec: _Spec, params0: PyTree, hp_values: Any) -> list[tuple[tuple, tuple]]:
    """The static message sizes of every ledger in the state (abstract evaluation only)."""

    def init_state(params, hp_values):
        hp0 = None if hp_values is None else {k: v[0] for k, v in hp_values.items()}
        m = spec.num_workers
        init_one = lambda _: spec.make_method(hp0).init(params)
        return jax.vmap(init_one, axis_name=spec.axis_name, axis_size=m)(jnp.arange(m))

    state = jax.eval_shape(init_state, params0, hp_values)
    return [
        (tuple(int(s) for s in led.up_sizes), tuple(int(s) for s in led.down_sizes))
        for led in find_ledgers(state)
    ]


# ---------------------------------------------------------------------------------------------
# Validation.


def _validate_mesh(mesh: Any, backend: str, axis_name: Any, num_workers: int) -> Mesh | None:
    if backend == "vmap":
        if mesh is not None:
            raise ValueError('mesh is only used with backend="shard_map"; got backend="vmap"')
        return None
    if mesh is None:
        return make_worker_mesh(num_workers, axis_name=axis_name)
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if axis_name not in mesh.shape:
        raise ValueError(
            f"mesh has axes {tuple(mesh.shape)} but no axis named axis_name={axis_name!r}"
        )
    if mesh.shape[axis_name] != num_workers or mesh.size != num_workers:
        raise ValueError(
            f"the mesh must hold exactly one worker per device: mesh axis {axis_name!r} has "
            f"{mesh.shape[axis_name]} devices (mesh size {mesh.size}) but the problem has "
            f"num_workers={num_workers}; more workers than devices is not supported by "
            "backend='shard_map' (use backend='vmap')"
        )
    return mesh


def _is_method(method: Any) -> bool:
    if isinstance(method, optax.GradientTransformation):
        return True
    return all(callable(getattr(method, n, None)) for n in ("init", "round", "params"))


def _validate_hyperparams(hyperparams: Any, method: Any) -> dict[str, jax.Array] | None:
    if hyperparams is None:
        if not _is_method(method):
            if callable(method):
                raise TypeError(
                    "method is a callable hp -> method; pass hyperparams={...} (a dict of 1-D "
                    "arrays), or pass the method itself"
                )
            raise TypeError(
                "method must be an optax.GradientTransformation or a round-based method "
                f"(init/round/params), got {type(method).__name__}"
            )
        return None
    if _is_method(method) or not callable(method):
        raise TypeError(
            "with hyperparams, method must be a callable hp -> method "
            "(e.g. lambda hp: optax.chain(jaxdist.dgd(), optax.sgd(hp['lr'])))"
        )
    if not isinstance(hyperparams, Mapping) or not hyperparams:
        raise ValueError("hyperparams must be a non-empty dict of 1-D arrays of equal length")
    out = {}
    lengths = {}
    for name, value in hyperparams.items():
        if not isinstance(name, str):
            raise TypeError(f"hyperparameter names must be strings, got {name!r}")
        check_number(f"hyperparams[{name!r}]", value)
        arr = jnp.asarray(value)
        if arr.ndim != 1:
            raise ValueError(
                f"hyperparams[{name!r}] must be a 1-D array (one value per run), got shape "
                f"{arr.shape}"
            )
        if arr.shape[0] < 1:
            raise ValueError(f"hyperparams[{name!r}] is empty; it needs at least one value")
        out[name] = arr
        lengths[name] = arr.shape[0]
    if len(set(lengths.values())) > 1:
        raise ValueError(f"hyperparams arrays must have equal lengths, got {lengths}")
    return out


def _validate_seeds(seeds: Any) -> jax.Array | None:
    if seeds is None:
        return None
    arr = np.asarray(seeds)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"seeds must be an integer array, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] < 1:
        raise ValueError(f"seeds must be a non-empty 1-D integer array, got shape {arr.shape}")
    if arr.min() < 0 or arr.max() > np.iinfo(np.uint32).max:
        raise ValueError("seeds must lie in [0, 2**32 - 1]")
    return jnp.asarray(arr.astype(np.uint32))


def _validate_data(data: PyTree, num_workers: int, what: str = "problem.data") -> None:
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError(f"{what} has no arrays")
    for leaf in leaves:
        shape = np.shape(leaf)
        if not shape or shape[0] != num_workers:
            raise ValueError(
                f"every leaf of {what} needs a leading worker axis of size "
                f"num_workers={num_workers}; got a leaf of shape {shape}"
            )


def _validate_params0(params0: PyTree, problem: Any, data: PyTree) -> PyTree:
    params0 = jax.tree_util.tree_map(jnp.asarray, params0)
    ref = getattr(problem, "init_params", None)
    if ref is not None:
        check_tree_like("params0", params0, ref, "the problem's parameters")
    data_0 = jax.tree_util.tree_map(lambda a: a[0], data)
    try:
        out = jax.eval_shape(problem.loss, params0, data_0)
    except Exception as e:
        raise ValueError(
            f"problem.loss(params0, data_m) fails for params0 of shapes "
            f"{jax.tree_util.tree_map(np.shape, params0)}: {type(e).__name__}: {e}"
        ) from e
    if np.shape(out) != ():
        raise ValueError(f"problem.loss must return a scalar, got shape {np.shape(out)}")
    return params0


# ---------------------------------------------------------------------------------------------
# The public entry point.


def run(
    method: Any,
    problem: Any,
    num_steps: int,
    key: jax.Array | int,
    *,
    hyperparams: Mapping[str, Any] | None = None,
    seeds: Any = None,
    backend: str = "vmap",
    mesh: Mesh | None = None,
    axis_name: Any = "workers",
    batch_size: int | None = None,
    log_every: int = 1,
    params0: PyTree = None,
    network: Any = None,
    divergence_factor: float = 1e6,
    metrics: Mapping[str, tuple[Callable, PyTree]] | None = None,
) -> Trace:
    r"""Runs a distributed method on a problem as one compiled program and returns its trace.

    ``method`` is a per-step optax transformation (hosted by
    :class:`~jaxdist.methods.PerStep`: a round is one gradient, one ``update``, one
    ``apply_updates``) or a round-based method (``init``, ``round(state, oracle, key)``,
    ``params``). The whole run is one ``jax.jit`` of a ``lax.scan`` over rounds. The ``M =
    problem.num_workers`` workers are mapped with ``jax.vmap(axis_name=axis_name)``
    (``backend="vmap"``) or with ``jax.shard_map`` over a mesh with one worker per device
    (``backend="shard_map"``); both run the same per-worker code and give the same trace.

    At every logged round the runner records, with collectives over the workers, the series of
    :class:`~jaxdist.experiments.Trace` at the method's model (``params(state)``, averaged
    over workers if they differ; a run whose workers end with different models warns with
    :class:`DisagreementWarning`), exact cumulative bits up and down from the ledgers (int64 on
    the host: message counts × static message sizes), communication rounds, every entry of
    the method's ``info``, and, with ``network``, modelled communication time.

    **Randomness** follows one key path (:mod:`jaxdist.methods._base`): run ``s`` of a seed
    sweep uses the run key ``r = fold_in(key, seeds[s])`` (without seeds, ``r = key``); round
    ``t`` gets ``fold_in(r, t)`` (the oracle draws this worker's minibatch from
    ``worker_key(fold_in(r, t))``); per-step methods in the state are re-seeded once from
    ``r`` (:func:`jaxdist.methods.reseed`).

    **Sweeps.** With ``hyperparams={"lr": jnp.array([...]), ...}`` (1-D arrays of equal length
    ``H``), ``method`` is a callable ``hp -> method`` receiving a dict of scalars; the ``H``
    runs are a ``vmap`` inside the same compiled program, as are the ``S`` seeds.

    **Divergence is data.** Non-finite values (the Top-1 counterexample overflows float32) are
    recorded as inf/NaN, and growth of the suboptimality (``f_gap``, or ``grad_norm_sq`` without
    ``f_star``) beyond ``divergence_factor`` times its initial value is flagged in
    :attr:`Trace.diverged`; the run never raises for them.

    **Compilation.** The program is a ``jax.jit`` whose static argument is the run's
    configuration (the method value, ``problem.loss``, the sampler, the number of rounds,
    ``log_every``, backend, mesh, axis name, batch size, the hyperparameter names): JAX's own
    cache reuses it for another ``key``, other ``seeds`` or ``hyperparams`` values and other
    data of the same shapes. Equal methods give the same program; a freshly built
    transformation (``dcgd(c)`` called again) is a new value and compiles anew.

    Args:
      method: an ``optax.GradientTransformation`` written per worker (e.g.
        ``optax.chain(jaxdist.diana(rand_k(10)), optax.sgd(0.1))``), a round-based method,
        or, with ``hyperparams``, a callable ``hp -> method``.
      problem: an object with ``num_workers``, ``data`` (pytree, leading worker axis),
        ``loss(params, data_m)``, ``init_params``, and optionally ``x_star``, ``f_star``,
        ``sample_fn(key, data_m, batch_size)`` (minibatches; without it
        :func:`jaxdist.problems.sample_minibatch` samples along axis 1 of ``data``) and
        ``server_data`` (the server's own sample, for methods that use :math:`f_1`; default
        worker 0's data).
      num_steps: number of rounds (>= 1).
      key: a ``jax.random.key`` (raw uint32 keys and Python ints are accepted).
      hyperparams: optional dict name → 1-D array of the swept values.
      seeds: optional 1-D integer array of seeds in ``[0, 2**32)``.
      backend: ``"vmap"`` or ``"shard_map"``.
      mesh: for ``"shard_map"``, a ``jax.sharding.Mesh`` whose axis ``axis_name`` has exactly
        ``num_workers`` devices (default: the first ``num_workers`` devices).
      axis_name: the workers' axis name, the one the method's collectives use.
      batch_size: per-worker minibatch size of the oracle's stochastic calls (``None``: full
        local gradients). The logged metrics always use the full local data.
      log_every: record every ``log_every``-th round (and always the last).
      params0: initial parameters (default ``problem.init_params``).
      network: optional :class:`jaxdist.comm.NetworkModel`; adds the series ``time``.
      divergence_factor: growth of the suboptimality that counts as divergence (> 1).
      metrics: optional extra series, ``{name: (fn, data)}``: at every logged round, the mean
        over the workers of ``fn(x̄, data_m)`` (a scalar), where ``data`` is a pytree with a
        leading worker axis of size M, like ``problem.data``, and ``data_m`` is this worker's
        share. E.g. test accuracy with the test set split over the workers (each evaluates
        1/M of it); ``(fn, problem.data)`` evaluates on the training data.

    Returns:
      A :class:`~jaxdist.experiments.Trace` with series of shape ``[*sweep, num_logged]``
      where ``sweep`` is ``(H, S)``, ``(H,)``, ``(S,)`` or ``()``.

    Raises:
      ValueError: ``num_steps < 1``; hyperparameter arrays that are not 1-D or have different
        lengths; an unknown ``backend``; a mesh that does not have one device per worker;
        data without a leading worker axis; ``batch_size`` larger than the local data;
        ``params0`` that does not match the problem.
      TypeError: a ``method`` of the wrong kind, non-integer seeds or counts, a bad key.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxdist.experiments import run
      >>> from jaxdist.methods import dgd
      >>> from jaxdist.problems import quadratic
      >>> problem = quadratic(4, 10, L=1.0, mu=0.1, key=0)
      >>> trace = run(optax.chain(dgd(), optax.sgd(1.0)), problem, 100, jax.random.key(0),
      ...             log_every=50)
      >>> trace.bits_up.tolist()  # 10 float32 per round: 320 bits
      [0, 16000, 32000]
      >>> bool(trace.f_gap[-1] < 1e-3 * trace.f_gap[0]), trace.grad_evals.tolist()
      (True, [0, 50, 100])
      >>> sweep = run(lambda hp: optax.chain(dgd(), optax.sgd(hp["lr"])), problem, 100,
      ...             jax.random.key(0), hyperparams={"lr": jnp.array([0.1, 1.0])},
      ...             seeds=jnp.arange(3), log_every=30)
      >>> sweep.f_gap.shape, sweep.step.tolist()
      ((2, 3, 5), [0, 30, 60, 90, 100])
    """
    num_steps = check_int("num_steps", num_steps)
    log_every = check_int("log_every", log_every)
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got backend={backend!r}")
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size)
    divergence_factor = float(
        check_number(
            "divergence_factor", divergence_factor, low=1.0, low_open=True, allow_traced=False
        )
    )
    num_workers = check_int("problem.num_workers", getattr(problem, "num_workers", None))
    mesh = _validate_mesh(mesh, backend, axis_name, num_workers)
    hp_values = _validate_hyperparams(hyperparams, method)
    seeds_arr = _validate_seeds(seeds)
    key = as_key(key)

    data = problem.data
    _validate_data(data, num_workers)
    data = jax.tree_util.tree_map(jnp.asarray, data)
    if params0 is None:
        params0 = getattr(problem, "init_params", None)
        if params0 is None:
            raise ValueError("the problem has no init_params; pass params0=...")
    params0 = _validate_params0(params0, problem, data)
    x_star = getattr(problem, "x_star", None)
    if x_star is not None:
        if jax.tree_util.tree_structure(x_star) != jax.tree_util.tree_structure(params0):
            raise ValueError("problem.x_star must have the structure of the parameters")
        # ||x - x*||^2 in the parameters' dtype (x* is rounded to it).
        x_star = jax.tree_util.tree_map(lambda s, p: jnp.asarray(s, p.dtype), x_star, params0)
    f_star = getattr(problem, "f_star", None)
    sampler = _sampler(problem, data, batch_size)
    metrics, metric_data = _validate_metrics(metrics, num_workers, params0)

    probe = method if hp_values is None else method({k: v[0] for k, v in hp_values.items()})
    needs_server = bool(getattr(as_round(probe), "needs_server", False))
    _check_bounds(method, hp_values, problem)
    server_data = None
    if needs_server:
        server_data = getattr(problem, "server_data", None)
        if server_data is None:
            server_data = jax.tree_util.tree_map(lambda a: a[0], data)
        server_data = jax.tree_util.tree_map(jnp.asarray, server_data)

    spec = _Spec(
        method=method,
        loss=problem.loss,
        sampler=sampler,
        num_workers=num_workers,
        num_steps=num_steps,
        log_every=log_every,
        backend=backend,
        mesh=mesh,
        axis_name=axis_name,
        batch_size=batch_size,
        hp_names=None if hp_values is None else tuple(hp_values),
        has_seeds=seeds_arr is not None,
        needs_server=needs_server,
        metric_fns=tuple((name, fn) for name, (fn, _) in metrics.items()),
    )
    sizes = _ledger_sizes(spec, params0, hp_values)
    out = _jitted_program(
        data, server_data, params0, key, hp_values, seeds_arr, x_star, metric_data, spec=spec
    )
    out = jax.device_get(out)
    trace = _make_trace(
        out,
        sizes,
        spec,
        f_star=f_star,
        hp_values=hp_values,
        seeds=seeds_arr,
        has_x_star=x_star is not None,
        divergence_factor=divergence_factor,
        network=network,
    )
    disagree = ~trace.agreed & ~trace.diverged  # a diverged run is reported as diverged
    if np.any(disagree):
        worst = float(np.max(np.asarray(trace.consensus_sq)[disagree][..., -1]))
        warnings.warn(
            f"the workers' models differ (final consensus distance (1/M)Σ‖x_m − x̄‖² up to "
            f"{worst:.3g}): the method does not keep the workers in agreement (e.g. a plain "
            "optax optimizer with no jaxdist method, or optax.masked leaving leaves "
            "un-averaged). The metrics are taken at the average model x̄.",
            DisagreementWarning,
            stacklevel=2,
        )
    unsolved = trace.series.get("inner_unsolved")
    if unsolved is not None and np.any(np.asarray(unsolved)[..., -1] > 0):
        worst = int(np.max(np.asarray(unsolved)[..., -1]))
        warnings.warn(
            f"{worst} subproblem solve(s) ended above their tolerance (the solver's budget "
            "max_steps was spent, or the inner problem diverged); trace['inner_unsolved'] "
            "counts them per round: raise Solver(max_steps=...) or check the method's "
            "smoothness constants",
            SolverWarning,
            stacklevel=2,
        )
    return trace


def _validate_metrics(metrics: Any, num_workers: int, params0: PyTree) -> tuple[dict, dict]:
    """``{name: (fn, data)}`` → ({name: (fn, data)}, {name: data as arrays}), checked."""
    if metrics is None:
        return {}, {}
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a dict name -> (fn, data), got {type(metrics).__name__}")
    out, data = {}, {}
    for name, entry in metrics.items():
        if not isinstance(name, str) or name in CORE_SERIES:
            raise ValueError(
                f"metrics: {name!r} must be a string that is not a built-in series "
                f"({', '.join(CORE_SERIES)})"
            )
        if not (isinstance(entry, tuple) and len(entry) == 2 and callable(entry[0])):
            raise TypeError(f"metrics[{name!r}] must be a pair (fn, data) with fn(params, data_m)")
        fn, d = entry
        _validate_data(d, num_workers, what=f"the data of metrics[{name!r}]")
        d = jax.tree_util.tree_map(jnp.asarray, d)
        d_0 = jax.tree_util.tree_map(lambda a: a[0], d)
        shape = jax.eval_shape(fn, params0, d_0).shape
        if shape != ():
            raise ValueError(f"metrics[{name!r}]: fn(params, data_m) must be a scalar, got {shape}")
        out[name] = (fn, d)
        data[name] = d
    return out, data


def _problem_value(problem: Any, name: str) -> float | None:
    """The problem's known value of a constant (exact, or a measured lower bound), or None."""
    info = getattr(problem, "info", None) or {}
    value = info.get(name) if hasattr(info, "get") else None
    if value is None:
        if name == "delta" and not getattr(problem, "delta_exact", True):
            return None  # an upper bound: comparing it would warn for nothing
        value = getattr(problem, name, None)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _show(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={np.asarray(v).item():.6g}" for k, v in point.items())


def _check_bounds(method: Any, hp_values: dict[str, Any] | None, problem: Any) -> None:
    """Warn when the problem exceeds a bound declared in ``RoundMethod.bounds``."""
    n = 1 if hp_values is None else len(next(iter(hp_values.values())))
    for i in range(n):
        point = None if hp_values is None else {k: v[i] for k, v in hp_values.items()}
        built = method if point is None else method(point)
        bounds = getattr(as_round(built), "bounds", None) or ()
        for name, assumed in dict(bounds).items():
            try:
                assumed = float(assumed)
            except (TypeError, ValueError, jax.errors.ConcretizationTypeError):
                continue  # a traced bound cannot be compared
            actual = _problem_value(problem, name)
            if actual is not None and actual > assumed * (1.0 + 1e-9):
                where = "" if point is None else f" (hyperparameters {_show(point)})"
                warnings.warn(
                    f"the method assumes {name} <= {assumed:.6g}{where}, but the problem's "
                    f"{name} is {actual:.6g}: its convergence guarantee does not apply (pass "
                    f"{name} >= {actual:.6g})",
                    AssumptionWarning,
                    stacklevel=3,
                )
                return


def _sampler(problem: Any, data: PyTree, batch_size: int | None) -> Callable | None:
    if batch_size is None:
        return None
    from jaxdist.problems import sample_minibatch

    if hasattr(problem, "sample_fn"):
        sampler = problem.sample_fn
        if sampler is None:
            raise ValueError(
                f"batch_size={batch_size} needs minibatches, but the problem has no samples "
                "(problem.sample_fn is None); use batch_size=None for full local gradients"
            )
        return sampler
    leaves = jax.tree_util.tree_leaves(data)
    sizes = {np.shape(leaf)[1] if np.ndim(leaf) > 1 else None for leaf in leaves}
    if None in sizes or len(sizes) != 1:
        raise ValueError(
            "batch_size needs problem.data leaves of shape [num_workers, n, ...] with one "
            f"common n (samples per worker); got shapes {[np.shape(x) for x in leaves]}"
        )
    n = sizes.pop()
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} exceeds the {n} samples each worker holds")
    return sample_minibatch


# ---------------------------------------------------------------------------------------------
# Host side: exact bits and the trace.


def _make_trace(
    out, sizes, spec: _Spec, *, f_star, hp_values, seeds, has_x_star, divergence_factor, network
) -> Trace:
    first = lambda v: np.asarray(v)[0]  # every worker holds the same metric
    loss = first(out["loss"])
    shape = loss.shape  # [*sweep, L]
    m = spec.num_workers
    up_bits = np.zeros((m, *shape), np.int64)
    down_bits = np.zeros((m, *shape), np.int64)
    rounds = np.zeros((m, *shape), np.int64)
    for (up, down, rnd), (up_sizes, down_sizes) in zip(out["ledgers"], sizes, strict=True):
        # up: [M, *sweep, L, K_up] int32 counts.
        up_bits = sum_exact(np.stack([up_bits, exact_bits(up, up_sizes)]), axis=0)
        down_bits = sum_exact(np.stack([down_bits, exact_bits(down, down_sizes)]), axis=0)
        # Transformations chained in one step communicate in the same round (as in
        # jaxdist.comm.total_traffic): rounds is the largest count among the ledgers.
        rounds = np.maximum(rounds, np.asarray(rnd).astype(np.int64))
    f_gap = np.full(shape, np.nan) if f_star is None else loss.astype(np.float64) - float(f_star)
    dist = first(out["dist_sq"])
    if not has_x_star:
        dist = np.full(shape, np.nan, dist.dtype)
    series = {
        "loss": loss,
        "f_gap": f_gap,
        "grad_norm_sq": first(out["grad_norm_sq"]),
        "dist_sq": dist,
        "consensus_sq": first(out["consensus_sq"]),
        "bits_up": up_bits.max(axis=0),
        "bits_down": down_bits.max(axis=0),
        "bits_up_total": sum_exact(up_bits, axis=0),
        "bits_down_total": sum_exact(down_bits, axis=0),
        "rounds": rounds.max(axis=0),
    }
    assert tuple(series) == CORE_SERIES
    for name, value in out["metrics"].items():
        series[name] = first(value)
    for name, value in out["info"].items():
        if name in series:
            raise ValueError(f"the method's info reports {name!r}, which is a reserved series")
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.integer):
            series[name] = value.astype(np.int64).max(axis=0)
        else:
            series[name] = value.mean(axis=0)
    step = np.arange(0, spec.num_steps + 1, spec.log_every, dtype=np.int64)
    if step[-1] != spec.num_steps:
        step = np.append(step, np.int64(spec.num_steps))
    finite = np.all(first(out["finite"]), axis=-1)
    target = f_gap if f_star is not None else np.asarray(series["grad_norm_sq"], np.float64)
    with np.errstate(invalid="ignore"):
        start = target[..., :1]
        grew = np.any((start > 0) & (target > divergence_factor * start), axis=-1)
    meta: dict[str, Any] = {"divergence_factor": divergence_factor}
    trace = Trace(
        step=step,
        series=series,
        diverged=~finite | grew,
        hyperparams={} if hp_values is None else {k: np.asarray(v) for k, v in hp_values.items()},
        seeds=None if seeds is None else np.asarray(seeds).astype(np.int64),
        num_workers=spec.num_workers,
        num_steps=spec.num_steps,
        backend=spec.backend,
        meta=meta,
    )
    if network is not None:
        series["time"] = trace.modelled_time(network)
        meta["network"] = dataclasses.asdict(network)
    return trace
