r"""Claim (lecture §5): under data similarity δ, rounds scale with δ/μ instead of L/μ.

Part 1, real data: ℓ2-logistic regression on mushrooms with n uniformly sampled rows per worker
(M = 4, :func:`jaxdist.problems.logistic_regression` with ``samples_per_worker=n``); δ is
measured from the data (:func:`jaxdist.problems.measure_similarity`: ‖∇²f_m − ∇²f‖ at x* and
other points), averaged in log over split keys. Predicted (THEORY.md §2.9): δ ∝ L/√n, a slope
of −1/2 in n.

Part 2, similar quadratics with an exact δ (:func:`jaxdist.problems.similar_quadratics`, M = 8,
d = 20, L/μ = 1000, float64): rounds to :math:`\|x - x^\star\|^2 \le 10^{-8}\|x^0 - x^\star\|^2`
for δ/μ = 8 … 256. Predicted (§2.10, tolerances there): Bregman GD (mirror descent with
φ = f₁ + (δ/2)‖·‖²) and DANE ∝ (δ/μ)^1, accelerated extragradient sliding ∝ (δ/μ)^0.5, while GD
and Nesterov do not use similarity (slope 0, rounds ∝ κ and √κ). Every method sends full
vectors (DANE and AEG two rounds per iteration, counted), so bits follow the rounds.
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
_KAPPA = 1000.0
_SIZES = {
    "quick": {"ns": [50, 100, 200, 400, 800], "keys": 3, "ratios": [8.0, 32.0, 128.0]},
    "full": {
        "ns": [25, 50, 100, 200, 400, 800, 1600],
        "keys": 6,
        "ratios": [8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
    },
}
METHODS = ("gd", "nesterov", "bregman_gd", "dane", "aeg_sliding")
PREDICTED = {
    "gd": (0.0, -0.1, 0.1),
    "nesterov": (0.0, -0.1, 0.1),
    "bregman_gd": (1.0, 0.9, 1.1),
    "dane": (1.0, 0.9, 1.1),
    "aeg_sliding": (0.5, 0.45, 0.6),
}
LABELS = {
    "gd": "GD, step 1/L",
    "nesterov": "Nesterov",
    "bregman_gd": "Bregman GD (mirror descent)",
    "dane": "DANE",
    "aeg_sliding": "AEG sliding",
}
_DELTA_N = (-0.5, -0.6, -0.4)


def _delta(n: int, key: int) -> float:
    from jaxdist import problems

    data = problems.load_libsvm("mushrooms")
    p = problems.logistic_regression(data, 4, l2=1e-2, samples_per_worker=n, key=key)
    return float(p.info["delta_measured"])


def _rounds(method: str, ratio: float, seed: int) -> dict[str, Any]:
    import jax
    import optax

    import jaxdist
    from jaxdist.methods import Solver

    with jax.enable_x64(True):
        prob = jaxdist.problems.similar_quadratics(
            8, 20, L=_KAPPA, mu=1.0, delta=ratio, key=3 + seed, dtype="float64"
        )
        ds, Ls = prob.info["delta_server"], prob.info["L_server"]
        solver = Solver(max_steps=2000, rtol=1e-6)
        log_eps = np.log(1 / _EPS)
        if method == "gd":
            tx, T = optax.chain(jaxdist.dgd(), optax.sgd(1.0 / prob.L)), int(1.2 * _KAPPA * log_eps)
        elif method == "nesterov":
            tx, T = jaxdist.nesterov(L=prob.L, mu=prob.mu), int(3 * np.sqrt(_KAPPA) * log_eps)
        elif method == "bregman_gd":
            tx = jaxdist.bregman_gd(ds, server_smoothness=Ls, solver=solver)
            T = int(0.6 * (1 + 2 * ratio) * log_eps)
        elif method == "dane":
            lam = float(np.min(prob.info["min_eig_m"]))
            tx = jaxdist.dane(
                prob.delta, local_smoothness=prob.L_max, local_strong_convexity=lam, solver=solver
            )
            T = int(1.2 * (1 + 2 * ratio) * log_eps)
        else:
            tx, T = (
                jaxdist.aeg_sliding(ds, prob.mu, server_smoothness=Ls),
                int(4 * np.sqrt(ratio) * log_eps),
            )
        trace = jaxdist.run(tx, prob, T, jax.random.key(seed))
        rel = np.asarray(trace.dist_sq) / float(trace.dist_sq[0])
        i = first_below(rel, _EPS)
        return {
            "ratio": ratio,
            "rounds": None if i is None else int(trace.rounds[i]),
            "bits_up": None if i is None else int(trace.bits_up[i]),
            "bits_down": None if i is None else int(trace.bits_down[i]),
            "grad_evals": None if i is None else int(trace.grad_evals[i]),
        }


def run(ctx: Context) -> dict[str, Any]:
    size = _SIZES[ctx.size]
    deltas = []
    for n in size["ns"]:
        row = [
            ctx.unit(
                f"delta_n{n}_key{k}",
                {"n": n, "key": k, "M": 4, "l2": 1e-2},
                lambda n=n, k=k: _delta(n, k),
            )
            for k in range(size["keys"])
        ]
        deltas.append(row)
    arms = {}
    for m in METHODS:
        arms[m] = [
            ctx.unit(
                f"{m}_ratio{r:g}",
                {"method": m, "ratio": r, "kappa": _KAPPA, "eps": _EPS},
                lambda m=m, r=r: _rounds(m, r, ctx.seed),
            )
            for r in size["ratios"]
        ]
    return {"ns": size["ns"], "deltas": deltas, "kappa": _KAPPA, "eps": _EPS, "arms": arms}


def delta_slope(results: dict[str, Any]) -> float:
    """Slope of the geometric mean (over keys) of δ against n, log–log."""
    means = np.exp(np.mean(np.log(np.asarray(results["deltas"], float)), axis=1))
    return loglog_slope(results["ns"], list(means))


def check(results: dict[str, Any]) -> Verdict:
    parts = [slope_check("mushrooms: δ", delta_slope(results), *_DELTA_N, "n")]
    for m, points in results["arms"].items():
        s = loglog_slope([p["ratio"] for p in points], [p["rounds"] for p in points])
        parts.append(slope_check(f"{m} rounds", s, *PREDICTED[m], "(δ/μ)"))
    return verdict(parts)


def plot(results: dict[str, Any], v: Verdict, folder: str) -> list[str]:
    from jaxdist.plotting import plain_log_ticks, pyplot, save, style, title

    plt = pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"wspace": 0.3})
    ns = np.asarray(results["ns"], float)
    d = np.asarray(results["deltas"], float)
    for k in range(d.shape[1]):
        ax0.loglog(
            ns,
            d[:, k],
            ls="none",
            marker=".",
            color="C0",
            alpha=0.5,
            label="one split key" if k == 0 else None,
        )
    mean = np.exp(np.log(d).mean(axis=1))
    ax0.loglog(
        ns, mean, label=f"geometric mean (fitted slope {delta_slope(results):.2f})", **style(0)
    )
    ax0.loglog(ns, mean[0] * (ns / ns[0]) ** -0.5, color="gray", ls=":", label="predicted n^−1/2")
    plain_log_ticks(ax0.xaxis)
    ax0.set_xticks(ns)
    ax0.set_xlabel("rows per worker n (mushrooms, M = 4)")
    ax0.set_ylabel("measured δ = max ‖∇²f_m − ∇²f‖")
    ax0.grid(True, which="both", alpha=0.3)
    ax0.legend(fontsize=8)
    for i, (m, points) in enumerate(results["arms"].items()):
        r = np.array([p["ratio"] for p in points])
        rounds = np.array([np.nan if p["rounds"] is None else p["rounds"] for p in points], float)
        slope = loglog_slope(r, [p["rounds"] for p in points])
        ax1.loglog(
            r,
            rounds,
            label=f"{LABELS[m]} (slope {slope:.2f}; predicted {PREDICTED[m][0]:g})",
            **style(i),
        )
    ax1.set_xlabel(f"δ/μ (similar quadratics, L/μ = {results['kappa']:g}, exact δ)")
    ax1.set_ylabel(f"rounds to ‖x − x*‖² ≤ {results['eps']:g}·‖x⁰ − x*‖²")
    plain_log_ticks(ax1.xaxis)
    ax1.set_xticks(r)
    ax1.grid(True, which="both", alpha=0.3)
    ax1.set_ylim(top=ax1.get_ylim()[1] * 6)  # room for the legend above the GD line
    ax1.legend(fontsize=7.5, loc="upper left")
    title(fig, CLAIM.claim, v)
    return save(fig, folder, "similarity")


CLAIM = Claim(
    name="similarity",
    section="§5",
    claim="On real data δ shrinks like L/√n with n samples per worker; methods that use "
    "similarity need rounds ∝ δ/μ (Bregman GD, DANE) or √(δ/μ) (AEG sliding), GD and "
    "Nesterov do not benefit.",
    run=run,
    check=check,
    plot=plot,
    quick_seconds=60,
)
