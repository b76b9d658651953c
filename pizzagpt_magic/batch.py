"""Many questions at once: ``ask_many`` and ``ask_many_async``.

At most ``concurrency`` requests are in flight on the shared keep-alive session; answers come
back in input order. A failed item never loses the others: every item is tried, then either one
``BatchError`` names the failures (``errors="raise"``) or each failed slot holds its exception
(``errors="return"``). A 429 answer pauses the whole batch (see ``session.pause_requests``).
Cancelling the batch (a kernel interrupt) cancels every running and queued item at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .api import ask_async
from .errors import BatchError

if TYPE_CHECKING:
    from .cost import Limits

__all__ = ["ask_many", "ask_many_async", "progress_bar"]

logger = logging.getLogger(__name__)

ERROR_MODES = ("raise", "return")


def progress_bar(total: int, *, enabled: bool = True, desc: str = "pizza") -> Any:
    """A tqdm bar: the notebook widget when ipywidgets is there, text otherwise; or None."""
    if not enabled:
        return None
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None or getattr(shell, "kernel", None) is None:
            raise ImportError
        from tqdm.notebook import tqdm
    except ImportError:
        from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="q", dynamic_ncols=True, leave=True)


async def ask_many_async(
    prompts: Iterable[Any],
    *,
    concurrency: int = 8,
    errors: str = "raise",
    progress: bool = True,
    ask: Callable[..., Any] | None = None,
    into: list[Any] | None = None,
    max_cost: float | None = None,
    limits: Limits | None = None,
    estimates: Sequence[float | None] | None = None,
    replies: bool = False,
    **options: Any,
) -> list[Any]:
    """Answers to ``prompts``, in order, with at most ``concurrency`` requests in flight.

    ``options`` are those of ``ask_async`` (model, system, history, timeout, proxy, cache,
    ...). With ``ask`` (a coroutine function taking one item and ``options``) the items can be
    anything that function takes. ``into``, a list, receives each answer (or exception) at its
    item's position as it arrives, so what arrived before an interrupt stays reachable; every
    answer is also in the store, so running the same batch again asks only for the rest.

    ``max_cost`` (USD) stops the batch before any request that could take its cost past that:
    what is spent plus what is in flight at its estimate (see ``cost.estimate_batch``). The
    stop raises ``BudgetExceededError`` naming what was spent and the limit, with the answers
    received in its ``results`` (and in ``into``, and in the store: a rerun with a higher limit
    asks only for the rest). A model whose price is unknown cannot have a limit.

    ``limits`` and ``estimates`` (one per item) do the same for an ``ask`` of the caller's; with
    ``replies`` that ``ask`` returns a reply (``.text``, and its cost in ``.cost`` or
    ``.completion.cost``) of which the text is kept.
    """
    if errors not in ERROR_MODES:
        raise ValueError(f"errors must be 'raise' or 'return', not {errors!r}")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    items = list(prompts)
    if max_cost is not None:
        if ask is not None:
            raise ValueError("max_cost goes with the default ask; give limits and estimates")
        limits, estimates, ask = _budgeted(items, max_cost, options)
        replies = True
    if limits is not None and (estimates is None or len(estimates) != len(items)):
        raise ValueError("limits need one estimate per item")
    ask = ask or ask_async
    results: list[Any] = [None] * len(items)
    if into is not None:
        into[:] = results
        results = into
    failures: dict[int, BaseException] = {}
    queue = iter(range(len(items)))
    bar = progress_bar(len(items), enabled=progress and bool(items))

    async def worker() -> None:
        for index in queue:
            estimate = 0.0
            if limits is not None:
                assert estimates is not None
                estimate = estimates[index] or 0.0
                if not limits.reserve(estimate):
                    return  # nothing more starts; what is in flight finishes
            usd: float | None = 0.0
            try:
                result: Any = await ask(items[index], **options)
                if replies:
                    usd = _usd_of(result)
                    result = result.text
                results[index] = result
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one item's failure must not lose the others
                logger.debug("item %d failed: %r", index, exc)
                results[index] = failures[index] = exc
                if bar is not None:
                    bar.set_postfix(failed=len(failures), refresh=False)
            finally:
                if limits is not None:
                    limits.settle(estimate, usd)
            if bar is not None:
                bar.update(1)

    workers = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, len(items)))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        if bar is not None:
            bar.close()
    if limits is not None and limits.stopped:
        kept = sum(1 for r in results if r is not None and not isinstance(r, BaseException))
        error = limits.error(kept, len(items))
        error.results = list(results)
        raise error
    if failures and errors == "raise":
        raise BatchError(failures, results)
    return results


def _usd_of(reply: Any) -> float | None:
    """The dollars a reply cost (None when unknown)."""
    cost = getattr(reply, "cost", None)
    if cost is None:
        cost = getattr(getattr(reply, "completion", None), "cost", None)
    return cost.usd if cost is not None else None


def _budgeted(
    items: list[Any], max_cost: float, options: dict[str, Any]
) -> tuple[Limits, list[float | None], Callable[..., Any]]:
    """The limit, the estimates and the asking function of a batch of prompts under
    ``max_cost``."""
    from . import store as stores
    from .api import DEFAULT_STORE, _prepare, complete
    from .cost import Budget, Limits, estimate_batch
    from .errors import ConfigurationError

    get = options.get
    prepared = [
        _prepare(
            item,
            get("model"),
            get("provider"),
            get("system"),
            get("history", ()),
            get("temperature"),
            get("max_tokens"),
        )
        for item in items
    ]
    store = get("store", DEFAULT_STORE)
    if store is DEFAULT_STORE:
        store = stores.get_store()
    estimate, each = (
        estimate_batch(
            prepared[0][0] if prepared else None,
            [messages for _, messages in prepared],
            max_tokens=get("max_tokens"),
            temperature=get("temperature"),
            store=store if get("cache", True) else None,
            base_url=get("base_url"),
        )
        if prepared
        else (None, [])
    )
    if estimate is not None and estimate.usd is None:
        raise ConfigurationError(
            f"max_cost: the price of {estimate.model} is unknown ({estimate.pricing}); give it "
            "with pizzagpt_magic.set_prices or PizzaMagics.prices"
        )

    async def ask(item: Any, **options: Any) -> Any:
        return await complete(item, context={"source": "api"}, **options)

    return Limits([Budget(max_cost, what=f"max_cost={max_cost:g}")]), each, ask


def ask_many(prompts: Iterable[str], **options: Any) -> list[Any]:
    """``ask_many_async`` from synchronous code; safe inside a running loop."""
    from .loop import run_sync

    return run_sync(ask_many_async(prompts, **options))
