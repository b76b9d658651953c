"""Before a batch: what it will send and cost; while it runs: the limits that stop it.

An ``Estimate`` counts the distinct prompts not yet answered, their input tokens (the characters
of the messages over the characters a token of the model's newest logged answers, 4 when the log
has none: no tokenizer is downloaded), their output tokens (``max_tokens``, else the model's
average logged answer, else ``DEFAULT_OUTPUT_TOKENS``) and the dollars at the model's price
(``cost.pricing_for``). ``Estimator`` makes them request by request, reading each model's log
once; ``estimate_batch`` does it for message lists outside the batch engine.

A ``Budget`` keeps a running total under a limit: ``reserve`` before a request starts (at its
estimate, and ``HEADROOM`` more), ``settle`` when it ends (at its cost); ``Limits`` holds several
(a batch's ``max_cost`` and the kernel's budget). No request starts that could take what is spent
plus what is in flight past a limit; the stop is a ``BudgetExceededError`` naming what was spent
and the limit.

An estimate of a batch sent through a provider's Batch API (``--estimate --batch-api``,
``estimate_many(..., batch_api=True)``) has both prices: ``usd``, online, and ``batch_usd``,
``batch_share`` (``PizzaMagics.batch_discount``) of it, shown side by side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .cost import FREE, LOCAL, PRICED, UNPRICED, Pricing, format_usd, pricing_for
from .errors import BudgetExceededError, ConfigurationError

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_OUTPUT_TOKENS",
    "HEADROOM",
    "Budget",
    "Estimate",
    "Estimator",
    "Limits",
    "estimate_batch",
    "estimate_tokens",
]

#: Characters a token when the log has nothing to learn the ratio from.
CHARS_PER_TOKEN = 4.0


def estimate_tokens(characters: int, chars_per_token: float | None = None) -> int:
    """Tokens in text of that many characters, at ``chars_per_token`` (default 4)."""
    ratio = chars_per_token if chars_per_token and chars_per_token > 0 else CHARS_PER_TOKEN
    return math.ceil(characters / ratio) if characters > 0 else 0


@dataclass
class Estimate:
    """What a batch is expected to take before it runs: distinct prompts, those already in the
    store, and the requests left with their input and output tokens and cost."""

    model: str
    prompts: int
    distinct: int
    stored: int
    input_tokens: int
    output_tokens: int
    usd: float | None
    pricing: str
    #: Characters a token used for the input (learned from the log, or the default).
    chars_per_token: float = CHARS_PER_TOKEN
    #: Where the output figure came from: ``max_tokens``, ``log average`` or ``none``.
    output_from: str = "none"
    #: Requests when the prompts travel several to a request (None: one a prompt).
    packed: int | None = None
    #: Through a provider's Batch API: the share of the online price paid, and the dollars
    #: (None for an estimate of online requests, or, for ``batch_usd``, an unpriced model).
    batch_share: float | None = None
    batch_usd: float | None = None

    def at_batch_price(self, share: float | None = None) -> Estimate:
        """This estimate with the Batch API's price beside the online one: ``share`` of it
        (``cost.batch_discount()`` by default). Returns itself."""
        from .cost import batch_discount

        self.batch_share = batch_discount() if share is None else share
        self.batch_usd = None if self.usd is None else self.usd * self.batch_share
        return self

    @property
    def batch(self) -> bool:
        """Whether it estimates a batch sent through a provider's Batch API."""
        return self.batch_share is not None

    @property
    def requests(self) -> int:
        """Requests the batch would send: distinct prompts not in the store (fewer, packed)."""
        return self.packed if self.packed is not None else self.distinct - self.stored

    @property
    def cost_label(self) -> str:
        """The online cost: dollars, or ``local``, ``free``, ``unpriced``."""
        if self.pricing in (LOCAL, FREE):
            return self.pricing
        if self.usd is None:
            return UNPRICED
        return format_usd(self.usd)

    @property
    def batch_cost_label(self) -> str | None:
        """The cost through the Batch API, as ``cost_label`` says it (None: not a batch)."""
        if not self.batch:
            return None
        if self.pricing in (LOCAL, FREE):
            return self.pricing
        if self.batch_usd is None:
            return UNPRICED
        return format_usd(self.batch_usd)

    def _costs(self) -> str:
        """The cost, or with the Batch API both prices side by side."""
        if not self.batch:
            return f"cost {self.cost_label}"
        assert self.batch_share is not None
        return (
            f"cost {self.cost_label} online, {self.batch_cost_label} through the Batch API "
            f"({self.batch_share:.0%} of the online price)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompts": self.prompts,
            "distinct": self.distinct,
            "stored": self.stored,
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "usd": self.usd,
            "pricing": self.pricing,
            "chars_per_token": round(self.chars_per_token, 3),
            "output_from": self.output_from,
            **(
                {"batch_usd": self.batch_usd, "batch_share": self.batch_share} if self.batch else {}
            ),
        }

    def line(self) -> str:
        """The estimate in one line."""
        stored = f", {self.stored} already in the store" if self.stored else ""
        repeated = self.prompts - self.distinct
        repeats = f", {repeated} repeated" if repeated else ""
        output = (
            f"~{self.output_tokens:,} output tokens ({self.output_from})"
            if self.output_from != "none"
            else "output tokens unknown"
        )
        return (
            f"Estimate for {self.model}: {self.requests} requests to send of {self.prompts} "
            f"prompts{repeats}{stored}; ~{self.input_tokens:,} input tokens "
            f"({self.chars_per_token:.2f} characters a token), {output}; {self._costs()}"
        )

    def markdown(self) -> str:
        """The estimate as Markdown: the line, and with the Batch API a table of both
        prices."""
        line = _markdown_text(self.line())
        if not self.batch:
            return line
        return (
            f"{line}\n\n| | requests | cost |\n|---|---:|---:|\n"
            f"| online | {self.requests:,} | {_markdown_text(self.cost_label)} |\n"
            f"| Batch API ({self.batch_share:.0%}) | {self.requests:,} | "
            f"{_markdown_text(self.batch_cost_label or '')} |\n"
        )

    def __repr__(self) -> str:
        return self.line()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from .render import escape

        return {
            "text/plain": self.line(),
            "text/markdown": self.markdown(),
            "text/html": f"<p>{escape(self.line())}</p>",
        }


def _markdown_text(text: str) -> str:
    """Text as Markdown shows it: HTML escaped, and no ``$`` that a notebook would take for
    mathematics, no ``|`` that would end a table cell."""
    from .render import escape

    return escape(text).replace("$", "\\$").replace("|", "\\|")


#: Output tokens an estimate assumes when there is no ``max_tokens`` and the log has no answer
#: of the model to take the average of.
DEFAULT_OUTPUT_TOKENS = 256


class Estimator:
    """Request-by-request estimates against one store: what each model's log says (characters
    a token, average answer) is read once per model."""

    def __init__(self, store: Any = None) -> None:
        self.store = store
        self._models: dict[tuple[str, str, str | None], tuple[Pricing, float | None, Any]] = {}
        #: How the output was estimated, per model id: ``max_tokens``, ``log average``, or the
        #: default.
        self.output_from: dict[str, str] = {}

    def _model(self, backend: Any, base_url: str | None) -> tuple[Pricing, float | None, Any]:
        from .engine.keys import origin_of

        origin = origin_of(backend, base_url)
        key = (backend.provider, backend.model, origin)
        found = self._models.get(key)
        if found is None:
            ratio, average = (None, None)
            if self.store is not None:
                ratio, average = self.store.token_stats(backend.provider, backend.model)
            pricing = pricing_for(backend.provider, backend.model, origin)
            found = self._models[key] = (pricing, ratio, average)
        return found

    def rates(
        self, backend: Any, max_tokens: int | None = None, base_url: str | None = None
    ) -> tuple[Pricing, float, int]:
        """``(pricing, characters a token, output tokens a request)`` of ``backend``."""
        pricing, ratio, average = self._model(backend, base_url)
        name = _model_id(backend)
        if max_tokens is not None:
            output = max_tokens
            self.output_from.setdefault(name, "max_tokens")
        elif average is not None:
            output = math.ceil(average)
            self.output_from.setdefault(name, "log average")
        else:
            output = DEFAULT_OUTPUT_TOKENS
            self.output_from.setdefault(name, f"default {DEFAULT_OUTPUT_TOKENS}")
        return pricing, ratio or CHARS_PER_TOKEN, output

    def request(
        self,
        backend: Any,
        messages: Any,
        max_tokens: int | None = None,
        base_url: str | None = None,
    ) -> tuple[int, int, float | None]:
        """``(input tokens, output tokens, dollars)`` of one request (dollars None when the
        model is unpriced)."""
        pricing, ratio, output = self.rates(backend, max_tokens, base_url)
        tokens = estimate_tokens(_characters(messages), ratio)
        return tokens, output, pricing.estimate(tokens, output)

    def estimate(
        self,
        requests: Sequence[tuple[Any, Any, int | None, str | None]],
        *,
        prompts: int,
        distinct: int,
        stored: int,
    ) -> Estimate:
        """The ``Estimate`` of sending ``requests`` (``(backend, messages, max_tokens,
        base_url)``, one a distinct prompt not yet answered) out of ``prompts`` in all. The
        characters of a model's requests are added up before they become tokens."""
        models: dict[tuple[str, str, str | None], list[Any]] = {}
        for backend, messages, max_tokens, base_url in requests:
            pricing, ratio, output = self.rates(backend, max_tokens, base_url)
            key = (backend.provider, backend.model, base_url)
            found = models.setdefault(key, [backend, pricing, ratio, 0, 0])
            found[3] += _characters(messages)
            found[4] += output
        input_total = output_total = 0
        usd: float | None = 0.0
        statuses = set()
        names: list[str] = []
        for backend, pricing, ratio, characters, outputs in models.values():
            tokens = estimate_tokens(characters, ratio)
            input_total += tokens
            output_total += outputs
            dollars = pricing.estimate(tokens, outputs)
            usd = None if usd is None or dollars is None else usd + dollars
            statuses.add(pricing.status)
            name = _model_id(backend)
            if name not in names:
                names.append(name)
        for status in (UNPRICED, PRICED, LOCAL, FREE):
            if status in statuses:
                break
        else:
            status = PRICED
        ratios = {found[2] for found in models.values()}
        return Estimate(
            model=", ".join(names) or "nothing",
            prompts=prompts,
            distinct=distinct,
            stored=stored,
            input_tokens=input_total,
            output_tokens=output_total,
            usd=usd,
            pricing=status,
            chars_per_token=ratios.pop() if len(ratios) == 1 else CHARS_PER_TOKEN,
            output_from="; ".join(dict.fromkeys(self.output_from[n] for n in names)) or "none",
        )


def _characters(messages: Any) -> int:
    from .images import content_text

    return sum(len(content_text(m["content"])) for m in messages)


def estimate_batch(
    backend: Any,
    requests: Sequence[Any],
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    store: Any = None,
    base_url: str | None = None,
    answered: Callable[[str], bool] | None = None,
) -> tuple[Estimate, list[float | None]]:
    """The ``Estimate`` of sending ``requests`` (message lists) to ``backend``, and each
    request's own estimated cost (0 for one already answered, None when unpriced).

    A request is answered when ``store`` has its key (or ``answered(key)`` says so). Input tokens
    are the characters of its messages over the characters a token of the model's newest logged
    answers (4 without any); output tokens are ``max_tokens``, else the model's average logged
    answer, else ``DEFAULT_OUTPUT_TOKENS``."""
    from .engine.keys import origin_of, parameters_of
    from .store import request_key

    estimator = Estimator(store)
    parameters = parameters_of(temperature, max_tokens)
    provider = f"{backend.provider}@{origin_of(backend, base_url)}"
    seen: dict[str, bool] = {}
    each: list[float | None] = []
    pending = []
    for messages in requests:
        key = request_key(provider, backend.model, parameters, messages)
        done = seen.get(key)
        if done is None:
            done = bool(store is not None and store.has(key)) or bool(answered and answered(key))
            seen[key] = done
            if not done:
                pending.append((backend, messages, max_tokens, base_url))
        # A repeat is counted at full cost too: with requests in flight at once, the first
        # may not have answered before the repeat is sent.
        each.append(0.0 if done else estimator.request(backend, messages, max_tokens, base_url)[2])
    estimate = estimator.estimate(
        pending,
        prompts=len(requests),
        distinct=len(seen),
        stored=sum(seen.values()),
    )
    if not pending:
        estimate.model = _model_id(backend)
        estimate.pricing = pricing_for(
            backend.provider, backend.model, origin_of(backend, base_url)
        ).status
        if estimate.pricing == UNPRICED:
            estimate.usd = None
    return estimate, each


def _model_id(backend: Any) -> str:
    from .backends import model_id

    return model_id(backend.provider, backend.model)


#: A request in flight is counted at its estimate and this share more: an estimate is made from
#: characters and averages, and the last requests let start must not take the total past the
#: limit when they come out a little dearer.
HEADROOM = 0.1


class Budget:
    """A cost limit over many requests: ``reserve`` before a request starts (at its estimate),
    ``settle`` when it ends (at its cost). No request is let start that could take what is spent
    plus what is in flight (each at its estimate and ``HEADROOM`` more) past the limit."""

    def __init__(self, limit: float, spent: float = 0.0, *, what: str = "the limit") -> None:
        if not limit >= 0:
            raise ConfigurationError(f"A cost limit must be 0 or more dollars, not {limit!r}")
        self.limit = float(limit)
        self.spent = float(spent)
        self.in_flight = 0.0
        self.what = what
        self.stopped = False

    def reserve(self, estimate: float) -> bool:
        """Whether a request estimated at ``estimate`` may start; if so it is counted as in
        flight. After a refusal nothing more starts."""
        if self.stopped:
            return False
        if not self.fits(estimate):
            self.stopped = True
            return False
        self.in_flight += estimate * (1 + HEADROOM)
        return True

    def fits(self, estimate: float) -> bool:
        """Whether a request estimated at ``estimate`` may start now."""
        counted = estimate * (1 + HEADROOM)
        return self.spent + self.in_flight + counted <= self.limit + 1e-12

    def settle(self, estimate: float, usd: float | None) -> None:
        """A request reserved at ``estimate`` ended, having cost ``usd`` (None: unknown, so
        counted as reserved)."""
        counted = estimate * (1 + HEADROOM)
        self.in_flight = max(0.0, self.in_flight - counted)
        self.spent += counted if usd is None else usd

    def error(self, kept: int | None = None, total: int | None = None, where: str = "") -> Any:
        """The ``BudgetExceededError`` saying what was spent and the limit."""
        answers = ""
        if kept is not None and total is not None:
            answers = f"; {kept} of {total} answers kept{where}"
        return BudgetExceededError(
            f"Stopped at {self.what}: {format_usd(self.spent)} spent of "
            f"{format_usd(self.limit)}{answers}; run it again with a higher limit to ask only "
            "for the rest",
            spent=self.spent,
            limit=self.limit,
        )


class Limits:
    """Several ``Budget``s at once (a batch's ``max_cost`` and the kernel's budget): a request
    starts only when every one lets it; the first to refuse names the stop."""

    def __init__(self, budgets: Sequence[Budget]) -> None:
        self.budgets = list(budgets)
        self.stopper: Budget | None = None

    @property
    def stopped(self) -> bool:
        return self.stopper is not None

    def reserve(self, estimate: float) -> bool:
        if self.stopper is not None:
            return False
        for budget in self.budgets:
            if not budget.fits(estimate):
                budget.stopped = True
                self.stopper = budget
                return False
        for budget in self.budgets:
            budget.in_flight += estimate * (1 + HEADROOM)
        return True

    def settle(self, estimate: float, usd: float | None) -> None:
        for budget in self.budgets:
            budget.settle(estimate, usd)

    def error(self, kept: int | None = None, total: int | None = None, where: str = "") -> Any:
        budget = self.stopper or self.budgets[0]
        return budget.error(kept, total, where)
