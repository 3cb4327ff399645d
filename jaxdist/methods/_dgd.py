"""Distributed (compressed) gradient descent: ``dgd`` and ``dcgd`` (optionally bidirectional)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax

from jaxdist.comm._aggregate import compressed_mean
from jaxdist.comm._axis import AxisName, worker_mean
from jaxdist.comm._ledger import Ledger
from jaxdist.compressors._base import Compressor
from jaxdist.methods._base import (
    DOWNLINK,
    UPLINK,
    check_compressor,
    check_downlink,
    check_extra,
    check_grads,
    check_mode,
    check_salt,
    init_key,
    make_ledger,
    one_step_counts,
    purpose_key,
    step_key,
    zero_count,
)

__all__ = ["DGDState", "DCGDState", "dgd", "dcgd"]


class DGDState(NamedTuple):
    """State of :func:`dgd` (DGD draws nothing, so it holds no key).

    Attributes:
      count: number of updates so far (int32, the same on every worker).
      ledger: exact message counts (:class:`~jaxdist.comm.Ledger`).
    """

    count: jax.Array
    ledger: Ledger


class DCGDState(NamedTuple):
    """State of :func:`dcgd`.

    Attributes:
      key: the method's key, ``fold_in(key, salt)``.
      count: number of updates so far (int32, the same on every worker).
      ledger: exact message counts (:class:`~jaxdist.comm.Ledger`).
    """

    key: jax.Array
    count: jax.Array
    ledger: Ledger


def dgd(*, axis_name: AxisName = "workers") -> optax.GradientTransformationExtraArgs:
    """Distributed gradient descent: the plain average of the workers' gradients.

    No compression: every worker sends its ``d`` floats and receives the ``d``-float mean
    (parameter-server accounting: uplink ``d·b`` and downlink ``d·b`` bits per worker per step).

    .. math::

       g^k = \\frac{1}{M} \\sum_{m=1}^{M} g_m^k, \\qquad x^{k+1} = x^k - \\gamma g^k
       \\ \\text{(the optimizer after it)}.

    With full local gradients and :math:`\\gamma = 1/L` (:func:`jaxdist.theory.gd_stepsize`),
    :math:`\\|x^k - x^\\star\\|^2 \\le (1 - \\mu/L)^k \\|x^0 - x^\\star\\|^2`
    (THEORY.md §2.1).

    Args:
      axis_name: the worker axis.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` whose ``update(grads, state)`` takes this
      worker's gradient (full or stochastic) and returns the mean gradient, the same on every
      worker.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxdist import comm
      >>> from jaxdist.methods import dgd
      >>> opt = optax.chain(dgd(), optax.sgd(0.1))
      >>> params = jnp.zeros((4, 3))          # 4 workers, replicated parameters
      >>> grads = jnp.arange(12.0).reshape(4, 3)
      >>> state = comm.simulate(opt.init, 4)(params)
      >>> upd, state = comm.simulate(opt.update, 4)(grads, state, params)
      >>> [round(v, 4) for v in upd[0].tolist()]  # -0.1 * mean of the gradients
      [-0.45, -0.55, -0.65]
    """

    def init_fn(params):
        return DGDState(zero_count(), make_ledger(params, None, None))

    def update_fn(updates, state, params=None, **extra):
        check_extra(extra)
        check_grads("dgd", updates, params if params is not None else updates)
        g = worker_mean(updates, axis_name)
        ledger = one_step_counts(state.ledger, full=1)
        return g, DGDState(optax.safe_increment(state.count), ledger)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def dcgd(
    compressor: Compressor,
    *,
    down: Compressor | None = None,
    key: Any = 0,
    axis_name: AxisName = "workers",
    salt: int = 0,
    mode: str = "dense",
) -> optax.GradientTransformationExtraArgs:
    """Distributed compressed gradient descent (DCGD; QSGD-style): compress, then average.

    For an unbiased compressor :math:`C_m \\in U(\\omega)` (independent across workers) the
    estimate is unbiased with variance :math:`\\le \\omega/M` times the mean squared local
    gradient; for a biased one (Top-K) DCGD can diverge (THEORY.md §3). Bits per worker per
    step: ``compressor.bits(d)`` up and ``d·b`` down (or ``down.bits(d)`` with a downlink
    compressor).

    .. math::

       g^k = \\frac{1}{M} \\sum_{m=1}^{M} C_m(g_m^k) \\quad\\text{or, with }
       ``down``\\text{:}\\quad g^k = C_{\\rm down}\\Big(\\frac{1}{M}\\sum_m C_m(g_m^k)\\Big).

    Theory (THEORY.md §2.2, f_m convex and L_m-smooth, f μ-strongly convex, full local
    gradients): with :math:`\\gamma \\le 1/(L + 2\\omega L_{\\max}/M)`
    (:func:`jaxdist.theory.dcgd_stepsize`),
    :math:`E\\|x^k - x^\\star\\|^2 \\le (1-\\gamma\\mu)^k \\|x^0 - x^\\star\\|^2
    + 2\\gamma\\omega\\sigma_\\star^2/(\\mu M)`: linear convergence to a neighbourhood that
    vanishes only under interpolation (:math:`\\sigma_\\star^2 = 0`).

    Args:
      compressor: the uplink operator ``C_m`` (worker ``m`` uses ``fold_in(key_t, m)``
        unless the operator is shared-key).
      down: optional downlink operator applied by the server to the aggregate (one shared
        key, so every worker decodes the same vector): bidirectional compression (below).
      key: an int seed or a PRNG key, stored in the state.
      axis_name: the worker axis.
      salt: folded into the key, so that two transformations with the same ``key`` draw
        independently.
      mode: ``"dense"`` (pmean of decoded vectors) or ``"gather"`` (all-gather of the
        payloads, then decode); the same numbers.

    Bidirectional compression (``down=``): worker ``m`` sends :math:`C_{W,m}(g_m) \\in
    U(\\omega_W)`, the server averages and broadcasts :math:`C_M(\\cdot) \\in U(\\omega_M)` of
    the mean, and every worker steps on the same decoded message,
    :math:`g^k = C_M(\frac1M\\sum_m C_{W,m}(g_m^k))`; bits per worker per step ``up.bits(d)``
    up and ``down.bits(d)`` down. Theory (Horváth et al. 2019, Thm 9; THEORY.md §2.7,
    nonconvex): with :math:`\beta = 1 + \\omega_M + (\\omega_M+1)\\omega_W/M` and
    :math:`\\eta \\in (0, 2/(\beta L))`, the bound has the multiplicative
    :math:`(\\omega_M+1)(\\omega_W+1)` dependence; :func:`ef21_p` makes it additive.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update(grads, state, params=None)``
      takes this worker's gradient (full or stochastic) and returns the aggregated estimate,
      identical on every worker. Randomness comes from the key in the state only (see the
      key path in :mod:`jaxdist.methods`).

    References:
      Alistarh et al., `QSGD: Communication-Efficient SGD via Gradient Quantization and
      Encoding <https://arxiv.org/abs/1610.02132>`_, 2017; Khirirat, Feyzmahdavian,
      Johansson, Distributed learning with compressed gradients, 2018; Horváth, Ho, Horváth,
      Sahu, Canini, Richtárik, `Natural Compression for Distributed Deep Learning
      <https://arxiv.org/abs/1905.10988>`_, 2019 (Thm 9, bidirectional).
    """
    compressor = check_compressor(compressor, "compressor")
    down = check_downlink(down)
    salt = check_salt(salt)
    mode = check_mode(mode)

    def init_fn(params):
        return DCGDState(init_key(key, salt), zero_count(), make_ledger(params, compressor, down))

    def update_fn(updates, state, params=None, **extra):
        check_extra(extra)
        check_grads("dcgd", updates, params if params is not None else updates)
        k = step_key(state.key, state.count)
        g = compressed_mean(
            compressor, purpose_key(k, UPLINK), updates, axis_name=axis_name, mode=mode
        )
        if down is not None:
            g = down.compress(purpose_key(k, DOWNLINK), g)
        ledger = one_step_counts(state.ledger, compressed=1)
        return g, DCGDState(state.key, optax.safe_increment(state.count), ledger)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
