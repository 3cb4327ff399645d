"""Small timing helpers shared by the benchmark scripts (not part of the library)."""

from __future__ import annotations

import time

import jax


def time_fn(fn, *args, repeats: int = 5, min_time: float = 0.2) -> dict:
    """Times a jitted ``fn(*args)``: compile time separately, then the best per-call run time.

    Each measurement runs the function enough times to last ``min_time`` seconds and the best of
    ``repeats`` such measurements is kept (the usual ``timeit`` convention).
    """
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    one = max(time.perf_counter() - t0, 1e-7)
    number = max(1, int(min_time / one))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - t0) / number)
    return {"compile_s": compile_s, "time_s": best}


def device_description() -> str:
    dev = jax.devices()[0]
    return f"{dev.platform}:{getattr(dev, 'device_kind', '')}"
