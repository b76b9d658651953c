"""The same prompts past one machine: a partition function for Dask, Spark and Ray.

``apply_batch(frame, template, ...)`` takes one partition (a pandas DataFrame) and returns one:
the model's answer for each row, with the options and typed columns of ``df.pizza``, through the
same batch engine, so the same prompt has the same cache key on a worker as in the notebook. It
imports no IPython, pickles with cloudpickle, and opens its store lazily in the worker process,
once per process. ``output_meta`` and ``spark_schema`` give its output's shape without asking
anything, so planning a job sends no request.

On many workers, each worker process writes a store of its own in a directory of shards
(``store_dir=``, ``$PIZZAGPT_STORE_DIR``; SQLite is not safe on a network filesystem) and reads
the others and the notebook's store (``store=``) without writing to them; ``merge_shards`` (and
``pizzagpt cache merge DIR``) brings the shards into the user's store. A global limit on
requests in flight (``limit=``) is shared by the workers of a Dask cluster through a
``distributed.Semaphore``; on Spark and Ray it is divided among the partitions running at once
(``parallel=``).

Nothing here is imported by ``%load_ext`` or ``import pizzagpt_magic``; Dask, Spark and Ray are
the ``[dask]``, ``[spark]`` and ``[ray]`` extras.
"""

from __future__ import annotations

from .partition import OPERATIONS, apply_batch, output_meta, spark_function, spark_schema
from .shards import LayeredStore, merge_shards, shard_store

__all__ = [
    "OPERATIONS",
    "LayeredStore",
    "apply_batch",
    "merge_shards",
    "output_meta",
    "register_dask",
    "shard_store",
    "spark_function",
    "spark_schema",
    "warm_up",
]


def warm_up() -> list[str]:
    """Import what answering a partition needs (the batch engine, the store, aiohttp, pandas'
    side of the package), so that a worker pays it at its start rather than in its first
    partitions: ``client.run(warm_up)`` on Dask, or a first no-op task elsewhere. Sends nothing
    and opens nothing; the modules it imported."""
    import importlib
    import sys

    names = [
        "pandas",
        "aiohttp",
        "pizzagpt_magic.api",
        "pizzagpt_magic.engine",
        "pizzagpt_magic.engine.send.single",
        "pizzagpt_magic.engine.send.packed",
        "pizzagpt_magic.frames.run",
        "pizzagpt_magic.frames.map",
        "pizzagpt_magic.providers.openai",
        "pizzagpt_magic.providers.pizzagpt",
        "pizzagpt_magic.schema",
        "pizzagpt_magic.store",
        "pizzagpt_magic.typed",
        "pizzagpt_magic.distributed.limits",
    ]
    done = []
    for name in names:
        if name not in sys.modules:
            importlib.import_module(name)
            done.append(name)
    return done


def register_dask() -> bool:
    """``ddf.pizza.map(...)`` and the other row-wise operations on Dask DataFrames (see
    ``distributed.dask``); False when Dask's DataFrame is not installed."""
    try:
        from .dask import register
    except ImportError:
        return False
    register()
    return True


register_dask()
