r"""Local-step methods (THEORY.md §2.8): local GD / local SGD / FedAvg, FedPAQ and Scaffnew.

Both are round-based methods (:class:`jaxdist.methods.RoundMethod`) written for one worker on
the worker axis. Their draws follow the key path of :mod:`jaxdist.methods._base`: the round key
``k`` (the same on every worker) gives

* ``fold_in(k, COIN)`` (``COIN = 2``): the shared draw of the round, i.e. the participants of
  local GD (a shared permutation) and Scaffnew's communication coin;
* ``fold_in(fold_in(k, LOCAL), h)`` (``LOCAL = 3``): the key of local step ``h`` passed to
  ``oracle.grad``; the oracle folds in the worker index, so every worker draws its own
  minibatch (when the run has a batch size; otherwise every call is a full local gradient);
* ``worker_key(fold_in(k, UPLINK))`` (``UPLINK = 0``): the key of FedPAQ's uplink compressor,
  ``fold_in(fold_in(k, UPLINK), m)`` for worker ``m`` (the key itself for a shared-key one).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxdist._validate import check_int, check_number
from jaxdist.comm._aggregate import compressed_mean
from jaxdist.comm._axis import (
    AxisName,
    axis_index,
    axis_size,
    uniform_cond,
    varying,
    worker_key,
    worker_mean,
    worker_sum,
)
from jaxdist.compressors._base import Compressor
from jaxdist.compressors._sampling import bernoulli_coin
from jaxdist.methods._base import (
    COIN,
    UPLINK,
    check_compressor,
    make_ledger,
    purpose_key,
    tree_axpy,
    tree_scale,
    tree_sub,
)
from jaxdist.methods._round import Oracle, RoundMethod

__all__ = ["LOCAL", "local_gd", "local_sgd", "fedavg", "fedpaq", "scaffnew"]

PyTree = Any

LOCAL = 3
"""Purpose index of the local steps' minibatch keys: step ``h`` uses
``fold_in(fold_in(k, LOCAL), h)``."""


def _local_key(key: jax.Array, h: Any) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(key, LOCAL), h)


def _check_positive(name: str, value: Any) -> Any:
    return check_number(name, value, low=0.0, low_open=True)


def _participants(num_participants: int | None, axis_name: AxisName, who: str = "local_gd") -> int:
    """The number of participants S, checked against the axis size M at trace time."""
    M = axis_size(axis_name)
    if num_participants is None:
        return M
    if num_participants > M:
        raise ValueError(
            f"{who}: num_participants={num_participants} exceeds the number of workers "
            f"M={M} on axis {axis_name!r}; it must satisfy 1 <= num_participants <= M"
        )
    return num_participants


def participation(
    key: jax.Array, num_participants: int | None, axis_name: AxisName, who: str = "local_gd"
) -> tuple[int, jax.Array]:
    """``(S, mine)``: the number of participants of the round with key ``key`` and whether this
    worker is one of them.

    The participants are the first S entries of ``jax.random.permutation(fold_in(key, COIN),
    M)`` (the same on every worker); with ``num_participants=None`` (or S = M) every worker
    takes part and nothing is drawn.

    Raises:
      ValueError: ``num_participants > M`` (at trace time; the message names ``who``).
    """
    M = axis_size(axis_name)
    S = _participants(num_participants, axis_name, who)
    if S == M:
        return S, jnp.ones((), bool)
    perm = jax.random.permutation(purpose_key(key, COIN), M)
    chosen = jnp.zeros((M,), bool).at[perm[:S]].set(True)
    return S, chosen[axis_index(axis_name)]


def participant_mean(tree: PyTree, mine: jax.Array, S: int, axis_name: AxisName) -> PyTree:
    """``(1/S) Σ_{m ∈ S_t} tree_m`` on every worker (the plain worker mean when S = M)."""
    if S == axis_size(axis_name):
        return worker_mean(tree, axis_name)
    masked = jax.tree_util.tree_map(lambda d: jnp.where(mine, d, jnp.zeros_like(d)), tree)
    return tree_scale(1.0 / S, worker_sum(masked, axis_name))


def check_unbiased(compressor: Any, who: str) -> Compressor:
    """``compressor`` if it is a jaxdist compressor of the unbiased class U(ω)."""
    compressor = check_compressor(compressor, "compressor")
    if not compressor.unbiased:
        raise ValueError(
            f"{who} needs an unbiased compressor (class U(ω), E C(x) = x), got "
            f"compressor={compressor.name}; a biased one (Top-K, sign) makes the averaged "
            "model update biased: use rand_k, qsgd, natural, ... or an error-feedback method"
        )
    return compressor


# ---------------------------------------------------------------------------------------------
# Local GD / local SGD / FedAvg.


def local_gd(
    learning_rate: Any,
    local_steps: int,
    *,
    server_learning_rate: Any = 1.0,
    num_participants: int | None = None,
    compressor: Compressor | None = None,
    axis_name: AxisName = "workers",
) -> RoundMethod:
    r"""Local GD / local SGD / FedAvg: H local gradient steps, then a (partial) average.

    Round ``t`` from the server model :math:`x^t` (held by every worker), with the set
    :math:`S_t` of participants (all M workers, or S of them drawn uniformly without
    replacement from the round's shared key):

    .. math::

       x_{m,0} = x^t, \qquad x_{m,h+1} = x_{m,h} - \gamma\, g_m(x_{m,h}), \quad h < H,
       \qquad x^{t+1} = x^t + \eta_s \Big(\frac{1}{|S_t|}\sum_{m \in S_t} x_{m,H} - x^t\Big),

    with :math:`g_m` the full local gradient :math:`\nabla f_m`, or a minibatch gradient when
    :func:`jaxdist.run` has a ``batch_size`` (local SGD): step ``h`` calls
    ``oracle.grad(x, fold_in(fold_in(k, LOCAL), h))`` (see the module's key path). The
    participants are the first S entries of ``jax.random.permutation(fold_in(k, COIN), M)``,
    the same on every worker. Idle workers send nothing: under the simulation their local
    steps are computed and masked out, and they report 0 gradient evaluations.

    With a ``compressor`` (FedPAQ, :func:`fedpaq`) each participant sends
    :math:`C_m(x_{m,H} - x^t)` instead of its model, and the server averages the compressed
    updates: :math:`x^{t+1} = x^t + \eta_s \frac{1}{|S_t|}\sum_{m \in S_t} C_m(x_{m,H} -
    x^t)`; worker ``m`` draws from ``worker_key(fold_in(k, UPLINK))``.

    **Theory** (THEORY.md §2.8). On quadratics :math:`f_m = \tfrac12 x^\top A_m x - b_m^\top
    x` with full participation and :math:`\eta_s = 1`, the round map is :math:`x^+ = x -
    \frac1M\sum_m P_m(x - x_m^\star)` with :math:`P_m = I - (I - \gamma A_m)^H`, so local GD
    converges to the fixed point :math:`x_{fp} = (\sum_m P_m)^{-1}\sum_m P_m x_m^\star`
    (:func:`jaxdist.theory.local_gd_fixed_point`), which differs from :math:`x^\star` in
    general (client drift; H = 1 gives :math:`x^\star`: it is GD with step γ). If
    :math:`\gamma \le 1/L_{\max}` and every :math:`A_m \succ 0` the round map contracts. In
    general (Khaled et al.; Koloskova et al.) the neighbourhood scales as
    :math:`O(\gamma^2 L (H-1)^2 \sigma_\star^2)` [constants unverified].

    **Communication** per round: each participant receives :math:`x^t` (one full message
    down) and sends :math:`x_{m,H}` (one full message up; with a compressor one
    ``compressor.bits(params)`` message of kind ``"compressed"``); idle workers' ledgers
    record no message. Every worker's ledger counts the round (``rounds`` += 1): the system
    has one communication round per round.

    Args:
      learning_rate: local step size γ > 0 (a float, or a traced scalar in a sweep).
      local_steps: H >= 1 local steps per round (a Python int).
      server_learning_rate: server step size :math:`\eta_s > 0` applied to the averaged
        update (1.0: plain model averaging).
      num_participants: S, the number of workers taking part in each round, with
        ``1 <= S <= M`` (checked against the axis size when the method is traced); ``None``
        for full participation.
      compressor: ``None`` (send the model), or an unbiased jaxdist compressor applied to the
        model update :math:`x_{m,H} - x^t` (FedPAQ; see :func:`fedpaq`).
      axis_name: the worker axis.

    Returns:
      A :class:`~jaxdist.methods.RoundMethod` whose state is ``{"x": x^t, "ledger": Ledger}``
      and whose ``params`` is the server model :math:`x^t`. ``info`` is
      ``{"grad_evals": H for a participant, 0 for an idle worker}``.

    Raises:
      ValueError: ``learning_rate <= 0``, ``server_learning_rate <= 0``, ``local_steps < 1``,
        ``num_participants < 1``, ``num_participants > M`` (at trace time), a biased
        ``compressor``, or a compressor that reads the worker axis (Perm-K) with partial
        participation (at trace time).
      TypeError: a non-integer ``local_steps`` or ``num_participants``, or a ``compressor``
        that is not a jaxdist compressor.

    References:
      Khaled, Mishchenko, Richtárik, `Tighter theory for local SGD on identical and
      heterogeneous data <https://arxiv.org/abs/1909.04746>`_, 2020; Koloskova et al., `A
      unified theory of decentralized SGD with changing topology and local updates
      <https://arxiv.org/abs/2003.10422>`_, 2020; McMahan et al., `Communication-efficient
      learning of deep networks from decentralized data <https://arxiv.org/abs/1602.05629>`_,
      2017 (FedAvg); Reisizadeh et al., `FedPAQ <https://arxiv.org/abs/1909.13014>`_, 2020.
    """
    who = "local_gd" if compressor is None else "fedpaq"
    learning_rate = _check_positive("learning_rate", learning_rate)
    server_learning_rate = _check_positive("server_learning_rate", server_learning_rate)
    H = check_int("local_steps", local_steps, low=1)
    if num_participants is not None:
        num_participants = check_int("num_participants", num_participants, low=1)
    if compressor is not None:
        compressor = check_unbiased(compressor, who)

    def init(params: PyTree) -> dict[str, Any]:
        _participants(num_participants, axis_name, who)
        return {"x": params, "ledger": make_ledger(params, compressor, None)}

    def round_fn(state: dict[str, Any], oracle: Oracle, key: jax.Array):
        x = state["x"]
        S, mine = participation(key, num_participants, axis_name, who)

        def local(x_m, h):
            g = oracle.grad(x_m, _local_key(key, h))
            return tree_axpy(-learning_rate, g, x_m), None

        x_m, _ = lax.scan(local, x, jnp.arange(H, dtype=jnp.int32))
        delta = tree_sub(x_m, x)
        if compressor is None:
            avg = participant_mean(delta, mine, S, axis_name)
        elif S == axis_size(axis_name):
            avg = compressed_mean(compressor, purpose_key(key, UPLINK), delta, axis_name=axis_name)
        else:
            if compressor.needs_axis:
                raise ValueError(
                    f"fedpaq: compressor={compressor.name} reads the worker axis (its messages "
                    "are unbiased only summed over all M workers); with num_participants="
                    f"{S} < M use an independent compressor such as rand_k"
                )
            wkey = worker_key(
                purpose_key(key, UPLINK), shared=compressor.shared_key, axis_name=axis_name
            )
            avg = participant_mean(compressor.compress(wkey, delta), mine, S, axis_name)
        x_new = tree_axpy(server_learning_rate, avg, x)
        count = mine.astype(jnp.int32)
        up = {"full": count} if compressor is None else {"compressed": count}
        ledger = state["ledger"].record(up=up, down={"full": count}, rounds=1)
        return {"x": x_new, "ledger": ledger}, {"grad_evals": H * count}

    return RoundMethod(init, round_fn, lambda s: s["x"])


def fedpaq(
    learning_rate: Any,
    local_steps: int,
    compressor: Compressor,
    *,
    num_participants: int | None = None,
    server_learning_rate: Any = 1.0,
    axis_name: AxisName = "workers",
) -> RoundMethod:
    r"""FedPAQ: local GD / local SGD whose participants send a compressed model update.

    :func:`local_gd` with ``compressor``: each participant takes H local (stochastic with the
    run's ``batch_size``) steps from :math:`x^t` and sends the unbiased compression of its
    update; the server averages the decoded updates:

    .. math::

       x^{t+1} = x^t + \eta_s\,\frac{1}{|S_t|}\sum_{m\in S_t} C_m\big(x_{m,H} - x^t\big),
       \qquad \mathbb E\,C_m(v) = v .

    Worker ``m``'s compressor draws from ``fold_in(fold_in(k, UPLINK), m)`` (``k`` the round
    key; the key itself for a shared-key operator), the participants from ``fold_in(k,
    COIN)`` as in :func:`local_gd`.

    **Theory** (Reisizadeh et al. 2020, Thm 1–2; not in THEORY.md, constants unverified):
    since :math:`C_m` is unbiased, the averaged update is an unbiased estimate of local GD's,
    with variance at most :math:`\frac{\omega}{|S_t|^2}\sum_{m\in S_t}\|x_{m,H} - x^t\|^2`;
    with a constant step size the iterates converge linearly to a neighbourhood of local
    GD's fixed point :math:`x_{fp}` (:func:`jaxdist.theory.local_gd_fixed_point`) whose size
    grows with ω and γ (the paper's strongly convex rate :math:`O(1/T)` uses decaying steps).

    **Communication** per participant and round: one compressed message up
    (``compressor.bits(params)`` bits, ledger kind ``"compressed"``), the full model down;
    idle workers nothing.

    Args:
      learning_rate: local step size γ > 0.
      local_steps: H >= 1 local steps per round.
      compressor: an unbiased jaxdist compressor (``rand_k``, ``qsgd``, ``natural``, ...);
        biased ones are refused. Axis-reading ones (Perm-K) need full participation.
      num_participants: S participants per round (``1 <= S <= M``), ``None`` for all.
      server_learning_rate: server step size :math:`\eta_s > 0`.
      axis_name: the worker axis.

    Returns:
      The :class:`~jaxdist.methods.RoundMethod` of :func:`local_gd` with this compressor.

    Raises:
      ValueError: as :func:`local_gd`; a biased compressor.
      TypeError: a ``compressor`` that is not a jaxdist compressor.

    References:
      Reisizadeh, Mokhtari, Hassani, Jadbabaie, Pedarsani, `FedPAQ: A communication-efficient
      federated learning method with periodic averaging and quantization
      <https://arxiv.org/abs/1909.13014>`_, AISTATS 2020.
    """
    if compressor is None:
        raise TypeError("fedpaq: compressor must be a jaxdist Compressor, got None")
    return local_gd(
        learning_rate,
        local_steps,
        server_learning_rate=server_learning_rate,
        num_participants=num_participants,
        compressor=compressor,
        axis_name=axis_name,
    )


def local_sgd(
    learning_rate: Any,
    local_steps: int,
    *,
    server_learning_rate: Any = 1.0,
    num_participants: int | None = None,
    axis_name: AxisName = "workers",
) -> RoundMethod:
    r"""Local SGD: :func:`local_gd` run with minibatch gradients.

    The same method as :func:`local_gd` (THEORY.md §2.8): the local steps are stochastic
    when :func:`jaxdist.run` is given a ``batch_size`` (step ``h`` of round ``t`` draws its
    minibatch from ``fold_in(fold_in(k_t, LOCAL), h)``, per worker), full otherwise.
    Theory and rate as for :func:`local_gd`: with full gradients it converges to the drift
    fixed point :math:`x_{fp}`; minibatches add a noise neighbourhood
    (Khaled et al. 2020) [constants unverified].

    .. math::

       x_{m,h+1} = x_{m,h} - \gamma\, \nabla f_m(x_{m,h}; \xi_{m,h}), \qquad
       x^{t+1} = x^t + \eta_s\Big(\frac{1}{|S_t|}\sum_{m\in S_t} x_{m,H} - x^t\Big).

    Args:
      learning_rate: local step size γ > 0.
      local_steps: H >= 1 local steps per round.
      server_learning_rate: server step size :math:`\eta_s > 0`.
      num_participants: S participants per round (``1 <= S <= M``), ``None`` for all.
      axis_name: the worker axis.

    Returns:
      The :class:`~jaxdist.methods.RoundMethod` of :func:`local_gd`.

    References:
      Khaled, Mishchenko, Richtárik, `Tighter theory for local SGD on identical and
      heterogeneous data <https://arxiv.org/abs/1909.04746>`_, 2020.
    """
    return local_gd(
        learning_rate,
        local_steps,
        server_learning_rate=server_learning_rate,
        num_participants=num_participants,
        axis_name=axis_name,
    )


def fedavg(
    learning_rate: Any,
    local_steps: int,
    *,
    num_participants: int | None = None,
    server_learning_rate: Any = 1.0,
    axis_name: AxisName = "workers",
) -> RoundMethod:
    r"""FedAvg: :func:`local_gd` with (optionally) partial participation.

    The same method as :func:`local_gd` (THEORY.md §2.8): S of the M clients, drawn from the
    round's shared key, take H local (stochastic, with the run's ``batch_size``) steps from
    the server model and the server averages their models. Theory and rate as for
    :func:`local_gd` (client drift towards :math:`x_{fp} \ne x^\star` on heterogeneous data;
    only the participants' bits are counted).

    .. math::

       x^{t+1} = x^t + \eta_s\Big(\frac{1}{S}\sum_{m\in S_t} x_{m,H} - x^t\Big).

    Args:
      learning_rate: client step size γ > 0.
      local_steps: H >= 1 local steps per round.
      num_participants: S clients per round (``1 <= S <= M``), ``None`` for all.
      server_learning_rate: server step size :math:`\eta_s > 0`.
      axis_name: the worker axis.

    Returns:
      The :class:`~jaxdist.methods.RoundMethod` of :func:`local_gd`.

    References:
      McMahan, Moore, Ramage, Hampson, Agüera y Arcas, `Communication-efficient learning of
      deep networks from decentralized data <https://arxiv.org/abs/1602.05629>`_, 2017.
    """
    return local_gd(
        learning_rate,
        local_steps,
        server_learning_rate=server_learning_rate,
        num_participants=num_participants,
        axis_name=axis_name,
    )


# ---------------------------------------------------------------------------------------------
# Scaffnew / ProxSkip.


def scaffnew(learning_rate: Any, p: Any, *, axis_name: AxisName = "workers") -> RoundMethod:
    r"""Scaffnew (ProxSkip for consensus): local steps with control variates, random averaging.

    One round is one iteration; every worker keeps :math:`x_m` and a control variate
    :math:`h_m` (initialised to 0, so :math:`\sum_m h_m = 0` throughout). With a coin
    :math:`\theta_t \sim \mathrm{Bernoulli}(p)` shared by every worker
    (``bernoulli_coin(fold_in(k, COIN), p)``, exactly the same on all workers):

    .. math::

       \hat x_m &= x_m - \gamma\big(\nabla f_m(x_m) - h_m\big), \\
       x_m^+ &= \begin{cases} \frac1M\sum_j \big(\hat x_j - \tfrac{\gamma}{p} h_j\big)
                 & \theta_t = 1 \text{ (communicate)}, \\
                 \hat x_m & \theta_t = 0, \end{cases} \\
       h_m^+ &= h_m + \tfrac{p}{\gamma}\big(x_m^+ - \hat x_m\big).

    (THEORY.md §2.8 and §2.10, the form checked in NumPy: :math:`\sum_m h_m` stays 0.) The
    gradient is the full local gradient, or a minibatch one with the run's ``batch_size``
    (key ``fold_in(fold_in(k, LOCAL), 0)``).

    **Theory** (THEORY.md §2.8, Thm 6 restated in Variance-Reduced ProxSkip): for
    :math:`0 < \gamma \le 1/L` and :math:`p \in (0, 1]`,
    :math:`\mathbb E\,\Psi_T \le (1 - \zeta)^T \Psi_0` with :math:`\zeta = \min\{\gamma\mu,
    p^2\}` (:func:`jaxdist.theory.scaffnew_rate`) and
    :math:`\Psi_t = \sum_m \|x_{m,t} - x^\star\|^2 + \frac{\gamma^2}{p^2}\sum_m \|h_{m,t} -
    \nabla f_m(x^\star)\|^2` (:func:`jaxdist.theory.scaffnew_lyapunov_weight`). With
    :math:`\gamma = 1/L` (:func:`jaxdist.theory.scaffnew_stepsize`) and :math:`p = 1/\sqrt
    \kappa` (:func:`jaxdist.theory.scaffnew_probability`): :math:`O(\kappa \log 1/\varepsilon)`
    iterations and :math:`O(\sqrt\kappa \log 1/\varepsilon)` expected communications. It
    converges to :math:`x^\star` itself (no client drift). With :math:`p = 1` it is GD with
    step γ (every round averages, and :math:`x^+ = x - \gamma \nabla f(x)`).

    **The model it stands behind** (``params``): the last averaged model, :math:`x_m` right
    after the last communication (:math:`x^0` before the first). Every worker holds it, it
    costs no extra communication, and it is one of the iterates :math:`x_{m,\tau}` the
    theorem bounds (at a communication time τ all :math:`x_{m,\tau}` are equal). The
    per-worker iterates are ``state["x"]``.

    **Communication** only when :math:`\theta_t = 1`: one full message up
    (:math:`\hat x_m - \frac{\gamma}{p}h_m`) and one down (the average); the ledger's
    ``rounds`` grows by :math:`\theta_t`.

    Args:
      learning_rate: step size γ > 0 (theory: :math:`\gamma \le 1/L`).
      p: probability of communicating in a round, in (0, 1].
      axis_name: the worker axis.

    Returns:
      A :class:`~jaxdist.methods.RoundMethod` with state ``{"x": x_m, "h": h_m, "server":
      last averaged model, "ledger": Ledger}`` and ``params`` the last averaged model.
      ``info`` is ``{"grad_evals": 1, "communicated": θ_t}`` (int; summed over rounds by the
      runner it is the number of communications).

    Raises:
      ValueError: ``learning_rate <= 0`` or ``p`` outside (0, 1].

    References:
      Mishchenko, Malinovsky, Stich, Richtárik, `ProxSkip: yes! Local gradient steps provably
      lead to communication acceleration! Finally! <https://arxiv.org/abs/2202.09357>`_,
      ICML 2022.
    """
    learning_rate = _check_positive("learning_rate", learning_rate)
    p = check_number("p", p, low=0.0, high=1.0, low_open=True)

    def init(params: PyTree) -> dict[str, Any]:
        x = varying(params, axis_name)
        h = varying(jax.tree_util.tree_map(jnp.zeros_like, params), axis_name)
        return {"x": x, "h": h, "server": x, "ledger": make_ledger(params, None, None)}

    def round_fn(state: dict[str, Any], oracle: Oracle, key: jax.Array):
        x, h = state["x"], state["h"]
        g = oracle.grad(x, _local_key(key, 0))
        x_hat = tree_axpy(-learning_rate, tree_sub(g, h), x)
        theta = bernoulli_coin(purpose_key(key, COIN), p)
        ratio = learning_rate / p

        def communicate(operands):
            x_hat, h, _ = operands
            x_new = worker_mean(tree_axpy(-ratio, h, x_hat), axis_name)
            x_new = varying(x_new, axis_name)
            return x_new, x_new

        def skip(operands):
            x_hat, _, server = operands
            return x_hat, server

        x_new, server = uniform_cond(
            theta, communicate, skip, (x_hat, h, state["server"]), axis_name=axis_name
        )
        h_new = tree_axpy(1.0 / ratio, tree_sub(x_new, x_hat), h)
        count = theta.astype(jnp.int32)
        ledger = state["ledger"].record(up={"full": count}, down={"full": count}, rounds=count)
        new_state = {"x": x_new, "h": h_new, "server": server, "ledger": ledger}
        return new_state, {"grad_evals": jnp.ones((), jnp.int32), "communicated": count}

    return RoundMethod(init, round_fn, lambda s: s["server"])
