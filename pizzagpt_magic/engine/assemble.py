"""Assembling: outcomes back in the caller's order, as values, or as a typed DataFrame.

The only module of the engine that knows pandas, imported when a frame is asked for.
``answers_frame`` makes one column a field of the schema, typed (``int`` as ``Int64``, ``float``
as ``Float64``, ``bool`` as ``boolean``, labels as a ``category`` of exactly those labels,
``date`` as datetime, ``str`` as ``string``), and an ``_error`` column: a failed row is all
``<NA>`` with its one-line reason there. A field an answer lacks is ``<NA>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..schema import Schema
    from .check import Outcome

__all__ = ["ERROR_COLUMN", "answers_frame", "values_of"]

#: The column that holds a failed row's reason.
ERROR_COLUMN = "_error"

_DTYPES = {"int": "Int64", "float": "Float64", "bool": "boolean", "str": "string"}


def values_of(outcomes: Sequence[Outcome | None]) -> list[Any]:
    """Each position's value, or its exception; None where none came."""
    return [None if o is None else o.result() for o in outcomes]


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        from ..errors import ConfigurationError

        raise ConfigurationError(
            "typed answers as a DataFrame need pandas: pip install 'pizzagpt-magic[pandas]'"
        ) from None
    return pandas


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def answers_frame(values: Sequence[Any], schema: Any, *, index: Any = None) -> Any:
    """A DataFrame of schema answers (see the module's docstring).

    ``values`` are what ``ask_many(..., schema=..., errors="return")`` returns: per row a dict,
    a model instance, or the exception (None: no answer came, an interrupted row). ``schema``
    is the schema in any form; ``index`` the frame's index (positions by default).
    """
    from ..schema import as_schema

    pd = _pandas()
    checked: Schema | None = as_schema(schema)
    assert checked is not None
    columns = checked.columns
    data: dict[str, list[Any]] = {c.name: [] for c in columns}
    errors: list[Any] = []
    for value in values:
        if isinstance(value, BaseException) or value is None:
            for column in columns:
                data[column.name].append(None)
            errors.append(_reason(value) if value is not None else "no answer came")
            continue
        row = checked.as_data(value)
        if not isinstance(row, dict):
            row = {}
        for column in columns:
            data[column.name].append(row.get(column.name))
        errors.append(None)
    frame: dict[str, Any] = {}
    for column in columns:
        cells = data[column.name]
        frame[column.name] = _typed(pd, cells, column)
    frame[ERROR_COLUMN] = pd.array(errors, dtype="string")
    if index is None:
        index = pd.RangeIndex(len(errors))
    return pd.DataFrame(frame, index=index)


def _number(cell: Any) -> Any:
    return cell if isinstance(cell, (int, float)) and not isinstance(cell, bool) else None


def _typed(pd: Any, cells: list[Any], column: Any) -> Any:
    kind = column.kind
    try:
        if kind == "labels":
            return pd.Categorical(
                [c if c in column.labels else None for c in cells], categories=list(column.labels)
            )
        if kind == "date":
            return pd.to_datetime(pd.Series(cells, dtype=object), errors="coerce").array
        if kind in ("int", "float"):
            cells = [_number(c) for c in cells]
            if kind == "int":
                cells = [int(c) if c is not None and float(c).is_integer() else None for c in cells]
        if kind == "bool":
            cells = [c if isinstance(c, bool) else None for c in cells]
        if kind == "str":
            cells = [c if isinstance(c, str) or c is None else str(c) for c in cells]
        dtype = _DTYPES.get(kind)
        if dtype is not None:
            return pd.array(cells, dtype=dtype)
    except (TypeError, ValueError):
        pass
    return pd.array(cells, dtype=object)
