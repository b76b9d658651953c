"""Usage reports: what the store's log says was asked, answered from the cache, and spent.

``usage_report`` sums the log (one SQL query, in the store) by model, day or source, over a window
and optionally one kernel's session; a ``UsageReport`` is shown as a table by the safe renderer,
as plain text, or as JSON records. ``usage`` is the Python face (a DataFrame when pandas is
installed), ``plot_usage`` draws cost or tokens per day by model with matplotlib.

What the columns count: ``requests`` were sent to a backend (``failed`` among them), ``cache
hits`` were answered from the cache and cost 0, the tokens are those of the requests sent,
``cost`` adds the known costs (with how many answers were ``unpriced``, or ``local``/``free``
when the models cost nothing), ``saved`` is what the cache hits would have cost.

Each group is split by how it was asked (``via``): ``online``, one request at a time (and the
cache hits), and ``batch``, through a provider's Batch API at the batch price; a report with
batch rows shows the column, and its records always carry it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from .cost import format_usd

__all__ = [
    "BY",
    "PlotUnavailable",
    "UsagePlot",
    "UsageReport",
    "plot_usage",
    "usage",
    "usage_report",
]

#: What a report can be grouped by.
BY = ("model", "day", "source")
_COUNTS = (
    "exchanges",
    "requests",
    "cache_hits",
    "failures",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "unpriced",
    "local",
    "free",
)


def _label(row: dict[str, Any], by: str) -> str:
    if by == "model":
        from .backends import model_id

        return model_id(row["provider"], row["model"])
    return str(row.get(by) or "")


def cost_label(row: dict[str, Any]) -> str:
    """A row's cost to read: dollars, with how many answers were unpriced; ``local``, ``free``
    or ``unpriced`` when that is all there is to say."""
    answered = row["requests"] - row["failures"]
    cost = row["cost"] or 0.0
    if row["unpriced"] and row["unpriced"] == answered and not cost:
        return "unpriced"
    if not cost and not row["unpriced"]:
        if row["local"] and not row["free"]:
            return "local"
        if row["free"] and not row["local"]:
            return "free"
    text = format_usd(cost)
    return f"{text} + {row['unpriced']} unpriced" if row["unpriced"] else text


def _added(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The counts and costs of ``rows`` added up."""
    total: dict[str, Any] = {name: sum(r[name] for r in rows) for name in _COUNTS}
    total["cost"] = sum(r["cost"] or 0.0 for r in rows)
    total["cost_saved"] = sum(r["cost_saved"] or 0.0 for r in rows)
    return total


@dataclass
class UsageReport:
    """The log's totals, one row per group (``by``), over a window."""

    rows: list[dict[str, Any]]
    by: str = "model"
    since: float | None = None
    title: str = "Usage"
    #: More reports shown after this one (``%pizza --usage``: the kernel's, then the store's).
    more: list[UsageReport] = field(default_factory=list)

    @property
    def batched(self) -> bool:
        """Whether any row is of a Batch API's answers."""
        return any(r.get("via") == "batch" for r in self.rows)

    @property
    def total(self) -> dict[str, Any]:
        """Every row added up."""
        return _added(self.rows)

    def records(self) -> list[dict[str, Any]]:
        """The rows as JSON-ready records, each named by its group (``model``, ``day`` or
        ``source``) and ``via`` (``online`` or ``batch``), with its ``cost_label``; ``cost`` is
        None when no cost in it is known."""
        out = []
        for row in self.rows:
            record: dict[str, Any] = {self.by: _label(row, self.by)}
            if self.by == "model":
                record["provider"] = row["provider"]
            record["via"] = row.get("via", "online")
            record.update({name: row[name] for name in _COUNTS})
            label = cost_label(row)
            # No known cost at all is None, never $0.
            record["cost"] = None if label == "unpriced" else row["cost"]
            record["cost_saved"] = row["cost_saved"]
            record["cost_label"] = label
            out.append(record)
        return out

    def heading(self) -> str:
        window = ""
        if self.since is not None:
            when = dt.datetime.fromtimestamp(self.since).strftime("%Y-%m-%d %H:%M")
            window = f" since {when}"
        return f"{self.title}{window}"

    def table(self) -> tuple[list[str], list[list[str]]]:
        """The column names and the cells, as text, with a total row when there are several."""
        batched = self.batched
        header = [
            self.by,
            *(["via"] if batched else []),
            "requests",
            "failed",
            "cache hits",
            "input tokens",
            "output tokens",
            "cost",
            "saved",
        ]
        rows = [(_label(r, self.by), r) for r in self.rows]
        if batched and len(self.rows) > 2:  # online and batch added up apart, then together
            for via in ("online", "batch"):
                part = [r for r in self.rows if r.get("via") == via]
                if part:
                    rows.append(("total", {**_added(part), "via": via}))
        if len(self.rows) > 1:
            rows.append(("total", self.total))
        cells = [
            [
                label,
                *([r.get("via", "")] if batched else []),
                f"{r['requests']:,}",
                f"{r['failures']:,}",
                f"{r['cache_hits']:,}",
                f"{r['input_tokens']:,}",
                f"{r['output_tokens']:,}",
                cost_label(r),
                format_usd(r["cost_saved"] or 0.0),
            ]
            for label, r in rows
        ]
        return header, cells

    def text(self) -> str:
        """The report as aligned plain text."""
        parts = []
        for report in (self, *self.more):
            header, cells = report.table()
            if not cells:
                parts.append(f"{report.heading()}: nothing logged")
                continue
            widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
            lines = [report.heading()]
            for row in [header, *cells]:
                lines.append(
                    "  ".join(
                        cell.ljust(width) if i == 0 else cell.rjust(width)
                        for i, (cell, width) in enumerate(zip(row, widths))
                    ).rstrip()
                )
            parts.append("\n".join(lines))
        return "\n\n".join(parts)

    def display(self) -> Any:
        """The report as tables, through the safe renderer (labels are escaped text)."""
        from .render import Markup, SafeMarkdown, escape

        html = []
        for report in (self, *self.more):
            html.append(f"<p><strong>{escape(report.heading())}</strong></p>")
            header, cells = report.table()
            if not cells:
                html.append("<p><em>nothing logged</em></p>")
                continue
            html.append("<table><thead><tr>")
            html += [f"<th>{escape(name)}</th>" for name in header]
            html.append("</tr></thead><tbody>")
            for row in cells:
                html.append("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>")
            html.append("</tbody></table>")
        return SafeMarkdown([Markup("".join(html))], self.text())

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return dict(self.display()._repr_mimebundle_())

    def __repr__(self) -> str:
        return self.text()


def usage_report(
    store: Any,
    *,
    since: float | None = None,
    by: str = "model",
    session: str | None = None,
    title: str = "Usage",
) -> UsageReport:
    """The usage in ``store``'s log since ``since`` (a Unix time), grouped ``by`` model, day
    or source, of ``session`` only when given."""
    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(BY)}, not {by!r}")
    rows = store.usage(since=since, by=(by,), session=session)
    return UsageReport(rows, by, since, title)


def _since(value: str | float | None) -> float | None:
    if isinstance(value, str):
        from .store import parse_since

        return parse_since(value)
    return value


def usage(
    since: str | float | None = None,
    *,
    by: str = "model",
    path: str | None = None,
) -> Any:
    """Requests, cache hits, tokens and cost from the store's log, one row per model (or per
    ``by="day"`` or ``"source"``): a pandas DataFrame when pandas is installed, else a list of
    dicts. ``since`` is a Unix time, a date or an age (``"7d"``); ``path`` another store."""
    from .store import Store, get_store

    since = _since(since)
    own = Store(path) if path else None
    store = own or get_store()
    try:
        records = usage_report(store, since=since, by=by).records() if store is not None else []
    finally:
        if own is not None:
            own.close()
    try:
        import pandas as pd
    except ImportError:
        return records
    return pd.DataFrame.from_records(records)


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


def plot_usage(store: Any, *, since: float | None = None, what: str = "cost") -> Any:
    """A ``UsagePlot`` (its matplotlib ``figure``, shown as a PNG): ``what`` (``cost`` or
    ``tokens``) per day, a bar per model.
    Raises ``PlotUnavailable`` (a one-line message) when matplotlib is not installed."""
    if what not in ("cost", "tokens"):
        raise ValueError(f"--plot draws cost or tokens, not {what!r}")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed (pip install matplotlib)"
        ) from None
    from .backends import model_id

    rows = store.usage(since=since, by=("day", "model"))
    days = sorted({r["day"] for r in rows})
    models = sorted({model_id(r["provider"], r["model"]) for r in rows})
    values = {m: [0.0] * len(days) for m in models}
    for r in rows:
        value = (r["cost"] or 0.0) if what == "cost" else r["input_tokens"] + r["output_tokens"]
        values[model_id(r["provider"], r["model"])][days.index(r["day"])] += value
    figure = Figure(figsize=(8, 4), layout="constrained")
    axes = figure.add_subplot()
    bottom = [0.0] * len(days)
    for model in models:
        axes.bar(days, values[model], bottom=bottom, label=model)
        bottom = [b + v for b, v in zip(bottom, values[model])]
    axes.set_ylabel("cost (USD)" if what == "cost" else "tokens (input + output)")
    axes.set_title(f"{'Cost' if what == 'cost' else 'Tokens'} per day by model")
    if models:
        axes.legend(fontsize="small")
    else:
        axes.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=axes.transAxes)
    axes.tick_params(axis="x", labelrotation=45)
    return UsagePlot(figure, f"{what} per day for {len(models)} models over {len(days)} days")


class UsagePlot:
    """A usage chart: the matplotlib ``figure``, shown as a PNG in a notebook."""

    def __init__(self, figure: Any, description: str) -> None:
        self.figure = figure
        self.description = description

    def png(self) -> bytes:
        import io

        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()

    def save(self, path: str) -> None:
        self.figure.savefig(path, dpi=100)

    def _repr_png_(self) -> bytes:
        return self.png()

    def __repr__(self) -> str:
        return f"<usage chart: {self.description}>"
