"""MNIST (shipped with the repository in data/mnist) and the MLP problem on it."""

from __future__ import annotations

import gzip
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdist
from jaxdist.problems import MNIST_FILES, load_mnist, mlp_apply, mlp_init, mnist_mlp

REPO_MNIST = pathlib.Path(__file__).resolve().parents[1] / "data" / "mnist"


@pytest.fixture(scope="module")
def raw():
    return load_mnist()


def test_load_mnist_reads_the_shipped_files(raw):
    """The statistics of data/mnist/README.md: shapes, label counts, mean training pixel."""
    assert raw["x_train"].shape == (60000, 784) and raw["x_test"].shape == (10000, 784)
    assert raw["x_train"].dtype == np.uint8
    counts = np.bincount(raw["y_train"], minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test_counts = np.bincount(raw["y_test"], minlength=10).tolist()
    assert test_counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert round(float(raw["x_train"].mean()), 3) == 33.318
    same = load_mnist(REPO_MNIST)
    np.testing.assert_array_equal(same["x_test"], raw["x_test"])


def test_load_mnist_errors_name_the_problem(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz not found in"):
        load_mnist(tmp_path)
    for f in MNIST_FILES.values():
        shutil.copy(REPO_MNIST / f, tmp_path / f)
    with gzip.open(tmp_path / MNIST_FILES["y_test"], "wb") as f:
        f.write((2049).to_bytes(4, "big") + (10000).to_bytes(4, "big") + bytes(10))
    with pytest.raises(ValueError, match="truncated"):
        load_mnist(tmp_path)
    with gzip.open(tmp_path / MNIST_FILES["y_test"], "wb") as f:
        f.write((1234).to_bytes(4, "big") + bytes(8))
    with pytest.raises(ValueError, match="not an IDX label file"):
        load_mnist(tmp_path)
    monkeypatch.setenv("JAXDIST_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_mnist()


def test_mlp_matches_a_numpy_forward_pass():
    layers = mlp_init(0, (6, 5, 3))
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    h = np.maximum(x @ np.asarray(layers[0]["w"]) + np.asarray(layers[0]["b"]), 0)
    want = h @ np.asarray(layers[1]["w"]) + np.asarray(layers[1]["b"])
    np.testing.assert_allclose(mlp_apply(layers, jnp.asarray(x)), want, rtol=1e-5, atol=1e-6)
    w = np.asarray(mlp_init(1, (784, 256, 10))[0]["w"])
    assert abs(w.std() - np.sqrt(2 / 784)) < 0.02 * np.sqrt(2 / 784)  # He init


@pytest.fixture(scope="module")
def small():
    return mnist_mlp(4, hidden=(16,), train_size=2000, key=1)


def test_mnist_mlp_problem(small):
    p = mnist_mlp(10, train_size=1000)
    assert p.dim == 203_530 == 784 * 256 + 256 + 256 * 10 + 10  # the lecture's network
    assert small.dim == 784 * 16 + 16 + 16 * 10 + 10
    assert small.data["x"].shape == (4, 500, 784) and small.data["y"].dtype == jnp.int32
    assert float(small.data["x"].max()) <= 1.0 and float(small.data["x"].min()) >= 0.0
    test = small.info["test_data"]
    assert test["x"].shape == (4, 2500, 784)
    # the workers' shares are disjoint images
    rows = np.asarray(small.data["x"]).reshape(2000, -1)
    assert len({r.tobytes() for r in rows}) > 1990  # MNIST has a few duplicate images
    # cross-entropy of a fresh network is about log 10, and by hand on worker 0
    data_0 = jax.tree_util.tree_map(lambda a: a[0], small.data)
    layers = small.info["unravel"](small.init_params)
    logits = np.asarray(mlp_apply(layers, data_0["x"]), np.float64)
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    want = -np.mean(logp[np.arange(500), np.asarray(data_0["y"])])
    np.testing.assert_allclose(small.loss(small.init_params, data_0), want, rtol=1e-5)
    assert 1.5 < want < 4.0
    assert np.isnan(small.L) and small.mu == 0.0
    with pytest.raises(ValueError, match="exceeds the 60000"):
        mnist_mlp(2, train_size=70000)


def test_mnist_mlp_trains_and_reports_test_accuracy(small):
    tx = optax.chain(jaxdist.dgd(), optax.sgd(0.2))
    trace = jaxdist.run(
        tx, small, 200, 0, batch_size=16, log_every=100, metrics=small.info["metrics"]
    )
    acc = trace.series["test_accuracy"]
    assert acc.shape == (3,) and 0.0 <= acc[0] < 0.3 and acc[-1] > 0.75
    assert trace.series["test_loss"][-1] < trace.series["test_loss"][0]
    assert trace.loss[-1] < 0.7 * trace.loss[0]
    # by hand: the test accuracy of the final model, over the whole split test set
    test = small.info["test_data"]
    fn = small.info["metrics"]["test_accuracy"][0]
    # the final model is not in the trace; the first point (x⁰) is checked exactly instead
    shares = [{k: v[m] for k, v in test.items()} for m in range(4)]
    by_hand = np.mean([float(fn(small.init_params, share)) for share in shares])
    np.testing.assert_allclose(acc[0], by_hand, rtol=1e-6)
