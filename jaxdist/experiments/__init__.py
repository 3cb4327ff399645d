"""Compiled experiments: :func:`run` a method on a problem and get a :class:`Trace`.

:func:`run` compiles a whole run (or a sweep over hyperparameters and seeds) into one jitted
``lax.scan`` with the workers mapped by ``vmap`` or ``shard_map``; :class:`Trace` holds the
logged metrics (suboptimality, gradient norm, distance to the optimum, exact cumulative bits,
rounds) and writes them as JSON or CSV. Named experiments (:data:`EXPERIMENTS`,
:func:`run_experiment`) run arms of methods; the lecture's claims
(:mod:`jaxdist.experiments.claims`, one module each, a :class:`Claim` with its check and
figures) are run, checked and indexed by :func:`reproduce`; the ``jaxdist`` command runs both.

The names are imported on first use (PEP 562): the catalogue of named experiments
(:data:`EXPERIMENTS`, plain data) is available without importing JAX; :func:`run` imports it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the private module that defines it.
_EXPORTS = {
    "EXPERIMENTS": "_named",
    "Arm": "_named",
    "Experiment": "_named",
    "load_traces": "_named",
    "run_experiment": "_named",
    "summarize": "_named",
    "run": "_runner",
    "AssumptionWarning": "_runner",
    "DisagreementWarning": "_runner",
    "SolverWarning": "_runner",
    "Trace": "_trace",
    "Claim": "_claims",
    "Context": "_claims",
    "Verdict": "_claims",
    "reproduce": "_reproduce",
}

__all__ = [
    "EXPERIMENTS",
    "Arm",
    "AssumptionWarning",
    "Claim",
    "Context",
    "DisagreementWarning",
    "SolverWarning",
    "Experiment",
    "Trace",
    "Verdict",
    "reproduce",
    "load_traces",
    "run",
    "run_experiment",
    "summarize",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"jaxdist.experiments.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxdist.experiments' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from jaxdist.experiments._claims import Claim, Context, Verdict  # noqa: F401
    from jaxdist.experiments._named import (  # noqa: F401
        EXPERIMENTS,
        Arm,
        Experiment,
        load_traces,
        run_experiment,
        summarize,
    )
    from jaxdist.experiments._reproduce import reproduce  # noqa: F401
    from jaxdist.experiments._runner import (  # noqa: F401
        AssumptionWarning,
        DisagreementWarning,
        SolverWarning,
        run,
    )
    from jaxdist.experiments._trace import Trace  # noqa: F401
