"""What a question costs: model prices and the cost of an answer.

Where a model's price comes from, first match wins:

1. ``set_prices`` (``PizzaMagics.prices``): ``{"provider:model": {"input": USD per million
   tokens, "output": USD per million, and optionally "cached_input" and "cache_write" for the
   prompt tokens read from and written to the backend's prompt cache}}``; ``"provider:*"``
   prices every model of a provider, and a Pizzagpt model is named alone (``"gpt-4o-mini"``).
2. Local backends cost nothing and say ``"local"``: the Ollama, LM Studio, llama.cpp and vLLM
   presets and any server on a loopback address (the emulator, a model on this machine).
3. Pizzagpt (pizzagpt.it) charges nothing for its model: ``"free"``.
4. The ``genai-prices`` table, when that optional package is installed (the ``prices`` extra):
   its bundled data only; nothing is ever fetched at run time.
5. Anything else is ``"unpriced"``: its cost is unknown (None), never $0.

A cost is a ``Cost``: US dollars (None when unknown), how the model is priced, and for a cache
hit, which costs 0, what asking would have cost. An answer from a provider's Batch API costs
``batch_discount()`` of the online price (0.5 unless ``set_batch_discount``,
``PizzaMagics.batch_discount``, says otherwise) and says "batch". An answer whose backend
reported no token counts has an unknown cost unless its model is local or free. Estimates
before a batch, and the limits that stop one, are ``estimates``'.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigurationError

__all__ = [
    "Cost",
    "Pricing",
    "LOCAL_PROVIDERS",
    "check_prices",
    "cost_of",
    "format_usd",
    "is_local",
    "pricing_for",
    "set_prices",
]

logger = logging.getLogger(__name__)

#: Providers that run on this machine (the endpoint presets).
LOCAL_PROVIDERS = frozenset({"ollama", "lmstudio", "llamacpp", "vllm"})
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


@dataclass(frozen=True, slots=True)
class Cost:
    """What one exchange cost: ``usd`` (None when unknown), how its model is priced
    (``pricing``), and for a cache hit (which costs 0) what asking would have cost (``saved``)."""

    usd: float | None
    pricing: str
    saved: float | None = None
    cached: bool = False
    #: Whether it is a Batch API price (``batch_discount()`` of the online one).
    batch: bool = False

    def at_batch_price(self, share: float | None = None) -> Cost:
        """This cost through a provider's Batch API: ``share`` (``batch_discount()``) of it."""
        share = batch_discount() if share is None else share
        usd = None if self.usd is None else self.usd * share
        return Cost(usd, self.pricing, self.saved, self.cached, batch=True)

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
        return format_usd(self.usd) + (" (batch)" if self.batch else "")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"usd": self.usd, "pricing": self.pricing}
        if self.cached:
            out["saved"] = self.saved
        if self.batch:
            out["batch"] = True
        return out


@dataclass(frozen=True)
class Pricing:
    """How one model is priced: a status and, when priced, USD per million tokens."""

    status: str
    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None
    cache_write: float | None = None
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
        # Of the prompt's tokens, those read from the backend's prompt cache and those written
        # to it, where it says so.
        read = _part(usage.get("cache_read_input_tokens"), prompt)
        written = _part(usage.get("cache_creation_input_tokens"), prompt - read)
        if self.reference is not None:
            usd = _genai_cost(self.reference, prompt, read, written, completion)
            if usd is not None:
                return Cost(usd, PRICED)
        read_rate = self.input if self.cached_input is None else self.cached_input
        write_rate = self.input if self.cache_write is None else self.cache_write
        uncached = (prompt - read - written) * self.input
        usd = (uncached + read * read_rate + written * write_rate + completion * self.output) / 1e6
        return Cost(usd, PRICED)

    def estimate(self, input_tokens: float, output_tokens: float) -> float | None:
        """Dollars for that many tokens (at the uncached rate); None when unpriced."""
        if self.status in (LOCAL, FREE):
            return 0.0
        if self.status == UNPRICED:
            return None
        return (input_tokens * self.input + output_tokens * self.output) / 1e6


#: The share of the online price a provider's Batch API charges.
_batch_share = 0.5


def batch_discount() -> float:
    """The share of the online price an answer from a provider's Batch API costs."""
    return _batch_share


def set_batch_discount(share: float) -> None:
    """Set ``batch_discount()``: more than 0, at most 1 (``PizzaMagics.batch_discount``)."""
    global _batch_share
    if not 0 < share <= 1:
        raise ConfigurationError(
            "batch_discount is the share of the online price: above 0, up to 1"
        )
    _batch_share = float(share)


def _part(count: Any, whole: int) -> int:
    """A reported share of ``whole`` tokens (0 when not reported), never more than it."""
    return min(count, whole) if isinstance(count, int) and count > 0 else 0


#: The cost of every answer of a local, free or unpriced model.
_FIXED_COSTS = {LOCAL: Cost(0.0, LOCAL), FREE: Cost(0.0, FREE), UNPRICED: Cost(None, UNPRICED)}


# -- prices ------------------------------------------------------------------------------------

_prices: dict[str, Pricing] = {}
_prices_lock = threading.Lock()


def set_prices(prices: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Prices that win over the table: ``{"provider:model": {"input": USD per million tokens,
    "output": USD per million, "cached_input" and "cache_write": optional}}`` (``"provider:*"``
    for every model of a provider). Replaces the prices set before; raises
    ``ConfigurationError`` on a bad entry."""
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
    unknown = set(entry) - {"input", "output", "cached_input", "cache_write"}
    if unknown:
        raise ConfigurationError(
            f"The price of {name!r} has unknown keys {sorted(unknown)}; it takes input, output "
            "cached_input and cache_write (USD per million tokens)"
        )
    rates = {}
    for key in ("input", "output", "cached_input", "cache_write"):
        value = entry.get(key)
        if value is None and key in ("cached_input", "cache_write"):
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
    return Pricing(
        PRICED,
        rates["input"],
        rates["output"],
        rates.get("cached_input"),
        rates.get("cache_write"),
        "prices",
    )


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
        return Pricing(
            PRICED, per_million[0], per_million[1], None, None, "genai-prices", reference
        )
    return None


def _genai_price(prices: Any, reference: tuple[str, str | None, str | None], usage: Any) -> float:
    model, provider_id, url = reference
    if provider_id is not None:
        result = prices.calc_price(usage, model, provider_id=provider_id)
    else:
        result = prices.calc_price(usage, model, provider_api_url=url)
    return float(result.total_price)


def _genai_cost(
    reference: tuple[str, str | None, str | None],
    prompt: int,
    read: int,
    written: int,
    completion: int,
) -> float | None:
    prices = _genai()
    if prices is None:
        return None
    try:
        usage = prices.Usage(
            input_tokens=prompt,
            cache_read_tokens=read or None,
            cache_write_tokens=written or None,
            output_tokens=completion,
        )
        return _genai_price(prices, reference, usage)
    except Exception:  # noqa: BLE001 - fall back to the per-million rates
        logger.debug("genai-prices failed for %s", reference, exc_info=True)
        return None
