"""``df.pizza.classify(template, labels)``: one of a fixed set of labels for each row.

The labels are asked for as a JSON Schema ``enum``. An answer outside them goes through the
engine's repair (asked once more, with what was wrong); one that still misses is matched to a
label when it plainly means one (the same words in another case, with quotes or punctuation
around them), else it is ``<NA>``. The result is a ``category`` Series with exactly the labels
as categories, in the order given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import pandas as pd

from .map import texts_of
from .options import options_of
from .run import estimate, run

__all__ = ["classify_rows", "label_schema", "match_label"]

_FOLD = re.compile(r"[\W_]+")


def _labels_of(labels: Any) -> list[Any]:
    if isinstance(labels, str):
        labels = [part.strip() for part in labels.split("|")] if "|" in labels else [labels]
    if not isinstance(labels, Iterable):
        raise TypeError(f"labels must be a list of labels, not {type(labels).__name__}")
    found = list(dict.fromkeys(labels))
    if len(found) < 2:
        raise ValueError("classify needs at least two distinct labels")
    return found


def label_schema(labels: list[Any]) -> Any:
    """The schema that asks for one of ``labels`` (as text)."""
    from ..schema import as_schema

    return as_schema(
        {
            "type": "object",
            "properties": {"label": {"type": "string", "enum": [str(x) for x in labels]}},
            "required": ["label"],
            "additionalProperties": False,
        }
    )


def _fold(text: str) -> str:
    return _FOLD.sub(" ", text).strip().casefold()


def match_label(text: str, labels: list[Any]) -> Any:
    """The label ``text`` plainly means (the answer's ``label`` field, or its whole text,
    compared without case, quotes and punctuation), or None."""
    candidates = [text]
    try:
        data = json.loads(_unfenced(text))
    except ValueError:
        pass
    else:
        if isinstance(data, dict) and isinstance(data.get("label"), str):
            candidates.insert(0, data["label"])
        elif isinstance(data, str):
            candidates.insert(0, data)
    folded = {_fold(str(label)): label for label in labels}
    for candidate in candidates:
        label = folded.get(_fold(candidate))
        if label is not None:
            return label
    return None


def _unfenced(text: str) -> str:
    match = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    return match.group(1) if match else text.strip()


def classify_rows(data: Any, template: str, labels: Any, given: dict[str, Any]) -> Any:
    """``classify``'s work (see ``DataFrame.pizza.classify``)."""
    from ..errors import SchemaError

    options = options_of(given)
    choices = _labels_of(labels)
    texts = texts_of(data, template, options.value_budget)
    schema = label_schema(choices)
    if options.dry_run:
        return estimate("classify", texts, options, schema=schema)
    outcomes = run(texts, options, schema=schema, labels=data.index, desc="classify")
    by_text = {str(label): label for label in choices}
    values: list[Any] = []
    for value in outcomes.values:
        if isinstance(value, SchemaError):
            values.append(match_label(value.text, choices))
        elif isinstance(value, BaseException):
            values.append(None)
        else:
            values.append(by_text.get(value["label"]))
    return pd.Series(pd.Categorical(values, categories=choices), index=data.index, name="label")
