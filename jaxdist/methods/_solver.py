r"""The shared subproblem solver: accelerated gradient with a fixed budget and a tolerance.

Round-based methods that solve a problem locally (FedProx's proximal step on each worker, the
server's mirror step in Bregman GD, DANE's local problems, the inner problem of accelerated
extragradient sliding and of OLGA) call one component, :class:`Solver`. It minimises a smooth
function :math:`h` from its gradient by Nesterov's accelerated gradient method inside a
``lax.while_loop`` (jittable, vmappable, usable under ``shard_map``), and stops at the first
point :math:`y` with

.. math::

   \|\nabla h(y)\| \le \mathrm{atol} + \mathrm{rtol}\,\|\nabla h(z_0)\|

or after ``max_steps`` gradient evaluations. The result says how many steps it used and whether
it reached the tolerance: a method reports both in its round ``info`` (``inner_steps``,
``inner_unsolved``), and :func:`jaxdist.run` warns when any solve ended above its tolerance
(:class:`jaxdist.experiments.SolverWarning`). A non-finite gradient stops the loop and counts as
unsolved, so a diverging inner problem is never silent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxdist._validate import check_int, check_number
from jaxdist.methods._base import tree_norm

__all__ = ["Solver", "SolveInfo"]

PyTree = Any


class SolveInfo(NamedTuple):
    r"""What a solve did.

    Attributes:
      steps: gradient evaluations of :math:`h` (int32, at least 1: the gradient at :math:`z_0`).
      grad_norm: :math:`\|\nabla h\|` at the returned point.
      converged: whether the returned point meets the tolerance (``False`` after the budget
        or a non-finite gradient).
    """

    steps: jax.Array
    grad_norm: jax.Array
    converged: jax.Array


ROUNDING_FACTOR = 2.0
"""Multiple of ε_mach·(rounding scale) below which an inner tolerance is not asked for."""


def rounding_atol(atol: Any, dtype: Any, scale: Any, factor: float = ROUNDING_FACTOR) -> jax.Array:
    r"""``max(atol, factor·ε·scale)``: an absolute tolerance not below the rounding floor.

    A gradient :math:`\nabla h(z)` assembled from terms of size ``scale`` (e.g.
    :math:`L_h\|z\| + \|\nabla f(z)\|`) carries a rounding error of about ε·scale in the dtype's
    precision, so no solver can certify :math:`\|\nabla h\|` below it; asking for less would
    spend the whole budget and report the solve as unsolved in float32.
    """
    floor = jnp.asarray(factor * float(jnp.finfo(dtype).eps), dtype) * scale
    return jnp.maximum(jnp.asarray(atol, dtype), jnp.asarray(floor, dtype))


@dataclasses.dataclass(frozen=True)
class Solver:
    r"""Nesterov's accelerated gradient for a smooth subproblem, with a budget and a tolerance.

    For :math:`h` that is :math:`L_h`-smooth and :math:`\mu_h`-strongly convex
    (:math:`\mu_h = 0` allowed), from :math:`y_0 = z_0`:

    .. math::

       z_{k+1} = y_k - \tfrac{1}{L_h}\nabla h(y_k), \qquad
       y_{k+1} = z_{k+1} + \beta_k (z_{k+1} - z_k),

    with :math:`\beta_k = (\sqrt{\kappa_h} - 1)/(\sqrt{\kappa_h} + 1)`,
    :math:`\kappa_h = L_h/\mu_h`, when :math:`\mu_h > 0`, and :math:`\beta_k = k/(k+3)` when
    :math:`\mu_h = 0`. It returns the first :math:`y_k` whose gradient meets
    :math:`\|\nabla h(y_k)\| \le \mathrm{atol} + \mathrm{rtol}\,\|\nabla h(z_0)\|` (the tolerance
    is checked where the gradient was evaluated, so the returned point carries the guarantee),
    or the last :math:`y_k` after ``max_steps`` gradient evaluations. The rate is
    :math:`O(\sqrt{\kappa_h}\log 1/\varepsilon)` gradient evaluations (Nesterov 2004, §2.2;
    THEORY.md §2.1).

    Equal solvers are equal and hash equally (a frozen dataclass), so methods built from them
    are cached by ``jax.jit``.

    Attributes:
      max_steps: the budget, gradient evaluations per solve (a Python int >= 1).
      rtol: relative tolerance >= 0 (to the gradient norm at the starting point).
      atol: absolute tolerance >= 0.

    Raises:
      ValueError: ``max_steps < 1`` or a negative or non-finite tolerance.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxdist.methods import Solver
      >>> A, b = jnp.array([[2.0, 0.0], [0.0, 1.0]]), jnp.array([1.0, 1.0])
      >>> solve = Solver(max_steps=200, rtol=1e-6)
      >>> z, info = solve(lambda z: A @ z - b, jnp.zeros(2), L=2.0, mu=1.0)
      >>> bool(info.converged), [round(float(v), 4) for v in z]
      (True, [0.5, 1.0])

    References:
      Nesterov, *Introductory Lectures on Convex Optimization*, 2004, §2.2; Nesterov,
      `Gradient methods for minimizing composite objective function
      <https://doi.org/10.1007/s10107-012-0629-5>`_, 2013; see also
      `arXiv:1405.4980 <https://arxiv.org/abs/1405.4980>`_ (Bubeck, Convex Optimization:
      Algorithms and Complexity, §3.7).
    """

    max_steps: int = 1000
    rtol: float = 1e-10
    atol: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "max_steps", check_int("max_steps", self.max_steps, low=1))
        for name in ("rtol", "atol"):
            value = check_number(name, getattr(self, name), low=0.0)
            object.__setattr__(self, name, float(value))

    def __call__(
        self,
        grad: Callable[[PyTree], PyTree],
        z0: PyTree,
        *,
        L: Any,
        mu: Any = 0.0,
        rtol: Any = None,
        atol: Any = None,
        grad0: PyTree = None,
    ) -> tuple[PyTree, SolveInfo]:
        r"""Minimise :math:`h` from ``grad`` :math:`= \nabla h`, starting at ``z0``.

        Args:
          grad: ``grad(z) -> ∇h(z)``, a pytree like ``z0``; pure and jittable.
          z0: the starting point.
          L: smoothness :math:`L_h > 0` of :math:`h` (a float or a traced scalar).
          mu: strong convexity :math:`\mu_h \ge 0` (an underestimate is safe; an overestimate
            can make the momentum too large).
          rtol: overrides the solver's relative tolerance for this call (may be traced).
          atol: overrides the solver's absolute tolerance for this call (may be traced).
          grad0: :math:`\nabla h(z_0)` when the caller has it already (saves one evaluation;
            it is still counted in ``SolveInfo.steps``).

        Returns:
          ``(z, SolveInfo)``.
        """
        rtol = self.rtol if rtol is None else rtol
        atol = self.atol if atol is None else atol
        leaves = jax.tree_util.tree_leaves(z0)
        dtype = jnp.result_type(*leaves) if leaves else jnp.float32
        L = jnp.asarray(L, dtype)
        mu = jnp.asarray(mu, dtype)
        g0 = grad(z0) if grad0 is None else grad0
        n0 = tree_norm(g0)
        tol = jnp.asarray(atol, dtype) + jnp.asarray(rtol, dtype) * n0
        sq = jnp.sqrt(L / jnp.where(mu > 0, mu, L))
        beta_sc = (sq - 1.0) / (sq + 1.0)

        def cond(carry):
            _, _, _, gnorm, k = carry
            return (k < self.max_steps) & (gnorm > tol)

        def body(carry):
            z_prev, y, g_y, _, k = carry
            z = jax.tree_util.tree_map(lambda a, b: a - b / L, y, g_y)
            kf = k.astype(dtype)
            beta = jnp.where(mu > 0, beta_sc, (kf - 1.0) / (kf + 2.0))
            y_new = jax.tree_util.tree_map(lambda a, b: a + beta * (a - b), z, z_prev)
            g_new = grad(y_new)
            return z, y_new, g_new, tree_norm(g_new), k + 1

        carry = (z0, z0, g0, n0, jnp.ones((), jnp.int32))
        _, y, _, gnorm, steps = lax.while_loop(cond, body, carry)
        return y, SolveInfo(steps=steps, grad_norm=gnorm, converged=gnorm <= tol)
