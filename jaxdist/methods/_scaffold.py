r"""SCAFFOLD (THEORY.md §2.8, §2.10): local steps corrected by control variates.

A round-based method (:class:`jaxdist.methods.RoundMethod`) written for one worker on the
worker axis, on the key path of :mod:`jaxdist.methods._local`: the participants from
``fold_in(k, COIN)`` (a shared permutation), local step ``h``'s minibatch key
``fold_in(fold_in(k, LOCAL), h)``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxdist._validate import check_int
from jaxdist.comm._axis import AxisName, axis_size, varying, worker_sum
from jaxdist.methods._base import make_ledger, tree_axpy, tree_select, tree_sub
from jaxdist.methods._local import (
    _check_positive,
    _local_key,
    _participants,
    participant_mean,
    participation,
)
from jaxdist.methods._round import Oracle, RoundMethod

__all__ = ["scaffold"]

PyTree = Any


def scaffold(
    local_learning_rate: Any,
    local_steps: int,
    *,
    server_learning_rate: Any = 1.0,
    num_participants: int | None = None,
    axis_name: AxisName = "workers",
) -> RoundMethod:
    r"""SCAFFOLD (option II): K local steps corrected by control variates :math:`c_i`, c.

    The server holds :math:`x` and :math:`c` (every worker has a copy), worker i its control
    variate :math:`c_i`; :math:`c = c_i = 0` at the start. In a round with participants
    :math:`S_t` (all N = M workers, or S drawn from the round's shared key as in
    :func:`jaxdist.methods.local_gd`), each participant i runs

    .. math::

       y_i &\leftarrow x, \qquad y_i \leftarrow y_i - \eta_l\big(g_i(y_i) - c_i + c\big)
       \quad (K \text{ times}), \\
       c_i^+ &= c_i - c + \frac{x - y_i}{K\eta_l} \quad \text{(option II)}, \qquad
       \Delta y_i = y_i - x, \quad \Delta c_i = c_i^+ - c_i,

    and the server updates

    .. math::

       x \leftarrow x + \frac{\eta_g}{|S_t|}\sum_{i\in S_t}\Delta y_i, \qquad
       c \leftarrow c + \frac1N\sum_{i \in S_t}\Delta c_i .

    Idle workers keep their :math:`c_i`. :math:`g_i` is the full local gradient, or a
    minibatch one with the run's ``batch_size`` (step ``h`` uses the key ``fold_in(fold_in(k,
    LOCAL), h)``, per worker). Option II makes :math:`c_i^+` exactly the mean of the local
    gradients :math:`g_i(y_{i,h})` along the K steps.

    **Theory** (THEORY.md §2.10, checked in NumPy; rate constants unverified): with full
    gradients it converges to :math:`x^\star` itself, with no client drift, where local GD /
    FedAvg converges to :math:`x_{fp} \ne x^\star`
    (:func:`jaxdist.theory.local_gd_fixed_point`). With :math:`\eta_l = 1/(KL)` and
    :math:`\eta_g = 1` the rounds to accuracy grow like :math:`\kappa^{1.03}` (GD-like; the
    theory's :math:`\tilde O(\sigma^2/(\mu KS\varepsilon) + L/\mu + N/S)` rounds, recalled
    step sizes :math:`K\eta_l\eta_g \le \min\{1/(81L), S/(15\mu N)\}` [unverified]).

    **Communication** per participant and round: down :math:`x` and :math:`c` (two full
    messages), up :math:`\Delta y_i` and :math:`\Delta c_i` (two full messages); idle workers
    send and receive nothing. Every ledger counts the round (``rounds`` += 1).

    Args:
      local_learning_rate: local step size :math:`\eta_l > 0` (a float or a traced scalar).
      local_steps: K >= 1 local steps per round (a Python int).
      server_learning_rate: global step size :math:`\eta_g > 0`.
      num_participants: S workers per round (``1 <= S <= M``, checked at trace time),
        ``None`` for all.
      axis_name: the worker axis.

    Returns:
      A :class:`~jaxdist.methods.RoundMethod` with state ``{"x": x, "c": c, "c_i": c_i,
      "ledger": Ledger}`` and ``params`` the server model :math:`x`. ``info`` is
      ``{"grad_evals": K for a participant, 0 for an idle worker}``.

    Raises:
      ValueError: ``local_learning_rate <= 0``, ``server_learning_rate <= 0``,
        ``local_steps < 1``, ``num_participants < 1``, or ``num_participants > M`` (at trace
        time).
      TypeError: a non-integer ``local_steps`` or ``num_participants``.

    References:
      Karimireddy, Kale, Mohri, Reddi, Stich, Suresh, `SCAFFOLD: Stochastic controlled
      averaging for federated learning <https://arxiv.org/abs/1910.06378>`_, ICML 2020.
    """
    local_learning_rate = _check_positive("local_learning_rate", local_learning_rate)
    server_learning_rate = _check_positive("server_learning_rate", server_learning_rate)
    K = check_int("local_steps", local_steps, low=1)
    if num_participants is not None:
        num_participants = check_int("num_participants", num_participants, low=1)

    def init(params: PyTree) -> dict[str, Any]:
        _participants(num_participants, axis_name, "scaffold")
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return {
            "x": params,
            "c": zeros,
            "c_i": varying(zeros, axis_name),
            "ledger": make_ledger(params, None, None),
        }

    def round_fn(state: dict[str, Any], oracle: Oracle, key: jax.Array):
        x, c, c_i = state["x"], state["c"], state["c_i"]
        S, mine = participation(key, num_participants, axis_name, "scaffold")
        correction = tree_sub(c, c_i)  # − c_i + c

        def local(y, h):
            g = oracle.grad(y, _local_key(key, h))
            step = jax.tree_util.tree_map(lambda u, v: (u + v).astype(u.dtype), g, correction)
            return tree_axpy(-local_learning_rate, step, y), None

        y, _ = lax.scan(local, x, jnp.arange(K, dtype=jnp.int32))
        dy = tree_sub(y, x)
        c_plus = tree_axpy(
            -1.0 / (K * local_learning_rate), dy, tree_sub(c_i, c)
        )  # c_i − c + (x − y)/(K η_l)
        dc = tree_sub(c_plus, c_i)
        x_new = tree_axpy(server_learning_rate, participant_mean(dy, mine, S, axis_name), x)
        masked_dc = jax.tree_util.tree_map(lambda d: jnp.where(mine, d, jnp.zeros_like(d)), dc)
        c_new = tree_axpy(1.0 / axis_size(axis_name), worker_sum(masked_dc, axis_name), c)
        c_i_new = tree_select(mine, c_plus, c_i)
        count = mine.astype(jnp.int32)
        ledger = state["ledger"].record(up={"full": 2 * count}, down={"full": 2 * count}, rounds=1)
        new_state = {"x": x_new, "c": c_new, "c_i": c_i_new, "ledger": ledger}
        return new_state, {"grad_evals": K * count}

    return RoundMethod(init, round_fn, lambda s: s["x"])
