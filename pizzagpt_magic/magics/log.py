"""``%pizza --log [N]``: the newest exchanges of the store's log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from ..render import Markup, SafeMarkdown, escape

if TYPE_CHECKING:
    from .pizza import PizzaMagics


__all__ = ["show_log"]


def show_log(magics: PizzaMagics, count: int) -> SafeMarkdown:
    """The newest ``count`` logged exchanges, each prompt and answer rendered safely."""
    import datetime as dt

    from ..backends import model_id

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
    parts: list[Any] = []
    plain = []
    for number, record in enumerate(reversed(records), 1):
        when = dt.datetime.fromtimestamp(record["time"]).strftime("%Y-%m-%d %H:%M:%S")
        model = model_id(record["provider"], record["model"])
        notes = [when, model, record["source"]]
        if record["cached"]:
            notes.append("from the cache")
        if record["total_tokens"]:
            notes.append(f"{record['total_tokens']} tokens")
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
