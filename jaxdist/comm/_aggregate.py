"""Compressed aggregation: every worker compresses, every worker gets the mean of the messages."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxdist.comm._axis import AxisName, axis_size, worker_gather, worker_key, worker_mean
from jaxdist.compressors._base import Compressor

__all__ = ["compressed_mean", "MODES"]

MODES = ("dense", "gather")


def compressed_mean(
    compressor: Compressor,
    key: jax.Array,
    x: Any,
    *,
    axis_name: AxisName = "workers",
    mode: str = "dense",
    return_local: bool = False,
) -> Any:
    """The mean over workers of the compressed messages :math:`C_m(x_m)`, on every worker.

    Worker ``m`` compresses its ``x`` with the key
    :func:`~jaxdist.comm.worker_key` ``(key, shared=compressor.shared_key)``, i.e.
    ``fold_in(key, m)`` for independent compressors and ``key`` itself for shared-key ones, and
    every worker receives

    .. math::

       \\frac{1}{M} \\sum_{m=1}^{M} C_m(x_m).

    Two implementations, same result:

    * ``mode="dense"`` (simulation): ``pmean`` of the decoded d-vectors ``C_m(x_m)``.
    * ``mode="gather"`` (the wire): ``all_gather`` of the *payloads* (what a real network
      carries: kept values, packed indices, norms), then every worker decodes every message
      with its sender's key and averages. For shared-key Rand-K and Perm-K the payloads are
      the dense ``K``- or ``d/M``-blocks, so this is an all-gather of disjoint blocks.

    Both modes decode the same messages and divide the sum by ``M``. Under ``vmap`` both sum
    the stacked messages with XLA's reduce, so they agree bitwise for operators whose decoder
    only places and scales kept values (identity, Rand-K, Top-K, Perm-K, natural
    compression); a quantiser whose decoder does arithmetic (QSGD's ``norm * level / s``)
    may be rounded differently in the last bit by differently fused programs. Under
    ``shard_map`` the gather mode still sums in the program (the same order as under
    ``vmap``), while the dense mode's all-reduce adds the workers one after the other, which
    can differ from the tree order of a reduce in the last bit.

    Args:
      compressor: the operator (its ``shared_key`` flag selects the key rule).
      key: a key that is the same on every worker (the step's key).
      x: this worker's vector or pytree.
      axis_name: the worker axis.
      mode: ``"dense"`` or ``"gather"``.
      return_local: also return this worker's own decoded message ``C_m(x_m)`` (error
        feedback and shifts need it).

    Returns:
      The mean of the decoded messages, with the structure of ``x``; identical on all
      workers. With ``return_local=True``, the pair ``(mean, local)``.

    Raises:
      ValueError: for an unknown ``mode``, an unbound axis, or an operator that reads
        another worker axis.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got mode={mode!r}")
    if compressor.needs_axis and compressor.axis_name != axis_name:
        raise ValueError(
            f"{compressor.name} reads the worker axis {compressor.axis_name!r} but the "
            f"aggregation runs on axis_name={axis_name!r}; build the compressor with "
            f"axis_name={axis_name!r}"
        )
    wkey = worker_key(key, shared=compressor.shared_key, axis_name=axis_name)
    if mode == "dense":
        local = compressor.compress(wkey, x)
        mean = worker_mean(local, axis_name)
        return (mean, local) if return_local else mean
    if compressor.needs_axis:
        mean, local = _gather_needs_axis(compressor, wkey, x, axis_name)
        return (mean, local) if return_local else mean
    payload = compressor.encode(wkey, x)
    payloads = worker_gather(payload, axis_name)
    num = axis_size(axis_name)
    if compressor.shared_key:
        keys = _broadcast_key(key, num)
    else:
        keys = jax.vmap(lambda m: jax.random.fold_in(key, m))(jnp.arange(num, dtype=jnp.int32))
    decoded = jax.vmap(lambda k, p: compressor.decode(k, p, x))(keys, payloads)
    mean = jax.tree_util.tree_map(lambda v: jnp.sum(v, axis=0) / num, decoded)
    if return_local:
        return mean, compressor.decode(wkey, payload, x)
    return mean


def _broadcast_key(key: jax.Array, num: int) -> jax.Array:
    return jnp.broadcast_to(key, (num, *key.shape))


def _gather_needs_axis(compressor: Compressor, wkey: jax.Array, x: Any, axis_name: AxisName):
    """Gather mode for operators that read the worker axis themselves (Perm-K).

    Their decoder places a message using the *sender's* worker index, read from the axis. The
    payloads (for Perm-K the disjoint ``d/M`` blocks) are all-gathered, then decoded under a
    nested ``vmap`` that binds ``axis_name`` again with size ``M``: inside it
    ``axis_index(axis_name)`` is the sender's index, so each message is decoded as its sender
    would. The key is shared, as such operators require.
    """
    payload = compressor.encode(wkey, x)
    payloads = worker_gather(payload, axis_name)
    num = axis_size(axis_name)
    decoded = jax.vmap(lambda p: compressor.decode(wkey, p, x), axis_name=axis_name, axis_size=num)(
        payloads
    )
    mean = jax.tree_util.tree_map(lambda v: jnp.sum(v, axis=0) / num, decoded)
    return mean, compressor.decode(wkey, payload, x)
