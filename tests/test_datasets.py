"""Tests of the LIBSVM loader, the shipped data sets and the worker splits."""

import gzip

import jax
import numpy as np
import pytest

from jaxdist import problems as P
from jaxdist.problems import _datasets

# Statistics from shared/data/README.md (labels as stored in the files).
STATS = {
    "mushrooms": (8124, 112, {1.0: 3916, 2.0: 4208}, 170604),
    "a9a": (32561, 123, {-1.0: 24720, 1.0: 7841}, 451592),
    "phishing": (11055, 68, {0.0: 4898, 1.0: 6157}, 331650),
    "w8a": (49749, 300, {-1.0: 48270, 1.0: 1479}, 579586),
}


def test_list_datasets():
    assert P.list_datasets() == ("a9a", "mushrooms", "phishing", "w8a")
    assert set(P.DATASETS) == set(STATS)


@pytest.mark.parametrize("name", sorted(STATS))
def test_shipped_statistics(name):
    n, d, labels, nnz = STATS[name]
    X, y = P.load_libsvm(name)
    assert X.shape == (n, d) and y.shape == (n,)
    assert X.dtype == np.float64 and y.dtype == np.float64
    vals, counts = np.unique(y, return_counts=True)
    assert dict(zip(vals.tolist(), counts.tolist(), strict=True)) == labels
    assert int(np.count_nonzero(X)) == nnz
    info = P.DATASETS[name]
    assert (info["n_samples"], info["n_features"], dict(info["labels"])) == (n, d, labels)
    # cached and read-only
    X2, y2 = P.load_libsvm(name)
    assert X2 is X and y2 is y
    assert not X.flags.writeable and not y.flags.writeable


def test_dataset_specific_values():
    X, _ = P.load_libsvm("mushrooms")
    np.testing.assert_array_equal(np.count_nonzero(X, axis=1), 21)  # 21 one-hot entries per row
    assert set(np.unique(X).tolist()) == {0.0, 1.0}
    X, _ = P.load_libsvm("phishing")
    np.testing.assert_array_equal(np.count_nonzero(X, axis=1), 30)
    assert set(np.unique(X[X != 0]).tolist()) == {0.18257}


def test_sha256_mismatch_is_detected(monkeypatch):
    bad = dict(P.DATASETS)
    bad["mushrooms"] = dict(bad["mushrooms"], sha256="0" * 64)
    monkeypatch.setattr(_datasets, "DATASETS", bad)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        P.load_libsvm("mushrooms")


def _write(tmp_path, text, name="f.txt", compress=False):
    path = tmp_path / name
    data = text.encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _reference_parse(text, n_features):
    """A slow, obviously correct parser."""
    rows, labels = [], []
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        tok = line.split()
        labels.append(float(tok[0]))
        row = np.zeros(n_features)
        for t in tok[1:]:
            i, v = t.split(":")
            row[int(i) - 1] = float(v)
        rows.append(row)
    return np.array(rows), np.array(labels)


@pytest.mark.parametrize("compress", [False, True])
def test_roundtrip_against_reference(tmp_path, compress):
    rng = np.random.default_rng(0)
    n, d = 60, 17
    X = np.where(rng.random((n, d)) < 0.3, rng.standard_normal((n, d)), 0.0)
    X[3, 4] = 0.0
    y = rng.choice([-1.0, 1.0], size=n)
    lines = []
    for i in range(n):
        idx = np.flatnonzero(X[i])
        if i % 7 == 0:
            idx = np.union1d(idx, [4])  # explicit zeros
        idx = rng.permutation(idx)  # unsorted indices are accepted
        pairs = " ".join(f"{j + 1}:{float(X[i, j])!r}" for j in idx)
        lines.append(f"{y[i]:+g} {pairs} ")
    lines.insert(5, "")
    lines.insert(9, "# a comment line")
    lines[12] += " # trailing comment"
    text = "\n".join(lines) + "\n"
    path = _write(tmp_path, text, name="data.bin", compress=compress)  # gzip found by magic
    Xp, yp = P.load_libsvm(path, n_features=d)
    Xr, yr = _reference_parse(text, d)
    np.testing.assert_array_equal(Xp, Xr)
    np.testing.assert_array_equal(Xp, X)
    np.testing.assert_array_equal(yp, y)
    # default n_features = largest index; a larger value pads with zero columns
    Xd, _ = P.load_libsvm(path)
    assert Xd.shape[1] == np.max(np.flatnonzero(X.any(axis=0))) + 1
    Xw, _ = P.load_libsvm(str(path), n_features=d + 5)
    np.testing.assert_array_equal(Xw[:, d:], 0.0)


@pytest.mark.parametrize(
    "text,line,match",
    [
        ("1 1:1\n-1 2 3:1\n", 2, "malformed entry '2'"),
        ("1 1:1\n\nabc 1:1\n", 3, "invalid label 'abc'"),
        ("1 1:1\n1 0:1\n", 2, "index 0 < 1"),
        ("1 1:1\n1 x:1\n", 2, "invalid feature index 'x'"),
        ("1 1.5:1\n", 1, "invalid feature index '1.5'"),
        ("1 1:abc\n", 1, "invalid value 'abc'"),
        ("1 1:1\n1 2:1 2:3\n", 2, "duplicate feature index 2"),
        ("1 1:1:1\n", 1, "malformed entry"),
        ("1 :1\n", 1, "malformed entry"),
        ("1 1:\n", 1, "malformed entry"),
        ("1,2 1:1\n", 1, "invalid label"),
        ("1 1:1\n1 2:nan\n", 2, "non-finite"),
    ],
)
def test_malformed_lines(tmp_path, text, line, match):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=match) as e:
        P.load_libsvm(path)
    assert f"line {line}:" in str(e.value)


def test_loader_errors(tmp_path):
    with pytest.raises(ValueError, match="neither a shipped data set"):
        P.load_libsvm("no_such_dataset")
    with pytest.raises(ValueError, match="no data lines"):
        P.load_libsvm(_write(tmp_path, "\n# only a comment\n"))
    path = _write(tmp_path, "1 3:1\n", name="g.txt")
    with pytest.raises(ValueError, match="exceeds n_features=2"):
        P.load_libsvm(path, n_features=2)
    with pytest.raises(ValueError, match="n_features must be >= 1"):
        P.load_libsvm(path, n_features=0)
    with pytest.raises(ValueError, match="unknown data set"):
        P.dataset_path("iris")


def test_path_cache_sees_file_changes(tmp_path):
    path = _write(tmp_path, "1 1:1\n", name="c.txt")
    X1, _ = P.load_libsvm(path)
    path.write_bytes(b"1 1:2 2:1\n-1 1:1\n")
    X2, y2 = P.load_libsvm(path)
    assert X1.shape == (1, 1) and X2.shape == (2, 2) and y2.tolist() == [1.0, -1.0]


# ---------------------------------------------------------------------------------------------
# Splits.


def _assert_partition(parts, n, M):
    assert len(parts) == M
    assert all(p.dtype == np.int64 and p.size > 0 for p in parts)
    assert all(np.all(np.diff(p) > 0) for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))


@pytest.mark.parametrize("n,M", [(10, 1), (10, 3), (10, 10), (1001, 7)])
def test_split_iid(n, M):
    parts = P.split_iid(n, M, key=1)
    _assert_partition(parts, n, M)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1
    again = P.split_iid(n, M, key=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    if M > 1:
        other = P.split_iid(n, M, key=2)
        assert any(not np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_split_iid_accepts_jax_keys():
    a = P.split_iid(50, 4, key=jax.random.key(3))
    b = P.split_iid(50, 4, key=jax.random.key(3))
    c = P.split_iid(50, 4, key=jax.random.PRNGKey(3))
    i = P.split_iid(50, 4, key=3)
    for other in (b, c, i):  # an int seed, its typed key and its raw key: the same split
        assert all(np.array_equal(u, v) for u, v in zip(a, other, strict=True))
    _assert_partition(a, 50, 4)
    # an int seed s draws from np.random.default_rng(s), as before keys were accepted
    perm = np.random.default_rng(3).permutation(50)
    expected = [np.sort(p) for p in np.array_split(perm, 4)]
    assert all(np.array_equal(u, v) for u, v in zip(i, expected, strict=True))
    d = P.split_iid(50, 4, key=jax.random.key(4))
    assert any(not np.array_equal(u, v) for u, v in zip(a, d, strict=True))


def test_keys_are_keyword_only_everywhere():
    y = np.arange(20) % 2
    with pytest.raises(TypeError):
        P.split_iid(10, 2, 1)
    with pytest.raises(TypeError):
        P.split_dirichlet(y, 2, 1.0, 0)
    with pytest.raises(TypeError):
        P.split_sizes(10, [5, 5], 0)
    a = P.split_dirichlet(y, 2, 1.0, key=jax.random.key(5))
    b = P.split_dirichlet(y, 2, 1.0, key=5)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    c = P.split_sizes(10, [3, 7], key=jax.random.PRNGKey(1))
    d = P.split_sizes(10, [3, 7], key=1)
    assert all(np.array_equal(u, v) for u, v in zip(c, d, strict=True))


def test_split_by_label_is_sorted_and_maximally_heterogeneous():
    rng = np.random.default_rng(0)
    y = rng.choice([0.0, 1.0], size=101)
    parts = P.split_by_label(y, 4)
    _assert_partition(parts, 101, 4)
    labels = [np.unique(y[p]) for p in parts]
    assert sum(len(u) > 1 for u in labels) <= 1  # two classes: at most one mixed worker
    mx = [y[p].max() for p in parts]
    mn = [y[p].min() for p in parts]
    assert all(mx[m] <= mn[m + 1] for m in range(3))  # ordered by label
    y10 = np.repeat(np.arange(10), 20)
    y10 = rng.permutation(y10)
    parts = P.split_by_label(y10, 10)
    assert all(np.unique(y10[p]).size == 1 for p in parts)  # one class per worker


def _label_skew(y, parts):
    """Mean total-variation distance between each worker's label distribution and the global one."""
    classes = np.unique(y)
    glob = np.array([np.mean(y == c) for c in classes])
    tv = [0.5 * np.abs(np.array([np.mean(y[p] == c) for c in classes]) - glob).sum() for p in parts]
    return float(np.mean(tv))


def test_split_dirichlet_heterogeneity_decreases_with_concentration():
    y = np.repeat(np.arange(10), 300)
    skews = []
    for concentration in (0.05, 0.5, 5.0, 500.0):
        s = []
        for seed in range(4):
            parts = P.split_dirichlet(y, 10, concentration, key=seed)
            _assert_partition(parts, y.size, 10)
            s.append(_label_skew(y, parts))
        skews.append(np.mean(s))
    assert all(a > b for a, b in zip(skews, skews[1:], strict=False)), skews
    assert skews[0] > 0.6 and skews[-1] < 0.05
    a = P.split_dirichlet(y, 10, 0.5, key=3)
    b = P.split_dirichlet(y, 10, concentration=0.5, key=3)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    c = P.split_dirichlet(y, 10, 0.05, key=0, min_size=100)
    assert min(p.size for p in c) >= 100


def test_split_sizes():
    parts = P.split_sizes(10, [1, 2, 7], key=None)
    assert [p.tolist() for p in parts] == [[0], [1, 2], [3, 4, 5, 6, 7, 8, 9]]
    parts = P.split_sizes(100, [10, 20, 70], key=0)
    _assert_partition(parts, 100, 3)
    assert [p.size for p in parts] == [10, 20, 70]


@pytest.mark.parametrize(
    "fn,match",
    [
        (lambda: P.split_iid(3, 4), "num_workers must be <= n"),
        (lambda: P.split_iid(3, 0), "num_workers must be >= 1"),
        (lambda: P.split_iid(0, 1), "n must be >= 1"),
        (lambda: P.split_iid(5, 2, key=-1), "key must be a non-negative int seed"),
        (lambda: P.split_by_label(np.zeros((3, 2)), 2), "1-D"),
        (lambda: P.split_by_label(np.zeros(3), 4), "num_workers must be <= n"),
        (lambda: P.split_dirichlet(np.zeros(10), 2, 0.0), "concentration must be > 0"),
        (lambda: P.split_dirichlet(np.zeros(10), 2, -1.0), "concentration must be > 0"),
        (lambda: P.split_dirichlet(np.zeros(10), 2, float("nan")), "concentration must not be"),
        (lambda: P.split_dirichlet(np.zeros(10), 2, float("inf")), "concentration must be fin"),
        (lambda: P.split_dirichlet(np.zeros(10), 2, 1.0, max_tries=0), "max_tries must be >= 1"),
        (lambda: P.split_dirichlet(np.zeros(10), 2, 1.0, min_size=6), "min_size"),
        (lambda: P.split_dirichlet(np.arange(20) % 2, 10, 1e-3, max_tries=2), "could not"),
        (lambda: P.split_sizes(10, [5, 4]), "sum to n=10"),
        (lambda: P.split_sizes(10, [10, 0]), "no samples"),
        (lambda: P.split_sizes(10, []), "non-empty"),
        (lambda: P.check_split([np.arange(5), np.arange(4, 10)], 10), "exactly once"),
        (lambda: P.check_split([np.arange(5), np.arange(6, 10)], 10), "exactly once"),
        (lambda: P.check_split([np.arange(10), np.array([], int)], 10), "no samples"),
        (lambda: P.check_split([np.arange(11)], 10), "outside"),
    ],
)
def test_split_errors(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()


def test_split_type_errors():
    with pytest.raises(TypeError):
        P.split_iid(10.0, 2)
    with pytest.raises(TypeError):
        P.split_sizes(10, [5.0, 5.0])
    with pytest.raises(TypeError):
        P.split_iid(10, 2, key="a")
    with pytest.raises(TypeError):
        P.split_iid(10, 2, key=np.array([1.5, 2.5]))
    with pytest.raises(TypeError, match="concentration must be"):
        P.split_dirichlet(np.zeros(10), 2, "1")
    with pytest.raises(TypeError):
        P.split_dirichlet(np.zeros(10), 2, 1.0, min_size=1.5)
