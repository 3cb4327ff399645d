"""Step sizes and predicted rates from THEORY.md, as plain functions of numbers.

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
of an unbiased compressor U(ω), ``alpha`` (α) the contraction parameter of a contractive
compressor B(α) and nothing else; DIANA's shift step is ``shift_step``.

One module per method: ``_gd`` (GD, Nesterov), ``_dcgd``, ``_diana``, ``_marina``, ``_ef21``,
``_local`` (local GD, Scaffnew / ProxSkip), ``_similarity`` (Bregman GD, SPAG, DANE, AEG
sliding, the similarity bound) and ``_common`` (shared checks, :func:`rounds_to_accuracy`).
The α–β network cost models of THEORY.md §4 live in :mod:`jaxdist.comm` (``NetworkModel`` and
the per-collective ``*_time`` functions), next to the bit ledgers they price.

Examples:
  >>> from jaxdist import theory
  >>> omega, M = 9.0, 10  # Rand-K with d/K = 10 on 10 workers
  >>> gamma = theory.diana_stepsize(L=1.0, L_max=1.0, omega=omega, M=M)
  >>> rate = theory.diana_rate(gamma, 0.1, theory.diana_shift_step(omega))
  >>> theory.rounds_to_accuracy(rate, 1e-6)
  878
"""

from __future__ import annotations

from typing import Any

from jaxdist.theory._common import nonconvex_gradient_bound as nonconvex_gradient_bound
from jaxdist.theory._common import rounds_to_accuracy as rounds_to_accuracy
from jaxdist.theory._dcgd import dcgd_neighborhood as dcgd_neighborhood
from jaxdist.theory._dcgd import dcgd_one_step_variance as dcgd_one_step_variance
from jaxdist.theory._dcgd import dcgd_rate as dcgd_rate
from jaxdist.theory._dcgd import dcgd_stepsize as dcgd_stepsize
from jaxdist.theory._diana import diana_lyapunov_weight as diana_lyapunov_weight
from jaxdist.theory._diana import diana_rate as diana_rate
from jaxdist.theory._diana import diana_shift_step as diana_shift_step
from jaxdist.theory._diana import diana_stepsize as diana_stepsize
from jaxdist.theory._ef21 import ef21_constants as ef21_constants
from jaxdist.theory._ef21 import ef21_gradient_bound as ef21_gradient_bound
from jaxdist.theory._ef21 import ef21_rate as ef21_rate
from jaxdist.theory._ef21 import ef21_stepsize as ef21_stepsize
from jaxdist.theory._gd import gd_rate as gd_rate
from jaxdist.theory._gd import gd_stepsize as gd_stepsize
from jaxdist.theory._gd import nesterov_momentum as nesterov_momentum
from jaxdist.theory._gd import nesterov_rate as nesterov_rate
from jaxdist.theory._gd import nesterov_stepsize as nesterov_stepsize
from jaxdist.theory._local import fedprox_fixed_point as fedprox_fixed_point
from jaxdist.theory._local import local_gd_fixed_point as local_gd_fixed_point
from jaxdist.theory._local import local_gd_round_map as local_gd_round_map
from jaxdist.theory._local import scaffnew_lyapunov_weight as scaffnew_lyapunov_weight
from jaxdist.theory._local import scaffnew_probability as scaffnew_probability
from jaxdist.theory._local import scaffnew_rate as scaffnew_rate
from jaxdist.theory._local import scaffnew_stepsize as scaffnew_stepsize
from jaxdist.theory._marina import marina_ab_stepsize as marina_ab_stepsize
from jaxdist.theory._marina import marina_probability as marina_probability
from jaxdist.theory._marina import marina_stepsize as marina_stepsize
from jaxdist.theory._similarity import aeg_inner_rtol as aeg_inner_rtol
from jaxdist.theory._similarity import aeg_sliding_parameters as aeg_sliding_parameters
from jaxdist.theory._similarity import aeg_sliding_rate as aeg_sliding_rate
from jaxdist.theory._similarity import bregman_constants as bregman_constants
from jaxdist.theory._similarity import bregman_rate as bregman_rate
from jaxdist.theory._similarity import dane_quadratic_contraction as dane_quadratic_contraction
from jaxdist.theory._similarity import olga_parameters as olga_parameters
from jaxdist.theory._similarity import olga_rate as olga_rate
from jaxdist.theory._similarity import similarity_bound as similarity_bound
from jaxdist.theory._similarity import spag_rate as spag_rate

__all__ = [
    # common
    "rounds_to_accuracy",
    "nonconvex_gradient_bound",
    # gd
    "gd_stepsize",
    "gd_rate",
    "nesterov_stepsize",
    "nesterov_momentum",
    "nesterov_rate",
    # dcgd
    "dcgd_stepsize",
    "dcgd_rate",
    "dcgd_neighborhood",
    "dcgd_one_step_variance",
    # diana
    "diana_shift_step",
    "diana_stepsize",
    "diana_rate",
    "diana_lyapunov_weight",
    # marina
    "marina_probability",
    "marina_stepsize",
    "marina_ab_stepsize",
    # ef21
    "ef21_constants",
    "ef21_stepsize",
    "ef21_rate",
    "ef21_gradient_bound",
    # local
    "local_gd_round_map",
    "local_gd_fixed_point",
    "fedprox_fixed_point",
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
    "aeg_sliding_rate",
    "aeg_inner_rtol",
    "olga_parameters",
    "olga_rate",
    "similarity_bound",
]

_COST_MODELS = (
    "p2p_time",
    "allreduce_time",
    "reduce_scatter_time",
    "allgather_time",
    "parameter_server_time",
    "all_to_all_time",
    "perm_k_time",
    "sparse_allgather_time",
)
_RENAMED = {"diana_alpha": "diana_shift_step"}


def __getattr__(name: str) -> Any:
    # Names that moved or were renamed get an error that says where they are now.
    if name in _COST_MODELS:
        raise AttributeError(
            f"jaxdist.theory.{name} moved to jaxdist.comm.{name} (the network cost models live "
            "in jaxdist.comm, with NetworkModel; latency/seconds_per_bit replace alpha/beta)"
        )
    if name in _RENAMED:
        raise AttributeError(f"jaxdist.theory.{name} was renamed jaxdist.theory.{_RENAMED[name]}")
    raise AttributeError(f"module 'jaxdist.theory' has no attribute {name!r}")
