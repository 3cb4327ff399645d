"""Step sizes, rates and communication-cost models from THEORY.md, as plain functions.

Every function takes numbers (Python floats or NumPy arrays, broadcast elementwise) and returns a
``float`` for scalar input, an ``np.ndarray`` otherwise. Arguments are validated (``ValueError``
naming the parameter and its bound). Each docstring cites the section of THEORY.md it implements
and the status tag given there:

* **[V-src]** checked against a primary or near-primary source;
* **[V-sec]** checked against a secondary source (notes, reference code);
* **[V-der]** derived in THEORY.md (``+MC``: also checked numerically);
* **[UNVERIFIED]** recalled from the paper; indicative only.

arXiv ids marked "(id unconfirmed)" are named by THEORY.md but were not checked against a source.

Notation (THEORY.md): M workers, f = (1/M) Σ f_m, L-smooth and μ-strongly convex, f_m
L_m-smooth, L_max = max L_m, L̃ = sqrt(mean L_m²), σ*² = (1/M) Σ ||∇f_m(x*)||², ω the variance
of an unbiased compressor U(ω), α the parameter of a contractive compressor B(α).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    # generic
    "rounds_to_accuracy",
    "nonconvex_gradient_bound",
    # GD and Nesterov
    "gd_stepsize",
    "gd_rate",
    "nesterov_stepsize",
    "nesterov_momentum",
    "nesterov_rate",
    # DCGD
    "dcgd_stepsize",
    "dcgd_rate",
    "dcgd_neighborhood",
    "dcgd_one_step_variance",
    # DIANA
    "diana_alpha",
    "diana_stepsize",
    "diana_rate",
    "diana_lyapunov_weight",
    # MARINA
    "marina_probability",
    "marina_stepsize",
    "marina_ab_stepsize",
    # EF21
    "ef21_constants",
    "ef21_stepsize",
    "ef21_rate",
    "ef21_gradient_bound",
    # local steps
    "local_gd_round_map",
    "local_gd_fixed_point",
    "scaffnew_stepsize",
    "scaffnew_probability",
    "scaffnew_rate",
    "scaffnew_lyapunov_weight",
    # similarity
    "bregman_constants",
    "bregman_rate",
    "spag_rate",
    "dane_quadratic_contraction",
    "aeg_sliding_parameters",
    "similarity_bound",
    # communication cost models
    "p2p_time",
    "allreduce_time",
    "reduce_scatter_time",
    "allgather_time",
    "parameter_server_time",
    "all_to_all_time",
    "perm_k_time",
    "sparse_allgather_time",
]

ArrayLike = Any


# ---------------------------------------------------------------------------------------------
# Validation helpers.


def _arr(name: str, v: Any) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a number or an array of numbers, got {v!r}") from e
    if np.any(np.isnan(a)):
        raise ValueError(f"{name} must not be NaN, got {name}={v!r}")
    return a


def _pos(name: str, v: Any) -> np.ndarray:
    a = _arr(name, v)
    if np.any(a <= 0):
        raise ValueError(f"{name} must be > 0, got {name}={v!r}")
    return a


def _nonneg(name: str, v: Any) -> np.ndarray:
    a = _arr(name, v)
    if np.any(a < 0):
        raise ValueError(f"{name} must be >= 0, got {name}={v!r}")
    return a


def _unit(name: str, v: Any) -> np.ndarray:
    a = _arr(name, v)
    if np.any((a <= 0) | (a > 1)):
        raise ValueError(f"{name} must be in (0, 1], got {name}={v!r}")
    return a


def _workers(name: str, v: Any) -> np.ndarray:
    a = _arr(name, v)
    if np.any(a < 1):
        raise ValueError(f"{name} must be >= 1, got {name}={v!r}")
    return a


def _mu_le_L(mu: np.ndarray, L: np.ndarray) -> None:
    if np.any(mu > L):
        raise ValueError(f"mu must be <= L, got mu={mu} > L={L}")


def _refs(text: str):
    """Appends a shared References section to a docstring (no-op under ``python -OO``)."""

    def wrap(fn):
        if fn.__doc__:
            fn.__doc__ = fn.__doc__.rstrip() + "\n" + text.rstrip() + "\n    "
        return fn

    return wrap


def _out(a: Any) -> float | np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return float(a) if a.ndim == 0 else a


# ---------------------------------------------------------------------------------------------
# Generic.


def rounds_to_accuracy(rate: ArrayLike, eps: ArrayLike) -> int | np.ndarray:
    """Smallest k with ``rate**k <= eps``: rounds for a linear rate to shrink a quantity by eps.

    Args:
      rate: contraction factor in [0, 1).
      eps: relative accuracy in (0, 1].

    Returns:
      ``ceil(log(eps) / log(rate))`` (0 if eps = 1, 1 if rate = 0), as an int for scalar input.
    """
    r = _arr("rate", rate)
    if np.any((r < 0) | (r >= 1)):
        raise ValueError(f"rate must be in [0, 1), got rate={rate!r}")
    e = _unit("eps", eps)
    with np.errstate(divide="ignore"):
        k = np.where(e >= 1, 0.0, np.where(r == 0, 1.0, np.ceil(np.log(e) / np.log(r))))
    return int(k) if k.ndim == 0 else k.astype(np.int64)


def nonconvex_gradient_bound(delta0: ArrayLike, gamma: ArrayLike, T: ArrayLike):
    """2Δ0/(γT): bound on min_k ||∇f(x^k)||² (or the average) after T steps.

    THEORY.md §2.1 (GD with γ = 1/L: 2LΔ0/T) and §2.4 (MARINA, with γ from
    :func:`marina_stepsize`). [standard; MARINA: V-sec]

    Args:
      delta0: f(x^0) − f^inf >= 0.
      gamma: step size > 0.
      T: number of iterations >= 1.

    Returns:
      The bound 2Δ0/(γT).
    """
    return _out(2.0 * _nonneg("delta0", delta0) / (_pos("gamma", gamma) * _workers("T", T)))


# ---------------------------------------------------------------------------------------------
# GD and Nesterov (THEORY.md §2.1).


def gd_stepsize(L: ArrayLike):
    """Gradient descent step size γ = 1/L. THEORY.md §2.1 [standard].

    Args:
      L: smoothness constant of f, > 0.

    Returns:
      1/L.
    """
    return _out(1.0 / _pos("L", L))


def gd_rate(L: ArrayLike, mu: ArrayLike, gamma: ArrayLike | None = None):
    """Contraction of ||x^k − x*||² per GD step: 1 − γμ for 0 < γ <= 1/L. THEORY.md §2.1.

    With γ = 1/L this is 1 − μ/L, i.e. O(κ log 1/ε) rounds. [standard]

    Args:
      L: smoothness constant, > 0.
      mu: strong convexity constant, 0 < mu <= L.
      gamma: step size in (0, 1/L]; default 1/L.

    Returns:
      1 − γμ.
    """
    L, mu = _pos("L", L), _pos("mu", mu)
    _mu_le_L(mu, L)
    g = 1.0 / L if gamma is None else _pos("gamma", gamma)
    if np.any(g > 1.0 / L * (1 + 1e-12)):
        raise ValueError(f"gamma must be <= 1/L = {1.0 / L}, got gamma={gamma!r}")
    return _out(1.0 - g * mu)


def nesterov_stepsize(L: ArrayLike):
    """Nesterov's accelerated GD step size 1/L. THEORY.md §2.1 [Nesterov 2004, Thm 2.2.3; standard].

    Args:
      L: smoothness constant, > 0.

    Returns:
      1/L.
    """
    return _out(1.0 / _pos("L", L))


def nesterov_momentum(L: ArrayLike, mu: ArrayLike):
    """Momentum (sqrt κ − 1)/(sqrt κ + 1), κ = L/μ. THEORY.md §2.1 [standard, not re-read].

    Args:
      L: smoothness constant, > 0.
      mu: strong convexity constant, 0 < mu <= L.

    Returns:
      (sqrt κ − 1)/(sqrt κ + 1).
    """
    L, mu = _pos("L", L), _pos("mu", mu)
    _mu_le_L(mu, L)
    sk = np.sqrt(L / mu)
    return _out((sk - 1.0) / (sk + 1.0))


def nesterov_rate(L: ArrayLike, mu: ArrayLike):
    """Rate 1 − 1/sqrt κ of f(x^k) − f* + (μ/2)||x^k − x*||² for Nesterov's method.

    THEORY.md §2.1 [Nesterov 2004, Thm 2.2.3; standard, not re-read]: O(sqrt κ log 1/ε) rounds.

    Args:
      L: smoothness constant, > 0.
      mu: strong convexity constant, 0 < mu <= L.

    Returns:
      1 − sqrt(μ/L).
    """
    L, mu = _pos("L", L), _pos("mu", mu)
    _mu_le_L(mu, L)
    return _out(1.0 - np.sqrt(mu / L))


# ---------------------------------------------------------------------------------------------
# DCGD (THEORY.md §2.2).


def dcgd_stepsize(L: ArrayLike, L_max: ArrayLike, omega: ArrayLike, M: ArrayLike):
    """DCGD step size γ = 1/(L + 2ωL_max/M) (independent unbiased C_m ∈ U(ω)).

    THEORY.md §2.2, theorem [V-der] (expected smoothness A = L + 2ωL_max/M; unified SGD theory of
    Gorbunov, Hanzely, Richtárik 2020, https://arxiv.org/abs/1905.11261, id unconfirmed).
    Example: the §3 counterexample with Rand-1 (ω = 2) gives γ = 0.01583.

    Args:
      L: smoothness of f, > 0.
      L_max: max_m L_m, > 0.
      omega: compressor variance ω >= 0.
      M: number of workers >= 1.

    Returns:
      1/(L + 2ωL_max/M).

    References:
      Khirirat, Feyzmahdavian, Johansson 2018; Alistarh et al., `QSGD
      <https://arxiv.org/abs/1610.02132>`_, 2017.
    """
    L, Lm, w, M = _pos("L", L), _pos("L_max", L_max), _nonneg("omega", omega), _workers("M", M)
    return _out(1.0 / (L + 2.0 * w * Lm / M))


def dcgd_rate(gamma: ArrayLike, mu: ArrayLike):
    """DCGD contraction 1 − γμ of E||x^k − x*||² (up to the neighbourhood). THEORY.md §2.2 [V-der].

    Args:
      gamma: step size, 0 < γ <= :func:`dcgd_stepsize`.
      mu: strong convexity of f, > 0.

    Returns:
      1 − γμ.
    """
    return _out(1.0 - _pos("gamma", gamma) * _pos("mu", mu))


def dcgd_neighborhood(
    gamma: ArrayLike, omega: ArrayLike, sigma_star_sq: ArrayLike, mu: ArrayLike, M: ArrayLike
):
    """Radius 2γωσ*²/(μM) of DCGD's neighbourhood in E||x^k − x*||². THEORY.md §2.2 [V-der].

    E||x^k − x*||² <= (1 − γμ)^k ||x^0 − x*||² + 2γωσ*²/(μM) for γ <= 1/(L + 2ωL_max/M).

    Args:
      gamma: step size > 0.
      omega: compressor variance ω >= 0.
      sigma_star_sq: σ*² = (1/M) Σ ||∇f_m(x*)||² >= 0.
      mu: strong convexity of f, > 0.
      M: number of workers >= 1.

    Returns:
      2γωσ*²/(μM).
    """
    g, w = _pos("gamma", gamma), _nonneg("omega", omega)
    s, mu, M = _nonneg("sigma_star_sq", sigma_star_sq), _pos("mu", mu), _workers("M", M)
    return _out(2.0 * g * w * s / (mu * M))


def dcgd_one_step_variance(
    gamma: ArrayLike, omega: ArrayLike, sigma_star_sq: ArrayLike, M: ArrayLike
):
    """E||x^1 − x*||² = γ²ωσ*²/M for one DCGD step started at x* with Rand-K (E||C(x)||² exact).

    THEORY.md §2.2 [V-der+MC]: the neighbourhood is real (lower bound on the stationary error).

    Args:
      gamma: step size > 0.
      omega: Rand-K variance ω = d/K − 1 >= 0.
      sigma_star_sq: σ*² >= 0.
      M: number of workers >= 1.

    Returns:
      γ²ωσ*²/M.
    """
    g, w = _pos("gamma", gamma), _nonneg("omega", omega)
    return _out(g**2 * w * _nonneg("sigma_star_sq", sigma_star_sq) / _workers("M", M))


# ---------------------------------------------------------------------------------------------
# DIANA (THEORY.md §2.3).

_DIANA_REFS = """
    References:
      Mishchenko, Gorbunov, Takáč, Richtárik, `Distributed learning with compressed gradient
      differences <https://arxiv.org/abs/1901.09269>`_, 2019 (id unconfirmed); Horváth,
      Kovalev, Mishchenko, Stich, Richtárik, `Stochastic distributed learning with gradient
      quantization and variance reduction <https://arxiv.org/abs/1904.05115>`_, 2019 (id
      unconfirmed).
"""


@_refs(_DIANA_REFS)
def diana_alpha(omega: ArrayLike):
    """DIANA shift step α = 1/(ω+1) (any α <= 1/(ω+1) works). THEORY.md §2.3 [V-der, V-sec code].

    Args:
      omega: compressor variance ω >= 0.

    Returns:
      1/(ω+1).
    """
    return _out(1.0 / (_nonneg("omega", omega) + 1.0))


@_refs(_DIANA_REFS)
def diana_stepsize(L: ArrayLike, L_max: ArrayLike, omega: ArrayLike, M: ArrayLike):
    """DIANA step size γ = 1/(L + 6ωL_max/M). THEORY.md §2.3 [V-der; V-sec DIANA-RR code].

    Args:
      L: smoothness of f, > 0.
      L_max: max_m L_m, > 0.
      omega: compressor variance ω >= 0.
      M: number of workers >= 1.

    Returns:
      1/(L + 6ωL_max/M).
    """
    L, Lm, w, M = _pos("L", L), _pos("L_max", L_max), _nonneg("omega", omega), _workers("M", M)
    return _out(1.0 / (L + 6.0 * w * Lm / M))


@_refs(_DIANA_REFS)
def diana_rate(gamma: ArrayLike, mu: ArrayLike, alpha: ArrayLike):
    """DIANA's linear rate max{1 − γμ, 1 − α/2} of the Lyapunov function Ψ^k.

    THEORY.md §2.3 [V-src abstract of 1904.05115 for the complexity O((κ(1 + ω/M) + ω) log 1/ε);
    V-der for the constants]. Ψ^k = ||x^k − x*||² + (4ωγ²/(αM))(1/M) Σ ||h_m^k − ∇f_m(x*)||²
    (see :func:`diana_lyapunov_weight`).

    Args:
      gamma: step size, 0 < γ <= :func:`diana_stepsize`.
      mu: strong convexity of f, > 0.
      alpha: shift step in (0, 1/(ω+1)].

    Returns:
      max(1 − γμ, 1 − α/2).
    """
    g, mu, a = _pos("gamma", gamma), _pos("mu", mu), _unit("alpha", alpha)
    return _out(np.maximum(1.0 - g * mu, 1.0 - a / 2.0))


def diana_lyapunov_weight(gamma: ArrayLike, omega: ArrayLike, alpha: ArrayLike, M: ArrayLike):
    """The weight 4ωγ²/(αM) of the shift error in DIANA's Lyapunov function. THEORY.md §2.3 [V-der].

    Args:
      gamma: step size > 0.
      omega: compressor variance ω >= 0.
      alpha: shift step in (0, 1].
      M: number of workers >= 1.

    Returns:
      4ωγ²/(αM).
    """
    g, w = _pos("gamma", gamma), _nonneg("omega", omega)
    return _out(4.0 * w * g**2 / (_unit("alpha", alpha) * _workers("M", M)))


# ---------------------------------------------------------------------------------------------
# MARINA (THEORY.md §2.4).

_MARINA_REFS = """
    References:
      Gorbunov, Burlachenko, Li, Richtárik, `MARINA: faster non-convex distributed learning
      with compression <https://arxiv.org/abs/2102.07845>`_, 2021 (id unconfirmed).
"""


@_refs(_MARINA_REFS)
def marina_probability(omega: ArrayLike):
    """MARINA's synchronisation probability p = 1/(ω+1). THEORY.md §2.4 [V-sec].

    Args:
      omega: compressor variance ω >= 0.

    Returns:
      1/(ω+1).
    """
    return _out(1.0 / (_nonneg("omega", omega) + 1.0))


@_refs(_MARINA_REFS)
def marina_stepsize(L: ArrayLike, L_tilde: ArrayLike, omega: ArrayLike, p: ArrayLike, M: ArrayLike):
    """MARINA step size γ = 1/(L + L̃ sqrt((1 − p)ω/(pM))), independent C_m ∈ U(ω).

    THEORY.md §2.4 [V-sec: 3PC code ``L_0 + Lt*sqrt(((1-p)/p)*A_st)`` with A_st = ω/M; the paper's
    form with L̃ = L is 1/(L(1 + sqrt((1−p)ω/(pM)))); theorem number UNVERIFIED]. Nonconvex
    guarantee E||∇f(x̂^K)||² <= 2Δ0/(γK) (:func:`nonconvex_gradient_bound`).

    Args:
      L: smoothness of f, > 0.
      L_tilde: L̃ = sqrt(mean L_m²), > 0.
      omega: compressor variance ω >= 0.
      p: synchronisation probability in (0, 1].
      M: number of workers >= 1.

    Returns:
      1/(L + L̃ sqrt((1 − p)ω/(pM))).
    """
    L, Lt = _pos("L", L), _pos("L_tilde", L_tilde)
    w, p, M = _nonneg("omega", omega), _unit("p", p), _workers("M", M)
    return _out(1.0 / (L + Lt * np.sqrt((1.0 - p) * w / (p * M))))


def marina_ab_stepsize(
    L: ArrayLike, L_tilde: ArrayLike, L_pm: ArrayLike, A: ArrayLike, B: ArrayLike, p: ArrayLike
):
    """MARINA step size under the AB inequality: 1/(L + sqrt(((1−p)/p)((A − B)L̃² + B L_±²))).

    THEORY.md §2.4, general AB form of Szlendak, Tyurin, Richtárik 2021 [V-der; V-sec code].
    Perm-K (d >= M) has A = B = 1, so γ = 1/(L + sqrt((1−p)/p) L_±); independent U(ω)
    compressors have A = ω/M, B = 0 (recovering :func:`marina_stepsize`). L_±² is the Hessian
    variance (``Problem.L_pm`` for quadratics).

    Args:
      L: smoothness of f, > 0.
      L_tilde: L̃ = sqrt(mean L_m²), > 0.
      L_pm: Hessian variance L_± >= 0.
      A: AB constant A >= B.
      B: AB constant B >= 0.
      p: synchronisation probability in (0, 1].

    Returns:
      1/(L + sqrt(((1 − p)/p)((A − B)L̃² + B L_±²))).

    References:
      Szlendak, Tyurin, Richtárik, `Permutation compressors for provably faster distributed
      nonconvex optimization <https://arxiv.org/abs/2110.03300>`_, 2021 (id unconfirmed).
    """
    L, Lt, Lpm = _pos("L", L), _pos("L_tilde", L_tilde), _nonneg("L_pm", L_pm)
    A, B, p = _nonneg("A", A), _nonneg("B", B), _unit("p", p)
    if np.any(A < B):
        raise ValueError(f"A must be >= B, got A={A} < B={B}")
    return _out(1.0 / (L + np.sqrt((1.0 - p) / p * ((A - B) * Lt**2 + B * Lpm**2))))


# ---------------------------------------------------------------------------------------------
# EF21 (THEORY.md §2.6).

_EF21_REFS = """
    References:
      Richtárik, Sokolov, Fatkhullin, `EF21: a new, simpler, theoretically better, and
      practically faster error feedback <https://arxiv.org/abs/2106.05203>`_, 2021.
"""


@_refs(_EF21_REFS)
def ef21_constants(alpha: ArrayLike):
    """EF21's θ = 1 − sqrt(1 − α) and β = (1 − α)/(1 − sqrt(1 − α)). THEORY.md §2.6 [V-src poster].

    For α = 1 (no compression) θ = 1 and β = 0. Example: Top-1 in d = 3 (α = 1/3) gives
    θ = 0.18350, β = 3.63299, sqrt(β/θ) = 4.4495.

    Args:
      alpha: contraction parameter of C ∈ B(α), in (0, 1].

    Returns:
      ``(theta, beta)``.
    """
    a = _unit("alpha", alpha)
    r = np.sqrt(1.0 - a)
    theta = 1.0 - r
    beta = (1.0 - a) / theta
    return _out(theta), _out(beta)


@_refs(_EF21_REFS)
def ef21_stepsize(L: ArrayLike, L_tilde: ArrayLike, alpha: ArrayLike, mu: ArrayLike | None = None):
    """EF21's theoretical step size: nonconvex, or PL when ``mu`` is given.

    THEORY.md §2.6 [V-src poster Thm 2 and Thm 3]:

    * nonconvex: γ = 1/(L + L̃ sqrt(β/θ));
    * PL (f − f* <= ||∇f||²/(2μ)): γ = min{1/(L + L̃ sqrt(2β/θ)), θ/(2μ)}.

    For the §3 counterexample (paper scaling, Top-1, α = 1/3): 0.005859 and 0.004269.

    Args:
      L: smoothness of f, > 0.
      L_tilde: L̃ = sqrt(mean L_m²), > 0.
      alpha: contraction parameter in (0, 1].
      mu: PL constant > 0, or ``None`` for the nonconvex step size.

    Returns:
      The step size γ.
    """
    L, Lt = _pos("L", L), _pos("L_tilde", L_tilde)
    theta, beta = (np.asarray(v) for v in ef21_constants(alpha))
    if mu is None:
        return _out(1.0 / (L + Lt * np.sqrt(beta / theta)))
    mu = _pos("mu", mu)
    return _out(np.minimum(1.0 / (L + Lt * np.sqrt(2.0 * beta / theta)), theta / (2.0 * mu)))


@_refs(_EF21_REFS)
def ef21_rate(gamma: ArrayLike, mu: ArrayLike):
    """EF21's PL rate 1 − γμ of Ψ^t = f(x^t) − f* + (γ/θ)G^t. THEORY.md §2.6 [V-src poster Thm 3].

    Args:
      gamma: step size, 0 < γ <= :func:`ef21_stepsize` with ``mu``.
      mu: PL constant > 0.

    Returns:
      1 − γμ.
    """
    return _out(1.0 - _pos("gamma", gamma) * _pos("mu", mu))


@_refs(_EF21_REFS)
def ef21_gradient_bound(
    delta0: ArrayLike, G0: ArrayLike, gamma: ArrayLike, theta: ArrayLike, T: ArrayLike
):
    """EF21 nonconvex bound E||∇f(x̂^T)||² <= 2Δ0/(γT) + E[G^0]/(θT). THEORY.md §2.6 [V-src Thm 2].

    Args:
      delta0: f(x^0) − f^inf >= 0.
      G0: G^0 = (1/M) Σ ||g_m^0 − ∇f_m(x^0)||² >= 0.
      gamma: step size > 0.
      theta: θ from :func:`ef21_constants`, in (0, 1].
      T: number of iterations >= 1.

    Returns:
      2Δ0/(γT) + G^0/(θT).
    """
    d0, g0 = _nonneg("delta0", delta0), _nonneg("G0", G0)
    g, th, T = _pos("gamma", gamma), _unit("theta", theta), _workers("T", T)
    return _out(2.0 * d0 / (g * T) + g0 / (th * T))


# ---------------------------------------------------------------------------------------------
# Local steps (THEORY.md §2.8).


def _local_gd_matrices(A: Any, b: Any, gamma: float, H: int):
    A = np.asarray(A, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if A.ndim != 3 or A.shape[1] != A.shape[2] or b.shape != A.shape[:2]:
        raise ValueError(f"A must have shape (M, d, d) and b (M, d), got {A.shape} and {b.shape}")
    gamma = float(_pos("gamma", gamma))
    if isinstance(H, bool) or not isinstance(H, int | np.integer) or H < 1:
        raise ValueError(f"H must be an int >= 1, got H={H!r}")
    M, d = b.shape
    step = np.eye(d) - gamma * A  # (M, d, d)
    S = np.broadcast_to(np.eye(d), (M, d, d)).copy()
    Q = np.zeros((M, d, d))
    for _ in range(int(H)):  # Q = Σ_{h<H} (I − γA_m)^h, S = (I − γA_m)^H
        Q += S
        S = S @ step
    Q *= gamma
    P = np.eye(d) - S  # = Q A_m
    return P, Q, b


def local_gd_round_map(A: ArrayLike, b: ArrayLike, gamma: float, H: int):
    """The exact round map x⁺ = T x + c of local GD on quadratics f_m = ½xᵀA_m x − b_mᵀx.

    THEORY.md §2.8 [V-der+MC]: every worker takes H steps x ← x − γ(A_m x − b_m) from x, then the
    models are averaged, so x⁺ = x − (1/M) Σ_m (P_m x − Q_m b_m) with
    P_m = I − (I − γA_m)^H and Q_m = γ Σ_{h<H} (I − γA_m)^h (P_m = Q_m A_m; no inverse needed).

    Args:
      A: Hessians, shape ``(M, d, d)``.
      b: linear terms, shape ``(M, d)``.
      gamma: local step size > 0.
      H: local steps per round, >= 1.

    Returns:
      ``(T, c)`` with ``T = I − (1/M) Σ P_m`` (shape ``(d, d)``) and ``c = (1/M) Σ Q_m b_m``.

    References:
      Khaled, Mishchenko, Richtárik, `Tighter theory for local SGD on identical and heterogeneous
      data <https://arxiv.org/abs/1909.04746>`_, 2020 (id unconfirmed).
    """
    P, Q, b = _local_gd_matrices(A, b, gamma, H)
    d = b.shape[1]
    return np.eye(d) - P.mean(axis=0), np.einsum("mij,mj->i", Q, b) / b.shape[0]


def local_gd_fixed_point(A: ArrayLike, b: ArrayLike, gamma: float, H: int) -> np.ndarray:
    """The fixed point of local GD on quadratics: x_fp = (Σ_m P_m)^{-1} Σ_m P_m x_m*.

    THEORY.md §2.8 [V-der+MC], with P_m = I − (I − γA_m)^H and x_m* = A_m^{-1} b_m (computed as
    Σ Q_m b_m, so singular A_m are fine). x_fp ≠ x* in general; H = 1 gives x*, H → ∞ gives
    mean_m x_m*, identical Hessians give x* for any H. If γ <= 1/L_max and every A_m ≻ 0, the
    round map (:func:`local_gd_round_map`) contracts to x_fp.

    Args:
      A: Hessians, shape ``(M, d, d)``.
      b: linear terms, shape ``(M, d)``.
      gamma: local step size > 0.
      H: local steps per round, >= 1.

    Returns:
      x_fp, shape ``(d,)``, float64.

    References:
      Khaled, Mishchenko, Richtárik, `Tighter theory for local SGD on identical and heterogeneous
      data <https://arxiv.org/abs/1909.04746>`_, 2020 (id unconfirmed).
    """
    P, Q, b = _local_gd_matrices(A, b, gamma, H)
    return np.linalg.solve(P.sum(axis=0), np.einsum("mij,mj->i", Q, b))


_PROXSKIP_REFS = """
    References:
      Mishchenko, Malinovsky, Stich, Richtárik, `ProxSkip: yes! Local gradient steps provably
      lead to communication acceleration! Finally! <https://arxiv.org/abs/2202.09357>`_, 2022.
"""


@_refs(_PROXSKIP_REFS)
def scaffnew_stepsize(L: ArrayLike):
    """Scaffnew / ProxSkip step size γ = 1/L (any 0 < γ <= 1/L). THEORY.md §2.8 [V-sec Thm 6].

    Args:
      L: smoothness constant, > 0 (of every f_m in the federated form).

    Returns:
      1/L.
    """
    return _out(1.0 / _pos("L", L))


@_refs(_PROXSKIP_REFS)
def scaffnew_probability(L: ArrayLike, mu: ArrayLike):
    """Scaffnew's communication probability p = 1/sqrt κ = sqrt(μ/L). THEORY.md §2.8.

    With γ = 1/L this gives O(κ log 1/ε) iterations and O(sqrt κ log 1/ε) expected
    communications [V-src ICML abstract; V-sec Thm 6].

    Args:
      L: smoothness constant, > 0.
      mu: strong convexity constant, 0 < mu <= L.

    Returns:
      sqrt(μ/L).
    """
    L, mu = _pos("L", L), _pos("mu", mu)
    _mu_le_L(mu, L)
    return _out(np.sqrt(mu / L))


@_refs(_PROXSKIP_REFS)
def scaffnew_rate(gamma: ArrayLike, mu: ArrayLike, p: ArrayLike):
    """Scaffnew's rate max{1 − γμ, 1 − p²} of Ψ_t. THEORY.md §2.8 [V-sec Thm 6].

    Ψ_t = ||x_t − x*||² + (γ²/p²)||h_t − h*||² (see :func:`scaffnew_lyapunov_weight`).

    Args:
      gamma: step size in (0, 1/L].
      mu: strong convexity > 0.
      p: communication probability in (0, 1].

    Returns:
      max(1 − γμ, 1 − p²).
    """
    g, mu, p = _pos("gamma", gamma), _pos("mu", mu), _unit("p", p)
    return _out(np.maximum(1.0 - g * mu, 1.0 - p**2))


@_refs(_PROXSKIP_REFS)
def scaffnew_lyapunov_weight(gamma: ArrayLike, p: ArrayLike):
    """The weight γ²/p² of the control-variate error in Scaffnew's Ψ_t. THEORY.md §2.8 [V-sec].

    Args:
      gamma: step size > 0.
      p: communication probability in (0, 1].

    Returns:
      γ²/p².
    """
    return _out(_pos("gamma", gamma) ** 2 / _unit("p", p) ** 2)


# ---------------------------------------------------------------------------------------------
# Hessian similarity (THEORY.md §2.9).


def bregman_constants(delta: ArrayLike, mu: ArrayLike):
    """Relative smoothness 1 and relative strong convexity μ/(μ + 2δ) of f w.r.t. φ.

    THEORY.md §2.9 [V-der]: with the server's reference φ(x) = f_1(x) + (δ/2)||x||² and
    ||∇²f_1 − ∇²f|| <= δ, ∇²f ≼ ∇²φ ≼ (1 + 2δ/μ)∇²f, so κ_rel = 1 + 2δ/μ.

    Args:
      delta: Hessian similarity δ >= 0.
      mu: strong convexity of f, > 0.

    Returns:
      ``(L_rel, mu_rel)`` = ``(1.0, μ/(μ + 2δ))``.
    """
    d, mu = _nonneg("delta", delta), _pos("mu", mu)
    return _out(np.ones_like(d * mu)), _out(mu / (mu + 2.0 * d))


def bregman_rate(delta: ArrayLike, mu: ArrayLike):
    """Bregman (mirror) GD rate 1 − 1/κ_rel = 2δ/(μ + 2δ) of f(x^k) − f*.

    THEORY.md §2.9 [V-der for κ_rel; the rate theorem of Lu, Freund, Nesterov 2018 is
    UNVERIFIED in its theorem number]: O((1 + δ/μ) log 1/ε) communications.

    Args:
      delta: Hessian similarity δ >= 0.
      mu: strong convexity of f, > 0.

    Returns:
      2δ/(μ + 2δ).

    References:
      Lu, Freund, Nesterov, `Relatively smooth convex optimization by first-order methods, and
      applications <https://arxiv.org/abs/1610.05708>`_, 2018 (id unconfirmed).
    """
    d, mu = _nonneg("delta", delta), _pos("mu", mu)
    return _out(2.0 * d / (mu + 2.0 * d))


def spag_rate(delta: ArrayLike, mu: ArrayLike):
    """Order of SPAG's accelerated rate, 1 − 1/sqrt(κ_rel) with κ_rel = 1 + 2δ/μ.

    THEORY.md §2.9 [V-src abstract: the rate depends on sqrt(κ_rel); constants and the adaptive
    gain G_t are UNVERIFIED]. Indicative only.

    Args:
      delta: Hessian similarity δ >= 0.
      mu: strong convexity of f, > 0.

    Returns:
      1 − 1/sqrt(1 + 2δ/μ).

    References:
      Hendrikx, Xiao, Bubeck, Bach, Massoulié, `Statistically preconditioned accelerated gradient
      method for distributed optimization <https://arxiv.org/abs/2002.10726>`_, 2020 (id
      unconfirmed).
    """
    d, mu = _nonneg("delta", delta), _pos("mu", mu)
    return _out(1.0 - 1.0 / np.sqrt(1.0 + 2.0 * d / mu))


def dane_quadratic_contraction(delta: ArrayLike, mu_r: ArrayLike, lambda_min_m: ArrayLike):
    """Per-round contraction (δ + μ_r)/(λ_min(A_m) + μ_r) of DANE (η = 1) on quadratics.

    THEORY.md §2.9 [V-der+MC]: x_m^{k+1} − x* = (A_m + μ_r I)^{-1}(A_m + μ_r I − A)(x^k − x*). The
    bound is < 1 only when δ < λ_min(A_m).

    Args:
      delta: Hessian similarity δ >= 0.
      mu_r: DANE's proximal parameter μ_r >= 0.
      lambda_min_m: min_m λ_min(A_m) >= 0 (with lambda_min_m + mu_r > 0).

    Returns:
      (δ + μ_r)/(λ_min + μ_r).

    References:
      Shamir, Srebro, Zhang, `Communication-efficient distributed optimization using an
      approximate Newton-type method <https://arxiv.org/abs/1312.7853>`_, 2014 (id unconfirmed).
    """
    d, r, lam = (
        _nonneg("delta", delta),
        _nonneg("mu_r", mu_r),
        _nonneg("lambda_min_m", lambda_min_m),
    )
    if np.any(lam + r <= 0):
        raise ValueError("lambda_min_m + mu_r must be > 0")
    return _out((d + r) / (lam + r))


def aeg_sliding_parameters(delta: ArrayLike, mu: ArrayLike):
    """Parameters (τ, θ, η) of accelerated extragradient sliding: **UNVERIFIED constants**.

    THEORY.md §2.9 (recalled, UNVERIFIED): τ = min{1, sqrt(μ/δ)/2}, θ = 1/(2δ),
    η = min{1/(2μ), 1/(2 sqrt(μδ))}. The method needs O(sqrt(δ/μ) log 1/ε) communication rounds
    [V-src abstract]; use these values as a starting point and check convergence numerically.

    Args:
      delta: Hessian similarity δ > 0.
      mu: strong convexity of f, > 0.

    Returns:
      ``(tau, theta, eta)``.

    References:
      Kovalev, Beznosikov, Borodich, Gasnikov, Scutari, `Optimal gradient sliding and its
      application to distributed optimization under similarity
      <https://arxiv.org/abs/2205.15136>`_, 2022.
    """
    d, mu = _pos("delta", delta), _pos("mu", mu)
    tau = np.minimum(1.0, np.sqrt(mu / d) / 2.0)
    theta = 1.0 / (2.0 * d)
    eta = np.minimum(1.0 / (2.0 * mu), 1.0 / (2.0 * np.sqrt(mu * d)))
    return _out(tau), _out(theta), _out(eta)


def similarity_bound(L: ArrayLike, n: ArrayLike, d: ArrayLike, rho: ArrayLike = 0.01):
    """High-probability similarity δ <= L sqrt(2 log(2d/ρ)/n) + (2L/(3n)) log(2d/ρ).

    THEORY.md §2.9 [V-der from the matrix Bernstein inequality, Tropp 2012 (theorem number
    UNVERIFIED)]: n i.i.d. samples per worker with 0 ≼ ∇²ℓ ≼ L·I; holds with probability
    >= 1 − ρ for one worker.

    Args:
      L: bound on the per-sample Hessians, > 0.
      n: samples per worker >= 1.
      d: dimension >= 1.
      rho: failure probability in (0, 1].

    Returns:
      The bound on ||∇²f_m − E∇²ℓ||.

    References:
      Tropp, `User-friendly tail bounds for sums of random matrices
      <https://arxiv.org/abs/1004.4389>`_, 2012 (id unconfirmed).
    """
    L, n, d, rho = _pos("L", L), _workers("n", n), _workers("d", d), _unit("rho", rho)
    lg = np.log(2.0 * d / rho)
    return _out(L * np.sqrt(2.0 * lg / n) + 2.0 * L * lg / (3.0 * n))


# ---------------------------------------------------------------------------------------------
# Communication cost models (THEORY.md §4): latency alpha (s per message), beta (s per bit).


def _net(alpha: Any, beta: Any) -> tuple[np.ndarray, np.ndarray]:
    return _nonneg("alpha", alpha), _nonneg("beta", beta)


def p2p_time(bits: ArrayLike, alpha: ArrayLike, beta: ArrayLike):
    """Point-to-point time α + Nβ for N bits. THEORY.md §4 [standard].

    β is seconds per bit (inverse bandwidth), not bandwidth.

    Args:
      bits: message size N >= 0.
      alpha: latency per message (s) >= 0.
      beta: seconds per bit >= 0.

    Returns:
      α + Nβ.
    """
    a, b = _net(alpha, beta)
    return _out(a + _nonneg("bits", bits) * b)


def allreduce_time(
    M: ArrayLike, d: ArrayLike, b: ArrayLike, alpha: ArrayLike, beta: ArrayLike, *, algorithm="ring"
):
    """All-reduce of d floats of b bits over M workers.

    THEORY.md §4 [V-sec: distributed-training-book ch. 13; Thakur, Rabenseifner, Gropp 2005;
    Patarasuk & Yuan 2009 (bandwidth term optimal)]:

    * ``"ring"`` (reduce-scatter + all-gather): 2(M−1)α + 2((M−1)/M)·d·b·β;
    * ``"halving_doubling"`` (Rabenseifner): 2 log2(M)·α + 2((M−1)/M)·d·b·β.

    Reduction compute is not modelled. Shared-seed Rand-K / PowerSGD all-reduce their K-vector:
    pass d = K.

    Args:
      M: number of workers >= 1.
      d: floats per worker >= 0.
      b: bits per float >= 0.
      alpha: latency (s) >= 0.
      beta: seconds per bit >= 0.
      algorithm: ``"ring"`` or ``"halving_doubling"``.

    Returns:
      Time in seconds.
    """
    M, d, bb = _workers("M", M), _nonneg("d", d), _nonneg("b", b)
    a, be = _net(alpha, beta)
    bw = 2.0 * (M - 1.0) / M * d * bb * be
    if algorithm == "ring":
        return _out(2.0 * (M - 1.0) * a + bw)
    if algorithm == "halving_doubling":
        return _out(2.0 * np.log2(M) * a + bw)
    raise ValueError(f"algorithm must be 'ring' or 'halving_doubling', got {algorithm!r}")


def reduce_scatter_time(
    M: ArrayLike, d: ArrayLike, b: ArrayLike, alpha: ArrayLike, beta: ArrayLike
):
    """Ring reduce-scatter of d floats: (M−1)α + ((M−1)/M)·d·b·β. THEORY.md §4 [V-sec].

    Args:
      M: number of workers >= 1.
      d: floats per worker >= 0.
      b: bits per float >= 0.
      alpha: latency (s) >= 0.
      beta: seconds per bit >= 0.

    Returns:
      Time in seconds.
    """
    M, d, bb = _workers("M", M), _nonneg("d", d), _nonneg("b", b)
    a, be = _net(alpha, beta)
    return _out((M - 1.0) * a + (M - 1.0) / M * d * bb * be)


def allgather_time(M: ArrayLike, bits: ArrayLike, alpha: ArrayLike, beta: ArrayLike):
    """Ring all-gather in which every worker contributes a message of ``bits`` bits.

    THEORY.md §4 [V-der]: (M−1)α + (M−1)·bits·β per worker (each receives the M−1 other
    messages). The all-gather half of a dense ring all-reduce is the case bits = d·b/M.

    Args:
      M: number of workers >= 1.
      bits: bits contributed by each worker >= 0.
      alpha: latency (s) >= 0.
      beta: seconds per bit >= 0.

    Returns:
      Time in seconds.
    """
    M, n = _workers("M", M), _nonneg("bits", bits)
    a, be = _net(alpha, beta)
    return _out((M - 1.0) * (a + n * be))


def parameter_server_time(
    M: ArrayLike,
    d: ArrayLike,
    b: ArrayLike,
    alpha: ArrayLike,
    beta: ArrayLike,
    *,
    uplink_bits: ArrayLike | None = None,
    downlink_bits: ArrayLike | None = None,
):
    """One parameter-server round with a single server NIC: gather then broadcast.

    THEORY.md §4 [V-der]: ingress M·(uplink bits), egress M·(downlink bits), serialised, so
    dense messages give 2α + 2M·d·b·β. Compressed messages: pass ``uplink_bits`` /
    ``downlink_bits`` (bits per worker per direction, default d·b).

    Args:
      M: number of workers >= 1.
      d: floats per message >= 0.
      b: bits per float >= 0.
      alpha: latency (s) >= 0.
      beta: seconds per bit >= 0.
      uplink_bits: bits each worker sends (default d·b).
      downlink_bits: bits the server sends each worker (default d·b).

    Returns:
      Time in seconds.
    """
    M, d, bb = _workers("M", M), _nonneg("d", d), _nonneg("b", b)
    a, be = _net(alpha, beta)
    up = d * bb if uplink_bits is None else _nonneg("uplink_bits", uplink_bits)
    down = d * bb if downlink_bits is None else _nonneg("downlink_bits", downlink_bits)
    return _out(2.0 * a + M * (up + down) * be)


def all_to_all_time(M: ArrayLike, d: ArrayLike, b: ArrayLike, alpha: ArrayLike, beta: ArrayLike):
    """Naive all-to-all (each worker sends its vector to the M − 1 others): (M−1)(α + d·b·β).

    THEORY.md §4 [V-der], one full-duplex port per worker.

    Args:
      M: number of workers >= 1.
      d: floats per worker >= 0.
      b: bits per float >= 0.
      alpha: latency (s) >= 0.
      beta: seconds per bit >= 0.

    Returns:
      Time in seconds.
    """
    M, d, bb = _workers("M", M), _nonneg("d", d), _nonneg("b", b)
    a, be = _net(alpha, beta)
    return _out((M - 1.0) * (a + d * bb * be))


def perm_k_time(M: ArrayLike, d: ArrayLike, b: ArrayLike, alpha: ArrayLike, beta: ArrayLike):
    """Perm-K aggregation: all-gather of disjoint d/M-blocks, (M−1)α + ((M−1)/M)·d·b·β.

    THEORY.md §4 [V-der]: shared seed, no indices, no reduction; half the bandwidth term of a
    dense ring all-reduce.

    Args:
      M: number of workers >= 1.
      d: dimension >= 0.
      b: bits per float >= 0.
      alpha: latency (s) >= 0.
      beta: seconds per bit >= 0.

    Returns:
      Time in seconds.

    References:
      Szlendak, Tyurin, Richtárik, `Permutation compressors for provably faster distributed
      nonconvex optimization <https://arxiv.org/abs/2110.03300>`_, 2021 (id unconfirmed).
    """
    M, d, bb = _workers("M", M), _nonneg("d", d), _nonneg("b", b)
    a, be = _net(alpha, beta)
    return _out((M - 1.0) * a + (M - 1.0) / M * d * bb * be)


def sparse_allgather_time(
    M: ArrayLike,
    k: ArrayLike,
    d: ArrayLike,
    b: ArrayLike,
    alpha: ArrayLike,
    beta: ArrayLike,
    *,
    index_bits: ArrayLike | None = None,
):
    """All-gather of K (index, value) pairs per worker (Top-K, independent Rand-K).

    THEORY.md §4 [V-der]: (M−1)α + (M−1)·K·(b + ⌈log2 d⌉)·β. Worse than a dense ring all-reduce
    roughly when M·K > 2d. Rand-K with a seed instead of indices: pass ``index_bits=0`` (and
    add the seed to the message if needed).

    Args:
      M: number of workers >= 1.
      k: values per worker >= 0.
      d: dimension >= 1 (for the index width).
      b: bits per value >= 0.
      alpha: latency (s) >= 0.
      beta: seconds per bit >= 0.
      index_bits: bits per index (default ⌈log2 d⌉).

    Returns:
      Time in seconds.
    """
    M, k, dd, bb = _workers("M", M), _nonneg("k", k), _workers("d", d), _nonneg("b", b)
    a, be = _net(alpha, beta)
    ib = np.ceil(np.log2(dd)) if index_bits is None else _nonneg("index_bits", index_bits)
    return _out((M - 1.0) * (a + k * (bb + ib) * be))
