"""α–β network cost models (THEORY.md §4): the modelled time of collectives and of whole runs.

A message of N bits costs ``latency + N·seconds_per_bit``: ``latency`` is the time per message
(THEORY.md's α) and ``seconds_per_bit`` the inverse bandwidth (THEORY.md's β; some texts write
n/β with β a bandwidth). Every operation below is priced by the pair (messages, bits) on its
critical path, and its time is

.. math::

   T = \\text{messages}\\cdot\\text{latency} + \\text{bits}\\cdot\\text{seconds\\_per\\_bit}.

Each pair is written once, in a private ``_*_terms`` function; the per-operation functions
(:func:`allreduce_time`, :func:`parameter_server_time`, ...) price one operation with it, and
:class:`NetworkModel` prices a whole run from cumulative message and bit counts with the same
functions. The pairs are linear in the bits, so a run of R rounds costs R times the per-round
messages plus the bandwidth term of the cumulative bits. Computation (the reductions) is not
modelled.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike

from jaxdist._validate import check_int, check_number, finite_float

__all__ = [
    "NetworkModel",
    "all_to_all_time",
    "allgather_time",
    "allreduce_time",
    "p2p_time",
    "parameter_server_time",
    "perm_k_time",
    "reduce_scatter_time",
    "sparse_allgather_time",
]


# ---------------------------------------------------------------------------------------------
# Argument checks (elementwise, on NumPy arrays) and the output convention.


def _check(name: str, v: Any, *, low: float) -> np.ndarray:
    check_number(name, v, low=low, allow_traced=False)
    return np.asarray(v, dtype=np.float64)


def _nonneg(name: str, v: Any) -> np.ndarray:
    return _check(name, v, low=0.0)


def _workers(name: str, v: Any) -> np.ndarray:
    return _check(name, v, low=1.0)


def _net(latency: Any, seconds_per_bit: Any) -> tuple[np.ndarray, np.ndarray]:
    return _nonneg("latency", latency), _nonneg("seconds_per_bit", seconds_per_bit)


def _out(a: Any) -> float | np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return float(a) if a.ndim == 0 else a


# ---------------------------------------------------------------------------------------------
# The model, and the critical path (messages, bits) of every operation: one formula each.


def _seconds(messages: Any, bits: Any, latency: Any, seconds_per_bit: Any) -> Any:
    """The α–β model: messages·latency + bits·seconds_per_bit."""
    return messages * latency + bits * seconds_per_bit


def _p2p_terms(bits: Any) -> tuple[Any, Any]:
    """One message of ``bits`` bits."""
    return 1.0, bits


def _independent_links_terms(
    bits_up: Any, bits_down: Any, broadcast_speedup: Any = 1.0
) -> tuple[Any, Any]:
    """A worker's own link to the server: one message up, then one down (two p2p's; the
    downlink ``broadcast_speedup`` times faster per bit)."""
    m_up, b_up = _p2p_terms(bits_up)
    m_down, b_down = _p2p_terms(bits_down / broadcast_speedup)
    return m_up + m_down, b_up + b_down


def _parameter_server_terms(
    ingress_bits: Any, egress_bits: Any, broadcast_speedup: Any = 1.0
) -> tuple[Any, Any]:
    """One server NIC: gather (all ingress serialised), then broadcast (all egress serialised,
    ``broadcast_speedup`` times faster per bit than the gather)."""
    return 2.0, ingress_bits + egress_bits / broadcast_speedup


def _ring_allreduce_terms(M: Any, bits: Any) -> tuple[Any, Any]:
    """Ring reduce-scatter + ring all-gather of a vector of ``bits`` bits."""
    return 2.0 * (M - 1.0), 2.0 * (M - 1.0) / M * bits


def _halving_doubling_terms(M: Any, bits: Any) -> tuple[Any, Any]:
    """Recursive halving (reduce-scatter) + doubling (all-gather), Rabenseifner."""
    return 2.0 * np.log2(M), 2.0 * (M - 1.0) / M * bits


def _reduce_scatter_terms(M: Any, bits: Any) -> tuple[Any, Any]:
    """Ring reduce-scatter of a vector of ``bits`` bits: M − 1 steps of bits/M each."""
    return M - 1.0, (M - 1.0) / M * bits


def _allgather_terms(M: Any, bits: Any) -> tuple[Any, Any]:
    """Ring all-gather: every worker receives the M − 1 other messages of ``bits`` bits."""
    return M - 1.0, (M - 1.0) * bits


# ---------------------------------------------------------------------------------------------
# One operation.


def p2p_time(bits: ArrayLike, latency: ArrayLike, seconds_per_bit: ArrayLike) -> float | np.ndarray:
    """Point-to-point time latency + N·seconds_per_bit for N bits. THEORY.md §4 [standard].

    Args:
      bits: message size N >= 0.
      latency: seconds per message >= 0.
      seconds_per_bit: inverse bandwidth (s/bit) >= 0.

    Returns:
      Time in seconds (a float for scalar input, else an array).

    Examples:
      >>> from jaxdist import comm
      >>> comm.p2p_time(10**6, latency=1e-5, seconds_per_bit=1e-9)  # 1 Mbit at 1 Gbit/s
      0.00101
    """
    lat, spb = _net(latency, seconds_per_bit)
    return _out(_seconds(*_p2p_terms(_nonneg("bits", bits)), lat, spb))


def allreduce_time(
    M: ArrayLike,
    d: ArrayLike,
    b: ArrayLike,
    latency: ArrayLike,
    seconds_per_bit: ArrayLike,
    *,
    algorithm: str = "ring",
) -> float | np.ndarray:
    """All-reduce of d floats of b bits over M workers.

    THEORY.md §4 [V-sec: distributed-training-book ch. 13; Thakur, Rabenseifner, Gropp 2005;
    Patarasuk & Yuan 2009 (bandwidth term optimal)], with α = latency and β = seconds_per_bit:

    * ``"ring"`` (reduce-scatter + all-gather): 2(M−1)α + 2((M−1)/M)·d·b·β;
    * ``"halving_doubling"`` (Rabenseifner): 2 log2(M)·α + 2((M−1)/M)·d·b·β.

    Reduction compute is not modelled. Shared-seed Rand-K / PowerSGD all-reduce their K-vector:
    pass d = K.

    Args:
      M: number of workers >= 1.
      d: floats per worker >= 0.
      b: bits per float >= 0.
      latency: seconds per message >= 0.
      seconds_per_bit: inverse bandwidth (s/bit) >= 0.
      algorithm: ``"ring"`` or ``"halving_doubling"``.

    Returns:
      Time in seconds.

    Examples:
      >>> from jaxdist import comm
      >>> comm.allreduce_time(4, 1000, 32, latency=0.0, seconds_per_bit=1.0)  # 2·(3/4)·32000
      48000.0
    """
    M, d, bb = _workers("M", M), _nonneg("d", d), _nonneg("b", b)
    lat, spb = _net(latency, seconds_per_bit)
    if algorithm == "ring":
        terms = _ring_allreduce_terms(M, d * bb)
    elif algorithm == "halving_doubling":
        terms = _halving_doubling_terms(M, d * bb)
    else:
        raise ValueError(f"algorithm must be 'ring' or 'halving_doubling', got {algorithm!r}")
    return _out(_seconds(*terms, lat, spb))


def reduce_scatter_time(
    M: ArrayLike, d: ArrayLike, b: ArrayLike, latency: ArrayLike, seconds_per_bit: ArrayLike
) -> float | np.ndarray:
    """Ring reduce-scatter of d floats: (M−1)α + ((M−1)/M)·d·b·β. THEORY.md §4 [V-sec].

    Args:
      M: number of workers >= 1.
      d: floats per worker >= 0.
      b: bits per float >= 0.
      latency: seconds per message (α) >= 0.
      seconds_per_bit: inverse bandwidth (β, s/bit) >= 0.

    Returns:
      Time in seconds.
    """
    M, d, bb = _workers("M", M), _nonneg("d", d), _nonneg("b", b)
    lat, spb = _net(latency, seconds_per_bit)
    return _out(_seconds(*_reduce_scatter_terms(M, d * bb), lat, spb))


def allgather_time(
    M: ArrayLike, bits: ArrayLike, latency: ArrayLike, seconds_per_bit: ArrayLike
) -> float | np.ndarray:
    """Ring all-gather in which every worker contributes a message of ``bits`` bits.

    THEORY.md §4 [V-der]: (M−1)α + (M−1)·bits·β per worker (each receives the M−1 other
    messages). The all-gather half of a dense ring all-reduce is the case bits = d·b/M.

    Args:
      M: number of workers >= 1.
      bits: bits contributed by each worker >= 0.
      latency: seconds per message (α) >= 0.
      seconds_per_bit: inverse bandwidth (β, s/bit) >= 0.

    Returns:
      Time in seconds.
    """
    M, n = _workers("M", M), _nonneg("bits", bits)
    lat, spb = _net(latency, seconds_per_bit)
    return _out(_seconds(*_allgather_terms(M, n), lat, spb))


def parameter_server_time(
    M: ArrayLike,
    d: ArrayLike,
    b: ArrayLike,
    latency: ArrayLike,
    seconds_per_bit: ArrayLike,
    *,
    uplink_bits: ArrayLike | None = None,
    downlink_bits: ArrayLike | None = None,
    broadcast_speedup: ArrayLike = 1.0,
) -> float | np.ndarray:
    """One parameter-server round with a single server NIC: gather then broadcast.

    THEORY.md §4 [V-der]: ingress M·(uplink bits), egress M·(downlink bits), serialised, so
    dense messages give 2α + 2M·d·b·β. Compressed messages: pass ``uplink_bits`` /
    ``downlink_bits`` (bits per worker per direction, default d·b). The lecture (§1) measures a
    broadcast about 5× cheaper than receiving from everyone: ``broadcast_speedup=5`` prices the
    egress bits at β/5, giving 2α + (1 + 1/5)·M·d·b·β for dense messages.

    Args:
      M: number of workers >= 1.
      d: floats per message >= 0.
      b: bits per float >= 0.
      latency: seconds per message (α) >= 0.
      seconds_per_bit: inverse bandwidth (β, s/bit) >= 0.
      uplink_bits: bits each worker sends (default d·b).
      downlink_bits: bits the server sends each worker (default d·b).
      broadcast_speedup: how many times faster per bit the broadcast is than the gather (> 0).

    Returns:
      Time in seconds.

    Examples:
      >>> from jaxdist import comm
      >>> comm.parameter_server_time(10, 1000, 32, 0.0, 1.0)  # 2·M·d·b
      640000.0
      >>> comm.parameter_server_time(10, 1000, 32, 0.0, 1.0, broadcast_speedup=5)  # (1 + 1/5)·M·d·b
      384000.0
    """
    M, d, bb = _workers("M", M), _nonneg("d", d), _nonneg("b", b)
    lat, spb = _net(latency, seconds_per_bit)
    up = d * bb if uplink_bits is None else _nonneg("uplink_bits", uplink_bits)
    down = d * bb if downlink_bits is None else _nonneg("downlink_bits", downlink_bits)
    check_number("broadcast_speedup", broadcast_speedup, low=0.0, low_open=True, allow_traced=False)
    s = np.asarray(broadcast_speedup, dtype=np.float64)
    return _out(_seconds(*_parameter_server_terms(M * up, M * down, s), lat, spb))


def all_to_all_time(
    M: ArrayLike, d: ArrayLike, b: ArrayLike, latency: ArrayLike, seconds_per_bit: ArrayLike
) -> float | np.ndarray:
    """Naive all-to-all (each worker sends its vector to the M − 1 others): (M−1)(α + d·b·β).

    THEORY.md §4 [V-der], one full-duplex port per worker: an all-gather of the full vectors.

    Args:
      M: number of workers >= 1.
      d: floats per worker >= 0.
      b: bits per float >= 0.
      latency: seconds per message (α) >= 0.
      seconds_per_bit: inverse bandwidth (β, s/bit) >= 0.

    Returns:
      Time in seconds.
    """
    M, d, bb = _workers("M", M), _nonneg("d", d), _nonneg("b", b)
    lat, spb = _net(latency, seconds_per_bit)
    return _out(_seconds(*_allgather_terms(M, d * bb), lat, spb))


def perm_k_time(
    M: ArrayLike, d: ArrayLike, b: ArrayLike, latency: ArrayLike, seconds_per_bit: ArrayLike
) -> float | np.ndarray:
    """Perm-K aggregation: all-gather of disjoint d/M-blocks, (M−1)α + ((M−1)/M)·d·b·β.

    THEORY.md §4 [V-der]: shared seed, no indices, no reduction; half the bandwidth term of a
    dense ring all-reduce.

    Args:
      M: number of workers >= 1.
      d: dimension >= 0.
      b: bits per float >= 0.
      latency: seconds per message (α) >= 0.
      seconds_per_bit: inverse bandwidth (β, s/bit) >= 0.

    Returns:
      Time in seconds.

    References:
      Szlendak, Tyurin, Richtárik, `Permutation compressors for provably faster distributed
      nonconvex optimization <https://arxiv.org/abs/2110.03300>`_, 2021 (id unconfirmed).
    """
    M, d, bb = _workers("M", M), _nonneg("d", d), _nonneg("b", b)
    lat, spb = _net(latency, seconds_per_bit)
    return _out(_seconds(*_allgather_terms(M, d * bb / M), lat, spb))


def sparse_allgather_time(
    M: ArrayLike,
    k: ArrayLike,
    d: ArrayLike,
    b: ArrayLike,
    latency: ArrayLike,
    seconds_per_bit: ArrayLike,
    *,
    index_bits: ArrayLike | None = None,
) -> float | np.ndarray:
    """All-gather of K (index, value) pairs per worker (Top-K, independent Rand-K).

    THEORY.md §4 [V-der]: (M−1)α + (M−1)·K·(b + ⌈log2 d⌉)·β. Worse than a dense ring all-reduce
    roughly when M·K > 2d. Rand-K with a seed instead of indices: pass ``index_bits=0`` (and
    add the seed to the message if needed).

    Args:
      M: number of workers >= 1.
      k: values per worker >= 0.
      d: dimension >= 1 (for the index width).
      b: bits per value >= 0.
      latency: seconds per message (α) >= 0.
      seconds_per_bit: inverse bandwidth (β, s/bit) >= 0.
      index_bits: bits per index (default ⌈log2 d⌉).

    Returns:
      Time in seconds.
    """
    M, k, dd, bb = _workers("M", M), _nonneg("k", k), _workers("d", d), _nonneg("b", b)
    lat, spb = _net(latency, seconds_per_bit)
    ib = np.ceil(np.log2(dd)) if index_bits is None else _nonneg("index_bits", index_bits)
    return _out(_seconds(*_allgather_terms(M, k * (bb + ib)), lat, spb))


# ---------------------------------------------------------------------------------------------
# A whole run.


def _counts(name: str, v: Any) -> np.ndarray:
    a = np.asarray(v)
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must hold integer counts, got dtype {a.dtype}")
    if np.any(a < 0):
        raise ValueError(f"{name} must be >= 0 (cumulative counts), got a negative entry")
    return a.astype(np.float64)


@dataclasses.dataclass(frozen=True)
class NetworkModel:
    """An α–β network: the modelled communication time of a run from its exact counts.

    ``latency`` (α, seconds per message) and ``seconds_per_bit`` (β, inverse bandwidth) price
    every round on the chosen ``topology`` (THEORY.md §4), with the same formulas as the
    per-operation functions of this module. With R cumulative rounds, per-worker cumulative
    bits B_up, B_down (the largest over workers: the bottleneck worker) and bits summed over the
    workers ΣB_up, ΣB_down, and s = ``broadcast_speedup``:

    * ``"parameter_server"``: one server NIC serialises all traffic (a gather, then a
      broadcast; :func:`parameter_server_time`, a dense round costs 2α + (1 + 1/s)M·d·b·β):
      ``2α·R + (ΣB_up + ΣB_down/s)·β``;
    * ``"independent_links"``: every worker has its own link to the server (a message up and one
      down per round, :func:`p2p_time` twice; a dense round costs 2α + (1 + 1/s)d·b·β):
      ``2α·R + (B_up + B_down/s)·β``;
    * ``"ring_allreduce"``: the uplink messages are summed by a bandwidth-optimal ring
      all-reduce (:func:`allreduce_time`, ``algorithm="ring"``), whose result is the downlink:
      ``2(M−1)α·R + (2(M−1)/M)·B_up·β``;
    * ``"halving_doubling_allreduce"``: the same with recursive halving/doubling
      (``algorithm="halving_doubling"``): ``2 log2(M)·α·R + (2(M−1)/M)·B_up·β``;
    * ``"allgather"``: no server and no reduction; every worker receives the other workers'
      uplink messages around a ring (:func:`allgather_time`): ``(M−1)α·R + (M−1)·B_up·β``.
      Dense vectors give the naive all-to-all (:func:`all_to_all_time`), Perm-K's disjoint
      d/M-blocks its all-gather (:func:`perm_k_time`, half a dense ring all-reduce), Top-K or
      independent Rand-K the all-gather of (index, value) pairs
      (:func:`sparse_allgather_time`). Exact for messages of equal size, else an upper bound.

    The all-reduce topologies assume messages that a reduction keeps in the same format (dense
    vectors, shared-seed Rand-K); computation is not modelled. ``broadcast_speedup`` (the
    lecture's "a broadcast is ~5× cheaper than receiving from everyone", §1) applies to the
    downlink of the two server topologies; the others have no broadcast and refuse it. The
    model is frozen and hashable, so it can key a cache or be a field of a frozen config.

    Attributes:
      latency: seconds per message, finite and >= 0.
      seconds_per_bit: seconds per bit (inverse bandwidth), finite and >= 0.
      topology: one of :attr:`TOPOLOGIES`.
      broadcast_speedup: how many times faster per bit the server's downlink is than its
        uplink, finite and > 0 (default 1: symmetric).

    Examples:
      >>> import numpy as np
      >>> from jaxdist.comm import NetworkModel
      >>> net = NetworkModel(latency=1e-3, seconds_per_bit=1e-9)  # 1 ms, 1 Gbit/s
      >>> rounds = np.array([0, 10])  # two logged points of a run with M = 4 workers
      >>> bits = np.array([0, 10 * 32_000])  # 1000 float32 per worker per round, each way
      >>> net.time(rounds=rounds, bits_up=bits, bits_down=bits, bits_up_total=4 * bits,
      ...          bits_down_total=4 * bits, num_workers=4).tolist()
      [0.0, 0.02256]
      >>> ring = NetworkModel(1e-3, 1e-9, topology="ring_allreduce")
      >>> ring.time(rounds=rounds, bits_up=bits, bits_down=bits, bits_up_total=4 * bits,
      ...           bits_down_total=4 * bits, num_workers=4).tolist()
      [0.0, 0.06048]
      >>> cheap = NetworkModel(1e-3, 1e-9, broadcast_speedup=5.0)  # the downlink at 5 Gbit/s
      >>> cheap.time(rounds=rounds, bits_up=bits, bits_down=bits, bits_up_total=4 * bits,
      ...            bits_down_total=4 * bits, num_workers=4).tolist()
      [0.0, 0.021536]
    """

    latency: float
    seconds_per_bit: float
    topology: str = "parameter_server"
    broadcast_speedup: float = 1.0

    #: The topologies :meth:`time` knows.
    TOPOLOGIES: ClassVar[tuple[str, ...]] = (
        "parameter_server",
        "independent_links",
        "ring_allreduce",
        "halving_doubling_allreduce",
        "allgather",
    )

    #: The topologies with a server, whose downlink ``broadcast_speedup`` prices.
    SERVER_TOPOLOGIES: ClassVar[tuple[str, ...]] = ("parameter_server", "independent_links")

    def __post_init__(self):
        for name in ("latency", "seconds_per_bit"):
            v = finite_float(name, getattr(self, name))
            if v < 0:
                raise ValueError(f"{name} must be >= 0, got {name}={v}")
            object.__setattr__(self, name, v)
        if self.topology not in self.TOPOLOGIES:
            raise ValueError(
                f"topology must be one of {', '.join(map(repr, self.TOPOLOGIES))}, got "
                f"{self.topology!r}"
            )
        s = finite_float("broadcast_speedup", self.broadcast_speedup)
        if s <= 0:
            raise ValueError(f"broadcast_speedup must be > 0, got broadcast_speedup={s}")
        if s != 1.0 and self.topology not in self.SERVER_TOPOLOGIES:
            raise ValueError(
                f"broadcast_speedup={s} prices a server's broadcast, but topology "
                f"{self.topology!r} has none; use one of {self.SERVER_TOPOLOGIES}"
            )
        object.__setattr__(self, "broadcast_speedup", s)

    def time(
        self,
        *,
        rounds: ArrayLike,
        bits_up: ArrayLike,
        bits_down: ArrayLike,
        bits_up_total: ArrayLike,
        bits_down_total: ArrayLike,
        num_workers: int,
    ) -> np.ndarray:
        """Modelled seconds spent communicating, from cumulative counts.

        Every count is cumulative (as in a :class:`~jaxdist.experiments.Trace`), so the result
        is the cumulative time at each point.

        Args:
          rounds: communication rounds, integer array (e.g. int64).
          bits_up: bits sent up by one worker (the largest over workers), same shape.
          bits_down: bits received down by one worker (the largest over workers), same shape.
          bits_up_total: bits sent up summed over the workers, same shape.
          bits_down_total: bits sent down summed over the workers, same shape.
          num_workers: M >= 1.

        Returns:
          float64 seconds of the common shape.

        Raises:
          TypeError: a count that is not an integer array.
          ValueError: negative counts, shapes that differ, or ``num_workers < 1``.
        """
        named = {
            "rounds": rounds,
            "bits_up": bits_up,
            "bits_down": bits_down,
            "bits_up_total": bits_up_total,
            "bits_down_total": bits_down_total,
        }
        c = {name: _counts(name, v) for name, v in named.items()}
        shapes = {name: a.shape for name, a in c.items()}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"the counts must all have the same shape, got {shapes}")
        M = float(check_int("num_workers", num_workers, low=1))
        s = self.broadcast_speedup
        if self.topology == "parameter_server":
            messages, bits = _parameter_server_terms(c["bits_up_total"], c["bits_down_total"], s)
        elif self.topology == "independent_links":
            messages, bits = _independent_links_terms(c["bits_up"], c["bits_down"], s)
        elif self.topology == "ring_allreduce":
            messages, bits = _ring_allreduce_terms(M, c["bits_up"])
        elif self.topology == "halving_doubling_allreduce":
            messages, bits = _halving_doubling_terms(M, c["bits_up"])
        else:  # "allgather"
            messages, bits = _allgather_terms(M, c["bits_up"])
        out = _seconds(messages * c["rounds"], bits, self.latency, self.seconds_per_bit)
        return np.asarray(out, dtype=np.float64)
