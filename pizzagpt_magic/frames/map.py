"""``df.pizza.map(template)``: the model's answer for every row, on the same index.

Without a schema the answers are a ``string`` Series (``<NA>`` where a row failed, and the
failures counted in a warning); with one they are the typed DataFrame of the schema's fields and
``_error``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .options import options_of
from .run import estimate, run
from .template import RowTemplate

__all__ = ["map_rows", "texts_of"]


def texts_of(data: Any, template: str, budget: int, *, what: str = "template") -> list[str]:
    """``template`` filled for every row of ``data`` (a DataFrame or a Series); a name that is
    not there fails here, before anything is sent."""
    columns = None if _is_series(data) else list(data.columns)
    row_template = RowTemplate(
        template,
        columns,
        series_name=data.name if columns is None else None,
        budget=budget,
        what=what,
    )
    return row_template.render(data)


def _is_series(data: Any) -> bool:
    return type(data).__name__ == "Series"


def map_rows(data: Any, template: str, schema: Any, given: dict[str, Any]) -> Any:
    """``map``'s work (see ``DataFrame.pizza.map``)."""
    if schema is not None:
        from .extract import typed_rows

        return typed_rows(data, template, schema, given, "map")
    options = options_of(given)
    texts = texts_of(data, template, options.value_budget)
    if options.dry_run:
        return estimate("map", texts, options)
    outcomes = run(texts, options, labels=data.index, desc="map")
    values = [None if isinstance(v, BaseException) else v for v in outcomes.values]
    return outcomes.noted(pd.Series(values, index=data.index, dtype="string", name="answer"))
