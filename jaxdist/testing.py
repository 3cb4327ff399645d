"""Test helpers: backend comparisons, tree assertions, compilation counting.

Per-worker code is checked against NumPy references (a real per-worker loop written from the
papers' update rules) and across backends (``vmap`` vs ``shard_map``); there is no emulated
backend that patches :mod:`jaxdist.comm`, whose collectives are exactly the ``jax.lax`` ones.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from jaxdist.comm import _axis
from jaxdist.comm._axis import AxisName

__all__ = [
    "run_backends",
    "assert_trees_equal",
    "assert_trees_close",
    "assert_workers_agree",
    "count_compilations",
    "xla_contracts_fma",
]

PyTree = Any


def run_backends(
    fn: Callable[..., Any],
    num_workers: int,
    args: tuple[Any, ...],
    *,
    backends: tuple[str, ...] = ("vmap", "shard_map"),
    axis_name: AxisName = "workers",
    in_axes: Any = 0,
    jit: bool = True,
) -> dict[str, Any]:
    """Runs the per-worker ``fn`` on each backend and returns ``{backend: output}``.

    Args:
      fn: the per-worker function.
      num_workers: ``M``.
      args: the stacked/shared arguments.
      backends: any of ``"vmap"``, ``"shard_map"``.
      axis_name: the worker axis.
      in_axes: ``0``/``None`` per argument.
      jit: jit each version.

    Returns:
      A dict from backend name to the stacked output.
    """
    results = {}
    for backend in backends:
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
