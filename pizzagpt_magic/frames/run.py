"""Where the DataFrame operations meet the batch engine: prompts in, one outcome per row out.

An operation renders one prompt text per row and hands the texts here with its options; this
module makes them the engine's prompts, runs them (deduplicated, through the store, at the
batch's concurrency, paused on 429, with a progress bar), and gives back, in the rows' order,
each row's answer or the exception that stood for it. ``estimate`` stops before sending, and says
what the requests would cost; ``max_cost=`` (and the shell's ``PizzaMagics.budget``) stop the
sending at a cost limit, keeping what arrived, as an interrupt does.

An interrupt keeps what arrived: in the store (a rerun sends only the rest), and, in a shell,
as a Series in ``_pizza_batch`` (``<NA>`` where none came), as ``%%pizza --each`` does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from ..errors import BudgetExceededError, PromptError
from .options import Options

__all__ = ["Estimate", "Outcomes", "estimate", "run"]


@dataclass
class Estimate:
    """What an operation would send: ``rows``, ``distinct`` prompts among them, ``cached``
    (distinct prompts already answered in the store), ``requests`` (what is left to send),
    ``input_tokens`` (characters over the characters a token of the model's logged answers,
    about 4 when it has none) and ``output_tokens`` for those requests, and what they would
    cost: ``usd`` (None when the model is unpriced) and how the model is ``pricing``-ed (see
    ``estimates``). ``levels`` is an ``agg`` tree's questions per level. With ``batch_api=True``
    the Batch API's price is beside the online one: ``batch_usd``, ``batch_share`` of it."""

    method: str
    rows: int
    distinct: int
    cached: int
    requests: int
    input_tokens: int
    levels: list[int] | None = None
    output_tokens: int = 0
    usd: float | None = None
    pricing: str = ""
    batch_share: float | None = None
    batch_usd: float | None = None

    @property
    def cost_label(self) -> str:
        return self._label(self.usd)

    @property
    def batch_cost_label(self) -> str | None:
        """The cost through the Batch API (None: not asked with ``batch_api=True``)."""
        return None if self.batch_share is None else self._label(self.batch_usd)

    def _label(self, usd: float | None) -> str:
        if self.pricing in ("local", "free"):
            return self.pricing
        if usd is None:
            return "unpriced"
        from ..cost import format_usd

        return format_usd(usd)

    def __str__(self) -> str:
        tree = ""
        if self.levels is not None:
            tree = f"; a tree of {len(self.levels)} levels ({' + '.join(map(str, self.levels))})"
        both = (
            f" online, {self.batch_cost_label} through the Batch API "
            f"({self.batch_share:.0%} of the online price)"
            if self.batch_share is not None
            else ""
        )
        cost = (
            f", {self.output_tokens:,} output tokens; cost {self.cost_label}{both}"
            if self.pricing
            else ""
        )
        return (
            f"{self.method}: {self.rows:,} rows, {self.distinct:,} distinct prompts, "
            f"{self.cached:,} already answered, {self.requests:,} requests to send "
            f"(about {self.input_tokens:,} input tokens{cost}){tree}"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


@dataclass
class Outcomes:
    """A run's result: for each row its value (text, or a schema's value) or the exception
    that stood for it; and what was sent."""

    values: list[Any]
    sent: int
    cached: int

    @property
    def failures(self) -> int:
        return sum(isinstance(v, BaseException) for v in self.values)

    def noted(self, result: Any) -> Any:
        """``result`` (a pandas object) with what it cost in ``attrs["pizza"]``: rows,
        requests sent, distinct prompts answered from the store, rows that failed."""
        result.attrs["pizza"] = {
            "rows": len(self.values),
            "requests": self.sent,
            "cached": self.cached,
            "failed": self.failures,
        }
        return result


def _backend(options: Options) -> Any:
    """The backend of ``options.model`` (a model id or an alias); the temperature, max tokens
    and model options in ``options`` become what is sent, merged as everywhere: the call's
    own, a saved prompt's, the alias's, then the settings'."""
    from ..backends import provider_of, resolve
    from ..options import settle
    from ..providers.pizzagpt import Pizzagpt

    if options.provider is None or options.provider is Pizzagpt:
        backend = resolve(options.model, options.endpoints or None)
    else:
        backend = provider_of(options.provider, options.model)
    sampling = ("temperature", "max_tokens")
    call = {
        name: value
        for name in sampling
        if name in options.given and (value := getattr(options, name)) is not None
    }
    settings = {name: getattr(options, name) for name in sampling if name not in options.given}
    backend, options.temperature, options.max_tokens, options.options = settle(
        backend,
        options.saved_options,
        {**options.options, **call},
        settings={**options.settings_options, **settings},
    )
    return backend


class _Prepared:
    """The texts as the engine's prompts (one ``Prompt`` made per distinct text, shared by
    the rows that ask it), and the batch that plans them: nothing is sent yet."""

    def __init__(self, texts: list[str], options: Options, schema: Any = None) -> None:
        from ..api import build_messages
        from ..engine import Batch, Prompt

        backend = _backend(options)
        system = options.system
        _check_sizes(texts, options)
        made: dict[str, Any] = {}
        prompts = []
        for text in texts:
            prompt = made.get(text)
            if prompt is None:
                prompt = made[text] = Prompt(
                    backend,
                    build_messages(text, system=system, history=options.history),
                    temperature=options.temperature,
                    max_tokens=options.max_tokens,
                    schema=schema,
                    base_url=options.base_url,
                    options=options.options,
                )
            prompts.append(prompt)
        self.batch = Batch(
            prompts,
            store=options.store,
            cache=options.cache,
            log=options.log,
            context=options.context,
            schema_retries=options.schema_retries,
            request=options.request(),
        )


def _check_sizes(texts: list[str], options: Options) -> None:
    """A prompt over ``max_prompt_chars`` fails the call before anything is sent, naming its
    row (``%%pizza --each`` refuses it the same way)."""
    system = len(options.system or "")
    history = sum(len(str(m["content"])) for m in options.history)
    extra = system + history
    besides = " and ".join(
        name for name, size in (("the system message", system), ("the history", history)) if size
    )
    limit = options.max_prompt_chars
    for position, text in enumerate(texts):
        if len(text) + extra > limit:
            size = f"{len(text) + extra:,} characters" + (f" with {besides}" if besides else "")
            raise PromptError(
                f"The prompt of row {position} (by position) is {size}, over max_prompt_chars="
                f"{limit:,}; shorten the template or show less of the row"
            )


def estimate(method: str, texts: list[str], options: Options, *, schema: Any = None) -> Estimate:
    """What ``run`` would send for ``texts`` and what it would cost; sends nothing."""
    batch = _Prepared(texts, options, schema).batch
    plan = batch.plan
    found = batch.estimate()
    if options.batch_api:  # a job's line a prompt, at both prices
        found.at_batch_price()
        requests = len(plan.pending)
    else:
        requests = _strategy(options).planned_requests(plan.pending)
    return Estimate(
        method,
        len(texts),
        len(plan.unique),
        len(plan.answered),
        requests,
        found.input_tokens,
        output_tokens=found.output_tokens,
        usd=found.usd,
        pricing=found.pricing,
        batch_share=found.batch_share,
        batch_usd=found.batch_usd,
    )


def rates(options: Options) -> tuple[Any, float, int]:
    """``(pricing, characters a token, output tokens a request)`` of the operation's model,
    for questions not made yet (an ``agg`` tree's upper levels)."""
    from ..engine.record import Recorder
    from ..estimates import Estimator

    store = Recorder(options.store, cache=True, log=False).store
    return Estimator(store).rates(_backend(options), options.max_tokens, options.base_url)


def _limits(options: Options, batch: Any) -> Any:
    """The operation's cost limits (``max_cost=``, the shell's ``PizzaMagics.budget``): made
    at its first batch, and shared by the batches after it (an ``agg`` tree's levels)."""
    if options.limits is not None:
        return options.limits
    from ..cost import format_usd
    from ..errors import ConfigurationError
    from ..estimates import Budget, Limits

    budgets = []
    if options.max_cost is not None:
        budgets.append(Budget(options.max_cost, what=f"max_cost={options.max_cost:g}"))
    magics = options.magics
    if magics is not None and magics.budget is not None:
        what = f"PizzaMagics.budget ({format_usd(magics.budget)})"
        budgets.append(Budget(magics.budget, magics.spent, what=what))
    if not budgets:
        return None
    found = batch.estimate()
    if found.usd is None and found.requests:
        raise ConfigurationError(
            f"The price of {found.model} is unknown ({found.pricing}), so a cost limit cannot "
            "hold; give it with pizzagpt_magic.set_prices or PizzaMagics.prices"
        )
    options.limits = Limits(budgets)
    return options.limits


def _strategy(options: Options) -> Any:
    """How the batch sends: packed (``options.pack``, else ``$PIZZAGPT_PACK``, else auto), or
    one prompt a request."""
    from ..engine.send.packed import strategy_for

    return strategy_for(
        options.pack, options.concurrency, max_prompt_chars=options.max_prompt_chars
    )


def run(
    texts: list[str],
    options: Options,
    *,
    schema: Any = None,
    labels: Any = None,
    desc: str = "pizza",
) -> Outcomes:
    """Each text's answer (its text, or with ``schema`` its value) or exception, in order;
    ``labels`` (the rows' index) name the partial answers kept on an interrupt."""
    from ..batch import progress_bar
    from ..loop import run_sync

    batch = _Prepared(texts, options, schema).batch
    limits = _limits(options, batch)
    pending = batch.plan.requests
    bar = progress_bar(pending, enabled=options.progress and pending > 1, desc=desc)
    failed = 0

    def arrived(positions: list[int], outcome: Any) -> None:
        nonlocal failed
        if bar is None or outcome.cached:
            return
        if outcome.error is not None:
            failed += 1
            bar.set_postfix(failed=failed, refresh=False)
        bar.update(1)

    strategy: Any = _strategy(options)
    if options.batch_api:
        from ..batch import job_postfix
        from ..engine.send.jobs import POLL_FIRST, Jobs

        strategy = Jobs(
            batch.recorder.store,
            poll=POLL_FIRST if options.batch_poll is None else options.batch_poll,
            max_requests=options.batch_max_requests,
            on_status=None if bar is None else lambda states: job_postfix(bar, states),
        )
    try:
        run_sync(batch.run(strategy, on_outcome=arrived, limits=limits))
    except BudgetExceededError:
        # As for an interrupt, what arrived is kept; the error says why it stopped.
        got = [None if o is None or not o.ok else o.value for o in batch.outcomes]
        _keep_partial(got, labels, schema, announce=False)
        raise
    except KeyboardInterrupt:
        if options.batch_api:
            from ..batch import _say_interrupted

            _say_interrupted(strategy)
        got = [None if o is None or not o.ok else o.value for o in batch.outcomes]
        _keep_partial(got, labels, schema)
        raise
    finally:
        if options.magics is not None:
            options.magics.spent += batch.spent
        if bar is not None:
            bar.close()
    return Outcomes(batch.results(), batch.sent, len(batch.plan.answered))


def _keep_partial(values: list[Any], labels: Any, schema: Any, announce: bool = True) -> None:
    """After an interrupt (or a stop at a cost limit, which says so itself: ``announce``
    False): the answers that arrived, in ``_pizza_batch`` when in a shell."""
    count = sum(v is not None for v in values)
    where = ""
    if "IPython" in sys.modules:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            import pandas as pd

            from ..magics.names import BATCH_ANSWERS

            if schema is None:
                kept: Any = pd.Series(values, index=labels, name="answer", dtype="string")
            else:
                from ..engine import answers_frame

                kept = answers_frame(values, schema, index=labels)
            shell.user_ns[BATCH_ANSWERS] = kept
            where = f" in {BATCH_ANSWERS!r} (<NA> where none came)"
    if announce:
        print(
            f"Interrupted: {count} of {len(values)} answers kept{where} and in the store; run "
            "it again to ask only for the rest",
            file=sys.stderr,
        )
