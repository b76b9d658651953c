"""``Batch``: prompts through the steps, from plan to recorded outcomes.

    batch = Batch(prompts, store=..., context=...)     # keys and plan: nothing sent yet
    batch.plan.requests                                  # what is left to send
    batch.estimate()                                     # its tokens and cost: a dry run
    await batch.run(Single(concurrency=8), on_outcome=..., limits=...)
    batch.results()                                      # values (or exceptions) in order

Outcomes are settled by key as results arrive: checked (a repair goes back to the strategy),
recorded in the store, then given to every position that asked for that key (``outcomes``, and
``on_outcome(positions, outcome)``). What arrived before an interrupt or a stop at a cost limit
stays in ``outcomes`` and in the store, so running the same prompts again sends only what is
missing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from .check import Outcome, check
from .plan import make_plan
from .prompts import Prompt
from .record import Recorder
from .send import Pending

if TYPE_CHECKING:
    from ..estimates import Estimate, Limits
    from .send import Strategy

__all__ = ["Batch", "complete_prompt"]


class Batch:
    """A batch of prompts (see the module's docstring).

    ``store``, ``cache``, ``log`` and ``context`` are those of ``api.complete_messages``
    (``"default"``: the default store);
    ``memory`` a mapping of keys to completions looked up before the store and kept up to date;
    ``schema_retries`` how many repairs an answer that does not fit its schema gets; ``request``
    how requests are sent (``proxy``, ``timeout``, ``connect_timeout``, ``max_retries``).
    ``failed`` gives positions that failed before anything was sent (a prompt that could not be
    made) their exception.
    """

    def __init__(
        self,
        prompts: Sequence[Prompt | None],
        *,
        store: Any = "default",
        cache: bool = True,
        log: bool = True,
        context: dict[str, Any] | None = None,
        memory: MutableMapping[str, Any] | None = None,
        schema_retries: int = 1,
        request: Mapping[str, Any] | None = None,
        failed: Mapping[int, BaseException] | None = None,
    ) -> None:
        self.size = len(prompts)
        self.recorder = Recorder(
            store,
            cache=cache,
            log=log,
            context=context,
            memory=memory,
        )
        self.schema_retries = schema_retries
        self.request = dict(request or {})
        #: Each position's outcome, None until it has one.
        self.outcomes: list[Outcome | None] = [None] * self.size
        # Positions without a prompt have no key: they stand apart from the plan.
        self._where = [i for i, p in enumerate(prompts) if p is not None]
        valid = [p for p in prompts if p is not None]
        self.recorder.prefetch([p.key for p in valid])
        self.plan = make_plan(valid, self.recorder.lookup)
        self.recorder.forget_prefetched()
        #: Requests sent so far (repairs included), and the dollars they are known to have cost.
        self.sent = 0
        self.spent = 0.0
        # What is settled before sending (kept answers, prompts that could not be made), for
        # ``run``'s ``on_outcome``.
        self._settled_early: list[tuple[list[int], Outcome]] = []
        for position, error in (failed or {}).items():
            outcome = self.outcomes[position] = Outcome("", error=error)
            self._settled_early.append(([position], outcome))
        for key, outcome in self.plan.answered.items():
            self._settled_early.append((self._settle(key, outcome), outcome))

    def _settle(self, key: str, outcome: Outcome) -> list[int]:
        where = self._where
        positions = [where[self.plan.first[key]]]
        more = self.plan.repeats.get(key)
        if more:
            positions += [where[i] for i in more]
        for position in positions:
            self.outcomes[position] = outcome
        return positions

    def estimate(self) -> Estimate:
        """What the plan leaves to send: requests, tokens and cost (see ``estimates.Estimator``).
        Nothing is sent."""
        from ..estimates import Estimator

        return Estimator(self.recorder.store).estimate(
            [_estimated(p) for p in self.plan.pending],
            prompts=len(self.plan.keys),
            distinct=len(self.plan.unique),
            stored=len(self.plan.answered),
        )

    async def run(
        self,
        strategy: Strategy | None = None,
        *,
        on_outcome: Callable[[list[int], Outcome], Any] | None = None,
        limits: Limits | None = None,
    ) -> list[Outcome | None]:
        """Send what the plan left, with ``strategy`` (``Single()`` by default), settling each
        key as its result arrives; the outcomes by position. The answers the plan found kept
        are logged (as cache hits) here, not when the plan is made: a plan alone is a dry run.

        With ``limits`` (``estimates.Limits``) no request starts that could take what is spent plus
        what is in flight (at its estimate) past a limit; the stop raises
        ``BudgetExceededError`` once the requests in flight have settled, with the results so
        far in its ``results`` (and every answer in the store)."""
        for key, outcome in self.plan.answered.items():
            self.recorder.record(self.plan.unique[key], outcome)
        if on_outcome is not None:
            for positions, outcome in self._settled_early:
                on_outcome(positions, outcome)
        if not self.plan.pending:
            return self.outcomes
        from .. import answers

        settings = answers.current()
        if settings is not None and settings.only:
            # Answers only from the answer file: what it lacks fails, and nothing is sent.
            for prompt in self.plan.pending:
                missing = Outcome(prompt.key, error=settings.missing(prompt.messages))
                self.recorder.record(prompt, missing)
                positions = self._settle(prompt.key, missing)
                if on_outcome is not None:
                    on_outcome(positions, missing)
            return self.outcomes
        if strategy is None:
            from .send.single import Single

            strategy = Single()
        estimates: dict[str, float] = {}
        gate = None
        if limits is not None:
            from ..estimates import Estimator

            estimator = Estimator(self.recorder.store)

            def gate(prompt: Prompt) -> bool:
                usd = estimates.get(prompt.key)
                if usd is None:
                    usd = estimates[prompt.key] = estimator.request(*_estimated(prompt))[2] or 0.0
                return limits.reserve(usd)

        pending = Pending(self.plan.pending, gate)
        retries = self.schema_retries
        record = self.recorder.record
        async with contextlib.aclosing(strategy.send(pending, self.request)) as arrivals:  # type: ignore[type-var]
            async for prompt, result in arrivals:
                self.sent += 1
                usd = _usd_of(result)
                self.spent += usd or 0.0
                if limits is not None:
                    limits.settle(estimates.get(prompt.key, 0.0), usd)
                checked = check(prompt, result, retries)
                if isinstance(checked, Prompt):
                    pending.add(checked)
                    pending.settle()
                    continue
                record(prompt, checked)
                positions = self._settle(prompt.key, checked)
                pending.settle()
                if on_outcome is not None:
                    on_outcome(positions, checked)
        # A strategy that packs prompts counts its requests; for the others, one a result.
        self.sent = getattr(strategy, "requests", self.sent)
        if pending.stopped and limits is not None:
            kept = sum(1 for o in self.outcomes if o is not None and o.ok)
            error = limits.error(kept, self.size)
            error.results = self.results()
            raise error
        return self.outcomes

    def results(self) -> list[Any]:
        """Each position's value, or its exception; None where no outcome came."""
        return [None if o is None else o.result() for o in self.outcomes]

    @property
    def failures(self) -> dict[int, BaseException]:
        """The positions that failed, and why."""
        return {
            i: o.error for i, o in enumerate(self.outcomes) if o is not None and o.error is not None
        }


def _estimated(prompt: Prompt) -> tuple[Any, Any, int | None, str | None]:
    """What an estimate of ``prompt`` reads: the backend, the messages sent (with a schema's
    instructions: counted whether they travel in the prompt or beside it), the answer's limit,
    the base URL."""
    messages = prompt.sent_messages(schema_in_prompt=prompt.schema is not None)
    return prompt.backend, messages, prompt.max_tokens, prompt.base_url


def _usd_of(result: Any) -> float | None:
    """What a result cost: a completion's dollars (None when unknown), a failure's 0."""
    if isinstance(result, BaseException):
        return 0.0
    cost = getattr(result, "cost", None)
    return cost.usd if cost is not None else None


async def complete_prompt(
    prompt: Prompt,
    *,
    store: Any = "default",
    cache: bool = True,
    log: bool = True,
    context: dict[str, Any] | None = None,
    memory: MutableMapping[str, Any] | None = None,
    schema_retries: int = 1,
    request: Mapping[str, Any] | None = None,
) -> Any:
    """One prompt through the steps: its ``Completion`` (``value`` set), or its error raised."""
    from .send.single import Single

    batch = Batch(
        [prompt],
        store=store,
        cache=cache,
        log=log,
        context=context,
        memory=memory,
        schema_retries=schema_retries,
        request=request,
    )
    await batch.run(Single(1))
    outcome = batch.outcomes[0]
    assert outcome is not None
    if outcome.error is not None:
        raise outcome.error
    return outcome.completion
