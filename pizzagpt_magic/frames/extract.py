"""``df.pizza.extract(template, schema)``: fields pulled out of every row, as typed columns.

The schema is a concise spec (``"city, year int, sentiment pos|neg"``), a JSON Schema or a
Pydantic model; each answer is checked (and repaired) by the engine. The result is the typed
DataFrame of the schema (``int`` as ``Int64``, labels as ``category``, ...) with ``_error``, on the
same index, so ``df.join(df.pizza.extract(...))`` puts the fields beside the rows.
``map(template, schema=...)`` gives the same frame.
"""

from __future__ import annotations

from typing import Any

from .map import texts_of
from .options import options_of
from .run import estimate, run

__all__ = ["extract_rows", "typed_rows"]


def typed_rows(data: Any, template: str, schema: Any, given: dict[str, Any], method: str) -> Any:
    """The typed DataFrame of ``schema``'s answers for every row (``extract`` and
    ``map(..., schema=)``)."""
    from ..engine import answers_frame
    from ..schema import as_schema

    options = options_of(given)
    checked = as_schema(schema)  # a bad schema fails here, before anything is sent
    texts = texts_of(data, template, options.value_budget)
    if options.dry_run:
        return estimate(method, texts, options, schema=checked)
    outcomes = run(texts, options, schema=checked, labels=data.index, desc=method)
    return outcomes.noted(answers_frame(outcomes.values, checked, index=data.index))


def extract_rows(data: Any, template: str, schema: Any, given: dict[str, Any]) -> Any:
    """``extract``'s work (see ``DataFrame.pizza.extract``)."""
    if schema is None:
        raise TypeError("extract needs a schema: a concise spec, a JSON Schema or a model")
    return typed_rows(data, template, schema, given, "extract")
