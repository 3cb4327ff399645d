"""Distributed Nesterov accelerated gradient descent with constant momentum: ``nesterov``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdist._validate import check_number
from jaxdist.comm._axis import AxisName, worker_mean
from jaxdist.comm._ledger import Ledger
from jaxdist.methods._base import (
    check_extra,
    check_grads,
    make_ledger,
    one_step_counts,
    tree_zeros,
    zero_count,
)
from jaxdist.theory._gd import nesterov_momentum, nesterov_stepsize

__all__ = ["NesterovState", "nesterov"]


class NesterovState(NamedTuple):
    """State of :func:`nesterov` (it draws nothing, so it holds no key).

    Attributes:
      momentum: :math:`m^k = y^k - x^k = \\beta (x^k - x^{k-1})`, replicated (the same on every
        worker; zeros at ``init``). The main sequence is ``x^k = params - momentum``.
      count: number of updates so far (int32, the same on every worker).
      ledger: exact message counts (:class:`~jaxdist.comm.Ledger`).
    """

    momentum: Any
    count: jax.Array
    ledger: Ledger


def _scale(s: Any, tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: (jnp.asarray(s, x.dtype) * x).astype(x.dtype), tree)


def nesterov(
    learning_rate: Any = None,
    momentum: Any = None,
    *,
    L: Any = None,
    mu: Any = None,
    axis_name: AxisName = "workers",
) -> optax.GradientTransformationExtraArgs:
    """Distributed Nesterov accelerated gradient descent (AGD) with constant momentum.

    One dense round per step, as :func:`dgd`: every worker sends its ``d`` floats and receives
    the ``d``-float mean (uplink ``d·b`` and downlink ``d·b`` bits per worker per step). Then
    Nesterov's constant-momentum update (THEORY.md §2.1 and §2.10):

    .. math::

       g^k = \\frac{1}{M} \\sum_{m=1}^{M} \\nabla f_m(y^k), \\qquad
       x^{k+1} = y^k - \\gamma g^k, \\qquad
       y^{k+1} = x^{k+1} + \\beta (x^{k+1} - x^k), \\qquad y^0 = x^0.

    **Form.** The parameters this transformation returns updates for are the points
    :math:`y^k` where the gradient is evaluated, so ``update(grads, state, params)`` takes the
    gradient at ``params = y^k`` (exactly what :func:`jaxdist.run` / :class:`PerStep` and a
    hand-written loop evaluate). The state holds the replicated momentum
    :math:`m^k = y^k - x^k = \\beta (x^k - x^{k-1})` (:math:`m^0 = 0`), and

    .. math::

       m^{k+1} = \\beta (m^k - \\gamma g^k), \\qquad
       y^{k+1} - y^k = m^{k+1} - \\gamma g^k,

    which is the rule above rewritten (the update needs no ``params``). The main sequence is
    recovered as :math:`x^k = y^k - m^k` (``params - state.momentum``). It is a complete
    optimizer (its updates include the step size): use it alone, not chained with
    ``optax.sgd``.

    Theory (THEORY.md §2.1 [Nesterov 2004, Thm 2.2.3] and §2.10 [V-der+MC]), full local
    gradients, f L-smooth and μ-strongly convex, κ = L/μ: with
    :math:`\\gamma = 1/L` (:func:`jaxdist.theory.nesterov_stepsize`) and
    :math:`\\beta = (\\sqrt\\kappa - 1)/(\\sqrt\\kappa + 1)`
    (:func:`jaxdist.theory.nesterov_momentum`),

    .. math::

       f(x^k) - f^\\star \\le (1 - 1/\\sqrt\\kappa)^k
       \\big(f(x^0) - f^\\star + \\tfrac{\\mu}{2}\\|x^0 - x^\\star\\|^2\\big),

    rate :math:`1 - 1/\\sqrt\\kappa` (:func:`jaxdist.theory.nesterov_rate`), i.e.
    :math:`O(\\sqrt\\kappa \\log 1/\\varepsilon)` communication rounds against GD's
    :math:`O(\\kappa \\log 1/\\varepsilon)`; §2.10 measures rounds ∝ κ^0.527.

    Args:
      learning_rate: the step size γ > 0 (a float, or an array traced in a ``vmap`` sweep, not
        range-checked then). ``None``: the theory value 1/L (needs ``L``).
      momentum: the constant momentum β in [0, 1) (β = 0 is :func:`dgd` with ``sgd(γ)``; traced
        values are not range-checked). ``None``: the theory value
        (√κ − 1)/(√κ + 1) (needs ``L`` and ``mu``).
      L: smoothness constant of f, used only for the ``None`` defaults.
      mu: strong convexity constant of f, used only for the ``None`` default of ``momentum``.
      axis_name: the worker axis.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update(grads, state, params=None)``
      takes this worker's gradient at the current parameters :math:`y^k` and returns the
      update :math:`y^{k+1} - y^k`, identical on every worker; the state is a
      :class:`NesterovState`.

    Raises:
      TypeError: a non-number hyperparameter; a missing ``L``/``mu`` for a ``None`` default.
      ValueError: ``learning_rate <= 0``, ``momentum`` outside [0, 1), bad ``L``/``mu``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxdist import comm
      >>> from jaxdist.methods._nesterov import nesterov
      >>> opt = nesterov(0.5, 0.5)
      >>> params = jnp.zeros((2, 2))          # 2 workers, replicated parameters
      >>> grads = jnp.array([[1.0, 2.0], [3.0, 4.0]])
      >>> state = comm.simulate(opt.init, 2)(params)
      >>> upd, state = comm.simulate(opt.update, 2)(grads, state, params)
      >>> upd[0].tolist(), state.momentum[0].tolist()  # -(1 + β)γ g, -βγ g
      ([-1.5, -2.25], [-0.5, -0.75])

    References:
      Nesterov, `Introductory Lectures on Convex Optimization
      <https://doi.org/10.1007/978-1-4419-8853-9>`_, 2004, §2.2 (Thm 2.2.3);
      d'Aspremont, Scieur, Taylor, `Acceleration Methods <https://arxiv.org/abs/2101.09545>`_,
      2021.
    """
    if learning_rate is None:
        if L is None:
            raise TypeError("nesterov: learning_rate=None takes the theory value 1/L; pass L=")
        learning_rate = nesterov_stepsize(L)
    if momentum is None:
        if L is None or mu is None:
            raise TypeError(
                "nesterov: momentum=None takes the theory value (sqrt(L/mu) - 1)/(sqrt(L/mu) + 1); "
                "pass L= and mu="
            )
        momentum = nesterov_momentum(L, mu)
    learning_rate = check_number("learning_rate", learning_rate, low=0.0, low_open=True)
    momentum = check_number("momentum", momentum, low=0.0, high=1.0, high_open=True)

    def init_fn(params):
        return NesterovState(tree_zeros(params), zero_count(), make_ledger(params, None, None))

    def update_fn(updates, state, params=None, **extra):
        check_extra(extra)
        if params is None:  # the momentum buffer has the parameters' structure and shapes
            check_grads("nesterov", updates, state.momentum, what="momentum buffer")
        else:
            check_grads("nesterov", updates, params)
        g = worker_mean(updates, axis_name)
        step = _scale(learning_rate, g)  # γ g^k
        m = _scale(
            momentum,
            jax.tree_util.tree_map(lambda a, b: (a - b).astype(a.dtype), state.momentum, step),
        )
        upd = jax.tree_util.tree_map(lambda a, b: (a - b).astype(a.dtype), m, step)
        ledger = one_step_counts(state.ledger, full=1)
        return upd, NesterovState(m, optax.safe_increment(state.count), ledger)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
