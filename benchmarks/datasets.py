"""How long the shipped LIBSVM data sets take to load, and logistic problems to build.

Two tables, both on the host (NumPy; no JAX work is timed):

* **parse**: for every shipped data set, the uncached :func:`jaxdist.problems.load_libsvm`
  (read, sha256 check, gunzip, :func:`~jaxdist.problems.parse_libsvm`), split into its
  stages, the median and best of ``--repeats`` runs, and the ratio of the whole load to a floor
  that only gunzips the file and splits the text into tokens (``text.split()``), a ratio that
  depends less on the machine than the seconds do;
* **build**: :func:`jaxdist.problems.logistic_regression` on mushrooms for M workers (constants,
  the float64 Newton solve for x*), median of ``--repeats`` runs with the data set cached.

This replaces the wall-clock assertion that used to live in ``tests/test_datasets.py``: timing
belongs here, run on demand, not in the test-suite.

Usage::

    python benchmarks/datasets.py              # -> benchmarks/results/datasets_cpu.json
    python benchmarks/datasets.py --repeats 3 --workers 10 1000
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import jaxdist.problems as P  # noqa: E402
from jaxdist.problems import _datasets  # noqa: E402


def _load_avg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on every platform
        return None


def _stats(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "best_s": min(times), "runs": len(times)}


def time_parse(name: str, repeats: int) -> dict:
    """Uncached load of one shipped data set, stage by stage."""
    path = P.dataset_path(name)
    total, read, sha, unzip, parse, floor = [], [], [], [], [], []
    for _ in range(repeats):
        _datasets._load_cached.cache_clear()
        t0 = time.perf_counter()
        X, y = P.load_libsvm(name)
        total.append(time.perf_counter() - t0)
        # the same work, stage by stage
        t0 = time.perf_counter()
        with open(path, "rb") as fh:
            raw = fh.read()
        t1 = time.perf_counter()
        hashlib.sha256(raw).hexdigest()
        t2 = time.perf_counter()
        text = gzip.decompress(raw).decode("utf-8")
        t3 = time.perf_counter()
        P.parse_libsvm(text, source=name)
        t4 = time.perf_counter()
        text.split()
        t5 = time.perf_counter()
        read.append(t1 - t0)
        sha.append(t2 - t1)
        unzip.append(t3 - t2)
        parse.append(t4 - t3)
        floor.append((t3 - t2) + (t5 - t4))  # gunzip + tokenise: what any parser must do
    nnz = int(np.count_nonzero(X))
    med_total, med_floor = statistics.median(total), statistics.median(floor)
    return {
        "dataset": name,
        "n_samples": int(X.shape[0]),
        "n_features": int(X.shape[1]),
        "nnz": nnz,
        "file_bytes": os.path.getsize(path),
        "text_bytes": len(text.encode("utf-8")),
        "load": _stats(total),
        "read": _stats(read),
        "sha256": _stats(sha),
        "gunzip": _stats(unzip),
        "parse_libsvm": _stats(parse),
        "floor_gunzip_tokenise": _stats(floor),
        "load_over_floor": med_total / med_floor,
        "ns_per_nonzero": 1e9 * med_total / nnz,
        "load_avg_1min": _load_avg(),
    }


def time_build(num_workers: int, repeats: int) -> dict:
    """logistic_regression('mushrooms', M) with the data set already cached."""
    P.load_libsvm("mushrooms")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        p = P.logistic_regression("mushrooms", num_workers)
        times.append(time.perf_counter() - t0)
    return {
        "dataset": "mushrooms",
        "M": num_workers,
        "samples_per_worker_max": int(max(p.info["samples_per_worker"])),
        "d": p.dim,
        "build": _stats(times),
        "newton_iterations": p.info["newton_iterations"],
        "load_avg_1min": _load_avg(),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="runs per measurement (median)")
    ap.add_argument(
        "--workers", type=int, nargs="*", default=[10, 100, 1000], help="M for the build table"
    )
    ap.add_argument("--out", default=None, help="output JSON path")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    parse_rows = []
    for name in P.list_datasets():
        row = time_parse(name, args.repeats)
        parse_rows.append(row)
        print(
            f"parse {name:10s} n={row['n_samples']:6d} d={row['n_features']:4d} "
            f"nnz={row['nnz']:7d}: load median {row['load']['median_s']:.3f} s "
            f"(best {row['load']['best_s']:.3f} s; parse_libsvm "
            f"{row['parse_libsvm']['median_s']:.3f} s), {row['load_over_floor']:.1f}x the "
            f"gunzip+tokenise floor, {row['ns_per_nonzero']:.0f} ns/nonzero",
            flush=True,
        )
    build_rows = []
    for M in args.workers:
        row = time_build(M, args.repeats)
        build_rows.append(row)
        print(
            f"build logistic_regression(mushrooms, M={M:5d}): median "
            f"{row['build']['median_s']:.3f} s (best {row['build']['best_s']:.3f} s)",
            flush=True,
        )
    meta = {
        "device": f"{jax.devices()[0].platform}",
        "jax": jax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "repeats": args.repeats,
        "wall_s": time.perf_counter() - t_start,
        "notes": (
            "load: uncached jaxdist.problems.load_libsvm (read + sha256 + gunzip + parse). "
            "load_over_floor: median load time over the median of gunzip + text.split(). "
            "build: jaxdist.problems.logistic_regression('mushrooms', M), data set cached. "
            "Medians of `repeats` runs; load_avg_1min: 1-minute load average (shared machine)."
        ),
    }
    out = args.out or os.path.join(os.path.dirname(__file__), "results", "datasets_cpu.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"meta": meta, "parse": parse_rows, "build": build_rows}, f, indent=1)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
