"""``apply_batch``: the model's answers for one partition, and the shape of what it returns.

The output of a partition is the partition's own columns (``keep=True``) followed by the
answer's: for ``map`` a ``string`` column ``answer`` and an ``_error`` column (the reason a row
failed, ``<NA>`` where it was answered); with a schema (``map`` or ``extract``) one typed column
per field and ``_error``; for ``classify`` a ``category`` column ``label``; for ``filter`` a
``boolean`` column ``keep`` (the rows are kept: a distributed job filters on the column). A row
that fails never fails the partition.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["OPERATIONS", "apply_batch", "output_meta", "spark_function", "spark_schema"]

OPERATIONS = ("map", "extract", "classify", "filter")

#: Each pandas dtype of the output as Spark SQL names it.
_SPARK_TYPES = {
    "string": "string",
    "object": "string",
    "category": "string",
    "Int64": "bigint",
    "int64": "bigint",
    "Float64": "double",
    "float64": "double",
    "boolean": "boolean",
    "bool": "boolean",
}


def apply_batch(
    frame: Any,
    template: Any,
    *,
    operation: str = "map",
    schema: Any = None,
    labels: Any = None,
    keep: bool = True,
    store_dir: str | os.PathLike[str] | None = None,
    store: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    parallel: int = 1,
    **options: Any,
) -> Any:
    """The answers for one partition ``frame`` (a pandas DataFrame) to ``template``, a
    DataFrame of the same rows (see the module's docstring for its columns). ``template``
    may be a saved prompt (``saved("NAME")``): its text, with its settings below the call's.

    ``operation`` is ``map`` (with an optional ``schema``), ``extract`` (with a ``schema``),
    ``classify`` (with ``labels``) or ``filter`` (``template`` is the yes/no condition).
    ``options`` are those of ``df.pizza`` (``model``, ``system``, ``temperature``,
    ``max_tokens``, ``concurrency``, ``pack``, ``cache``, ...). ``store_dir`` (default
    ``$PIZZAGPT_STORE_DIR``) is the directory of shards this process writes to, and ``store``
    a store (the notebook's) read without writing; with neither, the default store. ``limit``
    bounds the requests in flight of the whole job: on a Dask cluster through a shared
    semaphore, elsewhere as ``limit // parallel`` for this partition (``parallel``: how many
    partitions run at once)."""
    import pandas as pd

    from ..frames.map import texts_of
    from ..frames.options import options_of, with_saved
    from ..frames.run import run
    from ..schema import as_schema
    from .shards import shard_store

    if operation not in OPERATIONS:
        raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}, not {operation!r}")
    template, options, schema = with_saved(template, options, schema)
    given = dict(options)
    given.setdefault("progress", False)
    layered = shard_store(store_dir, str(store) if store else None)
    if layered is not None:
        given["store"] = layered
    elif store is not None:
        from ..store import Store

        given["store"] = Store(store)
    if limit is not None:
        gate, concurrency = _limit(limit, parallel)
        given["concurrency"] = concurrency
        if gate is not None:
            given["gate"] = gate
    settings = options_of(given)
    what = "condition" if operation == "filter" else "template"
    texts = texts_of(frame, template, settings.value_budget, what=what)
    checked = _schema_of(operation, schema, labels)
    try:
        outcomes = run(texts, settings, schema=as_schema(checked) if checked is not None else None)
    finally:
        close = getattr(settings.gate, "close", None)
        if close is not None:
            close()  # the leases of a cluster-wide limit go back at once
        if layered is not None:
            layered.flush()
    answers = _columns(operation, outcomes.values, checked, labels, frame.index)
    if not keep:
        return answers
    return pd.concat([frame, answers], axis=1)


def _schema_of(operation: str, schema: Any, labels: Any) -> Any:
    if operation in ("map", "extract"):
        if operation == "extract" and schema is None:
            raise TypeError("extract needs a schema: a concise spec, a JSON Schema or a model")
        return schema
    if operation == "classify":
        if not labels:
            raise TypeError("classify needs labels")
        return {
            "type": "object",
            "properties": {"label": {"enum": [str(label) for label in labels]}},
            "required": ["label"],
        }
    return {
        "type": "object",
        "properties": {"keep": {"type": "boolean"}},
        "required": ["keep"],
    }


def _columns(operation: str, values: list[Any], schema: Any, labels: Any, index: Any) -> Any:
    """The answer's columns for ``values`` (each a value, or the exception of a failed row)."""
    import pandas as pd

    from ..engine import answers_frame

    if operation == "map" and schema is None:
        answers = [None if isinstance(v, BaseException) else v for v in values]
        errors = [_reason(v) if isinstance(v, BaseException) else None for v in values]
        return pd.DataFrame(
            {
                "answer": pd.array(answers, dtype="string"),
                "_error": pd.array(errors, dtype="string"),
            },
            index=index,
        )
    typed = answers_frame(values, schema, index=index)
    if operation == "classify":
        categories = [str(label) for label in labels]
        typed["label"] = pd.Categorical(typed["label"].astype(object), categories=categories)
    return typed


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def output_meta(
    frame: Any,
    *,
    operation: str = "map",
    schema: Any = None,
    labels: Any = None,
    keep: bool = True,
) -> Any:
    """An empty DataFrame shaped as ``apply_batch``'s output for a partition like ``frame``
    (Dask's ``meta``), made without asking anything."""
    import pandas as pd

    from ..schema import as_schema

    empty = frame.iloc[:0]
    checked = _schema_of(operation, schema, labels)
    answers = _columns(
        operation,
        [],
        as_schema(checked) if checked is not None else None,
        labels,
        empty.index,
    )
    return pd.concat([empty, answers], axis=1) if keep else answers


def spark_schema(
    columns: Any,
    *,
    operation: str = "map",
    schema: Any = None,
    labels: Any = None,
    keep: bool = True,
) -> str:
    """The Spark DDL of ``apply_batch``'s output, for ``mapInPandas``: ``columns`` is the input
    DataFrame's ``schema`` (a ``StructType``) or its DDL string (ignored with ``keep=False``)."""
    import pandas as pd

    parts: list[str] = []
    if keep:
        if isinstance(columns, str):
            parts.append(columns.strip().rstrip(","))
        else:
            parts += [f"`{f.name}` {f.dataType.simpleString()}" for f in columns.fields]
    answers = output_meta(
        pd.DataFrame(), operation=operation, schema=schema, labels=labels, keep=False
    )
    for name, dtype in answers.dtypes.items():
        kind = "timestamp" if str(dtype).startswith("datetime") else _SPARK_TYPES.get(str(dtype))
        parts.append(f"`{name}` {kind or 'string'}")
    return ", ".join(p for p in parts if p)


def spark_function(template: str, **options: Any) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The function ``mapInPandas`` takes: each batch of a partition through ``apply_batch``
    with ``options``."""

    def answer_batches(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            yield apply_batch(batch, template, **options).reset_index(drop=True)

    return answer_batches


def _limit(limit: int, parallel: int) -> tuple[Any, int]:
    """The gate every request of this process passes (a Dask cluster's semaphore) and the
    concurrency of this partition, for a job-wide ``limit`` on requests in flight."""
    if limit < 1 or parallel < 1:
        raise ValueError("limit and parallel must be at least 1")
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return None, max(1, limit // parallel)
    from .limits import DaskGate

    return DaskGate(limit), limit
