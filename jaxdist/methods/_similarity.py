r"""Methods for Hessian similarity (THEORY.md §2.9, §2.10): Bregman GD, DANE, AEG sliding.

Under δ-similarity (:math:`\|\nabla^2 f_m - \nabla^2 f\| \le \delta`, or only
:math:`\|\nabla^2 f_1 - \nabla^2 f\| \le \delta` for the server's :math:`f_1`) a method that
solves a local subproblem per round needs a number of communication rounds that depends on
:math:`\delta/\mu` instead of :math:`\kappa = L/\mu`:

* :func:`bregman_gd`: mirror descent with the server's reference function
  :math:`\varphi = f_1 + \tfrac\delta2\|\cdot\|^2`, :math:`O((1 + \delta/\mu)\log 1/\varepsilon)`
  rounds;
* :func:`dane`: every worker solves a shifted local problem, the models are averaged,
  :math:`O(\delta/\mu \log 1/\varepsilon)` rounds with :math:`\mu_r = \delta`;
* :func:`aeg_sliding`: accelerated extragradient sliding, :math:`O(\sqrt{\delta/\mu}\log
  1/\varepsilon)` rounds and :math:`O(\sqrt{L_1/\mu}\log 1/\varepsilon)` server gradients.

All three are round-based methods (:class:`jaxdist.methods.RoundMethod`) written for one worker
on the worker axis. Their subproblems are solved by the shared :class:`~jaxdist.methods.Solver`
(Nesterov's accelerated gradient with a budget and a tolerance). A *server* computation (the
mirror step, the sliding step) is done by every worker identically, from replicated inputs
(the all-reduced gradient and the server's data :math:`f_1`), so every worker holds the same
model bitwise; the ledger counts the messages of the real system (gradients up, the server's
model down). No method draws random numbers: the round key is unused.

Every round's ``info`` holds ``grad_evals`` (this worker's :math:`\nabla f_m` calls),
``inner_steps`` (gradient evaluations spent in this round's solves), ``inner_unsolved`` (solves
of this round that ended above their tolerance; :func:`jaxdist.run` warns with
:class:`jaxdist.experiments.SolverWarning` when there are any) and, for the methods with a
server, ``server_grad_evals`` (every :math:`\nabla f_1` call of the round: the solves and the
extra gradient at the round's base point).

**The rounding floor of the inner tolerance.** A relative tolerance
:math:`\mathrm{rtol}\,\|\nabla h(z_0)\|` shrinks with the outer gradient, but the subproblem's
gradient cannot be evaluated more accurately than its rounding error, about
:math:`\varepsilon_{\mathrm{mach}}(L_h\|z_0\| + \|\nabla f_1(z_0)\| + \|\nabla h(z_0)\|)`
(``scale``). Near the solution the requested tolerance would fall below that level and every
solve would spend its whole budget (and be reported unsolved). So each solve stops at
``atol + rtol·‖∇h(z_0)‖`` with ``atol = max(solver.atol, 2·ε_mach·scale)``: at that level the
solve is exact to working precision, and a method whose gradient :math:`\|\nabla f(x^k)\|`
is below it stays at :math:`x^k` (measured in float64 on §2.10's quadratics with κ = 10³–10⁴:
``‖x − x*‖² ≈ 1e-25–2e-23`` for Bregman GD and DANE, about 1e-27 for AEG, and no solve above
its tolerance; in float32 Bregman GD stalls near ``5e-10–5e-8`` at κ = 10²–10³, AEG near
``1e-13``). DANE's default ``local_strong_convexity=None`` (μ_h = 0) is safe but slow: in
float32 at κ = 10³ some solves need more than 500 steps; pass a lower bound when known.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdist._validate import check_number, is_traced
from jaxdist.comm._axis import AxisName, worker_mean
from jaxdist.methods._base import (
    make_ledger,
    tree_add,
    tree_axpy,
    tree_dtype,
    tree_norm,
    tree_scale,
    tree_sub,
)
from jaxdist.methods._round import Oracle, RoundMethod
from jaxdist.methods._solver import Solver, rounding_atol

__all__ = ["aeg_sliding", "bregman_gd", "dane"]

PyTree = Any

# ---------------------------------------------------------------------------------------------
# Helpers.


def _positive(name: str, value: Any) -> Any:
    return check_number(name, value, low=0.0, low_open=True)


def _check_solver(solver: Any) -> Solver:
    if not isinstance(solver, Solver):
        raise TypeError(
            f"solver must be a jaxdist.methods.Solver, got {solver!r} of type "
            f"{type(solver).__name__}"
        )
    return solver


def _bounds(**values: Any) -> dict[str, Any] | None:
    """The concrete entries of ``values`` (traced ones cannot be compared with a problem)."""
    out = {k: v for k, v in values.items() if v is not None and not is_traced(v)}
    return out or None


def _size(tree: PyTree) -> int:
    return sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree_util.tree_leaves(tree))


def _atol(solver: Solver, like: PyTree, scale: jax.Array) -> jax.Array:
    """The solver's atol, not below the rounding floor of a gradient of size ``scale``."""
    return rounding_atol(solver.atol, tree_dtype("similarity", like), scale)


def _as(value: Any, dtype: Any) -> jax.Array:
    return jnp.asarray(value, dtype)


def _solve_info(info: Any) -> tuple[jax.Array, jax.Array]:
    steps = jnp.asarray(info.steps, jnp.int32)
    unsolved = jnp.logical_not(info.converged).astype(jnp.int32)
    return steps, unsolved


def aeg_constants(delta: Any, mu: Any, dtype: Any = None) -> tuple[Any, Any, Any]:
    r"""AEG's ``(τ, θ, η)`` with ``jnp`` (``delta`` and ``mu`` may be traced).

    The same values as :func:`jaxdist.theory.aeg_sliding_parameters` (THEORY.md §2.10):
    :math:`\tau = \min\{1, \sqrt{\mu/\delta}/2\}`, :math:`\theta = 1/(2\delta)`,
    :math:`\eta = \min\{1/(2\mu), 1/(2\sqrt{\mu\delta})\}`.
    """
    d = jnp.asarray(delta, dtype)
    m = jnp.asarray(mu, dtype)
    tau = jnp.minimum(jnp.ones_like(d), jnp.sqrt(m / d) / 2.0)
    theta = 1.0 / (2.0 * d)
    eta = jnp.minimum(1.0 / (2.0 * m), 1.0 / (2.0 * jnp.sqrt(m * d)))
    return tau, theta, eta


# ---------------------------------------------------------------------------------------------
# Bregman GD (the lecture's mirror descent).


def bregman_gd(
    delta: Any,
    *,
    server_smoothness: Any,
    solver: Solver = Solver(max_steps=500, rtol=1e-10),
    axis_name: AxisName = "workers",
) -> RoundMethod:
    r"""Bregman (mirror) GD with the server's reference :math:`f_1 + \tfrac\delta2\|\cdot\|^2`.

    One round: the workers all-reduce the gradient :math:`\nabla f(x^k) = \frac1M\sum_m \nabla
    f_m(x^k)` (one message up per worker), the server takes the mirror step with
    :math:`\varphi(x) = f_1(x) + \tfrac\delta2\|x\|^2`,

    .. math::

       x^{k+1} = \arg\min_z \; \langle \nabla f(x^k), z\rangle + D_\varphi(z, x^k), \quad
       \text{i.e.}\quad \nabla\varphi(x^{k+1}) = \nabla\varphi(x^k) - \nabla f(x^k),

    by minimising :math:`h(z) = \varphi(z) - \langle \nabla\varphi(x^k) - \nabla f(x^k),
    z\rangle` (:math:`\nabla h(z) = \nabla f_1(z) - \nabla f_1(x^k) + \delta(z - x^k) + \nabla
    f(x^k)`, which is :math:`(L_1 + \delta)`-smooth and, :math:`f_1` being convex,
    :math:`\delta`-strongly convex) with ``solver`` from :math:`z_0 = x^k`, and broadcasts
    :math:`x^{k+1}` (one message down). On quadratics the step is :math:`(A_1 + \delta I)(x^{k+1}
    - x^k) = -\nabla f(x^k)`.

    **Theory** (THEORY.md §2.9, §2.10 [V-der]): with :math:`\|\nabla^2 f_1 - \nabla^2 f\| \le
    \delta` and :math:`f_1` convex, :math:`\nabla^2 f \preceq \nabla^2\varphi \preceq (1 +
    2\delta/\mu)\nabla^2 f`: f is 1-relatively smooth and :math:`\mu/(\mu + 2\delta)`-relatively
    strongly convex w.r.t. φ (:func:`jaxdist.theory.bregman_constants`), so
    :math:`f(x^k) - f^\star \le (1 - 1/\kappa_{rel})^k(\cdot)` with :math:`\kappa_{rel} = 1 +
    2\delta/\mu` (:func:`jaxdist.theory.bregman_rate`; Lu, Freund, Nesterov 2018): :math:`O((1 +
    \delta/\mu)\log 1/\varepsilon)` communication rounds, however large κ is. On quadratics the
    error contracts by :math:`2\delta/(\mu + 2\delta)` per step in the :math:`(A_1 +
    \delta I)`-norm.

    **Communication** per round: one full message up (:math:`\nabla f_m(x^k)`) and one down
    (:math:`x^{k+1}`), one communication round.

    Args:
      delta: the server's similarity δ > 0, a bound on :math:`\|\nabla^2 f_1 - \nabla^2 f\|`
        (declared as ``bounds["delta_server"]``; a float or a traced scalar).
      server_smoothness: :math:`L_1 > 0`, the smoothness of :math:`f_1` (declared as
        ``bounds["L_server"]``); the solver's step is :math:`1/(L_1 + \delta)`.
      solver: the :class:`~jaxdist.methods.Solver` of the mirror step (its ``rtol`` is relative
        to :math:`\|\nabla f(x^k)\|`; see the module's rounding floor).
      axis_name: the worker axis.

    Returns:
      A :class:`~jaxdist.methods.RoundMethod` (``needs_server=True``) with state ``{"x":
      x^k, "ledger": Ledger}`` and ``params`` the server model :math:`x^k` (every worker's
      copy). ``info``: ``grad_evals`` (1), ``inner_steps``, ``inner_unsolved`` and
      ``server_grad_evals`` (``inner_steps + 1``).

    Raises:
      ValueError: ``delta <= 0`` or ``server_smoothness <= 0``.
      TypeError: ``solver`` is not a :class:`~jaxdist.methods.Solver`.

    Examples:
      >>> from jaxdist.methods import bregman_gd
      >>> from jaxdist.problems import quadratic
      >>> from jaxdist.experiments import run
      >>> p = quadratic(4, 6, L=10.0, mu=1.0, delta=0.5, key=0)  # worker 0 is the server
      >>> method = bregman_gd(p.delta, server_smoothness=float(p.L_m[0]))
      >>> trace = run(method, p, 30, 0, log_every=10)
      >>> bool(trace.dist_sq[-1] < 1e-6 * trace.dist_sq[0]), trace.rounds.tolist()
      (True, [0, 10, 20, 30])

    References:
      Lu, Freund, Nesterov, `Relatively smooth convex optimization by first-order methods, and
      applications <https://arxiv.org/abs/1610.05708>`_, 2018; Hendrikx, Xiao, Bubeck, Bach,
      Massoulié, `Statistically preconditioned accelerated gradient method for distributed
      optimization <https://arxiv.org/abs/2002.10726>`_, 2020.
    """
    delta = _positive("delta", delta)
    server_smoothness = _positive("server_smoothness", server_smoothness)
    solver = _check_solver(solver)

    def init(params: PyTree) -> dict[str, Any]:
        return {"x": params, "ledger": make_ledger(params, None, None)}

    def round_fn(state: dict[str, Any], oracle: Oracle, key: jax.Array):
        del key
        x = state["x"]
        dtype = tree_dtype("bregman_gd", x)
        g = worker_mean(oracle.grad(x), axis_name)  # ∇f(x^k), the same on every worker
        d = _as(delta, dtype)
        L_h = _as(server_smoothness, dtype) + d
        g1_x = oracle.server_grad(x)

        def grad_h(z):
            step = tree_sub(z, x)
            return tree_add(tree_axpy(d, step, tree_sub(oracle.server_grad(z), g1_x)), g)

        scale = L_h * tree_norm(x) + tree_norm(g1_x) + tree_norm(g)
        x_new, info = solver(grad_h, x, L=L_h, mu=d, atol=_atol(solver, x, scale))
        steps, unsolved = _solve_info(info)
        ledger = state["ledger"].record(up={"full": 1}, down={"full": 1}, rounds=1)
        return {"x": x_new, "ledger": ledger}, {
            "grad_evals": jnp.ones((), jnp.int32),
            "inner_steps": steps,
            "inner_unsolved": unsolved,
            "server_grad_evals": steps + 1,
        }

    return RoundMethod(
        init,
        round_fn,
        lambda s: s["x"],
        needs_server=True,
        bounds=_bounds(delta_server=delta, L_server=server_smoothness),
    )


# ---------------------------------------------------------------------------------------------
# DANE.


def dane(
    mu_r: Any,
    *,
    learning_rate: Any = 1.0,
    local_smoothness: Any,
    local_strong_convexity: Any = None,
    solver: Solver = Solver(max_steps=500, rtol=1e-10),
    axis_name: AxisName = "workers",
) -> RoundMethod:
    r"""DANE: each worker solves a gradient-shifted, regularised local problem; models averaged.

    Iteration k (two communication rounds): all-reduce :math:`\nabla f(x^k)`, then every worker
    solves its local problem with ``solver`` from :math:`z_0 = x^k` and the models are averaged:

    .. math::

       x_m^{k+1} &= \arg\min_x\; f_m(x) - \langle \nabla f_m(x^k) - \eta\nabla f(x^k), x\rangle
                   + \tfrac{\mu_r}{2}\|x - x^k\|^2, \\
       x^{k+1} &= \tfrac1M \textstyle\sum_m x_m^{k+1}.

    The local problem's gradient is :math:`\nabla f_m(z) - \nabla f_m(x^k) + \eta\nabla f(x^k) +
    \mu_r(z - x^k)` (equal to :math:`\eta\nabla f(x^k)` at :math:`z_0`), solved with step
    :math:`1/(L_m + \mu_r)` and strong convexity ``max(local_strong_convexity + mu_r, 0)``
    (0, the safe choice, by default). On quadratics :math:`x^{k+1} = x^k - \eta\,\mathrm{mean}_m
    (A_m + \mu_r I)^{-1}\nabla f(x^k)`.

    **Theory** (THEORY.md §2.9, §2.10 [V-der+MC]): for η = 1 it is mirror descent with
    :math:`\varphi_m = f_m + \tfrac{\mu_r}2\|\cdot\|^2` per worker; on quadratics
    :math:`x_m^{k+1} - x^\star = (A_m + \mu_r I)^{-1}(A_m + \mu_r I - A)(x^k - x^\star)`, a
    contraction by at most :math:`(\delta + \mu_r)/(\lambda_{\min}(A_m) + \mu_r)`
    (:func:`jaxdist.theory.dane_quadratic_contraction`). **It needs** :math:`\mu_r \ge \delta`
    **when some** :math:`f_m` **is indefinite** (:math:`\lambda_{\min}(\nabla^2 f_m) \ge \mu -
    \delta` can be negative; with :math:`\mu_r \ge \delta` every local problem is convex). With
    :math:`\mu_r = \delta` the rounds grow like :math:`(\delta/\mu)^{0.93\text{–}0.95}` (§2.10).
    Shamir et al. give :math:`O((L/\mu)^2/n \cdot \log 1/\varepsilon)` rounds for quadratics with
    n samples per worker [UNVERIFIED exact form].

    **Communication** per iteration: two rounds, each one full message up and one down
    (:math:`\nabla f_m(x^k)` / :math:`\nabla f(x^k)`, then :math:`x_m^{k+1}` / :math:`x^{k+1}`).

    Args:
      mu_r: the proximal weight :math:`\mu_r \ge 0` (choose :math:`\mu_r \ge \delta` for
        indefinite workers).
      learning_rate: η > 0, the weight of the global gradient (1.0 in DANE's analysis).
      local_smoothness: a bound :math:`L_{\max} > 0` on every :math:`L_m` (declared as
        ``bounds["L_max"]``); the solver's step is :math:`1/(L_{\max} + \mu_r)`.
      local_strong_convexity: a lower bound :math:`\lambda` on every
        :math:`\lambda_{\min}(\nabla^2 f_m)` (may be negative, e.g. :math:`\mu - \delta`), so
        that the solver uses :math:`\mu_h = \max(\lambda + \mu_r, 0)`; ``None`` (default):
        :math:`\mu_h = 0` (always safe, slower solves).
      solver: the :class:`~jaxdist.methods.Solver` of the local problems (``rtol`` relative to
        :math:`\eta\|\nabla f(x^k)\|`).
      axis_name: the worker axis.

    Returns:
      A :class:`~jaxdist.methods.RoundMethod` with state ``{"x": x^k, "ledger": Ledger}`` and
      ``params`` the averaged model :math:`x^k` (every worker's copy). ``info``:
      ``grad_evals`` (``1 + inner_steps``: the gradient at :math:`x^k` and the solve's),
      ``inner_steps`` and ``inner_unsolved`` of this worker's solve (the runner reports the
      largest over workers).

    Raises:
      ValueError: ``mu_r < 0``, ``learning_rate <= 0``, ``local_smoothness <= 0``, or a NaN
        ``local_strong_convexity``.
      TypeError: ``solver`` is not a :class:`~jaxdist.methods.Solver`.

    References:
      Shamir, Srebro, Zhang, `Communication-efficient distributed optimization using an
      approximate Newton-type method <https://arxiv.org/abs/1312.7853>`_, ICML 2014.
    """
    mu_r = check_number("mu_r", mu_r, low=0.0)
    learning_rate = _positive("learning_rate", learning_rate)
    local_smoothness = _positive("local_smoothness", local_smoothness)
    if local_strong_convexity is not None:
        local_strong_convexity = check_number("local_strong_convexity", local_strong_convexity)
    solver = _check_solver(solver)

    def init(params: PyTree) -> dict[str, Any]:
        return {"x": params, "ledger": make_ledger(params, None, None)}

    def round_fn(state: dict[str, Any], oracle: Oracle, key: jax.Array):
        del key
        x = state["x"]
        dtype = tree_dtype("dane", x)
        g_m = oracle.grad(x)
        g = worker_mean(g_m, axis_name)  # round 1
        r = _as(mu_r, dtype)
        eta_g = tree_scale(_as(learning_rate, dtype), g)
        L_h = _as(local_smoothness, dtype) + r
        if local_strong_convexity is None:
            mu_h = jnp.zeros((), dtype)
        else:
            mu_h = jnp.maximum(_as(local_strong_convexity, dtype) + r, 0.0)

        def grad_h(z):
            return tree_add(tree_axpy(r, tree_sub(z, x), tree_sub(oracle.grad(z), g_m)), eta_g)

        scale = L_h * tree_norm(x) + tree_norm(g_m) + tree_norm(eta_g)
        x_m, info = solver(grad_h, x, L=L_h, mu=mu_h, atol=_atol(solver, x, scale))
        x_new = worker_mean(x_m, axis_name)  # round 2
        steps, unsolved = _solve_info(info)
        ledger = state["ledger"].record(up={"full": 2}, down={"full": 2}, rounds=2)
        return {"x": x_new, "ledger": ledger}, {
            "grad_evals": steps + 1,
            "inner_steps": steps,
            "inner_unsolved": unsolved,
        }

    return RoundMethod(
        init,
        round_fn,
        lambda s: s["x"],
        bounds=_bounds(L_max=local_smoothness),
    )


# ---------------------------------------------------------------------------------------------
# Accelerated extragradient sliding.


def aeg_sliding(
    delta: Any,
    mu: Any,
    *,
    server_smoothness: Any,
    solver: Solver = Solver(max_steps=500, rtol=1e-10),
    inner_rtol: Any = None,
    axis_name: AxisName = "workers",
) -> RoundMethod:
    r"""Accelerated ExtraGradient sliding (AEG): the server slides over its cheap :math:`f_1`.

    Split :math:`f = p + q` with :math:`q = f_1` (the server's function, :math:`L_1`-smooth,
    convex, no communication) and :math:`p = f - f_1` (δ-smooth, needs communication). With
    the constants of THEORY.md §2.10 (:math:`L_p = \delta`, α = μ):
    :math:`\tau = \min\{1, \sqrt{\mu/\delta}/2\}`, :math:`\theta = 1/(2\delta)`,
    :math:`\eta = \min\{1/(2\mu), 1/(2\sqrt{\mu\delta})\}`
    (:func:`jaxdist.theory.aeg_sliding_parameters`), one iteration is

    .. math::

       x_g &= \tau x + (1 - \tau) x_f, \\
       x_f^+ &\approx \arg\min_z\; A(z) = \langle \nabla p(x_g), z\rangle
                + \tfrac{1}{2\theta}\|z - x_g\|^2 + q(z), \\
       x^+ &= x + \eta\alpha(x_f^+ - x) - \eta\nabla f(x_f^+),

    with :math:`\nabla p(x_g) = \nabla f(x_g) - \nabla f_1(x_g)` (the first all-reduce) and
    :math:`\nabla f(x_f^+)` (the second). The server solves the inner problem alone with
    ``solver`` from :math:`z_0 = x_g` (:math:`A` is :math:`(L_1 + 1/\theta)`-smooth and
    :math:`1/\theta`-strongly convex) to the computable accuracy of §2.10,

    .. math::

       \|\nabla A(z)\| \le \frac{L_p/\sqrt3}{L_1 + 1/\theta}\,\|\nabla A(x_g)\|,

    a relative tolerance (``inner_rtol`` overrides it; the module's rounding floor applies).

    **Theory** (THEORY.md §2.9, §2.10 [V-sec: constants of a public NumPy implementation; the
    paper's text was not reachable]): :math:`O(\sqrt{\delta/\mu}\log 1/\varepsilon)`
    communication rounds and :math:`O(\sqrt{L_1/\mu}\log 1/\varepsilon)` server gradients
    :math:`\nabla f_1`, both optimal (Kovalev et al. 2022, abstract [V-src]). The potential
    :math:`\Psi = \tfrac1\eta\|x - x^\star\|^2 + \tfrac2\tau(f(x_f) - f^\star)` contracts by at
    most :math:`1 - \tau` per iteration (MC; the theorem's exact factor is UNVERIFIED). Measured
    in §2.10: rounds :math:`\propto (\delta/\mu)^{0.519}`; twice η still converges, 4η or τ = 1
    diverge.

    **The model it stands behind** (``params``): :math:`x_f`, the point the potential's
    function gap is taken at (and where the last gradient was all-reduced). Every worker holds
    it; ``state["x"]`` is the extrapolation sequence.

    **Communication** per iteration: two rounds (they cannot be merged), each one full message
    up per worker (:math:`\nabla f_m(x_g)`, :math:`\nabla f_m(x_f^+)`) and one down (the
    server's :math:`x_f^+`, then :math:`\nabla f(x_f^+)`).

    Args:
      delta: :math:`L_p = \delta > 0`, a bound on :math:`\|\nabla^2 f_1 - \nabla^2 f\|`
        (declared as ``bounds["delta_server"]``).
      mu: strong convexity μ > 0 of f (α = μ).
      server_smoothness: :math:`L_1 > 0`, the smoothness of :math:`f_1` (declared as
        ``bounds["L_server"]``).
      solver: the :class:`~jaxdist.methods.Solver` of the inner problem (its ``max_steps``
        and ``atol`` are used; its ``rtol`` is replaced by the rule above).
      inner_rtol: relative tolerance of the inner solve >= 0; ``None`` (default): the
        computable rule :math:`(L_p/\sqrt3)/(L_1 + 1/\theta)` of THEORY.md §2.10.
      axis_name: the worker axis.

    Returns:
      A :class:`~jaxdist.methods.RoundMethod` (``needs_server=True``) with state ``{"x": x,
      "x_f": x_f, "ledger": Ledger}`` and ``params`` :math:`x_f`. ``info``: ``grad_evals``
      (2), ``inner_steps``, ``inner_unsolved`` and ``server_grad_evals`` (``inner_steps + 1``:
      all :math:`\nabla f_1` calls; the server's local gradient calls per iteration are
      ``grad_evals + server_grad_evals``).

    Raises:
      ValueError: ``delta <= 0``, ``mu <= 0``, ``server_smoothness <= 0`` or ``inner_rtol < 0``.
      TypeError: ``solver`` is not a :class:`~jaxdist.methods.Solver`.

    References:
      Kovalev, Beznosikov, Borodich, Gasnikov, Scutari, `Optimal gradient sliding and its
      application to distributed optimization under similarity
      <https://arxiv.org/abs/2205.15136>`_, NeurIPS 2022.
    """
    delta = _positive("delta", delta)
    mu = _positive("mu", mu)
    server_smoothness = _positive("server_smoothness", server_smoothness)
    if inner_rtol is not None:
        inner_rtol = check_number("inner_rtol", inner_rtol, low=0.0)
    solver = _check_solver(solver)

    def init(params: PyTree) -> dict[str, Any]:
        return {"x": params, "x_f": params, "ledger": make_ledger(params, None, None)}

    def round_fn(state: dict[str, Any], oracle: Oracle, key: jax.Array):
        del key
        x, x_f = state["x"], state["x_f"]
        dtype = tree_dtype("aeg_sliding", x)
        tau, theta, eta = aeg_constants(delta, mu, dtype)
        L_q = _as(server_smoothness, dtype)
        inv_theta = 1.0 / theta
        x_g = tree_axpy(tau, tree_sub(x, x_f), x_f)  # τx + (1 − τ)x_f
        g = worker_mean(oracle.grad(x_g), axis_name)  # round 1: ∇f(x_g)
        g1_g = oracle.server_grad(x_g)

        def grad_a(z):  # ∇A(z) = ∇f(x_g) + ∇f_1(z) − ∇f_1(x_g) + (z − x_g)/θ
            diff = tree_sub(oracle.server_grad(z), g1_g)
            return tree_add(tree_axpy(inv_theta, tree_sub(z, x_g), diff), g)

        L_a = L_q + inv_theta
        if inner_rtol is None:
            rtol = (_as(delta, dtype) / jnp.sqrt(jnp.asarray(3.0, dtype))) / L_a
        else:
            rtol = _as(inner_rtol, dtype)
        scale = L_a * tree_norm(x_g) + tree_norm(g1_g) + tree_norm(g)
        x_f_new, info = solver(
            grad_a, x_g, L=L_a, mu=inv_theta, rtol=rtol, atol=_atol(solver, x_g, scale)
        )
        g_f = worker_mean(oracle.grad(x_f_new), axis_name)  # round 2: ∇f(x_f⁺)
        alpha = _as(mu, dtype)
        x_new = tree_axpy(-eta, g_f, tree_axpy(eta * alpha, tree_sub(x_f_new, x), x))
        steps, unsolved = _solve_info(info)
        ledger = state["ledger"].record(up={"full": 2}, down={"full": 2}, rounds=2)
        new_state = {"x": x_new, "x_f": x_f_new, "ledger": ledger}
        return new_state, {
            "grad_evals": jnp.full((), 2, jnp.int32),
            "inner_steps": steps,
            "inner_unsolved": unsolved,
            "server_grad_evals": steps + 1,
        }

    return RoundMethod(
        init,
        round_fn,
        lambda s: s["x_f"],
        needs_server=True,
        bounds=_bounds(delta_server=delta, L_server=server_smoothness),
    )
