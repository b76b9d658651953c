"""The small Python API: ``ask`` and ``ask_async`` for one question, ``complete`` for the answer
with its metadata.

They build the conversation (an optional system message, earlier exchanges, the question), send
it through the backend the model id or alias names (``gpt-4o-mini``, ``ollama:llama3.2``,
``package.module.Provider:model``) on the shared keep-alive session, and return the answer.

A question may be a saved prompt (``saved("NAME")``, see ``prompts``): its placeholders are
filled from ``variables``, and its model, system message, schema and options apply below the
ones given with the call. ``options`` are model options (see ``options``): they go into the body
of backends that take them, and into the cache key and the log in canonical form.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from . import answers as answer_files
from . import store as stores
from .backends import Backend, provider_of, resolve
from .cost import Cost, pricing_for
from .engine.keys import origin_of, parameters_of, prompt_key
from .errors import (
    ConfigurationError,
    EmptyAnswerError,
    PizzagptError,
    PromptError,
    ProviderError,
    ToolRoundsError,
)
from .options import sampling_layer, settle
from .prompts import SavedPrompt
from .providers.base import USAGE_COUNTS, FinishReason, Messages, Usage
from .providers.pizzagpt import Pizzagpt

if TYPE_CHECKING:
    from .tools import Toolbox

__all__ = [
    "Completion",
    "ask",
    "ask_async",
    "build_messages",
    "complete",
    "complete_messages",
    "complete_with_tools",
    "toolbox_for",
]


def build_messages(
    prompt: str,
    *,
    system: str | None = None,
    history: Iterable[Mapping[str, Any]] = (),
) -> Messages:
    """The message list for ``prompt``: the system message, then ``history``, then the prompt.

    ``prompt`` is text, or a list of content parts (``{"type": "text", ...}`` and
    ``{"type": "image_url", ...}``) for a question with images."""
    if isinstance(prompt, list):
        if not prompt or not all(isinstance(p, dict) and "type" in p for p in prompt):
            raise PromptError("A prompt of parts needs text and image_url parts")
    elif not isinstance(prompt, str):
        raise PromptError(f"The prompt must be text, not {type(prompt).__name__}")
    elif not prompt.strip():
        raise PromptError("The prompt is empty")
    messages: Messages = []
    if system:
        messages.append({"role": "system", "content": system})
    for m in history:
        messages.append({"role": m["role"], "content": m["content"]})
    messages.append({"role": "user", "content": prompt})
    return messages


@dataclass(slots=True)
class Completion:
    """An answer and where it came from: provider, model, parameters, finish reason, token
    usage (when the backend reports it), seconds taken, and whether the cache gave it."""

    text: str
    provider: str
    model: str
    parameters: dict[str, Any] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    seconds: float = 0.0
    cached: bool = False
    #: What the answer cost (``cost.Cost``): dollars or why unknown; a cache hit's saving.
    cost: Cost | None = None
    #: The tool calls made on the way to the answer (``tools.ToolRecord.as_dict`` each).
    tool_calls: list[dict[str, Any]] | None = None
    #: What the answer means: its text, or with a schema the dict or model instance.
    value: Any = None
    #: Whether a provider's Batch API answered it (at the batch price).
    batch: bool = False
    #: The answer file that holds the answer (its name), when one is in effect; then the
    #: metadata holds nothing that changes from one run to the next.
    answer_file: str | None = None
    #: The answer's key in the answer file (provider, model, parameters, messages).
    key: str | None = None

    @property
    def model_id(self) -> str:
        from .backends import model_id

        return model_id(self.provider, self.model)

    @property
    def truncated(self) -> bool:
        """Whether the answer was cut at the token limit."""
        return self.finish_reason == "length"

    def metadata(self) -> dict[str, Any]:
        """What a notebook output records about the answer (never a key or a URL)."""
        meta: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "parameters": dict(self.parameters),
        }
        if self.answer_file is None:
            meta["seconds"] = round(self.seconds, 3)
            meta["cached"] = self.cached
        else:
            # Saved with the notebook: the same bytes on every rerun, and the key that tells
            # ``pizzagpt answers prune`` which lines the notebook uses.
            meta["answer_file"] = self.answer_file
            meta["answer_key"] = self.key
        if self.finish_reason:
            meta["finish_reason"] = self.finish_reason
        if self.usage:
            meta["usage"] = dict(self.usage)
        if self.cost is not None:
            meta["cost"] = self.cost.as_dict()
        if self.tool_calls is not None:
            meta["tool_calls"] = list(self.tool_calls)
        if self.batch:
            meta["batch"] = True
        return meta


def _is_kind(chunk: Any, kind: type, attribute: str) -> bool:
    """Whether ``chunk`` is a ``kind``: this package's class, or another (gpt4free's) of that
    name with that attribute."""
    if isinstance(chunk, kind):
        return True
    name = kind.__name__
    return any(k.__name__ == name for k in type(chunk).__mro__) and hasattr(chunk, attribute)


def _usage_of(chunk: Any) -> dict[str, int] | None:
    # A count is an int of 0 or more: True (an int to Python) and -1 are not counts.
    counts = {n: v for n in USAGE_COUNTS if type(v := getattr(chunk, n, None)) is int and v >= 0}
    return counts or None


#: Rounds of tool calls a question may take before its answer (``PizzaMagics.tool_rounds``).
DEFAULT_TOOL_ROUNDS = 5

#: The store the API uses when none is given: ``store.get_store()`` (``$PIZZAGPT_STORE``, else
#: the default location).
DEFAULT_STORE: Any = "default"


def store_key(
    backend: Backend,
    messages: Messages,
    temperature: float | None = None,
    max_tokens: int | None = None,
    base_url: str | None = None,
    schema: Any = None,
    tools: Toolbox | None = None,
    options: Mapping[str, Any] | None = None,
) -> str:
    """The store's cache key of a request (``engine.keys.prompt_key``, the one key function
    of every path); with ``tools``, the tool set and the visible variables' content hashes
    too, as ``parameters["tools"]``; model options, canonical, as ``parameters["options"]``."""
    extra = {"tools": tools.key()} if tools is not None else None
    return prompt_key(backend, messages, temperature, max_tokens, base_url, schema, extra, options)


async def complete_messages(
    backend: Backend,
    messages: Messages,
    *,
    stream: bool = True,
    temperature: float | None = None,
    max_tokens: int | None = None,
    on_text: Callable[[str], Any] | None = None,
    cache: bool = True,
    log: bool = True,
    store: Any = DEFAULT_STORE,
    context: dict[str, Any] | None = None,
    tools: Toolbox | None = None,
    tool_rounds: int = DEFAULT_TOOL_ROUNDS,
    schema: Any = None,
    schema_retries: int = 1,
    options: Mapping[str, Any] | None = None,
    **request: Any,
) -> Completion:
    """Send ``messages`` to ``backend`` and gather the answer, through the store.

    ``options`` are model options; an alias's backend brings its own below them. With
    ``cache`` an identical earlier request (same backend and server, parameters, options and
    messages) is answered from the store; every new answer is stored, so ``cache=False`` asks
    again and keeps the new one. With ``log`` the exchange, answered or failed, is appended to
    the store's log; ``context`` says where it was asked (``source``, ``session``, ``cell``).
    ``store`` is a ``store.Store``, None for none, or the default store. With ``tools`` (a
    ``tools.Toolbox``) the model may call its tools, at most ``tool_rounds`` rounds (see
    ``complete_with_tools``).

    With ``schema`` (a spec, a JSON Schema dict or a Pydantic model class) the answer is asked
    for as JSON of that shape, checked, repaired up to ``schema_retries`` times, and its value
    is ``Completion.value``; an answer that still does not fit is a ``SchemaError``.
    """
    _check_options(request)
    if backend.options or options:
        backend, temperature, max_tokens, options = settle(
            backend, sampling_layer(temperature, max_tokens), options
        )
    if tools is not None and schema is not None:
        raise ConfigurationError(
            "A schema and tools do not go together yet: ask with one or the other"
        )
    if tools is not None:
        return await complete_with_tools(
            backend,
            messages,
            tools,
            tool_rounds=tool_rounds,
            stream=stream,
            temperature=temperature,
            max_tokens=max_tokens,
            on_text=on_text,
            cache=cache,
            log=log,
            store=store,
            context=context,
            options=options,
            **request,
        )
    if schema is not None:
        return await _complete_schema(
            backend,
            messages,
            temperature,
            max_tokens,
            cache,
            log,
            store,
            context,
            schema,
            schema_retries,
            request,
            options,
        )
    return await _complete_messages(
        backend,
        messages,
        stream,
        temperature,
        max_tokens,
        on_text,
        cache,
        log,
        store,
        context,
        request,
        options,
    )


#: What ``request`` may hold: how a request is sent (``base_url`` is Pizzagpt's).
_REQUEST_OPTIONS = frozenset({"proxy", "timeout", "connect_timeout", "max_retries", "base_url"})


async def _complete_schema(
    backend: Backend,
    messages: Messages,
    temperature: float | None,
    max_tokens: int | None,
    cache: bool,
    log: bool,
    store: Any,
    context: dict[str, Any] | None,
    schema: Any,
    schema_retries: int,
    request: dict[str, Any],
    model_options: Mapping[str, Any] | None = None,
) -> Completion:
    """A question with a schema, through the engine (check, repair, record)."""
    from .engine.batch import complete_prompt
    from .engine.prompts import Prompt
    from .schema import as_schema

    backend.check_images(messages)
    options = dict(request)
    prompt = Prompt(
        backend,
        messages,
        temperature=temperature,
        max_tokens=max_tokens,
        schema=as_schema(schema),
        base_url=options.pop("base_url", None),
        options=model_options,
    )
    completion: Completion = await complete_prompt(
        prompt,
        store=store,
        cache=cache,
        log=log,
        context=context,
        schema_retries=schema_retries,
        request=options,
    )
    return completion


def _check_options(request: dict[str, Any]) -> None:
    unknown = request.keys() - _REQUEST_OPTIONS
    if unknown:
        raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(unknown))}")


async def _complete_messages(
    backend: Backend,
    messages: Messages,
    stream: bool,
    temperature: float | None,
    max_tokens: int | None,
    on_text: Callable[[str], Any] | None,
    cache: bool,
    log: bool,
    store: Any,
    context: dict[str, Any] | None,
    request: dict[str, Any],
    options: Mapping[str, Any] | None = None,
) -> Completion:
    # ``complete_messages`` with its arguments in order, as the API's own callers pass them:
    # a question pays for one keyword match, at the entry, not at every layer.
    backend.check_images(messages)
    if store is DEFAULT_STORE:
        store = stores.get_store() if (cache or log) else None
    log = log and store is not None and stores.logging_enabled()
    settings = answer_files.current()
    if settings is not None:
        hit = from_answer_file(
            settings, backend, messages, parameters_of(temperature, max_tokens, None, options)
        )
        if hit is not None:
            if log:
                log_exchange(store, hit, messages, context=context)
            return hit
        cache = cache and not settings.refresh
    key = None
    origin = origin_of(backend, request.get("base_url"))
    pricing = pricing_for(backend.provider, backend.model, origin)
    if store is not None:
        parameters = parameters_of(temperature, max_tokens, None, options)
        key = stores.request_key(
            f"{backend.provider}@{origin}", backend.model, parameters, messages
        )
        if cache:
            hit = store.get(key)
            if hit is not None:
                meta = hit["meta"]
                completion = Completion(
                    hit["text"],
                    backend.provider,
                    backend.model,
                    parameters,
                    meta.get("finish_reason"),
                    meta.get("usage"),
                    0.0,
                    cached=True,
                    cost=pricing.cost(meta.get("usage")).hit(),
                )
                if settings is not None:
                    to_answer_file(settings, completion, messages)
                if log:
                    log_exchange(store, completion, messages, context=context)
                return completion
    try:
        completion = await _fetch(
            backend, messages, stream, temperature, max_tokens, on_text, request, None, options
        )
    except PizzagptError as exc:
        if log:
            log_exchange(
                store,
                None,
                messages,
                context=context,
                backend=backend,
                error=f"{type(exc).__name__}: {exc}",
                partial=exc.partial or None,
            )
        raise
    completion.cost = pricing.cost(completion.usage)
    if store is not None and key is not None:
        store.put(
            key,
            backend.provider,
            backend.model,
            completion.text,
            {"finish_reason": completion.finish_reason, "usage": completion.usage},
        )
    if settings is not None:
        to_answer_file(settings, completion, messages)
    if log:
        log_exchange(store, completion, messages, context=context)
    return completion


def from_answer_file(
    settings: answer_files.AnswerSettings,
    backend: Backend,
    messages: Messages,
    parameters: dict[str, Any],
    strict: bool = True,
) -> Completion | None:
    """The answer file's answer to this request (None when it has none, or when the request
    asks again); ``parameters`` are what changes the answer, as ``Completion.parameters`` holds
    them. With ``settings.only`` (and ``strict``), a missing answer is an
    ``AnswerMissingError``."""
    key = answer_files.answer_key(backend.provider, backend.model, parameters, messages)
    line = None if settings.refresh else settings.file.get(key)
    if line is None:
        if settings.only and strict:
            raise settings.missing(messages)
        return None
    completion = Completion(
        line["text"],
        backend.provider,
        backend.model,
        parameters,
        line.get("finish_reason", "stop"),
        line.get("usage"),
        0.0,
        cached=True,
        answer_file=settings.file.name,
        key=key,
        tool_calls=line.get("tool_calls") or None,
    )
    asked = line.get("cost")
    if isinstance(asked, dict):
        from .cost import Cost

        completion.cost = Cost(
            asked.get("usd"), str(asked.get("pricing", "")), batch=bool(asked.get("batch"))
        )
    return completion


def to_answer_file(
    settings: answer_files.AnswerSettings, completion: Completion, messages: Messages
) -> None:
    """Put ``completion`` in the answer file (and say so in its metadata)."""
    from .images import loggable

    key = answer_files.answer_key(
        completion.provider, completion.model, completion.parameters, messages
    )
    settings.file.add(
        {
            "key": key,
            "provider": completion.provider,
            "model": completion.model,
            "parameters": completion.parameters or None,
            "messages": [{"role": m["role"], "content": loggable(m["content"])} for m in messages],
            "text": completion.text,
            # The calls a tool-using answer made: "looked at" shows the same on a rerun.
            "tool_calls": completion.tool_calls or None,
            "finish_reason": completion.finish_reason
            if completion.finish_reason not in (None, "stop")
            else None,
            "usage": completion.usage,
            "cost": _asked_cost(completion),
        }
    )
    completion.answer_file = settings.file.name
    completion.key = key
    if completion.cost is not None:
        # What asking cost, even when the store gave it: the saved outputs are those of the
        # run that asked, whatever answers the rerun.
        from .cost import Cost

        asked = _asked_cost(completion) or {}
        completion.cost = Cost(
            asked.get("usd"), asked.get("pricing", ""), batch=bool(asked.get("batch"))
        )


def _asked_cost(completion: Completion) -> dict[str, Any] | None:
    """The cost of asking for ``completion`` (a cache hit's is what it saved), as a dict."""
    cost = completion.cost
    if cost is None:
        return None
    usd = cost.saved if cost.cached else cost.usd
    asked: dict[str, Any] = {"usd": usd, "pricing": cost.pricing}
    if cost.batch:
        asked["batch"] = True
    return asked


def log_exchange(
    store: Any,
    completion: Completion | None,
    messages: Messages,
    *,
    context: dict[str, Any] | None = None,
    backend: Backend | None = None,
    error: str | None = None,
    partial: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    parameters: dict[str, Any] | None = None,
) -> None:
    """Append one exchange to ``store``'s log: an answer, or a failure's one-line error (with
    the ``parameters`` asked for); ``tool_calls`` are the records of a failed exchange's tool
    calls."""
    # One pass over the messages (a batch logs tens of thousands of exchanges): images as
    # their hash and size (the log never holds their bytes), text as it is.
    system = None
    asked: Any = None
    logged = []
    characters = 0
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            logged.append(m)
            characters += len(content)
        else:
            from .images import content_text, loggable

            logged.append({**m, "content": loggable(content)})
            characters += len(content_text(content))
        role = m.get("role")
        if role == "user":
            asked = content
        elif role == "system" and system is None:
            system = content
    if asked is None:
        prompt = ""
    elif isinstance(asked, str):
        prompt = asked
    else:
        from .images import content_text

        prompt = content_text(asked)
    record: dict[str, Any] = {
        "time": time.time(),
        "system": system,
        "messages": logged,
        "prompt": prompt,
        "input_chars": characters,
        **(context or {}),
    }
    if completion is not None:
        record.update(
            provider=completion.provider,
            model=completion.model,
            parameters=completion.parameters,
            answer=completion.text,
            seconds=completion.seconds,
            usage=completion.usage,
            cached=completion.cached,
            cost=completion.cost,
        )
        if completion.tool_calls is not None:
            record["tool_calls"] = completion.tool_calls
        if completion.batch:
            record["batch"] = True
    else:
        assert backend is not None
        record.update(provider=backend.provider, model=backend.model, error=error, answer=partial)
        if tool_calls is not None:
            record["tool_calls"] = tool_calls
        if parameters:
            record["parameters"] = parameters
    store.log(record)


def toolbox_for(
    tools: Any, namespace: Mapping[str, Any] | None, prompt: Any, budget: int = 4000
) -> Toolbox | None:
    """The toolbox ``tools`` asks for: None for none (None, False), a ``Toolbox`` as it is,
    else the tools over ``namespace``: the variables ``prompt`` names (True, ``"question"``)
    or all of them (``"all"``)."""
    if tools is None or tools is False:
        return None
    from .tools import Toolbox, referenced_names

    if isinstance(tools, Toolbox):
        return tools
    if namespace is None:
        raise ConfigurationError(
            "tools need namespace=... (globals(), say): the variables the model may look at"
        )
    if tools is True or tools == "question":
        from .images import content_text

        return Toolbox(namespace, referenced_names(content_text(prompt)), budget=budget)
    if tools == "all":
        return Toolbox(namespace, None, budget=budget)
    raise ConfigurationError(f"tools is True, 'all' or a Toolbox, not {tools!r}")


async def complete_with_tools(
    backend: Backend,
    messages: Messages,
    tools: Toolbox,
    *,
    tool_rounds: int = DEFAULT_TOOL_ROUNDS,
    stream: bool = True,
    temperature: float | None = None,
    max_tokens: int | None = None,
    on_text: Callable[[str], Any] | None = None,
    cache: bool = True,
    log: bool = True,
    store: Any = DEFAULT_STORE,
    context: dict[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    **request: Any,
) -> Completion:
    """Ask with ``tools`` offered, running the calls the model makes and sending back their
    results until it answers: at most ``tool_rounds`` rounds of calls, then a
    ``ToolRoundsError`` (the exchange so far is logged, its text is the error's ``partial``).

    Endpoints take tools (the OpenAI-compatible ones as ``tools``/``tool_calls``, those of the
    Messages API as ``tool_use``/``tool_result`` blocks); Pizzagpt and provider classes are a
    ``ConfigurationError`` before anything is sent. The cache key holds the tool set and the
    visible variables' content hashes, so a changed DataFrame is asked about again. The text of
    every round streams to ``on_text``; the answer is that text, rounds apart by a blank line.
    """
    _check_options(request)
    check_tools(backend)
    if store is DEFAULT_STORE:
        store = stores.get_store() if (cache or log) else None
    log = log and store is not None and stores.logging_enabled()
    parameters = {**parameters_of(temperature, max_tokens, None, options), "tools": tools.key()}
    settings = answer_files.current()
    if settings is not None:
        # The tool set and the variables' content hashes are in the key, as in the store's.
        answered = from_answer_file(settings, backend, messages, parameters)
        if answered is not None:
            if log:
                log_exchange(store, answered, messages, context=context)
            return answered
        cache = cache and not settings.refresh
    pricing = pricing_for(
        backend.provider, backend.model, origin_of(backend, request.get("base_url"))
    )
    key = None
    if store is not None:
        key = store_key(
            backend,
            messages,
            temperature,
            max_tokens,
            request.get("base_url"),
            tools=tools,
            options=options,
        )
        hit = store.get(key) if cache else None
        if hit is not None:
            meta = hit["meta"]
            completion = Completion(
                hit["text"],
                backend.provider,
                backend.model,
                parameters,
                meta.get("finish_reason"),
                meta.get("usage"),
                0.0,
                cached=True,
                cost=pricing.cost(meta.get("usage")).hit(),
                tool_calls=meta.get("tool_calls") or [],
            )
            if settings is not None:
                to_answer_file(settings, completion, messages)
            if log:
                log_exchange(store, completion, messages, context=context)
            return completion
    started = time.monotonic()
    records: list[Any] = []
    try:
        text, finish, usage = await _tool_loop(
            backend,
            messages,
            tools,
            tool_rounds,
            stream,
            temperature,
            max_tokens,
            on_text,
            request,
            records,
            options,
        )
    except PizzagptError as exc:
        if log:
            log_exchange(
                store,
                None,
                messages,
                context=context,
                backend=backend,
                error=f"{type(exc).__name__}: {exc}",
                partial=exc.partial or None,
                tool_calls=[r.as_dict() for r in records],
            )
        raise
    calls = [r.as_dict() for r in records]
    completion = Completion(
        text,
        backend.provider,
        backend.model,
        parameters,
        finish,
        usage,
        time.monotonic() - started,
        cost=pricing.cost(usage),  # every round's tokens
        tool_calls=calls,
    )
    if store is not None and key is not None:
        meta = {"finish_reason": finish, "usage": usage, "tool_calls": calls}
        store.put(key, backend.provider, backend.model, text, meta)
    if settings is not None:
        to_answer_file(settings, completion, messages)
    if store is not None and key is not None and log:
        log_exchange(store, completion, messages, context=context)
    return completion


def check_tools(backend: Backend) -> None:
    """A ``ConfigurationError`` when ``backend`` takes no tools (nothing is sent then): only
    endpoints take them, whether they speak the OpenAI-compatible API or Anthropic's Messages
    API (whose provider has a ``create_tool_generator``)."""
    endpoint = backend.endpoint
    if endpoint is None:
        name = "Pizzagpt" if backend.is_pizzagpt else backend.provider
        raise ConfigurationError(
            f"{name} takes no tools; ask an endpoint (-m openai:MODEL, -m ollama:MODEL, "
            "-m anthropic:MODEL, ...) to let the model look at variables (nothing was sent)"
        )
    if not hasattr(endpoint.provider, "create_tool_generator"):
        raise ConfigurationError(
            f"{backend.provider} speaks the {endpoint.api} API, which takes no tools here yet; "
            "ask an OpenAI-compatible or Anthropic endpoint (nothing was sent)"
        )


async def _tool_loop(
    backend: Backend,
    messages: Messages,
    tools: Toolbox,
    rounds: int,
    stream: bool,
    temperature: float | None,
    max_tokens: int | None,
    on_text: Callable[[str], Any] | None,
    request: dict[str, Any],
    records: list[Any],
    options: Mapping[str, Any] | None = None,
) -> tuple[str, str | None, dict[str, int] | None]:
    """``(text, finish_reason, usage)`` of the answer; ``records`` gets each call as it runs."""
    from .providers.tool_calls import ToolCalls, assistant_message, tool_message

    assert backend.endpoint is not None
    specs = tools.specs()
    sent = list(messages)
    texts: list[str] = []
    usage: dict[str, int] = {}
    finish: str | None = None
    for number in range(rounds + 1):
        chunks: list[str] = []
        calls: list[Any] = []
        agen: Any = backend.endpoint.provider.create_tool_generator(
            backend.model,
            sent,
            specs,
            request.get("proxy"),
            base_url=backend.endpoint.url,
            api_key_env=backend.endpoint.api_key_env,
            name=backend.provider,
            stream=stream,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout=request.get("timeout"),
            connect_timeout=request.get("connect_timeout"),
            max_retries=request.get("max_retries"),
            options=options,
        )
        try:
            async for chunk in agen:
                if isinstance(chunk, str):
                    if not chunk:
                        continue
                    if not chunks and texts and on_text is not None:
                        on_text("\n\n")
                    chunks.append(chunk)
                    if on_text is not None:
                        on_text(chunk)
                elif isinstance(chunk, ToolCalls):
                    calls = chunk.calls
                elif isinstance(chunk, FinishReason):
                    finish = chunk.reason
                elif isinstance(chunk, Usage):
                    for name, count in chunk.as_dict().items():
                        usage[name] = usage.get(name, 0) + count
        except PizzagptError as exc:
            exc.partial = "\n\n".join([*texts, "".join(chunks)]).strip()
            raise
        finally:
            await agen.aclose()
        text = "".join(chunks)
        if text.strip():
            texts.append(text)
        if not calls:
            answer = "\n\n".join(texts)
            if not answer.strip():
                raise EmptyAnswerError(f"{backend.provider} sent an empty answer")
            return answer, finish or "stop", usage or None
        if number == rounds:
            error = ToolRoundsError(
                f"The model still called tools after {rounds} round{'s' * (rounds != 1)} "
                "(PizzaMagics.tool_rounds); it gave no answer",
                list(records),
            )
            error.partial = "\n\n".join(texts)
            raise error
        results, ran = tools.run_all(calls)
        records.extend(ran)
        sent.append(assistant_message(text, calls))
        sent.extend(tool_message(call.id, result) for call, result in zip(calls, results))
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


async def _fetch(
    backend: Backend,
    messages: Messages,
    stream: bool,
    temperature: float | None,
    max_tokens: int | None,
    on_text: Callable[[str], Any] | None,
    request: dict[str, Any],
    response_format: dict[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> Completion:
    """Send ``messages`` to ``backend`` and gather the answer (``response_format`` goes to an
    endpoint's request as it is, and only there; it implies no streaming; ``options`` are
    model options, for the body of an endpoint's request).

    Text chunks (``str``) are joined, and each is passed to ``on_text`` as it arrives; a finish
    reason and a token usage among the other chunks go to the ``Completion``; anything else a
    provider yields is ignored. An error after some text arrived carries it as ``partial``.
    """
    started = time.monotonic()
    parameters = parameters_of(temperature, max_tokens, None, options)
    endpoint = backend.endpoint
    if endpoint is not None and (not stream or response_format is not None):
        # An endpoint's one JSON answer: the shortest path.
        get = request.get
        text, finish, used = await endpoint.provider.answer(
            endpoint.url,
            endpoint.api_key_env,
            backend.provider,
            backend.model,
            messages,
            get("proxy"),
            temperature,
            max_tokens,
            get("timeout"),
            get("connect_timeout"),
            get("max_retries"),
            response_format,
            options,
        )
        if not text.strip():
            raise EmptyAnswerError(f"{backend.provider} sent an empty answer")
        if on_text is not None:
            on_text(text)
        return Completion(
            text,
            backend.provider,
            backend.model,
            parameters,
            finish or "stop",
            used.as_dict() if used is not None else None,
            time.monotonic() - started,
        )
    chunks: list[str] = []
    finish = None
    usage = None
    agen: Any = backend.generate(
        messages,
        stream=stream,
        temperature=temperature,
        max_tokens=max_tokens,
        options=options,
        **request,
    )
    try:
        async for chunk in agen:
            if isinstance(chunk, str):
                if chunk:
                    chunks.append(chunk)
                    if on_text is not None:
                        on_text(chunk)
            elif _is_kind(chunk, FinishReason, "reason"):
                finish = str(chunk.reason) if chunk.reason is not None else None
            elif _is_kind(chunk, Usage, "__dict__"):
                usage = _usage_of(chunk) or usage
    except PizzagptError as exc:
        exc.partial = "".join(chunks)
        raise
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            await aclose()
    text = "".join(chunks)
    if not text.strip():
        if backend.cls is not None and not backend.is_pizzagpt:
            raise ProviderError(f"{backend.provider} sent an empty answer")
        raise EmptyAnswerError(f"{backend.provider} sent an empty answer")
    return Completion(
        text,
        backend.provider,
        backend.model,
        parameters,
        finish,
        usage,
        time.monotonic() - started,
    )


class Question(NamedTuple):
    """A question ready to send: its backend (an alias's options merged), messages,
    parameters, model options and schema."""

    backend: Backend
    messages: Messages
    temperature: float | None
    max_tokens: int | None
    options: dict[str, Any]
    schema: Any


def _prepare(
    prompt: Any,
    model: str | None,
    provider: Any,
    system: str | None,
    history: Iterable[Mapping[str, Any]],
    temperature: float | None,
    max_tokens: int | None,
    options: Mapping[str, Any] | None = None,
    variables: Mapping[str, Any] | None = None,
    schema: Any = None,
) -> Question:
    """The question as it is sent, checked: a saved prompt's settings below the ones given,
    an alias's below those."""
    saved_options: Mapping[str, Any] | None = None
    if isinstance(prompt, SavedPrompt):
        saved = prompt
        prompt = saved.render(variables)
        model = model or saved.model
        system = saved.render_system(variables) if system is None else system
        saved_options = saved.options
        if schema is None:
            schema = saved.schema
    elif variables:
        raise PromptError("variables= fills the placeholders of a saved prompt (saved('NAME'))")
    if provider is None or provider is Pizzagpt:
        backend = resolve(model)
    else:
        backend = provider_of(provider, model)
    backend, temperature, max_tokens, merged = settle(
        backend, saved_options, {**(options or {}), **sampling_layer(temperature, max_tokens)}
    )
    messages = build_messages(prompt, system=system, history=history)
    return Question(backend, messages, temperature, max_tokens, merged, schema)


def _named(prompt: Any) -> Any:
    """The text whose ``{references}`` name the variables tools may look at: a saved
    prompt's own text, its placeholders unexpanded."""
    return prompt.prompt if isinstance(prompt, SavedPrompt) else prompt


def _answer_file(path: Any, only: bool | None) -> Any:
    """The answer file ``path`` (and ``only``) in effect for a call; when neither is given,
    what is in effect already (a cell's, a batch's, ``$PIZZAGPT_ANSWERS``)."""
    if path is None and only is None:
        return contextlib.nullcontext()
    settings = answer_files.settings_for(path, only=only)
    return answer_files.using(settings)


def _with_answer_file(function: Any) -> Any:
    """``function`` (``complete``, ``ask_async``) taking ``answers`` and ``answers_only`` too:
    the answer file in effect while it runs (see ``_answer_file``)."""

    @functools.wraps(function)
    async def with_file(
        *args: Any, answers: Any = None, answers_only: Any = None, **kw: Any
    ) -> Any:
        with _answer_file(answers, answers_only):
            return await function(*args, **kw)

    return with_file


@_with_answer_file
async def complete(
    prompt: Any,
    *,
    model: str | None = None,
    system: str | None = None,
    history: Iterable[Mapping[str, Any]] = (),
    stream: bool = True,
    temperature: float | None = None,
    max_tokens: int | None = None,
    on_text: Callable[[str], Any] | None = None,
    provider: Any = None,
    cache: bool = True,
    log: bool = True,
    store: Any = DEFAULT_STORE,
    context: dict[str, Any] | None = None,
    tools: Any = None,
    namespace: Mapping[str, Any] | None = None,
    tool_rounds: int = DEFAULT_TOOL_ROUNDS,
    schema: Any = None,
    schema_retries: int = 1,
    options: Mapping[str, Any] | None = None,
    variables: Mapping[str, Any] | None = None,
    **request: Any,
) -> Completion:
    """Ask one question; the answer with its metadata (see ``Completion``).

    ``prompt`` is a question or a saved prompt (its placeholders filled from ``variables``);
    ``options`` are model options. ``model`` is a model id or an alias; ``on_text`` gets each piece
    of text as it arrives; ``cache``, ``log``, ``store`` and ``context`` are
    ``complete_messages``'s. ``request``: ``proxy``, ``timeout``, ``connect_timeout``,
    ``max_retries``, ``base_url`` (Pizzagpt's). ``tools`` (True, ``"all"`` or a ``tools.Toolbox``)
    lets the model look at ``namespace``'s variables (see ``toolbox_for``). ``schema`` and
    ``schema_retries`` are ``complete_messages``'s (with a schema, ``Completion.value`` is the
    answer's value).
    """
    backend, messages, temperature, max_tokens, merged, schema = _prepare(
        prompt,
        model,
        provider,
        system,
        history,
        temperature,
        max_tokens,
        options,
        variables,
        schema,
    )
    _check_options(request)
    toolbox = toolbox_for(tools, namespace, _named(prompt))
    if toolbox is not None and schema is not None:
        raise ConfigurationError(
            "A schema and tools do not go together yet: ask with one or the other"
        )
    if toolbox is not None:
        return await complete_with_tools(
            backend,
            messages,
            toolbox,
            tool_rounds=tool_rounds,
            stream=stream,
            temperature=temperature,
            max_tokens=max_tokens,
            on_text=on_text,
            cache=cache,
            log=log,
            store=store,
            context=context,
            options=merged,
            **request,
        )
    if schema is not None:
        return await _complete_schema(
            backend,
            messages,
            temperature,
            max_tokens,
            cache,
            log,
            store,
            context,
            schema,
            schema_retries,
            request,
            merged,
        )
    return await _complete_messages(
        backend,
        messages,
        stream,
        temperature,
        max_tokens,
        on_text,
        cache,
        log,
        store,
        context,
        request,
        merged,
    )


@_with_answer_file
async def ask_async(
    prompt: Any,
    *,
    model: str | None = None,
    system: str | None = None,
    history: Iterable[Mapping[str, Any]] = (),
    proxy: str | None = None,
    timeout: float | None = None,
    connect_timeout: float | None = None,
    max_retries: int | None = None,
    base_url: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    stream: bool = True,
    on_text: Callable[[str], Any] | None = None,
    provider: Any = None,
    cache: bool = True,
    log: bool = True,
    store: Any = DEFAULT_STORE,
    tools: Any = None,
    namespace: Mapping[str, Any] | None = None,
    tool_rounds: int = DEFAULT_TOOL_ROUNDS,
    schema: Any = None,
    schema_retries: int = 1,
    options: Mapping[str, Any] | None = None,
    variables: Mapping[str, Any] | None = None,
) -> Any:
    """Ask one question and return the answer's text (with ``schema``, its value).

    ``prompt`` is a question, or a saved prompt (``saved("NAME")``) whose placeholders ``variables``
    fill. ``options`` are model options (``{"seed": 7, "top_p": 0.9}``) for backends that take them.
    ``model`` is a model id (``gpt-4o-mini``, ``ollama:llama3.2``, ``openai:gpt-4o-mini``, a
    provider class path) or an alias; ``history`` is earlier ``{"role", "content"}`` messages (a
    chat); ``timeout`` and ``connect_timeout`` are seconds; ``base_url`` overrides
    ``$PIZZAGPT_URL``; ``temperature`` and ``max_tokens`` go to backends that take them; ``on_text``
    gets the text as it arrives. An identical earlier request is answered from the store unless
    ``cache`` is False; every exchange goes to the store's log unless ``log`` is False. ``store`` is
    a ``store.Store`` to use instead of the default one (None: no store). ``tools=True`` lets the
    model look at the variables of ``namespace`` the question names (``tools="all"``: at all of
    them) through read-only tools, for at most ``tool_rounds`` rounds; endpoints only
    (OpenAI-compatible ones and Anthropic's Messages API).

    ``schema`` (a concise spec such as ``"sentiment pos|neg|neu, score int"``, a JSON Schema
    dict or a Pydantic model class) asks for JSON of that shape: the answer is checked, asked
    again once with the error when it does not fit (``schema_retries``), and returned as a dict
    (a model instance for a model); one that still does not fit is a ``SchemaError``.

    ``answers`` names an answer file (read first, then the store; every answer is written to
    it; default ``$PIZZAGPT_ANSWERS``); with ``answers_only`` answers come only from it (default
    ``$PIZZAGPT_ANSWERS_ONLY``); ``complete`` takes them too.
    """
    backend, messages, temperature, max_tokens, merged, schema = _prepare(
        prompt,
        model,
        provider,
        system,
        history,
        temperature,
        max_tokens,
        options,
        variables,
        schema,
    )
    request = {
        "proxy": proxy,
        "timeout": timeout,
        "connect_timeout": connect_timeout,
        "max_retries": max_retries,
        "base_url": base_url,
    }
    toolbox = toolbox_for(tools, namespace, _named(prompt))
    if toolbox is not None and schema is not None:
        raise ConfigurationError(
            "A schema and tools do not go together yet: ask with one or the other"
        )
    if toolbox is not None:
        completion = await complete_with_tools(
            backend,
            messages,
            toolbox,
            tool_rounds=tool_rounds,
            stream=stream,
            temperature=temperature,
            max_tokens=max_tokens,
            on_text=on_text,
            cache=cache,
            log=log,
            store=store,
            context=_API_CONTEXT,
            options=merged,
            **request,
        )
        return completion.text
    if schema is not None:
        answered = await _complete_schema(
            backend,
            messages,
            temperature,
            max_tokens,
            cache,
            log,
            store,
            _API_CONTEXT,
            schema,
            schema_retries,
            request,
            merged,
        )
        return answered.value
    completion = await _complete_messages(
        backend,
        messages,
        stream,
        temperature,
        max_tokens,
        on_text,
        cache,
        log,
        store,
        _API_CONTEXT,
        request,
        merged,
    )
    return completion.text


_API_CONTEXT = {"source": "api"}


def ask(prompt: Any, **options: Any) -> Any:
    """Ask one question synchronously; safe inside a running loop such as a notebook's.

    Takes the options of ``ask_async``.
    """
    from .loop import run_sync

    return run_sync(ask_async(prompt, **options))
