r"""Claim (lecture §1–§2): the topology prices a round; all-reduce beats a server, Perm-K halves it.

Every time below is the α–β model of THEORY.md §4 (:class:`jaxdist.comm.NetworkModel`) applied
to the **exact ledger counts** of real runs (:class:`jaxdist.experiments.Trace`), and predicted
independently by the per-operation formulas of :mod:`jaxdist.comm` from the compressors'
``bits(d)``. ℓ2-logistic regression (λ = 0.1) on mushrooms split by label, float32, d = 113,
b = 32 bits per float. Methods: GD (dense both ways), and DIANA (THEORY.md §2.3, theory step)
with independent Rand-8, shared-key Rand-8 or Perm-K (blocks of ⌈d/M⌉), each sending its values
with the indices regenerated from the shared seed.

1. A dense round (bandwidth term, α = 0): a parameter server's NIC serialises 2M·d·b bits, so
   its round grows ∝ M; the ring all-reduce sends 2((M−1)/M)·d·b < 2d·b per device whatever M
   ("every device does the same small amount of work"); the naive all-to-all sends (M−1)·d·b.
2. Perm-K's disjoint blocks are an all-gather with no reduction: (M−1)·⌈d/M⌉·b, half a dense ring
   all-reduce when M divides d. Shared-key Rand-K all-reduces its K-vector: K/d of the dense ring.
3. Independent Rand-K cannot be reduced in K-length buffers (different supports): its all-gather
   of K values per worker costs (M−1)·K·b and loses to the dense ring once M·K > 2d.
4. The lecture's "a broadcast is ~5× cheaper than receiving from everyone" (``broadcast_speedup =
   5``): the gather is then 5/6 of a dense server round, and cutting the broadcast's price helps
   a method whose uplink is compressed most (its dense downlink was the bottleneck).
5. Time to ε (f − f* ≤ 1e-5·(f⁰ − f*)) at M = 16 on a network with α = 1 µs and β = 1 ns/bit:
   GD's ring all-reduce against its parameter server, by the predicted ratio of round times.
"""

from __future__ import annotations

import math
from typing import Any

from jaxdist.experiments._claims import Claim, Context, Verdict, first_below, np, verdict

_PROBLEM = {"dataset": "mushrooms", "split": "by_label", "l2": 0.1}
_K = 8
_D = 113  # mushrooms: 112 one-hot features and a bias
_B = 32
_M = 16
_EPS = 1e-5
_NET = {"latency": 1e-6, "seconds_per_bit": 1e-9}
_SPEEDUP = 5.0
_SIZES = {
    "quick": {"workers": [2, 4, 8, 16, 32, 64, 113], "rounds": 1000},
    "full": {"workers": [2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 113], "rounds": 3000},
}
METHODS = ("gd", "diana_rand_k", "diana_shared_rand_k", "diana_perm_k")
LABELS = {
    "gd": "GD (dense)",
    "diana_rand_k": f"DIANA + Rand-{_K}",
    "diana_shared_rand_k": f"DIANA + shared-key Rand-{_K}",
    "diana_perm_k": "DIANA + Perm-K",
}
#: Each method's natural aggregation when there is no server (see the module docstring).
COLLECTIVE = {
    "gd": "ring_allreduce",
    "diana_rand_k": "allgather",
    "diana_shared_rand_k": "ring_allreduce",
    "diana_perm_k": "allgather",
}


def _method(name: str, prob: Any):
    import optax

    import jaxdist
    from jaxdist import theory
    from jaxdist.compressors import perm_k, rand_k

    if name == "gd":
        return optax.chain(jaxdist.dgd(), optax.sgd(1.0 / prob.L)), 1.0 / prob.L
    c = {
        "diana_rand_k": lambda: rand_k(_K),
        "diana_shared_rand_k": lambda: rand_k(_K, shared=True),
        "diana_perm_k": lambda: perm_k(num_workers=prob.num_workers),
    }[name]()
    omega = float(c.omega(prob.dim))
    gamma = float(theory.diana_stepsize(prob.L, prob.L_max, omega, prob.num_workers))
    return optax.chain(jaxdist.diana(c), optax.sgd(gamma)), gamma


def _counts(trace: Any) -> dict[str, list[int]]:
    keys = ("rounds", "bits_up", "bits_down", "bits_up_total", "bits_down_total")
    return {k: np.asarray(trace.series[k]).tolist() for k in keys}


def _per_round(workers: list[int], d: int) -> dict[str, Any]:
    """Every method's message sizes at every M, read from its ledger by abstract evaluation of
    ``init`` (sizes are static; each of these methods sends one message each way per round,
    which the M = 16 runs' ledger counts confirm in :func:`check`)."""
    import jax
    import jax.numpy as jnp

    from jaxdist import comm

    class _Shape:  # what _method needs of a problem, without building one per M
        def __init__(self, M):
            self.num_workers, self.dim, self.L, self.L_max = M, d, 1.0, 1.0

    rows = []
    for M in workers:
        for name in METHODS:
            tx, _ = _method(name, _Shape(M))
            state = jax.eval_shape(
                comm.simulate(lambda _, tx=tx: tx.init(jnp.zeros(d)), M), jnp.arange(M)
            )
            (ledger,) = comm.find_ledgers(state)
            up, down = sum(ledger.up_sizes), sum(ledger.down_sizes)
            rows.append(
                {
                    "M": M,
                    "method": name,
                    "d": d,
                    "rounds": [0, 1],
                    "bits_up": [0, up],
                    "bits_down": [0, down],
                    "bits_up_total": [0, M * up],
                    "bits_down_total": [0, M * down],
                }
            )
    return {"rows": rows}


def _to_target(name: str, rounds: int, seed: int) -> dict[str, Any]:
    import jaxdist

    prob = jaxdist.problems.logistic_regression(**_PROBLEM, num_workers=_M, key=seed)
    tx, gamma = _method(name, prob)
    trace = jaxdist.run(tx, prob, rounds, seed, log_every=10)
    gap = np.asarray(trace.f_gap, np.float64)
    return {
        "method": name,
        "gamma": gamma,
        "d": prob.dim,
        "rel_gap": (gap / gap[0]).tolist(),
        **_counts(trace),
    }


def run(ctx: Context) -> dict[str, Any]:
    size = _SIZES[ctx.size]
    cfg = {"problem": _PROBLEM, "K": _K}
    per_round = ctx.unit(
        "per_round",
        {**cfg, "workers": size["workers"]},
        lambda: _per_round(size["workers"], _D),
    )
    arms = {
        m: ctx.unit(
            m,
            {**cfg, "M": _M, "rounds": size["rounds"], "method": m},
            lambda m=m: _to_target(m, size["rounds"], ctx.seed),
        )
        for m in METHODS
    }
    return {"size": size, "per_round": per_round["rows"], "arms": arms, "M": _M}


# ---------------------------------------------------------------------------------------------
# Measured (NetworkModel on the ledgers) and predicted (comm's per-operation formulas).


def modelled(counts: dict[str, Any], M: int, topology: str, **net: float) -> np.ndarray:
    """Cumulative modelled seconds of a run's logged points (NetworkModel on its ledgers)."""
    from jaxdist.comm import NetworkModel

    net = {"latency": 0.0, "seconds_per_bit": 1.0, **net}
    c = {k: np.asarray(counts[k], np.int64) for k in ("rounds", "bits_up", "bits_down")}
    c |= {k: np.asarray(counts[k], np.int64) for k in ("bits_up_total", "bits_down_total")}
    return NetworkModel(topology=topology, **net).time(**c, num_workers=M)


def message_bits(method: str, M: int, d: int) -> int:
    """Bits one worker sends up per round, from the compressor (not the ledger)."""
    from jaxdist.compressors import perm_k, rand_k

    if method == "gd":
        return d * _B
    if method == "diana_perm_k":
        return int(perm_k(num_workers=M).bits(d))
    return int(rand_k(_K, shared=method == "diana_shared_rand_k").bits(d))


def predicted_round(method: str, topology: str, M: int, d: int, **net: float) -> float:
    """Seconds of one round from the per-operation formulas of :mod:`jaxdist.comm`."""
    from jaxdist import comm

    lat, spb = net.get("latency", 0.0), net.get("seconds_per_bit", 1.0)
    up = message_bits(method, M, d)
    if topology == "parameter_server":
        s = net.get("broadcast_speedup", 1.0)
        return comm.parameter_server_time(
            M, d, _B, lat, spb, uplink_bits=up, downlink_bits=d * _B, broadcast_speedup=s
        )
    if topology == "ring_allreduce":
        return comm.allreduce_time(M, up / _B, _B, lat, spb)
    return comm.allgather_time(M, up, lat, spb)


def _round_time(row: dict[str, Any], topology: str, **net: float) -> float:
    return float(modelled(row, row["M"], topology, **net)[-1])


def check(results: dict[str, Any]) -> Verdict:
    rows = results["per_round"]
    by = {(r["method"], r["M"]): r for r in rows}
    Ms = sorted({r["M"] for r in rows})
    d = rows[0]["d"]
    dense = d * _B
    parts = []

    ps = np.array([_round_time(by["gd", M], "parameter_server") for M in Ms])
    ring = np.array([_round_time(by["gd", M], "ring_allreduce") for M in Ms])
    a2a = np.array([_round_time(by["gd", M], "allgather") for M in Ms])
    slope = float(np.polyfit(np.log(Ms), np.log(ps), 1)[0])
    exact = all(
        _round_time(by["gd", M], t) == predicted_round("gd", t, M, d)
        for M in Ms
        for t in ("parameter_server", "ring_allreduce", "allgather")
    )
    parts.append(
        (
            bool(abs(slope - 1) < 1e-9 and np.all(ring < 2 * dense) and exact),
            f"dense round over M = {Ms[0]}…{Ms[-1]}: server ∝ M^{slope:.3f}, ring "
            f"{ring.min() / dense:.2f}–{ring.max() / dense:.2f}·d·b bits, all-to-all "
            f"{a2a[-1] / dense:.0f}·d·b at M = {Ms[-1]}",
            "server 2M·d·b (∝ M¹), ring 2((M−1)/M)·d·b < 2d·b, all-to-all (M−1)·d·b",
        )
    )

    perm = np.array([_round_time(by["diana_perm_k", M], "allgather") for M in Ms])
    ratio = perm / ring
    pred = np.array([M * math.ceil(d / M) / (2 * d) for M in Ms])
    i16 = Ms.index(_M) if _M in Ms else 0
    shared = _round_time(by["diana_shared_rand_k", Ms[i16]], "ring_allreduce") / ring[i16]
    parts.append(
        (
            bool(np.allclose(ratio, pred, rtol=1e-12) and abs(shared - _K / d) < 1e-12),
            f"Perm-K all-gather / dense ring all-reduce = {ratio[i16]:.3f} at M = {Ms[i16]} "
            f"({ratio.min():.3f}–{ratio.max():.3f} over M); shared-key Rand-{_K} all-reduce "
            f"/ dense ring = {shared:.4f}",
            f"M⌈d/M⌉/(2d) = {pred[i16]:.3f} (½ when M divides d); K/d = {_K / d:.4f}",
        )
    )

    sparse = np.array([_round_time(by["diana_rand_k", M], "allgather") for M in Ms])
    crossover = 2 * d / _K
    loses = [M for M, s, r in zip(Ms, sparse, ring, strict=True) if s > r]
    first = loses[0] if loses else None
    expected = next((M for M in Ms if M > crossover), None)
    parts.append(
        (
            bool(first == expected and expected is not None),
            f"independent Rand-{_K} (an all-gather, no reduction) first costs more than the dense "
            f"ring at M = {first}",
            f"M·K > 2d, M > {crossover:.2f}: M = {expected} on this grid",
        )
    )

    arms, M = results["arms"], results["M"]
    per_round = {
        n: (a["bits_up"][-1] / a["rounds"][-1], a["bits_down"][-1] / a["rounds"][-1])
        for n, a in arms.items()
    }
    sizes = {n: (by[n, M]["bits_up"][1], by[n, M]["bits_down"][1]) for n in arms}
    parts.append(
        (
            bool(per_round == sizes),
            f"the M = {M} runs' ledgers: "
            + ", ".join(f"{LABELS[n]} {u:g} up / {dn:g} down" for n, (u, dn) in per_round.items())
            + " bits per round",
            "one message each way per round, of the sizes used above",
        )
    )
    cheap = {"broadcast_speedup": _SPEEDUP}

    def share(name: str) -> float:
        row = by[name, M]
        up_only = {**row, "bits_down": [0] * len(row["rounds"])}
        up_only["bits_down_total"] = up_only["bits_down"]
        return _round_time(up_only, "parameter_server", **cheap) / _round_time(
            row, "parameter_server", **cheap
        )

    gain = {
        n: _round_time(by[n, M], "parameter_server")
        / _round_time(by[n, M], "parameter_server", **cheap)
        for n in ("gd", "diana_rand_k")
    }
    pred_gain = {
        n: predicted_round(n, "parameter_server", M, d)
        / predicted_round(n, "parameter_server", M, d, **cheap)
        for n in gain
    }
    parts.append(
        (
            bool(
                abs(share("gd") - _SPEEDUP / (_SPEEDUP + 1)) < 1e-12
                and all(abs(gain[n] - pred_gain[n]) < 1e-12 for n in gain)
                and gain["diana_rand_k"] > gain["gd"]
            ),
            f"broadcast {_SPEEDUP:g}× cheaper: the gather is {share('gd'):.3f} of GD's server "
            f"round; it cuts GD's round by {gain['gd']:.3f}× and DIANA + Rand-{_K}'s "
            f"(compressed uplink, dense downlink) by {gain['diana_rand_k']:.2f}×",
            f"5/6 = {5 / 6:.3f}; (1 + 1)/(1 + 1/5) = {pred_gain['gd']:.3f}× and "
            f"{pred_gain['diana_rand_k']:.2f}× from the message sizes",
        )
    )

    gd = arms["gd"]
    k = first_below(gd["rel_gap"], _EPS)
    if k is None:
        parts.append((False, f"GD did not reach {_EPS:g} in {gd['rounds'][-1]} rounds", "reached"))
    else:
        t_ps = float(modelled(gd, M, "parameter_server", **_NET)[k])
        t_ring = float(modelled(gd, M, "ring_allreduce", **_NET)[k])
        p = predicted_round("gd", "parameter_server", M, d, **_NET) / predicted_round(
            "gd", "ring_allreduce", M, d, **_NET
        )
        parts.append(
            (
                bool(abs(t_ps / t_ring - p) < 1e-9 * p and t_ring < t_ps),
                f"GD to ε = {_EPS:g} at M = {M} (α = 1 µs, β = 1 ns/bit, {gd['rounds'][k]} "
                f"rounds): server {t_ps * 1e3:.2f} ms, ring all-reduce {t_ring * 1e3:.2f} ms "
                f"({t_ps / t_ring:.2f}× faster)",
                f"(2α + 2M·d·b·β)/(2(M−1)α + 2((M−1)/M)·d·b·β) = {p:.2f}×",
            )
        )
    return verdict(parts)


# ---------------------------------------------------------------------------------------------
# Figure.


_CHEAP = {**_NET, "broadcast_speedup": _SPEEDUP}
#: (method, topology, network) of every curve of the time-to-ε panel.
_TIME_ARMS = (
    ("gd", "parameter_server", _NET),
    ("gd", "parameter_server", _CHEAP),
    ("gd", "ring_allreduce", _NET),
    ("gd", "allgather", _NET),
    ("diana_rand_k", "parameter_server", _NET),
    ("diana_rand_k", "parameter_server", _CHEAP),
    ("diana_rand_k", "allgather", _NET),
    ("diana_shared_rand_k", "ring_allreduce", _NET),
    ("diana_perm_k", "allgather", _NET),
)


_TOPO = {
    "parameter_server": "server",
    "ring_allreduce": "ring all-reduce",
    "allgather": "all-gather",
}


def plot(results: dict[str, Any], v: Verdict, folder: str) -> list[str]:
    from jaxdist.plotting import clipped, floor_line, plain_log_ticks, pyplot, save, style, title

    plt = pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"wspace": 0.3})
    rows = results["per_round"]
    by = {(r["method"], r["M"]): r for r in rows}
    Ms = sorted({r["M"] for r in rows})
    d = rows[0]["d"]
    xs = np.arange(Ms[0], Ms[-1] + 1)  # the formulas at every integer M (⌈d/M⌉ for Perm-K)
    curves = [
        ("gd", "parameter_server", "GD, parameter server"),
        ("gd", "allgather", "GD, naive all-to-all"),
        ("gd", "ring_allreduce", "GD, ring all-reduce"),
        ("diana_rand_k", "allgather", f"independent Rand-{_K}, all-gather"),
        ("diana_perm_k", "allgather", "Perm-K, all-gather of blocks"),
        ("diana_shared_rand_k", "ring_allreduce", f"shared-key Rand-{_K}, all-reduce"),
    ]
    for i, (m, topo, label) in enumerate(curves):
        st = style(i, len(Ms))
        measured = [_round_time(by[m, M], topo) / (d * _B) for M in Ms]
        ax0.loglog(Ms, measured, ls="none", marker=st["marker"], color=st["color"], label=label)
        pred = [predicted_round(m, topo, int(M), d) / (d * _B) for M in xs]
        ax0.loglog(xs, pred, color=st["color"], ls=st["ls"], lw=0.9)
    ax0.plot([], [], color="k", lw=0.9, label="markers: ledgers; lines: predicted (THEORY.md §4)")
    ax0.set_xlabel("workers M")
    ax0.set_ylabel("bits on the critical path per round / (d·b)   [α = 0]")
    plain_log_ticks(ax0.xaxis)
    ax0.grid(True, which="both", alpha=0.3)
    ax0.legend(fontsize=7.5)

    arms, M = results["arms"], results["M"]
    # colour and marker: the method; line style: the topology
    colours = {m: f"C{i}" for i, m in enumerate(METHODS)}
    markers = {m: mk for m, mk in zip(METHODS, "osD^", strict=True)}
    dashes = {"parameter_server": "-", "ring_allreduce": "-.", "allgather": ":"}
    for m, topo, net in _TIME_ARMS:
        a = arms[m]
        t = modelled(a, M, topo, **net)
        shown = clipped(a["rel_gap"])  # float32 rounding noise is not data
        label = f"{LABELS[m]}, {_TOPO[topo]}"
        ls = dashes[topo]
        if net.get("broadcast_speedup", 1.0) != 1.0:
            label += f" (broadcast {_SPEEDUP:g}× cheaper)"
            ls = "--"
        first = t > 0
        ax1.loglog(
            t[first],
            shown[first],
            label=label,
            color=colours[m],
            ls=ls,
            marker=markers[m],
            markevery=max(1, int(first.sum()) // 8),
            ms=4,
        )
    ax1.axhline(_EPS, color="k", lw=0.8, ls=":")
    ax1.annotate(
        f"ε = {_EPS:g}", (0.99, _EPS * 1.3), xycoords=("axes fraction", "data"), ha="right"
    )
    floor_line(ax1, right=True)
    ax1.set_xlabel(f"modelled communication time (s), M = {M}, α = 1 µs, β = 1 ns/bit")
    ax1.set_ylabel("(f(x) − f*) / (f(x⁰) − f*)")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=6.5, loc="lower left")
    title(fig, CLAIM.claim, v)
    return save(fig, folder, "topology")


CLAIM = Claim(
    name="topology",
    section="§1–§2",
    claim="A parameter server's round grows with M, a ring all-reduce's does not; Perm-K is an "
    "all-gather at half a dense ring all-reduce; independent Rand-K cannot be reduced; with a "
    "broadcast ~5× cheaper than a gather the uplink is the bottleneck.",
    run=run,
    check=check,
    plot=plot,
    quick_seconds=40,
)
