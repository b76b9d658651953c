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
from collections.abc import Callable, Iterable
from typing import Any

from .api import ask_async
from .errors import BatchError

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
    concurrency: int | None = None,
    errors: str = "raise",
    progress: bool = True,
    ask: Callable[..., Any] | None = None,
    into: list[Any] | None = None,
    **options: Any,
) -> list[Any]:
    """Answers to ``prompts``, in order, with at most ``concurrency`` requests in flight.

    ``options`` are those of ``ask_async`` (model, system, history, timeout, proxy, cache,
    ``options``, ``variables``, ...). A prompt may be a saved prompt (``saved("NAME")``, or
    ``saved("NAME").fill(review=...)`` for each item); ``concurrency`` is then the saved
    one when not given (else 8). With ``ask`` (a coroutine function taking one item and
    ``options``) the items can be anything that function takes. ``into``, a list, receives
    each answer (or exception) at its item's position as it arrives, so what arrived before an
    interrupt stays reachable; every answer is also in the store, so running the same batch
    again asks only for the rest.
    """
    if errors not in ERROR_MODES:
        raise ValueError(f"errors must be 'raise' or 'return', not {errors!r}")
    items = list(prompts)
    if concurrency is None:
        concurrency = _saved_concurrency(items) or DEFAULT_CONCURRENCY
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
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
            try:
                results[index] = await ask(items[index], **options)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one item's failure must not lose the others
                logger.debug("item %d failed: %r", index, exc)
                results[index] = failures[index] = exc
                if bar is not None:
                    bar.set_postfix(failed=len(failures), refresh=False)
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
    if failures and errors == "raise":
        raise BatchError(failures, results)
    return results


DEFAULT_CONCURRENCY = 8


def _saved_concurrency(items: list[Any]) -> int | None:
    """The concurrency saved with the batch's saved prompts (the lowest, when they differ)."""
    from .prompts import SavedPrompt

    found = [i.concurrency for i in items if isinstance(i, SavedPrompt) and i.concurrency]
    return min(found) if found else None


def ask_many(prompts: Iterable[str], **options: Any) -> list[Any]:
    """``ask_many_async`` from synchronous code; safe inside a running loop."""
    from .loop import run_sync

    return run_sync(ask_many_async(prompts, **options))
