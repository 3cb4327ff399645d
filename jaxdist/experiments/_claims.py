"""Claims of the lecture as checked experiments: a :class:`Claim` runs, checks and plots itself.

A claim is one module of :mod:`jaxdist.experiments.claims` (one file per claim of
``LECTURE.md``). It declares its sizes (``quick`` for tests and ``reproduce --quick``, ``full``
for publishable figures) and three functions:

* ``run(ctx) -> results``: the measurements as JSON data. Every expensive piece goes through
  :meth:`Context.unit`, which stores it in its own file keyed on a hash of its whole
  configuration (written atomically): an interrupted run resumes with every finished unit
  loaded, and a unit whose configuration changed is rerun, never loaded stale.
* ``check(results) -> Verdict``: the claim as a computed verdict, the measured number printed
  next to the predicted one. A check is a function of the results alone, so the tests can hand
  it wrong data and watch it fail.
* ``plot(results, verdict, folder) -> [paths]``: the figures (PNG and PDF), titled with the
  claim and its verdict.

:func:`jaxdist.experiments.reproduce` runs claims and writes an index page. This module
imports neither JAX nor matplotlib.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

__all__ = ["Claim", "Context", "Verdict"]


class _Lazy:
    """A module imported on first attribute access: the claims' modules use ``np`` from here,
    so that listing the claims (``jaxdist --help``) imports neither NumPy nor JAX."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attr)


np: Any = _Lazy("numpy")

# Part of every unit's hash: bump it when the meaning of stored results changes.
_FORMAT = 1


class Verdict(NamedTuple):
    """The outcome of a claim's check.

    Attributes:
      passed: whether the measurement agrees with the prediction.
      measured: the measured value(s), as text ("DIANA reaches 3e-13, DCGD plateaus at 4e-5").
      predicted: the prediction it is compared with ("neighbourhood in [1e-5, 3e-4]").
      details: per-sub-check lines (each with its own PASS/FAIL), for the index page.
    """

    passed: bool
    measured: str
    predicted: str
    details: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        """A short verdict for a figure's title: ``PASS (all 6 checks)`` or ``FAIL (2 of 6)``."""
        n = max(1, len(self.details))
        if self.passed:
            return f"PASS (all {n} checks)" if n > 1 else "PASS"
        failed = sum(line.endswith("FAIL") for line in self.details) or 1
        return f"FAIL ({failed} of {n} checks)" if n > 1 else "FAIL"

    @property
    def text(self) -> str:
        """One line: ``measured (predicted ...): PASS`` per sub-check, or for the whole."""
        if self.details:
            return " | ".join(self.details)
        return f"{self.measured} (predicted {self.predicted}): {'PASS' if self.passed else 'FAIL'}"


def verdict(parts: list[tuple[bool, str, str]]) -> Verdict:
    """Combines sub-checks ``(passed, measured, predicted)`` into one :class:`Verdict`."""
    details = tuple(f"{m} (predicted {p}): {'PASS' if ok else 'FAIL'}" for ok, m, p in parts)
    return Verdict(
        passed=all(ok for ok, _, _ in parts),
        measured="; ".join(m for _, m, _ in parts),
        predicted="; ".join(p for _, _, p in parts),
        details=details,
    )


def first_below(values: Any, threshold: float) -> int | None:
    """The first index where ``values <= threshold`` (None if never): "rounds to ε"."""
    hit = np.flatnonzero(np.asarray(values) <= threshold)
    return int(hit[0]) if hit.size else None


def loglog_slope(x: Any, y: Any) -> float:
    """Least-squares slope of log y against log x: a fitted rate exponent (NaN if some y is
    None, i.e. some point never reached its target)."""
    if any(v is None for v in y):
        return float("nan")
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def slope_check(what: str, slope: float, theory: float, lo: float, hi: float, var: str):
    """A sub-check ``(passed, measured, predicted)``: ``what ∝ var^slope`` inside [lo, hi]."""
    return (
        bool(lo <= slope <= hi),
        f"{what} ∝ {var}^{slope:.3f}",
        f"{var}^{theory:g}, in [{lo}, {hi}]",
    )


def atomic_write(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and ``os.replace`` (atomic)."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def config_hash(config: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of ``config`` as canonical JSON."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass
class Context:
    """Where and how a claim runs: its folder, size, seed, and the cache of its units.

    Args:
      claim: the claim's name.
      folder: its results folder (``<out>/<claim>``).
      size: ``"quick"`` or ``"full"``.
      seed: the seed of every run (an integer in ``[0, 2**32)``).
      force: rerun every unit even when a stored one matches.
      log: where progress lines go.
      version: the claim's :attr:`Claim.version` (part of every unit's hash).
    """

    claim: str
    folder: str
    size: str
    seed: int = 0
    force: bool = False
    log: Callable[[str], None] = print
    version: int = 1
    units_run: int = 0
    units_loaded: int = 0
    compute_seconds: float = 0.0  # the units' own compute time, loaded ones included

    def unit(self, name: str, config: Mapping[str, Any], fn: Callable[[], Any]) -> Any:
        """``fn()``'s JSON result, loaded from ``<folder>/units/<name>.json`` if its config matches.

        Args:
          name: the unit's file stem (letters, digits, ``_``, ``-``, ``.``).
          config: everything the result depends on (JSON data); the claim and its version,
            its size, the seed and jaxdist's version are added.
          fn: computes the result (JSON data: numbers, strings, lists, dicts).

        Returns:
          The result.
        """
        from jaxdist import __version__

        if not name or not all(c.isalnum() or c in "_-." for c in name):
            raise ValueError(f"unit name must be letters, digits, '_', '-', '.', got {name!r}")
        full = {
            "format": _FORMAT,
            "jaxdist": __version__,
            "claim": self.claim,
            "version": self.version,
            "unit": name,
            "size": self.size,
            "seed": self.seed,
            "config": dict(config),
        }
        digest = config_hash(full)
        path = os.path.join(self.folder, "units", f"{name}.json")
        if not self.force:
            try:
                with open(path) as f:
                    saved = json.load(f)
                if isinstance(saved, dict) and saved.get("hash") == digest:
                    self.units_loaded += 1
                    self.compute_seconds += float(saved.get("seconds", 0.0))
                    return saved["result"]
                self.log(f"[{self.claim}] {name}: configuration changed, rerunning")
            except FileNotFoundError:
                pass
            except (OSError, ValueError, KeyError):
                self.log(f"[{self.claim}] {name}: unreadable stored result, rerunning")
        t = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t
        text = json.dumps(
            {"hash": digest, "config": full, "seconds": round(seconds, 3), "result": result},
            allow_nan=False,
        )
        atomic_write(path, text)
        self.units_run += 1
        self.compute_seconds += seconds
        self.log(f"[{self.claim}] {name}: ran in {seconds:.1f} s")
        return result


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of the lecture, with its experiment, its check and its figures.

    Args:
      name: the claim's name (``jaxdist run NAME``; its results folder).
      section: where the lecture makes it ("§1", "§4.2").
      claim: the claim in one sentence.
      run: ``run(ctx) -> results`` (JSON data), sized by ``ctx.size``.
      check: ``check(results) -> Verdict``.
      plot: ``plot(results, verdict, folder) -> [paths]`` (matplotlib imported inside).
      quick_seconds: about how long the quick size takes on 2 CPU cores (for progress).
      version: bump it when the claim's code changes what a unit computes, so stored units
        are rerun rather than loaded.
    """

    name: str
    section: str
    claim: str
    run: Callable[[Context], Any]
    check: Callable[[Any], Verdict]
    plot: Callable[[Any, Verdict, str], list[str]]
    quick_seconds: float = 30.0
    version: int = 1
