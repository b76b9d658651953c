"""Many questions at once: ``ask_many`` and ``ask_many_async``, over the batch engine.

The prompts go through ``engine.Batch``: identical ones are asked once, what the store holds is
not asked again, and at most ``concurrency`` requests are in flight on the shared keep-alive
session; answers come back in input order. A failed item never loses the others: every item is
tried, then either one ``BatchError`` names the failures (``errors="raise"``) or each failed
slot holds its exception (``errors="return"``). A 429 answer pauses the whole batch (see
``session.pause_requests``). Cancelling the batch (a kernel interrupt) cancels every running
and queued item at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from .errors import BatchError
from .interpolate import take_items

__all__ = ["answers_frame", "ask_many", "ask_many_async", "progress_bar"]

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
    schema: Any = None,
    schema_retries: int = 1,
    pack: int | str | None = None,
    **options: Any,
) -> list[Any]:
    """Answers to ``prompts``, in order, with at most ``concurrency`` requests in flight.

    ``options`` are those of ``ask_async`` (model, system, history, timeout, proxy, cache,
    ...). Identical prompts are asked once, and their answer given to each. With ``schema``
    (a concise spec, a JSON Schema dict or a Pydantic model class) each answer is checked
    and repaired as ``ask`` does, and its value (a dict or a model instance) is returned;
    ``answers_frame`` turns the list into a typed DataFrame.

    ``pack`` is how many prompts may share one request: ``1`` sends each on its own, a whole
    number is the most in one request, ``"auto"`` sizes packs to fit (the default, or
    ``$PIZZAGPT_PACK``); see ``engine.send.packed``. Answers and cache keys are the same
    whatever the packing.

    ``into``, a list, receives each answer (or exception) at its item's position as it arrives,
    so what arrived before an interrupt stays reachable; every answer is also in the store, so
    running the same batch again asks only for the rest. With ``ask`` (a coroutine function
    taking one item and ``options``) the items can be anything that function takes; each is
    then asked on its own, as that function does it.
    """
    if errors not in ERROR_MODES:
        raise ValueError(f"errors must be 'raise' or 'return', not {errors!r}")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    items = take_items(prompts)  # an endless generator is refused, not read forever
    if ask is not None:
        if schema is not None:
            options["schema"] = schema
        results = await _ask_each(items, ask, concurrency, progress, into, options)
    else:
        results = await _ask_engine(
            items, concurrency, progress, into, schema, schema_retries, pack, options
        )
    failures = {i: r for i, r in enumerate(results) if isinstance(r, BaseException)}
    if failures and errors == "raise":
        raise BatchError(failures, results)
    return results


#: ``ask_async``'s options that decide how a prompt is made, and those of how it is sent.
_PROMPT_OPTIONS = frozenset(
    {"model", "provider", "system", "history", "temperature", "max_tokens", "base_url"}
)
_REQUEST_OPTIONS = frozenset({"proxy", "timeout", "connect_timeout", "max_retries"})
_STORE_OPTIONS = frozenset({"cache", "log", "store"})
#: Accepted for ``ask_async``'s sake; a batch's answers are not streamed.
_IGNORED_OPTIONS = frozenset({"stream", "on_text"})


async def _ask_engine(
    items: list[Any],
    concurrency: int,
    progress: bool,
    into: list[Any] | None,
    schema: Any,
    schema_retries: int,
    pack: int | str | None,
    options: dict[str, Any],
) -> list[Any]:
    from .api import _API_CONTEXT, DEFAULT_STORE
    from .engine import Batch, make_prompt
    from .engine.send.packed import strategy_for
    from .errors import PizzagptError
    from .schema import as_schema

    unknown = options.keys() - _PROMPT_OPTIONS - _REQUEST_OPTIONS - _STORE_OPTIONS
    unknown -= _IGNORED_OPTIONS
    if unknown:
        raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(unknown))}")
    checked = as_schema(schema)  # a bad schema fails the call, before anything is sent
    strategy = strategy_for(pack, concurrency)
    made = {k: v for k, v in options.items() if k in _PROMPT_OPTIONS}
    prompts: list[Any] = []
    failed: dict[int, BaseException] = {}
    # The same item makes the same prompt: a column with few distinct values makes few.
    made_for: dict[Any, Any] = {}
    for position, item in enumerate(items):
        prompt = made_for.get(item) if isinstance(item, str) else None
        if prompt is None:
            try:
                prompt = make_prompt(item, schema=checked, **made)
            except PizzagptError as exc:  # this item cannot be asked; the others can
                prompts.append(None)
                failed[position] = exc
                continue
            if isinstance(item, str):
                made_for[item] = prompt
        prompts.append(prompt)
    batch = Batch(
        prompts,
        store=options.get("store", DEFAULT_STORE),
        cache=options.get("cache", True),
        log=options.get("log", True),
        context=_API_CONTEXT,
        schema_retries=schema_retries,
        request={k: options[k] for k in _REQUEST_OPTIONS if k in options},
        failed=failed,
    )
    results: list[Any] = [None] * len(items)
    if into is not None:
        into[:] = results
        results = into
    bar = progress_bar(len(items), enabled=progress and bool(items))
    count = 0

    def arrived(positions: list[int], outcome: Any) -> None:
        nonlocal count
        value = outcome.result()
        for position in positions:
            results[position] = value
        if bar is not None:
            if outcome.error is not None:
                count += len(positions)
                bar.set_postfix(failed=count, refresh=False)
            bar.update(len(positions))

    try:
        await batch.run(strategy, on_outcome=arrived)
    finally:
        if bar is not None:
            bar.close()
    return results


async def _ask_each(
    items: list[Any],
    ask: Callable[..., Any],
    concurrency: int,
    progress: bool,
    into: list[Any] | None,
    options: dict[str, Any],
) -> list[Any]:
    """Each item through ``ask``, ``concurrency`` at a time."""
    from .session import widen_pool

    widen_pool(min(concurrency, len(items)))  # as the engine's strategies do
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
    return results


def answers_frame(values: list[Any], schema: Any, *, index: Any = None) -> Any:
    """``ask_many``'s answers with a schema as a typed DataFrame (see
    ``engine.assemble.answers_frame``): one column a field, and ``_error``."""
    from .engine.assemble import answers_frame as frame

    return frame(values, schema, index=index)


def ask_many(prompts: Iterable[Any], **options: Any) -> list[Any]:
    """``ask_many_async`` from synchronous code; safe inside a running loop."""
    from .loop import run_sync

    return run_sync(ask_many_async(prompts, **options))
