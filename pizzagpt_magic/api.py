"""The small Python API: ``ask`` and ``ask_async`` for one question, ``complete`` for the answer
with its metadata.

They build the conversation (an optional system message, earlier exchanges, the question), send
it through the backend the model id or alias names (``gpt-4o-mini``, ``ollama:llama3.2``,
``package.module.Provider:model``) on the shared keep-alive session, and return the answer.

A question may be a saved prompt (``saved("NAME")``, see ``prompts``): its placeholders are
filled from ``variables``, and its model, system message and options apply below the ones
given with the call. ``options`` are model options (see ``options``): they go into the body of
backends that take them, and into the cache key and the log in canonical form.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import store as stores
from .backends import Backend, provider_of, resolve
from .errors import EmptyAnswerError, PizzagptError, PromptError, ProviderError
from .options import merge, sampling_layer, settle
from .prompts import SavedPrompt
from .providers.base import FinishReason, Messages, Usage
from .providers.openai import OpenAICompatible
from .providers.pizzagpt import Pizzagpt

__all__ = ["Completion", "ask", "ask_async", "build_messages", "complete", "complete_messages"]


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


@dataclass
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
            "seconds": round(self.seconds, 3),
            "cached": self.cached,
        }
        if self.finish_reason:
            meta["finish_reason"] = self.finish_reason
        if self.usage:
            meta["usage"] = dict(self.usage)
        return meta


def _is_kind(chunk: Any, kind: type, attribute: str) -> bool:
    """Whether ``chunk`` is a ``kind``: this package's class, or another (gpt4free's) of that
    name with that attribute."""
    if isinstance(chunk, kind):
        return True
    name = kind.__name__
    return any(k.__name__ == name for k in type(chunk).__mro__) and hasattr(chunk, attribute)


def _usage_of(chunk: Any) -> dict[str, int] | None:
    names = ("prompt_tokens", "completion_tokens", "total_tokens")
    counts = {n: v for n in names if isinstance(v := getattr(chunk, n, None), int)}
    return counts or None


#: The store the API uses when none is given: ``store.get_store()`` (``$PIZZAGPT_STORE``, else
#: the default location).
DEFAULT_STORE: Any = "default"


def origin_of(backend: Backend, base_url: str | None = None) -> str:
    """Where a backend's answers come from (an endpoint's or Pizzagpt's URL, a class's path):
    part of the cache key, so answers of one server never stand in for another's."""
    if backend.endpoint is not None:
        return backend.endpoint.url
    if backend.is_pizzagpt:
        try:
            return str(backend.cls.base_url(base_url))
        except PizzagptError:
            return ""
    return backend.provider


def parameters_of(
    temperature: float | None,
    max_tokens: int | None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What changes the answer besides the messages: the sampling parameters given (None
    means the backend's default, and is left out) and the model options, canonical."""
    parameters: dict[str, Any] = {}
    if temperature is not None:
        parameters["temperature"] = temperature
    if max_tokens is not None:
        parameters["max_tokens"] = max_tokens
    if options:
        parameters["options"] = merge(options)
    return parameters


def store_key(
    backend: Backend,
    messages: Messages,
    temperature: float | None = None,
    max_tokens: int | None = None,
    base_url: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> str:
    """The store's cache key of a request."""
    return stores.request_key(
        f"{backend.provider}@{origin_of(backend, base_url)}",
        backend.model,
        parameters_of(temperature, max_tokens, options),
        messages,
    )


def _prompt_of(messages: Messages) -> str:
    from .images import content_text

    users = [m for m in messages if m.get("role") == "user"]
    return content_text(users[-1]["content"]) if users else ""


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
    options: Mapping[str, Any] | None = None,
    **request: Any,
) -> Completion:
    """Send ``messages`` to ``backend`` and gather the answer, through the store.

    With ``cache`` an identical earlier request (same backend and server, parameters, options
    and messages) is answered from the store; every new answer is stored, so ``cache=False``
    asks again and keeps the new one. With ``log`` the exchange, answered or failed, is
    appended to the store's log; ``context`` says where it was asked (``source``, ``session``,
    ``cell``). ``store`` is a ``store.Store``, None for none, or the default store.
    ``options`` are model options; an alias's backend brings its own below them.
    """
    _check_options(request)
    if backend.options or options:
        backend, temperature, max_tokens, options = settle(
            backend, sampling_layer(temperature, max_tokens), options
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
    key = None
    if store is not None:
        parameters = parameters_of(temperature, max_tokens, options)
        key = store_key(
            backend, messages, temperature, max_tokens, request.get("base_url"), options
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
                )
                if log:
                    log_exchange(store, completion, messages, context=context)
                return completion
    try:
        completion = await _fetch(
            backend, messages, stream, temperature, max_tokens, on_text, request, options
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
    if store is not None and key is not None:
        store.put(
            key,
            backend.provider,
            backend.model,
            completion.text,
            {"finish_reason": completion.finish_reason, "usage": completion.usage},
        )
        if log:
            log_exchange(store, completion, messages, context=context)
    return completion


def log_exchange(
    store: Any,
    completion: Completion | None,
    messages: Messages,
    *,
    context: dict[str, Any] | None = None,
    backend: Backend | None = None,
    error: str | None = None,
    partial: str | None = None,
) -> None:
    """Append one exchange to ``store``'s log: an answer, or a failure's one-line error."""
    system = next((m["content"] for m in messages if m.get("role") == "system"), None)
    from .images import loggable

    record: dict[str, Any] = {
        "time": time.time(),
        "system": system,
        # Images as their hash and size: the log never holds their bytes.
        "messages": [{**m, "content": loggable(m["content"])} for m in messages],
        "prompt": _prompt_of(messages),
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
        )
    else:
        assert backend is not None
        record.update(provider=backend.provider, model=backend.model, error=error, answer=partial)
    store.log(record)


async def _fetch(
    backend: Backend,
    messages: Messages,
    stream: bool,
    temperature: float | None,
    max_tokens: int | None,
    on_text: Callable[[str], Any] | None,
    request: dict[str, Any],
    options: Mapping[str, Any] | None = None,
) -> Completion:
    """Send ``messages`` to ``backend`` and gather the answer.

    Text chunks (``str``) are joined, and each is passed to ``on_text`` as it arrives; a finish
    reason and a token usage among the other chunks go to the ``Completion``; anything else a
    provider yields is ignored. An error after some text arrived carries it as ``partial``.
    """
    started = time.monotonic()
    parameters = parameters_of(temperature, max_tokens, options)
    endpoint = backend.endpoint
    if endpoint is not None and not stream:  # an endpoint's one JSON answer: the shortest path
        get = request.get
        text, finish, used = await OpenAICompatible.answer(
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
) -> tuple[Backend, Messages, float | None, int | None, dict[str, Any]]:
    """The backend a question goes to, its messages, its temperature, max tokens and options,
    checked: a saved prompt's below the ones given, an alias's below those."""
    saved_options: Mapping[str, Any] | None = None
    if isinstance(prompt, SavedPrompt):
        saved = prompt
        prompt = saved.render(variables)
        model = model or saved.model
        system = saved.render_system(variables) if system is None else system
        saved_options = saved.options
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
    return backend, messages, temperature, max_tokens, merged


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
    options: Mapping[str, Any] | None = None,
    variables: Mapping[str, Any] | None = None,
    **request: Any,
) -> Completion:
    """Ask one question; the answer with its metadata (see ``Completion``).

    ``prompt`` is a question or a saved prompt (its placeholders filled from ``variables``);
    ``model`` is a model id or alias; ``options`` are model options; ``on_text`` gets each
    piece of text as it arrives; ``cache``, ``log``, ``store`` and ``context`` are
    ``complete_messages``'s. ``request``: ``proxy``, ``timeout``, ``connect_timeout``,
    ``max_retries``, ``base_url`` (Pizzagpt's).
    """
    backend, messages, temperature, max_tokens, merged = _prepare(
        prompt, model, provider, system, history, temperature, max_tokens, options, variables
    )
    _check_options(request)
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
    options: Mapping[str, Any] | None = None,
    variables: Mapping[str, Any] | None = None,
) -> str:
    """Ask one question and return the answer's text.

    ``prompt`` is a question, or a saved prompt (``saved("NAME")``) whose placeholders
    ``variables`` fill. ``model`` is a model id (``gpt-4o-mini``, ``ollama:llama3.2``,
    ``openai:gpt-4o-mini``, a provider class path) or an alias; ``options`` are model options
    (``{"seed": 7, "top_p": 0.9}``) for backends that take them; ``history`` is earlier
    ``{"role", "content"}`` messages (a chat); ``timeout`` and ``connect_timeout`` are seconds;
    ``base_url`` overrides ``$PIZZAGPT_URL``; ``temperature`` and ``max_tokens`` go to backends
    that take them; ``on_text`` gets the text as it arrives. An identical earlier request is
    answered from the store unless ``cache`` is False; every exchange goes to the store's log
    unless ``log`` is False. ``store`` is a ``store.Store`` to use instead of the default one
    (None: no store).
    """
    backend, messages, temperature, max_tokens, merged = _prepare(
        prompt, model, provider, system, history, temperature, max_tokens, options, variables
    )
    request = {
        "proxy": proxy,
        "timeout": timeout,
        "connect_timeout": connect_timeout,
        "max_retries": max_retries,
        "base_url": base_url,
    }
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


def ask(prompt: Any, **options: Any) -> str:
    """Ask one question synchronously; safe inside a running loop such as a notebook's.

    Takes the options of ``ask_async``.
    """
    from .loop import run_sync

    return run_sync(ask_async(prompt, **options))
