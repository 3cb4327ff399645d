"""Compiled experiments: :func:`run` a method on a problem and get a :class:`Trace`.

:func:`run` compiles a whole run (or a sweep over hyperparameters and seeds) into one jitted
``lax.scan`` with the workers mapped by ``vmap`` or ``shard_map``; :class:`Trace` holds the
logged metrics (suboptimality, gradient norm, distance to the optimum, exact cumulative bits,
rounds) and writes them as JSON or CSV. Named experiments (:data:`EXPERIMENTS`,
:func:`run_experiment`) reproduce the lecture's claims; the ``jaxdist`` command runs them.
"""

from jaxdist.experiments._named import EXPERIMENTS as EXPERIMENTS
from jaxdist.experiments._named import Arm as Arm
from jaxdist.experiments._named import Experiment as Experiment
from jaxdist.experiments._named import load_traces as load_traces
from jaxdist.experiments._named import run_experiment as run_experiment
from jaxdist.experiments._named import summarize as summarize
from jaxdist.experiments._runner import run as run
from jaxdist.experiments._trace import Trace as Trace

__all__ = [
    "EXPERIMENTS",
    "Arm",
    "Experiment",
    "Trace",
    "load_traces",
    "run",
    "run_experiment",
    "summarize",
]
