"""Wrappers that make optax's generic wrappers safe on the worker axis.

optax's wrappers decide per call, and on the worker axis a call is one worker's: a decision that
depends on one worker's gradient (``optax.apply_if_finite``) or that runs the inner update and
throws it away (``optax.MultiSteps``) breaks a distributed method. These wrappers make the
decision **uniform over the worker axis** (:func:`jaxdist.comm.uniform_cond`): every worker
takes the same branch, so the collectives inside the taken branch are entered by all workers or
by none, and what the ledgers count is what actually ran.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdist._validate import check_int
from jaxdist.comm._axis import AxisName, uniform_cond, worker_max
from jaxdist.methods._base import PyTree, tree_zeros, worker_zeros, zero_count

__all__ = ["ApplyIfFiniteState", "AccumulateState", "apply_if_finite", "accumulate"]


def _all_finite(tree: PyTree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.ones((), bool)


class ApplyIfFiniteState(NamedTuple):
    """State of :func:`apply_if_finite`.

    Attributes:
      notfinite_count: consecutive steps skipped because some worker's gradient was not
        finite (the same on every worker).
      last_finite: whether the last step was applied.
      total_notfinite: steps skipped in total.
      inner_state: the wrapped transformation's state.
    """

    notfinite_count: jax.Array
    last_finite: jax.Array
    total_notfinite: jax.Array
    inner_state: Any


def apply_if_finite(
    inner: optax.GradientTransformation,
    max_consecutive_errors: int,
    *,
    axis_name: AxisName = "workers",
) -> optax.GradientTransformationExtraArgs:
    """Skips a step on **every** worker when **any** worker's gradient is not finite.

    ``optax.apply_if_finite`` around a distributed method decides per worker: one worker's NaN
    makes that worker alone skip, so the replicas disagree, and on a device mesh the skipping
    worker misses the collective of the others (the program aborts with an all-reduce
    rendezvous timeout). Here the decision is one all-reduced bit: ``bad = max_m
    [∇f_m not finite]``. If ``bad``, no worker calls ``inner.update`` (no communication, the
    inner state and ledgers are unchanged) and the update is zero; otherwise ``inner`` runs as
    usual. After ``max_consecutive_errors`` skipped steps in a row the update is applied anyway
    (as in optax), so a persistent NaN is not hidden forever.

    Args:
      inner: the transformation to guard (e.g. ``optax.chain(diana(c), optax.sgd(lr))``).
      max_consecutive_errors: how many consecutive non-finite steps are skipped (>= 0).
      axis_name: the worker axis.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state :class:`ApplyIfFiniteState`.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from jaxdist import comm, dgd
      >>> from jaxdist.methods import apply_if_finite
      >>> opt = apply_if_finite(optax.chain(dgd(), optax.sgd(1.0)), 3)
      >>> x, state = comm.replicate(jnp.zeros(2), 4, opt.init)
      >>> g = jnp.ones((4, 2)).at[2, 0].set(jnp.nan)   # worker 2 has a NaN
      >>> u, state = comm.simulate(opt.update, 4)(g, state, x)
      >>> u.tolist() == [[0.0, 0.0]] * 4, state.total_notfinite.tolist()
      (True, [1, 1, 1, 1])
    """
    max_consecutive_errors = check_int("max_consecutive_errors", max_consecutive_errors, low=0)

    def init_fn(params):
        return ApplyIfFiniteState(
            zero_count(), jnp.ones((), bool), zero_count(), inner.init(params)
        )

    def update_fn(updates, state, params=None, **extra):
        local_bad = jnp.logical_not(_all_finite(updates)).astype(jnp.int32)
        bad = worker_max(local_bad, axis_name) > 0
        give_up = state.notfinite_count >= max_consecutive_errors
        skip = jnp.logical_and(bad, jnp.logical_not(give_up))

        def apply(_):
            return optax.with_extra_args_support(inner).update(
                updates, state.inner_state, params, **extra
            )

        def skip_fn(_):
            return tree_zeros(updates), state.inner_state

        new_updates, inner_state = uniform_cond(skip, skip_fn, apply, None, axis_name=axis_name)
        notfinite = jnp.where(bad, state.notfinite_count + 1, 0).astype(jnp.int32)
        return new_updates, ApplyIfFiniteState(
            notfinite,
            jnp.logical_not(bad),
            (state.total_notfinite + bad.astype(jnp.int32)).astype(jnp.int32),
            inner_state,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class AccumulateState(NamedTuple):
    """State of :func:`accumulate`.

    Attributes:
      mini_step: micro-steps accumulated since the last communication (uniform).
      acc_grads: this worker's sum of the gradients of those micro-steps (per worker).
      inner_state: the wrapped transformation's state.
    """

    mini_step: jax.Array
    acc_grads: PyTree
    inner_state: Any


def accumulate(
    inner: optax.GradientTransformation,
    every_k: int,
    *,
    axis_name: AxisName = "workers",
) -> optax.GradientTransformationExtraArgs:
    """Accumulates ``every_k`` local gradients, then runs ``inner`` (and communicates) once.

    The distributed replacement of ``optax.MultiSteps``: optax computes the inner update at
    every micro-step and discards it, so around a jaxdist method the compressor and the
    all-reduce really run ``k`` times per emitted step while the method's ledger (in the
    discarded state) records one: on hardware the bits are wrong by ``k×``. Here micro-steps
    only add this worker's gradient to a local buffer (no communication); on every
    ``every_k``-th call the mean of the buffered gradients goes through ``inner.update``
    inside a branch taken uniformly by all workers (:func:`jaxdist.comm.uniform_cond`: a real
    ``lax.cond`` under ``vmap``), so the compressor and the collectives run once and the ledger
    counts exactly that. Between communications the update is zero.

    Args:
      inner: the transformation to run on the accumulated gradient.
      every_k: micro-steps per communication (>= 1).
      axis_name: the worker axis.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state :class:`AccumulateState`.
    """
    every_k = check_int("every_k", every_k, low=1)

    def init_fn(params):
        return AccumulateState(zero_count(), worker_zeros(params, axis_name), inner.init(params))

    def update_fn(updates, state, params=None, **extra):
        acc = jax.tree_util.tree_map(
            lambda a, g: (a + g.astype(a.dtype)).astype(a.dtype), state.acc_grads, updates
        )
        emit = state.mini_step >= every_k - 1

        def run_inner(_):
            mean = jax.tree_util.tree_map(
                lambda a: (a / jnp.asarray(every_k, a.dtype)).astype(a.dtype), acc
            )
            new_updates, inner_state = optax.with_extra_args_support(inner).update(
                mean, state.inner_state, params, **extra
            )
            return new_updates, inner_state, jax.tree_util.tree_map(jnp.zeros_like, acc)

        def wait(_):
            return tree_zeros(updates), state.inner_state, acc

        new_updates, inner_state, acc = uniform_cond(
            emit, run_inner, wait, None, axis_name=axis_name
        )
        mini = jnp.where(emit, 0, state.mini_step + 1).astype(jnp.int32)
        return new_updates, AccumulateState(mini, acc, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
