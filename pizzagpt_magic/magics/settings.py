"""``PizzaMagics``' settings: every configurable trait of ``%pizza`` and its validation.

``PizzaMagics`` inherits them, so ``%config PizzaMagics.x = ...`` and ``c.PizzaMagics.x`` in
``ipython_config.py`` set them.
"""

from __future__ import annotations

from typing import Any

from IPython.core.magic import Magics
from traitlets import (
    Bool,
    CaselessStrEnum,
    Dict,
    Float,
    Int,
    TraitError,
    Unicode,
    Union,
    observe,
    validate,
)

from ..formats import FORMATS

__all__ = ["PizzaSettings"]


class PizzaSettings(Magics):
    """The configurable settings of ``%pizza``."""

    model = Unicode(
        "gpt-4o-mini",
        help="Model used when -m/--model is not given: a Pizzagpt model (gpt-4o-mini), "
        "PROVIDER:MODEL (ollama:llama3.2, openai:gpt-4o-mini, a name in endpoints) or "
        "package.module.ProviderClass[:MODEL].",
    ).tag(config=True)
    endpoints = Dict(
        help="Endpoints added to the presets (anthropic, openai, ollama, gemini, ...; "
        '--models lists them): {"name": {"base_url": "http://host:port/v1", "api_key_env": '
        '"VARIABLE"}}, with "api": "anthropic" for one that speaks the Messages API; a same '
        "name replaces a preset. Keys are read from the variables only.",
    ).tag(config=True)
    temperature = Float(
        None, allow_none=True, help="Sampling temperature; None leaves it to the backend."
    ).tag(config=True)
    max_tokens = Int(
        None, allow_none=True, help="Longest answer in tokens; None leaves it to the backend."
    ).tag(config=True)
    options = Dict(
        help="Model options sent with every question to backends that take them (OpenAI-"
        'compatible endpoints), below those of an alias, a saved prompt and -O: {"seed": 7}.',
    ).tag(config=True)
    stream = Bool(
        True, help="Show answers of backends that stream (the endpoints) as they arrive."
    ).tag(config=True)
    format = CaselessStrEnum(
        FORMATS,
        default_value="markdown",
        help="How answers are shown when -f/--format is not given: markdown, text, code or json.",
    ).tag(config=True)
    system = Unicode(
        "", help="System message sent with every question unless -s/--system replaces it."
    ).tag(config=True)
    base_url = Unicode(
        None,
        allow_none=True,
        help="Base URL of the service; None means $PIZZAGPT_URL, else https://www.pizzagpt.it.",
    ).tag(config=True)
    timeout = Float(
        60.0,
        help="Seconds one request may take (each retry has its own); a streamed answer may go "
        "this long without content (keep-alive comments do not count).",
    ).tag(config=True)
    connect_timeout = Float(10.0, help="Seconds allowed for making a connection.").tag(config=True)
    retries = Int(
        3,
        help="Retries of a request on 429, 502, 503, 504 and connection failures "
        "(OpenAI-compatible and Anthropic endpoints also on 408, 409 and 500, Anthropic's on "
        "529), 0 to 10.",
    ).tag(config=True)
    schema_retries = Int(
        1,
        help="How many times an answer that does not fit its --schema is asked again with the "
        "validation error (0 to 5).",
    ).tag(config=True)
    proxy = Unicode(
        None,
        allow_none=True,
        help="Proxy URL (http:// or https://); None means the standard proxy variables.",
    ).tag(config=True)
    cache = Bool(
        True, help="Answer a repeated identical question from memory, else from the store."
    ).tag(config=True)
    cache_size = Int(128, help="How many answers the memory cache keeps (at least 1).").tag(
        config=True
    )
    store = Unicode(
        None,
        allow_none=True,
        help="Path of the SQLite store that keeps answers across kernels (cache and log); "
        "None means the default file in the user data directory, '' turns the store off. "
        "$PIZZAGPT_STORE, when set, wins.",
    ).tag(config=True)
    cache_max_mb = Float(200.0, help="Size limit of the store's cache, in MB.").tag(config=True)
    log = Bool(
        True, help="Append every exchange to the store's log (also off with PIZZAGPT_LOG=0)."
    ).tag(config=True)
    answers = Unicode(
        None,
        allow_none=True,
        help="Answer file (JSON Lines, relative to the kernel's working directory) read before "
        "the store and written with every answer; None means $PIZZAGPT_ANSWERS, else none.",
    ).tag(config=True)
    answers_only = Bool(
        False,
        help="Answers come only from the answer file; a question not in it fails and nothing "
        "is sent (also on with PIZZAGPT_ANSWERS_ONLY=1).",
    ).tag(config=True)
    history_length = Int(
        20, help="How many exchanges the conversation keeps for -c/--chat (0 keeps none)."
    ).tag(config=True)
    interpolate = Bool(
        True, help="Replace {name}, {name.attr} and {name[key]} in prompts with values."
    ).tag(config=True)
    progress = Bool(
        True, help="Show a live placeholder while waiting, and a progress bar for --each."
    ).tag(config=True)
    value_budget = Int(
        4000, help="Characters an interpolated value may take in a prompt; tables are summarised."
    ).tag(config=True)
    max_prompt_chars = Int(
        100_000, help="Longest prompt (all messages) sent; a longer one is refused."
    ).tag(config=True)
    concurrency = Int(8, help="Requests in flight at once for --each batches.").tag(config=True)
    batch_max_requests = Int(
        None,
        allow_none=True,
        help="Most requests in one provider batch job (--batch-api); a larger batch is split "
        "into several jobs. None: the provider's limit (OpenAI 50,000, Anthropic 100,000).",
    ).tag(config=True)
    batch_poll = Float(
        3.0,
        help="Seconds before the first poll of a batch job (--batch-api); each wait is half as "
        "long again as the one before, up to a minute.",
    ).tag(config=True)
    pack = Unicode(
        None,
        allow_none=True,
        help="How many rows of a batch may share one request: a whole number (1: one row a "
        "request) or 'auto' (as many as fit); None means $PIZZAGPT_PACK, else 'auto'.",
    ).tag(config=True)
    prices = Dict(
        help='Model prices that win over the genai-prices table: {"provider:model": {"input": '
        'USD per million tokens, "output": USD per million, optional "cached_input" and '
        '"cache_write"}} '
        '("provider:*" for all of a provider\'s models; a Pizzagpt model named alone).',
    ).tag(config=True)
    batch_discount = Float(
        0.5,
        help="The share of the online price an answer from a provider's Batch API (--batch-api) "
        "costs: 0.5 for OpenAI, Groq and Anthropic.",
    ).tag(config=True)
    budget = Float(
        None,
        allow_none=True,
        help="Most this kernel may spend on answers, in USD; a question or batch that could go "
        "past it is not sent. None: no limit.",
    ).tag(config=True)
    image_max_side = Int(
        1024, help="Images in questions are scaled down to at most this many pixels a side."
    ).tag(config=True)
    image_max_bytes = Int(
        4_000_000, help="Largest image (as PNG, after scaling) a question may send, in bytes."
    ).tag(config=True)
    image_window = Int(
        16,
        help="Fewest items of an --each batch with images drawn ahead of the requests (at least "
        "twice the concurrency): images are drawn as their items are sent, not all first.",
    ).tag(config=True)
    max_answer_chars = Int(
        64 * 1024 * 1024,
        help="Longest answer taken from an OpenAI-compatible endpoint, in characters; a longer "
        "one stops there with an error, its text so far kept.",
    ).tag(config=True)
    max_event_bytes = Int(
        16 * 1024 * 1024,
        help="Largest single streamed event (one data line) taken from an OpenAI-compatible "
        "endpoint, in bytes; a larger one stops the answer there, its text so far kept.",
    ).tag(config=True)
    tools = Union(
        [Bool(), CaselessStrEnum(("question", "all"))],
        default_value=False,
        help="Let the model look at variables through read-only tools for every question: "
        "True or 'question' (the variables a question names), 'all' (every variable), False "
        "(only with --tools). Endpoints only: OpenAI-compatible ones and Anthropic's.",
    ).tag(config=True)
    tool_rounds = Int(
        5, help="Rounds of tool calls a question may take before its answer (1 to 50)."
    ).tag(config=True)
    fix_prompt = Unicode(
        "This notebook cell failed.\n\nThe cell:\n```python\n{source}\n```\n\n"
        "The error:\n```\n{error}\n```\n\n"
        "Explain the cause in a sentence or two. Then give the whole corrected cell as one "
        "Python code block.",
        help="The question --fix asks; {source} is the failing cell's code, {error} its error.",
    ).tag(config=True)

    @validate("model")
    def _valid_model(self, proposal: Any) -> str:
        from ..backends import resolve
        from ..errors import PizzagptError

        try:
            backend = resolve(proposal.value, self.endpoints)
        except PizzagptError as exc:
            raise TraitError(str(exc)) from None
        # An alias stays an alias: its options apply with it.
        return proposal.value.strip() if backend.alias else backend.id

    @validate("endpoints")
    def _valid_endpoints(self, proposal: Any) -> dict[str, Any]:
        from ..backends import make_endpoint
        from ..errors import PizzagptError

        try:
            for name, spec in proposal.value.items():
                make_endpoint(name, spec)
        except PizzagptError as exc:
            raise TraitError(str(exc)) from None
        return proposal.value

    @validate("options")
    def _valid_options(self, proposal: Any) -> dict[str, Any]:
        from ..errors import PizzagptError
        from ..options import merge

        try:
            return merge(proposal.value)
        except PizzagptError as exc:
            raise TraitError(str(exc)) from None

    @validate("prices")
    def _valid_prices(self, proposal: Any) -> dict[str, Any]:
        from ..cost import check_prices
        from ..errors import PizzagptError

        try:
            check_prices(proposal.value)
        except PizzagptError as exc:
            raise TraitError(str(exc)) from None
        return proposal.value

    @validate("batch_discount")
    def _valid_batch_discount(self, proposal: Any) -> float:
        if not 0 < proposal.value <= 1:
            raise TraitError("batch_discount is the share of the online price: above 0, up to 1")
        from ..cost import set_batch_discount

        set_batch_discount(proposal.value)
        return proposal.value

    @validate("budget")
    def _valid_budget(self, proposal: Any) -> float | None:
        if proposal.value is not None and not proposal.value >= 0:
            raise TraitError("budget must be 0 or more dollars (None: no limit)")
        return proposal.value

    @validate("temperature")
    def _valid_temperature(self, proposal: Any) -> float | None:
        if proposal.value is not None and not 0 <= proposal.value <= 2:
            raise TraitError("temperature must be from 0 to 2")
        return proposal.value

    @validate("max_tokens")
    def _valid_max_tokens(self, proposal: Any) -> int | None:
        if proposal.value is not None and proposal.value < 1:
            raise TraitError("max_tokens must be at least 1")
        return proposal.value

    @validate("base_url", "proxy")
    def _valid_url(self, proposal: Any) -> str | None:
        from ..errors import PizzagptError
        from ..transport import check_url

        if proposal.value is None:
            return None
        try:
            return check_url(proposal.value, f"PizzaMagics.{proposal.trait.name}")
        except PizzagptError as exc:
            raise TraitError(str(exc)) from None

    @validate("pack")
    def _valid_pack(self, proposal: Any) -> str | None:
        from ..engine.send.packed import pack_setting
        from ..errors import PizzagptError

        if proposal.value is None:
            return None
        try:
            return str(pack_setting(proposal.value))
        except PizzagptError as exc:
            raise TraitError(str(exc)) from None

    @validate("timeout", "connect_timeout")
    def _valid_seconds(self, proposal: Any) -> float:
        if not proposal.value > 0:
            raise TraitError(f"{proposal.trait.name} must be more than 0 seconds")
        return proposal.value

    @validate("retries")
    def _valid_retries(self, proposal: Any) -> int:
        if not 0 <= proposal.value <= 10:
            raise TraitError("retries must be from 0 to 10")
        return proposal.value

    @validate("batch_max_requests")
    def _valid_batch_max_requests(self, proposal: Any) -> int | None:
        if proposal.value is not None and proposal.value < 1:
            raise TraitError("batch_max_requests must be at least 1 (or None)")
        return proposal.value

    @validate("schema_retries")
    def _valid_schema_retries(self, proposal: Any) -> int:
        if not 0 <= proposal.value <= 5:
            raise TraitError("schema_retries must be from 0 to 5")
        return proposal.value

    @validate("fix_prompt")
    def _valid_fix_prompt(self, proposal: Any) -> str:
        try:
            proposal.value.format(source="", error="")
        except (KeyError, IndexError, ValueError) as exc:
            raise TraitError(
                "fix_prompt may hold only {source} and {error} (write {{ and }} for braces): "
                f"{exc!r}"
            ) from None
        if "{source}" not in proposal.value or "{error}" not in proposal.value:
            raise TraitError("fix_prompt needs both {source} and {error}")
        return proposal.value

    @validate("tool_rounds")
    def _valid_tool_rounds(self, proposal: Any) -> int:
        if not 1 <= proposal.value <= 50:
            raise TraitError("tool_rounds must be from 1 to 50")
        return proposal.value

    @validate("image_max_side", "image_max_bytes")
    def _valid_image_limits(self, proposal: Any) -> int:
        if proposal.value < 16:
            raise TraitError(f"{proposal.trait.name} must be at least 16")
        return proposal.value

    @validate("image_window")
    def _valid_image_window(self, proposal: Any) -> int:
        if proposal.value < 1:
            raise TraitError("image_window must be at least 1")
        return proposal.value

    @validate("max_answer_chars", "max_event_bytes")
    def _valid_answer_limits(self, proposal: Any) -> int:
        if proposal.value < 1024:
            raise TraitError(f"{proposal.trait.name} must be at least 1024")
        return proposal.value

    @observe("max_answer_chars", "max_event_bytes")
    def _apply_answer_limits(self, change: Any) -> None:
        # The provider reads them as class settings; unloading the extension restores them.
        from ..providers.openai import OpenAICompatible

        setattr(OpenAICompatible, change.name, change.new)

    @validate("cache_size", "concurrency", "value_budget", "max_prompt_chars")
    def _valid_positive(self, proposal: Any) -> int:
        if proposal.value < 1:
            raise TraitError(f"{proposal.trait.name} must be at least 1")
        return proposal.value

    @validate("history_length")
    def _valid_history(self, proposal: Any) -> int:
        if proposal.value < 0:
            raise TraitError("history_length must be 0 or more")
        return proposal.value
