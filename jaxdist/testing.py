"""Test helpers: a Python-loop worker backend, backend comparisons, compilation counting.

The loop backend
----------------
:func:`loop` runs a per-worker function once for each worker ``m = 0..M-1``, each call in its
own Python thread, **eagerly** (no ``vmap``, no ``shard_map``, no ``jit`` around it), on that
worker's unbatched slice of the inputs. A single per-worker call cannot compute a ``psum``
by itself (it needs the other workers' values in the middle of its execution), so the
collectives of :mod:`jaxdist.comm` (``worker_sum/mean/max/gather``, ``axis_index``,
``uniform_cond``) are emulated by real message passing: each worker deposits its value in a
shared slot, waits at a barrier for the others, and reduces all ``M`` values in worker order.
This is an honest per-worker loop with hand-written collectives: it shares no batching code
with ``jax.vmap``. Limitations: the function must not be jitted (it exchanges concrete
values), and operators that call ``jax.lax`` collectives directly (Perm-K, PowerSGD over
workers) are not emulated (use :func:`jaxdist.comm.simulate` vs :func:`jaxdist.comm.on_mesh`
for them).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdist.comm import _axis
from jaxdist.comm._axis import AxisName

__all__ = [
    "loop",
    "run_backends",
    "assert_trees_equal",
    "assert_trees_close",
    "assert_workers_agree",
    "count_compilations",
    "xla_contracts_fma",
]

PyTree = Any


class _SharedAxis:
    def __init__(self, size: int, timeout: float):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=timeout)
        self.slots: list[Any] = [None] * size


class _WorkerView:
    """One worker's view of the emulated axis (installed in a thread-local)."""

    def __init__(self, shared: _SharedAxis, index: int, axis_name: AxisName):
        self.shared = shared
        self.index = index
        self.size = shared.size
        self.axis_name = axis_name

    def reduce(self, x: PyTree, op: str) -> PyTree:
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x)):
            raise TypeError(
                "jaxdist.testing.loop runs the per-worker function eagerly and exchanges "
                "concrete values between workers; do not jit/vmap the function passed to it "
                f"(a collective on {self.axis_name!r} received a tracer)"
            )
        shared = self.shared
        shared.slots[self.index] = x
        shared.barrier.wait()
        values = list(shared.slots)
        shared.barrier.wait()  # nobody overwrites a slot before everyone has read them all

        def stacked(*xs):
            return jnp.stack([jnp.asarray(v) for v in xs])

        if op == "gather":
            return jax.tree_util.tree_map(stacked, *values)
        if op == "sum":
            return jax.tree_util.tree_map(lambda *xs: jnp.sum(stacked(*xs), axis=0), *values)
        if op == "mean":
            return jax.tree_util.tree_map(
                lambda *xs: jnp.sum(stacked(*xs), axis=0) / self.size, *values
            )
        if op == "max":
            return jax.tree_util.tree_map(lambda *xs: jnp.max(stacked(*xs), axis=0), *values)
        raise ValueError(f"unknown collective {op!r}")


def _split(args: tuple[Any, ...], in_axes: Any, m: int) -> tuple[Any, ...]:
    if in_axes is None or isinstance(in_axes, int):
        in_axes = (in_axes,) * len(args)
    out = []
    for ax, arg in zip(in_axes, args, strict=True):
        if ax is None:
            out.append(arg)
            continue

        def take(a, sub):
            if a is None:
                return sub
            if a != 0:
                raise ValueError("loop supports in_axes 0 or None")
            return jax.tree_util.tree_map(lambda x: x[m], sub)

        out.append(jax.tree_util.tree_map(take, ax, arg, is_leaf=lambda x: x is None))
    return tuple(out)


def loop(
    fn: Callable[..., Any],
    num_workers: int,
    *,
    axis_name: AxisName = "workers",
    in_axes: Any = 0,
    timeout: float = 300.0,
) -> Callable[..., Any]:
    """Runs ``fn`` for each worker in a Python thread, with emulated collectives.

    Same calling convention as :func:`jaxdist.comm.simulate` (stacked inputs with
    ``in_axes`` 0, shared inputs with ``None``; outputs stacked along a new leading axis).

    Args:
      fn: the per-worker function (not jitted).
      num_workers: ``M``.
      axis_name: the worker axis the function's collectives use.
      in_axes: ``0``/``None`` per positional argument (pytree prefixes allowed).
      timeout: seconds a worker waits at a collective before the run is aborted.

    Returns:
      A function of stacked arguments returning stacked outputs.
    """
    num_workers = _axis._check_num_workers(num_workers)

    def run(*args):
        shared = _SharedAxis(num_workers, timeout)

        def worker(m: int):
            previous = getattr(_axis._LOOP, "axes", None)
            _axis._LOOP.axes = dict(previous or {})
            _axis._LOOP.axes[axis_name] = _WorkerView(shared, m, axis_name)
            try:
                return fn(*_split(args, in_axes, m))
            except BaseException:
                shared.barrier.abort()
                raise
            finally:
                _axis._LOOP.axes = previous

        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            futures = [pool.submit(worker, m) for m in range(num_workers)]
            errors = [f.exception() for f in futures]
        real = [
            e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)
        ]
        if real:
            raise real[0]
        if any(e is not None for e in errors):
            raise next(e for e in errors if e is not None)
        outs = [f.result() for f in futures]
        return jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *outs)

    return run


def run_backends(
    fn: Callable[..., Any],
    num_workers: int,
    args: tuple[Any, ...],
    *,
    backends: tuple[str, ...] = ("vmap", "shard_map", "loop"),
    axis_name: AxisName = "workers",
    in_axes: Any = 0,
    jit: bool = True,
) -> dict[str, Any]:
    """Runs the per-worker ``fn`` on each backend and returns ``{backend: output}``.

    ``vmap`` and ``shard_map`` are jitted when ``jit`` is true; ``loop`` never is.

    Args:
      fn: the per-worker function.
      num_workers: ``M``.
      args: the stacked/shared arguments.
      backends: any of ``"vmap"``, ``"shard_map"``, ``"loop"``.
      axis_name: the worker axis.
      in_axes: ``0``/``None`` per argument.
      jit: jit the ``vmap`` and ``shard_map`` versions.

    Returns:
      A dict from backend name to the stacked output.
    """
    results = {}
    for backend in backends:
        if backend == "loop":
            results[backend] = loop(fn, num_workers, axis_name=axis_name, in_axes=in_axes)(*args)
            continue
        g = _axis.workers(fn, num_workers, backend=backend, axis_name=axis_name, in_axes=in_axes)
        results[backend] = (jax.jit(g) if jit else g)(*args)
    return results


def _leaf_data(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def assert_trees_equal(a: PyTree, b: PyTree, *, err_msg: str = "") -> None:
    """Bitwise equality of two pytrees (same structure, shapes, dtypes and bits).

    Args:
      a: a pytree.
      b: a pytree.
      err_msg: prefix of the error message.

    Returns:
      None; raises ``AssertionError`` on the first differing leaf.
    """
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        raise AssertionError(f"{err_msg}: different structures\n{ta}\n{tb}")
    for i, (x, y) in enumerate(zip(la, lb, strict=True)):
        x, y = _leaf_data(x), _leaf_data(y)
        if x.shape != y.shape or x.dtype != y.dtype:
            raise AssertionError(f"{err_msg}: leaf {i}: {x.shape}/{x.dtype} vs {y.shape}/{y.dtype}")
        if x.tobytes() != y.tobytes():
            diff = np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))
            raise AssertionError(f"{err_msg}: leaf {i} differs (max abs difference {diff:.3e})")


def assert_trees_close(
    a: PyTree, b: PyTree, *, bitwise: bool, rtol: float, atol: float, err_msg: str = ""
) -> None:
    """Bitwise equality, or closeness of the floating-point leaves.

    With ``bitwise=False`` integer, boolean and key leaves must still be equal exactly; float
    leaves must satisfy ``|a - b| <= atol + rtol * |b|``.

    Args:
      a: a pytree.
      b: a pytree.
      bitwise: require bitwise equality of every leaf.
      rtol: relative tolerance of float leaves when not bitwise.
      atol: absolute tolerance of float leaves when not bitwise.
      err_msg: prefix of the error message.

    Returns:
      None; raises ``AssertionError`` otherwise.
    """
    if bitwise:
        assert_trees_equal(a, b, err_msg=err_msg)
        return
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        raise AssertionError(f"{err_msg}: different structures\n{ta}\n{tb}")
    for i, (x, y) in enumerate(zip(la, lb, strict=True)):
        x, y = _leaf_data(x), _leaf_data(y)
        if x.shape != y.shape or x.dtype != y.dtype:
            raise AssertionError(f"{err_msg}: leaf {i}: {x.shape}/{x.dtype} vs {y.shape}/{y.dtype}")
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=f"{err_msg}: leaf {i}")
        elif x.tobytes() != y.tobytes():
            raise AssertionError(f"{err_msg}: non-float leaf {i} differs")


def xla_contracts_fma() -> bool:
    """Whether XLA on the default backend fuses ``a * b + c`` into one fused multiply-add.

    Then two programs that fuse the same arithmetic differently (a ``vmap``-ed and a
    ``shard_map``-ed step, or a jitted and an eager one) can round differently in the last
    bit, and cross-backend comparisons need a tolerance. On CPU, starting JAX with
    ``XLA_FLAGS=--xla_cpu_max_isa=AVX`` (no FMA instructions) turns contraction off.

    Returns:
      True if a jitted ``a * b + c`` differs from the separately rounded result.
    """
    return _contracts_fma()


@functools.cache
def _contracts_fma() -> bool:
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(256).astype(np.float32) for _ in range(3))
    fused = np.asarray(jax.jit(lambda a, b, c: a * b + c)(a, b, c))
    return not np.array_equal(fused, a * b + c)


def assert_workers_agree(x: PyTree, *, err_msg: str = "") -> None:
    """Every row along the leading (worker) axis is bitwise identical to row 0.

    Args:
      x: a pytree of stacked per-worker values.
      err_msg: prefix of the error message.

    Returns:
      None; raises ``AssertionError`` otherwise.
    """
    for i, leaf in enumerate(jax.tree_util.tree_leaves(x)):
        arr = _leaf_data(leaf)
        for m in range(1, arr.shape[0]):
            if arr[m].tobytes() != arr[0].tobytes():
                raise AssertionError(f"{err_msg}: leaf {i}: worker {m} differs from worker 0")


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


_COMPILE_LOCK = threading.Lock()


@contextlib.contextmanager
def count_compilations() -> Iterator[list[str]]:
    """Collects the names of the XLA compilations that happen inside the block.

    Uses ``jax.log_compiles``; the yielded list is filled when the block exits.

    Returns:
      A context manager yielding a list of compilation log messages.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxdist.testing import count_compilations
      >>> f = jax.jit(lambda x: x + 1)
      >>> _ = f(jnp.ones(3))
      >>> with count_compilations() as logs:
      ...     _ = f(jnp.zeros(3))
      >>> len(logs)
      0
    """
    handler = _Capture()
    logger = logging.getLogger("jax")
    found: list[str] = []
    with _COMPILE_LOCK:
        logger.addHandler(handler)
        old_level = logger.level
        logger.setLevel(min(old_level or logging.WARNING, logging.WARNING))
        old_propagate = logger.propagate
        logger.propagate = False
        try:
            with jax.log_compiles():
                yield found
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            logger.propagate = old_propagate
    found.extend(
        r.getMessage()
        for r in handler.records
        if re.search(r"Finished .*compilation", r.getMessage())
    )
