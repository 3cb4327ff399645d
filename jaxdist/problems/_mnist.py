"""MNIST and a small multilayer perceptron on it: the lecture's neural-network experiment.

MNIST (LeCun, Cortes, Burges; 60000 training and 10000 test images of 28×28 digits) ships with
the *repository* in ``data/mnist/`` (four gzip-compressed IDX files, about 11 MB, with their
provenance in ``data/mnist/README.md``), not with the wheel: :func:`load_mnist` reads it from
there in a checkout, or from any folder holding the four standard files.

:func:`mnist_mlp` is the distributed problem: an MLP ``784 → hidden → … → 10`` with ReLU
activations and the mean softmax cross-entropy, its parameters flattened into one vector (as
every jaxdist problem), the training set split over the workers, and the test set split the same
way so that ``jaxdist.run(..., metrics=problem.info["metrics"])`` records the test accuracy and
loss (each worker evaluates its share; the runner averages). The loss is nonconvex: ``L`` and
``mu`` are unknown (NaN and 0), so step sizes are the user's.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxdist._validate import as_key, check_int
from jaxdist.problems._base import Problem
from jaxdist.problems._sampling import sample_minibatch
from jaxdist.problems._splits import split_iid

__all__ = ["load_mnist", "mnist_mlp", "mlp_init", "mlp_apply", "MNIST_FILES"]

#: The four standard IDX files (gzip-compressed) that :func:`load_mnist` reads.
MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
_COUNTS = {"x_train": 60000, "y_train": 60000, "x_test": 10000, "y_test": 10000}


def _default_folder() -> pathlib.Path | None:
    env = os.environ.get("JAXDIST_MNIST")
    if env:
        return pathlib.Path(env)
    repo = pathlib.Path(__file__).resolve().parents[2] / "data" / "mnist"
    return repo if repo.is_dir() else None


def _read_idx(path: pathlib.Path, images: bool) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if images:
        if magic != 2051 or len(raw) < 16:
            raise ValueError(f"{path} is not an IDX image file (magic {magic}, expected 2051)")
        n, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
        if len(raw) != 16 + n * rows * cols:
            raise ValueError(f"{path} is truncated: {len(raw)} bytes for {n}×{rows}×{cols}")
        return np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows * cols)
    if magic != 2049 or len(raw) < 8:
        raise ValueError(f"{path} is not an IDX label file (magic {magic}, expected 2049)")
    n = int.from_bytes(raw[4:8], "big")
    if len(raw) != 8 + n:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes for {n} labels")
    return np.frombuffer(raw, np.uint8, offset=8)


def load_mnist(path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Reads MNIST from a folder of the four standard gzip-compressed IDX files.

    The arrays are read-only and cached per folder (and file modification times), so building
    several problems decompresses the files once.

    Args:
      path: the folder; default ``$JAXDIST_MNIST`` if set, else ``data/mnist`` of the
        repository checkout this package was installed from.

    Returns:
      ``{"x_train": uint8 (60000, 784), "y_train": uint8 (60000,), "x_test": uint8 (10000,
      784), "y_test": uint8 (10000,)}`` (pixels 0…255, labels 0…9).

    Raises:
      FileNotFoundError: no folder given and none found, or a file missing (the message names
        the folder and the files it needs).
      ValueError: a file that is not a valid IDX file of the expected size.
    """
    folder = pathlib.Path(path) if path is not None else _default_folder()
    if folder is None:
        raise FileNotFoundError(
            "MNIST ships with the jaxdist repository (data/mnist/), not with the wheel: pass "
            "path= a folder holding " + ", ".join(MNIST_FILES.values()) + " (or set JAXDIST_MNIST)"
        )
    stamps = []
    for fname in MNIST_FILES.values():
        f = folder / fname
        if not f.is_file():
            raise FileNotFoundError(f"MNIST file {fname} not found in {folder}")
        stamps.append(f.stat().st_mtime_ns)
    return dict(_load_cached(str(folder.resolve()), tuple(stamps)))


@functools.lru_cache(maxsize=2)
def _load_cached(folder: str, stamps: tuple[int, ...]) -> tuple[tuple[str, np.ndarray], ...]:
    out = []
    for name, fname in MNIST_FILES.items():
        f = pathlib.Path(folder) / fname
        a = _read_idx(f, images=name.startswith("x"))
        if a.shape[0] != _COUNTS[name]:
            raise ValueError(f"{f} holds {a.shape[0]} items, expected {_COUNTS[name]}")
        a.flags.writeable = False
        out.append((name, a))
    return tuple(out)


def mlp_init(key: Any, sizes: Sequence[int], dtype: Any = jnp.float32) -> list[dict[str, Any]]:
    """He-normal weights (std √(2/fan_in)) and zero biases for an MLP with layer ``sizes``.

    Args:
      key: a PRNG key or an int seed.
      sizes: layer widths, input first, e.g. ``(784, 256, 10)``.
      dtype: parameter dtype.

    Returns:
      A list of ``{"w": (n_in, n_out), "b": (n_out,)}``, one per layer.
    """
    keys = jax.random.split(as_key(key), len(sizes) - 1)
    return [
        {
            "w": jax.random.normal(k, (n_in, n_out), dtype) * math.sqrt(2.0 / n_in),
            "b": jnp.zeros((n_out,), dtype),
        }
        for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp_apply(layers: Sequence[dict[str, Any]], x: jax.Array) -> jax.Array:
    """The logits of a ReLU MLP: ``relu(x W₁ + b₁) … W_L + b_L``."""
    for layer in layers[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ layers[-1]["w"] + layers[-1]["b"]


def _cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def mnist_mlp(
    num_workers: int,
    *,
    hidden: Sequence[int] = (256,),
    path: str | os.PathLike | None = None,
    train_size: int | None = None,
    key: Any = 0,
    dtype: Any = jnp.float32,
) -> Problem:
    """A ReLU MLP ``784 → hidden → 10`` on MNIST, the training set split iid over the workers.

    f_m(x) is the mean softmax cross-entropy of the MLP with flat parameters x on worker m's
    images (pixels scaled to [0, 1]); every worker gets the same number of images,
    ``train_size // M`` (the remainder is dropped). ``hidden=(256,)`` gives the lecture's network
    of 203,530 parameters. The 10000 test images are split the same way (``10000 // M`` each)
    for the metrics of ``info``.

    Args:
      num_workers: M >= 1.
      hidden: hidden layer widths (each >= 1).
      path: the MNIST folder (see :func:`load_mnist`).
      train_size: use the first ``train_size`` images of a random permutation (default all
        60000).
      key: seed of the split, the subset and the initialisation.
      dtype: parameter and data dtype.

    Returns:
      A :class:`Problem` with ``data = {"x": (M, n, 784), "y": (M, n) int32}``, ``L = NaN``,
      ``mu = 0`` and ``info`` holding ``"sizes"`` (the layer widths), ``"unravel"`` (flat
      parameters → list of layers), ``"test_data"`` (the split test set) and ``"metrics"``
      (``{"test_accuracy": (fn, test_data), "test_loss": (fn, test_data)}``, for
      ``jaxdist.run(..., metrics=...)``).

    Raises:
      FileNotFoundError: MNIST not found (see :func:`load_mnist`).
      ValueError: bad sizes.

    Examples:
      >>> from jaxdist.problems import mnist_mlp
      >>> p = mnist_mlp(10)  # doctest: +SKIP
      >>> p.dim, p.data["x"].shape  # doctest: +SKIP
      (203530, (10, 6000, 784))
    """
    num_workers = check_int("num_workers", num_workers, low=1)
    hidden = tuple(check_int("hidden", h, low=1) for h in hidden)
    raw = load_mnist(path)
    n_all = raw["x_train"].shape[0]
    n_use = n_all if train_size is None else check_int("train_size", train_size, low=1)
    if n_use > n_all:
        raise ValueError(f"train_size={n_use} exceeds the {n_all} MNIST training images")
    if n_use < num_workers:
        raise ValueError(f"train_size={n_use} gives no image to some of the {num_workers} workers")
    seed = int(jax.random.randint(as_key(key), (), 0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    subset = rng.permutation(n_all)[:n_use]
    x = raw["x_train"][subset].astype(np.float32) / 255.0
    y = raw["y_train"][subset].astype(np.int32)
    parts = split_iid(n_use, num_workers, key=seed)
    per = min(len(p) for p in parts)
    idx = np.stack([np.sort(p)[:per] for p in parts])
    n_test = raw["x_test"].shape[0] // num_workers
    test_idx = rng.permutation(raw["x_test"].shape[0])[: n_test * num_workers]
    test_idx = test_idx.reshape(num_workers, n_test)
    xt = raw["x_test"].astype(np.float32) / 255.0
    yt = raw["y_test"].astype(np.int32)
    data = {"x": jnp.asarray(x[idx], dtype), "y": jnp.asarray(y[idx])}
    test_data = {"x": jnp.asarray(xt[test_idx], dtype), "y": jnp.asarray(yt[test_idx])}

    sizes = (784, *hidden, 10)
    flat, unravel = ravel_pytree(mlp_init(jax.random.key(seed), sizes, dtype))

    def loss(params, data_m):
        return _cross_entropy(mlp_apply(unravel(params), data_m["x"]), data_m["y"])

    def accuracy(params, data_m):
        logits = mlp_apply(unravel(params), data_m["x"])
        return jnp.mean((jnp.argmax(logits, axis=-1) == data_m["y"]).astype(logits.dtype))

    return Problem(
        name=f"mnist_mlp(M={num_workers}, sizes={'-'.join(map(str, sizes))}, n={per}/worker)",
        loss=loss,
        data=data,
        init_params=flat,
        num_workers=num_workers,
        dim=int(flat.size),
        L=float("nan"),
        L_m=np.full(num_workers, np.nan),
        mu=0.0,
        sample_fn=sample_minibatch,
        info={
            "sizes": sizes,
            "samples_per_worker": per,
            "unravel": unravel,
            "test_data": test_data,
            "metrics": {"test_accuracy": (accuracy, test_data), "test_loss": (loss, test_data)},
        },
    )
