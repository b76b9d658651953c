"""``%pizza --usage [--since WHEN] [--plot [cost|tokens]]``: what was asked and what it cost.

This kernel's totals and the store's, by model, over the window: requests, cache hits, tokens,
cost and the cost the cache saved, as tables through the safe renderer; ``--plot`` draws cost or
tokens per day by model (matplotlib)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

if TYPE_CHECKING:
    from .pizza import PizzaMagics


__all__ = ["show_usage"]


def show_usage(magics: PizzaMagics, args: Any) -> Any:
    from ..reports import PlotUnavailable, plot_usage, usage_report
    from ..store import parse_since

    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    store = magics._store()
    if store is None:
        raise UsageError(
            "The store is off (PizzaMagics.store = '' or $PIZZAGPT_STORE empty), so no usage "
            "is logged"
        )
    if args.plot:
        try:
            return plot_usage(store, since=since, what=args.plot)
        except PlotUnavailable as exc:
            raise UsageError(str(exc)) from None
    everything = usage_report(store, since=since, title=f"The store ({store.path})")
    session = magics._context()["session"]
    if session is None:  # a shell with no session to tell its own exchanges by
        return everything
    report = usage_report(store, since=since, session=session, title="This kernel")
    report.more.append(everything)
    return report
