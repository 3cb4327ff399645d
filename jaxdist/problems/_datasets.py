"""LIBSVM data: a pure NumPy/gzip reader and the small data sets shipped with jaxdist.

The shipped files live in ``jaxdist/data/<name>.gz`` (see ``jaxdist/data/README.md`` for their
sources); their sha256 is checked on every (uncached) load. Any other LIBSVM file, plain or
gzip-compressed, is read from a path. Nothing is downloaded.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.resources
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = ["DATASETS", "list_datasets", "load_libsvm", "parse_libsvm", "dataset_path"]


def _info(n, d, labels, sha256, source):
    return MappingProxyType(
        {
            "n_samples": n,
            "n_features": d,
            "labels": MappingProxyType(labels),
            "sha256": sha256,
            "source": source,
        }
    )


#: Statistics and sha256 of the shipped LIBSVM files (labels as stored in the file).
DATASETS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "a9a": _info(
            32561,
            123,
            {-1.0: 24720, 1.0: 7841},
            "b301f3e87350539f3ebc751d07b4691a8c66f0bf38c1d179c86bbf5e2d9623b2",
            "LIBSVM binary sets (UCI Adult, a9a training split)",
        ),
        "mushrooms": _info(
            8124,
            112,
            {1.0: 3916, 2.0: 4208},
            "c6170f9d3de835051acced088f85c13c96d23038d950b31684d793d5c7be21bd",
            "LIBSVM binary sets (UCI Mushrooms)",
        ),
        "phishing": _info(
            11055,
            68,
            {0.0: 4898, 1.0: 6157},
            "ef3c8253cb6ac33b2849c2c4cee00c4199afe31ecb373c198bbc7e203829b082",
            "LIBSVM binary sets (UCI Phishing Websites)",
        ),
        "w8a": _info(
            49749,
            300,
            {-1.0: 48270, 1.0: 1479},
            "bbb05ebf2874051515c57bb657ee66dfa1cec7293005d6bc0eaf255d45d9befb",
            "LIBSVM binary sets (Platt's w8a)",
        ),
    }
)


def list_datasets() -> tuple[str, ...]:
    """Names of the LIBSVM data sets shipped with jaxdist.

    Returns:
      A sorted tuple of names accepted by :func:`load_libsvm`, e.g.
      ``("a9a", "mushrooms", "phishing", "w8a")``.
    """
    return tuple(sorted(DATASETS))


def dataset_path(name: str) -> str:
    """The file system path of a shipped data set.

    Args:
      name: one of :func:`list_datasets`.

    Returns:
      The path of ``jaxdist/data/<name>.gz`` as a string.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; shipped data sets are {list_datasets()}")
    return str(importlib.resources.files("jaxdist").joinpath("data", f"{name}.gz"))


def load_libsvm(name_or_path: str | os.PathLike, *, n_features: int | None = None):
    """Reads a LIBSVM (svmlight) file into a dense float64 matrix and a label vector.

    Each line is ``label index:value index:value ...`` with 1-based integer indices (any order, no
    duplicates); explicit zeros are allowed, ``#`` starts a comment, blank lines are skipped.
    ``name_or_path`` is either the name of a shipped set (:func:`list_datasets`; its sha256 is
    checked) or a path to a plain or gzip-compressed file (detected from the gzip magic bytes).

    Results are cached in memory (keyed by the resolved path, its size and modification time, and
    ``n_features``); the returned arrays are read-only, so copy them before writing.

    Args:
      name_or_path: a shipped data set name or a path.
      n_features: number of columns; defaults to the largest index in the file. A value smaller
        than that index raises ``ValueError``.

    Returns:
      ``(X, y)``: ``X`` of shape ``(n_samples, n_features)`` and dtype float64, ``y`` of shape
      ``(n_samples,)`` and dtype float64 holding the labels as written in the file (mushrooms uses
      {1, 2}, phishing {0, 1}; no remapping here).

    Raises:
      ValueError: unknown name, missing file, a malformed line (the message gives the line
        number), a sha256 mismatch of a shipped file, or ``n_features`` too small.
    """
    if n_features is not None:
        if isinstance(n_features, bool) or not isinstance(n_features, int | np.integer):
            raise TypeError(f"n_features must be an int, got {n_features!r}")
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got n_features={n_features}")
        n_features = int(n_features)
    key = str(name_or_path)
    if key in DATASETS:
        path, expected = dataset_path(key), DATASETS[key]["sha256"]
    else:
        path, expected = os.path.abspath(os.fspath(name_or_path)), None
        if not os.path.isfile(path):
            raise ValueError(
                f"{name_or_path!r} is neither a shipped data set {list_datasets()} nor an existing "
                "file"
            )
    st = os.stat(path)
    return _load_cached(path, expected, st.st_size, st.st_mtime_ns, n_features)


@functools.lru_cache(maxsize=16)
def _load_cached(path, expected_sha256, size, mtime_ns, n_features):
    del size, mtime_ns  # cache key only
    with open(path, "rb") as fh:
        raw = fh.read()
    if expected_sha256 is not None:
        got = hashlib.sha256(raw).hexdigest()
        if got != expected_sha256:
            raise ValueError(
                f"sha256 mismatch for shipped data file {path}: expected {expected_sha256}, got "
                f"{got}; the installation is corrupted"
            )
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    X, y = parse_libsvm(raw.decode("utf-8"), n_features=n_features, source=path)
    X.flags.writeable = False
    y.flags.writeable = False
    return X, y


def parse_libsvm(text: str, *, n_features: int | None = None, source: str = "<string>"):
    """Parses the text of a LIBSVM file (see :func:`load_libsvm` for the format).

    Args:
      text: the whole file content.
      n_features: number of columns (default: the largest index).
      source: a name used in error messages.

    Returns:
      ``(X, y)`` as float64 NumPy arrays.
    """
    labels: list[float] = []
    line_of_row: list[int] = []
    row_lengths: list[int] = []
    idx_tokens: list[str] = []
    val_tokens: list[str] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        hash_pos = line.find("#")
        if hash_pos >= 0:
            line = line[:hash_pos]
        parts = line.split()
        if not parts:
            continue
        try:
            labels.append(float(parts[0]))
        except ValueError:
            raise ValueError(
                f"{source}, line {lineno}: invalid label {parts[0]!r} (expected one number)"
            ) from None
        pairs = parts[1:]
        for tok in pairs:
            i, sep, v = tok.partition(":")
            if not sep or not i or not v or ":" in v:
                raise ValueError(
                    f"{source}, line {lineno}: malformed entry {tok!r} (expected index:value)"
                )
            idx_tokens.append(i)
            val_tokens.append(v)
        line_of_row.append(lineno)
        row_lengths.append(len(pairs))
    n = len(labels)
    if n == 0:
        raise ValueError(f"{source}: no data lines")
    lengths = np.asarray(row_lengths, dtype=np.int64)
    rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
    try:
        cols = np.asarray(idx_tokens, dtype=np.int64)
    except ValueError:
        cols = None
    try:
        vals = np.asarray(val_tokens, dtype=np.float64)
    except ValueError:
        vals = None
    if cols is None or vals is None:  # slow path: locate the offending token
        for r, (i, v) in enumerate(zip(idx_tokens, val_tokens, strict=True)):
            try:
                int(i)
            except ValueError:
                raise ValueError(
                    f"{source}, line {line_of_row[rows[r]]}: invalid feature index {i!r} "
                    "(expected a positive integer)"
                ) from None
            try:
                float(v)
            except ValueError:
                raise ValueError(
                    f"{source}, line {line_of_row[rows[r]]}: invalid value {v!r} for index {i}"
                ) from None
    if cols.size and cols.min() < 1:
        r = int(np.argmax(cols < 1))
        raise ValueError(
            f"{source}, line {line_of_row[rows[r]]}: feature index {cols[r]} < 1 "
            "(LIBSVM indices are 1-based)"
        )
    if cols.size:
        order = np.lexsort((cols, rows))
        srows, scols = rows[order], cols[order]
        dup = (srows[1:] == srows[:-1]) & (scols[1:] == scols[:-1])
        if dup.any():
            r = int(np.argmax(dup))
            raise ValueError(
                f"{source}, line {line_of_row[srows[r]]}: duplicate feature index {scols[r]}"
            )
    max_index = int(cols.max()) if cols.size else 0
    if n_features is None:
        n_features = max(max_index, 1)
    elif max_index > n_features:
        r = int(np.argmax(cols > n_features))
        raise ValueError(
            f"{source}, line {line_of_row[rows[r]]}: feature index {cols[r]} exceeds "
            f"n_features={n_features}"
        )
    X = np.zeros((n, n_features), dtype=np.float64)
    X[rows, cols - 1] = vals
    y = np.asarray(labels, dtype=np.float64)
    if not np.all(np.isfinite(X)) or not np.all(np.isfinite(y)):
        bad = np.flatnonzero(~np.isfinite(y) | ~np.all(np.isfinite(X), axis=1))[0]
        raise ValueError(f"{source}, line {line_of_row[bad]}: non-finite label or value")
    return X, y
