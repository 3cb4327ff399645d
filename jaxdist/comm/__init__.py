"""The worker axis: backends, worker keys, collectives, compressed aggregation and bit ledgers.

Per-worker code is written once, for one worker, and talks to the others only through
collectives on a named axis (``"workers"``). :func:`simulate` runs it for M workers on one
device (``jax.vmap``), :func:`on_mesh` on a device mesh (``jax.shard_map``), and
:func:`workers` switches between them with one argument. :class:`Ledger` keeps exact integer
counts of the messages sent up and down; :class:`NetworkModel` and the ``*_time`` functions are
the α–β cost model of communication (one implementation, used by traces and experiments).
"""

from jaxdist.comm._aggregate import compressed_mean as compressed_mean
from jaxdist.comm._axis import axis_index as axis_index
from jaxdist.comm._axis import axis_size as axis_size
from jaxdist.comm._axis import make_worker_mesh as make_worker_mesh
from jaxdist.comm._axis import on_mesh as on_mesh
from jaxdist.comm._axis import replicate as replicate
from jaxdist.comm._axis import simulate as simulate
from jaxdist.comm._axis import uniform_cond as uniform_cond
from jaxdist.comm._axis import varying as varying
from jaxdist.comm._axis import worker_gather as worker_gather
from jaxdist.comm._axis import worker_key as worker_key
from jaxdist.comm._axis import worker_max as worker_max
from jaxdist.comm._axis import worker_mean as worker_mean
from jaxdist.comm._axis import worker_sum as worker_sum
from jaxdist.comm._axis import workers as workers
from jaxdist.comm._cost import NetworkModel as NetworkModel
from jaxdist.comm._cost import all_to_all_time as all_to_all_time
from jaxdist.comm._cost import allgather_time as allgather_time
from jaxdist.comm._cost import allreduce_time as allreduce_time
from jaxdist.comm._cost import p2p_time as p2p_time
from jaxdist.comm._cost import parameter_server_time as parameter_server_time
from jaxdist.comm._cost import perm_k_time as perm_k_time
from jaxdist.comm._cost import reduce_scatter_time as reduce_scatter_time
from jaxdist.comm._cost import sparse_allgather_time as sparse_allgather_time
from jaxdist.comm._ledger import Ledger as Ledger
from jaxdist.comm._ledger import Traffic as Traffic
from jaxdist.comm._ledger import exact_bits as exact_bits
from jaxdist.comm._ledger import find_ledgers as find_ledgers
from jaxdist.comm._ledger import sum_exact as sum_exact
from jaxdist.comm._ledger import total_traffic as total_traffic

__all__ = [
    "Ledger",
    "NetworkModel",
    "all_to_all_time",
    "allgather_time",
    "allreduce_time",
    "p2p_time",
    "parameter_server_time",
    "perm_k_time",
    "reduce_scatter_time",
    "sparse_allgather_time",
    "Traffic",
    "axis_index",
    "axis_size",
    "compressed_mean",
    "exact_bits",
    "find_ledgers",
    "make_worker_mesh",
    "on_mesh",
    "replicate",
    "simulate",
    "sum_exact",
    "total_traffic",
    "uniform_cond",
    "varying",
    "worker_gather",
    "worker_key",
    "worker_max",
    "worker_mean",
    "worker_sum",
    "workers",
]
