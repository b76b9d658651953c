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

__all__ = ["answers_frame", "ask_many", "ask_many_async", "estimate_many", "progress_bar"]

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
    schema: Any = None,
    schema_retries: int = 1,
    pack: int | str | None = None,
    max_cost: float | None = None,
    batch_api: bool = False,
    wait: bool = True,
    poll: float | None = None,
    batch_max_requests: int | None = None,
    **options: Any,
) -> Any:
    """Answers to ``prompts``, in order, with at most ``concurrency`` requests in flight.

    ``options`` are those of ``ask_async`` (model, system, history, timeout, proxy, cache,
    ``options``, ``variables``, ...). Identical prompts are asked once, and their answer given
    to each. A prompt may be a saved prompt (``saved("NAME")``, or ``saved("NAME").fill(...)``
    for each item); ``concurrency`` is then the saved one when not given (else 8). With ``schema``
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

    ``max_cost`` (USD) starts no request that could take the batch's cost past it: what is
    spent plus what is in flight at its estimate (see ``estimates.Estimator``). The stop raises
    ``BudgetExceededError`` naming what was spent and the limit, with the answers received in
    its ``results`` (and in ``into``, and in the store: a rerun with a higher limit asks only
    for the rest). A model whose price is unknown cannot have a limit.

    ``batch_api=True`` sends the prompts as the provider's batch jobs, at the batch price (see
    ``engine.send.jobs``): the call waits for them (polling every ``poll`` seconds at first,
    less often later), and the same call run again, after a restart too, picks up its jobs
    instead of submitting them again. ``wait=False`` returns a ``jobs.JobHandle`` at once;
    ``batch_max_requests`` caps the requests of one job (larger batches take several).
    """
    answers, answers_only = options.pop("answers", None), options.pop("answers_only", None)
    if answers is not None or answers_only is not None:
        # One answer file for the whole batch: written every half second and at the end, not
        # once per item.
        from . import answers as answer_files

        with answer_files.using(answer_files.settings_for(answers, only=answers_only)):
            return await ask_many_async(
                prompts,
                concurrency=concurrency,
                errors=errors,
                progress=progress,
                ask=ask,
                into=into,
                schema=schema,
                schema_retries=schema_retries,
                pack=pack,
                max_cost=max_cost,
                batch_api=batch_api,
                wait=wait,
                poll=poll,
                batch_max_requests=batch_max_requests,
                **options,
            )
    if errors not in ERROR_MODES:
        raise ValueError(f"errors must be 'raise' or 'return', not {errors!r}")
    items = take_items(prompts)  # an endless generator is refused, not read forever
    if concurrency is None:
        concurrency = _saved_concurrency(items) or DEFAULT_CONCURRENCY
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if batch_api:
        if ask is not None:
            raise ValueError("batch_api=True sends prompts, not items through ask=")
        jobs = _job_options(wait, poll, batch_max_requests)
        rerun = {
            "errors": errors,
            "progress": progress,
            "schema": schema,
            "schema_retries": schema_retries,
            "max_cost": max_cost,
            "batch_api": True,
            "poll": poll,
            "batch_max_requests": batch_max_requests,
            **options,
        }
        results = await _ask_engine(
            items,
            concurrency,
            progress,
            into,
            schema,
            schema_retries,
            pack,
            max_cost,
            options,
            jobs,
        )
        if not wait:
            from .jobs import JobHandle

            strategy = jobs["strategy"]
            return JobHandle(strategy.ids, strategy.store, lambda: ask_many(items, **rerun))
    elif ask is not None:
        if max_cost is not None:
            raise ValueError("max_cost goes with the batch engine, not with ask=")
        if schema is not None:
            options["schema"] = schema
        results = await _ask_each(items, ask, concurrency, progress, into, options)
    else:
        results = await _ask_engine(
            items, concurrency, progress, into, schema, schema_retries, pack, max_cost, options
        )
    failures = {i: r for i, r in enumerate(results) if isinstance(r, BaseException)}
    if failures and errors == "raise":
        raise BatchError(failures, results)
    return results


#: ``ask_async``'s options that decide how a prompt is made, and those of how it is sent.
_PROMPT_OPTIONS = frozenset(
    {
        "model",
        "provider",
        "system",
        "history",
        "temperature",
        "max_tokens",
        "base_url",
        "options",
        "variables",
    }
)
_REQUEST_OPTIONS = frozenset({"proxy", "timeout", "connect_timeout", "max_retries"})
_STORE_OPTIONS = frozenset({"cache", "log", "store"})
#: Accepted for ``ask_async``'s sake; a batch's answers are not streamed.
_IGNORED_OPTIONS = frozenset({"stream", "on_text"})


def _engine_batch(
    items: list[Any], schema: Any, schema_retries: int, options: dict[str, Any]
) -> Any:
    """The ``engine.Batch`` of ``items`` asked with ``options`` (those of ``ask_async``)."""
    from .api import _API_CONTEXT, DEFAULT_STORE
    from .engine import Batch, make_prompt
    from .errors import PizzagptError
    from .schema import as_schema

    unknown = options.keys() - _PROMPT_OPTIONS - _REQUEST_OPTIONS - _STORE_OPTIONS
    unknown -= _IGNORED_OPTIONS
    if unknown:
        raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(unknown))}")
    checked = as_schema(schema)  # a bad schema fails the call, before anything is sent
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
    return Batch(
        prompts,
        store=options.get("store", DEFAULT_STORE),
        cache=options.get("cache", True),
        log=options.get("log", True),
        context=_API_CONTEXT,
        schema_retries=schema_retries,
        request={k: options[k] for k in _REQUEST_OPTIONS if k in options},
        failed=failed,
    )


def estimate_many(
    prompts: Iterable[Any], *, schema: Any = None, batch_api: bool = False, **options: Any
) -> Any:
    """What ``ask_many(prompts, **options)`` would send and cost (a ``estimates.Estimate``: the
    distinct prompts not yet answered, their input and output tokens, the dollars); nothing is
    sent or logged. With ``batch_api=True`` it has the Batch API's price beside the online
    one (``batch_usd``, ``cost.batch_discount()`` of ``usd``)."""
    skipped = ("concurrency", "progress", "wait", "poll", "batch_max_requests")
    options = {k: v for k, v in options.items() if k not in skipped}
    estimate = _engine_batch(list(prompts), schema, 1, options).estimate()
    return estimate.at_batch_price() if batch_api else estimate


async def _ask_engine(
    items: list[Any],
    concurrency: int,
    progress: bool,
    into: list[Any] | None,
    schema: Any,
    schema_retries: int,
    pack: int | str | None,
    max_cost: float | None,
    options: dict[str, Any],
    jobs: dict[str, Any] | None = None,
) -> list[Any]:
    from .engine.send.packed import strategy_for

    strategy: Any = strategy_for(pack, concurrency)
    batch = _engine_batch(items, schema, schema_retries, options)
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

    limits = None
    if max_cost is not None:
        from .errors import ConfigurationError
        from .estimates import Budget, Limits

        estimate = batch.estimate()
        if estimate.usd is None:
            raise ConfigurationError(
                f"max_cost: the price of {estimate.model} is unknown ({estimate.pricing}); "
                "give it with pizzagpt_magic.set_prices or PizzaMagics.prices"
            )
        limits = Limits([Budget(max_cost, what=f"max_cost={max_cost:g}")])
    if jobs is not None:
        strategy = jobs["strategy"] = jobs["make"](batch.recorder.store, bar)
    try:
        await batch.run(strategy, on_outcome=arrived, limits=limits)
    except (asyncio.CancelledError, KeyboardInterrupt):
        if jobs is not None:
            _say_interrupted(strategy)
        raise
    finally:
        if bar is not None:
            bar.close()
    return results


def _job_options(wait: bool, poll: float | None, max_requests: int | None) -> dict[str, Any]:
    """How ``_ask_engine`` makes the ``jobs`` strategy, once the store is known."""
    from .engine.send.jobs import POLL_FIRST, Jobs

    def make(store: Any, bar: Any) -> Jobs:
        return Jobs(
            store,
            wait=wait,
            poll=POLL_FIRST if poll is None else poll,
            max_requests=max_requests,
            on_status=None if bar is None else lambda states: job_postfix(bar, states),
        )

    return {"make": make}


def job_postfix(bar: Any, states: list[Any]) -> None:
    """The progress bar's note of the jobs' status and counts."""
    done = sum(s.completed for s in states)
    total = sum(s.total for s in states)
    statuses = sorted({s.status for s in states})
    bar.set_postfix_str(f"jobs {'/'.join(statuses)}: {done}/{total} done", refresh=True)


def _say_interrupted(strategy: Any) -> None:
    import sys

    ids = getattr(strategy, "ids", [])
    if ids:
        print(
            f"Stopped waiting; the batch job {', '.join(ids)} keeps running at the provider. "
            "Run the same call again to pick it up (nothing is submitted twice), or cancel it "
            "with `pizzagpt jobs cancel ID`.",
            file=sys.stderr,
        )


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


DEFAULT_CONCURRENCY = 8


def _saved_concurrency(items: list[Any]) -> int | None:
    """The concurrency saved with the batch's saved prompts (the lowest, when they differ)."""
    from .prompts import SavedPrompt

    found = [i.concurrency for i in items if isinstance(i, SavedPrompt) and i.concurrency]
    return min(found) if found else None


def ask_many(prompts: Iterable[Any], **options: Any) -> Any:
    """``ask_many_async`` from synchronous code; safe inside a running loop."""
    from .loop import run_sync

    return run_sync(ask_many_async(prompts, **options))
