r"""Claim (lecture §3): DCGD with Top-1 diverges on three workers; error feedback fixes it.

The arms of the named experiment ``counterexample`` (:data:`jaxdist.experiments.EXPERIMENTS`,
each a unit of this claim; Beznosikov et al. 2020, arXiv 2002.12410, Example 1, paper scaling,
THEORY.md §3): from :math:`x^0 = (1, 1, 1)`, DCGD with Top-1 multiplies x by exactly
:math:`1 + 11\gamma/6` per step for every γ > 0,
so :math:`f - f^\star` grows like :math:`(1 + 11\gamma/6)^{2k}`; EF14 and EF21 with the same
Top-1 and step converge, and DCGD with the unbiased Rand-1 converges. Top-1 in d = 3 sends one
float32 and a 2-bit index up per round (the uplink; the server's broadcast is dense).
"""

from __future__ import annotations

from typing import Any

from jaxdist.experiments._claims import Claim, Context, Verdict, np, verdict

_STEPS = {"quick": 1000, "full": 2000}


def run(ctx: Context) -> dict[str, Any]:
    from jaxdist.experiments._named import (
        EXPERIMENTS,
        _build_problem,
        _run_arm,
        summarize,
    )

    exp = EXPERIMENTS["counterexample"]
    steps = _STEPS[ctx.size]
    built: list[Any] = []

    def arm_result(arm) -> dict[str, Any]:
        if not built:
            built.append(_build_problem(exp.problem))
        trace, stepsize = _run_arm(arm, built[0], steps, exp.log_every, ctx.seed)
        s = summarize(trace, exp.target)
        return {
            "label": arm.label,
            "stepsize": stepsize,
            "diverged": s["diverged"],
            "final_rel_gap": s["final_rel_gap"],
            "rounds": np.asarray(trace.rounds).tolist(),
            "f_gap": np.asarray(trace.f_gap, np.float64).tolist(),
            "bits_up": np.asarray(trace.bits_up).tolist(),
            "bits_down": np.asarray(trace.bits_down).tolist(),
        }

    arms = {
        arm.name: ctx.unit(
            arm.name,
            exp.config(arm, num_steps=steps, seed=ctx.seed),
            lambda arm=arm: arm_result(arm),
        )
        for arm in exp.arms
    }
    return {"steps": steps, "arms": arms}


def growth_per_step(arm: dict[str, Any]) -> float:
    """The median per-step factor of ‖x − x*‖ implied by f − f* ∝ ‖x‖² between logged points."""
    gap, rounds = np.asarray(arm["f_gap"]), np.asarray(arm["rounds"], np.float64)
    ok = (gap[:-1] > 0) & np.isfinite(gap[1:]) & (gap[1:] > 0)
    per = (gap[1:][ok] / gap[:-1][ok]) ** (1.0 / (2.0 * np.diff(rounds)[ok]))
    return float(np.median(per)) if per.size else float("nan")


def check(results: dict[str, Any]) -> Verdict:
    arms = results["arms"]
    dcgd = arms["dcgd_top1"]
    gamma = dcgd["stepsize"]
    predicted = 1.0 + 11.0 * gamma / 6.0
    rate = growth_per_step(dcgd)
    parts = [
        (
            bool(abs(rate - predicted) <= 1e-5 * predicted and dcgd["diverged"]),
            f"DCGD-Top1 multiplies ‖x‖ by {rate:.7f} per step (γ = {gamma:.5g}), "
            f"f − f* grows to {dcgd['final_rel_gap']:.2e}·(f⁰ − f*)",
            f"1 + 11γ/6 = {predicted:.7f}, diverging",
        )
    ]
    for name in ("ef14_top1", "ef21_top1", "dcgd_rand1"):
        a = arms[name]
        parts.append(
            (
                bool(not a["diverged"] and 0 <= a["final_rel_gap"] < 1e-2),
                f"{a['label']} ends at {a['final_rel_gap']:.1e}·(f⁰ − f*)",
                "converging (< 1e-2)",
            )
        )
    up = arms["ef21_top1"]["bits_up"][-1]
    parts.append(
        (
            bool(up == results["steps"] * (32 + 2)),
            f"Top-1 uplink {up} bits per worker in {results['steps']} rounds",
            "32 + 2 bits per round (one float32, a 2-bit index)",
        )
    )
    return verdict(parts)


def plot(results: dict[str, Any], v: Verdict, folder: str) -> list[str]:
    from jaxdist.plotting import pyplot, save, style, title

    plt = pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"wspace": 0.3})
    for i, a in enumerate(results["arms"].values()):
        gap = np.asarray(a["f_gap"])
        rel = gap / gap[0]
        # float32 resolves f − f* to about 1e-7 of f(x⁰) − f*: clip below it, marked as clipped
        floor = 1e-7
        shown = np.where(rel > floor, rel, np.nan)
        n = len(rel)
        ax0.semilogy(a["rounds"], shown, label=a["label"], **style(i, n))
        up = np.asarray(a["bits_up"], np.float64)
        first = up > 0
        ax1.loglog(up[first], shown[first], label=a["label"], **style(i, n))
    for ax in (ax0, ax1):
        ax.axhline(1e-7, color="gray", lw=0.7, ls=":")
        ax.annotate(
            "float32 resolution: below is not shown (clipped)",
            (0.01, 1.4e-7),
            xycoords=("axes fraction", "data"),
            fontsize=7.5,
            color="gray",
        )
        ax.set_ylabel("(f(x) − f*) / (f(x⁰) − f*)")
        ax.grid(True, which="both", alpha=0.3)
    gamma = results["arms"]["dcgd_top1"]["stepsize"]
    r = np.asarray(results["arms"]["dcgd_top1"]["rounds"], np.float64)
    ax0.semilogy(
        r,
        (1 + 11 * gamma / 6) ** (2 * r),
        color="k",
        lw=0.8,
        ls=(0, (1, 3)),
        label="predicted (1 + 11γ/6)^{2k}",
    )
    ax0.set_xlabel("communication rounds k")
    ax1.set_xlabel("bits sent up per worker (from the first message)")
    ax0.legend(fontsize=7.5)
    title(fig, CLAIM.claim, v)
    return save(fig, folder, "counterexample_claim")


CLAIM = Claim(
    name="counterexample",
    section="§3",
    claim="DCGD with the biased Top-1 diverges on three workers for every step size (at exactly "
    "1 + 11γ/6 per step); error feedback (EF14, EF21) converges, and so does unbiased Rand-1.",
    run=run,
    check=check,
    plot=plot,
    quick_seconds=15,
)
