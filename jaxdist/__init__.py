"""jaxdist: communication-efficient distributed optimization in JAX.

Workers live on a named axis: ``jax.vmap(..., axis_name="workers")`` simulates them on one
device and ``jax.shard_map`` runs the same code on real devices. Compressors are pure functions
of a PRNG key; methods are optax-style ``init/update`` state machines; everything is measured in
exact bits and communication rounds.
"""

__version__ = "0.1.0"

from jaxdist import compressors as compressors

__all__ = ["compressors", "__version__"]
