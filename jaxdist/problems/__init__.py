"""Problems, data and splits: losses with a leading ``workers`` axis and exact constants.

A :class:`Problem` holds per-worker data (leading axis M), a per-worker ``loss(params, data_m)``,
x^0, and the constants the theory needs (L, L_m, mu, x*, f*, δ, σ*²). Generators:
:func:`quadratic` (prescribed spectrum, similarity and heterogeneity), :func:`quadratic_problem`
(given matrices), :func:`top1_counterexample` (THEORY.md §3) and :func:`logistic_regression`
(LIBSVM data shipped with the package or read from a path; nothing is downloaded).
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
from jaxdist.problems._logistic import logistic_sample as logistic_sample
from jaxdist.problems._quadratic import quadratic as quadratic
from jaxdist.problems._quadratic import quadratic_constants as quadratic_constants
from jaxdist.problems._quadratic import quadratic_loss as quadratic_loss
from jaxdist.problems._quadratic import quadratic_problem as quadratic_problem
from jaxdist.problems._splits import check_split as check_split
from jaxdist.problems._splits import split_by_label as split_by_label
from jaxdist.problems._splits import split_dirichlet as split_dirichlet
from jaxdist.problems._splits import split_iid as split_iid
from jaxdist.problems._splits import split_sizes as split_sizes

__all__ = [
    "DATASETS",
    "Problem",
    "check_split",
    "dataset_path",
    "labels_to_pm1",
    "list_datasets",
    "load_libsvm",
    "logistic_loss",
    "logistic_regression",
    "logistic_sample",
    "parse_libsvm",
    "quadratic",
    "quadratic_constants",
    "quadratic_loss",
    "quadratic_problem",
    "split_by_label",
    "split_dirichlet",
    "split_iid",
    "split_sizes",
    "top1_counterexample",
]
