"""``%%pizza --each NAME``: the question once per item of an iterable, as a batch.

``{item}`` and ``{index}`` are bound for each item; answers go to ``-o`` as a list, or a Series
on a pandas index; with ``--schema`` a typed DataFrame (see ``engine.assemble``). The prompts
go through the batch engine: identical ones are asked once, kept answers are not asked again,
and an interrupt keeps every answer that arrived, as does a stop at the cost limit
(``--max-cost``, ``PizzaMagics.budget``); ``--estimate`` says what the batch would send and cost,
and sends nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .. import answers as answer_files
from ..errors import AnswerFormatError, BudgetExceededError, PizzagptError, PromptError
from ..render import Answer, BatchSummary
from .names import BATCH_ANSWERS

if TYPE_CHECKING:
    from .pizza import PizzaMagics


__all__ = ["ask_each", "batch_values"]


def _is_pandas(value: Any) -> bool:
    return type(value).__module__.startswith("pandas") and hasattr(value, "index")


def _value_of(text: str, format: str) -> Any:
    """What ``-f format`` makes of an answer (its code, its JSON value), or the error saying
    why it cannot."""
    try:
        return Answer(text, format=format).value
    except AnswerFormatError as exc:
        return exc


def ask_each(magics: PizzaMagics, args: Any, template: str) -> Any:
    from collections import ChainMap

    from ..batch import progress_bar
    from ..engine import Batch, Prompt
    from ..engine.send.packed import strategy_for
    from ..interpolate import batch_items
    from ..loop import run_sync

    if not template:
        raise UsageError("Nothing to ask: the cell body is empty")
    name = args.each
    if name not in magics.user_ns:
        raise UsageError(f"--each: name {name!r} is not defined")
    source = magics.user_ns[name]
    try:
        labels, items = batch_items(source)
    except TypeError as exc:
        raise UsageError(f"--each: {name!r} is not iterable ({exc})") from None
    except PromptError as exc:  # huge, or endless: refused before any item is built
        raise UsageError(f"--each: {name!r} has {exc}") from None
    if not items:
        raise UsageError(f"--each: {name!r} is empty")
    # {item} and {index} are bound for the question and the system message alike.
    scopes = [
        ChainMap({"item": item, "index": label}, magics.user_ns)
        for label, item in zip(labels, items)
    ]
    # Every item's text first (images measured, none drawn): a bad reference, a huge figure
    # or a prompt over the limit stops the batch before anything is drawn or sent.
    drafts = [magics._interpolated(template, args, s) for s in scopes]
    systems = [magics._system(args, s) for s in scopes]
    for (text, _), system in zip(drafts, systems):
        magics._check_size(text, system, args.chat)
    request = magics._request_options(args)
    base_url = request.pop("base_url")
    conversation = magics.conversation

    def prompt_of(position: int) -> Prompt:
        question = magics._with_images(*drafts[position], args)
        return Prompt(
            args.backend,
            conversation.messages(question, system=systems[position], chat=args.chat),
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            schema=args.schema,
            base_url=base_url,
            options=args.model_options,
        )

    def batch_of(prompts: list[Any], failed: dict[int, BaseException] | None = None) -> Batch:
        return Batch(
            prompts,
            store=magics._store(),
            cache=magics.cache and not args.no_cache,
            log=magics.log and not args.no_log,
            context=magics._context(),
            memory=conversation.cache,
            schema_retries=magics.schema_retries,
            request=request,
            failed=failed,
        )

    # Images are drawn a window at a time, as the items are sent, unless the whole batch must
    # be known first: a Batch API job is one file, an estimate or a cost limit counts it all.
    whole = args.batch_api or args.estimate or args.max_cost is not None or magics.budget
    batch: Any
    if any(images for _, images in drafts) and not whole:
        window = max(2 * (args.concurrency or magics.concurrency), magics.image_window)
        batch = ImageWindows(len(drafts), window, prompt_of, batch_of)
    else:
        batch = batch_of([prompt_of(position) for position in range(len(drafts))])
    try:
        strategy = strategy_for(
            args.pack if args.pack is not None else magics.pack,
            args.concurrency or magics.concurrency,
            max_prompt_chars=magics.max_prompt_chars,
        )
    except PizzagptError as exc:
        raise UsageError(f"--pack: {exc}") from None
    limits = None
    if args.estimate or args.max_cost is not None or magics.budget is not None:
        estimate = batch.estimate()
        if args.batch_api:  # a job's line a prompt, at both prices
            estimate.at_batch_price(magics.batch_discount)
        else:
            estimate.packed = strategy.planned_requests(batch.plan.pending)  # as it will send
        if args.estimate:
            return estimate
        limits = magics._limits(args, estimate)
    # In a notebook the progress is one display updated in place, which the summary takes
    # the place of; a terminal gets tqdm's text bar.
    live = BatchProgress(len(drafts), args.model) if magics._showing_progress() else None
    bar = progress_bar(len(drafts), enabled=magics.progress and live is None)
    failed = cached = 0

    def arrived(positions: list[int], outcome: Any) -> None:
        nonlocal failed, cached
        cached += len(positions) if outcome.cached else 0
        if outcome.error is not None:
            failed += len(positions)
        if live is not None:
            live.advance(len(positions), failed)
        if bar is None:
            return
        if outcome.error is not None:
            bar.set_postfix(failed=failed, refresh=False)
        bar.update(len(positions))

    def keep() -> tuple[str, int]:
        # Every answer that arrived is kept: in the variable, None where none came (and
        # in the store, so that a rerun asks only for the rest).
        if live is not None:
            live.stopped()
        kept = [None if isinstance(r, BaseException) else r for r in batch.results()]
        target = args.output or BATCH_ANSWERS
        magics.user_ns[target] = _answers(kept, source, args.schema)
        return target, sum(r is not None for r in kept)

    if args.batch_api:
        strategy = _jobs_strategy(magics, args, batch, bar)
    started = time.monotonic()
    try:
        run_sync(batch.run(strategy, on_outcome=arrived, limits=limits))
    except BudgetExceededError as exc:
        kept_in, _ = keep()
        raise UsageError(f"{exc}; the answers are in {kept_in!r} (None where none came)") from None
    except PizzagptError as exc:  # a backend without a Batch API, a refused submission
        if not args.batch_api:
            raise
        raise UsageError(f"--batch-api: {exc}") from None
    except KeyboardInterrupt:
        if args.batch_api:
            from ..batch import _say_interrupted

            _say_interrupted(strategy)
        kept_in, count = keep()
        import sys

        print(
            f"Interrupted: {count} of {len(drafts)} answers kept in {kept_in!r} (None "
            "where none came); run the cell again to ask only for the rest",
            file=sys.stderr,
        )
        raise
    finally:
        magics.spent += batch.spent
        if bar is not None:
            bar.close()
    if args.batch_api and args.no_wait:
        from ..jobs import JobHandle

        line, cell = args.source
        waiting = " ".join(word for word in line.split(" ") if word != "--no-wait")
        handle = JobHandle(
            strategy.ids,
            strategy.store,
            lambda: magics.ipython.run_cell_magic("pizza", waiting, cell),
        )
        if args.output:
            magics.user_ns[args.output] = handle
        return handle
    results = batch.results()
    if args.schema is None and args.format in ("code", "json"):
        # each answer becomes its value, or fails
        results = [
            result if isinstance(result, BaseException) else _value_of(result, args.format)
            for result in results
        ]
    elapsed = time.monotonic() - started
    if args.schema is not None:
        from ..typed import TypedBatchSummary

        answers = _answers(results, source, args.schema)
        frame = answers if _is_pandas(answers) else None
        summary: BatchSummary = TypedBatchSummary(
            labels, results, elapsed, args.model, frame, args.schema
        )
    else:
        summary = BatchSummary(
            labels, results, elapsed, args.model, format=args.format, cached=cached
        )
        answers = batch_values(
            [None if isinstance(r, BaseException) else r for r in results], source
        )
    settings = answer_files.current()
    if settings is not None:
        # What the saved notebook records: the file, and the keys of the answers it holds.
        summary.answer_file = settings.file.name
        summary.keys = answer_keys(batch)
    summary.answers = answers
    if batch.spent:
        from ..cost import format_usd

        summary.cost = f"{format_usd(batch.spent)} spent"
    target = args.output or (BATCH_ANSWERS if summary.failures else None)
    if target:
        magics.user_ns[target] = answers
    if live is not None:
        live.end_with(summary, magics.ipython.events, failed=bool(summary.failures))
    if summary.failures:
        raise UsageError(f"{summary.failure_line()}; the other answers are in {target!r}")
    return summary


def answer_keys(batch: Any) -> list[str]:
    """The answer file's keys of a batch's distinct prompts."""
    if isinstance(batch, ImageWindows):
        return list(batch.answer_keys)
    return [
        answer_files.answer_key(p.backend.provider, p.backend.model, p.parameters, p.messages)
        for p in batch.plan.unique.values()
    ]


class ImageWindows:
    """A batch whose items hold images, drawn a window of items at a time as they are sent,
    with the interface of ``engine.Batch`` that ``ask_each`` uses.

    The first request leaves once the first window is drawn, not after every image of the
    batch; the next window is drawn while this one's requests are in flight (the loop runs
    between two items), and only about two windows of images are held at once. A window's
    plan is made when the one before has ended, so a prompt repeated in a later window finds
    its answer kept and is not asked again. An item whose image cannot be read fails alone,
    with its one-line reason; the others are asked.
    """

    def __init__(
        self,
        size: int,
        window: int,
        prompt_of: Callable[[int], Any],
        batch_of: Callable[..., Any],
    ) -> None:
        self.size = size
        self.window = max(1, window)
        self._prompt_of = prompt_of
        self._batch_of = batch_of
        self.outcomes: list[Any] = [None] * size
        self.spent = 0.0
        #: The answer file's keys of the prompts asked so far (with an answer file).
        self.answer_keys: dict[str, None] = {}
        #: Items drawn so far: a window ahead of the requests at most.
        self.drawn = 0

    async def _draw(self, start: int, stop: int) -> tuple[list[Any], dict[int, BaseException]]:
        import asyncio

        prompts: list[Any] = []
        failed: dict[int, BaseException] = {}
        for position in range(start, stop):
            try:
                prompts.append(self._prompt_of(position))
            except UsageError as exc:  # this item's image: the others go on
                prompts.append(None)
                failed[position - start] = PromptError(str(exc))
            self.drawn += 1
            await asyncio.sleep(0)  # the requests in flight read and send between two items
        return prompts, failed

    async def run(
        self,
        strategy: Any = None,
        *,
        on_outcome: Callable[[list[int], Any], Any] | None = None,
        limits: Any = None,
    ) -> list[Any]:
        import asyncio

        drawn = await self._draw(0, min(self.window, self.size))
        for start in range(0, self.size, self.window):
            stop = min(start + self.window, self.size)
            batch = self._batch_of(*drawn)
            shifted = None
            if on_outcome is not None:

                def shifted(positions: list[int], outcome: Any, start: int = start) -> None:
                    on_outcome([start + p for p in positions], outcome)

            running = asyncio.ensure_future(batch.run(strategy, on_outcome=shifted, limits=limits))
            try:
                if stop < self.size:
                    drawn = await self._draw(stop, min(stop + self.window, self.size))
                await running
            finally:
                if not running.done():
                    running.cancel()
                    await asyncio.gather(running, return_exceptions=True)
                self.outcomes[start:stop] = batch.outcomes
                self.spent += batch.spent
                if answer_files.current() is not None:
                    for key in answer_keys(batch):
                        self.answer_keys.setdefault(key)
        return self.outcomes

    def results(self) -> list[Any]:
        """Each item's value, or its exception; None where no outcome came."""
        return [None if o is None else o.result() for o in self.outcomes]


class BatchProgress:
    """A batch's progress in a notebook: one output, updated in place (at most five times a
    second), that the summary takes the place of when the batch ends."""

    WIDTH = 24

    def __init__(self, total: int, model: str, interval: float = 0.2) -> None:
        from ..streaming import LiveOutput

        self.total = total
        self.model = model
        self.interval = interval
        self.done = self.failed = 0
        self.output = LiveOutput()
        self.started = time.monotonic()
        self._shown_at = 0.0

    def line(self) -> str:
        filled = round(self.WIDTH * self.done / self.total)
        bar = "█" * filled + "░" * (self.WIDTH - filled)
        failed = f" · {self.failed} failed" if self.failed else ""
        seconds = time.monotonic() - self.started
        return f"{self.model}: {bar} {self.done}/{self.total} answered{failed} · {seconds:.1f} s"

    def advance(self, count: int, failed: int) -> None:
        self.done += count
        self.failed = failed
        now = time.monotonic()
        if now - self._shown_at >= self.interval or self.done >= self.total:
            self._shown_at = now
            self.output.show({"text/plain": self.line()})

    def stopped(self) -> None:
        """The batch stopped short (an interrupt, the budget): how far it came."""
        self.output.note(f"stopped: {self.done} of {self.total} answered")

    def end_with(self, summary: Any, events: Any, failed: bool) -> None:
        """The summary takes the progress's place: as the cell's result, or (when the cell
        fails for the failed items) at once."""
        if not self.output.shown:
            return
        if failed:
            self.output.show(summary._repr_mimebundle_())
        else:
            self.output.end_with(summary, events)


def _jobs_strategy(magics: PizzaMagics, args: Any, batch: Any, bar: Any) -> Any:
    """The ``jobs`` strategy of ``--batch-api``, its status on the progress bar."""
    from ..batch import job_postfix
    from ..engine.send.jobs import Jobs

    return Jobs(
        batch.recorder.store,
        wait=not args.no_wait,
        poll=magics.batch_poll,
        max_requests=magics.batch_max_requests,
        on_status=None if bar is None else lambda states: job_postfix(bar, states),
    )


def _answers(results: list[Any], source: Any, schema: Any) -> Any:
    """The ``-o`` value: with a schema a typed DataFrame (the values, without pandas), else
    ``batch_values``."""
    if schema is None:
        return batch_values(results, source)
    from ..engine.assemble import answers_frame
    from ..errors import ConfigurationError

    try:
        return answers_frame(results, schema, index=source.index if _is_pandas(source) else None)
    except ConfigurationError:  # no pandas: the values themselves
        return [None if isinstance(r, BaseException) else r for r in results]


def batch_values(answers: list[Any], source: Any) -> Any:
    """A batch's answers as the ``-o`` value: a list, or a Series on a pandas index."""
    if _is_pandas(source):
        import pandas as pd

        return pd.Series(answers, index=source.index, name="answer", dtype=object)
    return answers
