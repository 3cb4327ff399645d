"""jaxdist: communication-efficient distributed optimization in JAX.

Workers live on a named axis: ``jax.vmap(..., axis_name="workers")`` simulates them on one
device and ``jax.shard_map`` runs the same code on real devices. Compressors are pure functions
of a PRNG key; methods are optax-style ``init/update`` state machines or round-based methods
with ``init/round/params``; everything is measured in exact bits and communication rounds.

Subpackages: :mod:`jaxdist.compressors`, :mod:`jaxdist.comm`, :mod:`jaxdist.methods`,
:mod:`jaxdist.problems`, :mod:`jaxdist.theory`, :mod:`jaxdist.experiments`.

The subpackages are imported on first use (PEP 562), so ``import jaxdist`` and the ``jaxdist``
command start without importing JAX; ``jaxdist.diana`` or ``from jaxdist import run`` import
what they need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0.dev0"

_SUBPACKAGES = ("comm", "compressors", "experiments", "methods", "problems", "theory")

# Public name -> the subpackage that defines it.
_EXPORTS = {
    "Trace": "experiments",
    "run": "experiments",
    "dcgd": "methods",
    "dgd": "methods",
    "diana": "methods",
    "ef14": "methods",
    "ef21": "methods",
    "ef21_p": "methods",
    "marina": "methods",
    "nesterov": "methods",
    "local_gd": "methods",
    "local_sgd": "methods",
    "fedavg": "methods",
    "scaffnew": "methods",
    "fedprox": "methods",
    "fedpaq": "methods",
    "scaffold": "methods",
    "bregman_gd": "methods",
    "dane": "methods",
    "aeg_sliding": "methods",
    "olga": "methods",
    "accumulate": "methods",
    "apply_if_finite": "methods",
    "as_round": "methods",
    "RoundMethod": "methods",
}

__all__ = sorted(["__version__", *_SUBPACKAGES, *_EXPORTS])


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"jaxdist.{name}")
        globals()[name] = module
        return module
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"jaxdist.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxdist' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from jaxdist import comm, compressors, experiments, methods, problems, theory  # noqa: F401
    from jaxdist.experiments import Trace, run  # noqa: F401
    from jaxdist.methods import (  # noqa: F401
        RoundMethod,
        accumulate,
        aeg_sliding,
        apply_if_finite,
        as_round,
        bregman_gd,
        dane,
        dcgd,
        dgd,
        diana,
        ef14,
        ef21,
        ef21_p,
        fedavg,
        fedpaq,
        fedprox,
        local_gd,
        local_sgd,
        marina,
        nesterov,
        olga,
        scaffnew,
        scaffold,
    )
