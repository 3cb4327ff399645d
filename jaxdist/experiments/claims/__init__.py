"""The lecture's claims, one module each (see :mod:`jaxdist.experiments._claims`).

``CLAIMS`` maps each claim's name to its module, in the lecture's order; a module is imported
only when its claim is used (listing the claims imports no JAX). Each module defines ``CLAIM``,
a :class:`~jaxdist.experiments.Claim`.

    >>> from jaxdist.experiments.claims import CLAIMS, get_claim
    >>> "acceleration" in CLAIMS
    True
    >>> get_claim("acceleration").section
    '§4'
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["CLAIMS", "get_claim"]

CLAIMS: dict[str, str] = {
    "bits_vs_workers": "bits_vs_workers",
    "compressor_constants": "compressor_constants",
    "compressed_gd": "compressed_gd",
    "shared_randomness": "shared_randomness",
    "topology": "topology",
    "counterexample": "counterexample",
    "neural_network": "neural_network",
    "local_steps": "local_steps",
    "acceleration": "acceleration",
    "similarity": "similarity",
    "bidirectional": "bidirectional",
}


def get_claim(name: str) -> Any:
    """The :class:`~jaxdist.experiments.Claim` called ``name``.

    Raises:
      ValueError: an unknown name (the message lists the valid ones).
    """
    if name not in CLAIMS:
        raise ValueError(f"unknown claim {name!r}; choose from {', '.join(CLAIMS)}")
    return importlib.import_module(f"{__name__}.{CLAIMS[name]}").CLAIM
