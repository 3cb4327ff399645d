"""The :class:`Trace` returned by :func:`jaxdist.run` and its host-side exact bit totals.

A trace holds, for every logged round of a run (round 0 = the initial point), named series of
the optimisation metrics computed on the device and the communication measured by the methods'
ledgers. Bits are never accumulated on the device: the device returns cumulative *message
counts* (int32, one per message kind) and the host multiplies them by the exact, static message
sizes (Python ints) in int64 (:func:`jaxdist.comm.exact_bits`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["Trace", "CORE_SERIES"]


def _encode_float(x: float) -> float | str:
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def _decode_float(x: Any) -> float:
    return float(x)  # float("NaN"), float("Infinity"), float("-Infinity") all parse.


def _array_to_json(a: np.ndarray) -> dict[str, Any]:
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.floating):
        # float64 holds every float32/float16 value exactly; repr(float) round-trips.
        data = np.vectorize(_encode_float, otypes=[object])(a.astype(np.float64)).tolist()
    else:
        data = a.tolist()
    return {"dtype": a.dtype.name, "shape": list(a.shape), "data": data}


def _array_from_json(obj: Mapping[str, Any]) -> np.ndarray:
    dtype = np.dtype(obj["dtype"])
    data = obj["data"]
    if np.issubdtype(dtype, np.floating):
        flat = np.asarray(data, dtype=object).reshape(-1)
        a = np.array([_decode_float(x) for x in flat], dtype=np.float64).astype(dtype)
    else:
        a = np.asarray(data, dtype=dtype).reshape(-1)
    return a.reshape(tuple(obj["shape"]))


# The series every trace has, in output order; a method's ``info`` adds more after them.
CORE_SERIES = (
    "loss",
    "f_gap",
    "grad_norm_sq",
    "dist_sq",
    "consensus_sq",
    "bits_up",
    "bits_down",
    "bits_up_total",
    "bits_down_total",
    "rounds",
)


@dataclasses.dataclass(frozen=True, eq=False)
class Trace:
    r"""Named series of one run (or of a sweep of runs) at every logged round, plus metadata.

    Every series has shape ``[*sweep_shape, num_logged]`` where ``sweep_shape`` is ``(H,)``
    for a sweep over ``H`` hyperparameter values, ``(S,)`` for ``S`` seeds, ``(H, S)`` for
    both and ``()`` for a single run. Entry 0 is the initial point; entry ``j`` the point after
    ``step[j]`` rounds (every ``log_every`` rounds, and always the last round). Series are
    attributes: ``trace.f_gap``, ``trace.bits_up``, ``trace["grad_evals"]``.

    Series every trace has (metrics are taken at the model ``params(state)`` of the method,
    averaged over workers when their copies differ):

    * ``loss``: :math:`f(\bar x) = \frac1M\sum_m f_m(\bar x)` (parameters' dtype);
    * ``f_gap``: ``loss − f*`` in float64 on the host (NaN without ``f_star``);
    * ``grad_norm_sq``: :math:`\|\nabla f(\bar x)\|^2` (full local gradients);
    * ``dist_sq``: :math:`\|\bar x - x^\star\|^2` (NaN without ``x_star``);
    * ``consensus_sq``: :math:`\frac1M\sum_m\|x_m - \bar x\|^2`, exactly 0 when every
      worker holds the same model (:attr:`agreed`);
    * ``bits_up`` / ``bits_down``: int64, exact cumulative bits sent up / received down by one
      worker (the maximum over workers: the bottleneck worker when they differ);
    * ``bits_up_total`` / ``bits_down_total``: int64, the same summed over all workers;
    * ``rounds``: int64, cumulative communication rounds (maximum over workers; from the
      ledgers, so a round with no communication counts 0 and DANE's iteration counts 2);
    * ``time`` (when :func:`~jaxdist.run` was given a network model): modelled communication
      seconds under the α–β model (:class:`jaxdist.comm.NetworkModel`);
    * every entry of the method's ``info`` (``grad_evals`` for every method): integer entries
      are cumulative over rounds (int64, maximum over workers), float entries are the values
      at the logged rounds (mean over workers).

    Attributes:
      step: int64 ``[num_logged]``, the number of rounds taken at each logged point.
      series: name → array, the series above.
      diverged: bool ``[*sweep_shape]``: some logged value was not finite, or the
        suboptimality (``f_gap``, else ``grad_norm_sq``) grew above ``divergence_factor`` times
        its initial value. A diverged run is data, not an error.
      hyperparams: the swept hyperparameter values, name → array ``[H]`` (empty dict if none).
      seeds: int64 ``[S]`` of swept seeds, or ``None``.
      num_workers: M.
      num_steps: the number of rounds of the run.
      backend: ``"vmap"`` or ``"shard_map"``.
      meta: other metadata (JSON-ready), e.g. the network model.
    """

    step: np.ndarray
    series: Mapping[str, np.ndarray]
    diverged: np.ndarray
    hyperparams: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    seeds: np.ndarray | None = None
    num_workers: int = 1
    num_steps: int = 0
    backend: str = "vmap"
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("__"):
            raise AttributeError(name)
        series = object.__getattribute__(self, "series")
        if name in series:
            return series[name]
        raise AttributeError(
            f"this trace has no attribute or series {name!r}; its series are {list(series)}"
        )

    def __getitem__(self, index: Any) -> Any:
        """``trace["name"]`` is a series; any other index selects runs along the sweep axes
        (e.g. ``trace[2, 0]``: hyperparameter 2, seed 0)."""
        if isinstance(index, str):
            if index not in self.series:
                raise KeyError(f"no series {index!r}; the series are {list(self.series)}")
            return self.series[index]
        if not isinstance(index, tuple):
            index = (index,)
        if len(index) > len(self.sweep_shape):
            raise IndexError(f"too many indices for a trace with sweep shape {self.sweep_shape}")
        series = {k: np.asarray(v)[index] for k, v in self.series.items()}
        diverged = self.diverged[index]
        axes = self.sweep_axes
        hyper: dict[str, np.ndarray] = {}
        seeds = None
        padded = index + (slice(None),) * (len(axes) - len(index))
        for name, idx in zip(axes, padded, strict=True):
            if isinstance(idx, int | np.integer):
                continue
            if name == "hyperparams":
                hyper = {k: np.asarray(v)[idx] for k, v in self.hyperparams.items()}
            else:
                seeds = np.asarray(self.seeds)[idx]
        return dataclasses.replace(
            self, series=series, diverged=diverged, hyperparams=hyper, seeds=seeds
        )

    @property
    def sweep_shape(self) -> tuple[int, ...]:
        """The leading sweep axes: ``()``, ``(H,)``, ``(S,)`` or ``(H, S)``."""
        return tuple(self.diverged.shape)

    @property
    def sweep_axes(self) -> tuple[str, ...]:
        """Names of the leading axes: a subset of ``("hyperparams", "seeds")``, in that order."""
        axes = []
        if self.hyperparams:
            axes.append("hyperparams")
        if self.seeds is not None:
            axes.append("seeds")
        return tuple(axes)

    @property
    def agreed(self) -> np.ndarray:
        """bool ``[*sweep_shape]``: every worker held the same model at every logged round."""
        return np.all(np.asarray(self.series["consensus_sq"]) == 0, axis=-1)

    def modelled_time(self, network: Any) -> np.ndarray:
        """Modelled communication seconds of every logged point under ``network``.

        Args:
          network: a :class:`jaxdist.comm.NetworkModel` (latency, seconds per bit, topology).

        Returns:
          float64 seconds of shape ``[*sweep_shape, num_logged]``.
        """
        return network.time(
            rounds=self.series["rounds"],
            bits_up=self.series["bits_up"],
            bits_down=self.series["bits_down"],
            bits_up_total=self.series["bits_up_total"],
            bits_down_total=self.series["bits_down_total"],
            num_workers=self.num_workers,
        )

    # -- machine-readable forms -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (exact: ints stay ints, floats keep every bit).

        Arrays are stored as ``{"dtype", "shape", "data"}``; non-finite floats are written as
        the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` so the JSON stays strict.

        Returns:
          A dictionary that :meth:`from_dict` turns back into an equal trace.
        """
        return {
            "num_workers": int(self.num_workers),
            "num_steps": int(self.num_steps),
            "backend": self.backend,
            "meta": dict(self.meta),
            "step": _array_to_json(self.step),
            "diverged": _array_to_json(self.diverged),
            "hyperparams": {k: _array_to_json(np.asarray(v)) for k, v in self.hyperparams.items()},
            "seeds": None if self.seeds is None else _array_to_json(np.asarray(self.seeds)),
            "series": {k: _array_to_json(np.asarray(v)) for k, v in self.series.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Trace:
        """Inverse of :meth:`to_dict`.

        Args:
          d: a dictionary produced by :meth:`to_dict` (or parsed from :meth:`to_json`).

        Returns:
          The :class:`Trace`.
        """
        return cls(
            step=_array_from_json(d["step"]),
            series={k: _array_from_json(v) for k, v in d["series"].items()},
            diverged=_array_from_json(d["diverged"]),
            hyperparams={k: _array_from_json(v) for k, v in d.get("hyperparams", {}).items()},
            seeds=None if d.get("seeds") is None else _array_from_json(d["seeds"]),
            num_workers=int(d["num_workers"]),
            num_steps=int(d["num_steps"]),
            backend=str(d["backend"]),
            meta=dict(d.get("meta", {})),
        )

    def to_json(self, path: str | None = None, **kwargs: Any) -> str:
        """Strict JSON (no bare NaN/Infinity tokens) of :meth:`to_dict`.

        Args:
          path: if given, the JSON is also written to this file.
          **kwargs: passed to :func:`json.dumps` (e.g. ``indent=2``).

        Returns:
          The JSON text.
        """
        text = json.dumps(self.to_dict(), allow_nan=False, **kwargs)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    @classmethod
    def from_json(cls, text: str) -> Trace:
        """Parses :meth:`to_json` output.

        Args:
          text: JSON text.

        Returns:
          The :class:`Trace`.
        """
        return cls.from_dict(json.loads(text))

    def to_csv(self, path: str | None = None) -> str:
        """Long-format CSV: one row per run and logged round.

        Columns: the swept hyperparameter names (if any), ``seed`` (if swept), ``step``, every
        series and ``diverged`` (of the whole run). Floats are written in NumPy's shortest
        round-trip form for their dtype (``nan``/``inf`` for non-finite values).

        Args:
          path: if given, the CSV is also written to this file.

        Returns:
          The CSV text.
        """
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        hp_names = list(self.hyperparams)
        names = list(self.series)
        header = [*hp_names]
        if self.seeds is not None:
            header.append("seed")
        header += ["step", *names, "diverged"]
        writer.writerow(header)
        axes = self.sweep_axes
        for run_index in np.ndindex(*self.sweep_shape):
            prefix: list[Any] = []
            for name, i in zip(axes, run_index, strict=True):
                if name == "hyperparams":
                    prefix += [_scalar(self.hyperparams[k][i]) for k in hp_names]
                else:
                    prefix.append(int(self.seeds[i]))
            diverged = bool(self.diverged[run_index])
            for j, s in enumerate(self.step):
                row = [*prefix, int(s)]
                row += [_scalar(np.asarray(self.series[name])[run_index][j]) for name in names]
                row.append(int(diverged))
                writer.writerow(row)
        text = buf.getvalue()
        if path is not None:
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(text)
        return text

    def __repr__(self) -> str:
        return (
            f"Trace(sweep_shape={self.sweep_shape}, num_logged={len(self.step)}, "
            f"num_steps={self.num_steps}, num_workers={self.num_workers}, "
            f"series={list(self.series)}, diverged={int(np.sum(self.diverged))}/"
            f"{self.diverged.size})"
        )


def _scalar(x: Any) -> Any:
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):
        return int(x)
    if np.issubdtype(x.dtype, np.bool_):
        return int(x)
    return str(x[()])  # NumPy's shortest round-trip repr for the dtype ("nan", "inf" too)
