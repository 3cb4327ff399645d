"""Registry of every per-step method under test: the ONE place a new method is added.

An entry says how to build the method, how its NumPy reference (``tests/reference.py``) runs,
what its ledger must hold and whether it draws random numbers. Every common test in
``tests/test_methods.py`` (backends, a user's own ``shard_map`` + ``scan``, compilation,
determinism, ledgers, NumPy trajectories) is driven by it.

Adding a method: write its NumPy reference in ``tests/reference.py`` and add a ``Case`` here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import reference

import jaxdist.compressors as jc
from jaxdist.compressors._sampling import bernoulli_coin
from jaxdist.methods import dcgd, dgd, diana, ef14, ef21, ef21_p, marina
from jaxdist.methods._base import COIN, DOWNLINK, UPLINK


@dataclasses.dataclass(frozen=True)
class Case:
    """One method under test.

    Attributes:
      name: test id.
      factory: the public factory (``jaxdist.methods.diana``, ...).
      kwargs: ``kwargs(M) -> dict`` of factory arguments for ``M`` workers (Perm-K needs M).
      reference: ``reference(kw, G, x0, gamma, T, replay) -> (T + 1, d)`` trajectory, where
        ``replay`` is a :class:`Replay` of jaxdist's key path for this method.
      randomised: the method draws random numbers (another key changes its output).
      primal: the method includes its step size (``learning_rate``): no ``sgd`` after it.
    """

    name: str
    factory: Callable[..., Any]
    kwargs: Callable[[int], dict]
    reference: Callable[..., np.ndarray]
    randomised: bool
    primal: bool = False

    def build(self, num_workers: int, **overrides):
        return self.factory(**{**self.kwargs(num_workers), **overrides})

    def compressors(self, num_workers: int) -> list[jc.Compressor]:
        return [v for v in self.kwargs(num_workers).values() if isinstance(v, jc.Compressor)]

    def needs_axis(self, num_workers: int) -> bool:
        return any(c.needs_axis for c in self.compressors(num_workers))

    def ledger_sizes(self, num_workers: int, d: int, bits: int = 32):
        """(uplink sizes, downlink sizes) in bits, from the compressors' own bit counts."""
        kw = self.kwargs(num_workers)
        full = d * bits
        x = jnp.zeros(d, jnp.float32 if bits == 32 else jnp.float64)
        if self.factory is dgd:
            return (full,), (full,)
        up_c = kw.get("compressor", kw.get("up"))
        down_c = kw.get("down")
        up = (up_c.bits(x),) + ((full,) if self.factory is marina else ())
        down = (full,) if down_c is None else (down_c.bits(x),)
        return up, down


@dataclasses.dataclass(frozen=True)
class Replay:
    """jaxdist's key path (jaxdist.methods._base) replayed outside jit for a reference."""

    seed: int = 0
    salt: int = 0

    def _step(self, t: int) -> jax.Array:
        return jax.random.fold_in(jax.random.fold_in(jax.random.key(self.seed), self.salt), t)

    def compressor(self, c: jc.Compressor, num_workers: int):
        """``compress(v, m, t, link)`` for :mod:`reference`, drawing as jaxdist draws."""
        if c.deterministic:
            return lambda v, m, t, link: np.asarray(
                c.compress(jax.random.key(0), jnp.asarray(v)), np.float64
            )

        def f(v, m, t, link):
            k = jax.random.fold_in(self._step(t), UPLINK if link == "up" else DOWNLINK)
            if link == "up" and not c.shared_key:
                k = jax.random.fold_in(k, m)
            kwargs = {"worker": m} if c.needs_axis else {}
            out = c.compress(k, jnp.asarray(v, jnp.float64), **kwargs)
            return np.asarray(out, dtype=np.float64)

        return f

    def coin(self, p: float):
        return lambda t: bool(bernoulli_coin(jax.random.fold_in(self._step(t), COIN), p))


def _shift(kw, d):
    c = kw.get("compressor", kw.get("up"))
    return kw.get("shift_step") or 1.0 / (c.omega(d) + 1.0)


def _replayed(kw, name, replay, M):
    """The replayed compressor of argument ``name`` (None when the method has none)."""
    c = kw.get(name)
    return None if c is None else replay.compressor(c, M)


def _ref_dcgd(kw, G, x0, gamma, T, replay, M):
    up, down = _replayed(kw, "compressor", replay, M), _replayed(kw, "down", replay, M)
    return reference.dcgd(G, x0, gamma, T, up, down=down)


def _ref_diana(kw, G, x0, gamma, T, replay, M):
    up, down = _replayed(kw, "compressor", replay, M), _replayed(kw, "down", replay, M)
    return reference.diana(G, x0, gamma, T, up, _shift(kw, len(x0)), down=down)


def _ref_ef21_p(kw, G, x0, gamma, T, replay, M):
    gamma = kw.get("learning_rate") or gamma
    return reference.ef21_p(
        G,
        x0,
        gamma,
        T,
        replay.compressor(kw["up"], M),
        replay.compressor(kw["down"], M),
        _shift(kw, len(x0)),
    )


CASES = (
    Case("dgd", dgd, lambda M: {}, lambda kw, G, x0, g, T, r, M: reference.gd(G, x0, g, T), False),
    Case("dcgd_rand_k", dcgd, lambda M: {"compressor": jc.rand_k(3)}, _ref_dcgd, True),
    Case("dcgd_top_k", dcgd, lambda M: {"compressor": jc.top_k(3)}, _ref_dcgd, False),
    Case(
        "dcgd_bidirectional",
        dcgd,
        lambda M: {"compressor": jc.rand_k(4, shared=True), "down": jc.top_k(6)},
        _ref_dcgd,
        True,
    ),
    Case("diana_rand_k", diana, lambda M: {"compressor": jc.rand_k(3)}, _ref_diana, True),
    Case(
        "diana_natural_gather",
        diana,
        lambda M: {"compressor": jc.natural(), "mode": "gather"},
        _ref_diana,
        True,
    ),
    Case(
        "diana_perm_k", diana, lambda M: {"compressor": jc.perm_k(num_workers=M)}, _ref_diana, True
    ),
    Case(
        "diana_top_k_down",
        diana,
        lambda M: {"compressor": jc.top_k(3), "shift_step": 0.5, "down": jc.top_k(6)},
        _ref_diana,
        False,
    ),
    Case(
        "ef14_top_k",
        ef14,
        lambda M: {"compressor": jc.top_k(3)},
        lambda kw, G, x0, g, T, r, M: reference.ef14(
            G, x0, g, T, r.compressor(kw["compressor"], M)
        ),
        False,
    ),
    Case(
        "ef21_top_k_gather",
        ef21,
        lambda M: {"compressor": jc.top_k(3), "mode": "gather"},
        lambda kw, G, x0, g, T, r, M: reference.ef21(
            G, x0, g, T, r.compressor(kw["compressor"], M)
        ),
        False,
    ),
    Case(
        "marina_rand_k",
        marina,
        lambda M: {"compressor": jc.rand_k(3), "p": 0.5, "salt": 2},
        lambda kw, G, x0, g, T, r, M: reference.marina(
            G, x0, g, T, r.compressor(kw["compressor"], M), r.coin(kw["p"])
        ),
        True,
    ),
    Case(
        "ef21_p",
        ef21_p,
        lambda M: {"up": jc.natural(), "down": jc.top_k(4)},
        _ref_ef21_p,
        True,
    ),
    Case(
        "ef21_p_primal",
        ef21_p,
        lambda M: {"up": jc.natural(), "down": jc.top_k(4), "learning_rate": 0.05},
        _ref_ef21_p,
        True,
        primal=True,
    ),
)

NAMES = tuple(c.name for c in CASES)
BY_NAME = {c.name: c for c in CASES}
