r"""Claim (lecture §1–§2): shared randomness saves index bits and correlates compression.

M = 4 workers, d = 100, K = d/M = 25, float32; three compressors with the same ω = d/K − 1 = 3
and the same 25·32 = 800 bits per message: independent Rand-K (each worker its own key),
shared-key Rand-K (one mask for all) and Perm-K (disjoint blocks of one shared permutation).
Measured by Monte Carlo over keys: the variance of the aggregate
:math:`\hat g = \frac1M\sum_m C_m(x_m)` (:func:`jaxdist.comm.compressed_mean`) around
:math:`\bar x`, for identical and for heterogeneous :math:`x_m`. Predicted exactly (Rand-K's
variance is an equality): independent :math:`\frac{\omega}{M^2}\sum_m\|x_m\|^2` (the 1/M batch
effect), shared-key :math:`\omega\|\bar x\|^2` (none), Perm-K
:math:`\frac1M\sum_m\|x_m\|^2 - \|\bar x\|^2` (zero for identical vectors: the blocks
reassemble :math:`\bar x`). Bits: with the indices regenerated from a shared seed a Rand-K
message is K·32 bits; sent explicitly they cost K⌈log₂d⌉ (a list), d (a mask) or
⌈log₂C(d,K)⌉ (enumerative coding) more.
"""

from __future__ import annotations

import math
from typing import Any

from jaxdist.experiments._claims import Claim, Context, Verdict, np, verdict

M, D, K = 4, 100, 25
_SIZES = {"quick": {"samples": 4000}, "full": {"samples": 100000}}
KINDS = ("independent", "shared", "perm_k")
LABELS = {"independent": "independent Rand-K", "shared": "shared-key Rand-K", "perm_k": "Perm-K"}


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.normal(size=D)
    return {
        "identical": np.tile(base, (M, 1)),
        "heterogeneous": base + 1.5 * rng.normal(size=(M, D)),
    }


def predicted(kind: str, x: np.ndarray) -> float:
    """The exact E‖ĝ − x̄‖² of each aggregate (ω = d/K − 1)."""
    omega = D / K - 1
    mean = x.mean(axis=0)
    sq = float(np.sum(x**2))
    if kind == "independent":
        return omega * sq / M**2
    if kind == "shared":
        return omega * float(np.sum(mean**2))
    return sq / M - float(np.sum(mean**2))


def _measure(samples: int, seed: int) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp

    import jaxdist.compressors as jc
    from jaxdist import comm

    compressors = {
        "independent": jc.rand_k(K),
        "shared": jc.rand_k(K, shared=True),
        "perm_k": jc.perm_k(num_workers=M),
    }
    rows = []
    for input_name, x in _inputs().items():
        xs = jnp.asarray(x, jnp.float32)
        mean = jnp.mean(xs, axis=0)
        for kind, c in compressors.items():
            agg = comm.simulate(
                lambda xm, key, c=c: comm.compressed_mean(c, key, xm), M, in_axes=(0, None)
            )
            keys = jax.random.split(jax.random.key(seed), samples)
            g = jax.jit(jax.vmap(lambda k, agg=agg, xs=xs: agg(xs, k)[0]))(keys)  # worker 0
            err = np.asarray(jnp.sum((g - mean) ** 2, axis=-1), np.float64)
            rows.append(
                {
                    "input": input_name,
                    "kind": kind,
                    "measured": float(err.mean()),
                    "stderr": float(err.std(ddof=1) / math.sqrt(samples)),
                    "predicted": predicted(kind, x),
                    "omega": float(c.omega(D)),
                    "bits": int(c.bits(D)),
                }
            )
    return rows


def _bits() -> dict[str, Any]:
    import jaxdist.compressors as jc

    b = 32
    formulas = {
        "seed": K * b,
        "list": K * b + K * math.ceil(math.log2(D)),
        "mask": K * b + D,
        "enumerative": K * b + math.ceil(math.log2(math.comb(D, K))),
    }
    return {
        coding: {"bits": int(jc.rand_k(K, index_coding=coding).bits(D)), "formula": formula}
        for coding, formula in formulas.items()
    }


def run(ctx: Context) -> dict[str, Any]:
    size = _SIZES[ctx.size]
    cfg = {"M": M, "d": D, "K": K, **size}
    rows = ctx.unit("variance", cfg, lambda: _measure(size["samples"], ctx.seed))
    return {"M": M, "d": D, "K": K, "samples": size["samples"], "rows": rows, "bits": _bits()}


def check(results: dict[str, Any]) -> Verdict:
    parts = []
    for r in results["rows"]:
        slack = 5 * r["stderr"] + 1e-5 * max(1.0, r["predicted"])
        parts.append(
            (
                bool(abs(r["measured"] - r["predicted"]) <= slack),
                f"{LABELS[r['kind']]}, {r['input']} x_m: E‖ĝ − x̄‖² = {r['measured']:.4g} ± "
                f"{r['stderr']:.1g}",
                f"= {r['predicted']:.4g}",
            )
        )
    b = results["bits"]
    ok = all(v["bits"] == v["formula"] for v in b.values())
    parts.append(
        (
            bool(ok),
            "Rand-K bits: " + ", ".join(f"{c} {v['bits']}" for c, v in b.items()),
            "K·32 = 800 with a shared seed; + K⌈log₂d⌉, + d, + ⌈log₂C(d,K)⌉ otherwise",
        )
    )
    return verdict(parts)


def plot(results: dict[str, Any], v: Verdict, folder: str) -> list[str]:
    from jaxdist.plotting import pyplot, save, title

    plt = pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.4), gridspec_kw={"wspace": 0.45})
    rows = results["rows"]
    inputs = list(dict.fromkeys(r["input"] for r in rows))
    width = 0.25
    hatches = {"independent": "", "shared": "//", "perm_k": ".."}
    for j, kind in enumerate(KINDS):
        sel = [next(r for r in rows if r["input"] == i and r["kind"] == kind) for i in inputs]
        xs = np.arange(len(inputs)) + (j - 1) * width
        ax0.bar(
            xs,
            [r["measured"] for r in sel],
            width,
            color=f"C{j}",
            hatch=hatches[kind],
            edgecolor="k",
            label=f"{LABELS[kind]} (measured)",
        )
        ax0.scatter(
            xs,
            [r["predicted"] for r in sel],
            marker="_",
            s=400,
            color="k",
            zorder=3,
            label="predicted (exact)" if j == 0 else None,
        )
        for x, r in zip(xs, sel, strict=True):
            if r["measured"] == 0:
                ax0.annotate("0", (x, 0), ha="center", va="bottom", fontsize=9)
    ax0.set_xticks(np.arange(len(inputs)), [f"{i} x_m" for i in inputs])
    ax0.set_ylabel(f"E‖ĝ − x̄‖² of the aggregate (M = {results['M']}, d = {results['d']}, ω = 3)")
    ax0.legend(fontsize=7.5, loc="upper left")
    ax0.grid(True, axis="y", alpha=0.3)
    b = results["bits"]
    names = list(b)
    ax1.barh(np.arange(len(names)), [b[n]["bits"] for n in names], color="C1", edgecolor="k")
    ax1.set_yticks(
        np.arange(len(names)),
        ["shared seed" if n == "seed" else f"{n} indices" for n in names],
    )
    ax1.set_xlabel(f"bits of one Rand-{results['K']} message (d = {results['d']}, float32)")
    ax1.invert_yaxis()
    ax1.grid(True, axis="x", alpha=0.3)
    title(fig, CLAIM.claim, v)
    return save(fig, folder, "shared_randomness")


CLAIM = Claim(
    name="shared_randomness",
    section="§1–§2",
    claim="A shared seed removes Rand-K's index bits; independent Rand-K's variance is averaged "
    "down by M, shared-key Rand-K's is not, and Perm-K's disjoint blocks reassemble identical "
    "vectors exactly.",
    run=run,
    check=check,
    plot=plot,
    quick_seconds=10,
)
