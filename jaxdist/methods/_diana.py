"""DIANA: compressed gradient *differences* with learned shifts."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax

from jaxdist.comm._aggregate import compressed_mean
from jaxdist.comm._axis import AxisName
from jaxdist.comm._ledger import Ledger
from jaxdist.compressors._base import Compressor
from jaxdist.methods._base import (
    DOWNLINK,
    UPLINK,
    PyTree,
    check_compressor,
    check_downlink,
    check_extra,
    check_grads,
    check_mode,
    check_salt,
    check_unit_interval,
    init_key,
    make_ledger,
    one_step_counts,
    purpose_key,
    step_key,
    tree_add,
    tree_axpy,
    tree_sub,
    tree_zeros,
    worker_zeros,
    zero_count,
)

__all__ = ["DIANAState", "diana", "diana_update"]


class DIANAState(NamedTuple):
    """State of :func:`diana`.

    Attributes:
      key: the method's key, ``fold_in(key, salt)``.
      count: number of updates so far (int32, the same on every worker).
      h_m: this worker's shift :math:`h_m` (per worker).
      h: the server's shift :math:`h = \\frac1M\\sum_m h_m` (replicated, identical on every
        worker; kept separately as in the paper).
      ledger: exact message counts (:class:`~jaxdist.comm.Ledger`).
    """

    key: jax.Array
    count: jax.Array
    h_m: PyTree
    h: PyTree
    ledger: Ledger


def default_shift_step(compressor: Compressor, x: Any) -> float:
    """``1 / (ω + 1)`` for an unbiased compressor at the dimension of ``x``."""
    omega = compressor.omega(x)
    if omega is None:
        raise ValueError(
            f"{compressor.name} has no variance parameter ω (it is not unbiased); pass shift_step="
        )
    return 1.0 / (float(omega) + 1.0)


def diana_update(
    compressor: Compressor,
    shift_step: Any,
    key: jax.Array,
    grad: PyTree,
    h_m: PyTree,
    h: PyTree,
    *,
    axis_name: AxisName,
    mode: str,
) -> tuple[PyTree, PyTree, PyTree]:
    """One DIANA uplink: returns ``(g, h_m_new, h_new)`` (shared with :func:`ef21_p`)."""
    diff = tree_sub(grad, h_m)
    mean_delta, delta = compressed_mean(
        compressor, key, diff, axis_name=axis_name, mode=mode, return_local=True
    )
    g = tree_add(h, mean_delta)
    return g, tree_axpy(shift_step, delta, h_m), tree_axpy(shift_step, mean_delta, h)


def diana(
    compressor: Compressor,
    shift_step: Any = None,
    *,
    down: Compressor | None = None,
    key: Any = 0,
    axis_name: AxisName = "workers",
    salt: int = 0,
    mode: str = "dense",
) -> optax.GradientTransformationExtraArgs:
    """DIANA: each worker compresses the difference between its gradient and a learned shift.

    For :math:`C_m \\in U(\\omega)` (independent across workers). Worker ``m`` sends
    :math:`\\Delta_m = C_m(g_m^k - h_m^k)` (``compressor.bits(d)`` bits) and every worker
    receives the estimate (``d·b`` bits down, or ``down.bits(d)`` with a downlink
    compressor):

    .. math::

       \\Delta_m^k = C_m(g_m^k - h_m^k), \\qquad
       \\hat g^k = h^k + \\frac{1}{M}\\sum_{m=1}^{M} \\Delta_m^k, \\qquad
       h_m^{k+1} = h_m^k + \\alpha \\Delta_m^k, \\qquad
       h^{k+1} = h^k + \\frac{\\alpha}{M}\\sum_{m=1}^{M}\\Delta_m^k,

    and the optimizer after it steps :math:`x^{k+1} = x^k - \\gamma \\hat g^k`. The shifts
    learn :math:`\\nabla f_m(x^\\star)`, so unlike DCGD the method converges to
    :math:`x^\\star` exactly. Shifts start at zero.

    Theory (THEORY.md §2.3, full local gradients, f_m L_max-smooth convex, f μ-strongly
    convex): :math:`\\alpha = 1/(\\omega+1)` and
    :math:`\\gamma = 1/(L + 6\\omega L_{\\max}/M)` (:func:`jaxdist.theory.diana_stepsize`)
    give :math:`E\\Psi^k \\le \\max\\{1-\\gamma\\mu, 1-\\alpha/2\\}^k \\Psi^0` with
    :math:`\\Psi^k = \\|x^k-x^\\star\\|^2 + \\frac{4\\omega\\gamma^2}{\\alpha M}\\frac1M
    \\sum_m\\|h_m^k - \\nabla f_m(x^\\star)\\|^2`. With stochastic gradients of variance
    :math:`\\sigma^2` it converges to a :math:`O(\\gamma\\sigma^2/(\\mu M))` neighbourhood.

    With ``down=`` the server compresses :math:`\\hat g^k` before broadcasting (the
    bidirectional scheme of Horváth et al. 2019, Thm 9); the shifts are updated as above.

    Args:
      compressor: the uplink operator (unbiased for the theory).
      shift_step: the shift step :math:`\\alpha` of the paper (a float or an array, e.g.
        traced in a vmapped sweep; traced values are not range-checked). Default
        :math:`1/(\\omega+1)` at the gradient's dimension; required when the compressor is not
        unbiased.
      down: optional downlink operator applied by the server to :math:`\\hat g^k`.
      key: an int seed or a PRNG key, stored in the state (the only source of randomness).
      axis_name: the worker axis.
      salt: folded into the key.
      mode: ``"dense"`` or ``"gather"`` aggregation.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state :class:`DIANAState`;
      ``update(grads, state)`` takes this worker's gradient (full or stochastic) and returns
      :math:`\\hat g^k`, identical on every worker.

    Raises:
      ValueError: if ``shift_step`` is None and the compressor is not unbiased, or a concrete
        ``shift_step`` is not in (0, 1].

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxdist import comm
      >>> from jaxdist.compressors import rand_k
      >>> from jaxdist.methods import diana
      >>> M, d = 4, 10
      >>> targets = jax.random.normal(jax.random.key(0), (M, d))  # f_m = ||x - t_m||^2 / 2
      >>> opt = optax.chain(diana(rand_k(2)), optax.sgd(0.2))
      >>> def step(x, state, t_m):
      ...     updates, state = opt.update(x - t_m, state, x)  # this worker's gradient
      ...     return optax.apply_updates(x, updates), state
      >>> step = jax.jit(comm.simulate(step, M))
      >>> x = jnp.zeros((M, d))
      >>> state = comm.simulate(opt.init, M)(x)
      >>> for _ in range(400):
      ...     x, state = step(x, state, targets)
      >>> bool(jnp.allclose(x[0], targets.mean(0), atol=1e-5))  # x* = mean of the targets
      True
      >>> state[0].ledger.bits_up().tolist()  # 400 messages of 2 floats, per worker
      [25600, 25600, 25600, 25600]

    References:
      Mishchenko, Gorbunov, Takáč, Richtárik, `Distributed Learning with Compressed Gradient
      Differences <https://arxiv.org/abs/1901.09269>`_, 2019; Horváth, Kovalev, Mishchenko,
      Stich, Richtárik, `Stochastic Distributed Learning with Gradient Quantization and
      Variance Reduction <https://arxiv.org/abs/1904.05115>`_, 2019.
    """
    compressor = check_compressor(compressor, "compressor")
    down = check_downlink(down)
    salt = check_salt(salt)
    mode = check_mode(mode)
    if shift_step is None and not compressor.unbiased:
        raise ValueError(
            f"diana: {compressor.name} is not unbiased, so there is no default shift_step = "
            "1/(omega+1); pass shift_step= explicitly (0 < shift_step <= 1)"
        )
    check_unit_interval("shift_step", shift_step)

    def init_fn(params):
        return DIANAState(
            init_key(key, salt),
            zero_count(),
            worker_zeros(params, axis_name),
            tree_zeros(params),
            make_ledger(params, compressor, down),
        )

    def update_fn(updates, state, params=None, **extra):
        del params
        check_extra(extra)
        check_grads("diana", updates, state.h_m, "shifts h_m")
        a = default_shift_step(compressor, updates) if shift_step is None else shift_step
        k = step_key(state.key, state.count)
        g, h_m, h = diana_update(
            compressor,
            a,
            purpose_key(k, UPLINK),
            updates,
            state.h_m,
            state.h,
            axis_name=axis_name,
            mode=mode,
        )
        if down is not None:
            g = down.compress(purpose_key(k, DOWNLINK), g)
        ledger = one_step_counts(state.ledger, compressed=1)
        return g, DIANAState(state.key, optax.safe_increment(state.count), h_m, h, ledger)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
