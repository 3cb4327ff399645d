"""The :class:`Trace` returned by :func:`jaxdist.run` and its host-side exact bit totals.

A trace holds, for every logged step of a run (step 0 = the initial point), the optimisation
metrics computed on the device and the communication measured by the methods' ledgers. Bits
are never accumulated on the device: the device returns cumulative *message counts* (int32, one
per message kind) and the host multiplies them by the exact, static message sizes (Python
ints) in int64 (:func:`ledger_bits`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["Trace", "ledger_bits"]

_INT64_MAX = np.iinfo(np.int64).max

# Per-logged-step metric fields (shape [*sweep, num_logged]) in output order.
_SERIES = (
    "loss",
    "f_gap",
    "grad_norm_sq",
    "dist_sq",
    "bits_up",
    "bits_down",
    "bits_up_total",
    "bits_down_total",
    "rounds",
)


def ledger_bits(counts: Any, sizes: Sequence[int]) -> np.ndarray:
    """Exact bits of message counts: ``sum_k counts[..., k] * sizes[k]`` in int64.

    Args:
      counts: integer array ``[..., K]`` of cumulative message counts (any integer dtype; it is
        converted to int64 on the host before multiplying).
      sizes: the ``K`` exact message sizes in bits (Python ints).

    Returns:
      An int64 array of shape ``counts.shape[:-1]``.

    Raises:
      ValueError: negative counts or sizes, or a ``K`` that does not match.
      OverflowError: a total that would not fit in int64.
    """
    counts = np.asarray(counts)
    if not np.issubdtype(counts.dtype, np.integer):
        raise TypeError(f"counts must be an integer array, got dtype {counts.dtype}")
    sizes_list = [int(s) for s in sizes]
    if counts.shape[-1:] != (len(sizes_list),):
        raise ValueError(
            f"counts has {counts.shape[-1:]} message kinds but {len(sizes_list)} sizes were given"
        )
    if any(s < 0 for s in sizes_list):
        raise ValueError(f"message sizes must be >= 0, got {sizes_list}")
    counts = counts.astype(np.int64)
    if counts.size and counts.min() < 0:
        raise ValueError("message counts must be >= 0 (an int32 counter overflowed?)")
    # Exact bound with Python ints before multiplying in int64.
    bound = sum(int(counts[..., k].max(initial=0)) * s for k, s in enumerate(sizes_list))
    if bound > _INT64_MAX:
        raise OverflowError(f"a bit total reaches {bound}, which does not fit in int64")
    if not sizes_list:
        return np.zeros(counts.shape[:-1], np.int64)
    return (counts * np.asarray(sizes_list, np.int64)).sum(axis=-1, dtype=np.int64)


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


@dataclasses.dataclass(frozen=True, eq=False)
class Trace:
    """Metrics of one run (or of a sweep of runs) at every logged step, as NumPy arrays.

    Every series has shape ``[*sweep_shape, num_logged]`` where ``sweep_shape`` is
    ``(H,)`` for a sweep over ``H`` hyperparameter values, ``(S,)`` for ``S`` seeds,
    ``(H, S)`` for both and ``()`` for a single run; ``num_logged = num_steps // log_every + 1``
    (entry 0 is the initial point, entry ``j`` the point after ``step[j]`` steps).

    Attributes:
      step: int64 ``[num_logged]``, the number of steps taken at each logged point.
      loss: ``f(x) = (1/M) Σ_m f_m(x)`` in the parameters' dtype (computed on the device).
      f_gap: ``f(x) − f*`` in float64, computed on the host from ``loss`` (NaN when the problem
        has no ``f_star``).
      grad_norm_sq: ``‖∇f(x)‖²`` with ``∇f = (1/M) Σ_m ∇f_m`` (full local gradients).
      dist_sq: ``‖x − x*‖²`` (NaN when the problem has no ``x_star``).
      bits_up: int64, exact cumulative bits sent **up** by one worker: the maximum over workers
        (for every method in jaxdist all workers send the same number of bits, so this is each
        worker's count; the maximum is the bottleneck worker when they differ).
      bits_down: int64, the same for bits received **down** per worker.
      bits_up_total: int64, cumulative bits sent up summed over all workers.
      bits_down_total: int64, cumulative bits sent down summed over all workers.
      rounds: int64, cumulative communication rounds (maximum over workers).
      diverged: bool ``[*sweep_shape]``: some logged loss, gradient norm, distance or parameter
        was not finite (inf/NaN). A diverged run is data, not an error.
      hyperparams: the swept hyperparameter values, name → array ``[H]`` (empty dict if none).
      seeds: int64 ``[S]`` of swept seeds, or ``None``.
      num_workers: M.
      num_steps: the number of steps of the run.
      backend: ``"vmap"`` or ``"shard_map"``.

    Methods without a ledger (e.g. a plain ``optax.sgd``) report zero bits and rounds.
    """

    step: np.ndarray
    loss: np.ndarray
    f_gap: np.ndarray
    grad_norm_sq: np.ndarray
    dist_sq: np.ndarray
    bits_up: np.ndarray
    bits_down: np.ndarray
    bits_up_total: np.ndarray
    bits_down_total: np.ndarray
    rounds: np.ndarray
    diverged: np.ndarray
    hyperparams: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    seeds: np.ndarray | None = None
    num_workers: int = 1
    num_steps: int = 0
    backend: str = "vmap"

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

    def __getitem__(self, index: Any) -> Trace:
        """Selects runs along the sweep axes (e.g. ``trace[2, 0]``: hyperparameter 2, seed 0).

        Args:
          index: an index into the sweep axes (not the step axis).

        Returns:
          The :class:`Trace` of the selected runs. Swept values are kept only for axes that
          survive the indexing with their full length; others are dropped.
        """
        if not isinstance(index, tuple):
            index = (index,)
        if len(index) > len(self.sweep_shape):
            raise IndexError(f"too many indices for a trace with sweep shape {self.sweep_shape}")
        fields = {f: getattr(self, f)[index] for f in _SERIES}
        diverged = self.diverged[index]
        # Keep the swept values of axes that were sliced (not integer-indexed).
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
            self, **fields, diverged=diverged, hyperparams=hyper, seeds=seeds
        )

    def modelled_time(
        self, alpha: float, beta: float, *, model: str = "parameter_server"
    ) -> np.ndarray:
        """Modelled wall-clock communication time (α–β model, THEORY.md §4), in seconds.

        Every round costs a latency ``α`` each way and every bit ``β`` seconds (β is inverse
        bandwidth). Because the models are linear in the cumulative counts they apply to the
        whole trace at once:

        * ``"parameter_server"``: one server NIC serialises all traffic (THEORY.md §4: a dense
          round costs 2α + 2M·d·b·β):
          ``2α·rounds + β·(bits_up_total + bits_down_total)``;
        * ``"independent_links"``: every worker has its own link to the server (a dense round
          costs 2(α + d·b·β)): ``2α·rounds + β·(bits_up + bits_down)``.

        Computation time is not modelled.

        Args:
          alpha: latency per message in seconds, ``>= 0``.
          beta: seconds per bit, ``>= 0``.
          model: ``"parameter_server"`` or ``"independent_links"``.

        Returns:
          float64 seconds of shape ``[*sweep_shape, num_logged]``.
        """
        alpha, beta = float(alpha), float(beta)
        if not (alpha >= 0 and beta >= 0):
            raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        rounds = self.rounds.astype(np.float64)
        if model == "parameter_server":
            bits = self.bits_up_total.astype(np.float64) + self.bits_down_total
        elif model == "independent_links":
            bits = self.bits_up.astype(np.float64) + self.bits_down
        else:
            raise ValueError(
                f"model must be 'parameter_server' or 'independent_links', got {model!r}"
            )
        return 2.0 * alpha * rounds + beta * bits

    # -- machine-readable forms -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (exact: ints stay ints, floats keep every bit).

        Arrays are stored as ``{"dtype", "shape", "data"}``; non-finite floats are written as
        the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` so the JSON stays strict.

        Returns:
          A dictionary that :meth:`from_dict` turns back into an equal trace.
        """
        out: dict[str, Any] = {
            "num_workers": int(self.num_workers),
            "num_steps": int(self.num_steps),
            "backend": self.backend,
            "step": _array_to_json(self.step),
            "diverged": _array_to_json(self.diverged),
            "hyperparams": {k: _array_to_json(np.asarray(v)) for k, v in self.hyperparams.items()},
            "seeds": None if self.seeds is None else _array_to_json(np.asarray(self.seeds)),
        }
        for name in _SERIES:
            out[name] = _array_to_json(getattr(self, name))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Trace:
        """Inverse of :meth:`to_dict`.

        Args:
          d: a dictionary produced by :meth:`to_dict` (or parsed from :meth:`to_json`).

        Returns:
          The :class:`Trace`.
        """
        fields = {name: _array_from_json(d[name]) for name in _SERIES}
        return cls(
            step=_array_from_json(d["step"]),
            diverged=_array_from_json(d["diverged"]),
            hyperparams={k: _array_from_json(v) for k, v in d.get("hyperparams", {}).items()},
            seeds=None if d.get("seeds") is None else _array_from_json(d["seeds"]),
            num_workers=int(d["num_workers"]),
            num_steps=int(d["num_steps"]),
            backend=str(d["backend"]),
            **fields,
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
        """Long-format CSV: one row per run and logged step.

        Columns: the swept hyperparameter names (if any), ``seed`` (if swept), ``step``, every
        metric series and ``diverged`` (of the whole run). Floats
        are written in NumPy's shortest round-trip form for their dtype (``nan``/``inf`` for
        non-finite values).

        Args:
          path: if given, the CSV is also written to this file.

        Returns:
          The CSV text.
        """
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        hp_names = list(self.hyperparams)
        header = [*hp_names]
        if self.seeds is not None:
            header.append("seed")
        header += ["step", *_SERIES]
        header.append("diverged")
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
                row += [_scalar(getattr(self, name)[run_index][j]) for name in _SERIES]
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
            f"diverged={int(np.sum(self.diverged))}/{self.diverged.size})"
        )


def _scalar(x: Any) -> Any:
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):
        return int(x)
    if np.issubdtype(x.dtype, np.bool_):
        return int(x)
    return str(x[()])  # NumPy's shortest round-trip repr for the dtype ("nan", "inf" too)
