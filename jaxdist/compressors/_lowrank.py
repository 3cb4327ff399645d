"""Low-rank compression: one step of power iteration from a shared random start (PowerSGD).

Its message size depends on the static *shape* of the input, not only on ``d``, so the
compressor sets ``bits_uses_shape`` and its ``bits_fn`` takes ``(d, dtype, shape)``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxdist._validate import check_int
from jaxdist.compressors._base import VectorCompressor, compute_dtype, config, float_bits

__all__ = ["power_sgd"]


def _outer_sum(a: jax.Array, b: jax.Array) -> jax.Array:
    """``sum_k outer(a[k], b[k])`` for ``a`` of shape (K, x) and ``b`` of shape (K, y).

    On CPU the contraction is a sequential ``fori_loop`` over ``k`` of elementwise
    multiply-adds, so every output entry is summed in the same order whatever the surrounding
    transformation: eager execution, ``jit``, ``vmap`` over keys, inputs or workers, and
    ``shard_map`` agree bitwise. A ``dot_general`` does not: XLA picks shape-dependent kernels
    (vector versus scalar paths, fused multiply-add or not), so a batched product differs from
    the loop of unbatched ones in the last bits. The price is ``K`` sequential steps (``K`` is
    ``n``, ``m`` or the rank), each a vectorised ``x * y`` update. On other platforms (GPU,
    TPU), where a loop step costs a kernel launch and bitwise batch invariance is not promised,
    it is one ``dot_general`` at ``Precision.HIGHEST``.
    """
    return jax.lax.platform_dependent(a, b, cpu=_outer_sum_loop, default=_outer_sum_dot)


def _outer_sum_loop(a: jax.Array, b: jax.Array) -> jax.Array:
    """:func:`_outer_sum` as a sequential loop (batch invariant; used on CPU)."""
    init = jnp.zeros((a.shape[1], b.shape[1]), jnp.result_type(a, b))

    def body(k, acc):
        return acc + a[k][:, None] * b[k][None, :]

    return jax.lax.fori_loop(0, a.shape[0], body, init)


def _outer_sum_dot(a: jax.Array, b: jax.Array) -> jax.Array:
    """:func:`_outer_sum` as one full-precision ``dot_general`` (used off CPU)."""
    dims = (((0,), (0,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _encode(key: jax.Array, v: jax.Array, n: int, m: int, rank: int) -> dict[str, jax.Array]:
    """PowerSGD's message for the vector ``v`` viewed as an ``n x m`` matrix (zero padded).

    Jitted as one program, so eager calls compile once per shape (not once per primitive).
    """
    d = v.shape[0]
    cdt = compute_dtype(v.dtype)
    g = jnp.pad(v.astype(cdt), (0, n * m - d)).reshape(n, m)
    q = jax.random.normal(key, (m, rank), cdt)
    p = _outer_sum(g.T, q)  # G Q, (n, r)
    p_hat, _ = jnp.linalg.qr(p, mode="reduced")
    p_sent = p_hat.astype(v.dtype)
    q_new = _outer_sum(g, p_sent.astype(cdt))  # G^T P_hat, (m, r)
    return {"p": p_sent, "q": q_new.astype(v.dtype)}


@functools.partial(jax.jit, static_argnums=(2, 3))
def _decode(p: jax.Array, q: jax.Array, d: int, dtype: Any) -> jax.Array:
    """``P_hat Q'^T``, flattened row-major, its first ``d`` entries, in ``dtype``."""
    cdt = compute_dtype(dtype)
    g_hat = _outer_sum(p.astype(cdt).T, q.astype(cdt).T)  # P_hat Q'^T, (n, m)
    return g_hat.reshape(-1)[:d].astype(dtype)


def power_sgd(rank: int, *, shape: tuple[int, int] | None = None) -> VectorCompressor:
    """PowerSGD's rank-``rank`` compressor: one power-iteration step from a shared random start.

    Biased; no worst-case contraction constant (``alpha`` returns ``None``), but it is an
    orthogonal projection of the columns of the input matrix, so
    :math:`\\|\\hat G - G\\|_F \\le \\|G\\|_F` for every input and key. Bits:
    :math:`b\\,r\\,(n + m)` for an :math:`n \\times m` view of the input and ``b``-bit floats
    (the factors :math:`\\hat P` and :math:`Q'`).

    The input is viewed as a matrix :math:`G \\in \\mathbb{R}^{n \\times m}`: a 2-D array keeps
    its shape (use :func:`~jaxdist.compressors.per_leaf` to compress each weight matrix of a
    model as a matrix); any other input, and a flattened pytree, is the vector
    :math:`v \\in \\mathbb{R}^d` reshaped row-major to :math:`n = \\lfloor\\sqrt d\\rfloor` rows
    and :math:`m = \\lceil d/n \\rceil` columns, zero padded; ``shape=(n, m)`` forces the view.
    With :math:`Q \\sim \\mathcal{N}(0, 1)^{m \\times r}` drawn from the key,

    .. math::

       P = G Q, \\qquad \\hat P = \\operatorname{orth}(P), \\qquad Q' = G^\\top \\hat P,
       \\qquad \\hat G = \\hat P Q'^\\top = \\hat P \\hat P^\\top G .

    ``orth`` is a Householder QR, so :math:`\\hat P` has orthonormal columns even when
    :math:`P` is rank deficient (a zero input gives a zero output, never NaN), and
    :math:`\\|\\hat G - G\\|_F^2 = \\|G\\|_F^2 - \\|\\hat P^\\top G\\|_F^2`. At full rank
    :math:`r = \\min(n, m)` the output is :math:`G` up to rounding. The factors are sent in the
    input dtype; the arithmetic is done in at least float32. On CPU the matrix products are
    sequential sums of outer products, so that batched (``vmap``) and unbatched calls agree
    bitwise; elsewhere they are ordinary full-precision matrix products.

    This is the *single-worker* operator. In PowerSGD proper the key is shared by all workers
    (``shared_key=True``), so :math:`P = G_m Q` is linear in :math:`G_m`: the workers
    all-reduce :math:`P`, orthogonalise the mean, all-reduce :math:`Q'` and reuse :math:`Q'`
    as the next start (warm start), and the compressor runs inside error feedback;
    :mod:`jaxdist.methods` provides that distributed protocol.

    Args:
      rank: the rank :math:`r \\ge 1`; it must satisfy :math:`r \\le \\min(n, m)` for the
        matrix view of every input (checked at trace time, ``ValueError`` naming ``rank``).
      shape: optional ``(n, m)`` view forced on every input, which must have
        :math:`d \\le n m` entries (zero padded to :math:`n m`).

    A flattened pytree is one vector viewed as a near-square matrix, which mixes layers; use
    ``per_leaf(power_sgd(r))`` to compress each weight matrix as itself. Gradients: the operator
    is differentiable for a fixed key, including the dependence of :math:`\\hat P` on the input
    through the QR decomposition.

    Returns:
      A :class:`~jaxdist.compressors.Compressor` (shared key, biased, ``omega`` and ``alpha``
      ``None``) whose payload is ``{"p": P_hat (n, r), "q": Q' (m, r)}``.

    Raises:
      TypeError: if ``rank`` is not an int or ``shape`` not a pair of ints.
      ValueError: if ``rank < 1``, a side of ``shape`` is below 1, or ``rank`` exceeds
        ``min(n, m)`` (at construction for a forced ``shape``, else at trace time).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxdist.compressors import power_sgd
      >>> c = power_sgd(2)
      >>> g = jnp.outer(jnp.arange(1.0, 5.0), jnp.ones(6))  # a rank-1 4 x 6 matrix
      >>> bool(jnp.allclose(c.compress(jax.random.key(0), g), g, atol=1e-5))
      True
      >>> c.bits(g)  # 32 bits * rank 2 * (4 + 6)
      640

    References:
      Vogels, Karimireddy, Jaggi, `PowerSGD: Practical Low-Rank Gradient Compression for
      Distributed Optimization <https://arxiv.org/abs/1905.13727>`_, 2019.
    """
    rank = check_int("rank", rank, low=1)
    if shape is not None:
        if not isinstance(shape, tuple | list) or len(shape) != 2:
            raise TypeError(f"shape must be a pair of ints (n, m), got shape={shape!r}")
        shape = (check_int("shape[0]", shape[0], low=1), check_int("shape[1]", shape[1], low=1))
        if rank > min(shape):
            raise ValueError(
                f"rank={rank} exceeds min(n, m) = {min(shape)} of shape={shape}; "
                "need 1 <= rank <= min(n, m)"
            )
    forced = shape

    def view(d: int, hint: tuple[int, ...]) -> tuple[int, int]:
        if forced is not None:
            return forced
        if len(hint) == 2 and hint[0] * hint[1] == d:
            return int(hint[0]), int(hint[1])
        n = math.isqrt(d)
        return n, -(-d // n)

    def check(d: int, hint: tuple[int, ...]) -> None:
        n, m = view(d, hint)
        if n * m < d:
            raise ValueError(
                f"shape={forced} holds n * m = {n * m} entries but the input has d = {d}; "
                "need n * m >= d"
            )
        if rank > min(n, m):
            raise ValueError(
                f"rank={rank} exceeds min(n, m) = {min(n, m)} of the {n} x {m} matrix view of "
                f"the input (d = {d}); need 1 <= rank <= min(n, m)"
            )

    def encode(key, v, hint):
        n, m = view(v.shape[0], hint)
        return _encode(key, v, n, m, rank)

    def decode(key, payload, d, dtype, hint):
        del key, hint
        return _decode(payload["p"], payload["q"], d, jnp.dtype(dtype))

    def bits(d: int, dtype: Any, hint: tuple[int, ...] | None = None) -> int:
        n, m = view(d, hint if hint is not None else (d,))
        return float_bits(dtype) * rank * (n + m)

    suffix = "" if forced is None else f", shape={forced}"
    return VectorCompressor(
        bits_uses_shape=True,
        name=f"power_sgd(rank={rank}{suffix})",
        config=config("power_sgd", rank=rank, shape=forced),
        encode_fn=encode,
        decode_fn=decode,
        bits_fn=bits,
        unbiased=False,
        shared_key=True,
        deterministic=False,
        check_fn=check,
    )
