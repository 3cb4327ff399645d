"""Exact communication accounting: a pytree of integer message counts with static sizes.

A :class:`Ledger` counts, per worker, how many messages of each *kind* it has sent up
(worker -> aggregate) and received down (aggregate -> worker), and how many communication
rounds have happened. Its pytree children are the ``int32`` count arrays, so it lives in an
optimizer state and in a ``lax.scan`` carry; its static auxiliary data is the exact size in
bits of each message kind (Python ints fixed at ``init`` from the parameter shapes). Bits are
computed on the host as ``sum(count * size)`` in exact integer arithmetic (Python ints, then
``int64``), never in floating point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Ledger", "Traffic", "exact_bits", "sum_exact", "find_ledgers", "total_traffic"]

_INT64_MAX = np.iinfo(np.int64).max

_COUNT_DTYPE = jnp.int32


def _check_kinds(kinds: Mapping[str, int] | None, what: str) -> tuple[tuple[str, ...], tuple]:
    if kinds is None:
        return (), ()
    if not isinstance(kinds, Mapping):
        raise TypeError(f"{what} must be a mapping from message kind to its size in bits")
    names, sizes = [], []
    for name, size in kinds.items():
        if not isinstance(name, str):
            raise TypeError(f"{what}: message kind names must be str, got {name!r}")
        if isinstance(size, bool) or not isinstance(size, int | np.integer):
            raise TypeError(f"{what}[{name!r}] must be an exact int number of bits, got {size!r}")
        if size < 0:
            raise ValueError(f"{what}[{name!r}] must be >= 0 bits, got {size}")
        names.append(name)
        sizes.append(int(size))
    return tuple(names), tuple(sizes)


@jax.tree_util.register_pytree_node_class
class Ledger:
    """Per-worker counts of messages sent up and down, with the exact size of each kind.

    Build one with :meth:`Ledger.create` (methods do it in ``init``), add to it with
    :meth:`record` (jittable), read it on the host with :meth:`bits_up` / :meth:`bits_down`.

    Attributes:
      up: ``int32[..., K_up]``: messages of each uplink kind sent so far.
      down: ``int32[..., K_down]``: messages of each downlink kind received so far.
      rounds: ``int32[...]``: communication rounds so far.
      up_kinds, down_kinds: names of the message kinds (static).
      up_sizes, down_sizes: exact size in bits of one message of each kind (static ints).

    Leading axes (workers, steps) are allowed on the counts: a ledger taken out of a
    ``vmap``/``scan`` is batched, and the host methods then return ``int64`` arrays.

    Examples:
      >>> from jaxdist.comm import Ledger
      >>> led = Ledger.create(up={"compressed": 320, "full": 3200}, down={"full": 3200})
      >>> led = led.record(up={"compressed": 1}, down={"full": 1}, rounds=1)
      >>> led = led.record(up={"full": 1}, down={"full": 1}, rounds=1)
      >>> led.bits_up(), led.bits_down(), led.num_rounds()
      (3520, 6400, 2)
    """

    def __init__(self, up, down, rounds, *, up_kinds, up_sizes, down_kinds, down_sizes):
        self.up = up
        self.down = down
        self.rounds = rounds
        self.up_kinds = tuple(up_kinds)
        self.up_sizes = tuple(up_sizes)
        self.down_kinds = tuple(down_kinds)
        self.down_sizes = tuple(down_sizes)

    # -- pytree ----------------------------------------------------------------------------

    def tree_flatten(self):
        aux = (self.up_kinds, self.up_sizes, self.down_kinds, self.down_sizes)
        return (self.up, self.down, self.rounds), aux

    @classmethod
    def tree_unflatten(cls, aux, children):
        up_kinds, up_sizes, down_kinds, down_sizes = aux
        up, down, rounds = children
        return cls(
            up,
            down,
            rounds,
            up_kinds=up_kinds,
            up_sizes=up_sizes,
            down_kinds=down_kinds,
            down_sizes=down_sizes,
        )

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def create(
        cls, up: Mapping[str, int] | None = None, down: Mapping[str, int] | None = None
    ) -> Ledger:
        """An empty ledger for the given message kinds.

        Args:
          up: uplink message kinds and their exact sizes in bits, e.g.
            ``{"compressed": c.bits(params), "full": d * 32}``.
          down: downlink message kinds and sizes.

        Returns:
          A :class:`Ledger` with all counts zero.
        """
        up_kinds, up_sizes = _check_kinds(up, "up")
        down_kinds, down_sizes = _check_kinds(down, "down")
        return cls(
            jnp.zeros((len(up_kinds),), _COUNT_DTYPE),
            jnp.zeros((len(down_kinds),), _COUNT_DTYPE),
            jnp.zeros([], _COUNT_DTYPE),
            up_kinds=up_kinds,
            up_sizes=up_sizes,
            down_kinds=down_kinds,
            down_sizes=down_sizes,
        )

    # -- updates (jittable) ----------------------------------------------------------------

    def _counts(self, counts, kinds, what):
        if counts is None:
            return None
        if isinstance(counts, Mapping):
            unknown = set(counts) - set(kinds)
            if unknown:
                raise ValueError(
                    f"unknown {what} message kind(s) {sorted(unknown)}; known: {kinds}"
                )
            vec = [
                jnp.asarray(counts[k]).astype(_COUNT_DTYPE)
                if k in counts
                else jnp.zeros([], _COUNT_DTYPE)
                for k in kinds
            ]
            return jnp.stack(vec) if vec else jnp.zeros((0,), _COUNT_DTYPE)
        counts = jnp.asarray(counts)
        if counts.shape[-1:] != (len(kinds),):
            raise ValueError(
                f"{what} counts must have a trailing axis of size {len(kinds)} ({kinds}), "
                f"got shape {counts.shape}"
            )
        return counts.astype(_COUNT_DTYPE)

    def record(self, *, up: Any = None, down: Any = None, rounds: Any = 0) -> Ledger:
        """Adds message counts (jittable; counts may be traced, e.g. from a coin).

        Args:
          up: ``{kind: count}`` or an int array over the uplink kinds.
          down: ``{kind: count}`` or an int array over the downlink kinds.
          rounds: number of communication rounds to add (0 or 1 per step, typically).

        Returns:
          The updated ledger (a new value; this one is unchanged).
        """
        up_add = self._counts(up, self.up_kinds, "up")
        down_add = self._counts(down, self.down_kinds, "down")
        new_up = self.up if up_add is None else self.up + up_add
        new_down = self.down if down_add is None else self.down + down_add
        new_rounds = self.rounds + jnp.asarray(rounds).astype(_COUNT_DTYPE)
        return Ledger(
            new_up,
            new_down,
            new_rounds,
            up_kinds=self.up_kinds,
            up_sizes=self.up_sizes,
            down_kinds=self.down_kinds,
            down_sizes=self.down_sizes,
        )

    # -- host-side exact totals ------------------------------------------------------------

    @staticmethod
    def _exact(counts, sizes):
        if isinstance(counts, jax.core.Tracer):
            raise TypeError(
                "Ledger bits are computed on the host: call bits_up()/bits_down() on a concrete "
                "ledger (outside jit), e.g. on the state or trace returned by a jitted step"
            )
        bits = exact_bits(counts, sizes)
        return int(bits) if bits.shape == () else bits

    def bits_up(self) -> Any:
        """Exact bits this worker has sent up: ``sum_kind count * size``.

        Returns:
          A Python int for an unbatched ledger, else an ``int64`` array over the leading axes.
        """
        return self._exact(self.up, self.up_sizes)

    def bits_down(self) -> Any:
        """Exact bits this worker has received down: ``sum_kind count * size``.

        Returns:
          A Python int for an unbatched ledger, else an ``int64`` array over the leading axes.
        """
        return self._exact(self.down, self.down_sizes)

    def num_rounds(self) -> Any:
        """Communication rounds so far.

        Returns:
          A Python int for an unbatched ledger, else an ``int64`` array.
        """
        return _to_int(np.asarray(np.asarray(self.rounds).astype(object), dtype=object))

    def counts(self) -> dict[str, dict[str, Any]]:
        """The message counts by kind, as host integers.

        Returns:
          ``{"up": {kind: count}, "down": {kind: count}}``.
        """
        up = np.asarray(self.up)
        down = np.asarray(self.down)
        return {
            "up": {k: _to_int(up[..., j]) for j, k in enumerate(self.up_kinds)},
            "down": {k: _to_int(down[..., j]) for j, k in enumerate(self.down_kinds)},
        }

    def __repr__(self) -> str:
        up = dict(zip(self.up_kinds, self.up_sizes, strict=True))
        down = dict(zip(self.down_kinds, self.down_sizes, strict=True))
        return f"Ledger(up={up}, down={down}, counts_up={self.up!r}, rounds={self.rounds!r})"


def exact_bits(counts: Any, sizes: Sequence[int]) -> np.ndarray:
    """Exact bits of message counts: ``sum_k counts[..., k] * sizes[k]`` in int64.

    The one implementation of the bit sum (ledgers, traces and the runner use it): counts are
    converted to int64 on the host and the total is bounded with Python integers first, so a
    result that does not fit in int64 raises instead of wrapping around.

    Args:
      counts: integer array ``[..., K]`` of cumulative message counts.
      sizes: the ``K`` exact message sizes in bits (Python ints).

    Returns:
      An int64 array of shape ``counts.shape[:-1]``.

    Raises:
      TypeError: non-integer counts.
      ValueError: negative counts or sizes, or a ``K`` that does not match.
      OverflowError: a total that would not fit in int64.
    """
    counts = np.asarray(counts)
    if not np.issubdtype(counts.dtype, np.integer):
        raise TypeError(f"counts must be an integer array, got dtype {counts.dtype}")
    sizes_list = [int(s) for s in sizes]
    if counts.shape[-1:] != (len(sizes_list),):
        raise ValueError(
            f"counts has {counts.shape[-1:]} message kinds but {len(sizes_list)} sizes were given"
        )
    if any(s < 0 for s in sizes_list):
        raise ValueError(f"message sizes must be >= 0, got {sizes_list}")
    counts = counts.astype(np.int64)
    if counts.size and counts.min() < 0:
        raise ValueError("message counts must be >= 0 (an int32 counter overflowed?)")
    bound = sum(int(counts[..., k].max(initial=0)) * s for k, s in enumerate(sizes_list))
    if bound > _INT64_MAX:
        raise OverflowError(f"a bit total reaches {bound}, which does not fit in int64")
    if not sizes_list:
        return np.zeros(counts.shape[:-1], np.int64)
    return (counts * np.asarray(sizes_list, np.int64)).sum(axis=-1, dtype=np.int64)


def sum_exact(values: Any, axis: int | None = None) -> np.ndarray:
    """Sum of non-negative int64 values (e.g. bits over workers) with an overflow check.

    Raises:
      OverflowError: if the sum would not fit in int64.
    """
    values = np.asarray(values, np.int64)
    n = values.size if axis is None else values.shape[axis]
    if values.size and int(values.max()) * n > _INT64_MAX:
        bound = int(np.asarray(values, dtype=object).sum())
        if bound > _INT64_MAX:
            raise OverflowError(f"a bit total reaches {bound}, which does not fit in int64")
    return values.sum(axis=axis, dtype=np.int64)


def _to_int(exact: Any) -> Any:
    """Exact integers as a Python int (0-d) or an int64 array (OverflowError if too large)."""
    exact = np.asarray(exact, dtype=object)
    if exact.shape == ():
        return int(exact[()])
    return np.array(exact.tolist(), dtype=np.int64).reshape(exact.shape)


class Traffic(NamedTuple):
    """Total traffic of all the ledgers in a state (host integers or ``int64`` arrays).

    Attributes:
      bits_up: bits sent up per worker.
      bits_down: bits received down per worker.
      rounds: communication rounds (the largest count among the ledgers: transformations
        chained in one step communicate in the same round).
    """

    bits_up: Any
    bits_down: Any
    rounds: Any


def _is_ledger(x: Any) -> bool:
    return isinstance(x, Ledger)


def find_ledgers(state: Any) -> list[Ledger]:
    """Every :class:`Ledger` inside a pytree (e.g. an ``optax.chain`` state tuple).

    Args:
      state: any pytree.

    Returns:
      The ledgers, in pytree order.
    """
    leaves = jax.tree_util.tree_leaves(state, is_leaf=_is_ledger)
    return [leaf for leaf in leaves if isinstance(leaf, Ledger)]


def total_traffic(state: Any) -> Traffic:
    """Sums the exact traffic of every ledger in ``state``.

    Args:
      state: an optimizer state (or any pytree) holding zero or more ledgers; batched
        ledgers (leading worker/step axes) are summed elementwise.

    Returns:
      A :class:`Traffic` of exact integers (``int64`` arrays when batched).
    """
    ledgers = find_ledgers(state)
    if not ledgers:
        return Traffic(0, 0, 0)
    ups = [led.bits_up() for led in ledgers]
    downs = [led.bits_down() for led in ledgers]
    rounds = [led.num_rounds() for led in ledgers]
    return Traffic(_sum(ups), _sum(downs), _max(rounds))


def _sum(values: Sequence[Any]) -> Any:
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


def _max(values: Sequence[Any]) -> Any:
    total = values[0]
    for v in values[1:]:
        total = np.maximum(total, v) if isinstance(total, np.ndarray) else max(total, v)
    return total
