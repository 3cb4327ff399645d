"""NumPy reference implementations of the per-step methods, written from the papers' updates.

Each function runs a *real* loop over workers ``m = 0..M-1`` in float64 NumPy, in model space
with step size ``gamma`` (the form the papers write), and returns the trajectory
``x^0, ..., x^T`` as an array of shape ``(T + 1, d)``. They share no code with
``jaxdist.methods``. The update rules follow THEORY.md §2 (the section is named on each
function).

Compressors are callbacks ``compress(v, m, t, link)``: ``v`` the vector, ``m`` the worker
index (``None`` for the server), ``t`` the step counter of the jaxdist transformation at which
the message is sent (its ``state.count``), ``link`` ``"up"`` or ``"down"``. A deterministic
compressor (:func:`top_k`) ignores ``m, t, link``; a random one can reproduce jaxdist's key
schedule (see ``tests/test_methods.py``). ``grads(x)`` returns the ``(M, d)`` worker gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Grads = Callable[[np.ndarray], np.ndarray]
Compress = Callable[[np.ndarray, int | None, int, str], np.ndarray]


def top_k(v: np.ndarray, k: int) -> np.ndarray:
    """Keeps the ``k`` entries of largest magnitude (ties: the lower index wins)."""
    v = np.asarray(v, dtype=np.float64)
    order = sorted(range(v.size), key=lambda i: (-abs(v[i]), i))
    out = np.zeros_like(v)
    keep = order[:k]
    out[keep] = v[keep]
    return out


def identity(v: np.ndarray) -> np.ndarray:
    return np.array(v, dtype=np.float64)


def quadratic_grads(A: np.ndarray, b: np.ndarray) -> Grads:
    """``∇f_m(x) = A_m x − b_m`` for f_m = ½xᵀA_m x − b_mᵀx (A_m symmetric)."""
    A = np.asarray(A, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return lambda x: np.einsum("mij,j->mi", A, x) - b


def _mean(rows: list[np.ndarray]) -> np.ndarray:
    total = np.zeros_like(rows[0])
    for r in rows:
        total = total + r
    return total / len(rows)


def gd(grads: Grads, x0, gamma: float, T: int) -> np.ndarray:
    """Distributed GD (§2.1): x ← x − γ (1/M) Σ_m ∇f_m(x)."""
    x = np.array(x0, dtype=np.float64)
    traj = [x.copy()]
    for _ in range(T):
        G = grads(x)
        x = x - gamma * _mean([G[m] for m in range(G.shape[0])])
        traj.append(x.copy())
    return np.stack(traj)


def dcgd(grads: Grads, x0, gamma: float, T: int, compress: Compress, down=None) -> np.ndarray:
    """DCGD (§2.2): x ← x − γ (1/M) Σ_m C_m(∇f_m(x)); with ``down``, the server compresses the
    mean before broadcasting (bidirectional, §2.7, Horváth et al. Thm 9)."""
    x = np.array(x0, dtype=np.float64)
    traj = [x.copy()]
    for t in range(T):
        G = grads(x)
        g = _mean([compress(G[m], m, t, "up") for m in range(G.shape[0])])
        if down is not None:
            g = down(g, None, t, "down")
        x = x - gamma * g
        traj.append(x.copy())
    return np.stack(traj)


def diana(
    grads: Grads, x0, gamma: float, T: int, compress: Compress, alpha: float, down=None
) -> np.ndarray:
    """DIANA (§2.3): Δ_m = C_m(∇f_m(x) − h_m), g = h + mean Δ_m, x ← x − γg,
    h_m ← h_m + αΔ_m, h ← h + α mean Δ_m; shifts start at 0. With ``down`` the server
    broadcasts C_down(g) and the workers step on it (bidirectional, §2.7)."""
    x = np.array(x0, dtype=np.float64)
    M = grads(x).shape[0]
    h_m = [np.zeros_like(x) for _ in range(M)]
    h = np.zeros_like(x)
    traj = [x.copy()]
    for t in range(T):
        G = grads(x)
        deltas = [compress(G[m] - h_m[m], m, t, "up") for m in range(M)]
        mean_delta = _mean(deltas)
        g = h + mean_delta
        if down is not None:
            g = down(g, None, t, "down")
        for m in range(M):
            h_m[m] = h_m[m] + alpha * deltas[m]
        h = h + alpha * mean_delta
        x = x - gamma * g
        traj.append(x.copy())
    return np.stack(traj)


def ef14(grads: Grads, x0, gamma: float, T: int, compress: Compress) -> np.ndarray:
    """EF14 (§2.5, the γ-scaled form of the papers): p_m = γ∇f_m(x) + e_m, Δ_m = C(p_m),
    x ← x − mean Δ_m, e_m ← p_m − Δ_m, e_m^0 = 0."""
    x = np.array(x0, dtype=np.float64)
    M = grads(x).shape[0]
    e = [np.zeros_like(x) for _ in range(M)]
    traj = [x.copy()]
    for t in range(T):
        G = grads(x)
        p = [gamma * G[m] + e[m] for m in range(M)]
        deltas = [compress(p[m], m, t, "up") for m in range(M)]
        e = [p[m] - deltas[m] for m in range(M)]
        x = x - _mean(deltas)
        traj.append(x.copy())
    return np.stack(traj)


def ef21(grads: Grads, x0, gamma: float, T: int, compress: Compress) -> np.ndarray:
    """EF21 (§2.6, poster Alg. 1): g_m^0 = C(∇f_m(x^0)), g^0 = mean g_m^0; then
    x^{t+1} = x^t − γg^t, c_m = C(∇f_m(x^{t+1}) − g_m^t), g_m += c_m, g += mean c_m."""
    x = np.array(x0, dtype=np.float64)
    G = grads(x)
    M = G.shape[0]
    g_m = [compress(G[m], m, 0, "up") for m in range(M)]
    g = _mean(g_m)
    traj = [x.copy()]
    for t in range(1, T + 1):
        x = x - gamma * g
        traj.append(x.copy())
        if t == T:
            break
        G = grads(x)
        c = [compress(G[m] - g_m[m], m, t, "up") for m in range(M)]
        g_m = [g_m[m] + c[m] for m in range(M)]
        g = g + _mean(c)
    return np.stack(traj)


def marina(
    grads: Grads, x0, gamma: float, T: int, compress: Compress, coin: Callable[[int], bool]
) -> np.ndarray:
    """MARINA (§2.4): g^0 = ∇f(x^0); x^{k+1} = x^k − γg^k; if c_{k+1} (``coin(k+1)``):
    g^{k+1} = ∇f(x^{k+1}), else g^{k+1} = g^k + mean_m C_m(∇f_m(x^{k+1}) − ∇f_m(x^k))."""
    x = np.array(x0, dtype=np.float64)
    G = grads(x)
    M = G.shape[0]
    g = _mean([G[m] for m in range(M)])
    traj = [x.copy()]
    for k in range(1, T + 1):
        x = x - gamma * g
        traj.append(x.copy())
        if k == T:
            break
        G_new = grads(x)
        if coin(k):
            g = _mean([G_new[m] for m in range(M)])
        else:
            g = g + _mean([compress(G_new[m] - G[m], m, k, "up") for m in range(M)])
        G = G_new
    return np.stack(traj)


def ef21_p(
    grads: Grads,
    x0,
    gamma: float,
    T: int,
    compress_up: Compress,
    compress_down: Compress,
    alpha: float,
) -> np.ndarray:
    """EF21-P + DIANA (§2.7): workers evaluate at w^t; DIANA gives g^t; server
    x^{t+1} = x^t − γg^t; w^{t+1} = w^t + C_P(x^{t+1} − w^t); w^0 = x^0.
    Returns the workers' models w^0..w^T."""
    w = np.array(x0, dtype=np.float64)
    x = w.copy()
    M = grads(w).shape[0]
    h_m = [np.zeros_like(w) for _ in range(M)]
    h = np.zeros_like(w)
    traj = [w.copy()]
    for t in range(T):
        G = grads(w)
        deltas = [compress_up(G[m] - h_m[m], m, t, "up") for m in range(M)]
        mean_delta = _mean(deltas)
        g = h + mean_delta
        for m in range(M):
            h_m[m] = h_m[m] + alpha * deltas[m]
        h = h + alpha * mean_delta
        x = x - gamma * g
        w = w + compress_down(x - w, None, t, "down")
        traj.append(w.copy())
    return np.stack(traj)
