r"""Claim (lecture §4): acceleration needs √κ communication rounds where GD needs κ.

Distributed GD (step 1/L) and distributed Nesterov (constant momentum
:math:`\beta = (\sqrt\kappa - 1)/(\sqrt\kappa + 1)`) on quadratics with an exact condition
number κ (:func:`jaxdist.problems.heterogeneous_quadratics`), float64: rounds until
:math:`\|x - x^\star\|^2 \le 10^{-8}\|x^0 - x^\star\|^2`, fitted against κ in log–log. Predicted
slopes (THEORY.md §2.10): 1 for GD, 0.5 for Nesterov (the lower bound for first-order methods),
tolerances 0.9–1.1 and 0.45–0.6. Every arm communicates one full vector per round, so bits are
rounds × 64d both ways.
"""

from __future__ import annotations

from typing import Any

from jaxdist.experiments._claims import (
    Claim,
    Context,
    Verdict,
    first_below,
    loglog_slope,
    np,
    slope_check,
    verdict,
)

_EPS = 1e-8
_SIZES = {
    "quick": {"kappas": [10.0, 100.0, 1000.0], "M": 4, "d": 12},
    "full": {"kappas": [10.0, 31.6, 100.0, 316.0, 1000.0, 3162.0, 10000.0], "M": 16, "d": 50},
}
_PREDICTED = {"gd": (1.0, 0.9, 1.1), "nesterov": (0.5, 0.45, 0.6)}
_LABELS = {"gd": "distributed GD, step 1/L", "nesterov": "distributed Nesterov"}


def _rounds_to_eps(method: str, kappa: float, M: int, d: int, seed: int) -> dict[str, Any]:
    import jax
    import optax

    import jaxdist

    with jax.enable_x64(True):
        prob = jaxdist.problems.heterogeneous_quadratics(
            M, d, L=1.0, mu=1.0 / kappa, key=seed, dtype="float64"
        )
        if method == "gd":
            tx = optax.chain(jaxdist.dgd(), optax.sgd(1.0 / prob.L))
        else:
            tx = jaxdist.nesterov(L=prob.L, mu=prob.mu)
        T = int(30 * kappa if method == "gd" else 30 * np.sqrt(kappa)) + 50
        trace = jaxdist.run(tx, prob, T, jax.random.key(seed))
        rel = np.asarray(trace.dist_sq) / float(trace.dist_sq[0])
        i = first_below(rel, _EPS)
        # the curve stops two decades below the target, far above float64 rounding (~1e-30)
        below = first_below(rel, _EPS * 1e-2)
        stop = below + 1 if below is not None else rel.size
        every = max(1, stop // 200)
        return {
            "kappa": kappa,
            "rounds": None if i is None else int(trace.rounds[i]),
            "bits_up": None if i is None else int(trace.bits_up[i]),
            "bits_down": None if i is None else int(trace.bits_down[i]),
            "curve_rounds": np.asarray(trace.rounds)[:stop:every].tolist(),
            "curve_rel": rel[:stop:every].tolist(),
        }


def run(ctx: Context) -> dict[str, Any]:
    size = _SIZES[ctx.size]
    out: dict[str, Any] = {"size": size, "eps": _EPS, "arms": {}}
    for method in _PREDICTED:
        points = []
        for kappa in size["kappas"]:
            cfg = {"method": method, "kappa": kappa, "M": size["M"], "d": size["d"]}
            points.append(
                ctx.unit(
                    f"{method}_kappa{kappa:g}",
                    cfg,
                    lambda m=method, k=kappa: _rounds_to_eps(m, k, size["M"], size["d"], ctx.seed),
                )
            )
        out["arms"][method] = points
    return out


def slope(points: list[dict[str, Any]]) -> float:
    """Fitted exponent of rounds against κ (NaN if some κ never reached ε)."""
    return loglog_slope([p["kappa"] for p in points], [p["rounds"] for p in points])


def check(results: dict[str, Any]) -> Verdict:
    return verdict(
        [
            slope_check(f"{m} rounds", slope(results["arms"][m]), *_PREDICTED[m], "κ")
            for m in _PREDICTED
        ]
    )


def plot(results: dict[str, Any], v: Verdict, folder: str) -> list[str]:
    from jaxdist.plotting import pyplot, save, style, title

    plt = pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11.5, 4.3), gridspec_kw={"wspace": 0.32})
    for i, (method, points) in enumerate(results["arms"].items()):
        ks = np.array([p["kappa"] for p in points])
        rs = np.array([np.nan if p["rounds"] is None else p["rounds"] for p in points], float)
        s = slope(points)
        ax0.loglog(ks, rs, label=f"{_LABELS[method]} (fitted slope {s:.2f})", **style(i))
        theory = _PREDICTED[method][0]
        ax0.loglog(ks, rs[0] * (ks / ks[0]) ** theory, color="gray", lw=0.8, ls=":")
        ax0.annotate(
            f"κ^{theory:g}",
            (ks[-1], rs[0] * (ks[-1] / ks[0]) ** theory),
            fontsize=8,
            xytext=(4, -10),
            textcoords="offset points",
        )
        far = points[-1]
        ax1.semilogy(
            far["curve_rounds"],
            far["curve_rel"],
            label=f"{_LABELS[method]}, κ = {far['kappa']:g}",
            **style(i, len(far["curve_rounds"])),
        )
    ax0.set_xlabel("condition number κ = L/μ")
    ax0.set_ylabel(f"rounds to ‖x − x*‖² ≤ {results['eps']:g}·‖x⁰ − x*‖²")
    ax0.grid(True, which="both", alpha=0.3)
    ax0.legend(fontsize=8)
    ax1.axhline(results["eps"], color="gray", lw=0.8, ls=":")
    ax1.annotate("target ε", (0, results["eps"]), fontsize=8, va="bottom")
    ax1.set_xlabel("communication rounds")
    ax1.set_ylabel("‖x − x*‖² / ‖x⁰ − x*‖² (float64)")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    title(fig, CLAIM.claim, v)
    return save(fig, folder, "acceleration")


CLAIM = Claim(
    name="acceleration",
    section="§4",
    claim="Accelerated (Nesterov) distributed GD needs O(√κ log 1/ε) communication rounds, "
    "GD O(κ log 1/ε).",
    run=run,
    check=check,
    plot=plot,
    quick_seconds=15,
)
