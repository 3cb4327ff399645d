"""Error feedback: EF14 (classic), EF21 (Markov compressor) and EF21-P (primal, downlink)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
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
    resolve,
    step_key,
    tree_add,
    tree_axpy,
    tree_sub,
    tree_zeros,
    worker_zeros,
    zero_count,
)
from jaxdist.methods._diana import default_shift_step, diana_update

__all__ = ["EF14State", "EF21State", "EF21PState", "ef14", "ef21", "ef21_p"]


class EF14State(NamedTuple):
    """State of :func:`ef14`.

    Attributes:
      key: the method's key, ``fold_in(key, salt)``.
      count: number of updates so far (int32, the same on every worker).
      e_m: this worker's error :math:`e_m` (per worker), in gradient units.
      ledger: exact message counts (:class:`~jaxdist.comm.Ledger`).
    """

    key: jax.Array
    count: jax.Array
    e_m: PyTree
    ledger: Ledger


class EF21State(NamedTuple):
    """State of :func:`ef21`.

    Attributes:
      key: the method's key, ``fold_in(key, salt)``.
      count: number of updates so far (int32, the same on every worker).
      g_m: this worker's estimate :math:`g_m` (per worker).
      g: the aggregate :math:`g = \\frac1M\\sum_m g_m` (replicated, identical on every worker).
      ledger: exact message counts (:class:`~jaxdist.comm.Ledger`).
    """

    key: jax.Array
    count: jax.Array
    g_m: PyTree
    g: PyTree
    ledger: Ledger


class EF21PState(NamedTuple):
    """State of :func:`ef21_p`.

    Attributes:
      key: the method's key, ``fold_in(key, salt)``.
      count: number of updates so far (int32, the same on every worker).
      h_m: this worker's DIANA shift (per worker).
      h: the server's DIANA shift (replicated).
      server: replicated. With ``learning_rate`` given: the server's model :math:`x^t`.
        Without: the downlink error :math:`z^t = (w^t - x^t)/\\gamma` in gradient units.
      ledger: exact message counts (:class:`~jaxdist.comm.Ledger`).
    """

    key: jax.Array
    count: jax.Array
    h_m: PyTree
    h: PyTree
    server: PyTree
    ledger: Ledger


def ef14(
    compressor: Compressor,
    *,
    key: Any = 0,
    axis_name: AxisName = "workers",
    salt: int = 0,
    mode: str = "dense",
) -> optax.GradientTransformationExtraArgs:
    """Classic error feedback (EF14 / EF-SGD): compress the gradient plus the past error.

    For a contractive :math:`C \\in B(\\alpha)` (Top-K, scaled sign, ...). Bits per worker per
    step: ``compressor.bits(d)`` up, ``d·b`` down. Written in gradient units, because the
    learning rate comes after this transformation in an ``optax.chain``:

    .. math::

       p_m^k = g_m^k + e_m^k, \\qquad \\Delta_m^k = C_m(p_m^k), \\qquad
       e_m^{k+1} = p_m^k - \\Delta_m^k, \\qquad
       \\hat g^k = \\frac1M\\sum_{m=1}^{M}\\Delta_m^k,

    with :math:`e_m^0 = 0`. The papers accumulate :math:`\\gamma`-scaled gradients instead:
    :math:`p'_m = \\gamma g_m + e'_m`, :math:`x \\leftarrow x - \\frac1M\\sum_m C(p'_m)`,
    :math:`e'_m = p'_m - C(p'_m)`. For a constant step :math:`\\gamma` and a positively
    homogeneous compressor (:math:`C(\\gamma p) = \\gamma C(p)`: Top-K, Rand-K, scaled sign,
    identity) the two produce the same iterates, with :math:`e' = \\gamma e`, when this is
    followed by ``optax.sgd(γ)``. For non-homogeneous operators (natural compression,
    quantisers with fixed levels) or step-size schedules they differ.

    Theory: EF-SGD matches SGD's rate, compression entering only higher-order terms
    (Karimireddy et al. 2019); distributed rate
    :math:`O(\\delta L e^{-\\mu K/(\\delta L)} + (C + \\delta D)/(K\\mu))` with
    :math:`\\delta = 1/\\alpha` (Beznosikov et al. 2020; THEORY.md §2.5). No verified constant
    step size is tabulated; on the Top-1 counterexample the EF21 step
    (:func:`jaxdist.theory.ef21_stepsize`) converges (THEORY.md §3).

    Args:
      compressor: the operator (contractive for the theory).
      key: an int seed or a PRNG key, stored in the state.
      axis_name: the worker axis.
      salt: folded into the key.
      mode: ``"dense"`` or ``"gather"`` aggregation.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state :class:`EF14State`;
      ``update`` returns :math:`\\hat g^k`, identical on every worker.

    References:
      Seide, Fu, Droppo, Li, Yu, 1-bit stochastic gradient descent and its application to
      data-parallel distributed training of speech DNNs, Interspeech 2014; Stich, Cordonnier,
      Jaggi, `Sparsified SGD with Memory <https://arxiv.org/abs/1809.07599>`_, 2018;
      Karimireddy, Rebjock, Stich, Jaggi, `Error Feedback Fixes SignSGD and other Gradient
      Compression Schemes <https://arxiv.org/abs/1901.09847>`_, 2019.
    """
    compressor = check_compressor(compressor, "compressor")
    salt = check_salt(salt)
    mode = check_mode(mode)

    def init_fn(params):
        return EF14State(
            init_key(key, salt),
            zero_count(),
            worker_zeros(params, axis_name),
            make_ledger(params, compressor, None),
        )

    def update_fn(updates, state, params=None, **extra):
        del params
        check_extra(extra)
        check_grads("ef14", updates, state.e_m, "errors e_m")
        k = step_key(state.key, state.count)
        p = tree_add(updates, state.e_m)
        g, delta = compressed_mean(
            compressor,
            purpose_key(k, UPLINK),
            p,
            axis_name=axis_name,
            mode=mode,
            return_local=True,
        )
        e_m = tree_sub(p, delta)
        ledger = one_step_counts(state.ledger, compressed=1)
        return g, EF14State(state.key, optax.safe_increment(state.count), e_m, ledger)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def ef21(
    compressor: Compressor,
    *,
    key: Any = 0,
    axis_name: AxisName = "workers",
    salt: int = 0,
    mode: str = "dense",
) -> optax.GradientTransformationExtraArgs:
    """EF21: each worker keeps an estimate of its gradient and sends compressed corrections.

    For a contractive :math:`C \\in B(\\alpha)`. Bits per worker per step:
    ``compressor.bits(d)`` up, ``d·b`` down.

    .. math::

       c_m^k = C_m(g_m^k - \\hat g_m^{k-1}), \\qquad \\hat g_m^k = \\hat g_m^{k-1} + c_m^k,
       \\qquad \\hat g^k = \\hat g^{k-1} + \\frac1M\\sum_{m=1}^{M} c_m^k,

    returning :math:`\\hat g^k`. The state starts at :math:`\\hat g_m^{-1} = 0`, so the first
    update gives exactly the paper's initialisation :math:`\\hat g_m^0 = C(\\nabla f_m(x^0))`,
    :math:`\\hat g^0 = \\frac1M\\sum_m C(\\nabla f_m(x^0))` with no special branch.

    Theory (THEORY.md §2.6): with :math:`\\theta = 1-\\sqrt{1-\\alpha}`,
    :math:`\\beta = (1-\\alpha)/(1-\\sqrt{1-\\alpha})`,
    :math:`\\tilde L = \\sqrt{\\frac1M\\sum_m L_m^2}`: nonconvex, :math:`0 < \\gamma \\le
    1/(L + \\tilde L\\sqrt{\\beta/\\theta})` gives :math:`E\\|\\nabla f(\\hat x^T)\\|^2 \\le
    2\\Delta_0/(\\gamma T) + E G^0/(\\theta T)`; PL, :math:`\\gamma \\le \\min\\{1/(L + \\tilde
    L\\sqrt{2\\beta/\\theta}), \\theta/(2\\mu)\\}` gives linear convergence
    (:func:`jaxdist.theory.ef21_stepsize`).

    Args:
      compressor: the operator (contractive for the theory).
      key: an int seed or a PRNG key, stored in the state.
      axis_name: the worker axis.
      salt: folded into the key.
      mode: ``"dense"`` or ``"gather"`` aggregation.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state :class:`EF21State`.

    References:
      Richtárik, Sokolov, Fatkhullin, `EF21: A New, Simpler, Theoretically Better, and
      Practically Faster Error Feedback <https://arxiv.org/abs/2106.05203>`_, 2021.
    """
    compressor = check_compressor(compressor, "compressor")
    salt = check_salt(salt)
    mode = check_mode(mode)

    def init_fn(params):
        return EF21State(
            init_key(key, salt),
            zero_count(),
            worker_zeros(params, axis_name),
            tree_zeros(params),
            make_ledger(params, compressor, None),
        )

    def update_fn(updates, state, params=None, **extra):
        del params
        check_extra(extra)
        check_grads("ef21", updates, state.g_m, "estimates g_m")
        k = step_key(state.key, state.count)
        mean_c, c = compressed_mean(
            compressor,
            purpose_key(k, UPLINK),
            tree_sub(updates, state.g_m),
            axis_name=axis_name,
            mode=mode,
            return_local=True,
        )
        g_m = tree_add(state.g_m, c)
        g = tree_add(state.g, mean_c)
        ledger = one_step_counts(state.ledger, compressed=1)
        return g, EF21State(state.key, optax.safe_increment(state.count), g_m, g, ledger)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def ef21_p(
    up: Compressor,
    down: Compressor,
    *,
    shift_step: Any = None,
    learning_rate: optax.ScalarOrSchedule | None = None,
    key: Any = 0,
    axis_name: AxisName = "workers",
    salt: int = 0,
    mode: str = "dense",
) -> optax.GradientTransformationExtraArgs:
    """EF21-P + DIANA: primal error feedback on the downlink, DIANA on the uplink.

    ``up`` is unbiased (:math:`U(\\omega)`, DIANA uplink), ``down`` contractive
    (:math:`B(\\alpha_P)`). Bits per worker per step: ``up.bits(d)`` up and ``down.bits(d)``
    down. The server keeps the model :math:`x^t`, the workers hold
    :math:`w^t` (the ``params``) and compute gradients there:

    .. math::

       \\hat g^t = \\mathrm{DIANA}(\\{\\nabla f_m(w^t)\\}), \\qquad
       x^{t+1} = x^t - \\gamma \\hat g^t, \\qquad
       w^{t+1} = w^t + C_P(x^{t+1} - w^t), \\qquad w^0 = x^0.

    Two ways to use it:

    * ``learning_rate=γ`` (the paper's algorithm, exactly, for any ``down`` and any schedule):
      ``update(grads, state, params)`` needs ``params`` (:math:`w^t`) and returns the
      parameter change :math:`w^{t+1} - w^t = C_P(x^{t+1} - w^t)`. It is a complete optimizer:
      apply the updates with ``optax.apply_updates`` and put **no** ``optax.sgd`` after it.
    * ``learning_rate=None`` (for ``optax.chain(ef21_p(...), optax.sgd(γ))``): in gradient
      units, with :math:`z^t = (w^t - x^t)/\\gamma` it returns
      :math:`u^t = C_P(z^t + \\hat g^t)` and keeps :math:`z^{t+1} = z^t + \\hat g^t - u^t`
      (error feedback on the aggregate). Followed by ``optax.sgd(γ)`` with a constant
      :math:`\\gamma` and a positively homogeneous ``down`` (Top-K, Rand-K, scaled sign) this
      gives the same iterates :math:`w^t`; ``params`` is not needed.

    Theory: errors of the two directions add instead of multiplying (Gruntkowska et al.;
    THEORY.md §2.7; the complexity
    :math:`\\tilde O(L/(\\alpha_P\\mu) + \\omega L_{\\max}/(M\\mu) + \\omega)` is UNVERIFIED
    there).

    Args:
      up: the workers' unbiased operator (DIANA).
      down: the server's contractive operator :math:`C_P` (one shared key).
      shift_step: DIANA shift step, default :math:`1/(\\omega_{\\rm up}+1)` (traced values
        are not range-checked).
      learning_rate: :math:`\\gamma` (a scalar, array or optax schedule of the step count)
        for the primal form; ``None`` for the gradient-units form.
      key: an int seed or a PRNG key, stored in the state.
      axis_name: the worker axis.
      salt: folded into the key.
      mode: ``"dense"`` or ``"gather"`` aggregation of the uplink.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state :class:`EF21PState`.

    Raises:
      ValueError: if ``shift_step`` is None and ``up`` is not unbiased; if ``learning_rate`` is
        given and ``update`` gets no ``params``.

    References:
      Gruntkowska, Tyurin, Richtárik, `EF21-P and Friends: Improved Theoretical Communication
      Complexity for Distributed Optimization with Bidirectional Compression
      <https://arxiv.org/abs/2209.15218>`_, 2022.
    """
    up = check_compressor(up, "up")
    down = check_downlink(check_compressor(down, "down"), "down")
    salt = check_salt(salt)
    mode = check_mode(mode)
    if shift_step is None and not up.unbiased:
        raise ValueError(
            f"ef21_p: the uplink {up.name} is not unbiased, so there is no default shift_step = "
            "1/(omega+1); pass shift_step= explicitly (0 < shift_step <= 1)"
        )
    check_unit_interval("shift_step", shift_step)
    primal = learning_rate is not None

    def init_fn(params):
        server = jax.tree_util.tree_map(jnp.asarray, params) if primal else tree_zeros(params)
        return EF21PState(
            init_key(key, salt),
            zero_count(),
            worker_zeros(params, axis_name),
            tree_zeros(params),
            server,
            make_ledger(params, up, down),
        )

    def update_fn(updates, state, params=None, **extra):
        if primal and params is None:
            raise ValueError(
                "ef21_p(learning_rate=...) needs params (the workers' model w^t): call "
                "update(grads, state, params)"
            )
        check_extra(extra)
        check_grads("ef21_p", updates, state.h_m, "shifts h_m")
        if primal:
            check_grads("ef21_p", params, state.h_m, "shifts h_m")
        a = default_shift_step(up, updates) if shift_step is None else shift_step
        k = step_key(state.key, state.count)
        g, h_m, h = diana_update(
            up,
            a,
            purpose_key(k, UPLINK),
            updates,
            state.h_m,
            state.h,
            axis_name=axis_name,
            mode=mode,
        )
        down_key = purpose_key(k, DOWNLINK)
        if primal:
            gamma = resolve(learning_rate, state.count)
            x_new = tree_axpy(-gamma, g, state.server)
            out = down.compress(down_key, tree_sub(x_new, params))
            server = x_new
        else:
            e = tree_add(state.server, g)
            out = down.compress(down_key, e)
            server = tree_sub(e, out)
        ledger = one_step_counts(state.ledger, compressed=1)
        new_state = EF21PState(state.key, optax.safe_increment(state.count), h_m, h, server, ledger)
        return out, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
