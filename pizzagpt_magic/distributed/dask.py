"""``ddf.pizza``: the row-wise operations on a Dask DataFrame, lazily.

Each method returns a lazy Dask DataFrame built with ``map_partitions`` over ``apply_batch``,
with its ``meta`` made by ``output_meta``: building the graph asks nothing. The partitions'
answers are the partition's columns and the answer's (see ``partition``).
"""

from __future__ import annotations

from typing import Any

from .partition import apply_batch, output_meta

__all__ = ["DaskPizza", "register"]


class DaskPizza:
    """``ddf.pizza``: ``map``, ``extract``, ``classify`` and ``filter`` over every row."""

    def __init__(self, data: Any) -> None:
        self._data = data

    def _apply(self, template: Any, operation: str, **options: Any) -> Any:
        from ..frames.options import with_saved

        # A saved prompt is read here, in the notebook: the workers get its text and settings.
        template, options, schema = with_saved(template, options, options.pop("schema", None))
        if schema is not None:
            options["schema"] = schema
        meta = output_meta(
            self._data._meta,
            operation=operation,
            schema=options.get("schema"),
            labels=options.get("labels"),
            keep=options.get("keep", True),
        )
        return self._data.map_partitions(
            apply_batch, template, operation=operation, meta=meta, **options
        )

    def map(self, template: str, schema: Any = None, **options: Any) -> Any:
        """Each row's answer to ``template`` (``answer`` and ``_error``, or with ``schema``
        the typed columns); ``options`` are ``apply_batch``'s."""
        return self._apply(template, "map", schema=schema, **options)

    def extract(self, template: str, schema: Any, **options: Any) -> Any:
        """The fields of ``schema`` for each row, typed, with ``_error``."""
        return self._apply(template, "extract", schema=schema, **options)

    def classify(self, template: str, labels: Any, **options: Any) -> Any:
        """One of ``labels`` for each row (a ``category`` column ``label``)."""
        return self._apply(template, "classify", labels=list(labels), **options)

    def filter(self, condition: str, **options: Any) -> Any:
        """The rows for which the model answers yes to ``condition`` (lazily)."""
        answered = self._apply(condition, "filter", **options)
        return answered[answered["keep"].fillna(False)].drop(columns=["keep", "_error"])


_registered = False


def register() -> None:
    """Put ``pizza`` on Dask DataFrames (once)."""
    global _registered
    if _registered:
        return
    from dask.dataframe.extensions import register_dataframe_accessor

    register_dataframe_accessor("pizza")(DaskPizza)
    _registered = True
