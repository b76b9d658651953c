"""``df.pizza.filter(condition)``: the rows for which the model answers yes.

The condition, filled for each row, is asked with a boolean schema (``{"answer": true}``), never
read from prose. ``mask=True`` (or ``df.pizza.mask``) gives the ``boolean`` mask itself, on the
same index, ``<NA>`` where the answer failed; ``filter`` keeps the rows whose answer is true (a
failed row is left out), by position, so a non-unique index is no trouble.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .map import texts_of
from .options import options_of
from .run import estimate, run

__all__ = ["YES_NO", "filter_rows", "yes_no"]

#: The schema every condition is asked with.
YES_NO = {
    "type": "object",
    "properties": {
        "answer": {
            "type": "boolean",
            "description": "true when the statement holds (the answer to the question is yes)",
        }
    },
    "required": ["answer"],
    "additionalProperties": False,
}


def yes_no() -> Any:
    """The boolean schema of ``filter``."""
    from ..schema import as_schema

    return as_schema(YES_NO)


def filter_rows(data: Any, condition: str, mask: bool, given: dict[str, Any]) -> Any:
    """``filter``'s work (see ``DataFrame.pizza.filter``)."""
    options = options_of(given)
    texts = texts_of(data, condition, options.value_budget, what="condition")
    schema = yes_no()
    if options.dry_run:
        return estimate("filter", texts, options, schema=schema)
    outcomes = run(texts, options, schema=schema, labels=data.index, desc="filter")
    answers = [None if isinstance(v, BaseException) else bool(v["answer"]) for v in outcomes.values]
    flags = pd.Series(answers, index=data.index, dtype="boolean", name="answer")
    if mask:
        return outcomes.noted(flags)
    return outcomes.noted(data[flags.fillna(False).to_numpy(dtype=bool)])
