"""Test configuration: 8 forced CPU devices (set before JAX starts) and a float64 variant."""

import os

# One BLAS thread: numpy solves in tests are tiny and multi-threaded OpenBLAS is slow under load.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture
def x64():
    """Runs the test with 64-bit floats enabled (``jnp.float64`` arrays are really 64-bit)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(params=["float32", "float64"])
def float_dtype(request):
    """Parametrises a test over float32 and float64 (the latter with x64 enabled)."""
    if request.param == "float64":
        with jax.enable_x64(True):
            yield request.param
    else:
        yield request.param


@pytest.fixture
def key():
    return jax.random.key(0)
