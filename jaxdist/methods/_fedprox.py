r"""FedProx (THEORY.md §2.8, §2.10): inexact proximal local steps, then averaging.

A round-based method (:class:`jaxdist.methods.RoundMethod`) written for one worker on the
worker axis. Each participant solves its proximal subproblem with the shared
:class:`jaxdist.methods.Solver`; the participants are drawn as in
:func:`jaxdist.methods.local_gd` (the first S entries of a permutation of ``fold_in(k,
COIN)``, the same on every worker).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxdist._validate import check_bool, check_int, check_number
from jaxdist.comm._axis import AxisName
from jaxdist.methods._base import make_ledger, tree_axpy, tree_dtype, tree_norm, tree_sub
from jaxdist.methods._local import (
    _check_positive,
    _participants,
    participant_mean,
    participation,
)
from jaxdist.methods._round import Oracle, RoundMethod
from jaxdist.methods._solver import Solver, rounding_atol

__all__ = ["fedprox"]

PyTree = Any

DEFAULT_SOLVER = Solver(max_steps=500)
"""FedProx's default subproblem solver: 500 gradient evaluations, ``rtol=1e-10``."""


def fedprox(
    mu: Any,
    *,
    local_smoothness: Any,
    inexactness: Any = 0.0,
    solver: Solver = DEFAULT_SOLVER,
    convex: bool = True,
    num_participants: int | None = None,
    server_learning_rate: Any = 1.0,
    axis_name: AxisName = "workers",
) -> RoundMethod:
    r"""FedProx: each participant solves a proximal local problem γ-inexactly, the server averages.

    In round ``t`` from the server model :math:`w^t`, each participant :math:`m \in S_t` (all
    M workers, or S drawn from the round's shared key) computes :math:`w_m` with

    .. math::

       h_m(w) = f_m(w) + \frac{\mu}{2}\|w - w^t\|^2, \qquad
       \|\nabla h_m(w_m)\| \le \gamma\, \|\nabla f_m(w^t)\|, \\
       w^{t+1} = w^t + \eta_s\Big(\frac{1}{|S_t|}\sum_{m \in S_t} w_m - w^t\Big).

    The subproblem is solved by ``solver`` (Nesterov's accelerated gradient,
    :class:`jaxdist.methods.Solver`) from :math:`z_0 = w^t` with :math:`L_h =` ``local_smoothness``
    :math:`+ \mu` and :math:`\mu_h = \mu` (``convex=True``: every :math:`f_m` convex) or
    :math:`\mu_h = 0` (``convex=False``: :math:`f_m` may be nonconvex, e.g. weakly convex with
    :math:`h_m` still convex; an overestimated :math:`\mu_h` can spoil the momentum). Since
    :math:`\nabla h_m(w^t) = \nabla f_m(w^t)`, γ-inexactness (THEORY.md §2.10) is the solver's
    relative tolerance ``rtol = γ`` (plus the solver's ``atol``, 0 by default), checked at the
    returned point; γ = 0 means "to the solver's own tolerance" (``solver.rtol``,
    ``solver.atol``), but never below the rounding floor
    :math:`2\varepsilon(L_h\|w^t\| + \|\nabla f_m(w^t)\|)` of the dtype (so the default
    ``rtol=1e-10`` means "to rounding" in float32). The gradients are full local gradients.
    Idle workers' solves are computed and masked out under the simulation (they report 0
    steps).

    **Theory** (THEORY.md §2.8, §2.10). On quadratics :math:`f_m = \tfrac12 w^\top A_m w -
    b_m^\top w` with exact solves, full participation and :math:`\eta_s = 1`, the round map is
    :math:`w^+ = w - \frac1M\sum_m P_m(w - w_m^\star)` with :math:`P_m = (A_m + \mu I)^{-1}A_m`,
    so FedProx converges to :math:`w_{fp} = (\sum_m P_m)^{-1}\sum_m P_m w_m^\star`
    (:func:`jaxdist.theory.fedprox_fixed_point`): **biased** (:math:`w_{fp} \ne x^\star` on
    heterogeneous data, the bias decreasing in μ and vanishing only as :math:`\mu \to \infty`,
    where it becomes GD with step :math:`1/\mu`). Under B-local dissimilarity the paper's
    Cor. 7 takes :math:`\mu \approx 6LB^2` for a decrease :math:`\rho \approx 1/(24LB^2)` of
    :math:`f` per round [constants unverified]. One solve costs
    :math:`O(\sqrt{(L_m+\mu)/\mu}\,\log 1/\gamma)` gradient evaluations.

    **Communication** per participant and round: :math:`w^t` down and :math:`w_m` up (one full
    message each); idle workers nothing. Every ledger counts the round. The method declares
    ``bounds={"L_max": local_smoothness}``: :func:`jaxdist.run` warns when the problem's
    :math:`L_{\max}` is larger (the solver's step :math:`1/L_h` would be too long).

    Args:
      mu: proximal weight μ > 0.
      local_smoothness: an upper bound :math:`L_f > 0` on the smoothness of every
        :math:`f_m` (e.g. ``problem.L_max``).
      inexactness: γ in [0, 1): the relative accuracy of each solve (0: the solver's
        tolerance).
      solver: the :class:`~jaxdist.methods.Solver` (budget ``max_steps`` and tolerances).
      convex: whether every :math:`f_m` is convex (then :math:`\mu_h = \mu`, else 0).
      num_participants: S workers per round (``1 <= S <= M``, checked at trace time),
        ``None`` for all.
      server_learning_rate: server step size :math:`\eta_s > 0`.
      axis_name: the worker axis.

    Returns:
      A :class:`~jaxdist.methods.RoundMethod` with state ``{"x": w^t, "ledger": Ledger}`` and
      ``params`` the server model. ``info`` holds, for this worker's solve of the round (0
      for an idle worker): ``grad_evals`` and ``inner_steps`` (gradient evaluations, int32),
      ``inner_unsolved`` (1 if its solve ended above its tolerance, int32); the runner sums
      them over rounds and warns (:class:`jaxdist.experiments.SolverWarning`) when a solve
      ended unsolved.

    Raises:
      ValueError: ``mu <= 0``, ``local_smoothness <= 0``, ``inexactness`` outside [0, 1),
        ``server_learning_rate <= 0``, ``num_participants < 1`` or ``> M`` (at trace time).
      TypeError: a ``solver`` that is not a :class:`~jaxdist.methods.Solver`, a non-bool
        ``convex``, a non-integer ``num_participants``.

    References:
      Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, `Federated optimization in heterogeneous
      networks <https://arxiv.org/abs/1812.06127>`_, MLSys 2020.
    """
    mu = _check_positive("mu", mu)
    local_smoothness = _check_positive("local_smoothness", local_smoothness)
    gamma = check_number("inexactness", inexactness, low=0.0, high=1.0, high_open=True)
    server_learning_rate = _check_positive("server_learning_rate", server_learning_rate)
    convex = check_bool("convex", convex)
    if not isinstance(solver, Solver):
        raise TypeError(f"solver must be a jaxdist.methods.Solver, got {type(solver).__name__}")
    if num_participants is not None:
        num_participants = check_int("num_participants", num_participants, low=1)

    def init(params: PyTree) -> dict[str, Any]:
        _participants(num_participants, axis_name, "fedprox")
        return {"x": params, "ledger": make_ledger(params, None, None)}

    def round_fn(state: dict[str, Any], oracle: Oracle, key: jax.Array):
        w = state["x"]
        S, mine = participation(key, num_participants, axis_name, "fedprox")

        def grad_h(z):
            g = oracle.grad(z)
            return tree_axpy(mu, tree_sub(z, w), g)

        rtol = _rtol(gamma, solver)
        L_h = local_smoothness + mu
        # ∇h_m(z) = ∇f_m(z) + μ(z − w): its rounding error is about ε·(L_h‖w‖ + ‖∇f_m(w)‖)
        # (the solver's first gradient at w is ∇f_m(w)), so no tolerance is asked below it.
        g_w = oracle.grad(w)
        atol = rounding_atol(
            solver.atol, tree_dtype("fedprox", w), L_h * tree_norm(w) + tree_norm(g_w)
        )
        z, info = solver(
            grad_h, w, L=L_h, mu=mu if convex else 0.0, rtol=rtol, atol=atol, grad0=g_w
        )
        z = jax.tree_util.tree_map(lambda a, b: jnp.where(mine, a, b), z, w)
        avg = participant_mean(tree_sub(z, w), mine, S, axis_name)
        w_new = tree_axpy(server_learning_rate, avg, w)
        count = mine.astype(jnp.int32)
        steps = jnp.where(mine, info.steps, 0).astype(jnp.int32)
        unsolved = (mine & jnp.logical_not(info.converged)).astype(jnp.int32)
        ledger = state["ledger"].record(up={"full": count}, down={"full": count}, rounds=1)
        return {"x": w_new, "ledger": ledger}, {
            "grad_evals": steps,
            "inner_steps": steps,
            "inner_unsolved": unsolved,
        }

    return RoundMethod(
        init,
        round_fn,
        lambda s: s["x"],
        bounds={"L_max": local_smoothness},
    )


def _rtol(gamma: Any, solver: Solver) -> Any:
    """The solve's relative tolerance: γ, or the solver's own where γ = 0 (concrete)."""
    if isinstance(gamma, jax.core.Tracer):
        return jnp.where(gamma > 0, gamma, solver.rtol)
    return solver.rtol if float(gamma) == 0.0 else gamma
