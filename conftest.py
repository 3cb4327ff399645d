"""Test configuration for the tests and the docstring examples: 8 forced CPU devices (set before
JAX starts) and strict dtype promotion.

Strict promotion (``jax_numpy_dtype_promotion="strict"``) makes every implicit promotion
between JAX arrays of different dtypes an error, so the library never silently computes in a
wider or narrower type than the data (Python scalars are still weakly typed).
"""

import os

# One BLAS thread: numpy solves in tests are tiny and multi-threaded OpenBLAS is slow under load.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import chex  # noqa: E402
import jax  # noqa: E402

chex.set_n_cpu_devices(8)  # fake devices for the shard_map tests (before JAX starts a backend)
jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_dtype_promotion", "strict")
