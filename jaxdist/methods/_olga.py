r"""OLGA: accelerated compressed communication under Hessian similarity (THEORY.md §2.9, §2.10).

Bylinkin & Beznosikov 2024 (arXiv 2412.16414). The server (worker 0) holds :math:`f_1`; the
other workers send *compressed* differences of gradients of :math:`p = f - f_1`, whose Hessian
is small (similarity δ), so the compression noise scales with δ instead of L. A round of the
round protocol (:mod:`jaxdist.methods._round`) is one *outer* iteration of Alg. 2, containing a
random number :math:`N \sim \mathrm{Geom}(p)` of *inner* steps of Alg. 1.

Key path of the round key ``k`` (the same on every worker):

* ``fold_in(k, COIN)`` (``COIN = 2``): the shared draw
  ``N = jax.random.geometric(fold_in(k, COIN), p)`` (N >= 1, the same on every worker);
* ``fold_in(fold_in(k, UPLINK), j)`` (``UPLINK = 0``): the key of inner step ``j = 0..N-1``
  passed to :func:`jaxdist.comm.compressed_mean`, which gives worker ``m`` the key
  ``fold_in(·, m)`` (or the key itself for a shared-key compressor).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdist._validate import check_number, is_traced
from jaxdist.comm._aggregate import compressed_mean
from jaxdist.comm._axis import AxisName, axis_size, varying, worker_mean
from jaxdist.compressors._base import Compressor
from jaxdist.methods._base import (
    COIN,
    UPLINK,
    check_compressor,
    check_mode,
    make_ledger,
    purpose_key,
    tree_add,
    tree_dtype,
    tree_norm,
    tree_sub,
)
from jaxdist.methods._round import Oracle, RoundMethod
from jaxdist.methods._solver import Solver, rounding_atol

__all__ = ["olga"]

PyTree = Any

_DEFAULT_SOLVER = Solver(max_steps=500, rtol=1e-10, atol=0.0)


def _tmap(fn, *trees):
    return jax.tree_util.tree_map(fn, *trees)


def _lin(a: Any, x: PyTree, b: Any, y: PyTree) -> PyTree:
    """``a·x + b·y`` leafwise, in each leaf's dtype (a, b scalars, maybe traced)."""
    return _tmap(lambda u, v: jnp.asarray(a, u.dtype) * u + jnp.asarray(b, u.dtype) * v, x, y)


def _omega(compressor: Compressor, params: PyTree) -> float:
    omega = compressor.omega(params)
    if omega is None:  # pragma: no cover - refused at construction already
        raise ValueError(f"olga: {compressor.name} has no variance parameter omega")
    return float(omega)


def _resolve(
    omega: float,
    num_workers: int,
    delta: Any,
    mu: Any,
    p: Any,
    theta: Any,
    tau: Any,
    alpha: Any,
) -> tuple[Any, Any, Any, Any]:
    """Cor. 1's (p, θ, τ, α) for the given ω and M; given values are kept (they may be traced).

    NumPy for concrete values (so that they equal :func:`jaxdist.theory.olga_parameters`),
    ``jax.numpy`` as soon as one of them is traced (a vmapped sweep).
    """
    xp = jnp if is_traced((delta, mu, p, theta, tau, alpha)) else np
    if p is None:
        p = 1.0 / (1.0 + omega)
    if theta is None:
        cap = 1.0 / (2.0 * xp.asarray(delta))
        if omega == 0.0:
            theta = cap
        else:
            theta = xp.minimum(xp.sqrt(p * num_workers) / (8.0 * delta * np.sqrt(omega)), cap)
    if tau is None:
        tau = xp.minimum(xp.sqrt(mu * theta / p) / 4.0, 0.25)
    if alpha is None:
        alpha = theta / (8.0 * p * tau)
    return p, theta, tau, alpha


def olga(
    compressor: Compressor,
    *,
    delta: Any,
    mu: Any,
    server_smoothness: Any,
    p: Any = None,
    theta: Any = None,
    tau: Any = None,
    alpha: Any = None,
    solver: Solver = _DEFAULT_SOLVER,
    mode: str = "dense",
    axis_name: AxisName = "workers",
) -> RoundMethod:
    r"""OLGA: accelerated sliding with compressed gradient differences under similarity.

    For an **unbiased** compressor :math:`Q \in U(\omega)` (independent across workers), a
    server that holds :math:`f_1` (worker 0's function, convex and
    ``server_smoothness``-smooth) and :math:`p = f - f_1` with similarity δ. One round is one
    outer iteration (Alg. 2) from :math:`(z_k, y_k)` (:math:`z_0 = y_0 = x^0`):

    .. math::

       x_{k+1} &= \tau z_k + (1 - \tau) y_k, \qquad
       y_{k+1} = \mathrm{Inner}(x_{k+1}), \\
       G_k &= p\Big(\nabla(f_1 - f)(x_{k+1}) - \nabla(f_1 - f)(y_{k+1})
              + \tfrac{1}{\theta}(x_{k+1} - y_{k+1})\Big), \\
       z_{k+1} &= \frac{z_k/\alpha - G_k + \mu\, y_{k+1}}{1/\alpha + \mu},

    where the inner loop (Alg. 1) from :math:`u_0 = x_{k+1}` draws
    :math:`N \sim \mathrm{Geom}(p)` (:math:`N \ge 1`, mean :math:`1/p`, shared by every
    worker) and runs, for :math:`j = 0, \dots, N-1`,

    .. math::

       g_j &= \frac1M \sum_{m=1}^M Q_m\big(\nabla f_m(u_j) - \nabla f_1(u_j)
              - \nabla f_m(u_0) + \nabla f_1(u_0)\big), \qquad
       t_j = g_j - \nabla f_1(u_0) + \nabla f(u_0), \\
       u_{j+1} &= \arg\min_u \ \langle t_j, u - u_j\rangle + \tfrac{1}{2\theta}\|u - u_j\|^2
              + f_1(u),

    and returns :math:`y_{k+1} = u_N`. :math:`t_j` is an unbiased estimate of
    :math:`\nabla p(u_j)` whose variance is of order :math:`\omega\delta^2\|u_j - u_0\|^2/M`.
    As in the paper, every worker evaluates :math:`\nabla f_1` (the server's function is known
    to every device: ``oracle.server_grad``). The server's problems are solved by ``solver``
    (accelerated gradient, :math:`L_h = L_1 + 1/\theta`, :math:`\mu_h = 1/\theta`, from
    :math:`u_j`), to its tolerance but never below the rounding floor
    :math:`64\varepsilon_{\mathrm{mach}}(\|t_j\| + \|\nabla f_1(u_j)\| + L_h\|u_j\|)` of
    :math:`\nabla h`, below which the residual is not resolvable. In the simulation every
    worker holds the server's state (identical on all workers) and repeats its solves.
    Gradients are full local gradients (a run's ``batch_size`` is not used). The first inner
    message is :math:`Q(0) = 0` (:math:`u_0 = x_{k+1}`); it is sent and counted, as the
    algorithm states.

    **Theory** (THEORY.md §2.10, OLGA [V-src, full text]; Cor. 1): the defaults are
    :math:`p = 1/\gamma_\omega` with :math:`\gamma_\omega = 1 + \omega` (:math:`= d/K` for
    Rand-K, THEORY's statement; for another unbiased compressor :math:`1 + \omega` is the
    factor by which its second moment exceeds the vector's, :math:`E\|Q(x)\|^2 \le
    (1 + \omega)\|x\|^2`, the compression level the paper's :math:`\gamma_\omega` measures),
    :math:`\theta = \min\{\sqrt{pM}/(8\delta\sqrt\omega), 1/(2\delta)\}` (:math:`1/(2\delta)`
    for ω = 0), :math:`\tau = \min\{\sqrt{\mu\theta/p}/4, 1/4\}`, :math:`\alpha =
    \theta/(8p\tau)` (:func:`jaxdist.theory.olga_parameters`), so that :math:`\mu\alpha =
    2\tau`. The method converges to :math:`x^\star` itself, linearly at the rate
    :math:`1 - \tau` (:func:`jaxdist.theory.olga_rate`) in the potential

    .. math::

       \Phi_k = \big(\tfrac{1}{\alpha} + \mu\big)\|z_k - x^\star\|^2
                + \tfrac{2}{\tau}\big(f(y_k) - f^\star\big), \qquad
       \mathbb E\,\Phi_k \le (1 - \tau)^k \Phi_0,

    which is **[V-der+MC]**: Theorem 1's exact statement was not reachable. The form is
    derived here for the idealised step (:math:`G_k = \nabla f(y_{k+1})`, exact inner loop):
    the z-step's three-point inequality, with :math:`f^\star \ge f(y_{k+1}) + \langle G_k,
    x^\star - y_{k+1}\rangle + \frac{\mu}{2}\|y_{k+1} - x^\star\|^2` and the coupling
    :math:`x_{k+1} = \tau z_k + (1-\tau) y_k`, contracts the distance term by
    :math:`1/(1 + \mu\alpha) = 1/(1 + 2\tau) \le 1 - \tau` (τ <= 1/2) and the gap term by
    :math:`1 - \tau`, provided :math:`\langle G_k, x_{k+1} - y_{k+1}\rangle \ge
    \frac{\alpha\tau}{2}\|G_k\|^2` (one exact sliding step with θδ <= 1/2 gives
    :math:`\ge \frac{\theta}{2}\|G_k\|^2`, and :math:`\alpha\tau = \theta/(8p)`). For
    OLGA itself (random N, compressed messages; :math:`\mathbb E_N G_k = \mathbb E_N
    \nabla f(y_{k+1})` since :math:`G_k = p\sum_{j=1}^N \nabla f(u_j)` up to the
    compression noise) the bound is checked in Monte Carlo by the test-suite (the mean
    potential stays below 0.72 of the bound). So
    :math:`1/\tau = \max\{4\sqrt{p/(\mu\theta)}, 4\}`, i.e.
    :math:`O(\sqrt{(\delta/\mu)\max\{p, \sqrt{p\omega/M}\}}\,\log 1/\varepsilon)` outer
    iterations of :math:`2 + 1/p` communication rounds each (in expectation); the measured
    growth of the rounds is :math:`(\delta/\mu)^{0.61}` (THEORY.md §2.10; 0.60–0.61 in the
    test-suite).

    **Communication** per round (outer iteration), counted as it happens: a full round at
    :math:`x_{k+1}` (the server broadcasts :math:`x_{k+1}`, one full message down; every
    worker sends :math:`\nabla f_m(x_{k+1})`, one full message up); N inner steps (one
    compressed message up per worker, the server's :math:`u_{j+1}` broadcast down); a full
    round at :math:`y_{k+1} = u_N` (every worker already holds it from the last broadcast and
    sends :math:`\nabla f_m(y_{k+1})`, one full message up). So per worker: 2 full and N
    compressed messages up, N + 1 full messages down, N + 2 communication rounds.

    Args:
      compressor: the workers' operator; it must be unbiased (``compressor.unbiased``, class
        U(ω) with ``compressor.omega(d)``).
      delta: similarity δ > 0 of the server's :math:`f_1` to :math:`f` (the problem's
        ``delta_server``); declared as the method's bound on it.
      mu: strong convexity μ > 0 of f.
      server_smoothness: smoothness :math:`L_1 > 0` of :math:`f_1` (for the server's solver).
      p: the inner loop's parameter in (0, 1] (N ~ Geom(p), mean 1/p); default
        :math:`1/(1 + \omega)`.
      theta: inner step θ > 0; default Cor. 1's.
      tau: coupling τ in (0, 1]; default Cor. 1's.
      alpha: outer step α > 0; default Cor. 1's.
      solver: the server's subproblem solver (:class:`jaxdist.methods.Solver`).
      mode: ``"dense"`` or ``"gather"`` aggregation of the compressed messages.
      axis_name: the worker axis.

    Returns:
      A :class:`~jaxdist.methods.RoundMethod` (``needs_server=True``) with state ``{"z": z_k,
      "y": y_k, "ledger": Ledger}`` (replicated, the same on every worker) and ``params`` the
      server's model :math:`y_k`. ``info`` is ``{"grad_evals": 2(N + 1)`` (this worker's
      evaluations of :math:`\nabla f_m` and of :math:`\nabla f_1` at :math:`u_0, \dots, u_N`,
      outside the server's solves), ``"inner_steps"`` (gradient evaluations of the N server
      solves), ``"inner_unsolved"`` (solves that ended above their tolerance),
      ``"communicated": N + 2}`` (all int32).

    Raises:
      TypeError: ``compressor`` is not a jaxdist Compressor, or ``solver`` is not a Solver.
      ValueError: ``delta``, ``mu``, ``server_smoothness``, ``theta`` or ``alpha`` <= 0,
        ``p`` or ``tau`` outside (0, 1], or a biased compressor (no ω).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxdist.compressors import rand_k
      >>> from jaxdist.experiments import run
      >>> from jaxdist.methods import olga
      >>> from jaxdist.problems import quadratic_problem
      >>> M, d = 4, 8
      >>> A = jnp.stack([jnp.eye(d) * (1.0 + 0.05 * m) for m in range(M)])
      >>> b = jnp.ones((M, d))
      >>> prob = quadratic_problem(A, b)
      >>> method = olga(rand_k(2), delta=0.1, mu=1.0, server_smoothness=1.0)
      >>> trace = run(method, prob, 60, 0, log_every=60)
      >>> bool(trace.dist_sq[-1] < 1e-6 * trace.dist_sq[0])
      True
      >>> int(trace.rounds[-1]) == int(trace.communicated[-1])  # N + 2 rounds per iteration
      True

    References:
      Bylinkin, Beznosikov, `Accelerated methods with compressed communications for
      distributed optimization problems under data similarity
      <https://arxiv.org/abs/2412.16414>`_, 2024 (OLGA: Alg. 1, Alg. 2, Thm 1, Cor. 1);
      Kovalev, Beznosikov, Borodich, Gasnikov, Scutari, `Optimal gradient sliding and its
      application to distributed optimization under similarity
      <https://arxiv.org/abs/2205.15136>`_, 2022.
    """
    compressor = check_compressor(compressor, "compressor")
    if not compressor.unbiased:
        raise ValueError(
            f"olga needs an unbiased compressor (class U(omega)); {compressor.name} is biased "
            "(compressor.unbiased is False). Use an unbiased operator such as rand_k(k), or "
            "error feedback (EF-OLGA) for a contractive one"
        )
    if not isinstance(solver, Solver):
        raise TypeError(f"solver must be a jaxdist.methods.Solver, got {type(solver).__name__}")
    mode = check_mode(mode)
    positive = {"low": 0.0, "low_open": True}
    unit = {"low": 0.0, "high": 1.0, "low_open": True}
    delta = check_number("delta", delta, **positive)
    mu = check_number("mu", mu, **positive)
    L1 = check_number("server_smoothness", server_smoothness, **positive)
    if p is not None:
        p = check_number("p", p, **unit)
    if theta is not None:
        theta = check_number("theta", theta, **positive)
    if tau is not None:
        tau = check_number("tau", tau, **unit)
    if alpha is not None:
        alpha = check_number("alpha", alpha, **positive)

    def constants(params: PyTree) -> tuple[Any, Any, Any, Any]:
        M = axis_size(axis_name)
        return _resolve(_omega(compressor, params), M, delta, mu, p, theta, tau, alpha)

    def init(params: PyTree) -> dict[str, Any]:
        tree_dtype("olga", params)
        _omega(compressor, params)
        ledger = make_ledger(params, compressor, None, full_up=True)
        return {"z": params, "y": params, "ledger": ledger}

    def round_fn(state: dict[str, Any], oracle: Oracle, key: jax.Array):
        z, y = state["z"], state["y"]
        dtype = tree_dtype("olga", y)
        p_, theta_, tau_, alpha_ = constants(y)
        inv_theta = 1.0 / jnp.asarray(theta_, dtype)
        L_h = jnp.asarray(L1, dtype) + inv_theta

        # Full round at x: broadcast x, all-reduce the gradients.
        x = _lin(tau_, z, 1.0 - jnp.asarray(tau_, dtype), y)
        gm_x = oracle.grad(x)
        g1_x = oracle.server_grad(x)
        gf_x = worker_mean(gm_x, axis_name)
        shift = tree_sub(gf_x, g1_x)  # t_j = g_j + ∇f(u_0) − ∇f_1(u_0)

        n_inner = jax.random.geometric(purpose_key(key, COIN), p_, dtype=jnp.int32)
        up_key = purpose_key(key, UPLINK)

        def cond(carry):
            return carry[0] < n_inner

        def body(carry):
            j, u, gm_u, g1_u, steps, unsolved = carry
            message = tree_add(tree_sub(gm_u, g1_u), tree_sub(g1_x, gm_x))
            g = compressed_mean(
                compressor, jax.random.fold_in(up_key, j), message, axis_name=axis_name, mode=mode
            )
            t = tree_add(g, shift)

            def grad_h(v):
                return tree_add(t, _lin(inv_theta, tree_sub(v, u), 1.0, oracle.server_grad(v)))

            scale = tree_norm(t) + tree_norm(g1_u) + L_h * tree_norm(u)
            atol = rounding_atol(solver.atol, dtype, scale, factor=64.0)
            u_new, info = solver(grad_h, u, L=L_h, mu=inv_theta, atol=atol)
            # The counters follow the solver's residual, which is per worker under shard_map
            # when the state is (typed varying, as the runner's stacked state is).
            steps = varying(steps + info.steps, axis_name)
            unsolved = varying(
                unsolved + jnp.logical_not(info.converged).astype(jnp.int32), axis_name
            )
            return (
                j + 1,
                u_new,
                oracle.grad(u_new),
                oracle.server_grad(u_new),
                steps,
                unsolved,
            )

        zero = jnp.zeros((), jnp.int32)
        count = varying(zero, axis_name)
        carry = (zero, x, gm_x, g1_x, count, count)
        _, y_new, gm_y, g1_y, steps, unsolved = lax.while_loop(cond, body, carry)

        # Full round at y (every worker holds y from the last broadcast): all-reduce gradients.
        gf_y = worker_mean(gm_y, axis_name)
        # ∇(f_1 − f)(x) − ∇(f_1 − f)(y)
        t_out = tree_sub(tree_sub(g1_x, gf_x), tree_sub(g1_y, gf_y))
        G = _tmap(
            lambda a, b: jnp.asarray(p_, a.dtype) * (a + inv_theta * b), t_out, tree_sub(x, y_new)
        )
        denom = 1.0 / jnp.asarray(alpha_, dtype) + jnp.asarray(mu, dtype)
        z_new = _tmap(
            lambda zz, gg, yy: (
                (zz / jnp.asarray(alpha_, dtype) - gg + jnp.asarray(mu, dtype) * yy) / denom
            ),
            z,
            G,
            y_new,
        )
        ledger = state["ledger"].record(
            up={"full": 2, "compressed": n_inner},
            down={"full": n_inner + 1},
            rounds=n_inner + 2,
        )
        info = {
            "grad_evals": 2 * (n_inner + 1),
            "inner_steps": steps,
            "inner_unsolved": unsolved,
            "communicated": n_inner + 2,
        }
        return {"z": z_new, "y": y_new, "ledger": ledger}, info

    return RoundMethod(
        init, round_fn, lambda s: s["y"], needs_server=True, bounds={"delta_server": delta}
    )
