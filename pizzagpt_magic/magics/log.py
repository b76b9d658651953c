"""``%pizza --log [N] [--full]``: the newest exchanges of the store's log.

A compact table (time, cell, model, seconds, tokens, cached, the first line of the question and
of the answer) to scan; ``--full`` shows each exchange whole, rendered safely."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from ..render import Markup, SafeMarkdown, escape

if TYPE_CHECKING:
    from .pizza import PizzaMagics


__all__ = ["show_log"]

#: Characters of a question's or an answer's first line shown in the table.
FIRST_LINE = 60
COLUMNS = ("time", "cell", "model", "s", "tokens", "cached", "question", "answer")


def show_log(magics: PizzaMagics, count: int, full: bool = False) -> SafeMarkdown:
    """The newest ``count`` logged exchanges: a table, or (``full``) each whole."""
    if count < 1:
        raise UsageError("--log N needs N of at least 1")
    store = magics._store()
    if store is None:
        raise UsageError(
            "The store is off (PizzaMagics.store = '' or $PIZZAGPT_STORE empty), so nothing "
            "is logged"
        )
    records = store.records(count)
    if not records:
        empty = f"The log at {store.path} is empty."
        return SafeMarkdown([Markup(f"<p><em>{escape(empty)}</em></p>")], empty)
    records.reverse()  # oldest first, as cells run
    return _whole(records) if full else _table(records)


def first_line(text: str | None, width: int = FIRST_LINE) -> str:
    """The first non-blank line of ``text``, cut to ``width`` characters."""
    line = next((line.strip() for line in (text or "").splitlines() if line.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def _when(stamp: float, today: Any) -> str:
    import datetime as dt

    moment = dt.datetime.fromtimestamp(stamp)
    return moment.strftime("%H:%M:%S" if moment.date() == today else "%Y-%m-%d %H:%M")


def _row(record: dict[str, Any], today: Any) -> list[str]:
    from ..backends import model_id

    answer = (
        f"failed: {first_line(record['error'], FIRST_LINE - 8)}"
        if record["error"]
        else first_line(record["answer"])
    )
    seconds = record.get("seconds")
    return [
        _when(record["time"], today),
        f"[{record['cell']}]" if record.get("cell") is not None else record["source"],
        model_id(record["provider"], record["model"]),
        f"{seconds:.1f}" if seconds is not None else "",
        f"{record['total_tokens']:,}" if record["total_tokens"] else "",
        "yes" if record["cached"] else "",
        first_line(record["prompt"]),
        answer,
    ]


def _table(records: list[dict[str, Any]]) -> SafeMarkdown:
    import datetime as dt

    today = dt.date.today()
    rows = [_row(record, today) for record in records]
    numeric = {"s", "tokens"}
    head = "".join(
        f'<th style="text-align:{"right" if c in numeric else "left"}">{c}</th>' for c in COLUMNS
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td style="text-align:{"right" if c in numeric else "left"}">{escape(v)}</td>'
            for c, v in zip(COLUMNS, row)
        )
        + "</tr>"
        for row in rows
    )
    html = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    lines = [
        "  ".join(
            (v.rjust(w) if c in numeric else v.ljust(w)) for c, v, w in zip(COLUMNS, r, widths)
        ).rstrip()
        for r in [list(COLUMNS), *rows]
    ]
    more = "%pizza --log N --full shows each exchange whole"
    html += f"<p><em>{escape(more)}</em></p>"
    return SafeMarkdown([Markup(html)], "\n".join(lines))


def _whole(records: list[dict[str, Any]]) -> SafeMarkdown:
    """Each exchange whole, its prompt and answer rendered safely."""
    import datetime as dt

    from ..backends import model_id

    parts: list[Any] = []
    plain = []
    for number, record in enumerate(records, 1):
        when = dt.datetime.fromtimestamp(record["time"]).strftime("%Y-%m-%d %H:%M:%S")
        model = model_id(record["provider"], record["model"])
        cell = f"cell [{record['cell']}]" if record.get("cell") is not None else None
        notes = [when, cell or record["source"], model]
        if record.get("seconds") is not None:
            notes.append(f"{record['seconds']:.1f} s")
        if record["cached"]:
            notes.append("from the cache")
        if record["total_tokens"]:
            notes.append(f"{record['total_tokens']:,} tokens")
        if record.get("pricing"):
            from ..cost import Cost

            cost = Cost(record["cost"], record["pricing"], record["cost_saved"], record["cached"])
            notes.append(cost.label)
        heading = " · ".join(str(n) for n in notes)
        if number > 1:
            parts.append(Markup("<hr>"))
        parts += [
            Markup(f"<p><strong>{escape(heading)}</strong></p><blockquote>"),
            record["prompt"],
            Markup("</blockquote><div>"),
        ]
        if record["error"]:
            parts.append(Markup(f"<p><em>failed: {escape(record['error'])}</em></p>"))
        if record["answer"]:
            parts.append(record["answer"])
        parts.append(Markup("</div>"))
        outcome = record["answer"] if not record["error"] else f"failed: {record['error']}"
        plain.append(f"[{heading}]\nYou: {record['prompt']}\n{model}: {outcome}")
    return SafeMarkdown(parts, "\n\n".join(plain))
