"""Simulated rounds per second: jaxdist's compiled runner against two NumPy simulators.

Issue 2, section 6, and the round-based methods of issue 7. Logistic regression on mushrooms
(112 features + bias, d = 113, 8124 samples, l2 = 1e-3, float32) split across M in
{10, 100, 1000, 10000} workers. For each M, two groups of methods (``--methods``):

* ``per_step``: DGD without compression (the reference), DGD + Rand-K (``dcgd(rand_k(k))``,
  k = d // 10 = 11, independent per worker) and DIANA + Rand-K (``diana(rand_k(k))``,
  alpha = 1/(omega + 1)), per-step optax chains;
* ``round``: round-based methods (``jaxdist.methods.RoundMethod``): local GD with H = 8 local
  steps (``local_gd(γ, 8)``, γ = 1/L_max) and Scaffnew (``scaffnew(γ, p)``, γ = 1/L and
  p = sqrt(μ/L) from ``jaxdist.theory.scaffnew_stepsize`` / ``scaffnew_probability`` with L the
  smoothness of every f_m, i.e. L_max, and μ = l2: p ≈ 0.013-0.019, 1-2 % of the rounds
  communicate).

Each method is timed three ways:

* **jaxdist** (``jaxdist.run``: the whole run is one jitted ``lax.scan``, workers ``vmap``-ed).
  Rounds per second of the compiled run (``num_steps`` rounds per call, one logged point at
  the end, so logging costs two extra gradient evaluations per call; local GD runs
  ``num_steps // H`` rounds per call, about the same work); the compile time is reported
  separately (first call minus a timed call).
* **NumPy loop**: a per-worker Python loop (how most research code and FL_PyTorch / FedJAX-style
  simulators work): per worker, its gradient, ``rng.choice(d, k, replace=False)``, scatter, sum;
  local GD: per worker H gradient steps from x, then the mean; Scaffnew: per worker its step,
  then (on heads) the mean and the control-variate updates.
* **NumPy vectorized**: all workers as one ``(M, n_max, d)`` array, one matrix-vector product and
  one ``einsum`` (or batched ``matmul``, whichever is faster here) for the M gradients, Rand-K
  masks by ``argpartition`` of ``(M, d)`` uniform noise. The round-based methods keep one point
  per worker, an ``(M, d)`` array, and compute ``X_m x_m`` for all m by ``einsum`` or batched
  ``matmul`` (whichever is faster); local GD's first step is from the shared x (one sgemv).

All three implement the same rounds (float32): ``g_m = ∇f_m(x)``, ``C_m`` = Rand-K with the
``d/k`` scaling, ``x ← x − γ mean_m C_m(g_m)`` (DGD+Rand-K), or DIANA's
``Δ_m = C_m(g_m − h_m)``, ``ĝ = h + mean Δ_m``, ``h_m += αΔ_m``, ``h += α mean Δ_m``,
``x ← x − γĝ``; local GD's ``x_{m,0} = x``, ``x_{m,h+1} = x_{m,h} − γ∇f_m(x_{m,h})`` (h < H),
``x ← mean_m x_{m,H}``; Scaffnew's ``x̂_m = x_m − γ(∇f_m(x_m) − h_m)``, a coin θ ~ Bernoulli(p)
shared by all workers, ``x_m ← mean_j(x̂_j − (γ/p)h_j)`` if θ else ``x̂_m``,
``h_m ← h_m + (p/γ)(x_m − x̂_m)`` (the model is the last averaged one). The NumPy simulators
draw their own coins (``rng.random() < p``, one per round), jaxdist its own: the same
distribution, not the same sequence. Step sizes are THEORY.md's (``jaxdist.theory``); they do
not affect speed. Checks, printed per M: the NumPy gradients equal ``problem.full_grad``
(``grad check``); and, when round-based methods are timed, the NumPy rounds equal jaxdist's
(``round check``): from x0 = 0, 3 rounds of local GD (24 local steps), 3 rounds of Scaffnew at
p = 1 (every round averages) and 12 rounds at p = 0.5 with jaxdist's coins
(``bernoulli_coin(fold_in(fold_in(key, t), COIN), p)``) replayed in NumPy, comparing the
NumPy models (Scaffnew: every x_m, h_m and the averaged model) with jaxdist's states on the
runner's key path (``max|Δ| / max|x|``), and the loss of the NumPy model with ``jaxdist.run``'s
loss after those rounds. A difference above 1e-4 prints ``CHECK FAILED`` and exits with 1
(measured: 1e-7 to 6e-6, i.e. float32 rounding). The per-worker loop is checked at M <= 1000.

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
repeat (5 rounds, after one warm-up round) at M = 10000; the table prints how many (a loop
round of local GD costs H loop rounds of DGD, so its blocks often hold one round).
NumPy's BLAS runs on one thread (``--blas-threads``, default 1; 0 keeps the BLAS default): on a
shared 2-core machine a threaded 8124 x 113 sgemv stalls on scheduler ticks (4-8 ms, not 0.06 ms).

Columns: ``jax r/s`` rounds per second; ``steps/s`` local gradient steps per second and worker
(rounds/s × H for local GD, = rounds/s otherwise); ``x loop`` / ``x vec`` jaxdist's rate over
the NumPy simulator's for the same rounds (the same ratio in rounds or steps); ``t/t_dgd`` the
time of one local step (one round of a per-step method) over one jaxdist DGD round at that M.

Usage::

    python benchmarks/simulation.py            # M in {10, 100, 1000, 10000}, ~6-9 min on 2 cores
    python benchmarks/simulation.py --quick    # M in {10, 1000}, fewer steps, writes *_quick.json
    python benchmarks/simulation.py --workers 1000 --methods dgd,round   # round-based rows
    python benchmarks/simulation.py --workers 1000 --out /tmp/sim.json

Results are written as JSON (``benchmarks/results/simulation_<platform>.json``; a run restricted
by ``--methods`` or ``--workers`` gets a suffix, e.g. ``simulation_cpu_dgd-round_M1000.json``,
so it does not replace the full table) and quoted in README.md. Targets (issue text), at
M = 1000, measured side by side: DGD+Rand-K and DIANA+Rand-K at >= 50x the loop and >= 3x the
vectorized NumPy, and a compressed round within 2x of the uncompressed one; misses are printed
as ``MISS`` lines. The round-based methods have no target: their rows are reported as measured.
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
from jax import lax  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _timing import device_description, time_fn  # noqa: E402

import jaxdist  # noqa: E402
from jaxdist import comm, theory  # noqa: E402
from jaxdist.compressors import rand_k  # noqa: E402
from jaxdist.compressors._sampling import bernoulli_coin  # noqa: E402
from jaxdist.methods import Oracle  # noqa: E402
from jaxdist.methods._base import COIN  # noqa: E402
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
# Round-based methods (jaxdist.methods.RoundMethod): local GD with H local steps, Scaffnew.
ROUND_METHODS = ("local_gd", "scaffnew")
GROUPS = {"per_step": METHODS, "round": ROUND_METHODS}
LOCAL_STEPS = 8  # H of local GD
# Scaffnew's numerical check replays jaxdist's coins at this p (both branches within a few
# rounds) and also runs at p = 1 (every round averages).
CHECK_P = 0.5
CHECK_TOL = 1e-4  # largest relative NumPy-vs-jaxdist difference accepted (float32, a few rounds)
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
    """THEORY.md step sizes of every method (and DIANA's alpha, Scaffnew's p, local GD's H).

    Local GD: γ = 1/L_max (THEORY.md §2.8: the round map contracts for γ <= 1/L_max).
    Scaffnew: γ = 1/L and p = sqrt(μ/L) with L the smoothness of every f_m in the federated
    form (THEORY.md §2.8, Thm 6), i.e. L = L_max here, and μ = l2 (every f_m is l2-strongly
    convex).
    """
    d, M = problem.dim, problem.num_workers
    omega = d / k - 1.0
    L_max = float(problem.L_max)
    return {
        "dgd": float(theory.gd_stepsize(problem.L)),
        "dcgd_rand_k": float(theory.dcgd_stepsize(problem.L, problem.L_max, omega, M)),
        "diana_rand_k": float(theory.diana_stepsize(problem.L, problem.L_max, omega, M)),
        "alpha": float(theory.diana_shift_step(omega)),
        "local_gd": 1.0 / L_max,
        "H": LOCAL_STEPS,
        "scaffnew": float(theory.scaffnew_stepsize(L_max)),
        "p": float(theory.scaffnew_probability(L_max, problem.mu)),
    }


# ---------------------------------------------------------------------------------------------
# NumPy simulators (float32). sigma(-z) = 0.5 (1 - tanh(z/2)) never overflows.


def _sig_neg(z):
    return np.float32(0.5) * (np.float32(1.0) - np.tanh(np.float32(0.5) * z))


def _init_state(x0, M, d, method):
    """(x, h_m, h): DIANA's shifts start at zero; Scaffnew's state is (x_m, h_m, server model)
    with per-worker rows x_m = x0 and h_m = 0; the other methods have one model x."""
    x = x0.astype(np.float32).copy()
    if method == "diana_rand_k":
        return x, np.zeros((M, d), np.float32), np.zeros(d, np.float32)
    if method == "scaffnew":
        return np.tile(x, (M, 1)), np.zeros((M, d), np.float32), x
    return x, None, None


def np_hyper(hp: dict, method: str, p: float | None = None) -> dict:
    """The float32 hyperparameters one NumPy round needs (``p`` overrides Scaffnew's)."""
    return {
        "lr": np.float32(hp[method]),
        "alpha": np.float32(hp["alpha"]),
        "H": int(hp["H"]),
        "p": np.float32(hp["p"] if p is None else p),
    }


class _Sim:
    """What both NumPy simulators share: state, the model, Scaffnew's shared coin."""

    def init(self, x0, method):
        return _init_state(x0, self.M, self.d, method)

    @staticmethod
    def model(state, method):
        """The model metrics are taken at: Scaffnew's last averaged model, else x."""
        return state[2] if method == "scaffnew" else state[0]

    def replay_coins(self, coins):
        """Use these coins (e.g. jaxdist's, for the check) instead of drawing them (``None``:
        draw again)."""
        self._coins = None if coins is None else iter([bool(c) for c in coins])

    def coin(self, p) -> bool:
        """Scaffnew's communication coin: one draw per round, shared by every worker."""
        coins = getattr(self, "_coins", None)
        if coins is not None:
            return next(coins)
        return bool(self.rng.random() < p)


class LoopSim(_Sim):
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

    def round(self, state, method, hp):
        if method == "local_gd":
            return self._local_gd(state, hp)
        if method == "scaffnew":
            return self._scaffnew(state, hp)
        x, h_m, h = state
        lr, alpha = hp["lr"], hp["alpha"]
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

    def _local_gd(self, state, hp):
        """Per worker: H gradient steps from x; then x = the mean of the local models."""
        x = state[0]
        lr = hp["lr"]
        acc = np.zeros(self.d, np.float32)
        for m in range(self.M):
            y = x
            for _ in range(hp["H"]):
                y = y - lr * self.grad(m, y)
            acc += y
        return acc / np.float32(self.M), None, None

    def _scaffnew(self, state, hp):
        """Per worker x̂_m = x_m − γ(∇f_m(x_m) − h_m); on heads x_m = mean_j(x̂_j − (γ/p)h_j)
        and h_m += (p/γ)(x_m − x̂_m); on tails x_m = x̂_m (h unchanged)."""
        x_m, h_m, server = state
        lr, p = hp["lr"], hp["p"]
        theta = self.coin(p)
        ratio = lr / p
        acc = np.zeros(self.d, np.float32)
        for m in range(self.M):
            x_hat = x_m[m] - lr * (self.grad(m, x_m[m]) - h_m[m])
            x_m[m] = x_hat
            if theta:
                acc += x_hat - ratio * h_m[m]
        if not theta:
            return x_m, h_m, server
        avg = acc / np.float32(self.M)
        for m in range(self.M):
            h_m[m] += (avg - x_m[m]) / ratio
            x_m[m] = avg
        return x_m, h_m, avg


class VectorSim(_Sim):
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
        self._matvec = self._fastest_matvec()

    @staticmethod
    def _fastest(options, arg):
        best = {}
        for name, fn in options.items():
            fn(arg)
            t0 = time.perf_counter()
            for _ in range(3):
                fn(arg)
            best[name] = time.perf_counter() - t0
        return min(best, key=best.get)

    def _fastest_reduction(self):
        """Σ_i coef[m, i] X[m, i, :] as einsum or batched matmul, whichever is faster here."""
        options = {
            "einsum": lambda c: np.einsum("mn,mnd->md", c, self.X),
            "matmul": lambda c: np.matmul(c[:, None, :], self.X)[:, 0, :],
        }
        self.reduction = self._fastest(options, self.wy.copy())
        return options[self.reduction]

    def _fastest_matvec(self):
        """X[m] @ x_m for per-worker points x_m (round-based methods): einsum or matmul."""
        options = {
            "einsum": lambda V: np.einsum("mnd,md->mn", self.X, V),
            "matmul": lambda V: np.matmul(self.X, V[:, :, None])[:, :, 0],
        }
        V = np.zeros((self.M, self.d), np.float32)
        self.matvec = self._fastest(options, V)
        return options[self.matvec]

    def grads(self, x):
        """The M worker gradients at the shared x, shape (M, d)."""
        z = self.y * (self.X2 @ x).reshape(self.M, self.n)
        coef = -self.wy * _sig_neg(z)
        return self._reduce(coef) + np.float32(L2) * x

    def grads_at(self, V):
        """The M worker gradients ∇f_m(V[m]) at per-worker points V, shape (M, d)."""
        z = self.y * self._matvec(V)
        coef = -self.wy * _sig_neg(z)
        return self._reduce(coef) + np.float32(L2) * V

    def rand_k(self, V):
        noise = self.rng.random((self.M, self.d), dtype=np.float32)
        idx = np.argpartition(noise, self.k, axis=1)[:, : self.k]
        out = np.zeros_like(V)
        np.put_along_axis(out, idx, np.take_along_axis(V, idx, axis=1) * self.scale, axis=1)
        return out

    def round(self, state, method, hp):
        if method == "local_gd":
            return self._local_gd(state, hp)
        if method == "scaffnew":
            return self._scaffnew(state, hp)
        x, h_m, h = state
        lr, alpha = hp["lr"], hp["alpha"]
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

    def _local_gd(self, state, hp):
        """All workers' H steps as (M, d) arrays (the first from the shared x: one sgemv)."""
        x = state[0]
        lr = hp["lr"]
        V = x - lr * self.grads(x)
        for _ in range(hp["H"] - 1):
            V = V - lr * self.grads_at(V)
        return V.mean(axis=0), None, None

    def _scaffnew(self, state, hp):
        x_m, h_m, server = state
        lr, p = hp["lr"], hp["p"]
        theta = self.coin(p)
        x_hat = x_m - lr * (self.grads_at(x_m) - h_m)
        if not theta:
            return x_hat, h_m, server
        ratio = lr / p
        avg = (x_hat - ratio * h_m).mean(axis=0)
        h_m = h_m + (avg - x_hat) / ratio
        return np.broadcast_to(avg, x_hat.shape).copy(), h_m, avg


def full_loss(host, x) -> float:
    """f(x) = mean_m Σ_i w_i log(1 + exp(-y_i a_iᵀx)) + l2/2 ||x||², in float64."""
    X, y, w = (host[k].astype(np.float64) for k in ("X", "y", "w"))
    x = np.asarray(x, np.float64)
    z = y * (X @ x)
    return float(np.mean(np.sum(w * np.logaddexp(0.0, -z), axis=1)) + 0.5 * L2 * x @ x)


def time_numpy(sim, method, hp, *, min_time, max_rounds, repeats) -> dict:
    """Best rounds/s over ``repeats`` blocks of rounds lasting ``min_time`` (or max_rounds)."""
    state = sim.init(np.zeros(sim.d, np.float32), method)
    state = sim.round(state, method, hp)  # warm-up
    best, total = 0.0, 1
    for _ in range(repeats):
        rounds, t0 = 0, time.perf_counter()
        while True:
            state = sim.round(state, method, hp)
            rounds += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time or rounds >= max_rounds:
                break
        total += rounds
        best = max(best, rounds / elapsed)
    return {"rounds_per_s": best, "rounds_timed": total, "x": sim.model(state, method)}


# ---------------------------------------------------------------------------------------------
# jaxdist.


def make_method(method: str, k: int, hp: dict, p: float | None = None):
    """The jaxdist method: an optax chain (per-step) or a round-based method."""
    if method == "dgd":
        return optax.chain(jaxdist.dgd(), optax.sgd(hp["dgd"]))
    if method == "dcgd_rand_k":
        return optax.chain(jaxdist.dcgd(rand_k(k)), optax.sgd(hp["dcgd_rand_k"]))
    if method == "diana_rand_k":
        return optax.chain(jaxdist.diana(rand_k(k), hp["alpha"]), optax.sgd(hp["diana_rand_k"]))
    if method == "local_gd":
        return jaxdist.methods.local_gd(hp["local_gd"], hp["H"])
    if method == "scaffnew":
        return jaxdist.methods.scaffnew(hp["scaffnew"], hp["p"] if p is None else p)
    raise ValueError(f"unknown method {method!r}")


def local_steps_per_round(method: str, hp: dict) -> int:
    """Local gradient steps per worker and round: H for local GD, 1 otherwise."""
    return int(hp["H"]) if method == "local_gd" else 1


def time_jax(problem, method, k, hp, num_steps, *, repeats, min_time) -> dict:
    tx = make_method(method, k, hp)

    def call(key):
        return jaxdist.run(tx, problem, num_steps, key, log_every=num_steps)

    t = time_fn(
        lambda key: call(key).loss, jax.random.key(SEED), repeats=repeats, min_time=min_time
    )
    trace = call(jax.random.key(SEED))
    return {
        "rounds_per_s": num_steps / t["time_s"],
        "call_s": t["time_s"],
        "compile_s": max(t["compile_s"] - t["time_s"], 0.0),
        "num_steps": num_steps,
        "loss_final": float(trace.loss[-1]),
        "comm_rounds": int(trace.rounds[-1]),
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


# Rounds of the NumPy-vs-jaxdist round check (local GD: H steps each).
CHECK_ROUNDS = {"local_gd": 3, "scaffnew_p1": 3, "scaffnew_replay": 12}


def jax_states(problem, method, num_rounds: int, key) -> dict:
    """Every worker's state (ledger dropped) after ``num_rounds`` rounds of a round-based
    ``method``, keys on the runner's path (round ``t`` gets ``fold_in(key, t)``)."""

    def per_worker(data_m, params, key):
        oracle = Oracle(loss=problem.loss, data=data_m)

        def body(state, t):
            return method.round(state, oracle, jax.random.fold_in(key, t))[0], None

        ts = jnp.arange(num_rounds, dtype=jnp.int32)
        state, _ = lax.scan(body, method.init(params), ts)
        return {name: v for name, v in state.items() if name != "ledger"}

    x0 = problem.init_params
    stacked = jnp.broadcast_to(x0, (problem.num_workers, *x0.shape))
    fn = comm.simulate(per_worker, problem.num_workers, in_axes=(0, 0, None))
    return jax.device_get(jax.jit(fn)(problem.data, stacked, key))


def jax_coins(key, p: float, num_rounds: int) -> list[bool]:
    """Scaffnew's coins of rounds 0..num_rounds-1 (``bernoulli_coin(fold_in(k_t, COIN), p)``)."""
    return [
        bool(bernoulli_coin(jax.random.fold_in(jax.random.fold_in(key, t), COIN), p))
        for t in range(num_rounds)
    ]


def _rel(a, b) -> float:
    """max |a − b| / max |b| (both cast to float64)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def round_check(problem, host, hp, k, *, loop: bool) -> dict:
    """The NumPy round-based rounds against jaxdist's, from x0 = 0 and the same keys.

    Local GD: ``CHECK_ROUNDS["local_gd"]`` rounds of H steps; the NumPy server model against
    jaxdist's ``x`` (every worker's copy). Scaffnew: 3 rounds at p = 1 (every round
    averages) and 12 rounds at p = ``CHECK_P`` with jaxdist's coins replayed in NumPy (both
    branches), comparing every worker's ``x_m`` and ``h_m`` and the last averaged model.
    Each check also compares ``jaxdist.run``'s loss after those rounds with the loss (float64)
    of the NumPy model. Returns the largest relative differences (``_rel``) per check and
    simulator, and the replayed coins' number of heads.
    """
    d = problem.dim
    key = jax.random.key(SEED)
    x0 = np.zeros(d, np.float32)
    sims = {"vec": VectorSim(host, d, k)}
    if loop:
        sims["loop"] = LoopSim(host, d, k)
    out: dict = {}
    cases = [
        ("local_gd", "local_gd", None, CHECK_ROUNDS["local_gd"]),
        ("scaffnew_p1", "scaffnew", 1.0, CHECK_ROUNDS["scaffnew_p1"]),
        ("scaffnew_replay", "scaffnew", CHECK_P, CHECK_ROUNDS["scaffnew_replay"]),
    ]
    for name, method, p, T in cases:
        jm = make_method(method, k, hp, p=p)
        ref = jax_states(problem, jm, T, key)
        run_loss = float(jaxdist.run(jm, problem, T, key, log_every=T).loss[-1])
        nhp = np_hyper(hp, method, p=p)
        coins = jax_coins(key, nhp["p"], T) if method == "scaffnew" else None
        if coins is not None:
            out[f"{name}_heads"] = f"{sum(coins)}/{T}"
        for sim_name, sim in sims.items():
            if coins is not None:
                sim.replay_coins(coins)
            state = sim.init(x0, method)
            for _ in range(T):
                state = sim.round(state, method, nhp)
            sim.replay_coins(None)
            if method == "local_gd":
                err = _rel(state[0], ref["x"][0])
                err = max(err, _rel(np.broadcast_to(state[0], ref["x"].shape), ref["x"]))
            else:
                err = max(
                    _rel(state[0], ref["x"]),
                    _rel(state[1], ref["h"]),
                    _rel(state[2], ref["server"][0]),
                )
            out[f"{name}_{sim_name}"] = err
            loss_np = full_loss(host, sim.model(state, method))
            out[f"{name}_{sim_name}_loss"] = abs(loss_np - run_loss) / abs(run_loss)
    return out


# ---------------------------------------------------------------------------------------------
# Driver.


def bench_m(M, X, y, *, quick, loop_rounds, repeats, methods=METHODS + ROUND_METHODS) -> list[dict]:
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
    checks = {}
    if any(m in ROUND_METHODS for m in methods):
        t0 = time.perf_counter()
        checks = round_check(problem, host, hp, k, loop=M <= 1000)
        print(f"   round check ({time.perf_counter() - t0:.1f}s): {_fmt_check(checks)}", flush=True)
    rows = []
    loop = LoopSim(host, d, k)
    vec = VectorSim(host, d, k)
    # The loop's round costs ~25-50 us per worker: time a bounded number of rounds.
    loop_max = max(1, (loop_rounds * 1000) // M // repeats) if M >= 1000 else 200
    for method in methods:
        nhp = np_hyper(hp, method)
        per_round = local_steps_per_round(method, hp)
        # About the same work per call as the per-step methods: H local steps per round.
        n_rounds = max(1, steps // per_round)
        jx = time_jax(problem, method, k, hp, n_rounds, repeats=repeats, min_time=min_time)
        lp = time_numpy(
            loop, method, nhp, min_time=min_time / 2, max_rounds=loop_max, repeats=repeats
        )
        vc = time_numpy(
            vec, method, nhp, min_time=min_time / 2, max_rounds=10**6, repeats=2 * repeats
        )
        row = {
            "M": M,
            "d": d,
            "k": k,
            "method": method,
            "group": "round" if method in ROUND_METHODS else "per_step",
            "local_steps_per_round": per_round,
            "jax_rounds_per_s": jx["rounds_per_s"],
            "jax_local_steps_per_s": jx["rounds_per_s"] * per_round,
            "jax_compile_s": jx["compile_s"],
            "jax_steps_per_call": n_rounds,
            "jax_loss_final": jx["loss_final"],
            "jax_comm_rounds": jx["comm_rounds"],
            "loop_rounds_per_s": lp["rounds_per_s"],
            "loop_rounds_timed": lp["rounds_timed"],
            "vec_rounds_per_s": vc["rounds_per_s"],
            "vec_rounds_timed": vc["rounds_timed"],
            "vec_reduction": vec.reduction,
            "vec_matvec": vec.matvec,
            "vec_loss_after_timing": full_loss(host, vc["x"]),
            "speedup_vs_loop": jx["rounds_per_s"] / lp["rounds_per_s"],
            "speedup_vs_vec": jx["rounds_per_s"] / vc["rounds_per_s"],
            "lr": hp[method],
            "grad_check": check,
            "load_avg_1min": os.getloadavg()[0],
        }
        if method == "local_gd":
            row["H"] = hp["H"]
        if method == "scaffnew":
            row["p"] = hp["p"]
        if method in ROUND_METHODS:
            row["round_check"] = {c: v for c, v in checks.items() if c.startswith(method)}
        rows.append(row)
    dgd = [r["jax_rounds_per_s"] for r in rows if r["method"] == "dgd"]
    for row in rows:
        # Time of one local step (a round of a per-step method) over one DGD round.
        row["time_vs_uncompressed"] = dgd[0] / row["jax_local_steps_per_s"] if dgd else None
        print(_fmt(row), flush=True)
    return rows


def _fmt_check(checks: dict) -> str:
    return ", ".join(
        f"{name} {value:.1e}" if isinstance(value, float) else f"{name} {value}"
        for name, value in checks.items()
    )


HEADER = (
    f"{'M':>6s} {'method':13s} {'jax r/s':>9s} {'steps/s':>9s} {'compile':>8s} "
    f"{'loop r/s':>9s} {'vec r/s':>9s} {'x loop':>8s} {'x vec':>7s} {'t/t_dgd':>7s} "
    f"{'loop n':>6s} {'load':>5s}"
)


def _fmt(row: dict) -> str:
    rel = row.get("time_vs_uncompressed")
    rel = f"{rel:7.2f}" if rel is not None else f"{'-':>7s}"
    return (
        f"{row['M']:6d} {row['method']:13s} {row['jax_rounds_per_s']:9.1f} "
        f"{row['jax_local_steps_per_s']:9.1f} "
        f"{row['jax_compile_s']:7.2f}s {row['loop_rounds_per_s']:9.2f} "
        f"{row['vec_rounds_per_s']:9.1f} {row['speedup_vs_loop']:7.1f}x "
        f"{row['speedup_vs_vec']:6.2f}x {rel} "
        f"{row['loop_rounds_timed']:6d} {row['load_avg_1min']:5.1f}"
    )


def check_targets(rows: list[dict], M: int = 1000) -> list[str]:
    misses = []
    for r in rows:
        if r["M"] != M or r["method"] not in METHODS[1:]:
            continue
        if r["speedup_vs_loop"] < 50:
            misses.append(f"{r['method']} at M={M}: {r['speedup_vs_loop']:.1f}x the loop (< 50x)")
        if r["speedup_vs_vec"] < 3:
            misses.append(
                f"{r['method']} at M={M}: {r['speedup_vs_vec']:.2f}x the vectorized NumPy (< 3x)"
            )
        if r["time_vs_uncompressed"] is not None and r["time_vs_uncompressed"] > 2:
            misses.append(
                f"{r['method']} at M={M}: a round costs {r['time_vs_uncompressed']:.2f}x the "
                "uncompressed DGD round (> 2x)"
            )
    return misses


def check_failures(rows: list[dict], tol: float = CHECK_TOL) -> list[str]:
    """Round checks (NumPy vs jaxdist) whose relative difference exceeds ``tol``."""
    bad = []
    for r in rows:
        for name, value in r.get("round_check", {}).items():
            if isinstance(value, float) and not value <= tol:
                bad.append(f"M={r['M']} {name}: {value:.2e} > {tol:.0e}")
    return bad


def parse_methods(text: str) -> tuple[str, ...]:
    """``--methods``: comma-separated groups (per_step, round) and/or method names."""
    chosen: list[str] = []
    for item in (t.strip() for t in text.split(",")):
        names = GROUPS.get(item, (item,) if item in METHODS + ROUND_METHODS else None)
        if names is None:
            raise SystemExit(
                f"--methods: unknown {item!r}; use groups {', '.join(GROUPS)} or methods "
                f"{', '.join(METHODS + ROUND_METHODS)}"
            )
        chosen += [n for n in names if n not in chosen]
    # DGD first: the other rows' t/t_dgd needs it.
    return tuple(sorted(chosen, key=(METHODS + ROUND_METHODS).index))


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
    parser.add_argument(
        "--methods",
        default="per_step,round",
        help="comma-separated method groups (per_step: dgd, dcgd_rand_k, diana_rand_k; "
        "round: local_gd, scaffnew) or method names",
    )
    parser.add_argument("--out", default=None, help="JSON output path")
    args = parser.parse_args(argv)
    methods = parse_methods(args.methods)
    default_workers = [10, 1000] if args.quick else [10, 100, 1000, 10000]
    workers = args.workers or default_workers
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
            M,
            X,
            y,
            quick=args.quick,
            loop_rounds=args.loop_rounds,
            repeats=args.repeats,
            methods=methods,
        )
    wall = time.perf_counter() - t_start
    print(HEADER)
    for row in rows:
        print(_fmt(row))
    # A restricted run (other M or methods) gets its own file: it must not replace the full table.
    suffix = "_quick" if args.quick else ""
    if methods != METHODS + ROUND_METHODS:
        suffix += "_" + "-".join(
            g if set(GROUPS[g]) <= set(methods) else "-".join(m for m in GROUPS[g] if m in methods)
            for g in GROUPS
            if set(GROUPS[g]) & set(methods)
        )
    if workers != default_workers:
        suffix += "_M" + "-".join(str(m) for m in workers)
    out = args.out or os.path.join(
        os.path.dirname(__file__), "results", f"simulation_{jax.devices()[0].platform}{suffix}.json"
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
        "methods": list(methods),
        "local_steps": LOCAL_STEPS,
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "wall_s": wall,
        "dataset": "mushrooms (d = 112 + bias, 8124 samples), l2 = 1e-3, float32",
        "notes": (
            "jax rounds/s: num_steps / (time of one jaxdist.run call, best of repeats), "
            "compile_s: first call minus a timed call. loop/vec: best rounds/s over blocks of "
            "rounds (loop_rounds_timed rounds in total). local_steps_per_s: rounds/s times "
            "the local gradient steps per round (H for local GD, 1 otherwise). "
            "time_vs_uncompressed: jaxdist time per local step (per round for per-step "
            "methods) over jaxdist DGD's round at the same M (null without DGD). round_check: "
            "max relative difference of the NumPy round-based models (and of their loss) from "
            "jaxdist's after a few rounds from x0 = 0 with the same keys (Scaffnew: p = 1, and "
            "jaxdist's coins replayed at p = 0.5). load_avg_1min: 1-minute load average "
            "when the row was measured (shared machine)."
        ),
    }
    with open(out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"wrote {out} ({wall:.0f}s)")
    if 1000 in workers:
        for miss in check_targets(rows):
            print(f"MISS: {miss}")
    failures = check_failures(rows)
    for failure in failures:
        print(f"CHECK FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
