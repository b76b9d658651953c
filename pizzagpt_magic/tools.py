"""Read-only tools over a namespace's variables, so a model can look at the data itself.

A ``Toolbox`` holds a namespace (any mapping: a kernel's ``user_ns``, ``globals()``), the names
of it the model may see, and the budget of one result. It offers the tools in the OpenAI
``tools`` format (``specs``) and runs the calls a model makes (``run``):

- ``list_variables()``: names, types and shapes of the visible DataFrames, Series, arrays and
  scalars;
- ``describe(name, columns)``: ``describe(include="all")``, dtypes and null counts;
- ``head(name, n)`` and ``sample(name, n, seed)``: rows as a Markdown table;
- ``value_counts(name, column, top)``: the top values with counts, and how many there are;
- ``missing(name)``: null counts and shares per column;
- ``correlation(name, columns)``: the numeric correlation matrix;
- ``unique(name, column, limit)``: the distinct values.

What keeps it safe: only these tools run, by name from a fixed table; no tool evaluates text,
imports, writes or reaches the network; a name must be a visible variable, looked up in the
mapping (never by attribute, so ``__import__('os')`` or a dunder is just an unknown name); only
pandas DataFrames and Series, NumPy arrays and plain scalars are looked at, by their exact type,
so no method of a user's own class ever runs; columns must exist; numbers have caps; every
result is cut to the budget. A call that fails for any reason gets a one-line ``error: ...``
result, which goes back to the model as data.

pandas and NumPy are imported only when a call needs them (and only when the namespace holds
their objects, which means the user imported them already).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ToolError
from .interpolate import _REFERENCE, _cell, _cut
from .providers.tool_calls import ToolCall

__all__ = [
    "MAX_CALLS_PER_ANSWER",
    "TOOL_NAMES",
    "ToolRecord",
    "Toolbox",
    "content_hash",
    "referenced_names",
]

TOOL_NAMES = (
    "list_variables",
    "describe",
    "head",
    "sample",
    "value_counts",
    "missing",
    "correlation",
    "unique",
)
#: Calls run from one answer; the rest get a refusal as their result.
MAX_CALLS_PER_ANSWER = 16
#: The name of the record standing for the calls of an answer beyond ``MAX_CALLS_PER_ANSWER``.
REFUSED = "(refused)"
#: Most rows ``head`` and ``sample`` show.
MAX_ROWS = 50
#: Most values ``value_counts`` shows.
MAX_TOP = 100
#: Most values ``unique`` shows.
MAX_UNIQUE = 1000
#: Most columns a ``columns`` argument may name.
MAX_COLUMNS = 200
#: Longest arguments text read, in characters.
MAX_ARGUMENTS = 10_000
#: Most variables ``list_variables`` lists.
MAX_LISTED = 200

_NAME = {"type": "string", "description": "The variable's name."}
_COLUMN = {"type": "string", "description": "A column of the DataFrame (not for a Series)."}
_COLUMNS = {
    "type": "array",
    "items": {"type": "string"},
    "description": "Columns to include (default: all).",
}


def _spec(name: str, description: str, properties: dict[str, Any], required: list[str]) -> Any:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


SPECS: dict[str, Any] = {
    "list_variables": _spec(
        "list_variables",
        "The variables you may look at: names, types and shapes.",
        {},
        [],
    ),
    "describe": _spec(
        "describe",
        "Summary statistics of a DataFrame, Series or array (pandas describe, include all), "
        "with dtypes and null counts.",
        {"name": _NAME, "columns": _COLUMNS},
        ["name"],
    ),
    "head": _spec(
        "head",
        "The first n rows as a Markdown table.",
        {"name": _NAME, "n": {"type": "integer", "minimum": 1, "maximum": MAX_ROWS}},
        ["name"],
    ),
    "sample": _spec(
        "sample",
        "n random rows as a Markdown table (seed makes it repeatable).",
        {
            "name": _NAME,
            "n": {"type": "integer", "minimum": 1, "maximum": MAX_ROWS},
            "seed": {"type": "integer", "minimum": 0},
        },
        ["name"],
    ),
    "value_counts": _spec(
        "value_counts",
        "The most frequent values of a column (or a Series) with their counts, and the "
        "number of distinct values.",
        {
            "name": _NAME,
            "column": _COLUMN,
            "top": {"type": "integer", "minimum": 1, "maximum": MAX_TOP},
        },
        ["name"],
    ),
    "missing": _spec(
        "missing",
        "Null counts and shares per column.",
        {"name": _NAME},
        ["name"],
    ),
    "correlation": _spec(
        "correlation",
        "The correlation matrix of the numeric columns.",
        {"name": _NAME, "columns": _COLUMNS},
        ["name"],
    ),
    "unique": _spec(
        "unique",
        "The distinct values of a column (or a Series), up to limit.",
        {
            "name": _NAME,
            "column": _COLUMN,
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_UNIQUE},
        },
        ["name"],
    ),
}
_PARAMETERS = {
    name: frozenset(spec["function"]["parameters"]["properties"]) for name, spec in SPECS.items()
}

_SCALARS = (int, float, bool, complex, str)
_WORD = re.compile(r"[A-Za-z_]\w*")


def _pandas(kind: str) -> type | None:
    module = sys.modules.get("pandas")
    return getattr(module, kind, None) if module is not None else None


def kind_of(value: Any) -> str | None:
    """``"DataFrame"``, ``"Series"``, ``"ndarray"`` or ``"scalar"`` for a value the tools
    look at (by exact type), else None."""
    cls = type(value)
    if cls in _SCALARS:
        return "scalar"
    if cls is _pandas("DataFrame"):
        return "DataFrame"
    if cls is _pandas("Series"):
        return "Series"
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if cls is numpy.ndarray:
            return "ndarray"
        if cls.__module__ == "numpy" and isinstance(value, numpy.generic):
            return "scalar"
    return None


def referenced_names(question: str) -> set[str]:
    """The names a question refers to: those of its ``{references}`` and its bare words."""
    names = {match["name"] for match in _REFERENCE.finditer(question)}
    names.update(_WORD.findall(question))
    return names


def content_hash(value: Any) -> str:
    """A hash of a value's content, so that a changed DataFrame is asked about again (pandas'
    ``hash_pandas_object`` for tables, the bytes of an array, the text of a scalar)."""
    digest = hashlib.blake2b(digest_size=16)
    kind = kind_of(value)
    digest.update(f"{kind}:{type(value).__name__}".encode())
    if kind in ("DataFrame", "Series"):
        import pandas as pd

        frame = value if kind == "DataFrame" else value.to_frame()
        digest.update(repr(frame.shape).encode())
        digest.update(repr([str(d) for d in frame.dtypes]).encode())
        digest.update(repr(list(frame.columns)).encode("utf-8", "surrogatepass"))
        try:
            hashed = pd.util.hash_pandas_object(value, index=True)
        except TypeError:  # unhashable cells (lists, dicts): their text
            hashed = pd.util.hash_pandas_object(value.astype(str), index=True)
        digest.update(hashed.to_numpy().tobytes())
    elif kind == "ndarray":
        digest.update(f"{value.dtype}{value.shape}".encode())
        if value.dtype.hasobject:
            digest.update(repr(value.tolist()).encode("utf-8", "surrogatepass"))
        else:
            import numpy as np

            digest.update(np.ascontiguousarray(value).tobytes())
    else:
        digest.update(repr(value).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


@dataclass(frozen=True)
class ToolRecord:
    """One call as it ran: the tool's name, its arguments (as parsed, or the raw text when
    they were not JSON), the size of its result in characters, and its error, if any."""

    name: str
    arguments: Any
    chars: int
    error: str | None = None

    def label(self) -> str:
        """``describe(sales)``, ``value_counts(sales, region)``: how the display names it."""
        if self.name == REFUSED:
            return f"{self.arguments} refused"
        name = self.name if self.name in SPECS else _short(self.name or "?", 40)
        if isinstance(self.arguments, dict):
            shown = ", ".join(
                value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                for value in self.arguments.values()
            )
        else:
            shown = str(self.arguments)
        return f"{name}({_short(shown, 80)})"

    def as_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"name": self.name, "arguments": self.arguments}
        record["chars"] = self.chars
        if self.error is not None:
            record["error"] = self.error
        return record


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class Toolbox:
    """The tools over ``namespace``'s ``visible`` names (None: every name that may be
    shown), each result cut to ``budget`` characters."""

    def __init__(
        self,
        namespace: Mapping[str, Any],
        visible: Iterable[str] | None = None,
        *,
        budget: int = 4000,
        hidden: Iterable[str] = (),
        tools: Iterable[str] = TOOL_NAMES,
    ) -> None:
        self.namespace = namespace
        self._key: str | None = None
        self.budget = max(100, int(budget))
        self.tools = tuple(t for t in TOOL_NAMES if t in set(tools))
        hidden = set(hidden)
        names = namespace.keys() if visible is None else visible
        self.visible = tuple(
            sorted(
                name
                for name in set(names)
                if isinstance(name, str)
                and not name.startswith("_")
                and name not in hidden
                and name in namespace
                and kind_of(namespace[name]) is not None
            )
        )

    def specs(self) -> list[dict[str, Any]]:
        """The tools, in the OpenAI ``tools`` format."""
        return [SPECS[name] for name in self.tools]

    def key(self) -> str:
        """What of the toolbox decides an answer, as canonical JSON: the tools, the budget and
        the visible variables' content hashes (found once per toolbox: a toolbox serves one
        question)."""
        if self._key is None:
            variables = {name: content_hash(self.namespace[name]) for name in self.visible}
            self._key = json.dumps(
                {"tools": list(self.tools), "budget": self.budget, "variables": variables},
                sort_keys=True,
                separators=(",", ":"),
            )
        return self._key

    # -- running calls ------------------------------------------------------------------------

    def run_all(self, calls: list[ToolCall]) -> tuple[list[str], list[ToolRecord]]:
        """The results of an answer's calls, in order (the first ``MAX_CALLS_PER_ANSWER``
        run; the rest are refused), and the records of those that ran or were refused."""
        results: list[str] = []
        records: list[ToolRecord] = []
        for number, call in enumerate(calls):
            if number < MAX_CALLS_PER_ANSWER:
                result, record = self.run(call)
                records.append(record)
            else:
                result = (
                    f"error: not run: at most {MAX_CALLS_PER_ANSWER} tool calls are run from "
                    "one answer"
                )
            results.append(result)
        refused = len(calls) - MAX_CALLS_PER_ANSWER
        if refused > 0:
            records.append(ToolRecord(REFUSED, f"{refused} more calls", 0, "too many calls"))
        return results, records

    def run(self, call: ToolCall) -> tuple[str, ToolRecord]:
        """The result of one call (a one-line ``error: ...`` when it fails) and its record."""
        arguments: Any = call.arguments
        try:
            if call.name not in self.tools:
                raise ToolError(
                    f"there is no tool named {_short(call.name, 60)!r}; the tools are "
                    f"{', '.join(self.tools)}"
                )
            arguments = _arguments(call.arguments)
            unknown = set(arguments) - _PARAMETERS[call.name]
            if unknown:
                listed = ", ".join(sorted(_short(str(u), 40) for u in unknown))
                raise ToolError(f"{call.name} takes no argument {listed}")
            result = getattr(self, f"_{call.name}")(arguments)
        except ToolError as exc:
            error = f"error: {exc}"
            return error, ToolRecord(call.name, arguments, len(error), str(exc))
        except Exception as exc:  # pandas' own failure on the user's data: one line back
            text = _short(f"{type(exc).__name__}: {exc}", 300)
            error = f"error: {call.name} failed: {text}"
            return error, ToolRecord(call.name, arguments, len(error), text)
        result = _cut(result, self.budget)
        return result, ToolRecord(call.name, arguments, len(result))

    def _variable(self, arguments: dict[str, Any], *kinds: str) -> tuple[str, Any, str]:
        name = arguments.get("name")
        if not isinstance(name, str):
            raise ToolError("name must be the name of a variable, as a string")
        if name not in self.visible:
            raise ToolError(
                f"no variable named {_short(name, 60)!r} can be looked at; list_variables "
                "names those that can"
            )
        value = self.namespace[name]
        kind = kind_of(value)
        if kind is None or (kinds and kind not in kinds):
            raise ToolError(f"{name} is a {type(value).__name__}; this tool takes {_or(kinds)}")
        return name, value, kind

    def _frame(self, arguments: dict[str, Any]) -> tuple[str, Any]:
        """The variable as a DataFrame (a Series as one column, an array as columns)."""
        name, value, kind = self._variable(arguments, "DataFrame", "Series", "ndarray")
        import pandas as pd

        if kind == "Series":
            return name, value.to_frame(name=str(value.name) if value.name is not None else name)
        if kind == "ndarray":
            if value.ndim > 2:
                raise ToolError(f"{name} has {value.ndim} dimensions; this tool takes 1 or 2")
            return name, pd.DataFrame(value)
        return name, value

    def _series(self, arguments: dict[str, Any]) -> tuple[str, Any]:
        """A column of a DataFrame (``column``), or a Series or 1-d array itself."""
        name, frame = self._frame(arguments)
        column = arguments.get("column")
        if column is None:
            if frame.shape[1] != 1:
                raise ToolError(f"{name} has {frame.shape[1]} columns: name one with column")
            return name, frame.iloc[:, 0]
        (label,) = _columns(frame, [column], "column")
        return f"{name}[{label!r}]", frame[label]

    # -- the tools ----------------------------------------------------------------------------

    def _list_variables(self, arguments: dict[str, Any]) -> str:
        lines = []
        for name in self.visible[:MAX_LISTED]:
            lines.append(f"- {name}: {_summary(self.namespace[name])}")
        if len(self.visible) > MAX_LISTED:
            lines.append(f"- … {len(self.visible) - MAX_LISTED} more")
        return "\n".join(lines) if lines else "No variables can be looked at."

    def _describe(self, arguments: dict[str, Any]) -> str:
        name, value, kind = self._variable(arguments)
        if kind == "scalar":
            return f"{name}: {type(value).__name__} {_cut(repr(value), 1000)}"
        name, frame = self._frame(arguments)
        frame = _select(frame, arguments.get("columns"))
        if frame.shape[1] == 0:
            return f"{name}: no columns"
        stats = frame.describe(include="all")
        types = frame.dtypes.astype(str)
        nulls = frame.isna().sum()
        info = {"dtype": types, "nulls": nulls}
        import pandas as pd

        return f"{name}: {_shape(frame)}\n\n{_table(stats)}\n\n{_table(pd.DataFrame(info).T)}"

    def _head(self, arguments: dict[str, Any]) -> str:
        name, frame = self._frame(arguments)
        n = _number(arguments, "n", 5, 1, MAX_ROWS)
        return f"{name}: {_shape(frame)}; the first {min(n, len(frame))}\n\n{_table(frame.head(n))}"

    def _sample(self, arguments: dict[str, Any]) -> str:
        name, frame = self._frame(arguments)
        n = _number(arguments, "n", 5, 1, MAX_ROWS)
        seed = _number(arguments, "seed", 0, 0, 2**32 - 1)
        rows = frame.sample(n=min(n, len(frame)), random_state=seed)
        return f"{name}: {_shape(frame)}; {len(rows)} sampled (seed {seed})\n\n{_table(rows)}"

    def _value_counts(self, arguments: dict[str, Any]) -> str:
        name, series = self._series(arguments)
        top = _number(arguments, "top", 10, 1, MAX_TOP)
        counts = series.value_counts(dropna=False)
        lines = ["| value | count |", "|---|---|"]
        lines += [f"| {_cell(v)} | {c} |" for v, c in counts.head(top).items()]
        return (
            f"{name}: {len(counts):,} distinct values (nulls counted) in {len(series):,} rows; "
            f"the top {min(top, len(counts))}\n\n" + "\n".join(lines)
        )

    def _missing(self, arguments: dict[str, Any]) -> str:
        name, frame = self._frame(arguments)
        nulls = frame.isna().sum()
        rows = len(frame)
        lines = ["| column | nulls | share |", "|---|---|---|"]
        for column, count in nulls.items():
            share = count / rows if rows else 0.0
            lines.append(f"| {_cell(column)} | {count} | {share:.4%} |")
        return f"{name}: {rows:,} rows; {int(nulls.sum()):,} nulls in all\n\n" + "\n".join(lines)

    def _correlation(self, arguments: dict[str, Any]) -> str:
        name, frame = self._frame(arguments)
        numeric = _select(frame, arguments.get("columns")).select_dtypes("number")
        if numeric.shape[1] < 2:
            raise ToolError(f"{name} has fewer than two numeric columns to correlate")
        return f"{name}: Pearson correlation\n\n{_table(numeric.corr())}"

    def _unique(self, arguments: dict[str, Any]) -> str:
        name, series = self._series(arguments)
        limit = _number(arguments, "limit", 50, 1, MAX_UNIQUE)
        values = series.unique()
        shown = ", ".join(_cell(v, 80) for v in values[:limit])
        more = f", … {len(values) - limit:,} more" if len(values) > limit else ""
        return f"{name}: {len(values):,} distinct values\n\n{shown}{more}"


def _or(kinds: tuple[str, ...]) -> str:
    return " or ".join(kinds) if kinds else "a DataFrame, Series, array or scalar"


def _arguments(text: str) -> dict[str, Any]:
    if not text or not text.strip():
        return {}
    if len(text) > MAX_ARGUMENTS:
        raise ToolError(f"the arguments are over {MAX_ARGUMENTS:,} characters")
    try:
        arguments = json.loads(text)
    except ValueError:
        raise ToolError("the arguments are not JSON") from None
    if not isinstance(arguments, dict):
        raise ToolError("the arguments must be a JSON object")
    return arguments


def _number(arguments: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = arguments.get(key, default)
    if value is None:
        return default
    if type(value) is not int or not low <= value <= high:
        raise ToolError(f"{key} must be a whole number from {low} to {high:,}")
    return value


def _columns(frame: Any, wanted: Any, what: str = "columns") -> list[Any]:
    """The labels of ``frame``'s columns named by ``wanted`` (strings; a label that is not a
    string is named by its text)."""
    if not isinstance(wanted, list) or not all(isinstance(c, str) for c in wanted):
        raise ToolError(f"{what} must be {'a string' if what == 'column' else 'strings'}")
    if len(wanted) > MAX_COLUMNS:
        raise ToolError(f"at most {MAX_COLUMNS} columns may be named")
    labels = {str(label): label for label in frame.columns}
    missing = [c for c in wanted if c not in labels]
    if missing:
        raise ToolError(f"no column named {_short(missing[0], 60)!r}")
    return [labels[c] for c in wanted]


def _select(frame: Any, columns: Any) -> Any:
    if columns is None:
        return frame
    if isinstance(columns, str):
        columns = [columns]
    return frame[_columns(frame, columns)]


def _shape(frame: Any) -> str:
    return f"{frame.shape[0]:,} rows × {frame.shape[1]:,} columns"


def _summary(value: Any) -> str:
    kind = kind_of(value)
    if kind == "DataFrame":
        columns = ", ".join(f"{_cell(c, 30)} ({t})" for c, t in list(value.dtypes.items())[:30])
        more = f", … {value.shape[1] - 30} more" if value.shape[1] > 30 else ""
        return f"DataFrame, {_shape(value)}: {columns}{more}"
    if kind == "Series":
        return f"Series of {len(value):,} {value.dtype} values"
    if kind == "ndarray":
        return f"ndarray {value.dtype}, shape {value.shape}"
    if isinstance(value, str):
        return f"str of {len(value):,} characters"
    return f"{type(value).__name__}"


def _table(frame: Any) -> str:
    """A DataFrame as a Markdown table (cells one line each, ``|`` escaped)."""
    lines = [
        "| " + " | ".join([""] + [_cell(c) for c in frame.columns]) + " |",
        "|" + "---|" * (frame.shape[1] + 1),
    ]
    for index, row in zip(frame.index, frame.itertuples(index=False)):
        lines.append("| " + " | ".join([_cell(index)] + [_cell(v) for v in row]) + " |")
    return "\n".join(lines)
