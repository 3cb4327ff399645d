"""Per-step distributed gradient methods as optax transformations.

Every method is written from one worker's point of view: ``update(grads, state, params)``
takes *this worker's* gradient (full or stochastic) and returns the aggregated estimate that
every worker agrees on (bitwise), so it chains with any optax optimizer::

    opt = optax.chain(jaxdist.diana(rand_k(10)), optax.sgd(lr))
    state = jaxdist.comm.simulate(opt.init, M)(params)            # M workers, one device
    updates, state = jaxdist.comm.simulate(opt.update, M)(grads, state, params)

Keys live in the state (``key=`` int seed or PRNG key, ``salt=`` folded in); per-worker memory
(shifts ``h_m``, errors ``e_m``, estimates ``g_m``) stays per worker; the server part is
replicated. Every state holds a :class:`jaxdist.comm.Ledger` with exact message counts.
"""

from jaxdist.methods._dgd import DCGDState as DCGDState
from jaxdist.methods._dgd import DGDState as DGDState
from jaxdist.methods._dgd import bidirectional as bidirectional
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
from jaxdist.methods._marina import MARINAState as MARINAState
from jaxdist.methods._marina import marina as marina

__all__ = [
    "DCGDState",
    "DGDState",
    "DIANAState",
    "EF14State",
    "EF21PState",
    "EF21State",
    "MARINAState",
    "bidirectional",
    "dcgd",
    "dgd",
    "diana",
    "ef14",
    "ef21",
    "ef21_p",
    "marina",
]
