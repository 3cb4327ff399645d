"""Simulated rounds per second: jaxdist's compiled runner against two NumPy simulators.

Issue 2, section 6. Logistic regression on mushrooms (112 features + bias, d = 113, 8124 samples,
l2 = 1e-3, float32) split across M in {10, 100, 1000, 10000} workers. For each M:

* **jaxdist** (``jaxdist.run``: the whole run is one jitted ``lax.scan``, workers ``vmap``-ed):
  DGD without compression (the reference), DGD + Rand-K (``dcgd(rand_k(k))``, k = d // 10 = 11,
  independent per worker) and DIANA + Rand-K (``diana(rand_k(k))``, alpha = 1/(omega + 1)). Rounds
  per second of the compiled run (``num_steps`` rounds per call, one logged point at the end, so
  logging costs two extra gradient evaluations per call); the compile time is reported
  separately (first call minus a timed call).
* **NumPy loop**: a per-worker Python loop (how most research code and FL_PyTorch / FedJAX-style
  simulators work): per worker, its gradient, ``rng.choice(d, k, replace=False)``, scatter, sum.
* **NumPy vectorized**: all workers as one ``(M, n_max, d)`` array, one matrix-vector product and
  one ``einsum`` (or batched ``matmul``, whichever is faster here) for the M gradients, Rand-K
  masks by ``argpartition`` of ``(M, d)`` uniform noise.

All three implement the same rounds (float32): ``g_m = ∇f_m(x)``, ``C_m`` = Rand-K with the
``d/k`` scaling, ``x ← x − γ mean_m C_m(g_m)`` (DGD+Rand-K), or DIANA's
``Δ_m = C_m(g_m − h_m)``, ``ĝ = h + mean Δ_m``, ``h_m += αΔ_m``, ``h += α mean Δ_m``,
``x ← x − γĝ``. Step sizes are THEORY.md's (``jaxdist.theory``); they do not affect speed. The
script checks that the NumPy gradients equal ``problem.full_grad`` (reported as ``grad_check``).

Data layout. For M <= 8124 the samples are split i.i.d. with ``jaxdist.problems.split_iid`` (as
``logistic_regression(split="iid")`` does) and padded to ``n_max = ceil(n/M)`` rows with weight
0. For M = 10000 > 8124 every worker holds **one** sample: all 8124 samples in random order, then
1876 samples drawn without replacement a second time (so 1876 samples are held by two workers).
The problem is built directly (``jaxdist.problems.Problem`` with ``logistic_loss``) because
``logistic_regression`` cannot split fewer samples than workers, and its float64 constants
(per-worker Hessian bounds, Newton solve) take ~30 s at M = 1000 on a 2-core machine.

Timing: every rate is the best over several short blocks (jaxdist: ``--repeats`` calls; NumPy:
blocks of rounds), since on a shared machine the best block is the least disturbed one; the 1-min
load average is recorded with each row. The per-worker loop is slow at large M, so at M >= 1000
it is timed on a bounded number of rounds: ``--loop-rounds`` (10) at M = 1000, and one round per
repeat (5 rounds, after one warm-up round) at M = 10000; the table prints how many.
NumPy's BLAS runs on one thread (``--blas-threads``, default 1; 0 keeps the BLAS default): on a
shared 2-core machine a threaded 8124 x 113 sgemv stalls on scheduler ticks (4-8 ms, not 0.06 ms).

Usage::

    python benchmarks/simulation.py            # M in {10, 100, 1000, 10000}, ~4-6 min on 2 cores
    python benchmarks/simulation.py --quick    # M in {10, 1000}, fewer steps, writes *_quick.json
    python benchmarks/simulation.py --workers 1000 --out /tmp/sim.json

Results are written as JSON (``benchmarks/results/simulation_<platform>.json``) and quoted in
README.md. Targets (issue text), at M = 1000, measured side by side: DGD+Rand-K and DIANA+Rand-K
at >= 50x the loop and >= 3x the vectorized NumPy, and a compressed round within 2x of the
uncompressed one; misses are printed as ``MISS`` lines.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time


def _blas_threads(argv: list[str]) -> int:
    """``--blas-threads N`` from the command line (read before NumPy is imported)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--blas-threads="):
            return int(arg.split("=", 1)[1])
        if arg == "--blas-threads" and i + 1 < len(argv):
            return int(argv[i + 1])
    return 1


# NumPy's BLAS gets one thread unless --blas-threads says otherwise (0: the library default). On
# a shared 2-core machine a threaded sgemv of this size (8124 x 113) waits for scheduler ticks:
# 4-8 ms instead of 0.06 ms, which would make the vectorized baseline look 10x slower than it is.
if __name__ == "__main__" and _blas_threads(sys.argv[1:]) > 0:
    for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, str(_blas_threads(sys.argv[1:])))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _timing import device_description, time_fn  # noqa: E402

import jaxdist  # noqa: E402
from jaxdist import theory  # noqa: E402
from jaxdist.compressors import rand_k  # noqa: E402
from jaxdist.problems import (  # noqa: E402
    Problem,
    labels_to_pm1,
    load_libsvm,
    logistic_loss,
    split_iid,
)

L2 = 1e-3
SEED = 0
METHODS = ("dgd", "dcgd_rand_k", "diana_rand_k")
# Rounds per timed jaxdist call: each call should last >= ~0.3 s so the per-call host overhead
# (argument checks, ledger shapes, device_get of the trace) stays at a few percent.
STEPS = {10: 20000, 100: 5000, 1000: 1000, 10000: 100}
QUICK_STEPS = {10: 5000, 100: 1000, 1000: 250, 10000: 25}


# ---------------------------------------------------------------------------------------------
# Data.


def load_mushrooms() -> tuple[np.ndarray, np.ndarray]:
    """(X, y): 8124 x 113 float64 features with the bias column, labels in {-1, +1}."""
    X, y = load_libsvm("mushrooms")
    y, _ = labels_to_pm1(y)
    X = np.concatenate([X, np.ones((X.shape[0], 1))], axis=1)
    return X, y


def worker_parts(n: int, M: int, seed: int = SEED) -> list[np.ndarray]:
    """Sample indices of every worker (see the module docstring for M > n)."""
    if M <= n:
        return split_iid(n, M, key=seed)
    if M > 2 * n:
        raise ValueError(f"M={M} > 2n={2 * n}: each sample would be held more than twice")
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(n), rng.choice(n, M - n, replace=False)])
    return [idx[m : m + 1] for m in range(M)]


def build(M: int, X: np.ndarray, y: np.ndarray) -> tuple[Problem, dict]:
    """The jaxdist problem and the host (float32) arrays the NumPy simulators use."""
    n, d = X.shape
    parts = worker_parts(n, M)
    counts = np.array([p.size for p in parts])
    n_max = int(counts.max())
    Xp = np.zeros((M, n_max, d), np.float32)
    yp = np.ones((M, n_max), np.float32)
    wp = np.zeros((M, n_max), np.float32)
    for m, p in enumerate(parts):  # host-side layout
        Xp[m, : p.size] = X[p]
        yp[m, : p.size] = y[p]
        wp[m, : p.size] = 1.0 / p.size
    # Smoothness constants (float64): L_m = λmax(A_mᵀ A_m)/(4 n_m) + l2 via the smaller Gram.
    A = Xp.astype(np.float64)
    if n_max <= d:
        gram = A @ np.swapaxes(A, 1, 2)
    else:
        gram = np.swapaxes(A, 1, 2) @ A
    L_m = np.linalg.eigvalsh(gram)[:, -1] / (4.0 * counts) + L2
    B = (A * np.sqrt(wp.astype(np.float64) / (4.0 * M))[..., None]).reshape(-1, d)
    L = float(np.linalg.eigvalsh(B.T @ B)[-1]) + L2
    data = {
        "X": jnp.asarray(Xp),
        "y": jnp.asarray(yp),
        "weight": jnp.asarray(wp),
        "count": jnp.asarray(counts, jnp.int32),
    }
    problem = Problem(
        name=f"logistic_regression(mushrooms, M={M})",
        loss=functools.partial(logistic_loss, l2=L2),
        data=data,
        init_params=jnp.zeros((d,), jnp.float32),
        num_workers=M,
        dim=d,
        L=L,
        L_m=L_m,
        mu=L2,
        info={"dataset": "mushrooms", "samples_per_worker_max": n_max, "n_samples": n},
    )
    host = {
        "X": Xp,
        "y": yp,
        "w": wp,
        "Xs": [Xp[m, :c] for m, c in enumerate(counts)],
        "ys": [yp[m, :c] for m, c in enumerate(counts)],
    }
    return problem, host


def hyper(problem: Problem, k: int) -> dict[str, float]:
    """THEORY.md step sizes for the three methods (and DIANA's alpha)."""
    d, M = problem.dim, problem.num_workers
    omega = d / k - 1.0
    return {
        "dgd": float(theory.gd_stepsize(problem.L)),
        "dcgd_rand_k": float(theory.dcgd_stepsize(problem.L, problem.L_max, omega, M)),
        "diana_rand_k": float(theory.diana_stepsize(problem.L, problem.L_max, omega, M)),
        "alpha": float(theory.diana_shift_step(omega)),
    }


# ---------------------------------------------------------------------------------------------
# NumPy simulators (float32). sigma(-z) = 0.5 (1 - tanh(z/2)) never overflows.


def _sig_neg(z):
    return np.float32(0.5) * (np.float32(1.0) - np.tanh(np.float32(0.5) * z))


def _init_state(x0, M, d, method):
    """(x, h_m, h): DIANA's shifts start at zero; the other methods have none."""
    x = x0.astype(np.float32).copy()
    if method == "diana_rand_k":
        return x, np.zeros((M, d), np.float32), np.zeros(d, np.float32)
    return x, None, None


class LoopSim:
    """Per-worker Python loop over the workers' own samples (no padding)."""

    def __init__(self, host, d, k, seed=SEED):
        self.Xs, self.ys = host["Xs"], host["ys"]
        self.M, self.d, self.k = len(self.Xs), d, k
        self.scale = np.float32(d / k)
        self.rng = np.random.default_rng(seed)

    def grad(self, m, x):
        Xm, ym = self.Xs[m], self.ys[m]
        s = _sig_neg(ym * (Xm @ x))
        return -(Xm.T @ (ym * s)) / np.float32(ym.shape[0]) + np.float32(L2) * x

    def rand_k(self, v):
        idx = self.rng.choice(self.d, self.k, replace=False)
        out = np.zeros_like(v)
        out[idx] = v[idx] * self.scale
        return out

    def init(self, x0, method):
        return _init_state(x0, self.M, self.d, method)

    def round(self, state, method, lr, alpha):
        x, h_m, h = state
        acc = np.zeros(self.d, np.float32)
        for m in range(self.M):
            g = self.grad(m, x)
            if method == "dgd":
                acc += g
            elif method == "dcgd_rand_k":
                acc += self.rand_k(g)
            else:
                delta = self.rand_k(g - h_m[m])
                h_m[m] += alpha * delta
                acc += delta
        mean = acc / np.float32(self.M)
        if method == "diana_rand_k":
            g_hat = h + mean
            h = h + alpha * mean
            return x - lr * g_hat, h_m, h
        return x - lr * mean, h_m, h


class VectorSim:
    """All workers at once: (M, n_max, d) data, argpartition Rand-K masks."""

    def __init__(self, host, d, k, seed=SEED):
        self.X, self.y, self.w = host["X"], host["y"], host["w"]
        self.M, self.n = self.y.shape
        self.X2 = self.X.reshape(self.M * self.n, d)
        self.wy = self.w * self.y
        self.d, self.k = d, k
        self.scale = np.float32(d / k)
        self.rng = np.random.default_rng(seed)
        self._reduce = self._fastest_reduction()

    def _fastest_reduction(self):
        """Σ_i coef[m, i] X[m, i, :] as einsum or batched matmul, whichever is faster here."""
        options = {
            "einsum": lambda c: np.einsum("mn,mnd->md", c, self.X),
            "matmul": lambda c: np.matmul(c[:, None, :], self.X)[:, 0, :],
        }
        coef = self.wy.copy()
        best = {}
        for name, fn in options.items():
            fn(coef)
            t0 = time.perf_counter()
            for _ in range(3):
                fn(coef)
            best[name] = time.perf_counter() - t0
        self.reduction = min(best, key=best.get)
        return options[self.reduction]

    def grads(self, x):
        """The M worker gradients at the shared x, shape (M, d)."""
        z = self.y * (self.X2 @ x).reshape(self.M, self.n)
        coef = -self.wy * _sig_neg(z)
        return self._reduce(coef) + np.float32(L2) * x

    def rand_k(self, V):
        noise = self.rng.random((self.M, self.d), dtype=np.float32)
        idx = np.argpartition(noise, self.k, axis=1)[:, : self.k]
        out = np.zeros_like(V)
        np.put_along_axis(out, idx, np.take_along_axis(V, idx, axis=1) * self.scale, axis=1)
        return out

    def init(self, x0, method):
        return _init_state(x0, self.M, self.d, method)

    def round(self, state, method, lr, alpha):
        x, h_m, h = state
        G = self.grads(x)
        if method == "dgd":
            return x - lr * G.mean(axis=0), h_m, h
        if method == "dcgd_rand_k":
            return x - lr * self.rand_k(G).mean(axis=0), h_m, h
        delta = self.rand_k(G - h_m)
        mean = delta.mean(axis=0)
        h_m += alpha * delta
        g_hat = h + mean
        return x - lr * g_hat, h_m, h + alpha * mean


def full_loss(host, x) -> float:
    """f(x) = mean_m Σ_i w_i log(1 + exp(-y_i a_iᵀx)) + l2/2 ||x||², in float64."""
    X, y, w = (host[k].astype(np.float64) for k in ("X", "y", "w"))
    x = np.asarray(x, np.float64)
    z = y * (X @ x)
    return float(np.mean(np.sum(w * np.logaddexp(0.0, -z), axis=1)) + 0.5 * L2 * x @ x)


def time_numpy(sim, method, lr, alpha, *, min_time, max_rounds, repeats) -> dict:
    """Best rounds/s over ``repeats`` blocks of rounds lasting ``min_time`` (or max_rounds)."""
    state = sim.init(np.zeros(sim.d, np.float32), method)
    state = sim.round(state, method, lr, alpha)  # warm-up
    best, total = 0.0, 1
    for _ in range(repeats):
        rounds, t0 = 0, time.perf_counter()
        while True:
            state = sim.round(state, method, lr, alpha)
            rounds += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time or rounds >= max_rounds:
                break
        total += rounds
        best = max(best, rounds / elapsed)
    return {"rounds_per_s": best, "rounds_timed": total, "x": state[0]}


# ---------------------------------------------------------------------------------------------
# jaxdist.


def make_tx(method: str, k: int, hp: dict):
    if method == "dgd":
        return optax.chain(jaxdist.dgd(), optax.sgd(hp["dgd"]))
    if method == "dcgd_rand_k":
        return optax.chain(jaxdist.dcgd(rand_k(k)), optax.sgd(hp["dcgd_rand_k"]))
    return optax.chain(jaxdist.diana(rand_k(k), hp["alpha"]), optax.sgd(hp["diana_rand_k"]))


def time_jax(problem, method, k, hp, num_steps, *, repeats, min_time) -> dict:
    tx = make_tx(method, k, hp)

    def call(key):
        return jaxdist.run(tx, problem, num_steps, key, log_every=num_steps).loss

    t = time_fn(call, jax.random.key(SEED), repeats=repeats, min_time=min_time)
    loss = call(jax.random.key(SEED))
    return {
        "rounds_per_s": num_steps / t["time_s"],
        "call_s": t["time_s"],
        "compile_s": max(t["compile_s"] - t["time_s"], 0.0),
        "num_steps": num_steps,
        "loss_final": float(loss[-1]),
    }


def grad_check(problem, host, d, k) -> float:
    """max |NumPy gradient − problem.full_grad| at a random point, relative to its norm."""
    x = np.random.default_rng(1).standard_normal(d).astype(np.float32) * np.float32(0.1)
    ref = np.asarray(problem.full_grad(jnp.asarray(x)), np.float64)
    vec = VectorSim(host, d, k).grads(x).mean(axis=0)
    loop = LoopSim(host, d, k)
    sims = [vec]
    if len(host["Xs"]) <= 1000:
        sims.append(np.mean([loop.grad(m, x) for m in range(loop.M)], axis=0))
    return max(float(np.max(np.abs(g - ref)) / np.linalg.norm(ref)) for g in sims)


# ---------------------------------------------------------------------------------------------
# Driver.


def bench_m(M, X, y, *, quick, loop_rounds, repeats) -> list[dict]:
    t0 = time.perf_counter()
    problem, host = build(M, X, y)
    build_s = time.perf_counter() - t0
    d = problem.dim
    k = d // 10
    hp = hyper(problem, k)
    check = grad_check(problem, host, d, k)
    steps = (QUICK_STEPS if quick else STEPS).get(M, max(10, 10**6 // M))
    # Best of several short blocks: on a shared machine the best block is the least disturbed.
    min_time = 0.1 if quick else 0.2
    print(
        f"-- M={M}: n_max={host['X'].shape[1]}, d={d}, k={k}, L={problem.L:.4g}, "
        f"L_max={problem.L_max:.4g}, built in {build_s:.1f}s, grad check {check:.1e}",
        flush=True,
    )
    rows = []
    loop = LoopSim(host, d, k)
    vec = VectorSim(host, d, k)
    # The loop's round costs ~25-50 us per worker: time a bounded number of rounds.
    loop_max = max(1, (loop_rounds * 1000) // M // repeats) if M >= 1000 else 200
    for method in METHODS:
        lr = np.float32(hp[method])
        alpha = np.float32(hp["alpha"])
        jx = time_jax(problem, method, k, hp, steps, repeats=repeats, min_time=min_time)
        lp = time_numpy(
            loop, method, lr, alpha, min_time=min_time / 2, max_rounds=loop_max, repeats=repeats
        )
        vc = time_numpy(
            vec, method, lr, alpha, min_time=min_time / 2, max_rounds=10**6, repeats=2 * repeats
        )
        row = {
            "M": M,
            "d": d,
            "k": k,
            "method": method,
            "jax_rounds_per_s": jx["rounds_per_s"],
            "jax_compile_s": jx["compile_s"],
            "jax_steps_per_call": steps,
            "jax_loss_final": jx["loss_final"],
            "loop_rounds_per_s": lp["rounds_per_s"],
            "loop_rounds_timed": lp["rounds_timed"],
            "vec_rounds_per_s": vc["rounds_per_s"],
            "vec_rounds_timed": vc["rounds_timed"],
            "vec_reduction": vec.reduction,
            "vec_loss_after_timing": full_loss(host, vc["x"]),
            "speedup_vs_loop": jx["rounds_per_s"] / lp["rounds_per_s"],
            "speedup_vs_vec": jx["rounds_per_s"] / vc["rounds_per_s"],
            "lr": hp[method],
            "grad_check": check,
            "load_avg_1min": os.getloadavg()[0],
        }
        rows.append(row)
    ref = rows[0]["jax_rounds_per_s"]
    for row in rows:
        row["time_vs_uncompressed"] = ref / row["jax_rounds_per_s"]
        print(_fmt(row), flush=True)
    return rows


HEADER = (
    f"{'M':>6s} {'method':13s} {'jax r/s':>9s} {'compile':>8s} {'loop r/s':>9s} "
    f"{'vec r/s':>9s} {'x loop':>8s} {'x vec':>7s} {'t/t_dgd':>7s} {'loop n':>6s} {'load':>5s}"
)


def _fmt(row: dict) -> str:
    return (
        f"{row['M']:6d} {row['method']:13s} {row['jax_rounds_per_s']:9.1f} "
        f"{row['jax_compile_s']:7.2f}s {row['loop_rounds_per_s']:9.2f} "
        f"{row['vec_rounds_per_s']:9.1f} {row['speedup_vs_loop']:7.1f}x "
        f"{row['speedup_vs_vec']:6.2f}x {row['time_vs_uncompressed']:7.2f} "
        f"{row['loop_rounds_timed']:6d} {row['load_avg_1min']:5.1f}"
    )


def check_targets(rows: list[dict], M: int = 1000) -> list[str]:
    misses = []
    for r in rows:
        if r["M"] != M or r["method"] == "dgd":
            continue
        if r["speedup_vs_loop"] < 50:
            misses.append(f"{r['method']} at M={M}: {r['speedup_vs_loop']:.1f}x the loop (< 50x)")
        if r["speedup_vs_vec"] < 3:
            misses.append(
                f"{r['method']} at M={M}: {r['speedup_vs_vec']:.2f}x the vectorized NumPy (< 3x)"
            )
        if r["time_vs_uncompressed"] > 2:
            misses.append(
                f"{r['method']} at M={M}: a round costs {r['time_vs_uncompressed']:.2f}x the "
                "uncompressed DGD round (> 2x)"
            )
    return misses


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="M in {10, 1000}, fewer steps")
    parser.add_argument("--workers", type=int, nargs="*", default=None, help="values of M")
    parser.add_argument(
        "--loop-rounds", type=int, default=10, help="loop rounds timed at M=1000 (1/10 at 10000)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (best kept)")
    parser.add_argument(
        "--blas-threads", type=int, default=1, help="NumPy BLAS threads (0: library default)"
    )
    parser.add_argument("--out", default=None, help="JSON output path")
    args = parser.parse_args(argv)
    workers = args.workers or ([10, 1000] if args.quick else [10, 100, 1000, 10000])
    print(
        f"device {device_description()}, jax {jax.__version__}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    X, y = load_mushrooms()
    t_start = time.perf_counter()
    rows = []
    print(HEADER, flush=True)
    for M in workers:
        rows += bench_m(
            M, X, y, quick=args.quick, loop_rounds=args.loop_rounds, repeats=args.repeats
        )
    wall = time.perf_counter() - t_start
    print(HEADER)
    for row in rows:
        print(_fmt(row))
    out = args.out or os.path.join(
        os.path.dirname(__file__),
        "results",
        f"simulation_{jax.devices()[0].platform}{'_quick' if args.quick else ''}.json",
    )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    meta = {
        "device": device_description(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "quick": args.quick,
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "wall_s": wall,
        "dataset": "mushrooms (d = 112 + bias, 8124 samples), l2 = 1e-3, float32",
        "notes": (
            "jax rounds/s: num_steps / (time of one jaxdist.run call, best of repeats), "
            "compile_s: first call minus a timed call. loop/vec: best rounds/s over blocks of "
            "rounds (loop_rounds_timed rounds in total). time_vs_uncompressed: jaxdist round "
            "time over jaxdist DGD's at the same M. load_avg_1min: 1-minute load average when "
            "the row was measured (shared machine)."
        ),
    }
    with open(out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"wrote {out} ({wall:.0f}s)")
    if 1000 in workers:
        for miss in check_targets(rows):
            print(f"MISS: {miss}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
