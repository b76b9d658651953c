"""Where the DataFrame operations meet the batch engine: prompts in, one outcome per row out.

An operation renders one prompt text per row and hands the texts here with its options; this
module makes them the engine's prompts, runs them (deduplicated, through the store, at the
batch's concurrency, paused on 429, with a progress bar), and gives back, in the rows' order,
each row's answer or the exception that stood for it. ``estimate`` stops before sending.

An interrupt keeps what arrived: in the store (a rerun sends only the rest), and, in a shell,
as a Series in ``_pizza_answers`` (``<NA>`` where none came), as ``%%pizza --each`` does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from .options import Options

__all__ = ["Estimate", "Outcomes", "estimate", "run"]

#: Characters per token in the estimate of input tokens (a common rule of thumb for English).
CHARS_PER_TOKEN = 4


@dataclass
class Estimate:
    """What an operation would send: ``rows``, ``distinct`` prompts among them, ``cached``
    (distinct prompts already answered in the store), ``requests`` (what is left to send) and
    ``input_tokens`` (an estimate for those requests, at about 4 characters a token).
    ``levels`` is an ``agg`` tree's questions per level."""

    method: str
    rows: int
    distinct: int
    cached: int
    requests: int
    input_tokens: int
    levels: list[int] | None = None

    def __str__(self) -> str:
        tree = ""
        if self.levels is not None:
            tree = f"; a tree of {len(self.levels)} levels ({' + '.join(map(str, self.levels))})"
        return (
            f"{self.method}: {self.rows:,} rows, {self.distinct:,} distinct prompts, "
            f"{self.cached:,} already answered, {self.requests:,} requests to send "
            f"(about {self.input_tokens:,} input tokens){tree}"
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
    from ..backends import provider_of, resolve
    from ..providers.pizzagpt import Pizzagpt

    if options.provider is None or options.provider is Pizzagpt:
        backend = resolve(options.model, options.endpoints or None)
    else:
        backend = provider_of(options.provider, options.model)
    if options.temperature is not None or options.max_tokens is not None:
        backend.check_parameters(options.temperature, options.max_tokens)
    return backend


def _store(options: Options) -> Any:
    from .. import store as stores

    if options.store == "default":
        return stores.get_store() if (options.cache or options.log) else None
    return options.store


class _Prepared:
    """The texts as requests: each row's key, and the distinct keys' messages in first-seen
    order."""

    def __init__(self, texts: list[str], options: Options) -> None:
        from ..api import build_messages, store_key

        self.backend = backend = _backend(options)
        self.store = _store(options)
        system = options.system
        base_url = options.base_url
        temperature, max_tokens = options.temperature, options.max_tokens
        by_text: dict[str, str] = {}
        self.messages: dict[str, Any] = {}
        self.keys: list[str] = []
        for text in texts:
            key = by_text.get(text)
            if key is None:
                messages = build_messages(text, system=system)
                key = by_text[text] = store_key(
                    backend, messages, temperature, max_tokens, base_url
                )
                self.messages.setdefault(key, messages)
            self.keys.append(key)

    def answered(self) -> set[str]:
        store = self.store
        if store is None:
            return set()
        return {key for key in self.messages if store.has(key)}


def estimate(method: str, texts: list[str], options: Options, *, schema: Any = None) -> Estimate:
    """What ``run`` would send for ``texts``; sends nothing."""
    prepared = _Prepared(texts, options)
    answered = prepared.answered() if options.cache else set()
    pending = [m for k, m in prepared.messages.items() if k not in answered]
    characters = sum(len(str(m["content"])) for messages in pending for m in messages)
    return Estimate(
        method,
        len(texts),
        len(prepared.messages),
        len(answered),
        len(pending),
        -(-characters // CHARS_PER_TOKEN),
    )


def run(
    texts: list[str],
    options: Options,
    *,
    schema: Any = None,
    labels: Any = None,
    desc: str = "pizza",
) -> Outcomes:
    """Each text's answer (or exception), in order; ``labels`` (the rows' index) name the
    partial answers kept on an interrupt."""
    from ..api import complete_messages
    from ..batch import ask_many_async
    from ..loop import run_sync

    prepared = _Prepared(texts, options)
    distinct = list(prepared.messages)
    backend, store = prepared.backend, prepared.store
    request = options.request()

    async def ask_one(key: str) -> Any:
        completion = await complete_messages(
            backend,
            prepared.messages[key],
            stream=False,
            temperature=options.temperature,
            max_tokens=options.max_tokens,
            cache=options.cache,
            log=options.log,
            store=store,
            context=options.context,
            **request,
        )
        return completion

    received: list[Any] = []
    try:
        results = run_sync(
            ask_many_async(
                distinct,
                concurrency=options.concurrency,
                errors="return",
                progress=options.progress and len(distinct) > 1,
                ask=ask_one,
                into=received,
            )
        )
    except KeyboardInterrupt:
        got = {k: r for k, r in zip(distinct, received) if r is not None}
        values = [got.get(k) for k in prepared.keys]
        _keep_partial(
            [None if v is None or isinstance(v, BaseException) else v.text for v in values], labels
        )
        raise
    by_key = dict(zip(distinct, results))
    values = [by_key[k] for k in prepared.keys]
    cached = sum(1 for r in results if not isinstance(r, BaseException) and r.cached)
    texts_out = [v if isinstance(v, BaseException) else v.text for v in values]
    return Outcomes(texts_out, len(distinct) - cached, cached)


def _keep_partial(values: list[Any], labels: Any) -> None:
    """After an interrupt: the answers that arrived, in ``_pizza_answers`` when in a shell."""
    count = sum(v is not None for v in values)
    where = ""
    if "IPython" in sys.modules:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            import pandas as pd

            from ..magics.names import BATCH_ANSWERS

            shell.user_ns[BATCH_ANSWERS] = pd.Series(
                values, index=labels, name="answer", dtype="string"
            )
            where = f" in {BATCH_ANSWERS!r} (<NA> where none came)"
    print(
        f"Interrupted: {count} of {len(values)} answers kept{where} and in the store; run it "
        "again to ask only for the rest",
        file=sys.stderr,
    )
