"""Tests of the α–β network cost models (THEORY.md §4): the per-operation times and NetworkModel."""

import math

import numpy as np
import pytest

from jaxdist.comm import _cost as C

M, D, B, LAT, SPB = 8, 1_000_000, 32, 1e-5, 1e-10


# ---------------------------------------------------------------------------------------------
# One operation.


def test_collective_cost_models():
    ring = C.allreduce_time(M, D, B, LAT, SPB)
    assert ring == pytest.approx(2 * 7 * LAT + 2 * 7 / 8 * D * B * SPB)
    hd = C.allreduce_time(M, D, B, LAT, SPB, algorithm="halving_doubling")
    assert hd == pytest.approx(2 * 3 * LAT + 2 * 7 / 8 * D * B * SPB)
    rs = C.reduce_scatter_time(M, D, B, LAT, SPB)
    ag_blocks = C.allgather_time(M, D * B / M, LAT, SPB)
    assert rs + ag_blocks == pytest.approx(ring)  # ring all-reduce = reduce-scatter + all-gather
    perm = C.perm_k_time(M, D, B, LAT, SPB)
    assert perm == pytest.approx(ag_blocks)
    # Perm-K: half the bandwidth term of a dense ring all-reduce
    assert C.perm_k_time(M, D, B, 0, SPB) == pytest.approx(C.allreduce_time(M, D, B, 0, SPB) / 2)
    assert C.parameter_server_time(M, D, B, LAT, SPB) == pytest.approx(
        2 * LAT + 2 * M * D * B * SPB
    )
    assert C.parameter_server_time(M, D, B, LAT, SPB, uplink_bits=100, downlink_bits=0) == (
        pytest.approx(2 * LAT + M * 100 * SPB)
    )
    assert C.all_to_all_time(M, D, B, LAT, SPB) == pytest.approx(7 * (LAT + D * B * SPB))
    assert C.p2p_time(1000, LAT, SPB) == pytest.approx(LAT + 1000 * SPB)
    # sparse all-gather beats a dense ring all-reduce only for small M·K (about M·K < 2d)
    k_small, k_big = D // 100, D // 2
    assert C.sparse_allgather_time(M, k_small, D, B, 0, SPB) < C.allreduce_time(M, D, B, 0, SPB)
    assert C.sparse_allgather_time(M, k_big, D, B, 0, SPB) > C.allreduce_time(M, D, B, 0, SPB)
    idx = math.ceil(math.log2(D))
    assert C.sparse_allgather_time(M, 10, D, B, LAT, SPB) == pytest.approx(
        7 * (LAT + 10 * (B + idx) * SPB)
    )
    assert C.sparse_allgather_time(M, 10, D, B, LAT, SPB, index_bits=0) == pytest.approx(
        7 * (LAT + 10 * B * SPB)
    )
    # one worker: no communication
    for f in (C.allreduce_time, C.reduce_scatter_time, C.perm_k_time, C.all_to_all_time):
        assert f(1, D, B, LAT, SPB) == 0.0
    with pytest.raises(ValueError, match="algorithm"):
        C.allreduce_time(M, D, B, LAT, SPB, algorithm="tree")


def test_parameter_names_are_latency_and_seconds_per_bit():
    kw = dict(latency=LAT, seconds_per_bit=SPB)
    assert C.p2p_time(1000, **kw) == C.p2p_time(1000, LAT, SPB)
    assert C.allreduce_time(M, D, B, **kw) == C.allreduce_time(M, D, B, LAT, SPB)
    assert C.parameter_server_time(M, D, B, **kw) == C.parameter_server_time(M, D, B, LAT, SPB)
    with pytest.raises(TypeError):
        C.p2p_time(1000, alpha=LAT, beta=SPB)


def test_array_inputs_broadcast():
    t = C.allreduce_time(np.array([2, 4]), 10, 32, 0.0, 1.0)
    assert isinstance(t, np.ndarray) and t.shape == (2,)
    np.testing.assert_allclose(t, [2 * (1 / 2) * 320, 2 * (3 / 4) * 320])
    assert isinstance(C.p2p_time(10, 1.0, 1.0), float)


@pytest.mark.parametrize(
    "fn,match",
    [
        (lambda: C.allreduce_time(2, 10, 32, -1.0, 1.0), "latency must be in \\[0, inf\\)"),
        (lambda: C.p2p_time(10, 0.0, -1.0), "seconds_per_bit must be in \\[0, inf\\)"),
        (lambda: C.p2p_time(-1, 0.0, 1.0), "bits must be in"),
        (lambda: C.allgather_time(0, 10, 0.0, 1.0), "M must be in \\[1, inf\\)"),
        (lambda: C.sparse_allgather_time(2, 1, 0, 32, 0.0, 1.0), "d must be in \\[1, inf\\)"),
        (lambda: C.p2p_time(float("nan"), 0.0, 1.0), "must not be NaN"),
    ],
)
def test_validation(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()


# ---------------------------------------------------------------------------------------------
# A whole run: NetworkModel.


def _counts(rounds, up, down, workers):
    """Cumulative counts of a run in which every worker sends ``up`` and receives ``down`` bits
    in each of ``rounds[j]`` rounds."""
    r = np.asarray(rounds, np.int64)
    return dict(
        rounds=r,
        bits_up=r * up,
        bits_down=r * down,
        bits_up_total=r * up * workers,
        bits_down_total=r * down * workers,
        num_workers=workers,
    )


@pytest.mark.parametrize("workers", [1, 2, 8, 13])
def test_network_model_is_the_per_round_formula_times_the_rounds(workers):
    rounds = np.array([0, 1, 7, 700])
    d, b = 1000, 32
    c = _counts(rounds, d * b, d * b, workers)
    ps = C.NetworkModel(LAT, SPB).time(**c)
    np.testing.assert_allclose(
        ps, rounds * C.parameter_server_time(workers, d, b, LAT, SPB), rtol=1e-14
    )
    links = C.NetworkModel(LAT, SPB, "independent_links").time(**c)
    np.testing.assert_allclose(links, rounds * 2 * C.p2p_time(d * b, LAT, SPB), rtol=1e-14)
    ring = C.NetworkModel(LAT, SPB, "ring_allreduce").time(**c)
    np.testing.assert_allclose(
        ring, rounds * C.allreduce_time(workers, d, b, LAT, SPB), rtol=1e-14, atol=0
    )
    hd = C.NetworkModel(LAT, SPB, "halving_doubling_allreduce").time(**c)
    np.testing.assert_allclose(
        hd,
        rounds * C.allreduce_time(workers, d, b, LAT, SPB, algorithm="halving_doubling"),
        rtol=1e-14,
    )
    gather = C.NetworkModel(LAT, SPB, "allgather").time(**c)
    np.testing.assert_allclose(
        gather, rounds * C.all_to_all_time(workers, d, b, LAT, SPB), rtol=1e-14, atol=0
    )
    cheap = C.NetworkModel(LAT, SPB, broadcast_speedup=5.0).time(**c)
    np.testing.assert_allclose(
        cheap,
        rounds * C.parameter_server_time(workers, d, b, LAT, SPB, broadcast_speedup=5.0),
        rtol=1e-14,
    )
    for t in (ps, links, ring, hd, gather, cheap):
        assert t.dtype == np.float64 and t.shape == rounds.shape and t[0] == 0.0
    if workers == 1:
        np.testing.assert_array_equal(ring, 0.0)  # a ring of one worker sends nothing


def test_network_model_formulas_by_hand():
    # compressed uplink, dense downlink, unequal workers: the totals are not M × the maximum
    c = dict(
        rounds=np.array([3]),
        bits_up=np.array([300]),
        bits_down=np.array([9000]),
        bits_up_total=np.array([700]),
        bits_down_total=np.array([36000]),
        num_workers=4,
    )
    lat, spb = 2.0, 0.5
    net = C.NetworkModel
    assert net(lat, spb).time(**c).tolist() == [2 * lat * 3 + (700 + 36000) * spb]
    assert net(lat, spb, "independent_links").time(**c).tolist() == [
        2 * lat * 3 + (300 + 9000) * spb
    ]
    assert net(lat, spb, "ring_allreduce").time(**c).tolist() == [
        2 * 3 * lat * 3 + 2 * 3 / 4 * 300 * spb
    ]
    np.testing.assert_allclose(
        net(lat, spb, "halving_doubling_allreduce").time(**c), [2 * 2 * lat * 3 + 1.5 * 300 * spb]
    )


def test_network_model_broadcast_speedup_and_allgather_by_hand():
    c = dict(
        rounds=np.array([3]),
        bits_up=np.array([300]),
        bits_down=np.array([9000]),
        bits_up_total=np.array([700]),
        bits_down_total=np.array([36000]),
        num_workers=4,
    )
    lat, spb, s = 2.0, 0.5, 4.0
    net = C.NetworkModel
    assert net(lat, spb, broadcast_speedup=s).time(**c).tolist() == [
        2 * lat * 3 + (700 + 36000 / s) * spb
    ]
    assert net(lat, spb, "independent_links", broadcast_speedup=s).time(**c).tolist() == [
        2 * lat * 3 + (300 + 9000 / s) * spb
    ]
    # no server: every worker receives the 3 others' uplink messages, the downlink is unused
    assert net(lat, spb, "allgather").time(**c).tolist() == [3 * lat * 3 + 3 * 300 * spb]
    # a dense round with the broadcast 5× cheaper: the gather is 5/6 of the bandwidth term
    ps = C.parameter_server_time(10, 1000, 32, 0.0, 1.0, broadcast_speedup=5.0)
    assert ps == (1 + 1 / 5) * 10 * 1000 * 32
    # Perm-K's all-gather of d/M-blocks is half a dense ring all-reduce (bandwidth term)
    perm = net(0.0, 1.0, "allgather").time(**_counts([1], 32 * 1000 // 8, 0, 8))
    ring = net(0.0, 1.0, "ring_allreduce").time(**_counts([1], 32 * 1000, 32 * 1000, 8))
    assert perm.tolist() == [0.5 * float(ring[0])] == [C.perm_k_time(8, 1000, 32, 0.0, 1.0)]


def test_network_model_keeps_the_sweep_shape_and_exact_large_counts():
    rounds = np.arange(12, dtype=np.int64).reshape(2, 3, 2) * 1000
    big = rounds * (2**31)  # > 2^31 bits per worker: int64 counts, float64 seconds
    c = dict(
        rounds=rounds,
        bits_up=big,
        bits_down=big,
        bits_up_total=3 * big,
        bits_down_total=3 * big,
        num_workers=3,
    )
    t = C.NetworkModel(0.0, 1.0).time(**c)
    assert t.shape == (2, 3, 2)
    np.testing.assert_array_equal(t, (6 * big).astype(np.float64))
    scalars = {k: (5 if k != "num_workers" else 3) for k in c}
    t0 = C.NetworkModel(1.0, 0.0).time(**scalars)
    assert isinstance(t0, np.ndarray) and t0.shape == () and float(t0) == 10.0


def test_network_model_validation():
    with pytest.raises(ValueError, match="latency must be >= 0"):
        C.NetworkModel(-1.0, 1.0)
    with pytest.raises(ValueError, match="seconds_per_bit must be >= 0"):
        C.NetworkModel(1.0, -1e-9)
    with pytest.raises(ValueError, match="latency must be finite"):
        C.NetworkModel(float("inf"), 1.0)
    with pytest.raises(ValueError, match="seconds_per_bit must not be NaN"):
        C.NetworkModel(1.0, float("nan"))
    with pytest.raises(TypeError, match="latency must be"):
        C.NetworkModel("1ms", 1.0)
    with pytest.raises(ValueError, match="'parameter_server'.*'ring_allreduce'.*got 'tree'"):
        C.NetworkModel(1.0, 1.0, topology="tree")
    with pytest.raises(ValueError, match="broadcast_speedup must be > 0"):
        C.NetworkModel(1.0, 1.0, broadcast_speedup=0.0)
    with pytest.raises(ValueError, match="broadcast_speedup must be finite"):
        C.NetworkModel(1.0, 1.0, broadcast_speedup=float("inf"))
    with pytest.raises(ValueError, match="topology 'ring_allreduce' has none"):
        C.NetworkModel(1.0, 1.0, "ring_allreduce", broadcast_speedup=5.0)
    with pytest.raises(ValueError, match=r"broadcast_speedup must be in \(0, inf\)"):
        C.parameter_server_time(4, 10, 32, 0.0, 1.0, broadcast_speedup=0)
    c = _counts([0, 1], 10, 10, 2)
    net = C.NetworkModel(1.0, 1.0)
    with pytest.raises(ValueError, match="same shape"):
        net.time(**{**c, "bits_down": np.zeros(3, np.int64)})
    with pytest.raises(TypeError, match="bits_up must hold integer counts"):
        net.time(**{**c, "bits_up": np.array([0.0, 10.0])})
    with pytest.raises(ValueError, match="rounds must be >= 0"):
        net.time(**{**c, "rounds": np.array([0, -1])})
    with pytest.raises(ValueError, match="num_workers must be >= 1"):
        net.time(**{**c, "num_workers": 0})
    with pytest.raises(TypeError):
        net.time(c["rounds"], c["bits_up"], c["bits_down"], c["bits_up"], c["bits_down"], 2)


def test_network_model_is_frozen_and_hashable():
    a = C.NetworkModel(1e-5, 1e-9)
    b = C.NetworkModel(latency=1e-5, seconds_per_bit=1e-9, topology="parameter_server")
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    assert a != C.NetworkModel(1e-5, 1e-9, "ring_allreduce")
    assert isinstance(C.NetworkModel(1, 0).latency, float)  # ints are stored as floats
    with pytest.raises(AttributeError):
        a.latency = 0.0
    assert "ring_allreduce" in C.NetworkModel.TOPOLOGIES
