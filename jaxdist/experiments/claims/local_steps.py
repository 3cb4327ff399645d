r"""Claim (lecture §4): local steps help at first, then drift; regularising or shifting fixes it.

Local GD with H ∈ {1, 2, 8, 32} local steps of size 1/L_max between averages, FedProx (exact
prox, μ_p = L), SCAFFOLD (option II, K = 8, η_l = 1/(K·L_max)) and Scaffnew (γ = 1/L_max,
p = 1/√κ) on heterogeneous quadratics (:func:`jaxdist.problems.heterogeneous_quadratics`, float64),
against communication rounds. Predicted (THEORY.md §2.8, §2.10): local GD converges to the
fixed point :math:`x_{fp}(H)` of :func:`jaxdist.theory.local_gd_fixed_point` (H = 1 is GD, so
:math:`x_{fp} = x^\star`), whose distance to :math:`x^\star` grows with H, while larger H is
ahead after the first rounds; FedProx stops at its own closed-form fixed point
(:func:`jaxdist.theory.fedprox_fixed_point`), closer than H = 32's; SCAFFOLD and Scaffnew reach
:math:`x^\star`. Every arm sends one full vector up and down per participant and round
(SCAFFOLD two), so the bits are proportional to the rounds shown.
"""

from __future__ import annotations

from typing import Any

from jaxdist.experiments._claims import Claim, Context, Verdict, first_below, np, verdict

_HS = (1, 2, 8, 32)
_EARLY = 3  # rounds after which larger H must be ahead
_SIZES = {
    "quick": {"M": 8, "d": 20, "rounds": 600},
    "full": {"M": 32, "d": 60, "rounds": 1500},
}
_PROBLEM = {"L": 1.0, "mu": 0.02, "heterogeneity": 0.05}
_FEDPROX_MU = 1.0


def _problem(size: dict[str, Any], seed: int):
    import jaxdist

    return jaxdist.problems.heterogeneous_quadratics(
        size["M"], size["d"], **_PROBLEM, key=seed, dtype="float64"
    )


def _arm(arm: str, size: dict[str, Any], seed: int) -> dict[str, Any]:
    import jax

    import jaxdist
    from jaxdist import theory

    with jax.enable_x64(True):
        prob = _problem(size, seed)
        A, b = np.asarray(prob.data["A"]), np.asarray(prob.data["b"])
        x_star = np.asarray(prob.x_star)
        L_max, mu = float(np.max(prob.L_m)), float(prob.mu)
        R, x_fp = size["rounds"], None
        if arm.startswith("local_gd"):
            H = int(arm.split("H")[1])
            method, T = jaxdist.local_gd(1.0 / L_max, H), R
            x_fp = theory.local_gd_fixed_point(A, b, 1.0 / L_max, H)
        elif arm == "fedprox":
            solver = jaxdist.methods.Solver(max_steps=2000, rtol=1e-12)
            method, T = jaxdist.fedprox(_FEDPROX_MU, local_smoothness=L_max, solver=solver), R
            x_fp = theory.fedprox_fixed_point(A, b, _FEDPROX_MU)
        elif arm == "scaffold":
            method, T = jaxdist.scaffold(1.0 / (8 * L_max), 8), R
        else:  # scaffnew: R expected communications
            p = float(theory.scaffnew_probability(L_max, mu))
            method, T = jaxdist.scaffnew(theory.scaffnew_stepsize(L_max), p), int(R / p)
        trace = jaxdist.run(method, prob, T, jax.random.key(seed))
        rel = np.asarray(trace.dist_sq) / float(trace.dist_sq[0])
        rounds = np.asarray(trace.rounds)
        # stop the curve at 1e-14 (float64 resolution of the squared distance is ~1e-30)
        below = first_below(rel, 1e-14)
        stop = below + 1 if below is not None else rel.size
        keep = np.unique(np.concatenate([np.arange(0, min(stop, 40)), np.arange(0, stop, 5)]))
        d0 = float(np.sum((np.asarray(prob.init_params) - x_star) ** 2))
        return {
            "arm": arm,
            "final_rel": float(rel[-1]),
            "rounds_total": int(rounds[-1]),
            "bits_up_total": int(trace.bits_up[-1]),
            "bits_down_total": int(trace.bits_down[-1]),
            "early_rel": float(rel[np.searchsorted(rounds, _EARLY)]),
            "fixed_point_rel": None if x_fp is None else float(np.sum((x_fp - x_star) ** 2) / d0),
            "curve_rounds": rounds[keep].tolist(),
            "curve_rel": rel[keep].tolist(),
        }


ARMS = (*(f"local_gd_H{H}" for H in _HS), "fedprox", "scaffold", "scaffnew")
LABELS = {
    **{f"local_gd_H{H}": f"local GD, H = {H}" for H in _HS},
    "fedprox": f"FedProx, μ_p = {_FEDPROX_MU:g}",
    "scaffold": "SCAFFOLD, K = 8",
    "scaffnew": "Scaffnew, p = 1/√κ",
}


def run(ctx: Context) -> dict[str, Any]:
    size = _SIZES[ctx.size]
    cfg = {"size": size, "problem": _PROBLEM, "fedprox_mu": _FEDPROX_MU, "early": _EARLY}
    arms = {a: ctx.unit(a, {**cfg, "arm": a}, lambda a=a: _arm(a, size, ctx.seed)) for a in ARMS}
    return {"size": size, "problem": _PROBLEM, "arms": arms}


def check(results: dict[str, Any]) -> Verdict:
    arms = results["arms"]
    gd = [arms[f"local_gd_H{H}"] for H in _HS]
    parts = []
    err = max(
        abs(a["final_rel"] - a["fixed_point_rel"]) / max(a["fixed_point_rel"], 1e-12)
        for a in gd[1:]
    )
    parts.append(
        (
            bool(err <= 1e-6 and gd[0]["final_rel"] <= 1e-8),
            f"local GD ends at x_fp(H) (max rel. error {err:.1e}); "
            f"H = 1 at {gd[0]['final_rel']:.1e}",
            "x_fp(H) of §2.10 to 1e-6, H = 1 (GD) at x* (≤ 1e-8)",
        )
    )
    fps = [a["fixed_point_rel"] for a in gd]
    parts.append(
        (
            bool(np.all(np.diff(fps) > 0)),
            "‖x_fp − x*‖²/‖x⁰ − x*‖² = "
            + ", ".join(f"{v:.1e}" for v in fps)
            + " for H = 1, 2, 8, 32",
            "growing with H",
        )
    )
    early = [a["early_rel"] for a in gd]
    parts.append(
        (
            bool(np.all(np.diff(early) < 0)),
            f"after {_EARLY} rounds: " + ", ".join(f"{v:.1e}" for v in early),
            "smaller for larger H",
        )
    )
    fp, h32 = arms["fedprox"], arms["local_gd_H32"]
    fp_err = abs(fp["final_rel"] - fp["fixed_point_rel"]) / fp["fixed_point_rel"]
    parts.append(
        (
            bool(fp_err <= 1e-6 and 1e-10 < fp["final_rel"] < h32["final_rel"]),
            f"FedProx ends at {fp['final_rel']:.1e} (closed form {fp['fixed_point_rel']:.1e}), "
            f"H = 32 at {h32['final_rel']:.1e}",
            "biased (> 0) but closer than H = 32",
        )
    )
    for name in ("scaffold", "scaffnew"):
        a = arms[name]
        parts.append(
            (
                bool(a["final_rel"] <= 1e-8),
                f"{name} ends at {a['final_rel']:.1e} after {a['rounds_total']} rounds",
                "x* (≤ 1e-8)",
            )
        )
    return verdict(parts)


def plot(results: dict[str, Any], v: Verdict, folder: str) -> list[str]:
    from jaxdist.plotting import plain_log_ticks, pyplot, save, style, title

    plt = pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"wspace": 0.3})
    for i, (name, a) in enumerate(results["arms"].items()):
        ax0.semilogy(
            a["curve_rounds"],
            a["curve_rel"],
            label=LABELS[name],
            **style(i, len(a["curve_rounds"])),
        )
        if a["fixed_point_rel"] and a["fixed_point_rel"] > 1e-14:
            ax0.axhline(a["fixed_point_rel"], color=f"C{i}", lw=0.7, ls=":")
    ax0.set_xscale("symlog", linthresh=10)
    ax0.set_xlabel("communication rounds (symlog: the first 10 linear)")
    ax0.set_ylabel("‖x − x*‖² / ‖x⁰ − x*‖²   (dotted: predicted fixed points)")
    ax0.set_ylim(bottom=1e-14)
    ax0.grid(True, which="both", alpha=0.3)
    ax0.legend(fontsize=7.5, loc="lower left")
    gd = [results["arms"][f"local_gd_H{H}"] for H in _HS]
    hs = np.array(_HS[1:])
    ax1.loglog(
        hs,
        [a["fixed_point_rel"] for a in gd[1:]],
        color="gray",
        ls="--",
        label="predicted x_fp(H) (THEORY.md §2.10)",
    )
    ax1.loglog(hs, [a["final_rel"] for a in gd[1:]], "o", color="C0", label="measured (last round)")
    ax1.set_xlabel("local steps H")
    ax1.set_ylabel("final ‖x − x*‖² / ‖x⁰ − x*‖²")
    plain_log_ticks(ax1.xaxis)
    ax1.set_xticks(hs)
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    title(fig, CLAIM.claim, v)
    return save(fig, folder, "local_steps")


CLAIM = Claim(
    name="local_steps",
    section="§4",
    claim="Local GD with more local steps H is faster at first, then stalls further from x* "
    "(client drift); FedProx reduces the drift, SCAFFOLD and Scaffnew remove it.",
    run=run,
    check=check,
    plot=plot,
    quick_seconds=20,
)
