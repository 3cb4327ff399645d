"""The compiled runner: :func:`run` turns a whole experiment into one jitted program.

Structure of the program (one ``jax.jit``):

* **workers** are mapped with ``jax.vmap(..., axis_name=axis_name)`` (``backend="vmap"``) or
  ``jax.shard_map`` with one worker per device (``backend="shard_map"``); the method talks to
  the other workers only through collectives on ``axis_name``;
* inside each worker, a **sweep** over hyperparameters and seeds is a ``vmap`` (so the
  collectives of every run in the sweep are batched together);
* each run is a ``lax.scan`` over logged blocks whose body is a ``lax.scan`` of ``log_every``
  steps (a single scan when ``log_every == 1``): only logged points are stored.

One step of one worker: the gradient of ``problem.loss`` at this worker's parameters on its
data (or on a minibatch drawn with a per-worker key), then ``update, state = tx.update(grads,
state, params)``, then ``optax.apply_updates``. The metrics at a logged point are evaluated with
collectives (``f = pmean f_m``, ``∇f = pmean ∇f_m``) on the full local data.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
import threading
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh

from jaxdist.comm import (
    Ledger,
    axis_index,
    find_ledgers,
    make_worker_mesh,
    worker_mean,
    workers,
)
from jaxdist.experiments._trace import Trace, ledger_bits

__all__ = ["run"]

PyTree = Any

_BACKENDS = ("vmap", "shard_map")
_CACHE_SIZE = 16
_INT64_MAX = np.iinfo(np.int64).max


# ---------------------------------------------------------------------------------------------
# Ledgers (communication counters inside a method's state).


def _ledger_counts(ledger: Ledger) -> tuple[jax.Array, jax.Array, jax.Array]:
    return (
        jnp.asarray(ledger.up, jnp.int32),
        jnp.asarray(ledger.down, jnp.int32),
        jnp.asarray(ledger.rounds, jnp.int32),
    )


def _ledger_sizes(ledger: Ledger) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(int(s) for s in ledger.up_sizes), tuple(int(s) for s in ledger.down_sizes)


# ---------------------------------------------------------------------------------------------
# The program for one (method, problem, static options).


@dataclasses.dataclass(frozen=True)
class _Spec:
    num_workers: int
    num_steps: int
    log_every: int
    backend: str
    mesh: Mesh | None
    axis_name: Any
    batch_size: int | None
    hp_names: tuple[str, ...] | None  # None: ``method`` is a transformation (no sweep)
    has_seeds: bool
    has_x_star: bool


def _sq_norm(tree: PyTree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return sum(jnp.sum(jnp.square(leaf)) for leaf in leaves)


def _all_finite(tree: PyTree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    out = jnp.array(True)
    for leaf in leaves:
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            out = out & jnp.all(jnp.isfinite(leaf))
    return out


def _accepts_key(tx: optax.GradientTransformation) -> bool:
    """Whether ``tx.update`` may be given a ``key=`` extra argument."""
    if not isinstance(tx, optax.GradientTransformationExtraArgs):
        return False
    try:
        params = inspect.signature(tx.update).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False
    return any(p.kind is p.VAR_KEYWORD or p.name == "key" for p in params)


def _draw_minibatch(key: jax.Array, data_m: PyTree, batch_size: int) -> PyTree:
    """``batch_size`` samples of this worker's data, uniformly without replacement."""
    n = jax.tree_util.tree_leaves(data_m)[0].shape[0]
    idx = jax.random.choice(key, n, (batch_size,), replace=False)
    return jax.tree_util.tree_map(lambda a: jnp.take(a, idx, axis=0), data_m)


class _Program:
    """The per-worker functions of a run and the jitted whole-run program."""

    def __init__(self, method: Any, loss: Callable, sampler: Callable | None, spec: _Spec):
        self.method = method
        self.loss = loss
        self.sampler = sampler
        self.spec = spec
        self.jitted = jax.jit(self._program)

    # -- one worker, one run --------------------------------------------------------------

    def make_tx(self, hp: Mapping[str, jax.Array] | None) -> optax.GradientTransformation:
        if self.spec.hp_names is None:
            return self.method
        tx = self.method(dict(hp))
        if not isinstance(tx, optax.GradientTransformation):
            raise TypeError(
                "method(hyperparams) must return an optax.GradientTransformation, got "
                f"{type(tx).__name__}"
            )
        return tx

    def init(self, params0: PyTree, hp: Any) -> PyTree:
        tx = self.make_tx(hp)
        return (params0, tx.init(params0))

    def step(self, carry: PyTree, k: jax.Array, data_m: PyTree, run_key: jax.Array, hp: Any):
        tx = self.make_tx(hp)
        params, state = carry
        if self.spec.batch_size is None:
            batch = data_m
        else:
            worker = axis_index(self.spec.axis_name)
            bkey = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(run_key, 1), k), worker)
            if self.sampler is not None:
                batch = self.sampler(bkey, data_m, self.spec.batch_size)
            else:
                batch = _draw_minibatch(bkey, data_m, self.spec.batch_size)
        grads = jax.grad(self.loss)(params, batch)
        if _accepts_key(tx):
            mkey = jax.random.fold_in(jax.random.fold_in(run_key, 0), k)
            updates, state = tx.update(grads, state, params, key=mkey)
        else:
            updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        return (params, state)

    def observe(self, carry: PyTree, data_m: PyTree, x_star: PyTree) -> dict[str, Any]:
        params, state = carry
        axis = self.spec.axis_name
        loss_m, grad_m = jax.value_and_grad(self.loss)(params, data_m)
        f = worker_mean(loss_m, axis)
        grad = worker_mean(grad_m, axis)
        gn = _sq_norm(grad)
        if x_star is None:
            dist = jnp.zeros_like(gn)
        else:
            diff = jax.tree_util.tree_map(lambda p, s: p - s, params, x_star)
            dist = _sq_norm(diff)
        finite = _all_finite(params) & jnp.isfinite(f) & jnp.isfinite(gn) & jnp.isfinite(dist)
        ledgers = tuple(_ledger_counts(ledger) for ledger in find_ledgers(state))
        return {
            "loss": f,
            "grad_norm_sq": gn,
            "dist_sq": dist,
            "finite": finite,
            "ledgers": ledgers,
        }

    def run_from(self, data_m, carry, run_key, hp, x_star):
        """The scan of one run from the carry ``(params, state)`` of one worker."""
        every = self.spec.log_every
        num_blocks = self.spec.num_steps // every

        def block(carry, b):
            metrics = self.observe(carry, data_m, x_star)
            if every == 1:
                carry = self.step(carry, b, data_m, run_key, hp)
            else:

                def inner(c, k):
                    return self.step(c, k, data_m, run_key, hp), None

                ks = b * every + jnp.arange(every, dtype=jnp.int32)
                carry, _ = lax.scan(inner, carry, ks)
            return carry, metrics

        carry, metrics = lax.scan(block, carry, jnp.arange(num_blocks, dtype=jnp.int32))
        last = self.observe(carry, data_m, x_star)
        return jax.tree_util.tree_map(
            lambda a, b: jnp.concatenate([a, b[None]], axis=0), metrics, last
        )

    # -- sweeps and workers ---------------------------------------------------------------

    def sweep(self, fn: Callable, carry_axis: int | None) -> Callable:
        """vmaps ``fn(carry, run_key, hp)`` over seeds (run keys) and hyperparameters."""
        if self.spec.has_seeds:
            fn = jax.vmap(fn, in_axes=(carry_axis, 0, None))
        if self.spec.hp_names is not None:
            fn = jax.vmap(fn, in_axes=(carry_axis, None, 0))
        return fn

    def init_worker(self, params_m, run_keys, hp_values):
        """Initial carries ``[*sweep]`` of one worker (materialised over the sweep axes)."""
        return self.sweep(lambda p, rk, hp: self.init(p, hp), None)(params_m, run_keys, hp_values)

    def run_worker(self, data_m, carry_m, run_keys, hp_values, x_star):
        fn = lambda c, rk, hp: self.run_from(data_m, c, rk, hp, x_star)
        return self.sweep(fn, 0)(carry_m, run_keys, hp_values)

    def map_workers(self, fn: Callable, in_axes: tuple[int | None, ...]) -> Callable:
        s = self.spec
        return workers(
            fn,
            s.num_workers,
            backend=s.backend,
            mesh=s.mesh,
            axis_name=s.axis_name,
            in_axes=in_axes,
        )

    def _program(self, data, params0, key, hp_values, seeds, x_star):
        if self.spec.has_seeds:
            run_keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(seeds)
        else:
            run_keys = key
        # Every worker holds its own copy of the parameters and state (as on a mesh). The
        # initial carry is built by a separate mapped stage with stacked outputs, so the scan's
        # carry is batched over workers (and sweeps) from the start: the scan then computes
        # exactly what a Python loop of the jitted per-worker step computes.
        stacked = jax.tree_util.tree_map(
            lambda p: jnp.broadcast_to(p, (self.spec.num_workers, *p.shape)), params0
        )
        carry0 = self.map_workers(self.init_worker, (0, None, None))(stacked, run_keys, hp_values)
        mapped = self.map_workers(self.run_worker, (0, 0, None, None, None))
        out = mapped(data, carry0, run_keys, hp_values, x_star)
        metrics = {k: v[0] for k, v in out.items() if k != "ledgers"}  # worker 0's copy
        return metrics, out["ledgers"]

    # -- abstract evaluation (static ledger sizes) ----------------------------------------

    def ledger_sizes(self, params0: PyTree, hp_values: Any) -> list[tuple[tuple[int, ...], ...]]:
        """The static message sizes of every ledger in the state (abstract evaluation only)."""

        def init_state(params, hp_values):
            hp0 = None if hp_values is None else {k: v[0] for k, v in hp_values.items()}
            init_one = lambda _: self.init(params, hp0)[1]
            m = self.spec.num_workers
            return jax.vmap(init_one, axis_name=self.spec.axis_name, axis_size=m)(jnp.arange(m))

        state = jax.eval_shape(init_state, params0, hp_values)
        return [_ledger_sizes(ledger) for ledger in find_ledgers(state)]


_cache: collections.OrderedDict[tuple, _Program] = collections.OrderedDict()
_cache_lock = threading.Lock()


def _identity_key(obj: Any) -> tuple:
    """Identity of a callable; bound methods by (instance, function), as each access is new."""
    self_ = getattr(obj, "__self__", None)
    func = getattr(obj, "__func__", None)
    if self_ is not None and func is not None:
        return ("bound", id(self_), id(func))
    return ("obj", id(obj))


def _get_program(method: Any, loss: Callable, sampler: Callable | None, spec: _Spec) -> _Program:
    key = (_identity_key(method), _identity_key(loss), _identity_key(sampler), spec)
    with _cache_lock:
        prog = _cache.get(key)
        if prog is not None:
            _cache.move_to_end(key)
            return prog
        # The program keeps strong references to method/loss/sampler, so the ids in the key
        # cannot be reused by other objects while the entry lives.
        prog = _Program(method, loss, sampler, spec)
        _cache[key] = prog
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        return prog


def clear_cache() -> None:
    """Forgets every compiled run program (they are cached on the method/problem identity)."""
    with _cache_lock:
        _cache.clear()


# ---------------------------------------------------------------------------------------------
# Validation.


def _check_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be a Python int, got {value!r}")
    value = int(value)
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {name}={value}")
    return value


def _problem_attr(problem: Any, name: str, default: Any = None) -> Any:
    value = getattr(problem, name, default)
    return default if value is None else value


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
            f"num_workers={num_workers}"
        )
    return mesh


def _validate_hyperparams(hyperparams: Any, method: Any) -> dict[str, jax.Array] | None:
    if hyperparams is None:
        if not isinstance(method, optax.GradientTransformation):
            if callable(method):
                raise TypeError(
                    "method is a callable hp -> GradientTransformation; pass hyperparams={...} "
                    "(a dict of 1-D arrays), or pass a GradientTransformation"
                )
            raise TypeError(
                f"method must be an optax.GradientTransformation, got {type(method).__name__}"
            )
        return None
    if isinstance(method, optax.GradientTransformation) or not callable(method):
        raise TypeError(
            "with hyperparams, method must be a callable hp -> GradientTransformation "
            "(e.g. lambda hp: optax.chain(jaxdist.dgd(), optax.sgd(hp['lr'])))"
        )
    if not isinstance(hyperparams, Mapping) or not hyperparams:
        raise ValueError("hyperparams must be a non-empty dict of 1-D arrays of equal length")
    out = {}
    lengths = {}
    for name, value in hyperparams.items():
        if not isinstance(name, str):
            raise TypeError(f"hyperparameter names must be strings, got {name!r}")
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


def _validate_key(key: Any) -> jax.Array:
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if not isinstance(key, jax.Array | np.ndarray):
        raise TypeError(f"key must be a jax.random.key (or a raw uint32 key), got {key!r}")
    key = jnp.asarray(key)
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single key, got a key array of shape {key.shape}")
        return key
    if key.dtype != jnp.uint32 or key.ndim != 1:
        raise TypeError(
            f"key must be a jax.random.key or a raw uint32 key, got dtype {key.dtype} and "
            f"shape {key.shape}"
        )
    return jax.random.wrap_key_data(key)


def _validate_data(data: PyTree, num_workers: int, batch_size: int | None) -> None:
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("problem.data has no arrays")
    for leaf in leaves:
        shape = np.shape(leaf)
        if not shape or shape[0] != num_workers:
            raise ValueError(
                f"every leaf of problem.data needs a leading worker axis of size "
                f"num_workers={num_workers}; got a leaf of shape {shape}"
            )
    if batch_size is not None:
        sizes = {np.shape(leaf)[1] if np.ndim(leaf) > 1 else None for leaf in leaves}
        if None in sizes or len(sizes) != 1:
            raise ValueError(
                "batch_size needs problem.data leaves of shape [num_workers, n, ...] with one "
                f"common n (samples per worker); got shapes {[np.shape(x) for x in leaves]}"
            )
        n = sizes.pop()
        if batch_size > n:
            raise ValueError(f"batch_size={batch_size} exceeds the {n} samples each worker holds")


# ---------------------------------------------------------------------------------------------
# The public entry point.


def run(
    method: optax.GradientTransformation | Callable[[dict[str, jax.Array]], Any],
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
) -> Trace:
    r"""Runs a distributed method on a problem as one compiled program and returns its trace.

    The whole run is one ``jax.jit`` of a ``lax.scan`` over steps (nested, so that only every
    ``log_every``-th point is stored). The ``M = problem.num_workers`` workers are mapped with
    ``jax.vmap(axis_name=axis_name)`` (``backend="vmap"``, simulation on one device) or with
    ``jax.shard_map`` over a mesh with one worker per device (``backend="shard_map"``); both
    run the same per-worker code and give the same trace. One step of worker ``m``:

    .. math::

       g_m = \nabla f_m(x_m) \text{ (or a minibatch gradient)},\quad
       (u, s_m) = \mathrm{tx.update}(g_m, s_m, x_m),\quad x_m \leftarrow x_m + u,

    where ``tx`` aggregates over the workers (every worker gets the same ``u``, so the ``x_m``
    agree). At every logged point the runner records, with collectives over the workers,
    :math:`f(x) = \frac1M\sum_m f_m(x)`, :math:`\|\nabla f(x)\|^2`, :math:`\|x - x^\star\|^2`
    and the method's ledger counts, from which the host computes **exact** cumulative bits
    (int64: message counts × static message sizes, never a float accumulation).

    **Sweeps.** With ``hyperparams={"lr": jnp.array([...]), ...}`` (1-D arrays of equal length
    ``H``), ``method`` is a callable ``hp -> GradientTransformation`` receiving a dict of
    scalars; the ``H`` runs are a ``vmap`` inside the same compiled program. ``seeds`` (``S``
    ints) are vmapped too; run ``s`` uses the key ``jax.random.fold_in(key, seeds[s])``, so a
    sweep entry equals the single run with that key. Without ``seeds`` the run uses ``key``.
    Randomness: the method's step ``k`` gets ``fold_in(fold_in(run_key, 0), k)`` as its
    ``key=`` extra argument (the same on every worker; the method folds in the worker index
    where it needs independent draws), and minibatches use
    ``fold_in(fold_in(fold_in(run_key, 1), k), worker)``.

    **Divergence is data.** Non-finite values (the Top-1 counterexample overflows float32) are
    recorded as inf/NaN and flagged in :attr:`Trace.diverged`; the run never raises for them.

    **Compilation cache.** The jitted program is cached on the identity of ``method`` (the
    transformation, or the hyperparameter callable), of ``problem.loss`` (for a bound method:
    its instance and function) and of the sampler, plus the static options (``num_steps``,
    ``log_every``, ``backend``, ``mesh``, ``axis_name``, ``batch_size``, the hyperparameter
    names, whether seeds are swept). A second call with the same objects and array shapes —
    e.g. another ``key``, other ``seeds`` or ``hyperparams`` values, other data of the same
    shape — reuses the compiled executable; a freshly built method (``dcgd(c)`` called again)
    compiles anew. Within one call the step is traced a constant number of times, whatever
    ``num_steps``.

    Args:
      method: an ``optax.GradientTransformation`` written per worker (e.g.
        ``optax.chain(jaxdist.diana(rand_k(10)), optax.sgd(0.1))``), or, with
        ``hyperparams``, a callable ``hp -> GradientTransformation``.
      problem: an object with ``num_workers``, ``data`` (pytree, leading worker axis),
        ``loss(params, data_m)``, ``init_params``, and optionally ``x_star``, ``f_star`` (for
        ``dist_sq`` and ``f_gap``; NaN without them) and ``sample_fn(key, data_m,
        batch_size)`` for minibatches (a :class:`~jaxdist.problems.Problem` with
        ``sample_fn=None`` has no samples; an object without the attribute gets minibatches
        drawn uniformly without replacement along axis 1 of ``data``, so ``loss`` should then
        be a mean over samples).
      num_steps: number of steps (>= 1).
      key: a ``jax.random.key`` (raw uint32 keys and Python ints are accepted).
      hyperparams: optional dict name → 1-D array of the swept values.
      seeds: optional 1-D integer array of seeds in ``[0, 2**32)``.
      backend: ``"vmap"`` or ``"shard_map"``.
      mesh: for ``"shard_map"``, a ``jax.sharding.Mesh`` whose axis ``axis_name`` has exactly
        ``num_workers`` devices (default: the first ``num_workers`` devices).
      axis_name: the workers' axis name, the one the method's collectives use.
      batch_size: per-worker minibatch size for the step's gradient (``None``: full local
        gradients). The logged metrics always use the full local data.
      log_every: record every ``log_every``-th point; must divide ``num_steps``.
      params0: initial parameters (default ``problem.init_params``).

    Returns:
      A :class:`~jaxdist.experiments.Trace` with series of shape ``[*sweep, num_steps //
      log_every + 1]`` where ``sweep`` is ``(H, S)``, ``(H,)``, ``(S,)`` or ``()``.

    Raises:
      ValueError: ``num_steps < 1``; ``log_every`` does not divide ``num_steps``; hyperparameter
        arrays that are not 1-D or have different lengths; an unknown ``backend``; a mesh
        that does not have one device per worker; data without a leading worker axis;
        ``batch_size`` larger than the local data.
      TypeError: a ``method`` of the wrong kind, non-integer seeds or counts, a bad key.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxdist.experiments import run
      >>> from jaxdist.methods import dgd
      >>> from jaxdist.problems import quadratic
      >>> problem = quadratic(4, 10, L=1.0, mu=0.1, key=0)
      >>> trace = run(optax.chain(dgd(), optax.sgd(1.0)), problem, 100, jax.random.key(0),
      ...             log_every=50)
      >>> trace.bits_up.tolist()  # 10 float32 per step: 320 bits
      [0, 16000, 32000]
      >>> bool(trace.f_gap[-1] < 1e-3 * trace.f_gap[0])
      True
      >>> sweep = run(lambda hp: optax.chain(dgd(), optax.sgd(hp["lr"])), problem, 100,
      ...             jax.random.key(0), hyperparams={"lr": jnp.array([0.1, 1.0])},
      ...             seeds=jnp.arange(3), log_every=10)
      >>> sweep.f_gap.shape
      (2, 3, 11)
    """
    num_steps = _check_int("num_steps", num_steps)
    log_every = _check_int("log_every", log_every)
    if num_steps % log_every:
        raise ValueError(
            f"log_every must divide num_steps, got num_steps={num_steps}, log_every={log_every}"
        )
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got backend={backend!r}")
    if batch_size is not None:
        batch_size = _check_int("batch_size", batch_size)
    num_workers = _check_int("problem.num_workers", getattr(problem, "num_workers", None))
    mesh = _validate_mesh(mesh, backend, axis_name, num_workers)
    hp_values = _validate_hyperparams(hyperparams, method)
    seeds_arr = _validate_seeds(seeds)
    key = _validate_key(key)

    data = problem.data
    _validate_data(data, num_workers, batch_size if not hasattr(problem, "sample_fn") else None)
    data = jax.tree_util.tree_map(jnp.asarray, data)
    if params0 is None:
        params0 = problem.init_params
        if params0 is None:
            raise ValueError("the problem has no init_params; pass params0=...")
    params0 = jax.tree_util.tree_map(jnp.asarray, params0)
    x_star = _problem_attr(problem, "x_star")
    if x_star is not None:
        if jax.tree_util.tree_structure(x_star) != jax.tree_util.tree_structure(params0):
            raise ValueError("problem.x_star must have the structure of the parameters")
        # ||x - x*||^2 in the parameters' dtype (x* is rounded to it).
        x_star = jax.tree_util.tree_map(lambda s, p: jnp.asarray(s, p.dtype), x_star, params0)
    f_star = _problem_attr(problem, "f_star")
    sampler = None
    if batch_size is not None and hasattr(problem, "sample_fn"):
        sampler = problem.sample_fn
        if sampler is None:
            raise ValueError(
                f"batch_size={batch_size} needs minibatches, but the problem has no samples "
                "(problem.sample_fn is None); use batch_size=None for full local gradients"
            )

    spec = _Spec(
        num_workers=num_workers,
        num_steps=num_steps,
        log_every=log_every,
        backend=backend,
        mesh=mesh,
        axis_name=axis_name,
        batch_size=batch_size,
        hp_names=None if hp_values is None else tuple(hp_values),
        has_seeds=seeds_arr is not None,
        has_x_star=x_star is not None,
    )
    prog = _get_program(method, problem.loss, sampler, spec)
    sizes = prog.ledger_sizes(params0, hp_values)
    metrics, ledgers = prog.jitted(data, params0, key, hp_values, seeds_arr, x_star)
    metrics, ledgers = jax.device_get((metrics, ledgers))
    return _make_trace(
        metrics, ledgers, sizes, spec, f_star=f_star, hp_values=hp_values, seeds=seeds_arr
    )


def _make_trace(metrics, ledgers, sizes, spec: _Spec, *, f_star, hp_values, seeds) -> Trace:
    loss = np.asarray(metrics["loss"])
    shape = loss.shape  # [*sweep, L]
    m = spec.num_workers
    per_worker_up = np.zeros((m, *shape), np.int64)
    per_worker_down = np.zeros((m, *shape), np.int64)
    rounds = np.zeros((m, *shape), np.int64)
    for (up, down, rnd), (up_sizes, down_sizes) in zip(ledgers, sizes, strict=True):
        # up: [M, *sweep, L, K_up] int32 counts.
        per_worker_up = _add_exact(per_worker_up, ledger_bits(up, up_sizes))
        per_worker_down = _add_exact(per_worker_down, ledger_bits(down, down_sizes))
        # Transformations chained in one step communicate in the same round (as in
        # jaxdist.comm.total_traffic): rounds is the largest count among the ledgers.
        rounds = np.maximum(rounds, np.asarray(rnd).astype(np.int64))
    if f_star is None:
        f_gap = np.full(shape, np.nan)
    else:
        f_gap = loss.astype(np.float64) - float(f_star)
    dist = np.asarray(metrics["dist_sq"])
    if not spec.has_x_star:
        dist = np.full(shape, np.nan, dist.dtype)
    step = np.arange(0, spec.num_steps + 1, spec.log_every, dtype=np.int64)
    return Trace(
        step=step,
        loss=loss,
        f_gap=f_gap,
        grad_norm_sq=np.asarray(metrics["grad_norm_sq"]),
        dist_sq=dist,
        bits_up=per_worker_up.max(axis=0),
        bits_down=per_worker_down.max(axis=0),
        bits_up_total=_sum_exact(per_worker_up),
        bits_down_total=_sum_exact(per_worker_down),
        rounds=rounds.max(axis=0),
        diverged=~np.all(np.asarray(metrics["finite"]), axis=-1),
        hyperparams={} if hp_values is None else {k: np.asarray(v) for k, v in hp_values.items()},
        seeds=None if seeds is None else np.asarray(seeds).astype(np.int64),
        num_workers=spec.num_workers,
        num_steps=spec.num_steps,
        backend=spec.backend,
    )


def _add_exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.size and int(a.max()) + int(b.max()) > _INT64_MAX:
        raise OverflowError("a cumulative bit count does not fit in int64")
    return a + b


def _sum_exact(per_worker: np.ndarray) -> np.ndarray:
    if per_worker.size and int(per_worker.max()) * per_worker.shape[0] > _INT64_MAX:
        raise OverflowError("a total bit count over workers does not fit in int64")
    return per_worker.sum(axis=0, dtype=np.int64)
