"""The worker axis: backends that run per-worker code, worker keys and collectives.

Per-worker code is written for one worker (unbatched shapes) and talks to the other workers
only through the collectives below on a named axis (``"workers"`` by default). The same
function then runs

* simulated on one device: :func:`simulate` = ``jax.vmap(fn, axis_name=..., axis_size=M)``;
* on a device mesh, one device per worker: :func:`on_mesh` = ``jax.shard_map``;

and :func:`workers` switches between the two with one argument. The collective wrappers
(:func:`axis_index`, :func:`worker_sum`, :func:`worker_mean`, ...) add one thing to the
``jax.lax`` primitives: a clear :class:`ValueError` when the axis is not bound. There is no
hidden state: they are exactly the ``jax.lax`` collectives.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdist._validate import check_int

PyTree = Any
AxisName = Hashable

__all__ = [
    "simulate",
    "on_mesh",
    "workers",
    "make_worker_mesh",
    "axis_index",
    "axis_size",
    "worker_key",
    "worker_sum",
    "worker_mean",
    "worker_max",
    "worker_gather",
    "uniform_cond",
    "varying",
    "replicate",
]

BACKENDS = ("vmap", "shard_map")


# ---------------------------------------------------------------------------------------------
# Errors for an unbound axis.


def _unbound_message(axis_name: AxisName) -> str:
    return (
        f"the worker axis {axis_name!r} is not bound: this per-worker code calls a collective "
        f"on axis_name={axis_name!r}. Run it under jaxdist.comm.simulate(fn, num_workers, "
        f"axis_name={axis_name!r}) (jax.vmap with axis_name), jaxdist.comm.on_mesh(fn, ..., "
        f"axis_name={axis_name!r}) (jax.shard_map) or jaxdist.comm.workers(...), or pass the "
        "axis_name that your vmap/shard_map binds."
    )


def _call(axis_name: AxisName, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except NameError as e:
        if "unbound axis name" in str(e).lower():
            raise ValueError(_unbound_message(axis_name)) from e
        raise


# ---------------------------------------------------------------------------------------------
# Collectives.


def axis_index(axis_name: AxisName = "workers") -> jax.Array:
    """This worker's index ``m`` in ``0..M-1`` on the worker axis.

    Args:
      axis_name: the worker axis.

    Returns:
      An int32 scalar.

    Raises:
      ValueError: if ``axis_name`` is not bound (the code is not running under
        :func:`simulate`, :func:`on_mesh` or a ``vmap``/``shard_map`` binding that name).
    """
    return _call(axis_name, lambda: lax.axis_index(axis_name))


def axis_size(axis_name: AxisName = "workers") -> int:
    """The number of workers ``M`` on the axis, as a Python int.

    Args:
      axis_name: the worker axis.

    Returns:
      ``M``.

    Raises:
      ValueError: if ``axis_name`` is not bound.
    """
    return int(_call(axis_name, lambda: lax.axis_size(axis_name)))


def worker_key(
    key: jax.Array,
    *,
    shared: bool = False,
    axis_name: AxisName = "workers",
    index: Any = None,
) -> jax.Array:
    """Worker ``m``'s PRNG key: ``key`` itself if shared, else ``fold_in(key, m)``.

    This is the one worker-key rule of jaxdist. Independent randomness across workers folds in
    the worker index; shared randomness (the same key on every worker) is what makes
    shared-seed Rand-K and Perm-K correlated. ``m`` is this worker's :func:`axis_index`, or
    ``index`` when given (a receiver decoding the message of sender ``index``, or a per-worker
    loop outside any axis).

    Args:
      key: a PRNG key that is the same on every worker.
      shared: return ``key`` unchanged (no collective is needed then).
      axis_name: the worker axis (read only when ``index`` is None).
      index: the worker index ``m`` as data (int or int32 scalar), instead of the axis.

    Returns:
      A key of the same kind as ``key``.
    """
    if shared:
        return key
    if index is None:
        index = axis_index(axis_name)
    return jax.random.fold_in(key, index)


def worker_sum(x: PyTree, axis_name: AxisName = "workers") -> PyTree:
    """Sum over workers of a pytree (``lax.psum``), the same on every worker.

    Args:
      x: this worker's pytree.
      axis_name: the worker axis.

    Returns:
      ``sum_m x_m``, with the structure of ``x``.
    """
    return _call(axis_name, lambda: lax.psum(x, axis_name))


def worker_mean(x: PyTree, axis_name: AxisName = "workers") -> PyTree:
    """Mean over workers of a pytree (``lax.pmean``), the same on every worker.

    Args:
      x: this worker's pytree.
      axis_name: the worker axis.

    Returns:
      ``(1/M) sum_m x_m``, with the structure of ``x``.
    """
    return _call(axis_name, lambda: lax.pmean(x, axis_name))


def worker_max(x: PyTree, axis_name: AxisName = "workers") -> PyTree:
    """Maximum over workers (``lax.pmax``), the same on every worker.

    Under ``vmap`` the result is *unbatched*, so it can drive a real ``lax.cond``.

    Args:
      x: this worker's pytree.
      axis_name: the worker axis.

    Returns:
      ``max_m x_m``, with the structure of ``x``.
    """
    return _call(axis_name, lambda: lax.pmax(x, axis_name))


def worker_gather(x: PyTree, axis_name: AxisName = "workers") -> PyTree:
    """Every worker's value, stacked along a new leading axis of size ``M`` (``all_gather``).

    Args:
      x: this worker's pytree (e.g. a compressed payload).
      axis_name: the worker axis.

    Returns:
      A pytree whose leaves have a leading axis ``m = 0..M-1``.
    """

    def gather(v):
        # Under shard_map's varying-axis checks the stacked result is the same on every worker:
        # type it invariant ("invarying"), as a psum is, so that it can update replicated state.
        manual = getattr(jax.typeof(v), "manual_axis_type", None)
        if manual is not None and axis_name in manual.varying:
            return lax.all_gather(v, axis_name, to="invarying")
        return lax.all_gather(v, axis_name)

    return _call(axis_name, lambda: jax.tree_util.tree_map(gather, x))


def uniform_cond(
    pred: Any,
    true_fn: Callable[..., Any],
    false_fn: Callable[..., Any],
    *operands: Any,
    axis_name: AxisName = "workers",
) -> Any:
    """``lax.cond`` on a predicate that is the same on every worker.

    The predicate is passed through :func:`worker_max` (a scalar all-reduce). That makes it
    axis-invariant, so under ``vmap`` it is not batched and ``lax.cond`` runs only the taken
    branch (collectives included) instead of lowering to ``select`` and running both. The
    branches may use collectives on ``axis_name``; both must be valid for any input.

    Args:
      pred: a boolean scalar, equal on every worker (e.g. a coin from a shared key or the
        step counter).
      true_fn: branch taken when ``pred`` is true.
      false_fn: branch taken otherwise.
      *operands: passed to the branch.
      axis_name: the worker axis.

    Returns:
      The output of the taken branch.
    """
    flag = worker_max(jnp.asarray(pred).astype(jnp.int32), axis_name) > 0
    return lax.cond(flag, true_fn, false_fn, *operands)


def varying(tree: PyTree, axis_name: AxisName = "workers") -> PyTree:
    """Marks per-worker values as varying over the worker axis under ``jax.shard_map``.

    Under ``shard_map`` (with its default ``check_vma=True``) every value has a type that says
    over which mesh axes it may differ. A per-worker quantity created from constants (a shift
    ``h_m = 0``, an error ``e_m = 0``) starts *invariant* and becomes *varying* after one step,
    so a ``lax.scan`` over steps would reject the carry. Methods pass their per-worker state
    through this function at ``init``: leaves already varying over ``axis_name`` are kept,
    others are cast with ``jax.lax.pcast(..., to="varying")``. Outside ``shard_map`` (under
    ``vmap``, or with no axis bound) it returns ``tree`` unchanged.

    Args:
      tree: a pytree of arrays.
      axis_name: the worker axis.

    Returns:
      ``tree`` with every leaf varying over ``axis_name`` where that type exists.
    """
    names = axis_name if isinstance(axis_name, tuple) else (axis_name,)

    def cast(x):
        manual = getattr(jax.typeof(x), "manual_axis_type", None)
        vma = frozenset() if manual is None else manual.varying
        missing = tuple(n for n in names if n not in vma)
        if not missing:
            return x
        try:
            return lax.pcast(x, missing, to="varying")
        # Not under shard_map (ValueError), not one of its manual axes (NameError), or a
        # shard_map with check_vma=False, which has no varying types (AssertionError).
        except (ValueError, NameError, AssertionError):
            return x

    return jax.tree_util.tree_map(cast, tree)


def replicate(
    params: PyTree,
    num_workers: int,
    init: Callable[[PyTree], Any] | None = None,
    *,
    backend: str = "vmap",
    mesh: Mesh | None = None,
    axis_name: AxisName = "workers",
) -> Any:
    """``M`` replicas of ``params`` (a leading worker axis), and their method states.

    The starting point of a hand-written loop: every worker holds its own copy of the model
    and of the method's state, exactly as on a mesh.

    Args:
      params: one copy of the parameters (a pytree of arrays).
      num_workers: ``M``.
      init: optional ``init`` function (``tx.init`` of an optax transformation, or a
        round-based method's ``init``) run per worker under the worker axis.
      backend: ``"vmap"`` or ``"shard_map"``, as in :func:`workers`.
      mesh: for ``"shard_map"``, the mesh.
      axis_name: the worker axis.

    Returns:
      The stacked parameters, or ``(stacked_params, stacked_states)`` when ``init`` is given.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from jaxdist import comm, diana
      >>> from jaxdist.compressors import rand_k
      >>> opt = optax.chain(diana(rand_k(2)), optax.sgd(0.1))
      >>> params, state = comm.replicate({"w": jnp.zeros(5)}, 4, opt.init)
      >>> params["w"].shape, state[0].h_m["w"].shape
      ((4, 5), (4, 5))
    """
    num_workers = _check_num_workers(num_workers)
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("replicate: params has no array leaves")
    stacked = jax.tree_util.tree_map(
        lambda p: jnp.broadcast_to(jnp.asarray(p), (num_workers, *jnp.shape(p))), params
    )
    if init is None:
        return stacked
    states = workers(init, num_workers, backend=backend, mesh=mesh, axis_name=axis_name)(stacked)
    return stacked, states


# ---------------------------------------------------------------------------------------------
# Backends.


def _check_num_workers(num_workers: Any) -> int:
    return check_int("num_workers", num_workers, low=1)


def simulate(
    fn: Callable[..., Any],
    num_workers: int,
    *,
    axis_name: AxisName = "workers",
    in_axes: Any = 0,
    out_axes: Any = 0,
) -> Callable[..., Any]:
    """Simulates ``num_workers`` workers on one device: ``jax.vmap`` with a named axis.

    Args:
      fn: per-worker function (one worker's shapes; collectives on ``axis_name``).
      num_workers: the number of workers ``M``.
      axis_name: the worker axis.
      in_axes: as in ``jax.vmap``: ``0`` for arguments stacked over workers, ``None`` for
        arguments every worker shares.
      out_axes: as in ``jax.vmap``.

    Returns:
      A function of stacked arguments (leading axis ``M``) returning stacked outputs.
    """
    num_workers = _check_num_workers(num_workers)
    return jax.vmap(
        fn, in_axes=in_axes, out_axes=out_axes, axis_name=axis_name, axis_size=num_workers
    )


def make_worker_mesh(num_workers: int, *, axis_name: AxisName = "workers") -> Mesh:
    """A 1-D mesh over the first ``num_workers`` devices, one worker per device.

    Args:
      num_workers: the number of workers ``M``.
      axis_name: the mesh axis name.

    Returns:
      A :class:`jax.sharding.Mesh` with the single axis ``axis_name`` of size ``M``.

    Raises:
      ValueError: if fewer than ``M`` devices are available.
    """
    num_workers = _check_num_workers(num_workers)
    devices = jax.devices()
    if len(devices) < num_workers:
        raise ValueError(
            f"on_mesh runs one worker per device: num_workers={num_workers} but only "
            f"{len(devices)} {devices[0].platform} device(s) are available. Use "
            "backend='vmap' (jaxdist.comm.simulate), fewer workers, or on CPU start JAX with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={num_workers} "
            f"(or jax.config.update('jax_num_cpu_devices', {num_workers}) before first use)."
        )
    return jax.make_mesh(
        (num_workers,),
        (axis_name,),
        axis_types=(jax.sharding.AxisType.Auto,),
        devices=devices[:num_workers],
    )


def _is_none(x: Any) -> bool:
    return x is None


def _normalise_axes(axes: Any, n_args: int, what: str) -> tuple[Any, ...]:
    if axes is None or isinstance(axes, int):
        axes = (axes,) * n_args
    elif isinstance(axes, list):
        axes = tuple(axes)
    if not isinstance(axes, tuple) or len(axes) != n_args:
        raise ValueError(
            f"{what} must be 0, None or a tuple with one entry per positional argument "
            f"({n_args}), got {axes!r}"
        )
    for leaf in jax.tree_util.tree_leaves(axes, is_leaf=_is_none):
        if leaf not in (0, None):
            raise ValueError(f"on_mesh supports only 0 (stacked) or None (shared) in {what}")
    return axes


def on_mesh(
    fn: Callable[..., Any],
    mesh: Mesh | None = None,
    *,
    num_workers: int | None = None,
    axis_name: AxisName = "workers",
    in_axes: Any = 0,
    out_axes: Any = 0,
    check_vma: bool = False,
) -> Callable[..., Any]:
    """Runs per-worker code on a device mesh, one device per worker (``jax.shard_map``).

    The call signature is that of :func:`simulate`: arguments with ``in_axes`` 0 carry a
    leading axis of size ``M`` (sharded as ``P(axis_name)``), arguments with ``None`` are
    replicated (``P()``). Inside, the leading block axis of size 1 is squeezed, so ``fn`` sees
    one worker's shapes, exactly as under ``vmap``. Outputs with ``out_axes`` 0 are stacked
    again; ``None`` returns a replicated output (it must be equal on every worker; this is not
    checked unless ``check_vma=True``).

    The default mesh uses ``AxisType.Auto``, so unsharded inputs are resharded automatically.
    With a mesh of ``Explicit`` axes, place the stacked inputs first, e.g. with
    ``jax.device_put(x, NamedSharding(mesh, P(axis_name)))``.

    Args:
      fn: per-worker function.
      mesh: a mesh with an axis ``axis_name`` of size ``M``; by default a 1-D mesh over the
        first ``M`` devices (:func:`make_worker_mesh`).
      num_workers: ``M``; by default the mesh axis size, or (without a mesh) the leading
        dimension of the first stacked argument.
      axis_name: the worker axis (a mesh axis name).
      in_axes: ``0``, ``None`` or a tuple of them (pytree prefixes allowed), one per argument.
      out_axes: ``0``, ``None`` or a pytree prefix of them.
      check_vma: passed to ``jax.shard_map``; off by default so that per-worker code written
        for ``vmap`` (e.g. ``lax.cond`` with a collective in one branch) runs unchanged.

    Returns:
      A function of stacked arguments returning stacked outputs.

    Raises:
      ValueError: if the mesh axis size differs from ``num_workers``, if there are fewer
        devices than workers, or if a stacked argument's leading axis is not ``M``.
    """
    if num_workers is not None:
        num_workers = _check_num_workers(num_workers)
    for leaf in jax.tree_util.tree_leaves(out_axes, is_leaf=_is_none):
        if leaf not in (0, None):
            raise ValueError(f"on_mesh supports only 0 or None in out_axes, got {out_axes!r}")
    if mesh is not None:
        if axis_name not in mesh.axis_names:
            raise ValueError(
                f"the mesh has axes {mesh.axis_names}, but the worker axis is {axis_name!r}; "
                "pass axis_name= one of the mesh axes or build the mesh with "
                "jaxdist.comm.make_worker_mesh"
            )
        size = int(mesh.shape[axis_name])
        if num_workers is not None and size != num_workers:
            raise ValueError(
                f"the mesh axis {axis_name!r} has size {size} but num_workers={num_workers}; "
                "the mesh must have one device per worker"
            )

    def wrapped(*args):
        axes = _normalise_axes(in_axes, len(args), "in_axes")
        stacked_leaves = []

        def collect(a, sub):
            if a == 0:
                stacked_leaves.extend(jax.tree_util.tree_leaves(sub))

        for ax, arg in zip(axes, args, strict=True):
            jax.tree_util.tree_map(collect, ax, arg, is_leaf=_is_none)
        leading = {int(np.shape(leaf)[0]) if np.ndim(leaf) else -1 for leaf in stacked_leaves}
        m = num_workers
        if mesh is not None:
            m = int(mesh.shape[axis_name])
        if m is None:
            if not leading:
                raise ValueError(
                    "on_mesh cannot infer num_workers: no argument is stacked (in_axes=0); "
                    "pass num_workers= or a mesh"
                )
            m = max(leading)
        bad = leading - {m}
        if bad:
            more = [n for n in bad if n > m]
            hint = (
                f" on_mesh runs exactly one worker per device of the mesh axis {axis_name!r} "
                f"(size {m}); more workers than devices is not supported: simulate them with "
                "backend='vmap' (jaxdist.comm.simulate), or use a mesh with one device per worker."
                if more and mesh is not None
                else ""
            )
            raise ValueError(
                f"every stacked argument (in_axes=0) needs a leading axis of size "
                f"num_workers={m}; got leading sizes {sorted(leading)} (-1 = a scalar).{hint}"
            )
        the_mesh = mesh if mesh is not None else make_worker_mesh(m, axis_name=axis_name)

        def spec_of(ax):
            return P(axis_name) if ax == 0 else P()

        in_specs = tuple(
            jax.tree_util.tree_map(spec_of, ax, is_leaf=_is_none) if ax is not None else P()
            for ax in axes
        )
        out_specs = jax.tree_util.tree_map(spec_of, out_axes, is_leaf=_is_none)
        if out_axes is None:
            out_specs = P()

        def body(*blocks):
            local = tuple(
                jax.tree_util.tree_map(
                    lambda a, sub: jax.tree_util.tree_map(lambda x: x[0], sub) if a == 0 else sub,
                    ax,
                    blk,
                    is_leaf=_is_none,
                )
                if ax is not None
                else blk
                for ax, blk in zip(axes, blocks, strict=True)
            )
            out = fn(*local)
            if out_axes is None:
                return out
            return jax.tree_util.tree_map(
                lambda a, sub: (
                    jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], sub) if a == 0 else sub
                ),
                out_axes,
                out,
                is_leaf=_is_none,
            )

        mapped = jax.shard_map(
            body, mesh=the_mesh, in_specs=in_specs, out_specs=out_specs, check_vma=check_vma
        )
        # Place the inputs as the specs say (meshes with Explicit axes, the default of
        # jax.make_mesh, do not reshard unplaced arrays by themselves).
        placed = tuple(
            jax.tree_util.tree_map(
                lambda spec, a: jax.device_put(a, NamedSharding(the_mesh, spec)),
                spec_tree,
                arg,
                is_leaf=lambda x: isinstance(x, P),
            )
            for spec_tree, arg in zip(in_specs, args, strict=True)
        )
        return mapped(*placed)

    return wrapped


def workers(
    fn: Callable[..., Any],
    num_workers: int,
    *,
    backend: str = "vmap",
    mesh: Mesh | None = None,
    axis_name: AxisName = "workers",
    in_axes: Any = 0,
    out_axes: Any = 0,
) -> Callable[..., Any]:
    """Runs per-worker code over ``num_workers`` workers; ``backend`` picks how.

    ``backend="vmap"`` simulates the workers on one device (:func:`simulate`);
    ``backend="shard_map"`` puts one worker on each device of ``mesh`` (:func:`on_mesh`). The
    call signature and the numbers are the same, up to floating-point rounding in two places:
    the order of sums over workers (a ``psum`` under ``vmap`` is a reduce over the stacked
    axis, which XLA sums in a tree order; XLA's CPU all-reduce adds the workers in order),
    and fused multiply-adds, which XLA forms differently in differently fused programs
    (off with ``XLA_FLAGS=--xla_cpu_max_isa=AVX`` on CPU; see
    :func:`jaxdist.testing.xla_contracts_fma`). Everything else is bitwise equal.

    Args:
      fn: per-worker function.
      num_workers: the number of workers ``M``.
      backend: ``"vmap"`` or ``"shard_map"``.
      mesh: for ``"shard_map"``: the mesh (default: the first ``M`` devices).
      axis_name: the worker axis.
      in_axes: ``0`` (stacked) / ``None`` (shared) per argument.
      out_axes: ``0`` / ``None``.

    Returns:
      A function of stacked arguments returning stacked outputs.

    Raises:
      ValueError: for an unknown backend, or a mesh that does not match ``num_workers``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxdist import comm
      >>> f = comm.workers(lambda x: comm.worker_mean(x), 4)
      >>> f(jnp.arange(4.0)).tolist()
      [1.5, 1.5, 1.5, 1.5]
    """
    num_workers = _check_num_workers(num_workers)
    if backend == "vmap":
        if mesh is not None:
            raise ValueError("mesh= is only used with backend='shard_map'")
        return simulate(fn, num_workers, axis_name=axis_name, in_axes=in_axes, out_axes=out_axes)
    if backend == "shard_map":
        if mesh is None:
            mesh = make_worker_mesh(num_workers, axis_name=axis_name)
        return on_mesh(
            fn,
            mesh,
            num_workers=num_workers,
            axis_name=axis_name,
            in_axes=in_axes,
            out_axes=out_axes,
        )
    raise ValueError(f"backend must be one of {BACKENDS}, got backend={backend!r}")
