"""Speed of every compressor against the floor of a plain device copy.

Two regimes (issue 2, section 5):
  * one large vector, d in {1e4, 1e6, 1e7} (training a real model);
  * many workers at once under ``vmap`` with independent keys, M x d in {1000 x 113, 100 x 1e5}
    (simulation).
For each compressor: time per call, GB/s of input processed, ratio to the copy floor (``-x``: reads
and writes the same bytes as a copy, and XLA cannot elide it), and ratio to the cost of drawing the
random numbers the operator needs (``jax.random.bits`` of that many 32-bit words).

Usage::

    python benchmarks/compressors.py           # all sizes -> results/compressors_<dev>.json
    python benchmarks/compressors.py --quick   # d <= 1e6 and one workers regime

Results are written as JSON next to this file (``benchmarks/results/``) and quoted in README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(__file__))
from _timing import device_description, time_fn  # noqa: E402

import jaxdist.compressors as jc  # noqa: E402


def _rand_k_draws(k, d):
    from jaxdist.compressors._sampling import expected_draws

    return expected_draws(d, k)


# name -> (factory, random 32-bit words drawn for a d-vector (None: deterministic), elementwise)
def catalogue(d: int):
    k = max(1, d // 100)
    return {
        "identity": (jc.identity(), None, True),
        "sign": (jc.sign(), None, True),
        "scaled_sign": (jc.scaled_sign(), None, True),
        "truncate": (jc.truncate(), None, True),
        "cast_bf16": (jc.cast("bfloat16"), None, True),
        "cast_fp16": (jc.cast("float16"), None, True),
        "top_k(d/100)": (jc.top_k(k), None, False),
        "rand_k(d/100)": (jc.rand_k(k), _rand_k_draws(k, d), False),
        "rand_k(d/2)": (jc.rand_k(max(1, d // 2)), _rand_k_draws(max(1, d // 2), d), False),
        "bernoulli(0.1)": (jc.bernoulli(0.1), 1, False),
        "natural": (jc.natural(), d, False),
        "ternary": (jc.ternary(), d, False),
        "terngrad": (jc.terngrad(), d, False),
        "qsgd(16)": (jc.qsgd(16), d, False),
        "natural_dither(8)": (jc.natural_dither(8), d, False),
        "stochastic_round": (jc.stochastic_round(1e-3), d, False),
        "power_sgd(4)": (jc.power_sgd(4), None, False),
    }


TIMING = {"repeats": 5, "min_time": 0.2}


def _time(fn, *args):
    return time_fn(fn, *args, **TIMING)


def bench_single(d: int, names=None) -> list[dict]:
    x = jax.random.normal(jax.random.key(0), (d,), jnp.float32)
    key = jax.random.key(1)
    floor = _time(jax.jit(lambda x: -x), x)["time_s"]
    rows = []
    for name, (c, draws, elementwise) in catalogue(d).items():
        if names and name not in names:
            continue
        t = _time(jax.jit(c.compress), key, x)
        row = {
            "regime": "single",
            "compressor": name,
            "d": d,
            "time_s": t["time_s"],
            "compile_s": t["compile_s"],
            "gb_per_s": 4 * d / t["time_s"] / 1e9,
            "ratio_to_copy": t["time_s"] / floor,
            "copy_s": floor,
            "random_words": draws,
            "deterministic_elementwise": elementwise and draws is None,
        }
        if draws:
            rng = _time(jax.jit(lambda k, n=int(draws): jax.random.bits(k, (n,), jnp.uint32)), key)
            row["rng_s"] = rng["time_s"]
            row["ratio_to_rng"] = t["time_s"] / rng["time_s"]
        rows.append(row)
        print(_fmt(row), flush=True)
    return rows


def bench_workers(m: int, d: int, names=None) -> list[dict]:
    x = jax.random.normal(jax.random.key(0), (m, d), jnp.float32)
    keys = jax.random.split(jax.random.key(1), m)
    floor = _time(jax.jit(lambda x: -x), x)["time_s"]
    rows = []
    for name, (c, draws, _) in catalogue(d).items():
        if names and name not in names:
            continue
        fn = jax.jit(jax.vmap(c.compress))
        t = _time(fn, keys, x)
        row = {
            "regime": "workers",
            "compressor": name,
            "M": m,
            "d": d,
            "time_s": t["time_s"],
            "compile_s": t["compile_s"],
            "gb_per_s": 4 * m * d / t["time_s"] / 1e9,
            "ratio_to_copy": t["time_s"] / floor,
            "copy_s": floor,
            "random_words": None if draws is None else m * draws,
        }
        if draws:
            rng = _time(
                jax.jit(jax.vmap(lambda k, n=int(draws): jax.random.bits(k, (n,), jnp.uint32))),
                keys,
            )
            row["rng_s"] = rng["time_s"]
            row["ratio_to_rng"] = t["time_s"] / rng["time_s"]
        rows.append(row)
        print(_fmt(row), flush=True)
    # Perm-K needs the worker axis: one shared permutation, each worker its block.
    if not names or "perm_k" in names:
        c = jc.perm_k(num_workers=m)
        fn = jax.jit(jax.vmap(c.compress, in_axes=(None, 0), axis_name="workers", axis_size=m))
        t = _time(fn, keys[0], x)
        row = {
            "regime": "workers",
            "compressor": "perm_k",
            "M": m,
            "d": d,
            "time_s": t["time_s"],
            "compile_s": t["compile_s"],
            "gb_per_s": 4 * m * d / t["time_s"] / 1e9,
            "ratio_to_copy": t["time_s"] / floor,
            "copy_s": floor,
            "random_words": None,
        }
        rows.append(row)
        print(_fmt(row), flush=True)
    return rows


def _fmt(row: dict) -> str:
    shape = f"{row.get('M', 1)}x{row['d']:.0e}" if row["regime"] == "workers" else f"{row['d']:.0e}"
    rng = f"{row['ratio_to_rng']:6.2f}x rng" if "ratio_to_rng" in row else " " * 12
    return (
        f"{row['regime']:8s} {shape:>10s} {row['compressor']:18s} {row['time_s'] * 1e3:10.3f} ms "
        f"{row['gb_per_s']:8.2f} GB/s {row['ratio_to_copy']:8.2f}x copy {rng}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--out", default=None, help="JSON output path")
    parser.add_argument("--only", nargs="*", default=None, help="compressor names to run")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (best is kept)")
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per timed repeat")
    args = parser.parse_args(argv)
    sizes = [10**4, 10**6] if args.quick else [10**4, 10**6, 10**7]
    workers = [(1000, 113)] if args.quick else [(1000, 113), (100, 10**5)]
    print(f"device {device_description()}, jax {jax.__version__}", flush=True)
    TIMING.update(repeats=args.repeats, min_time=args.min_time)
    rows = []
    for d in sizes:
        rows += bench_single(d, args.only)
    for m, d in workers:
        rows += bench_workers(m, d, args.only)
    out = args.out or os.path.join(
        os.path.dirname(__file__), "results", f"compressors_{jax.devices()[0].platform}.json"
    )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    meta = {
        "device": device_description(),
        "jax": jax.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    with open(out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"wrote {out}")
    misses = [
        r
        for r in rows
        if r.get("deterministic_elementwise") and r["d"] == max(sizes) and r["ratio_to_copy"] > 3
    ]
    for r in misses:
        print(f"MISS: {r['compressor']} at d={r['d']:.0e} is {r['ratio_to_copy']:.1f}x the copy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
