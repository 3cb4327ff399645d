r"""Claim (lecture §2): each compressor's variance constant, measured on its worst-case input.

For a vector :math:`x \in \mathbb R^d` (d = 100 at both sizes, float32) the Monte-Carlo estimate
of :math:`E\|C(x) - x\|^2/\|x\|^2` over n independent keys, against the theory: ω for an unbiased
compressor (:math:`E\|C(x) - x\|^2 \le \omega\|x\|^2`), 1 − α for a contractive one
(:math:`\le (1 - \alpha)\|x\|^2`), from ``compressor.omega(d)`` / ``alpha(d)`` (THEORY.md §1).
Each input is the compressor's worst case where the bound is attained (equality is then
checked, within 5 standard errors plus float32 rounding), otherwise a Gaussian vector (the bound
is checked as an inequality). The exact bits of one message, ``compressor.bits(d)``, are shown
against the 32·d of a dense float32 vector.
"""

from __future__ import annotations

import math
from typing import Any

from jaxdist.experiments._claims import Claim, Context, Verdict, np, verdict

D = 100
_SIZES = {"quick": {"samples": 4000}, "full": {"samples": 100000}}


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    signs = rng.choice([-1.0, 1.0], size=D)
    a = rng.integers(-3, 4, size=D)
    t = 1.0 / (math.sqrt(D) + 1.0)
    terngrad = np.full(D, t)
    terngrad[0] = 1.0
    one_hot = np.zeros(D)
    one_hot[7] = -2.5
    return {
        "gaussian": rng.normal(size=D),
        "equal |x_i|": 0.7 * signs,
        "±(4/3)·2^a": signs * (4.0 / 3.0) * 2.0**a,
        "(1, t, …, t)": terngrad * signs,
        "1-sparse": one_hot,
        "|x_i| = (2 − 2⁻²⁰)·2^a": signs * (2.0 - 2.0**-20) * 2.0**a,
    }


# name: (factory expression, input, tight); built lazily (imports JAX)
CASES = {
    "rand_k(10)": ("rand_k", {"k": 10}, "gaussian", True),
    "rand_k(10, scaled=False)": ("rand_k", {"k": 10, "scaled": False}, "gaussian", True),
    "bernoulli(0.2)": ("bernoulli", {"p": 0.2}, "gaussian", True),
    "top_k(10)": ("top_k", {"k": 10}, "equal |x_i|", True),
    "natural()": ("natural", {}, "±(4/3)·2^a", True),
    "terngrad()": ("terngrad", {}, "(1, t, …, t)", True),
    "ternary()": ("ternary", {}, "gaussian", False),
    "qsgd(4)": ("qsgd", {"s": 4}, "gaussian", False),
    "scaled_sign()": ("scaled_sign", {}, "1-sparse", True),
    "truncate()": ("truncate", {}, "|x_i| = (2 − 2⁻²⁰)·2^a", True),
}


def _measure(name: str, samples: int, seed: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    import jaxdist.compressors as jc

    factory, kwargs, input_name, tight = CASES[name]
    c = getattr(jc, factory)(**kwargs)
    x = jnp.asarray(_inputs()[input_name], jnp.float32)
    keys = jax.random.split(jax.random.key(seed), samples)
    errs = jax.jit(jax.vmap(lambda k: jnp.sum((c.compress(k, x) - x) ** 2)))(keys)
    ratio = np.asarray(errs, np.float64) / float(jnp.sum(x**2))
    if c.unbiased:
        kind, theory = "unbiased", float(c.omega(D))
    else:
        kind, theory = "contractive", 1.0 - float(c.alpha(D))
    return {
        "name": name,
        "kind": kind,
        "input": input_name,
        "tight": tight,
        "measured": float(ratio.mean()),
        "stderr": float(ratio.std(ddof=1) / math.sqrt(samples)),
        "theory": theory,
        "bits": int(c.bits(D)),
        "dense_bits": 32 * D,
    }


def run(ctx: Context) -> dict[str, Any]:
    size = _SIZES[ctx.size]
    rows = [
        ctx.unit(
            "constants",
            {"cases": {k: list(v) for k, v in CASES.items()}, **size, "d": D},
            lambda: [_measure(n, size["samples"], ctx.seed) for n in CASES],
        )
    ][0]
    return {"d": D, "samples": size["samples"], "rows": rows}


def _ok(row: dict[str, Any]) -> bool:
    slack = 5.0 * row["stderr"] + 1e-5 * max(1.0, row["theory"])
    if row["tight"]:
        return abs(row["measured"] - row["theory"]) <= slack
    return row["measured"] <= row["theory"] + slack


def check(results: dict[str, Any]) -> Verdict:
    parts = []
    for r in results["rows"]:
        sym = "ω" if r["kind"] == "unbiased" else "1 − α"
        rel = "=" if r["tight"] else "≤"
        parts.append(
            (
                _ok(r),
                f"{r['name']} on {r['input']}: E‖C(x) − x‖²/‖x‖² = {r['measured']:.4g} ± "
                f"{r['stderr']:.1g}",
                f"{rel} {sym} = {r['theory']:.4g}",
            )
        )
    return verdict(parts)


def plot(results: dict[str, Any], v: Verdict, folder: str) -> list[str]:
    from jaxdist.plotting import plain_log_ticks, pyplot, save, title

    plt = pyplot()
    rows = results["rows"]
    names = [r["name"] for r in rows]
    y = np.arange(len(rows))
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"wspace": 0.55})
    ax0.barh(
        y + 0.2,
        [r["theory"] for r in rows],
        0.4,
        color="lightgray",
        edgecolor="k",
        label="theory: ω (unbiased) or 1 − α (contractive)",
    )
    ax0.barh(
        y - 0.2,
        [r["measured"] for r in rows],
        0.4,
        xerr=[5 * r["stderr"] for r in rows],
        color="C0",
        hatch="//",
        label="measured on the worst-case input (± 5 s.e.)",
    )
    ticks = [f"{n}{'' if r['tight'] else ' (bound)'}" for n, r in zip(names, rows, strict=True)]
    ax0.set_yticks(y, ticks)
    ax0.set_xscale("log")
    ax0.set_xlim(left=0.03)
    ax0.set_xlabel(f"E‖C(x) − x‖² / ‖x‖²  (d = {results['d']}, {results['samples']} keys)")
    ax0.invert_yaxis()
    ax0.legend(fontsize=7.5, loc="lower right")
    ax0.grid(True, axis="x", which="both", alpha=0.3)
    ax1.barh(y, [r["bits"] for r in rows], 0.6, color="C1", edgecolor="k")
    ax1.axvline(results["rows"][0]["dense_bits"], color="k", ls="--", lw=1)
    ax1.annotate(
        "dense float32: 32·d",
        (results["rows"][0]["dense_bits"], len(rows) - 0.5),
        fontsize=8,
        xytext=(-4, 0),
        textcoords="offset points",
        ha="right",
    )
    ax1.set_yticks(y, names)
    ax1.set_xscale("log")
    plain_log_ticks(ax1.xaxis)
    ax1.set_xlabel("exact bits of one message (compressor.bits(d); Bernoulli: when sent)")
    ax1.invert_yaxis()
    ax1.grid(True, axis="x", which="both", alpha=0.3)
    title(fig, CLAIM.claim, v)
    return save(fig, folder, "compressor_constants")


CLAIM = Claim(
    name="compressor_constants",
    section="§2",
    claim="Every compressor's variance obeys its constant (ω for unbiased, α for contractive), "
    "with equality on its worst-case input; each message costs exactly compressor.bits(d).",
    run=run,
    check=check,
    plot=plot,
    quick_seconds=10,
)
