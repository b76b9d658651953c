"""``{name}`` references in prompts, and how values are put into prompts as text.

The rules, the same for ``%pizza`` and ``%%pizza``:

- ``{name}``, ``{name.attr}``, ``{name[key]}`` and chains of them (``{df.shape[0]}``) are
  replaced with the value's text; ``key`` is an integer, a quoted string or a bare word.
- ``{{`` gives ``{`` and a ``}}`` that closes it gives ``}``; a ``}}`` with no ``{{`` before it
  is left alone, so nested JSON such as ``{"a": {"b": 1}}`` passes through untouched.
- Braces around anything else (JSON, dict and set literals, code) pass through untouched.
- A reference whose name is not defined is an error that names it.
- Substitution is one pass: text that comes from a value is never looked at again.

Tables (pandas ``DataFrame`` and ``Series``) become a bounded description: shape, columns and
dtypes, and the first rows as a Markdown table. Other values longer than the budget are cut, with
a marker saying how much was left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from .errors import InterpolationError

__all__ = [
    "Reference",
    "Row",
    "batch_items",
    "describe_table",
    "format_value",
    "interpolate",
    "parse_template",
    "row_text",
    "table_rows",
    "take_items",
]

_MISSING = object()
_REFERENCE = re.compile(
    r"""\{
    (?P<name>[A-Za-z_]\w*)
    (?P<chain>(?:
        \.[A-Za-z_]\w*
      | \[\s*(?:-?\d+|'[^'\\\]]*'|"[^"\\\]]*"|[A-Za-z_][\w-]*)\s*\]
    )*)
    \}""",
    re.X,
)
_STEP = re.compile(
    r"""\.(?P<attr>[A-Za-z_]\w*)
      | \[\s*(?:(?P<int>-?\d+)|'(?P<sq>[^']*)'|"(?P<dq>[^"]*)"|(?P<word>[A-Za-z_][\w-]*))\s*\]""",
    re.X,
)

DEFAULT_BUDGET = 4000


def _resolve(name: str, chain: str, namespace: Mapping[str, Any], whole: str) -> Any:
    value = namespace.get(name, _MISSING)
    if value is _MISSING:
        raise InterpolationError(f"Name {name!r} in {whole} is not defined", name)
    shown = name
    for step in _STEP.finditer(chain):
        try:
            if step["attr"] is not None:
                value = getattr(value, step["attr"])
            else:
                key: Any = (
                    int(step["int"])
                    if step["int"] is not None
                    else (
                        step["sq"]
                        if step["sq"] is not None
                        else step["dq"]
                        if step["dq"] is not None
                        else step["word"]
                    )
                )
                value = value[key]
        except Exception as exc:  # the user's object: any failure is theirs to see, as one line
            raise InterpolationError(
                f"Cannot evaluate {whole}: {shown}{step.group(0)} failed ({_said(exc)})",
                name,
            ) from exc
        shown += step.group(0)
    return value


def parse_template(template: str) -> list[str | Reference]:
    """``template`` as literal text and ``Reference``s, in order (escapes already applied), so
    that a template filled many times is read once."""
    pieces: list[str | Reference] = []
    text: list[str] = []
    pos = 0
    open_escapes = 0
    length = len(template)
    while pos < length:
        brace = _next_brace(template, pos)
        if brace < 0:
            text.append(template[pos:])
            break
        text.append(template[pos:brace])
        if template.startswith("{{", brace):
            text.append("{")
            open_escapes += 1
            pos = brace + 2
        elif template.startswith("}}", brace) and open_escapes:
            text.append("}")
            open_escapes -= 1
            pos = brace + 2
        elif template[brace] == "{" and (match := _REFERENCE.match(template, brace)):
            if text:
                pieces.append("".join(text))
                text = []
            pieces.append(Reference(match["name"], match["chain"], match.group(0)))
            pos = match.end()
        else:
            text.append(template[brace])
            pos = brace + 1
    if text:
        pieces.append("".join(text))
    return [p for p in pieces if p != ""]


class Reference(NamedTuple):
    """A ``{name.attr[key]}`` reference in a template: its name, the chain after it, and the
    whole reference as written."""

    name: str
    chain: str
    whole: str

    def value(self, namespace: Mapping[str, Any]) -> Any:
        """The value the reference stands for in ``namespace``."""
        return _resolve(self.name, self.chain, namespace, self.whole)


def interpolate(
    template: str,
    namespace: Mapping[str, Any],
    to_text: Callable[[Any], str] | None = None,
    on_reference: Callable[[Any, str], str | None] | None = None,
) -> str:
    """``template`` with every ``{reference}`` replaced by ``to_text(value)``.

    ``on_reference(value, reference)``, when given, is asked first and may return the
    replacement itself (a placeholder for an image, say), or None for ``to_text``'s."""
    to_text = to_text or format_value
    out: list[str] = []
    seen: list[str] = []  # the template's text so far, for the hint of an undefined name
    for piece in parse_template(template):
        if isinstance(piece, str):
            out.append(piece)
            seen.append(piece)
            continue
        try:
            value = _resolve(piece.name, piece.chain, namespace, piece.whole)
        except InterpolationError as exc:
            raise _with_hint(exc, "".join(seen), piece.whole) from exc.__cause__
        seen.append(piece.whole)
        replaced = on_reference(value, piece.whole) if on_reference else None
        if replaced is None:
            try:
                replaced = to_text(value)
            except Exception as exc:  # a __str__ or __repr__ of the user's that fails
                raise InterpolationError(
                    f"Cannot put {piece.whole} in the prompt: its text failed ({_said(exc)})",
                    piece.name,
                ) from exc
        out.append(replaced)
    return "".join(out)


def _said(exc: BaseException) -> str:
    """``Type: message`` of an exception from the user's code, on one line (even when its own
    ``__str__`` fails)."""
    try:
        text = " ".join(str(exc).split())
    except Exception:  # noqa: BLE001 - an exception that cannot say what it is
        text = ""
    name = type(exc).__name__
    return f"{name}: {text[:200]}" if text else name


_FENCE_LINE = re.compile(r"^ {0,3}(?:`{3,}|~{3,})", re.M)


def _literal_place(before: str) -> str | None:
    """What holds the end of ``before`` (a template's text up to a reference) where braces
    are usually literal: "a code block" (inside a fence), "math" (between ``$$``, or ``$`` in
    one paragraph), else None."""
    if len(_FENCE_LINE.findall(before)) % 2:
        return "a code block"
    if before.count("$$") % 2:
        return "math"
    paragraph = before[before.rfind("\n\n") + 1 :].replace("$$", "").replace("\\$", "")
    return "math" if paragraph.count("$") % 2 else None


def _with_hint(exc: InterpolationError, before: str, whole: str) -> InterpolationError:
    """``exc`` for an undefined name, with how to keep the braces when they are in math or
    code (where ``{n}`` is most likely meant as it is); ``before`` is the text before it."""
    place = _literal_place(before)
    if place is None or "is not defined" not in str(exc):
        return exc
    literal = "{" + whole + "}"
    return InterpolationError(
        f"{exc} (it is inside {place}: write {literal} to keep the braces, or send the text as "
        "it is with --no-interpolate)",
        exc.name,
    )


def _next_brace(text: str, start: int) -> int:
    opening, closing = text.find("{", start), text.find("}", start)
    if opening < 0:
        return closing
    if closing < 0:
        return opening
    return min(opening, closing)


def _cut(text: str, budget: int) -> str:
    if len(text) <= budget:
        return text
    marker = f" … [{len(text) - budget:,} more characters cut]"
    return text[: max(0, budget - len(marker))] + marker


def _is_pandas(value: Any, kind: str) -> bool:
    cls = type(value)
    return cls.__name__ == kind and cls.__module__.startswith("pandas")


def _number(value: Any) -> str | None:
    """A float (Python's or NumPy's) at a readable precision: at most 4 decimals, trailing
    zeros dropped, very large or small ones in exponent form; None for anything else."""
    if not isinstance(value, float) and getattr(getattr(value, "dtype", None), "kind", "") != "f":
        return None
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        return str(number)
    if number and not 1e-4 <= abs(number) < 1e15:
        return f"{number:.4g}"
    text = f"{number:.4f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _cell(value: Any, width: int = 40) -> str:
    text = " ".join(str(value).split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def describe_table(frame: Any, budget: int = DEFAULT_BUDGET, max_rows: int = 10) -> str:
    """A pandas DataFrame (or Series) as a compact description within ``budget`` characters."""
    if _is_pandas(frame, "Series"):
        name = frame.name if frame.name is not None else "value"
        kind = f"Series {name!r}"
        frame = frame.to_frame(name=str(name))
    else:
        kind = "DataFrame"
    rows, cols = frame.shape
    columns = [f"{c} ({t})" for c, t in zip(frame.columns, frame.dtypes)]
    head = f"{kind}: {rows:,} rows × {cols:,} columns\nColumns: "
    shown_cols = list(frame.columns)
    for keep in range(len(columns), 0, -1):
        listing = ", ".join(columns[:keep]) + (
            f", … {len(columns) - keep} more" if keep < len(columns) else ""
        )
        if len(head) + len(listing) <= budget // 2 or keep == 1:
            head += listing
            shown_cols = shown_cols[: min(keep, 12)]
            break
    if not cols:
        return _cut(head.rstrip(": \n"), budget)
    for count in range(min(rows, max_rows), -1, -1):
        if count == 0:
            return _cut(head, budget)
        part = frame.iloc[:count][shown_cols]
        lines = [
            "| " + " | ".join(["index"] + [_cell(c) for c in shown_cols]) + " |",
            "|" + "---|" * (len(shown_cols) + 1),
        ]
        for index, row in zip(part.index, part.itertuples(index=False)):
            # Floats at a readable precision: a summary, not the data's every digit.
            cells = [_cell(index)] + [_cell(_number(v) or v) for v in row]
            lines.append("| " + " | ".join(cells) + " |")
        # A blank line ends the table, so that text after it (the question goes on after
        # {df}) is not read as one more row.
        more = f"\n… {rows - count:,} more rows\n" if rows > count else ""
        text = f"{head}\nFirst {count} rows:\n" + "\n".join(lines) + "\n" + more + "\n"
        if len(text) <= budget:
            return text
    return _cut(head, budget)  # pragma: no cover - the loop returns


def format_value(value: Any, budget: int = DEFAULT_BUDGET) -> str:
    """A value as prompt text: tables described, anything else ``str()``, cut to ``budget``."""
    if _is_pandas(value, "DataFrame") or _is_pandas(value, "Series"):
        return describe_table(value, budget)
    return _cut(value if isinstance(value, str) else str(value), budget)


class Row:
    """A DataFrame row for prompts: ``{item.col}`` and ``{item[col]}`` give a cell, ``{item}``
    gives ``col: value; col: value`` (``row_text``)."""

    __slots__ = ("_row",)

    def __init__(self, row: Any) -> None:
        self._row = row

    def __getattr__(self, name: str) -> Any:
        try:
            return self._row[name]
        except KeyError:
            raise AttributeError(f"the row has no column {name!r}") from None

    def __getitem__(self, key: Any) -> Any:
        return self._row[key]

    def __str__(self) -> str:
        return row_text(self._row.keys(), self._row.values())

    __repr__ = __str__


#: The most items ``--each`` takes from one iterable: each becomes a question built before the
#: first is sent, so a huge (or endless) one is refused at once rather than filling memory.
MAX_BATCH_ITEMS = 100_000


def _too_many(size: int | None, limit: int) -> Exception:
    from .errors import PromptError

    count = f"more than {limit:,}" if size is None else f"{size:,}"
    return PromptError(
        f"{count} items, over the limit of {limit:,} for one batch; "
        "split it (islice, or a slice of the frame) and run each part"
    )


def _length(source: Any) -> int | None:
    try:
        return len(source)
    except Exception:  # noqa: BLE001 - no length (a generator), or one that fails
        return None


def take_items(source: Any, limit: int = MAX_BATCH_ITEMS) -> list[Any]:
    """The items of ``source`` as a list. One without a length (a generator, an iterator) is
    read to at most ``limit + 1`` items: more is a ``PromptError``, so ``itertools.count()``
    is refused at once instead of filling memory. A sized one is listed as it is (its items
    exist already)."""
    from itertools import islice

    if _length(source) is not None:
        return list(source)
    taken = list(islice(iter(source), limit + 1))
    if len(taken) > limit:
        raise _too_many(None, limit)
    return taken


def row_text(columns: Iterable[Any], values: Iterable[Any]) -> str:
    """A row in the compact form prompts show it: ``col: value; col: value``."""
    return "; ".join(f"{column}: {value}" for column, value in zip(columns, values))


def table_rows(frame: Any) -> list[list[Any]]:
    """A DataFrame's rows as lists of cells, each cell its column's own value (an ``int``
    column gives ints even beside a ``float`` one, which ``iterrows`` would turn to floats)."""
    columns = [frame.iloc[:, number].tolist() for number in range(frame.shape[1])]
    return [list(row) for row in zip(*columns)] if columns else [[] for _ in range(len(frame))]


def batch_items(source: Any, limit: int = MAX_BATCH_ITEMS) -> tuple[list[Any], list[Any]]:
    """(labels, items) to run a template over: a DataFrame's rows (as ``Row``) and its index,
    a Series' values and its index, or any other iterable's items numbered from 0.

    More than ``limit`` items is a ``PromptError``, found from the length when the source has
    one (``range(10**8)``) and otherwise after taking ``limit + 1`` items, never more
    (``itertools.count()`` is refused at once)."""
    if isinstance(source, (str, bytes)):
        raise TypeError("a string is iterated character by character; pass a list of strings")
    size = _length(source)
    if size is not None and size > limit:
        raise _too_many(size, limit)
    if _is_pandas(source, "DataFrame"):
        columns = list(source.columns)
        rows = [Row(dict(zip(columns, cells))) for cells in table_rows(source)]
        return list(source.index), rows
    if _is_pandas(source, "Series"):
        return list(source.index), list(source.to_numpy(dtype=object))
    items = take_items(source, limit)
    return list(range(len(items))), items
