"""Compressed aggregation: every worker compresses, every worker gets the mean of the messages."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxdist._validate import check_choice
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
      with its sender's key ``worker_key(key, index=m)`` (or the shared key) and its sender's
      index passed as data, ``decode(..., worker=m)`` (a plain ``jax.vmap`` over
      ``jnp.arange(M)``: the worker axis is not bound again), and averages. For shared-key
      Rand-K and Perm-K the payloads are the dense ``K``- or ``d/M``-blocks, so this is an
      all-gather of disjoint blocks.

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
    check_choice("mode", mode, MODES)
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
    payload = compressor.encode(wkey, x)
    payloads = worker_gather(payload, axis_name)
    num = axis_size(axis_name)

    def decode_from(sender, message):
        # the sender's key and worker index, as data: no collective, no axis re-binding
        sender_key = worker_key(key, shared=compressor.shared_key, index=sender)
        return compressor.decode(sender_key, message, x, worker=sender)

    decoded = jax.vmap(decode_from)(jnp.arange(num, dtype=jnp.int32), payloads)
    mean = jax.tree_util.tree_map(lambda v: jnp.sum(v, axis=0) / num, decoded)
    if return_local:
        return mean, compressor.decode(wkey, payload, x)
    return mean
