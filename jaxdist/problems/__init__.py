"""Problems, data and splits: losses with a leading ``workers`` axis and exact constants.

A :class:`Problem` holds per-worker data (leading axis M), a per-worker ``loss(params, data_m)``,
x^0, the constants the theory needs (L, L_m, mu, x*, f*, δ, σ*²) and, for finite sums, a
minibatch sampler. What is here:

* **generators**: :func:`quadratic` (prescribed spectrum, similarity and heterogeneity),
  :func:`quadratic_problem` (given matrices, with :func:`quadratic_constants`),
  :func:`similar_quadratics` (a convex server exactly δ-similar to the mean, THEORY.md §2.10),
  :func:`heterogeneous_quadratics` (every worker with κ(f_m) = κ(f), for κ sweeps),
  :func:`top1_counterexample` (THEORY.md §3) and :func:`logistic_regression` (LIBSVM data
  shipped with the package or read from a path; nothing is downloaded);
* **a neural network**: :func:`mnist_mlp`, a ReLU MLP on MNIST (the lecture's 203,530-parameter
  784-256-10 network; nonconvex, L unknown) with the test set split over the workers for
  ``jaxdist.run(..., metrics=problem.info["metrics"])``; MNIST ships with the repository, not
  the wheel (:func:`load_mnist`, :data:`MNIST_FILES`), and :func:`mlp_init` / :func:`mlp_apply`
  build your own;
* **losses** to build a :class:`Problem` by hand: :func:`quadratic_loss`, :func:`logistic_loss`;
* **data**: :func:`load_libsvm`, :func:`parse_libsvm`, :func:`list_datasets`,
  :func:`dataset_path`, :data:`DATASETS`, :func:`labels_to_pm1`;
* **similarity**: :func:`measure_similarity`, max_m ||∇²f_m(x) − ∇²f(x)|| measured exactly at
  a few points (δ ∝ L/√n for n i.i.d. samples per worker, THEORY.md §2.9);
* **splits** of n samples across M workers: :func:`split_iid`, :func:`split_by_label`,
  :func:`split_dirichlet`, :func:`split_sizes`, :func:`split_uniform` (n disjoint random
  samples per worker, the rest unused), and :func:`check_split` for your own;
* **minibatches**: :func:`sample_minibatch`, uniform without replacement (b-nice sampling), the
  sampler behind every ``Problem.sample_fn``.

**Randomness.** Every generator and split that draws random numbers takes a keyword-only
``key=`` (default ``0``): an ``int`` seed >= 0, a typed key ``jax.random.key(seed)`` or a raw
``uint32[2]`` key, coerced like every key in jaxdist (``jaxdist._validate.as_key``). The data
are generated in float64 NumPy from a generator seeded by the key's data, so ``key=7``,
``key=jax.random.key(7)`` and ``key=jax.random.PRNGKey(7)`` build the same problem, and an int
seed ``s`` draws from ``np.random.default_rng(s)``. Minibatches are drawn in JAX from the key
passed to :func:`sample_minibatch`.

Examples:
  >>> from jaxdist import problems
  >>> p = problems.quadratic(4, 10, L=1.0, mu=0.1, key=0)
  >>> p.num_workers, p.dim, p.data["A"].shape
  (4, 10, (4, 10, 10))
"""

from jaxdist.problems._base import Problem as Problem
from jaxdist.problems._counterexample import top1_counterexample as top1_counterexample
from jaxdist.problems._datasets import DATASETS as DATASETS
from jaxdist.problems._datasets import dataset_path as dataset_path
from jaxdist.problems._datasets import list_datasets as list_datasets
from jaxdist.problems._datasets import load_libsvm as load_libsvm
from jaxdist.problems._datasets import parse_libsvm as parse_libsvm
from jaxdist.problems._logistic import labels_to_pm1 as labels_to_pm1
from jaxdist.problems._logistic import logistic_loss as logistic_loss
from jaxdist.problems._logistic import logistic_regression as logistic_regression
from jaxdist.problems._mnist import MNIST_FILES as MNIST_FILES
from jaxdist.problems._mnist import load_mnist as load_mnist
from jaxdist.problems._mnist import mlp_apply as mlp_apply
from jaxdist.problems._mnist import mlp_init as mlp_init
from jaxdist.problems._mnist import mnist_mlp as mnist_mlp
from jaxdist.problems._quadratic import quadratic as quadratic
from jaxdist.problems._quadratic import quadratic_constants as quadratic_constants
from jaxdist.problems._quadratic import quadratic_loss as quadratic_loss
from jaxdist.problems._quadratic import quadratic_problem as quadratic_problem
from jaxdist.problems._sampling import sample_minibatch as sample_minibatch
from jaxdist.problems._similar import heterogeneous_quadratics as heterogeneous_quadratics
from jaxdist.problems._similar import measure_similarity as measure_similarity
from jaxdist.problems._similar import similar_quadratics as similar_quadratics
from jaxdist.problems._splits import check_split as check_split
from jaxdist.problems._splits import split_by_label as split_by_label
from jaxdist.problems._splits import split_dirichlet as split_dirichlet
from jaxdist.problems._splits import split_iid as split_iid
from jaxdist.problems._splits import split_sizes as split_sizes
from jaxdist.problems._splits import split_uniform as split_uniform

__all__ = [
    "DATASETS",
    "MNIST_FILES",
    "Problem",
    "check_split",
    "dataset_path",
    "heterogeneous_quadratics",
    "labels_to_pm1",
    "list_datasets",
    "load_libsvm",
    "logistic_loss",
    "load_mnist",
    "logistic_regression",
    "measure_similarity",
    "mlp_apply",
    "mlp_init",
    "mnist_mlp",
    "parse_libsvm",
    "quadratic",
    "quadratic_constants",
    "quadratic_loss",
    "quadratic_problem",
    "sample_minibatch",
    "similar_quadratics",
    "split_by_label",
    "split_dirichlet",
    "split_iid",
    "split_sizes",
    "split_uniform",
    "top1_counterexample",
]
