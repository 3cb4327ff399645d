"""jaxdist: communication-efficient distributed optimization in JAX.

Workers live on a named axis: ``jax.vmap(..., axis_name="workers")`` simulates them on one
device and ``jax.shard_map`` runs the same code on real devices. Compressors are pure functions
of a PRNG key; methods are optax-style ``init/update`` state machines; everything is measured in
exact bits and communication rounds.

Subpackages: :mod:`jaxdist.compressors`, :mod:`jaxdist.comm`, :mod:`jaxdist.methods`,
:mod:`jaxdist.problems`, :mod:`jaxdist.theory`, :mod:`jaxdist.experiments`.
"""

__version__ = "0.1.0"

from jaxdist import comm as comm
from jaxdist import compressors as compressors
from jaxdist import experiments as experiments
from jaxdist import methods as methods
from jaxdist import problems as problems
from jaxdist import theory as theory
from jaxdist.experiments import Trace as Trace
from jaxdist.experiments import run as run
from jaxdist.methods import bidirectional as bidirectional
from jaxdist.methods import dcgd as dcgd
from jaxdist.methods import dgd as dgd
from jaxdist.methods import diana as diana
from jaxdist.methods import ef14 as ef14
from jaxdist.methods import ef21 as ef21
from jaxdist.methods import ef21_p as ef21_p
from jaxdist.methods import marina as marina

__all__ = [
    "Trace",
    "__version__",
    "bidirectional",
    "comm",
    "compressors",
    "dcgd",
    "dgd",
    "diana",
    "ef14",
    "ef21",
    "ef21_p",
    "experiments",
    "marina",
    "methods",
    "problems",
    "run",
    "theory",
]
