r"""Claim (lecture §2, §5): compress both directions; combine compression with similarity.

Part 1: ℓ2-logistic regression (λ = 0.1) on mushrooms, M = 100 iid workers, float64, Rand-K
with K = d/10 up (shared-seed indices). GD; DIANA (uplink compressed, dense broadcast); DCGD
with unbiased Rand-K in *both* directions; EF21-P + DIANA (Top-K on the downlink with primal
error feedback, Gruntkowska et al.; THEORY.md §2.7), at DIANA's theory step. Measured: rounds
and bits up and down per worker to :math:`f - f^\star \le 10^{-6}(f(x^0) - f^\star)`.
Predicted: with error feedback the downlink errors add to the uplink's instead of multiplying,
so EF21-P needs about DIANA's rounds (within 1.5×) while its downlink carries ≈ K/d of the bits
(≤ 1/5 of DIANA's) and its total is the smallest; unbiased compression of the broadcast without
shifts or feedback stalls in a neighbourhood (above 1e-4).

Part 2: OLGA (compression under similarity, THEORY.md §2.10) on similar quadratics (M = 16,
d = 40, L/μ = 100, δ/μ = 10, float64) with Rand-4 uplink messages converges to x* exactly; AEG
sliding (dense) for comparison. Predicted (§2.10): OLGA reaches ‖x − x*‖² ≤ 1e-8‖x⁰ − x*‖²,
and at M = 16 it still sends more uplink bits than AEG sliding (its gain is asymptotic in M).
"""

from __future__ import annotations

from typing import Any

from jaxdist.experiments._claims import Claim, Context, Verdict, first_below, np, verdict

_TARGET = 1e-6
_SIZES = {"quick": {"rounds": 1500, "sim_iters": 400}, "full": {"rounds": 4000, "sim_iters": 1200}}
ARMS = ("gd", "diana", "dcgd_bidirectional", "ef21_p")
LABELS = {
    "gd": "GD (dense both ways)",
    "diana": "DIANA + Rand-K up, dense down",
    "dcgd_bidirectional": "DCGD, Rand-K up and down",
    "ef21_p": "EF21-P + DIANA: Rand-K up, Top-K down",
    "olga": "OLGA, Rand-4 up",
    "aeg_sliding": "AEG sliding (dense)",
}


def _curve(trace, rel) -> dict[str, Any]:
    every = max(1, len(rel) // 300)
    return {
        "curve_rel": rel[::every].tolist(),
        "curve_rounds": np.asarray(trace.rounds)[::every].tolist(),
        "curve_bits_up": np.asarray(trace.bits_up)[::every].tolist(),
        "curve_bits_down": np.asarray(trace.bits_down)[::every].tolist(),
    }


def _to_target(trace, rel, target) -> dict[str, Any]:
    i = first_below(rel, target)
    return {
        "rounds": None if i is None else int(trace.rounds[i]),
        "bits_up": None if i is None else int(trace.bits_up[i]),
        "bits_down": None if i is None else int(trace.bits_down[i]),
        "final_rel": float(rel[-1]),
    }


def _arm(arm: str, size: dict[str, Any], seed: int) -> dict[str, Any]:
    import jax
    import optax

    import jaxdist
    from jaxdist import theory
    from jaxdist.compressors import rand_k, top_k

    with jax.enable_x64(True):
        M = 100
        prob = jaxdist.problems.logistic_regression(
            "mushrooms", M, split="iid", l2=0.1, key=seed, dtype="float64"
        )
        d = prob.dim
        K = d // 10
        rk = rand_k(K)
        omega = float(rk.omega(d))
        g_diana = float(theory.diana_stepsize(prob.L, prob.L_max, omega, M))
        if arm == "gd":
            tx = optax.chain(jaxdist.dgd(), optax.sgd(1.0 / prob.L))
        elif arm == "diana":
            tx = optax.chain(jaxdist.diana(rk), optax.sgd(g_diana))
        elif arm == "dcgd_bidirectional":
            gamma = float(theory.dcgd_stepsize(prob.L, prob.L_max, omega, M))
            tx = optax.chain(jaxdist.dcgd(rk, down=rand_k(K, shared=True)), optax.sgd(gamma))
        else:
            tx = optax.chain(jaxdist.ef21_p(rk, top_k(K)), optax.sgd(g_diana))
        trace = jaxdist.run(tx, prob, size["rounds"], jax.random.key(seed), log_every=5)
        rel = np.asarray(trace.f_gap, np.float64) / float(trace.f_gap[0])
        return {"arm": arm, "d": d, "K": K, **_to_target(trace, rel, _TARGET), **_curve(trace, rel)}


def _similarity_arm(arm: str, size: dict[str, Any], seed: int) -> dict[str, Any]:
    import jax

    import jaxdist
    from jaxdist.compressors import rand_k

    with jax.enable_x64(True):
        prob = jaxdist.problems.similar_quadratics(
            16, 40, L=100.0, mu=1.0, delta=10.0, key=seed, dtype="float64"
        )
        ds, Ls = prob.info["delta_server"], prob.info["L_server"]
        if arm == "olga":
            method = jaxdist.olga(rand_k(4), delta=ds, mu=prob.mu, server_smoothness=Ls)
        else:
            method = jaxdist.aeg_sliding(ds, prob.mu, server_smoothness=Ls)
        trace = jaxdist.run(method, prob, size["sim_iters"], jax.random.key(seed))
        rel = np.asarray(trace.dist_sq, np.float64) / float(trace.dist_sq[0])
        return {"arm": arm, **_to_target(trace, rel, 1e-8), **_curve(trace, rel)}


def run(ctx: Context) -> dict[str, Any]:
    size = _SIZES[ctx.size]
    arms = {
        a: ctx.unit(a, {"arm": a, **size, "target": _TARGET}, lambda a=a: _arm(a, size, ctx.seed))
        for a in ARMS
    }
    sim = {
        a: ctx.unit(a, {"arm": a, **size}, lambda a=a: _similarity_arm(a, size, ctx.seed))
        for a in ("olga", "aeg_sliding")
    }
    return {"target": _TARGET, "arms": arms, "similarity": sim}


def check(results: dict[str, Any]) -> Verdict:
    a = results["arms"]
    ef, di, bi = a["ef21_p"], a["diana"], a["dcgd_bidirectional"]
    parts = []
    reached = ef["rounds"] is not None and di["rounds"] is not None
    parts.append(
        (
            bool(reached and ef["rounds"] <= 1.5 * di["rounds"]),
            f"EF21-P + DIANA reaches {results['target']:g} in {ef['rounds']} rounds, DIANA in "
            f"{di['rounds']}",
            "about DIANA's rounds (≤ 1.5×): the two directions' errors add",
        )
    )
    totals = {k: v["bits_up"] + v["bits_down"] for k, v in a.items() if v["bits_up"] is not None}
    parts.append(
        (
            bool(
                reached
                and ef["bits_down"] <= di["bits_down"] / 5
                and min(totals, key=totals.get) == "ef21_p"
            ),
            f"downlink bits: EF21-P {ef['bits_down']}, DIANA {di['bits_down']}; totals "
            + ", ".join(f"{k} {v}" for k, v in totals.items()),
            "EF21-P's downlink ≤ 1/5 of DIANA's and the smallest total",
        )
    )
    parts.append(
        (
            bool(bi["rounds"] is None and bi["final_rel"] > 1e-4),
            f"DCGD with Rand-K both ways ends at {bi['final_rel']:.1e}",
            "a neighbourhood (> 1e-4), never the target",
        )
    )
    o, g = results["similarity"]["olga"], results["similarity"]["aeg_sliding"]
    parts.append(
        (
            bool(
                o["rounds"] is not None and g["bits_up"] is not None and o["bits_up"] > g["bits_up"]
            ),
            f"OLGA reaches 1e-8 in {o['rounds']} rounds with {o['bits_up']} uplink bits; AEG "
            f"sliding in {g['rounds']} rounds with {g['bits_up']}",
            "exact convergence; more uplink bits than AEG at M = 16 (§2.10)",
        )
    )
    return verdict(parts)


def plot(results: dict[str, Any], v: Verdict, folder: str) -> list[str]:
    from jaxdist.plotting import pyplot, save, style, title

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), gridspec_kw={"wspace": 0.3})
    for i, (name, a) in enumerate(results["arms"].items()):
        rel = np.asarray(a["curve_rel"])
        shown = np.where(rel > 1e-14, rel, np.nan)
        n = len(rel)
        up = np.asarray(a["curve_bits_up"], float)
        down = np.asarray(a["curve_bits_down"], float)
        first = up > 0
        axes[0].loglog(up[first], shown[first], label=LABELS[name], **style(i, n))
        axes[1].loglog(down[first], shown[first], label=LABELS[name], **style(i, n))
    for ax, what in zip(axes[:2], ("up", "down"), strict=True):
        ax.axhline(results["target"], color="gray", lw=0.7, ls=":")
        ax.set_xlabel(f"bits {what} per worker (float64 values)")
        ax.set_ylabel("(f − f*) / (f⁰ − f*)  (shown down to 1e-14)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7.5, loc="lower left")
    for i, (name, a) in enumerate(results["similarity"].items()):
        rel = np.asarray(a["curve_rel"])
        up = np.asarray(a["curve_bits_up"], float)
        first = up > 0
        axes[2].loglog(
            up[first],
            np.where(rel > 1e-14, rel, np.nan)[first],
            label=LABELS[name],
            **style(4 + i, len(rel)),
        )
    axes[2].axhline(1e-8, color="gray", lw=0.7, ls=":")
    axes[2].set_xlabel("bits up per worker (similar quadratics, δ/μ = 10)")
    axes[2].set_ylabel("‖x − x*‖² / ‖x⁰ − x*‖²")
    axes[2].grid(True, which="both", alpha=0.3)
    axes[2].legend(fontsize=7.5, loc="lower left")
    title(fig, CLAIM.claim, v)
    return save(fig, folder, "bidirectional")


CLAIM = Claim(
    name="bidirectional",
    section="§2, §5",
    claim="Compressing the broadcast too costs almost no extra rounds with primal error feedback "
    "(EF21-P) but stalls without it; compression also combines with similarity (OLGA converges "
    "exactly with compressed messages).",
    run=run,
    check=check,
    plot=plot,
    quick_seconds=40,
)
