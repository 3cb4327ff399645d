"""MARINA: compressed gradient differences with random full synchronisations."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdist.comm._aggregate import compressed_mean
from jaxdist.comm._axis import AxisName, uniform_cond, worker_mean
from jaxdist.comm._ledger import Ledger
from jaxdist.compressors._base import Compressor
from jaxdist.compressors._sampling import bernoulli_coin
from jaxdist.methods._base import (
    COIN,
    UPLINK,
    PyTree,
    check_compressor,
    check_extra,
    check_grads,
    check_mode,
    check_salt,
    check_unit_interval,
    init_key,
    make_ledger,
    purpose_key,
    step_key,
    tree_add,
    tree_sub,
    tree_zeros,
    worker_zeros,
    zero_count,
)

__all__ = ["MARINAState", "marina"]


class MARINAState(NamedTuple):
    """State of :func:`marina`.

    Attributes:
      key: the method's key, ``fold_in(key, salt)``.
      count: number of updates so far (int32, the same on every worker).
      prev_grad: this worker's previous gradient :math:`g_m^{k-1}` (per worker).
      g: the previous estimate :math:`\\hat g^{k-1}` (replicated, identical on every worker).
      ledger: exact message counts (:class:`~jaxdist.comm.Ledger`), uplink kinds
        ``"compressed"`` and ``"full"``.
    """

    key: jax.Array
    count: jax.Array
    prev_grad: PyTree
    g: PyTree
    ledger: Ledger


def marina(
    compressor: Compressor,
    p: Any,
    *,
    key: Any = 0,
    axis_name: AxisName = "workers",
    salt: int = 0,
    mode: str = "dense",
) -> optax.GradientTransformationExtraArgs:
    """MARINA: compressed gradient differences, with a full synchronisation with probability p.

    For :math:`C_m \\in U(\\omega)`. At each step a coin :math:`c_k \\sim
    \\mathrm{Bernoulli}(p)` is drawn from the *shared* step key, so every worker takes the
    same branch (it is made axis-invariant by :func:`jaxdist.comm.uniform_cond`, so under
    ``vmap`` a real ``lax.cond`` runs only the taken branch). The first step always
    synchronises (:math:`\\hat g^0 = \\nabla f(x^0)`):

    .. math::

       \\hat g^k = \\begin{cases}
         \\frac1M\\sum_{m} g_m^k & \\text{if } k = 0 \\text{ or } c_k = 1
           \\quad(\\text{uplink } d\\cdot b \\text{ bits}),\\\\
         \\hat g^{k-1} + \\frac1M\\sum_{m} C_m(g_m^k - g_m^{k-1}) & \\text{otherwise}
           \\quad(\\text{uplink } \\texttt{compressor.bits}(d)),
       \\end{cases}

    where :math:`g_m^k` is this worker's gradient at :math:`x^k` (downlink ``d·b`` bits).
    With stochastic gradients the difference uses two different minibatches unless the
    caller evaluates both points on the same one (VR-MARINA); nothing here assumes full
    gradients.

    Theory (THEORY.md §2.4, nonconvex): :math:`\\gamma \\le 1/(L(1 + \\sqrt{(1-p)\\omega/(pM)}))`
    (:func:`jaxdist.theory.marina_stepsize`) gives
    :math:`E\\|\\nabla f(\\hat x^K)\\|^2 \\le 2\\Delta_0/(\\gamma K)`; with
    :math:`p = 1/(\\omega+1)`, :math:`O((1 + \\omega/\\sqrt M) L\\Delta_0/\\varepsilon)` rounds.

    Args:
      compressor: the operator (unbiased for the theory).
      p: the synchronisation probability in (0, 1] (a float or an array, e.g. traced in a
        vmapped sweep).
      key: an int seed or a PRNG key, stored in the state.
      axis_name: the worker axis.
      salt: folded into the key.
      mode: ``"dense"`` or ``"gather"`` aggregation.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state :class:`MARINAState`.

    Raises:
      ValueError: if ``p`` is not in (0, 1].

    References:
      Gorbunov, Burlachenko, Li, Richtárik, `MARINA: Faster Non-Convex Distributed Learning
      with Compression <https://arxiv.org/abs/2102.07845>`_, 2021.
    """
    compressor = check_compressor(compressor, "compressor")
    salt = check_salt(salt)
    mode = check_mode(mode)
    check_unit_interval("p", p)

    def init_fn(params):
        return MARINAState(
            init_key(key, salt),
            zero_count(),
            worker_zeros(params, axis_name),
            tree_zeros(params),
            make_ledger(params, compressor, None, full_up=True),
        )

    def update_fn(updates, state, params=None, **extra):
        del params
        check_extra(extra)
        check_grads("marina", updates, state.prev_grad, "previous gradients")
        k = step_key(state.key, state.count)
        coin = bernoulli_coin(purpose_key(k, COIN), p)
        sync = jnp.logical_or(state.count == 0, coin)

        def full(_):
            return worker_mean(updates, axis_name)

        def compressed(_):
            diff = tree_sub(updates, state.prev_grad)
            mean = compressed_mean(
                compressor, purpose_key(k, UPLINK), diff, axis_name=axis_name, mode=mode
            )
            return tree_add(state.g, mean)

        g = uniform_cond(sync, full, compressed, None, axis_name=axis_name)
        sync_i = sync.astype(jnp.int32)
        ledger = state.ledger.record(
            up={"full": sync_i, "compressed": 1 - sync_i}, down={"full": 1}, rounds=1
        )
        prev = jax.tree_util.tree_map(lambda u, q: u.astype(q.dtype), updates, state.prev_grad)
        new_state = MARINAState(state.key, optax.safe_increment(state.count), prev, g, ledger)
        return g, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
