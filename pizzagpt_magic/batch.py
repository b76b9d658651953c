"""Many questions at once: ``ask_many`` and ``ask_many_async``.

At most ``concurrency`` requests are in flight on the shared keep-alive session, whose pool grows
to match (up to ``session.POOL_MAX`` connections; a larger concurrency is reported and capped);
answers come back in input order. Items are taken from the iterable as workers free up, never
all first, so a generator (even an endless one) starts at once and an interrupt stops it.

A failed item never loses the others: every item is tried, then either one
``BatchError`` names the failures (``errors="raise"``) or each failed slot holds its exception
(``errors="return"``). A 429 answer pauses the whole batch (see ``session.pause_requests``).
Cancelling the batch (a kernel interrupt) cancels every running and queued item at once.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from . import session as _session
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
    concurrency: int = 8,
    errors: str = "raise",
    progress: bool = True,
    ask: Callable[..., Any] | None = None,
    into: list[Any] | None = None,
    **options: Any,
) -> list[Any]:
    """Answers to ``prompts``, in order, with at most ``concurrency`` requests in flight.

    ``options`` are those of ``ask_async`` (model, system, history, timeout, proxy, cache,
    ...). With ``ask`` (a coroutine function taking one item and ``options``) the items can be
    anything that function takes. ``into``, a list, receives each answer (or exception) at its
    item's position as it arrives, so what arrived before an interrupt stays reachable; every
    answer is also in the store, so running the same batch again asks only for the rest.
    """
    if errors not in ERROR_MODES:
        raise ValueError(f"errors must be 'raise' or 'return', not {errors!r}")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    pool = _session.widen_pool(concurrency)
    if concurrency > pool:
        warnings.warn(
            f"concurrency {concurrency} is over the connection pool's cap of {pool} "
            f"(session.POOL_MAX): at most {pool} requests are in flight at once",
            stacklevel=2,
        )
    total: int | None
    try:
        total = len(prompts)  # type: ignore[arg-type]
    except TypeError:
        total = None  # a generator: its length shows as its items come
    ask = ask or ask_async
    results: list[Any] = [None] * total if total is not None else []
    if into is not None:
        into[:] = results
        results = into
    failures: dict[int, BaseException] = {}
    # One iterator shared by the workers: each takes the next item when it is free.
    numbered = enumerate(prompts)
    bar = progress_bar(total, enabled=progress and total != 0)  # type: ignore[arg-type]

    async def worker() -> None:
        for index, item in numbered:
            if index >= len(results):
                results.extend([None] * (index + 1 - len(results)))
            try:
                results[index] = await ask(item, **options)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one item's failure must not lose the others
                logger.debug("item %d failed: %r", index, exc)
                results[index] = failures[index] = exc
                if bar is not None:
                    bar.set_postfix(failed=len(failures), refresh=False)
            if bar is not None:
                bar.update(1)

    count = concurrency if total is None else min(concurrency, total)
    workers = [asyncio.ensure_future(worker()) for _ in range(count)]
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


def ask_many(prompts: Iterable[str], **options: Any) -> list[Any]:
    """``ask_many_async`` from synchronous code; safe inside a running loop."""
    from .loop import run_sync

    return run_sync(ask_many_async(prompts, **options))
