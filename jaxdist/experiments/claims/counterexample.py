r"""Claim (lecture §3): DCGD with Top-1 diverges on three workers; error feedback fixes it.

The arms of the named experiment ``top1`` (:data:`jaxdist.experiments.EXPERIMENTS`,
each a unit of this claim; Beznosikov et al. 2020, arXiv 2002.12410, Example 1, paper scaling,
THEORY.md §3): from :math:`x^0 = (1, 1, 1)`, DCGD with Top-1 multiplies x by exactly
:math:`1 + 11\gamma/6` per step for every γ > 0,
so :math:`f - f^\star` grows like :math:`(1 + 11\gamma/6)^{2k}`; EF14 and EF21 with the same
Top-1 and step converge, and DCGD with the unbiased Rand-1 converges. Top-1 in d = 3 sends one
float32 and a 2-bit index up per round (the uplink; the server's broadcast is dense).

Both scalings are run (:func:`jaxdist.problems.top1_counterexample`): the paper's
:math:`f_m = \langle a_m, x\rangle^2 + \frac14\|x\|^2` and the lecture's
:math:`f_m = 2\langle a_m, x\rangle^2 + \frac12\|x\|^2`, whose gradients at
:math:`x^0 = t(1,1,1)` are twice as large: the true mean gradient is :math:`\frac{7t}{3}(1,1,1)`
and the mean of the Top-1 compressed local gradients :math:`-\frac{11t}{3}(1,1,1)` (the lecture's
numbers; :math:`\frac{7t}{6}` and :math:`-\frac{11t}{6}` in the paper scaling), so DCGD-Top1
grows by :math:`1 + 11\gamma/3` per step. The gradients are computed by the library
(``Problem.worker_grads`` and :func:`jaxdist.compressors.top_k`) and printed in the verdict.
"""

from __future__ import annotations

from typing import Any

from jaxdist.experiments._claims import Claim, Context, Verdict, np, verdict

_STEPS = {"quick": 1000, "full": 2000}


SCALINGS = ("paper", "lecture")
#: (true mean gradient, mean of the Top-1 compressed gradients) at x⁰ = t(1, 1, 1), per unit t.
PREDICTED_GRADIENTS = {"paper": (7 / 6, -11 / 6), "lecture": (7 / 3, -11 / 3)}


def _gradients(scaling: str) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    from jaxdist.compressors import top_k
    from jaxdist.problems import top1_counterexample

    prob = top1_counterexample(scaling=scaling)
    x0 = prob.init_params
    grads = prob.worker_grads(x0)
    c = top_k(1)
    keys = jax.random.split(jax.random.key(0), prob.num_workers)
    compressed = jax.vmap(c.compress)(keys, grads)
    t = float(x0[0])
    return {
        "t": t,
        "local": (np.asarray(grads, np.float64) / t).tolist(),
        "true_mean": (np.asarray(jnp.mean(grads, axis=0), np.float64) / t).tolist(),
        "top1_mean": (np.asarray(jnp.mean(compressed, axis=0), np.float64) / t).tolist(),
    }


def run(ctx: Context) -> dict[str, Any]:
    import dataclasses

    from jaxdist.experiments._named import (
        EXPERIMENTS,
        _build_problem,
        _run_arm,
        summarize,
    )

    steps = _STEPS[ctx.size]
    out: dict[str, Any] = {"steps": steps}
    for scaling in SCALINGS:
        base = EXPERIMENTS["top1"]
        exp = dataclasses.replace(base, problem={**base.problem, "scaling": scaling})
        built: list[Any] = []

        def arm_result(arm, exp=exp, built=built) -> dict[str, Any]:
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

        prefix = "" if scaling == "paper" else f"{scaling}_"
        out[scaling] = {
            "arms": {
                arm.name: ctx.unit(
                    prefix + arm.name,
                    exp.config(arm, num_steps=steps, seed=ctx.seed),
                    lambda arm=arm, f=arm_result: f(arm),
                )
                for arm in exp.arms
            },
            "gradients": ctx.unit(
                f"{scaling}_gradients", {"scaling": scaling}, lambda s=scaling: _gradients(s)
            ),
        }
    return out


def growth_per_step(arm: dict[str, Any]) -> float:
    """The median per-step factor of ‖x − x*‖ implied by f − f* ∝ ‖x‖² between logged points."""
    gap, rounds = np.asarray(arm["f_gap"]), np.asarray(arm["rounds"], np.float64)
    ok = (gap[:-1] > 0) & np.isfinite(gap[1:]) & (gap[1:] > 0)
    per = (gap[1:][ok] / gap[:-1][ok]) ** (1.0 / (2.0 * np.diff(rounds)[ok]))
    return float(np.median(per)) if per.size else float("nan")


def _fmt(v: list[float]) -> str:
    return "(" + ", ".join(f"{x:+.4g}" for x in v) + ")"


def check(results: dict[str, Any]) -> Verdict:
    parts = []
    for scaling in SCALINGS:
        res = results[scaling]
        arms = res["arms"]
        g = res["gradients"]
        true_p, top1_p = PREDICTED_GRADIENTS[scaling]
        frac = {"paper": ("7/6", "−11/6"), "lecture": ("7/3", "−11/3")}[scaling]
        ok = np.allclose(g["true_mean"], true_p, rtol=1e-6) and np.allclose(
            g["top1_mean"], top1_p, rtol=1e-6
        )
        parts.append(
            (
                bool(ok),
                f"{scaling} scaling at x⁰ = t(1,1,1): mean ∇f_m = t·{_fmt(g['true_mean'])}, "
                f"mean Top-1(∇f_m) = t·{_fmt(g['top1_mean'])}",
                f"({frac[0]})·t·(1,1,1) and ({frac[1]})·t·(1,1,1): opposite directions",
            )
        )
        dcgd = arms["dcgd_top1"]
        gamma = dcgd["stepsize"]
        factor = {"paper": 11.0 / 6.0, "lecture": 11.0 / 3.0}[scaling]
        predicted = 1.0 + factor * gamma
        rate = growth_per_step(dcgd)
        parts.append(
            (
                bool(abs(rate - predicted) <= 1e-5 * predicted and dcgd["diverged"]),
                f"{scaling} scaling: DCGD-Top1 multiplies ‖x‖ by {rate:.7f} per step "
                f"(γ = {gamma:.5g}), f − f* grows to {dcgd['final_rel_gap']:.2e}·(f⁰ − f*)",
                f"1 + {'11γ/6' if scaling == 'paper' else '11γ/3'} = {predicted:.7f}, diverging",
            )
        )
        for name in ("ef14_top1", "ef21_top1", "dcgd_rand1"):
            a = arms[name]
            parts.append(
                (
                    bool(not a["diverged"] and 0 <= a["final_rel_gap"] < 1e-2),
                    f"{scaling} scaling: {a['label']} ends at {a['final_rel_gap']:.1e}·(f⁰ − f*)",
                    "converging (< 1e-2)",
                )
            )
    up = results["paper"]["arms"]["ef21_top1"]["bits_up"][-1]
    parts.append(
        (
            bool(up == results["steps"] * (32 + 2)),
            f"Top-1 uplink {up} bits per worker in {results['steps']} rounds",
            "32 + 2 bits per round (one float32, a 2-bit index); the broadcast is dense",
        )
    )
    return verdict(parts)


def _shown(a: dict[str, Any]) -> np.ndarray:
    from jaxdist.plotting import clipped

    gap = np.asarray(a["f_gap"])
    return clipped(gap / gap[0])


def _floor_line(ax) -> None:
    from jaxdist.plotting import floor_line

    floor_line(ax)
    ax.set_ylabel("(f(x) − f*) / (f(x⁰) − f*)")
    ax.grid(True, which="both", alpha=0.3)


def plot(results: dict[str, Any], v: Verdict, folder: str) -> list[str]:
    from jaxdist.plotting import pyplot, save, style, title

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), gridspec_kw={"wspace": 0.3})
    for ax, scaling in zip(axes[:2], SCALINGS, strict=True):
        arms = results[scaling]["arms"]
        for i, a in enumerate(arms.values()):
            ax.semilogy(a["rounds"], _shown(a), label=a["label"], **style(i, len(a["rounds"])))
        dcgd = arms["dcgd_top1"]
        gamma = dcgd["stepsize"]
        r = np.asarray(dcgd["rounds"], np.float64)
        num, den = (11, 6) if scaling == "paper" else (11, 3)
        ax.semilogy(
            r,
            (1 + num * gamma / den) ** (2 * r),
            color="k",
            lw=0.8,
            ls=(0, (1, 3)),
            label=f"predicted (1 + {num}γ/{den})^(2k)",
        )
        g = results[scaling]["gradients"]
        ax.set_title(
            f"{scaling} scaling: mean ∇f_m(x⁰) = {g['true_mean'][0]:.4g}·t·1, "
            f"mean Top-1 = {g['top1_mean'][0]:.4g}·t·1",
            fontsize=9,
        )
        ax.set_xlabel("communication rounds k")
        _floor_line(ax)
        ax.legend(fontsize=7)
    arms = results["paper"]["arms"]
    for i, a in enumerate(arms.values()):
        up = np.asarray(a["bits_up"], np.float64)
        first = up > 0
        axes[2].loglog(up[first], _shown(a)[first], label=a["label"], **style(i, len(up)))
    axes[2].set_xlabel("bits sent up per worker (paper scaling; from the first message)")
    axes[2].set_title("the same per transmitted bit (uplink)", fontsize=9)
    _floor_line(axes[2])
    title(fig, CLAIM.claim, v)
    return save(fig, folder, "counterexample_claim")


CLAIM = Claim(
    name="counterexample",
    section="§3",
    claim="DCGD with the biased Top-1 diverges on three workers for every step size: the mean "
    "of the compressed gradients, −(11/3)t·1, opposes the true one, (7/3)t·1 (lecture scaling; "
    "1 + 11γ/3 per step); error feedback (EF14, EF21) converges, and so does unbiased Rand-1.",
    run=run,
    check=check,
    plot=plot,
    quick_seconds=25,
)
