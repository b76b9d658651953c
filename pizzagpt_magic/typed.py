"""How answers with a schema show: one as a small table of its fields and values, a batch as its
summary and the first rows of its typed DataFrame. Terminals get the JSON value.

Every value is the model's text: it is escaped, and the HTML goes through the safe renderer's
cleaner like every other display of this package.
"""

from __future__ import annotations

import json
from typing import Any

from .render import Answer, BatchSummary, Markup, SafeMarkdown, escape

__all__ = ["TypedAnswer", "TypedBatchSummary"]

#: Characters of a value shown in a table cell.
CELL_CHARS = 300


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


class TypedAnswer(Answer):
    """An answer with a schema: ``value`` is its dict (or model instance); it shows as a table
    of fields and values, with the usual footer, and as its JSON in a terminal."""

    typed: Any
    schema: Any

    def __new__(
        cls,
        text: str,
        value: Any,
        schema: Any,
        *,
        model: str = "",
        cached: bool = False,
        completion: Any = None,
    ) -> TypedAnswer:
        self = super().__new__(
            cls, text, format="text", model=model, cached=cached, completion=completion
        )
        self.shown_as = "json"
        self.typed = value
        self.schema = schema
        self.data = schema.as_data(value)
        return self

    def __reduce__(self) -> Any:
        # Pickled as its text (the schema and the value's class need not pickle).
        from .render import _answer

        return (_answer, (self.text, "text", self.model, self.cached))

    @property
    def value(self) -> Any:
        return self.typed

    def bundle(self) -> dict[str, Any]:
        data = self.data
        rows = data.items() if isinstance(data, dict) else [("value", data)]
        parts: list[Any] = [
            Markup("<table><thead><tr><th>field</th><th>value</th></tr></thead><tbody>")
        ]
        for name, value in rows:
            parts.append(
                Markup(
                    f"<tr><td><code>{escape(name)}</code></td><td>{escape(_cell(value))}</td></tr>"
                )
            )
        parts.append(Markup("</tbody></table>"))
        note = self._note()
        if note:
            parts.append(Markup(f"<p><small><em>{escape(note)}</em></small></p>"))
        pretty = json.dumps(data, indent=2, ensure_ascii=False, default=str)
        bundle: dict[str, Any] = {
            "text/html": SafeMarkdown(parts, pretty)._repr_html_(),
            "text/plain": pretty,
        }
        if isinstance(data, (dict, list)):
            bundle["application/json"] = data
        return bundle


class TypedBatchSummary(BatchSummary):
    """What a ``--each --schema`` cell shows: the count, failures and time, then the first
    rows of the typed DataFrame (``frame``; the values themselves without pandas)."""

    def __init__(
        self,
        labels: list[Any],
        results: list[Any],
        elapsed: float,
        model: str,
        frame: Any = None,
        schema: Any = None,
    ) -> None:
        super().__init__(labels, results, elapsed, model)
        self.frame = frame
        self.schema = schema

    def display(self) -> SafeMarkdown:
        if self.frame is None:
            return super().display()
        head = self.frame.head(self.SHOWN)
        parts: list[Any] = [
            Markup(f"<p><strong>{escape(self._headline())}</strong></p>"),
            Markup(head.to_html(escape=True, na_rep="<NA>", max_cols=20)),
        ]
        plain = [self._headline(), head.to_string(max_cols=20)]
        if len(self.results) > self.SHOWN:
            more = f"… and {len(self.results) - self.SHOWN} more rows"
            parts.append(Markup(f"<p><em>{escape(more)}</em></p>"))
            plain.append(more)
        return SafeMarkdown(parts, "\n".join(plain))
