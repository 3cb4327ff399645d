r"""Claim (lecture §1–§2): compression saves bits with many workers, not with one.

ℓ2-logistic regression (λ = 0.1) on mushrooms split iid over M = 1, 10, 100, 1000 workers
(float64, so a message of d values is 64d bits): uncompressed GD (step 1/L), DIANA with Rand-K
(K = d/10, shared-seed indices) and with natural compression at their theory steps (THEORY.md
§2.3), and EF21 with Top-K at GD's step (its practical use; its theory step is far smaller).
Measured: rounds and bits per worker, up and down, until
:math:`f - f^\star \le 10^{-6}(f(x^0) - f^\star)`. Predicted (the lecture's factor
:math:`(1 + \omega/M)/\beta` with the constants of the theory steps): DIANA + Rand-K's gain in
uplink bits over GD is :math:`G(M) = (b_{GD}/b_{C})\cdot\gamma_{DIANA}/\gamma_{GD}
= (d/K)\,/\,(1 + 6\omega L_{max}/(M L))`, below 1 at M = 1 and approaching d/K as M grows;
the check asks the measured gain to grow with M, to stay below 1 at M = 1, and to be within a
factor 2 of G(M) where M ≥ 10. The downlink (the dense model, the same for every method) is
recorded and plotted; the lecture's claim is about the uplink.
"""

from __future__ import annotations

from typing import Any

from jaxdist.experiments._claims import Claim, Context, Verdict, first_below, np, verdict

_TARGET = 1e-6
_SIZES = {
    "quick": {"workers": [1, 10, 100, 1000], "rounds": 1500},
    "full": {"workers": [1, 10, 100, 1000], "rounds": 6000},
}
METHODS = ("gd", "diana_rand_k", "diana_natural", "ef21_top_k")
LABELS = {
    "gd": "GD (uncompressed)",
    "diana_rand_k": "DIANA + Rand-K",
    "diana_natural": "DIANA + natural",
    "ef21_top_k": "EF21 + Top-K (GD step)",
}


def _point(M: int, rounds: int, seed: int) -> dict[str, Any]:
    import jax
    import optax

    import jaxdist
    from jaxdist import theory
    from jaxdist.compressors import natural, rand_k, top_k

    with jax.enable_x64(True):
        prob = jaxdist.problems.logistic_regression(
            "mushrooms", M, split="iid", l2=0.1, key=seed, dtype="float64"
        )
        d = prob.dim
        K = d // 10
        rk, nat = rand_k(K), natural()

        def diana(c):
            gamma = theory.diana_stepsize(prob.L, prob.L_max, c.omega(d), M)
            return optax.chain(jaxdist.diana(c), optax.sgd(gamma))

        txs = {
            "gd": optax.chain(jaxdist.dgd(), optax.sgd(1.0 / prob.L)),
            "diana_rand_k": diana(rk),
            "diana_natural": diana(nat),
            "ef21_top_k": optax.chain(jaxdist.ef21(top_k(K)), optax.sgd(1.0 / prob.L)),
        }
        out: dict[str, Any] = {
            "M": M,
            "d": d,
            "K": K,
            "L": float(prob.L),
            "L_max": float(prob.L_max),
            "omega_rand_k": float(rk.omega(d)),
            "rounds_run": rounds,
        }
        for name, tx in txs.items():
            trace = jaxdist.run(tx, prob, rounds, jax.random.key(seed), log_every=5)
            rel = np.asarray(trace.f_gap, np.float64) / float(trace.f_gap[0])
            i = first_below(rel, _TARGET)
            out[name] = {
                "rounds": None if i is None else int(trace.rounds[i]),
                "bits_up": None if i is None else int(trace.bits_up[i]),
                "bits_down": None if i is None else int(trace.bits_down[i]),
                "bits_up_total_run": int(trace.bits_up[-1]),
                "final_rel": float(rel[-1]),
            }
        return out


def run(ctx: Context) -> dict[str, Any]:
    size = _SIZES[ctx.size]
    points = [
        ctx.unit(
            f"M{M}",
            {"M": M, "rounds": size["rounds"], "target": _TARGET},
            lambda M=M: _point(M, size["rounds"], ctx.seed),
        )
        for M in size["workers"]
    ]
    return {"target": _TARGET, "points": points}


def predicted_gain(p: dict[str, Any]) -> float:
    """G(M) = (d/K) / (1 + 6ωL_max/(ML)): uplink bits of GD over DIANA + Rand-K's."""
    return (p["d"] / p["K"]) / (1 + 6 * p["omega_rand_k"] * p["L_max"] / (p["M"] * p["L"]))


def measured_gain(p: dict[str, Any]) -> tuple[float, bool]:
    """(bits of GD / bits of DIANA + Rand-K to the target, reached); not reached: an upper
    bound from all the bits DIANA sent."""
    gd, di = p["gd"], p["diana_rand_k"]
    if di["bits_up"] is None:
        return gd["bits_up"] / di["bits_up_total_run"], False
    return gd["bits_up"] / di["bits_up"], True


def check(results: dict[str, Any]) -> Verdict:
    pts = results["points"]
    gains = [measured_gain(p)[0] for p in pts]
    preds = [predicted_gain(p) for p in pts]
    text = ", ".join(
        f"M = {p['M']}: {g:.2f}{'' if measured_gain(p)[1] else ' (at most: not reached)'}"
        for p, g in zip(pts, gains, strict=True)
    )
    pred = ", ".join(f"{q:.2f}" for q in preds)
    one = [g for p, g in zip(pts, gains, strict=True) if p["M"] == 1]
    close = all(
        0.5 <= g / q <= 2.0 for p, g, q in zip(pts, gains, preds, strict=True) if p["M"] >= 10
    )
    return verdict(
        [
            (
                bool(np.all(np.diff(gains) > 0)),
                f"DIANA + Rand-K's uplink-bit gain over GD: {text}",
                "growing with M",
            ),
            (
                bool(one and one[0] < 1.0),
                f"at M = 1: {one[0] if one else float('nan'):.2f}",
                "no gain (< 1)",
            ),
            (
                bool(close),
                f"measured {', '.join(f'{g:.2f}' for g in gains)}",
                f"G(M) = (d/K)/(1 + 6ωL_max/(ML)) = {pred}, within 2× for M ≥ 10",
            ),
        ]
    )


def plot(results: dict[str, Any], v: Verdict, folder: str) -> list[str]:
    from jaxdist.plotting import plain_log_ticks, pyplot, save, style, title

    plt = pyplot()
    pts = results["points"]
    Ms = np.array([p["M"] for p in pts], float)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"wspace": 0.3})
    for i, m in enumerate(METHODS):
        up = np.array([np.nan if p[m]["bits_up"] is None else p[m]["bits_up"] for p in pts])
        down = np.array([np.nan if p[m]["bits_down"] is None else p[m]["bits_down"] for p in pts])
        ax0.loglog(Ms, up, label=f"{LABELS[m]}: up", **style(i))
        ax0.loglog(Ms, up + down, color=f"C{i}", lw=0.8, ls=":", label=f"{LABELS[m]}: up + down")
        rounds = np.array([np.nan if p[m]["rounds"] is None else p[m]["rounds"] for p in pts])
        ax1.loglog(Ms, rounds, label=LABELS[m], **style(i))
    ax0.set_ylabel(f"bits per worker to f − f* ≤ {results['target']:g}·(f⁰ − f*) (float64)")
    ax1.set_ylabel("communication rounds to the same accuracy")
    for ax in (ax0, ax1):
        ax.set_xlabel("workers M (mushrooms, iid split)")
        plain_log_ticks(ax.xaxis)
        ax.set_xticks(Ms)
        ax.grid(True, which="both", alpha=0.3)
    ax0.legend(fontsize=7.5, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    ax1.legend(fontsize=8)
    missing = [p["M"] for p in pts if p["diana_rand_k"]["bits_up"] is None]
    if missing:
        ax0.annotate(
            f"DIANA + Rand-K not at the target within {pts[0]['rounds_run']} rounds at "
            f"M = {missing}",
            (0.02, 0.02),
            xycoords="axes fraction",
            fontsize=7.5,
        )
    title(fig, CLAIM.claim, v)
    return save(fig, folder, "bits_vs_workers")


CLAIM = Claim(
    name="bits_vs_workers",
    section="§1",
    claim="Unbiased compression (DIANA + Rand-K) saves uplink bits only with many workers: the "
    "gain over GD is the lecture's (1 + ω/M)/β factor, none with one worker.",
    run=run,
    check=check,
    plot=plot,
    quick_seconds=60,
)
