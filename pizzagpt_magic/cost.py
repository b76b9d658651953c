"""What a question costs: model prices, the cost of an answer, and estimates before a batch.

Where a model's price comes from, first match wins:

1. ``set_prices`` (``PizzaMagics.prices``): ``{"provider:model": {"input": USD per million
   tokens, "output": USD per million, "cached_input": optional}}``; ``"provider:*"`` prices every
   model of a provider, and a Pizzagpt model is named alone (``"gpt-4o-mini"``).
2. Local backends cost nothing and say ``"local"``: the Ollama, LM Studio and llama.cpp presets
   and any server on a loopback address (the emulator, a model on this machine).
3. Pizzagpt (pizzagpt.it) charges nothing for its model: ``"free"``.
4. The ``genai-prices`` table, when that optional package is installed (the ``prices`` extra):
   its bundled data only; nothing is ever fetched at run time.
5. Anything else is ``"unpriced"``: its cost is unknown (None), never $0.

A cost is a ``Cost``: US dollars (None when unknown), how the model is priced, and for a cache
hit, which costs 0, what asking would have cost. An answer whose backend reported no token counts
has an unknown cost unless its model is local or free.

Estimates (``estimate_tokens``, ``Estimate``) turn text into input tokens by characters over a
ratio learned from the store's log for that model (4 characters a token when the log has none);
no tokenizer is downloaded. ``Budget`` keeps a running total under a limit, counting the requests
in flight at their estimate.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import BudgetExceededError, ConfigurationError

__all__ = [
    "Budget",
    "Cost",
    "Limits",
    "estimate_batch",
    "Estimate",
    "Estimator",
    "Pricing",
    "CHARS_PER_TOKEN",
    "LOCAL_PROVIDERS",
    "cost_of",
    "estimate_tokens",
    "format_usd",
    "pricing_for",
    "set_prices",
]

logger = logging.getLogger(__name__)

#: Characters a token when the log has nothing to learn the ratio from.
CHARS_PER_TOKEN = 4.0
#: Providers that run on this machine (the endpoint presets).
LOCAL_PROVIDERS = frozenset({"ollama", "lmstudio", "llamacpp"})
#: The ways a model is priced.
PRICED, LOCAL, FREE, UNPRICED = "priced", "local", "free", "unpriced"
#: A priced model whose backend did not report token counts: the cost is unknown.
UNREPORTED = "usage not reported"
PIZZAGPT = "pizzagpt"


def format_usd(usd: float) -> str:
    """Dollars to read: ``$0``, ``$0.000210``, ``$0.0123``, ``$12.35``."""
    if usd == 0:
        return "$0"
    if abs(usd) >= 100:
        return f"${usd:,.2f}"
    if abs(usd) >= 0.01:
        return f"${usd:.4f}"
    return f"${usd:.6f}"


@dataclass(frozen=True)
class Cost:
    """What one exchange cost: ``usd`` (None when unknown), how its model is priced
    (``pricing``), and for a cache hit (which costs 0) what asking would have cost (``saved``)."""

    usd: float | None
    pricing: str
    saved: float | None = None
    cached: bool = False

    def hit(self) -> Cost:
        """This cost as a cache hit: nothing spent, this much saved."""
        if self.cached:
            return self
        return Cost(0.0, self.pricing, self.usd, cached=True)

    @property
    def label(self) -> str:
        """``$0.000210``, ``local``, ``free``, ``unpriced``; a hit says what it saved."""
        if self.cached:
            saved = f", saved {format_usd(self.saved)}" if self.saved else ""
            return f"from the cache: $0{saved}"
        if self.pricing in (LOCAL, FREE):
            return self.pricing
        if self.usd is None:
            return self.pricing
        return format_usd(self.usd)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"usd": self.usd, "pricing": self.pricing}
        if self.cached:
            out["saved"] = self.saved
        return out


@dataclass(frozen=True)
class Pricing:
    """How one model is priced: a status and, when priced, USD per million tokens."""

    status: str
    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None
    #: Where the price came from: ``prices`` (set_prices) or ``genai-prices``.
    source: str = ""
    #: For genai-prices: the model and provider (or API URL) it knows the model by.
    reference: tuple[str, str | None, str | None] | None = field(default=None, compare=False)

    @property
    def known(self) -> bool:
        """Whether a cost can be said in dollars (priced, local or free)."""
        return self.status != UNPRICED

    def cost(self, usage: Mapping[str, Any] | None) -> Cost:
        """The cost of an answer with this ``usage`` (token counts as the backend gave them)."""
        if self.status != PRICED:  # the same answer every time: made once
            return _FIXED_COSTS[self.status]
        usage = usage or {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return Cost(None, UNREPORTED)
        cached = usage.get("cached_tokens")
        cached = min(cached, prompt) if isinstance(cached, int) and cached > 0 else 0
        if self.reference is not None:
            usd = _genai_cost(self.reference, prompt, cached, completion)
            if usd is not None:
                return Cost(usd, PRICED)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        uncached = (prompt - cached) * self.input
        usd = (uncached + cached * cached_rate + completion * self.output) / 1e6
        return Cost(usd, PRICED)

    def estimate(self, input_tokens: float, output_tokens: float) -> float | None:
        """Dollars for that many tokens (at the uncached rate); None when unpriced."""
        if self.status in (LOCAL, FREE):
            return 0.0
        if self.status == UNPRICED:
            return None
        return (input_tokens * self.input + output_tokens * self.output) / 1e6


#: The cost of every answer of a local, free or unpriced model.
_FIXED_COSTS = {LOCAL: Cost(0.0, LOCAL), FREE: Cost(0.0, FREE), UNPRICED: Cost(None, UNPRICED)}


# -- prices ------------------------------------------------------------------------------------

_prices: dict[str, Pricing] = {}
_prices_lock = threading.Lock()


def set_prices(prices: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Prices that win over the table: ``{"provider:model": {"input": USD per million tokens,
    "output": USD per million, "cached_input": optional}}`` (``"provider:*"`` for every model of
    a provider). Replaces the prices set before; raises ``ConfigurationError`` on a bad entry."""
    checked = {}
    for name, entry in (prices or {}).items():
        checked[_normal_name(name)] = _check_price(name, entry)
    with _prices_lock:
        _prices.clear()
        _prices.update(checked)
        pricing_for.cache_clear()


def check_prices(prices: Mapping[str, Any]) -> None:
    """Raise ``ConfigurationError`` unless ``prices`` has the form ``set_prices`` takes."""
    if not isinstance(prices, Mapping):
        raise ConfigurationError("prices must be a dict of 'provider:model' to prices")
    for name, entry in prices.items():
        _check_price(name, entry)


def _normal_name(name: str) -> str:
    provider, _, model = str(name).partition(":")
    return f"{provider}:{model}" if model else f"{PIZZAGPT}:{provider}"


def _check_price(name: Any, entry: Any) -> Pricing:
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"A price needs a 'provider:model' name, not {name!r}")
    if not isinstance(entry, Mapping):
        raise ConfigurationError(
            f"The price of {name!r} must be a dict such as {{'input': 0.15, 'output': 0.6}} "
            "(USD per million tokens)"
        )
    unknown = set(entry) - {"input", "output", "cached_input"}
    if unknown:
        raise ConfigurationError(
            f"The price of {name!r} has unknown keys {sorted(unknown)}; it takes input, output "
            "and cached_input (USD per million tokens)"
        )
    rates = {}
    for key in ("input", "output", "cached_input"):
        value = entry.get(key)
        if value is None and key == "cached_input":
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise ConfigurationError(
                f"The price of {name!r} needs {key!r} as a number of USD per million tokens "
                f"(0 or more), not {value!r}"
            )
        rates[key] = float(value)
    return Pricing(PRICED, rates["input"], rates["output"], rates.get("cached_input"), "prices")


def is_local(provider: str, origin: str | None) -> bool:
    """Whether answers come from this machine: a local preset, or a loopback address."""
    if provider in LOCAL_PROVIDERS:
        return True
    if not origin or "://" not in origin:
        return False
    try:
        host = urlsplit(origin).hostname
    except ValueError:
        return False
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=256)
def pricing_for(provider: str, model: str, origin: str | None = None) -> Pricing:
    """How ``provider:model`` is priced; ``origin`` is where it answers from (a URL)."""
    own = _prices.get(f"{provider}:{model}") or _prices.get(f"{provider}:*")
    if own is not None:
        return own
    if is_local(provider, origin):
        return Pricing(LOCAL)
    if provider == PIZZAGPT:
        return Pricing(FREE)
    return _genai_pricing(provider, model, origin) or Pricing(UNPRICED)


def cost_of(
    usage: Mapping[str, Any] | None, provider: str, model: str, origin: str | None = None
) -> Cost:
    """The cost of one answer of ``provider:model`` with ``usage``."""
    return pricing_for(provider, model, origin).cost(usage)


# -- genai-prices (optional) -------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _genai() -> Any:
    """The genai-prices module, or None when it is not installed. Only its bundled data is
    used: its ``UpdatePrices`` (the one thing in it that fetches) is never started."""
    try:
        import genai_prices
    except ImportError:
        return None
    return genai_prices


def _genai_pricing(provider: str, model: str, origin: str | None) -> Pricing | None:
    prices = _genai()
    if prices is None:
        return None
    url = origin if origin and "://" in origin else None
    for reference in ((model, provider, None), (model, None, url)):
        if reference[1] is None and reference[2] is None:
            continue
        try:
            per_million = [
                _genai_price(prices, reference, usage)
                for usage in (
                    prices.Usage(input_tokens=1_000_000),
                    prices.Usage(output_tokens=1_000_000),
                )
            ]
        except LookupError:
            continue
        except Exception:  # noqa: BLE001 - a table that cannot price a model leaves it unpriced
            logger.debug("genai-prices failed for %s:%s", provider, model, exc_info=True)
            continue
        return Pricing(PRICED, per_million[0], per_million[1], None, "genai-prices", reference)
    return None


def _genai_price(prices: Any, reference: tuple[str, str | None, str | None], usage: Any) -> float:
    model, provider_id, url = reference
    if provider_id is not None:
        result = prices.calc_price(usage, model, provider_id=provider_id)
    else:
        result = prices.calc_price(usage, model, provider_api_url=url)
    return float(result.total_price)


def _genai_cost(
    reference: tuple[str, str | None, str | None], prompt: int, cached: int, completion: int
) -> float | None:
    prices = _genai()
    if prices is None:
        return None
    try:
        usage = prices.Usage(
            input_tokens=prompt, cache_read_tokens=cached or None, output_tokens=completion
        )
        return _genai_price(prices, reference, usage)
    except Exception:  # noqa: BLE001 - fall back to the per-million rates
        logger.debug("genai-prices failed for %s", reference, exc_info=True)
        return None


# -- estimates ---------------------------------------------------------------------------------


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

    @property
    def requests(self) -> int:
        """Requests the batch would send: distinct prompts not in the store."""
        return self.distinct - self.stored

    @property
    def cost_label(self) -> str:
        if self.pricing in (LOCAL, FREE):
            return self.pricing
        if self.usd is None:
            return UNPRICED
        return format_usd(self.usd)

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
            f"({self.chars_per_token:.2f} characters a token), {output}; "
            f"cost {self.cost_label}"
        )

    def __repr__(self) -> str:
        return self.line()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from .render import escape

        return {"text/plain": self.line(), "text/html": f"<p>{escape(self.line())}</p>"}


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

    def request(
        self,
        backend: Any,
        messages: Any,
        max_tokens: int | None = None,
        base_url: str | None = None,
    ) -> tuple[int, int, float | None]:
        """``(input tokens, output tokens, dollars)`` of one request (dollars None when the
        model is unpriced)."""
        from .images import content_text

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
        characters = sum(len(content_text(m["content"])) for m in messages)
        tokens = estimate_tokens(characters, ratio)
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
        base_url)``, one a distinct prompt not yet answered) out of ``prompts`` in all."""
        input_total = output_total = 0
        usd: float | None = 0.0
        statuses = set()
        names: list[str] = []
        ratios = []
        for backend, messages, max_tokens, base_url in requests:
            tokens, output, dollars = self.request(backend, messages, max_tokens, base_url)
            input_total += tokens
            output_total += output
            usd = None if usd is None or dollars is None else usd + dollars
            pricing, ratio, _ = self._model(backend, base_url)
            statuses.add(pricing.status)
            ratios.append(ratio or CHARS_PER_TOKEN)
            name = _model_id(backend)
            if name not in names:
                names.append(name)
        for status in (UNPRICED, PRICED, LOCAL, FREE):
            if status in statuses:
                break
        else:
            status = PRICED
        return Estimate(
            model=", ".join(names) or "nothing",
            prompts=prompts,
            distinct=distinct,
            stored=stored,
            input_tokens=input_total,
            output_tokens=output_total,
            usd=usd,
            pricing=status,
            chars_per_token=ratios[0] if len(set(ratios)) == 1 else CHARS_PER_TOKEN,
            output_from="; ".join(dict.fromkeys(self.output_from[n] for n in names)) or "none",
        )


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


# -- budgets -----------------------------------------------------------------------------------


class Budget:
    """A cost limit over many requests: ``reserve`` before a request starts (at its estimate),
    ``settle`` when it ends (at its cost). No request is let start that could take what is spent
    plus what is in flight past the limit."""

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
        if self.spent + self.in_flight + estimate > self.limit + 1e-12:
            self.stopped = True
            return False
        self.in_flight += estimate
        return True

    def settle(self, estimate: float, usd: float | None) -> None:
        """A request reserved at ``estimate`` ended, having cost ``usd`` (None: unknown, so
        counted at its estimate)."""
        self.in_flight = max(0.0, self.in_flight - estimate)
        self.spent += estimate if usd is None else usd

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
            if budget.spent + budget.in_flight + estimate > budget.limit + 1e-12:
                budget.stopped = True
                self.stopper = budget
                return False
        for budget in self.budgets:
            budget.in_flight += estimate
        return True

    def settle(self, estimate: float, usd: float | None) -> None:
        for budget in self.budgets:
            budget.settle(estimate, usd)

    def error(self, kept: int | None = None, total: int | None = None, where: str = "") -> Any:
        budget = self.stopper or self.budgets[0]
        return budget.error(kept, total, where)
