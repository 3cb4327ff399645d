r"""Claim (lecture §3): on a small network, Top-5 with error feedback trains; per bit it wins.

The lecture's experiment: an MLP 784-256-10 on MNIST (203,530 parameters,
:func:`jaxdist.problems.mnist_mlp`; the quick size uses 784-32-10, 25,450 parameters), the
training set split iid over M = 10 workers, each computing a minibatch gradient per round and
sending K = 5 coordinates: SGD (the dense minibatch gradients, 32·d bits), DCGD with Top-5
(5·(32 + ⌈log₂d⌉) bits), DCGD with Rand-5 (unbiased, scaled by d/5; 5·32 bits, the indices
regenerated from the worker's seed), and Top-5 with error feedback, EF14 and EF21. Every method
is run at each step size of a small grid in one compiled sweep, and the best final test accuracy
is kept (a fair comparison tunes each method). Test accuracy is measured on the 10000 MNIST test
images, split over the workers (``jaxdist.run(..., metrics=...)``).

Predicted (the lecture, qualitatively): Rand-5 does not train (ω = d/5 − 1 ≈ 4·10⁴: its step must
be so small that nothing moves), Top-5 without error feedback crawls, EF14/EF21 train well; per
epoch SGD is best; per transmitted bit (the uplink, the lecture's claim) EF wins by far. The
downlink is the dense model update for every method here (32·d bits per round, counted and
plotted), so in bits summed over both directions EF's advantage is at most the factor 2 of the
uplink it removes per round: the verdict reports both.
"""

from __future__ import annotations

from typing import Any

from jaxdist.experiments._claims import Claim, Context, Verdict, first_below, np, verdict

_M, _K = 10, 5
# b = 2 images per worker per round: an epoch (60000 images) is 3000 rounds
_SIZES = {
    "quick": {"hidden": [32], "rounds": 1500, "batch": 2, "log_every": 150},
    "full": {"hidden": [256], "rounds": 3000, "batch": 2, "log_every": 300},
}
#: Step sizes of each method, swept in one program per method; the best final test accuracy is
#: kept. Rand-5 also runs at SGD's step (where the lecture says it does not train). The grids
#: are the best two of a wider prototype sweep (one epoch, b = 2: SGD .03–.2, Top-5 .02–.1,
#: Rand-5 3e-5–3e-4, EF14 .02–.2, EF21 .01–.1); the quick size runs the best of each.
_GRIDS = {
    "quick": {
        "sgd": [0.05],
        "top_k": [0.1],
        "rand_k": [3e-4, 0.05],
        "ef14": [0.05],
        "ef21": [0.005],
    },
    "full": {
        "sgd": [0.03, 0.05, 0.1, 0.2],
        "top_k": [0.05, 0.1],
        "rand_k": [1e-4, 0.05],
        "ef14": [0.05, 0.1],
        "ef21": [0.01, 0.02],
    },
}
METHODS = ("sgd", "top_k", "rand_k", "ef14", "ef21")
LABELS = {
    "sgd": "SGD (dense gradients)",
    "top_k": f"Top-{_K}",
    "rand_k": f"Rand-{_K}",
    "ef14": f"Top-{_K} + EF14",
    "ef21": f"Top-{_K} + EF21",
}
_ACCURACY = 0.85  # the test accuracy at which bits are compared


def _method(name: str):
    import optax

    import jaxdist
    from jaxdist.compressors import rand_k, top_k

    inner = {
        "sgd": lambda: jaxdist.dgd(),
        "top_k": lambda: jaxdist.dcgd(top_k(_K)),
        "rand_k": lambda: jaxdist.dcgd(rand_k(_K)),
        "ef14": lambda: jaxdist.ef14(top_k(_K)),
        "ef21": lambda: jaxdist.ef21(top_k(_K)),
    }[name]()
    return lambda hp: optax.chain(inner, optax.sgd(hp["lr"]))


def _arm(name: str, size: dict[str, Any], grid: list[float], seed: int) -> dict[str, Any]:
    import jax.numpy as jnp

    import jaxdist

    prob = jaxdist.problems.mnist_mlp(_M, hidden=tuple(size["hidden"]), key=seed)
    trace = jaxdist.run(
        _method(name),
        prob,
        size["rounds"],
        seed,
        hyperparams={"lr": jnp.asarray(grid, jnp.float32)},
        batch_size=size["batch"],
        log_every=size["log_every"],
        metrics=prob.info["metrics"],
    )
    acc = np.asarray(trace.series["test_accuracy"], np.float64)  # [lrs, points]
    finite = np.all(np.isfinite(np.asarray(trace.loss)), axis=-1)
    score = np.where(finite, np.nan_to_num(acc[:, -1], nan=0.0), -1.0)
    best = int(np.argmax(score))
    samples = prob.info["samples_per_worker"]
    return {
        "method": name,
        "d": prob.dim,
        "samples_per_worker": samples,
        "grid": grid,
        "final_accuracy_per_lr": acc[:, -1].tolist(),
        "test_accuracy_per_lr": acc.tolist(),
        "lr": grid[best],
        "rounds": np.asarray(trace.rounds)[best].tolist(),
        "epochs": (np.asarray(trace.rounds)[best] * size["batch"] / samples).tolist(),
        "bits_up": np.asarray(trace.bits_up)[best].tolist(),
        "bits_down": np.asarray(trace.bits_down)[best].tolist(),
        "train_loss": np.asarray(trace.loss, np.float64)[best].tolist(),
        "test_loss": np.asarray(trace.series["test_loss"], np.float64)[best].tolist(),
        "test_accuracy": acc[best].tolist(),
    }


def run(ctx: Context) -> dict[str, Any]:
    size = _SIZES[ctx.size]
    arms = {
        m: ctx.unit(
            m,
            {"size": size, "M": _M, "K": _K, "grid": _GRIDS[ctx.size][m], "method": m},
            lambda m=m: _arm(m, size, _GRIDS[ctx.size][m], ctx.seed),
        )
        for m in METHODS
    }
    return {"size": size, "M": _M, "K": _K, "arms": arms, "accuracy": _ACCURACY}


def _bits_to(arm: dict[str, Any], accuracy: float, key: str = "bits_up") -> int | None:
    i = first_below(-np.asarray(arm["test_accuracy"]), -accuracy)
    return None if i is None else int(arm[key][i])


def check(results: dict[str, Any]) -> Verdict:
    arms = results["arms"]
    acc = {n: a["test_accuracy"][-1] for n, a in arms.items()}
    threshold = results["accuracy"]
    d = arms["sgd"]["d"]
    rk = arms["rand_k"]
    at_sgd_step = rk["final_accuracy_per_lr"][rk["grid"].index(max(rk["grid"]))]
    epochs = arms["sgd"]["epochs"][-1]
    gap = acc["sgd"] - acc["top_k"]
    recovered = (acc["ef14"] - acc["top_k"]) / gap if gap > 0 else float("nan")
    parts = [
        (
            bool(acc["sgd"] >= 0.85),
            f"after {epochs:.2g} epoch(s) SGD reaches {acc['sgd']:.1%} test accuracy "
            f"(lr {arms['sgd']['lr']:g})",
            "trains (≥ 85 %)",
        ),
        (
            bool(recovered >= 0.8),
            f"Top-{_K} + EF14 reaches {acc['ef14']:.1%} (lr {arms['ef14']['lr']:g}): it "
            f"recovers {recovered:.0%} of the accuracy Top-{_K} loses against SGD",
            "EF trains well: ≥ 80 % of the gap closed",
        ),
        (
            bool(acc["top_k"] <= acc["ef14"] - 0.1),
            f"Top-{_K} without error feedback reaches {acc['top_k']:.1%}",
            f"crawls: ≥ 10 points below EF14's {acc['ef14']:.1%}",
        ),
        (
            bool(not np.isfinite(at_sgd_step) or at_sgd_step <= 0.3)
            and bool(acc["rand_k"] <= acc["ef14"] - 0.2),
            f"Rand-{_K} reaches {at_sgd_step:.1%} at SGD's step {max(rk['grid']):g}, and "
            f"{acc['rand_k']:.1%} at its best step {rk['lr']:g} (grid {rk['grid']})",
            "does not train at a common step (≤ 30 %; chance 10 %); tuned, it trains slowly "
            "(≥ 20 points below EF14): ω = d/5 − 1 forces a tiny step",
        ),
        (
            bool(acc["ef21"] < acc["ef14"]),
            f"Top-{_K} + EF21 reaches {acc['ef21']:.1%} (best lr {arms['ef21']['lr']:g} of "
            f"{arms['ef21']['grid']})",
            "below EF14: with b = 2 stochastic gradients and K/d ≈ 1e-4 EF21's estimates go "
            "stale (EF21 needs large batches or momentum)",
        ),
        (
            bool(all(acc["sgd"] >= acc[n] for n in acc)),
            "per epoch SGD is best: " + ", ".join(f"{LABELS[n]} {acc[n]:.1%}" for n in METHODS),
            "SGD ≥ every compressed method",
        ),
    ]
    up = {n: _bits_to(a, threshold) for n, a in arms.items()}
    down = {n: _bits_to(a, threshold, "bits_down") for n, a in arms.items()}
    if up["ef14"] is None or up["sgd"] is None:
        parts.append((False, f"EF14 or SGD never reached {threshold:.0%} test accuracy", "both do"))
    else:
        ratio = up["sgd"] / up["ef14"]
        per_round = 32 * d * arms["ef14"]["rounds"][1] / arms["ef14"]["bits_up"][1]
        total = (up["sgd"] + down["sgd"]) / (up["ef14"] + down["ef14"])
        parts.append(
            (
                bool(ratio >= 100),
                f"uplink bits per worker to {threshold:.0%} test accuracy: SGD {up['sgd']:.3g}, "
                f"EF14 {up['ef14']:.3g} ({ratio:.0f}× fewer); both directions (the dense "
                f"model update down for every method): {up['sgd'] + down['sgd']:.3g} vs "
                f"{up['ef14'] + down['ef14']:.3g} ({total:.2f}×)",
                f"per bit (uplink, the lecture's claim) EF wins by far (≥ 100×; a round sends "
                f"{per_round:.0f}× fewer bits up); summed over both directions at most 2×",
            )
        )
    return verdict(parts)


def plot(results: dict[str, Any], v: Verdict, folder: str) -> list[str]:
    from jaxdist.plotting import pyplot, save, style, title

    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.8), gridspec_kw={"wspace": 0.28})
    ax0, ax1, ax2, ax3 = axes
    arms = results["arms"]
    for i, (n, a) in enumerate(arms.items()):
        st = style(i, len(a["rounds"]))
        label = f"{LABELS[n]} (lr {a['lr']:g})"
        accuracy = np.asarray(a["test_accuracy"])
        ax0.plot(a["epochs"], accuracy, label=label, **st)
        loss = np.asarray(a["train_loss"])
        shown = np.where(np.isfinite(loss) & (loss < 10), loss, np.nan)  # clipped above 10
        ax1.semilogy(a["epochs"], shown, label=label, **st)
        up = np.asarray(a["bits_up"], np.float64)
        both = up + np.asarray(a["bits_down"], np.float64)
        first = up > 0
        ax2.semilogx(up[first], accuracy[first], label=label, **st)
        ax3.semilogx(both[first], accuracy[first], label=label, **st)
    rk = arms["rand_k"]
    big = rk["grid"].index(max(rk["grid"]))
    if big != rk["grid"].index(rk["lr"]):
        ax0.plot(
            rk["epochs"],
            rk["test_accuracy_per_lr"][big],
            color="C2",
            lw=0.8,
            ls=(0, (1, 2)),
            label=f"Rand-{_K} at SGD's lr {max(rk['grid']):g}",
        )
    for ax in (ax0, ax2, ax3):
        ax.axhline(results["accuracy"], color="k", lw=0.7, ls=":")
        ax.set_ylabel("test accuracy (10000 MNIST test images)")
        ax.set_ylim(0, 1)
        ax.annotate(
            f"{results['accuracy']:.0%}",
            (0.01, results["accuracy"] + 0.01),
            xycoords=("axes fraction", "data"),
        )
    ax0.set_xlabel("epochs (training images seen / training set)")
    ax1.set_xlabel("epochs")
    ax1.set_ylabel("training loss (cross-entropy; clipped above 10)")
    ax2.set_xlabel("bits sent up per worker (from the first message)")
    ax3.set_xlabel("bits up + down per worker (the downlink is the dense update)")
    from matplotlib.ticker import NullFormatter

    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    for ax in (ax2, ax3):
        ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: no overlapping labels
    ax0.legend(fontsize=7)
    d = arms["sgd"]["d"]
    hidden = "-".join(map(str, results["size"]["hidden"]))
    ax1.set_title(f"MLP 784-{hidden}-10, d = {d:,}, M = {results['M']}, b = 2", fontsize=9)
    ax2.set_title("uplink (the lecture's claim)", fontsize=9)
    ax3.set_title("both directions", fontsize=9)
    title(fig, CLAIM.claim, v)
    return save(fig, folder, "neural_network")


CLAIM = Claim(
    name="neural_network",
    section="§3",
    claim="On an MLP on MNIST, each worker sending 5 coordinates per round: Rand-5 does not "
    "train at a common step (tuned, barely), Top-5 crawls, Top-5 with error feedback (EF14) "
    "trains almost like SGD (EF21 does not with small minibatches); per epoch SGD is best, per "
    "transmitted bit (uplink) EF wins by far.",
    run=run,
    check=check,
    plot=plot,
    quick_seconds=60,
)
