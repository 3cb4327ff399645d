"""Fixtures of the test-suite (the device and dtype set-up is in the root conftest.py)."""

import jax
import pytest


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
