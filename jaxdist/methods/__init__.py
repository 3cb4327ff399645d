"""Distributed methods: per-step optax transformations and the round protocol that hosts them.

**Per-step methods** are optax transformations written from one worker's point of view:
``update(grads, state, params)`` takes *this worker's* gradient (full or stochastic) and
returns the aggregated estimate that every worker agrees on (bitwise), so it chains with any
optax optimizer::

    opt = optax.chain(jaxdist.diana(rand_k(10)), optax.sgd(lr))
    params, state = jaxdist.comm.replicate(params, M, opt.init)   # M workers, one device
    updates, state = jaxdist.comm.simulate(opt.update, M)(grads, state, params)

Per-worker memory (shifts ``h_m``, errors ``e_m``, estimates ``g_m``) stays per worker; the
server part is replicated. Every state holds a :class:`jaxdist.comm.Ledger` with exact message
counts. Randomness follows one key path (:mod:`jaxdist.methods._base`): the key given at
construction (``key=``, ``salt=``) is stored in the state; ``update`` takes no key.

**Round-based methods** follow the round protocol (:mod:`jaxdist.methods._round`):
``init(params)``, ``round(state, oracle, key) -> (state, info)``, ``params(state)``: local GD /
local SGD / FedAvg with partial participation (:func:`local_gd`), FedPAQ (compressed uplink,
:func:`fedpaq`), FedProx (:func:`fedprox`), SCAFFOLD (:func:`scaffold`) and Scaffnew / ProxSkip
(:func:`scaffnew`); under data similarity Bregman GD (the lecture's mirror descent,
:func:`bregman_gd`), DANE (:func:`dane`), accelerated extragradient sliding (:func:`aeg_sliding`)
and OLGA (compression under similarity, :func:`olga`). Local and server subproblems are solved by
one component, :class:`Solver` (budget and tolerance; unsolved solves are reported).
:func:`nesterov` is the accelerated baseline (a per-step method).
:func:`as_round` hosts a per-step method as a round ("one gradient, one update"), which is how
:func:`jaxdist.run` runs both kinds.

**On the worker axis, wrap with care.** A wrapper that decides per worker breaks a distributed
method: use :func:`apply_if_finite` (not ``optax.apply_if_finite``) and :func:`accumulate` (not
``optax.MultiSteps``). ``optax.masked(diana(c), mask)`` leaves the unmasked leaves
un-averaged, so workers drift apart (the run's ``consensus_sq`` shows it); average every leaf,
e.g. ``optax.multi_transform({"c": diana(c), "d": dgd()}, labels)``. Changing a hyperparameter
mid-run: ``optax.inject_hyperparams(jaxdist.diana)(rand_k(10), shift_step=0.5)`` works (pass the
hyperparameter explicitly so that it is injected), then set ``state.hyperparams["shift_step"]``;
injected values are traced, so they are not range-checked.
"""

from jaxdist.methods._base import reseed as reseed
from jaxdist.methods._dgd import DCGDState as DCGDState
from jaxdist.methods._dgd import DGDState as DGDState
from jaxdist.methods._dgd import dcgd as dcgd
from jaxdist.methods._dgd import dgd as dgd
from jaxdist.methods._diana import DIANAState as DIANAState
from jaxdist.methods._diana import diana as diana
from jaxdist.methods._error_feedback import EF14State as EF14State
from jaxdist.methods._error_feedback import EF21PState as EF21PState
from jaxdist.methods._error_feedback import EF21State as EF21State
from jaxdist.methods._error_feedback import ef14 as ef14
from jaxdist.methods._error_feedback import ef21 as ef21
from jaxdist.methods._error_feedback import ef21_p as ef21_p
from jaxdist.methods._fedprox import fedprox as fedprox
from jaxdist.methods._local import fedavg as fedavg
from jaxdist.methods._local import fedpaq as fedpaq
from jaxdist.methods._local import local_gd as local_gd
from jaxdist.methods._local import local_sgd as local_sgd
from jaxdist.methods._local import scaffnew as scaffnew
from jaxdist.methods._marina import MARINAState as MARINAState
from jaxdist.methods._marina import marina as marina
from jaxdist.methods._nesterov import NesterovState as NesterovState
from jaxdist.methods._nesterov import nesterov as nesterov
from jaxdist.methods._olga import olga as olga
from jaxdist.methods._round import Oracle as Oracle
from jaxdist.methods._round import PerStep as PerStep
from jaxdist.methods._round import RoundMethod as RoundMethod
from jaxdist.methods._round import as_round as as_round
from jaxdist.methods._scaffold import scaffold as scaffold
from jaxdist.methods._similarity import aeg_sliding as aeg_sliding
from jaxdist.methods._similarity import bregman_gd as bregman_gd
from jaxdist.methods._similarity import dane as dane
from jaxdist.methods._solver import SolveInfo as SolveInfo
from jaxdist.methods._solver import Solver as Solver
from jaxdist.methods._wrappers import AccumulateState as AccumulateState
from jaxdist.methods._wrappers import ApplyIfFiniteState as ApplyIfFiniteState
from jaxdist.methods._wrappers import accumulate as accumulate
from jaxdist.methods._wrappers import apply_if_finite as apply_if_finite

__all__ = [
    "AccumulateState",
    "ApplyIfFiniteState",
    "DCGDState",
    "DGDState",
    "DIANAState",
    "EF14State",
    "EF21PState",
    "EF21State",
    "MARINAState",
    "NesterovState",
    "Oracle",
    "PerStep",
    "RoundMethod",
    "SolveInfo",
    "Solver",
    "accumulate",
    "aeg_sliding",
    "apply_if_finite",
    "as_round",
    "bregman_gd",
    "dane",
    "dcgd",
    "dgd",
    "diana",
    "ef14",
    "ef21",
    "ef21_p",
    "fedavg",
    "fedpaq",
    "fedprox",
    "local_gd",
    "local_sgd",
    "marina",
    "nesterov",
    "olga",
    "reseed",
    "scaffnew",
    "scaffold",
]
