"""The round protocol: one shape for every method, per-step or round-based.

A **round-based method** is a value with three functions, written for one worker on the worker
axis (collectives on ``axis_name``)::

    state = method.init(params)                      # this worker's state
    state, info = method.round(state, oracle, key)   # one round of the method
    x = method.params(state)                         # the model the method stands behind

* ``oracle`` (an :class:`Oracle`, built by the runner for this worker) evaluates this worker's
  loss and gradient at any point, on its full local data or on a minibatch drawn from a key,
  and, for methods that need it (``needs_server=True``), the server's local function
  :math:`f_1` (the data of worker 0 unless the problem holds a separate server sample).
* ``key`` is the key of this round, the same on every worker (see the key path in
  :mod:`jaxdist.methods._base`); independent per-worker draws fold in the worker index with
  :func:`jaxdist.comm.worker_key`, shared coins use it as it is.
* ``info`` is a dict of scalars describing the round: ``grad_evals`` (local gradient
  evaluations of this worker) and anything else the method wants to report; the runner turns
  every entry into a series of the trace (integer entries are summed over rounds, float
  entries are logged as they are at the logged rounds). Communication is counted by the
  :class:`~jaxdist.comm.Ledger` in the state (messages up and down, communication rounds).
* ``params(state)`` is the model metrics are taken at: the consensus model (every worker's
  copy) or the server's model.

A **per-step method** (an optax transformation such as ``optax.chain(diana(c), optax.sgd(lr))``)
is hosted by :class:`PerStep`: a round is one gradient, one ``update``, one ``apply_updates``.
:func:`as_round` turns either kind into a round-based method; the runner knows only rounds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import optax

from jaxdist.comm._axis import AxisName, worker_key

__all__ = ["Oracle", "RoundMethod", "PerStep", "as_round"]

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Oracle:
    """One worker's first-order oracle, built by the runner.

    Attributes:
      loss: ``loss(params, data) -> scalar``, the per-worker loss :math:`f_m`.
      data: this worker's data (full local data set).
      sample: ``sample(key, data, batch_size) -> batch`` drawing a minibatch, or ``None``.
      batch_size: the minibatch size of stochastic calls, or ``None`` (every call is a full
        local gradient).
      server_data: the data of the server's local function :math:`f_1` (the same on every
        worker), or ``None`` when the method does not use it.
      axis_name: the worker axis (minibatch keys fold in the worker index).
    """

    loss: Callable[[PyTree, PyTree], jax.Array]
    data: PyTree
    sample: Callable[[jax.Array, PyTree, int], PyTree] | None = None
    batch_size: int | None = None
    server_data: PyTree = None
    axis_name: AxisName = "workers"

    def batch(self, key: jax.Array | None) -> PyTree:
        """This worker's minibatch for ``key`` (full local data without a key or batch size).

        The draw uses :func:`jaxdist.comm.worker_key` ``(key)``: the same ``key`` on every
        worker gives independent minibatches per worker.
        """
        if key is None or self.batch_size is None or self.sample is None:
            return self.data
        return self.sample(worker_key(key, axis_name=self.axis_name), self.data, self.batch_size)

    def value_and_grad(self, params: PyTree, key: jax.Array | None = None):
        """``(f_m(x), ∇f_m(x))`` on the full local data, or on the minibatch of ``key``."""
        return jax.value_and_grad(self.loss)(params, self.batch(key))

    def grad(self, params: PyTree, key: jax.Array | None = None) -> PyTree:
        """``∇f_m(x)`` on the full local data, or on the minibatch of ``key``."""
        return jax.grad(self.loss)(params, self.batch(key))

    def server_value_and_grad(self, params: PyTree):
        """``(f_1(x), ∇f_1(x))``, the server's local function (full server data)."""
        if self.server_data is None:
            raise ValueError(
                "this oracle has no server function f_1: the method must declare "
                "needs_server=True so that the runner provides the server's data"
            )
        return jax.value_and_grad(self.loss)(params, self.server_data)

    def server_grad(self, params: PyTree) -> PyTree:
        """``∇f_1(x)``."""
        return self.server_value_and_grad(params)[1]


class _RoundFields(NamedTuple):
    init: Callable[[PyTree], Any]
    round: Callable[[Any, Oracle, jax.Array], tuple[Any, dict[str, Any]]]
    params: Callable[[Any], PyTree]
    needs_server: bool = False
    bounds: tuple[tuple[str, Any], ...] | None = None


class RoundMethod(_RoundFields):
    r"""A round-based method from its three functions (see the module docstring).

    Attributes:
      init: ``init(params) -> state``.
      round: ``round(state, oracle, key) -> (state, info)``.
      params: ``params(state) -> params``, the model metrics are taken at.
      needs_server: whether ``round`` calls the oracle's server function :math:`f_1`.
      bounds: the upper bounds on problem constants the method's parameters assume, e.g.
        ``{"delta_server": 0.1}`` for a method tuned to a server similarity
        :math:`\|\nabla^2 f_1 - \nabla^2 f\| \le 0.1`; or ``None``. :func:`jaxdist.run`
        compares each entry with the problem's value (``problem.info[name]``, else the
        attribute ``problem.<name>``; an inexact ``problem.delta`` is an upper bound and is not
        compared) and warns (:class:`jaxdist.experiments.AssumptionWarning`) when the problem's
        value is larger, i.e. when the method's guarantee does not apply. Stored as sorted
        ``(name, float)`` pairs (a hashable value; traced entries are kept as they are).
    """

    __slots__ = ()

    def __new__(
        cls,
        init: Callable[[PyTree], Any],
        round: Callable[[Any, Oracle, jax.Array], tuple[Any, dict[str, Any]]],
        params: Callable[[Any], PyTree],
        needs_server: bool = False,
        bounds: Mapping[str, Any] | None = None,
    ) -> RoundMethod:
        if bounds is not None:
            if not isinstance(bounds, Mapping):
                bounds = dict(bounds)
            bounds = tuple(sorted((str(k), _concrete(v)) for k, v in bounds.items()))
        return super().__new__(cls, init, round, params, bool(needs_server), bounds)


def _concrete(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return value


@dataclasses.dataclass(frozen=True)
class PerStep:
    """A per-step optax transformation as a round-based method.

    State ``(x_m, opt_state)``; a round computes this worker's gradient at ``x_m`` (a
    minibatch of the round's key when the run has a batch size), then
    ``updates, opt_state = tx.update(g, opt_state, x_m)`` and ``x_m <- apply_updates(x_m,
    updates)``. ``params(state)`` is ``x_m``; a jaxdist method makes every worker's copy the
    same. Equal transformations give equal (and equally hashed) adapters, so ``jax.jit``
    reuses the compiled run.

    Attributes:
      tx: the transformation (written per worker, e.g. ``optax.chain(dgd(), optax.sgd(lr))``).
    """

    tx: optax.GradientTransformation
    needs_server: ClassVar[bool] = False

    def init(self, params: PyTree) -> tuple[PyTree, Any]:
        return params, self.tx.init(params)

    def round(self, state, oracle: Oracle, key: jax.Array):
        params, opt_state = state
        grads = oracle.grad(params, key)
        updates, opt_state = self.tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), {"grad_evals": 1}

    def params(self, state) -> PyTree:
        return state[0]


def as_round(method: Any) -> Any:
    """``method`` as a round-based method: optax transformations are wrapped in
    :class:`PerStep`; objects with ``init``, ``round`` and ``params`` are returned as they are.

    Raises:
      TypeError: for anything else.
    """
    if isinstance(method, optax.GradientTransformation):
        return PerStep(method)
    if all(callable(getattr(method, name, None)) for name in ("init", "round", "params")):
        return method
    raise TypeError(
        "method must be an optax.GradientTransformation (a per-step method, e.g. "
        "optax.chain(jaxdist.diana(rand_k(10)), optax.sgd(0.1))) or a round-based method with "
        f"init/round/params (jaxdist.methods.RoundMethod), got {type(method).__name__}"
    )
