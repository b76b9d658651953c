"""Row templates: a prompt template read once and filled for every row of a table.

In a DataFrame's template ``{column}`` is that column's value, ``{index}`` the row's index label
and ``{row}`` the whole row in the compact form ``col: value; col: value``; in a Series'
template ``{value}`` is the value (and ``{index}`` its label, ``{name}`` the value too when the
Series is called ``name``). A column of the same name wins over ``index``, ``row`` and
``value``. Chains work as in ``%pizza`` (``{row['unit price']}``, ``{review.upper}`` is not
called, ``{meta[key]}``), and each value becomes text exactly as ``%%pizza --each`` makes it, so
the same row gives the same prompt, and the same cache key, in a cell and in a method call.

A name that is no column fails before anything is sent, naming it and listing the columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InterpolationError
from ..interpolate import (
    DEFAULT_BUDGET,
    Reference,
    Row,
    format_value,
    parse_template,
    row_text,
    table_rows,
)

__all__ = ["RowTemplate"]

#: Cell types whose text is ``str(value)`` (``format_value``'s rule for them, without its checks).
_PLAIN = frozenset({int, float, bool})

#: The names a DataFrame's template may use besides its columns.
FRAME_NAMES = ("index", "row")
#: The names a Series' template may use.
SERIES_NAMES = ("value", "index")


def _listing(columns: Sequence[Any], limit: int = 30) -> str:
    shown = ", ".join(str(c) for c in columns[:limit])
    return shown + (f", … {len(columns) - limit} more" if len(columns) > limit else "")


class RowTemplate:
    """``template`` read once for a table's columns (a DataFrame's, or ``None`` for a
    Series called ``series_name``); ``render`` fills it for every row."""

    def __init__(
        self,
        template: str,
        columns: Sequence[Any] | None,
        *,
        series_name: Any = None,
        budget: int = DEFAULT_BUDGET,
        what: str = "template",
    ) -> None:
        if not isinstance(template, str):
            raise TypeError(f"the {what} must be text, not {type(template).__name__}")
        if not template.strip():
            raise InterpolationError(f"The {what} is empty", "")
        self.template = template
        self.budget = budget
        self.pieces = parse_template(template)
        self.series = columns is None
        names = {p.name for p in self.pieces if isinstance(p, Reference)}
        if self.series:
            known = set(SERIES_NAMES) | ({series_name} if isinstance(series_name, str) else set())
            missing = sorted(names - known)
            if missing:
                raise InterpolationError(
                    f"{{{missing[0]}}} in the {what} is not defined: a Series' template "
                    "uses {value} and {index}"
                    + (f" (or {{{series_name}}})" if isinstance(series_name, str) else ""),
                    missing[0],
                )
            self.columns: list[Any] = []
        else:
            assert columns is not None
            self.columns = list(columns)
            known = {c for c in self.columns if isinstance(c, str)} | set(FRAME_NAMES)
            missing = sorted(names - known)
            if missing:
                raise InterpolationError(
                    f"Column {missing[0]!r} in the {what} is not a column of the DataFrame; "
                    f"its columns are: {_listing(self.columns) or 'none'}",
                    missing[0],
                )
        self.names = names
        self.static = not names

    def needs(self) -> list[Any]:
        """The columns the template reads (all of them when it uses ``{row}``)."""
        if self.series:
            return []
        if "row" in self.names and "row" not in self.columns:
            return list(self.columns)
        return [c for c in self.columns if c in self.names]

    def render(self, data: Any) -> list[str]:
        """The template filled for each row of ``data`` (the DataFrame or Series it was made
        for), in order."""
        to_text: Callable[[Any], str] = self._text
        if self.static:
            return [self.render_one({})] * len(data)
        if self.series:
            values = data.tolist()
            labels = data.index.tolist()
            extra = data.name if isinstance(data.name, str) else None
            scopes: Any = (
                {"value": v, "index": i, **({extra: v} if extra else {})}
                for v, i in zip(values, labels)
            )
            return [self._fill(scope, to_text) for scope in scopes]
        labels = data.index.tolist()
        needs = self.needs()
        if "row" in self.names and "row" not in self.columns:
            columns = list(data.columns)
            rows = table_rows(data)
            own = [c for c in needs if c in self.names]
            positions = {c: columns.index(c) for c in own}
            out = []
            for label, cells in zip(labels, rows):
                scope = {c: cells[p] for c, p in positions.items()}
                scope.setdefault("index", label)
                scope["row"] = _RowText(columns, cells)
                out.append(self._fill(scope, to_text))
            return out
        cells = [data[c].tolist() for c in needs]
        names = list(needs)
        if "index" in self.names and "index" not in names:
            cells.append(labels)
            names.append("index")
        if len(names) == 1 and len(self.pieces) <= 3:
            return self._render_single(names[0], cells[0], to_text)
        return [self._fill(dict(zip(names, values)), to_text) for values in zip(*cells)]

    def render_one(self, scope: dict[str, Any]) -> str:
        """The template filled with ``scope``'s values."""
        return self._fill(scope, self._text)

    def _text(self, value: Any) -> str:
        # Plain values (most cells) without format_value's checks for tables; the same text.
        kind = type(value)
        if kind is str:
            if len(value) <= self.budget:
                return value
        elif kind in _PLAIN:
            text = str(value)
            if len(text) <= self.budget:
                return text
        return format_value(value, self.budget)

    def _fill(self, scope: dict[str, Any], to_text: Callable[[Any], str]) -> str:
        out = []
        for piece in self.pieces:
            if isinstance(piece, str):
                out.append(piece)
            elif not piece.chain:
                out.append(to_text(scope[piece.name]))
            else:
                value = scope[piece.name]
                if isinstance(value, _RowText):
                    value = value.row()
                out.append(to_text(piece.value({piece.name: value})))
        return "".join(out)

    def _render_single(
        self, name: str, values: list[Any], to_text: Callable[[Any], str]
    ) -> list[str]:
        """The common case, a value in some text: one f-string a row."""
        before = after = ""
        pieces = self.pieces
        reference = next(p for p in pieces if isinstance(p, Reference))
        if reference.chain or sum(isinstance(p, Reference) for p in pieces) != 1:
            return [self._fill({name: v}, to_text) for v in values]
        at = pieces.index(reference)
        before = "".join(p for p in pieces[:at] if isinstance(p, str))
        after = "".join(p for p in pieces[at + 1 :] if isinstance(p, str))
        return [f"{before}{to_text(v)}{after}" for v in values]


class _RowText:
    """``{row}``: the row's compact text, made only if the template asks for it, with the
    cells behind it for ``{row[col]}``."""

    __slots__ = ("cells", "columns")

    def __init__(self, columns: list[Any], cells: list[Any]) -> None:
        self.columns = columns
        self.cells = cells

    def row(self) -> Row:
        return Row(dict(zip(self.columns, self.cells)))

    def __str__(self) -> str:
        return row_text(self.columns, self.cells)
