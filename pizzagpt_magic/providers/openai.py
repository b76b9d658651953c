"""``OpenAICompatible``: the Chat Completions API (OpenAI, Ollama, LM Studio, llama.cpp, vLLM,
OpenRouter, LiteLLM ...) on aiohttp, in the gpt4free provider interface.

``create_async_generator`` yields the answer's text as it arrives (server-sent events with
``stream=True``, one chunk otherwise), then the token ``Usage`` when the server reports it, then
the ``FinishReason``. The key is read from the environment variable named by ``api_key_env`` at
each request; it is sent only to the endpoint's own origin and masked in every message.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from .._version import __version__
from ..errors import (
    AnswerTooLargeError,
    AuthenticationError,
    ConfigurationError,
    ConnectionLostError,
    EmptyAnswerError,
    HTTPStatusError,
    ModelNotFoundError,
    NonJSONResponseError,
    PizzagptError,
    PromptError,
    RequestTimeoutError,
    ResponseError,
    ResponseShapeError,
)
from ..transport import (
    IdleTimeout,
    Policy,
    _getenv,
    _shown,
    check_url,
    join_url,
    mask_error,
    open_response,
    read_body,
    reading_body,
    redact,
    send,
)
from .base import AsyncGeneratorProvider, AsyncResult, FinishReason, Messages, Usage
from .sse import BOM, SSEDecoder
from .tool_calls import ToolCallDeltas, ToolCalls, parse_tool_calls

__all__ = [
    "OpenAICompatible",
    "ResponseFormatRefused",
    "SSEDecoder",
    "Target",
    "list_models",
    "parse_completion",
    "parse_completion_counts",
    "refuse_response_format",
    "takes_response_format",
    "usage_counts",
]

#: The default limits of one streamed event and of one answer (see ``OpenAICompatible``).
MAX_EVENT_BYTES = 16 * 1024 * 1024
MAX_ANSWER_CHARS = 64 * 1024 * 1024
#: Statuses retried, as the official SDK does.
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
_UTF8_NAMES = frozenset({"utf-8", "utf8"})
_KEYLIKE = re.compile(r"\b(?:sk|key|pk|rk)[-_][A-Za-z0-9*_\-.]{4,}")
_MODEL_MISSING = re.compile(
    r"model.*(not found|does not exist|invalid|unknown|not available)|invalid model",
    re.I | re.S,
)


def _error_text(body: str) -> tuple[str, str]:
    """``(message, code)`` of an OpenAI-style error body (or the body's start)."""
    try:
        data = json.loads(body)
    except ValueError:
        return " ".join(body.split())[:200], ""
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or json.dumps(error)[:200]
        return " ".join(str(message).split()), str(error.get("code") or error.get("type") or "")
    return " ".join(str(error).split())[:200], ""


def _masked(text: str, secrets: tuple[str | None, ...]) -> str:
    """Text of the server's, for a message: keys (given, or key-like) and tokens masked."""
    return _KEYLIKE.sub("***", redact(text, *secrets))


class ResponseFormatRefused(HTTPStatusError):
    """The endpoint refused the request's ``response_format`` (a 400 naming it): the caller
    asks again with the schema in the prompt (see ``refuse_response_format``)."""


#: The base URLs of endpoints that refused ``response_format``, for the rest of the process.
_NO_RESPONSE_FORMAT: set[str] = set()


def takes_response_format(base_url: str) -> bool:
    """Whether an endpoint is asked with ``response_format`` (it has not refused it)."""
    return base_url not in _NO_RESPONSE_FORMAT


def refuse_response_format(base_url: str) -> None:
    """Remember that the endpoint at ``base_url`` refuses ``response_format``."""
    _NO_RESPONSE_FORMAT.add(base_url)


class _ModelMissing(Exception):
    def __init__(self, detail: str) -> None:
        self.detail = detail


def _text_of(content: Any) -> str | None:
    """The text of a message's (or a delta's) ``content``: a string, or a list of parts
    (Mistral's ``[{"type": "text", "text": ...}]``) whose text parts are joined; None for
    anything else."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part
            if isinstance(part, str)
            else str(part.get("text") or "")
            if isinstance(part, dict) and part.get("type", "text") == "text"
            else ""
            for part in content
        )
    return None


def _other_output(message: dict[str, Any]) -> str | None:
    """What a message (or delta) holds besides text: ``"tool calls"``, ``"reasoning"``."""
    if message.get("tool_calls") or message.get("function_call"):
        return "tool calls"
    if any(message.get(k) for k in ("reasoning_content", "reasoning", "reasoning_details")):
        return "reasoning"
    return None


def _empty(name: str, finish: str | None, other: str | None) -> EmptyAnswerError:
    """The error for an answer without text, saying what it held and why it ended."""
    held = f"only {other}" if other else "no text"
    why = f" (finish reason {finish!r})" if finish else ""
    hint = "; raise the token limit" if finish == "length" else ""
    error = EmptyAnswerError(f"{name} sent an answer with {held}{why}{hint}")
    error.finish_reason = finish
    return error


def parse_completion(
    data: Any, secrets: tuple[str | None, ...] = ()
) -> tuple[str, str | None, Usage | None]:
    """``(text, finish_reason, usage)`` of a non-streamed Chat Completions answer."""
    text, finish, usage, _ = _completion(data, secrets)
    return text, finish, usage


def parse_completion_counts(data: Any) -> tuple[str, str | None, dict[str, int] | None]:
    """``parse_completion``, with the usage as its counts (what ``Usage.as_dict`` gives),
    made without a ``Usage`` on the way (a Batch API job's tens of thousands of lines)."""
    text, finish, counts, _ = _completion(data, (), usage_counts)
    return text, finish, counts


def _completion(
    data: Any, secrets: tuple[str | None, ...] = (), usage: Callable[[Any], Any] | None = None
) -> tuple[str, str | None, Any, str | None]:
    if not isinstance(data, dict):
        raise ResponseShapeError(f"expected a JSON object, got {type(data).__name__}")
    if data.get("error") and "choices" not in data:
        said = _masked(_error_text(json.dumps(data))[0], secrets)
        raise ResponseError(f"The endpoint sent an error: {said}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ResponseShapeError("no 'choices' in the answer")
    message = choices[0].get("message") or {}
    if not isinstance(message, dict):
        raise ResponseShapeError(f"'message' is {type(message).__name__}, expected an object")
    content = message.get("content")
    if content is None and message.get("refusal"):
        content = str(message["refusal"])
    text = _text_of(content) if content is not None else ""
    if text is None:
        raise ResponseShapeError(f"'content' is {type(content).__name__}, expected text")
    other = None if text else _other_output(message)
    counts = (usage or _usage)(data.get("usage"))
    return text, choices[0].get("finish_reason"), counts, other


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def usage_counts(value: Any) -> dict[str, int] | None:
    """The counts of a Chat Completions ``usage``, as ``Usage.as_dict`` gives them (None for
    none)."""
    if not isinstance(value, dict):
        return None
    counts: dict[str, int] = {}
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        count: Any = value.get(name)
        if _count(count):
            counts[name] = count
    if not counts:
        return None
    if "total_tokens" not in counts and len(counts) == 2:  # as Usage adds it up
        counts["total_tokens"] = counts["prompt_tokens"] + counts["completion_tokens"]
    details = value.get("prompt_tokens_details")
    if isinstance(details, dict) and _count(details.get("cached_tokens")):
        counts["cache_read_input_tokens"] = details["cached_tokens"]
    return counts


def _usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    counts = {
        k: v
        for k in ("prompt_tokens", "completion_tokens", "total_tokens")
        if _count(v := value.get(k))
    }
    # The prompt tokens read from the server's prompt cache (OpenAI's name for them).
    details = value.get("prompt_tokens_details")
    if counts and isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        counts["cache_read_input_tokens"] = details["cached_tokens"]
    return Usage(**counts) if counts else None


class OpenAICompatible(AsyncGeneratorProvider):
    """Provider for any OpenAI-compatible Chat Completions endpoint."""

    label: ClassVar[str] = "openai-compatible"
    working: ClassVar[bool] = True
    supports_stream: ClassVar[bool] = True
    supports_message_history: ClassVar[bool] = True
    supports_system_message: ClassVar[bool] = True

    timeout: ClassVar[float] = 60.0
    connect_timeout: ClassVar[float] = 10.0
    max_retries: ClassVar[int] = 2
    backoff_base: ClassVar[float] = 0.5
    backoff_max: ClassVar[float] = 30.0
    max_retry_after: ClassVar[float] = 60.0
    #: Seconds ``list_models`` waits for ``GET /models``.
    models_timeout: ClassVar[float] = 3.0
    #: Largest streamed event, in bytes (one ``data:`` line and its continuation lines);
    #: ``PizzaMagics.max_event_bytes`` sets it.
    max_event_bytes: ClassVar[int] = MAX_EVENT_BYTES
    #: Largest answer, in characters of text (the body of an answer not streamed: in bytes);
    #: ``PizzaMagics.max_answer_chars`` sets it.
    max_answer_chars: ClassVar[int] = MAX_ANSWER_CHARS

    @staticmethod
    def api_key(api_key_env: str | None, name: str) -> str | None:
        """The key in ``$api_key_env``; a ``ConfigurationError`` naming the variable when it
        is unset (nothing is sent then). No variable: no key (local servers need none)."""
        if not api_key_env:
            return None
        key = (_getenv(api_key_env) or "").strip()
        if not key:
            raise ConfigurationError(
                f"{name} needs an API key: set the environment variable {api_key_env}"
            )
        return key

    @classmethod
    def headers(cls, key: str | None) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": f"pizzagpt-magic/{__version__}",
        }
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    @staticmethod
    def body(
        model: str,
        messages: Messages,
        stream: bool,
        temperature: float | None = None,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The request body: parameters left at None are not sent, as the SDK does; model
        options (checked and in canonical order, see ``pizzagpt_magic.options``) after them."""
        body: dict[str, Any] = {"model": model, "messages": messages}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        if options:
            body.update(options)
        if response_format is not None:
            body["response_format"] = response_format
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    @classmethod
    def target(
        cls, base_url: str, api_key_env: str | None, name: str, max_retries: int | None = None
    ) -> Target:
        """Where and how an endpoint's requests go: its checked base URL, headers and retry
        policy, made once per settings and key. The key is read from ``$api_key_env`` at each
        call, so a changed key is used at once."""
        key = cls.api_key(api_key_env, name)
        settings = (cls.backoff_base, cls.backoff_max, cls.max_retry_after, cls.max_retries)
        return _target(cls, base_url, api_key_env, name, key, max_retries, settings)  # type: ignore[arg-type]

    @classmethod
    def _make_policy(
        cls, name: str, api_key_env: str | None, key: str | None, max_retries: int | None
    ) -> Policy:
        def status_error(
            status: int, reason: str, url: str, retry_after: float | None, body: str
        ) -> Exception:
            message, code = _error_text(body)
            message = _KEYLIKE.sub("***", message)
            if status in (401, 403):
                if api_key_env:
                    text = (
                        f"{name} refused the API key in {api_key_env} (HTTP {status}"
                        f"{': ' + message if message else ''})"
                    )
                else:
                    text = (
                        f"{name} needs an API key (HTTP {status}"
                        f"{': ' + message if message else ''}); register the endpoint with "
                        "api_key_env naming the variable that holds it"
                    )
                return AuthenticationError(status, reason, url, text)
            if status == 400 and "response_format" in f"{message} {body[:2000]}":
                return ResponseFormatRefused(status, reason, url, retry_after, message)
            if status in (400, 404) and (
                code == "model_not_found" or _MODEL_MISSING.search(message)
            ):
                return _ModelMissing(message)
            return HTTPStatusError(status, reason, url, retry_after, message)

        return Policy(
            max_retries=cls.max_retries if max_retries is None else max_retries,
            backoff_base=cls.backoff_base,
            backoff_max=cls.backoff_max,
            max_retry_after=cls.max_retry_after,
            retry_statuses=RETRY_STATUSES,
            status_error=status_error,
            label=name,
            secrets=(key,),
        )

    @classmethod
    async def _send(
        cls,
        base_url: str,
        api_key_env: str | None,
        name: str,
        model: str,
        messages: Messages,
        proxy: str | None,
        stream: bool,
        temperature: float | None,
        max_tokens: int | None,
        timeout: float,
        connect_timeout: float | None,
        max_retries: int | None,
        response_format: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> tuple[Any, Target]:
        """The open 2xx response to the request, and where it went; ``response_format`` asks
        for a schema, and ``extra`` adds to the body (``tools``)."""
        if not model:
            raise ConfigurationError(f"Name a model for {name}: {name}:MODEL")
        if not messages:
            raise PromptError("Cannot send an empty message list")
        target = cls.target(base_url, api_key_env, name, max_retries)
        body = cls.body(model, messages, stream, temperature, max_tokens, response_format, options)
        if extra:
            body.update(extra)
        try:
            response = await send(
                "POST",
                target.chat_url,
                target.policy,
                body,
                target.headers,
                proxy,
                timeout,
                cls.connect_timeout if connect_timeout is None else connect_timeout,
                stream,
            )
        except _ModelMissing as exc:
            models = await list_models(target.base_url, api_key_env, name=name, proxy=proxy)
            if isinstance(models, str):
                models = []
            raise ModelNotFoundError(name, model, models, exc.detail) from None
        return response, target

    # -- tools ----------------------------------------------------------------------------------

    @classmethod
    async def create_tool_generator(
        cls,
        model: str,
        messages: Messages,
        tools: list[dict[str, Any]],
        proxy: str | None = None,
        *,
        base_url: str,
        api_key_env: str | None = None,
        name: str = "",
        stream: bool = True,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        max_retries: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> AsyncResult:
        """One turn of a conversation with ``tools`` offered (the ``tools`` list of the Chat
        Completions API): the answer's text as it arrives, then ``ToolCalls`` when the model
        called any, ``Usage`` (when reported) and the ``FinishReason`` (``"tool_calls"``).

        ``messages`` may hold the assistant's earlier calls and ``role: tool`` results. An
        answer with calls and no text is a complete answer here, not an empty one.
        """
        name = name or cls.label
        timeout = cls.timeout if timeout is None else timeout
        response, target = await cls._send(
            base_url,
            api_key_env,
            name,
            model,
            messages,
            proxy,
            stream,
            temperature,
            max_tokens,
            timeout,
            connect_timeout,
            max_retries,
            extra={"tools": tools},
            options=options,
        )
        shown_url, secrets = target.shown_url, target.policy.secrets
        try:
            if response.headers.get("Content-Type", "").startswith("text/event-stream"):
                async for item in cls._tool_events(response, shown_url, timeout, secrets):
                    yield item
                return
            raw = await read_body(response, shown_url, timeout, secrets)
        finally:
            response.release()
        try:
            data = json.loads(raw.decode("utf-8", "replace"))
        except ValueError:
            text = _masked(raw.decode("utf-8", "replace")[:200], secrets)
            raise NonJSONResponseError(response.content_type, text) from None
        try:
            text, finish, usage = parse_completion(data, secrets)
        except PizzagptError as exc:
            raise mask_error(exc, secrets) from None
        message = data["choices"][0].get("message") or {}
        calls = parse_tool_calls(message.get("tool_calls"))
        if text:
            yield text
        if calls:
            yield ToolCalls(calls)
        if usage is not None:
            yield usage
        yield FinishReason(finish or ("tool_calls" if calls else "stop"))

    @classmethod
    async def _tool_events(
        cls, response: Any, shown_url: str, timeout: float, secrets: tuple[str | None, ...]
    ) -> AsyncResult:
        decoder = SSEDecoder(cls.max_event_bytes)
        deltas = ToolCallDeltas()
        finish: str | None = None
        usage: Usage | None = None
        done = False
        idle = IdleTimeout(timeout)  # keep-alive comments do not hold it off
        try:
            async with idle, reading_body(shown_url, timeout, secrets):
                chunks = response.content.iter_any()
                while not done:
                    idle.waiting()
                    try:
                        chunk = await chunks.__anext__()
                    except StopAsyncIteration:
                        break
                    idle.arrived()
                    events = decoder.feed(chunk)
                    if events:
                        idle.reset()
                    for data in events:
                        if data.strip() == "[DONE]":
                            done = True
                            break
                        text, reason, used = _event(data, secrets)[:3]
                        finish = reason or finish
                        usage = used or usage
                        if text:
                            yield text
                        cls._tool_deltas(data, deltas)
                if not done:
                    done = any(data.strip() == "[DONE]" for data in decoder.close())
        except TimeoutError:
            raise RequestTimeoutError(f"No answer from {shown_url} within {timeout:g} s") from None
        except PizzagptError as exc:
            raise mask_error(exc, secrets) from None
        if not done and not finish:
            raise ConnectionLostError(
                f"The answer from {shown_url} was cut off before its end (the stream "
                "closed without [DONE])"
            )
        if deltas:
            yield ToolCalls(deltas.calls())
        if usage is not None:
            yield usage
        yield FinishReason(finish or ("tool_calls" if deltas else "stop"))

    @staticmethod
    def _tool_deltas(data: str, deltas: ToolCallDeltas) -> None:
        """Feed the ``tool_calls`` pieces of one streamed event (already checked as JSON by
        ``_event``) to ``deltas``."""
        if "tool_calls" not in data:
            return
        choices = json.loads(data).get("choices") or []
        delta = choices[0].get("delta") if choices and isinstance(choices[0], dict) else None
        if isinstance(delta, dict) and delta.get("tool_calls") is not None:
            deltas.feed(delta["tool_calls"])

    @classmethod
    async def complete(
        cls,
        model: str,
        messages: Messages,
        proxy: str | None = None,
        *,
        base_url: str,
        api_key_env: str | None = None,
        name: str = "",
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        max_retries: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> tuple[str, str | None, Usage | None]:
        """``(text, finish_reason, usage)`` of one answer asked for without streaming."""
        return await cls.answer(
            base_url,
            api_key_env,
            name,
            model,
            messages,
            proxy,
            temperature,
            max_tokens,
            timeout,
            connect_timeout,
            max_retries,
            None,
            options,
        )

    @classmethod
    async def answer(
        cls,
        base_url: str,
        api_key_env: str | None,
        name: str,
        model: str,
        messages: Messages,
        proxy: str | None,
        temperature: float | None,
        max_tokens: int | None,
        timeout: float | None,
        connect_timeout: float | None,
        max_retries: int | None,
        response_format: dict[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> tuple[str, str | None, Usage | None]:
        """``complete`` with its arguments in order (the package's own callers pass them so,
        which costs less than matching keywords at every call)."""
        name = name or cls.label
        timeout = cls.timeout if timeout is None else timeout
        response, target = await cls._send(
            base_url,
            api_key_env,
            name,
            model,
            messages,
            proxy,
            False,
            temperature,
            max_tokens,
            timeout,
            connect_timeout,
            max_retries,
            response_format,
            None,
            options,
        )
        secrets = target.policy.secrets
        try:
            raw = await read_body(response, target.shown_url, timeout, secrets)
            text, finish, usage, other = cls._parse_body(raw, response, secrets)
        except PizzagptError as exc:
            raise mask_error(exc, secrets) from None
        finally:
            response.release()
        if not text:
            raise _empty(name, finish, other)
        return text, finish, usage

    @classmethod
    def _parse_body(
        cls, raw: bytes, response: Any, secrets: tuple[str | None, ...] = ()
    ) -> tuple[str, str | None, Usage | None, str | None]:
        if len(raw) > cls.max_answer_chars:
            raise AnswerTooLargeError(
                f"The answer is {len(raw):,} bytes, over {cls.max_answer_chars:,} "
                "(PizzaMagics.max_answer_chars)"
            )
        # JSON is UTF-8 (RFC 8259), but a declared charset other than UTF-8 is honoured.
        charset = response.charset
        if charset is None or charset.lower() in _UTF8_NAMES:
            charset = "utf-8"
        try:
            data = json.loads(raw.decode(charset, "replace"))
        except (ValueError, LookupError):
            text = raw.decode("utf-8", "replace")
            excerpt = _masked(text[:200], secrets)
            raise NonJSONResponseError(response.content_type, excerpt) from None
        return _completion(data, secrets)

    @classmethod
    async def create_async_generator(  # type: ignore[override]
        cls,
        model: str,
        messages: Messages,
        proxy: str | None = None,
        *,
        base_url: str,
        api_key_env: str | None = None,
        name: str = "",
        stream: bool = True,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        max_retries: int | None = None,
        options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> AsyncResult:
        """Yield the answer's text as it arrives, then ``Usage`` (when reported) and the
        ``FinishReason``.

        ``base_url`` ends in ``/v1`` (``http://localhost:11434/v1``); the key is read from
        ``$api_key_env``; ``name`` names the endpoint in messages; ``options`` go into the
        request body. Other keyword arguments are accepted and ignored, as in gpt4free.
        """
        name = name or cls.label
        timeout = cls.timeout if timeout is None else timeout
        response, target = await cls._send(
            base_url,
            api_key_env,
            name,
            model,
            messages,
            proxy,
            stream,
            temperature,
            max_tokens,
            timeout,
            connect_timeout,
            max_retries,
            None,
            None,
            options,
        )
        shown_url, policy = target.shown_url, target.policy
        try:
            content_type = response.headers.get("Content-Type", "")
            first = b""
            if not content_type.startswith("text/event-stream") and stream:
                # Some servers send the events as text/plain: the first bytes tell.
                if "json" not in content_type:
                    async with reading_body(shown_url, timeout, policy.secrets):
                        first = await response.content.readany()
                    if first.lstrip(BOM + b" \t\r\n").startswith(_SSE_STARTS):
                        content_type = "text/event-stream"
            if content_type.startswith("text/event-stream"):
                async for item in cls._events(response, shown_url, timeout, policy, name, first):
                    yield item
                return
            raw = first + await read_body(response, shown_url, timeout, policy.secrets)
            content, finish, usage, other = cls._parse_body(raw, response, policy.secrets)
        except PizzagptError as exc:
            raise mask_error(exc, policy.secrets) from None
        finally:
            response.release()
        if not content:
            raise _empty(name, finish, other)
        yield content
        if usage is not None:
            yield usage
        yield FinishReason(finish or "stop")

    @classmethod
    async def _events(
        cls,
        response: Any,
        shown_url: str,
        timeout: float,
        policy: Policy,
        name: str = "",
        first: bytes = b"",
    ) -> AsyncResult:
        """The events of a streamed answer: text as it comes, then usage and finish reason.

        ``timeout`` bounds the time without an event: keep-alive comments do not count. A
        stream that ends after a finish reason, without ``[DONE]`` (older llama.cpp), is
        complete; one that ends before it was cut off."""
        secrets = policy.secrets
        decoder = SSEDecoder(cls.max_event_bytes)
        max_answer = cls.max_answer_chars
        finish: str | None = None
        usage: Usage | None = None
        other: str | None = None
        size = 0
        done = False
        idle = IdleTimeout(timeout)
        only_comments = False  # bytes came since the last event, but no event
        try:
            async with idle, reading_body(shown_url, timeout, secrets):
                chunks = response.content.iter_any()
                pending = [first] if first else []
                while not done:
                    if pending:
                        chunk = pending.pop()
                    else:
                        idle.waiting()
                        try:
                            chunk = await chunks.__anext__()
                        except StopAsyncIteration:
                            break
                        idle.arrived()
                    events = decoder.feed(chunk)
                    if events:
                        idle.reset()
                        only_comments = False
                    else:
                        only_comments = True
                    for data in events:
                        if data.strip() == "[DONE]":
                            done = True
                            break
                        text, reason, used, held = _event(data, secrets)
                        finish = reason or finish
                        usage = used or usage
                        if text:
                            size += len(text)
                            if size > max_answer:
                                raise AnswerTooLargeError(
                                    f"The answer is over {max_answer:,} characters "
                                    "(PizzaMagics.max_answer_chars); it was stopped there"
                                )
                            yield text
                        elif held and not size:
                            other = held
                if not done:
                    for data in decoder.close():
                        if data.strip() == "[DONE]":
                            done = True
                        else:
                            text, reason, used, held = _event(data, secrets)
                            finish = reason or finish
                            usage = used or usage
                            if text:
                                size += len(text)
                                yield text
                            elif held and not size:
                                other = held
        except TimeoutError:
            raise RequestTimeoutError(
                f"No answer from {shown_url} within {timeout:g} s (only keep-alive comments came)"
                if idle.expired and only_comments
                else f"No answer from {shown_url} within {timeout:g} s"
            ) from None
        except PizzagptError as exc:
            raise mask_error(exc, secrets) from None
        if not done and not finish:
            raise ConnectionLostError(
                f"The answer from {shown_url} was cut off before its end (the stream "
                "closed without [DONE])"
            )
        if not size:
            raise _empty(name or cls.label, finish, other)
        if usage is not None:
            yield usage
        yield FinishReason(finish or "stop")


_SSE_STARTS = (b"data:", b":", b"event:", b"id:", b"retry:")


class Target:
    """An endpoint's checked base URL, its chat URL (and that URL as messages show it, secrets
    masked), the request headers (never changed once made) and the retry policy."""

    __slots__ = ("base_url", "chat_url", "headers", "policy", "shown_url")

    def __init__(self, base_url: str, headers: dict[str, str], policy: Policy) -> None:
        self.base_url = base_url
        self.chat_url = join_url(base_url, "chat/completions")
        self.shown_url = _shown(self.chat_url, policy.secrets)
        self.headers = headers
        self.policy = policy


@functools.lru_cache(maxsize=32)
def _target(
    cls: Any,
    base_url: str,
    api_key_env: str | None,
    name: str,
    key: str | None,
    max_retries: int | None,
    settings: tuple[float, ...],
) -> Target:
    base_url = check_url(base_url, f"the base URL of {name}")
    policy = cls._make_policy(name, api_key_env, key, max_retries)
    return Target(base_url, cls.headers(key), policy)


def _event(
    data: str, secrets: tuple[str | None, ...] = ()
) -> tuple[str, str | None, Usage | None, str | None]:
    """``(text, finish_reason, usage, other)`` of one streamed chunk; ``other`` says what a
    chunk without text held (``"tool calls"``, ``"reasoning"``)."""
    try:
        chunk = json.loads(data)
    except ValueError:
        shown = _masked(data[:120], secrets)
        raise ResponseShapeError(f"a streamed event is not JSON: {shown!r}") from None
    if not isinstance(chunk, dict):
        raise ResponseShapeError(f"a streamed event is {type(chunk).__name__}, not an object")
    if chunk.get("error"):
        message = _masked(_error_text(data)[0], secrets)
        raise ResponseError(f"The endpoint sent an error mid-answer: {message}")
    text = ""
    finish = None
    other = None
    choices = chunk.get("choices") or []
    if choices and isinstance(choices[0], dict):
        delta = choices[0].get("delta") or {}
        if isinstance(delta, dict):
            content = delta.get("content")
            if content is not None:
                text = _text_of(content) or ""
            if not text:
                other = _other_output(delta)
        finish = choices[0].get("finish_reason")
    return text, finish, _usage(chunk.get("usage")), other


async def list_models(
    base_url: str,
    api_key_env: str | None = None,
    *,
    name: str = "",
    proxy: str | None = None,
    timeout: float | None = None,
) -> list[str] | str:
    """The model ids ``GET {base_url}/models`` lists, or the one-line reason it could not be
    read (so that a list of endpoints can show an unreachable one without failing)."""
    from ..errors import PizzagptError

    name = name or OpenAICompatible.label
    timeout = OpenAICompatible.models_timeout if timeout is None else timeout
    try:
        target = OpenAICompatible.target(base_url, api_key_env, name, 0)
        url = join_url(target.base_url, "models")
        async with open_response(
            "GET",
            url,
            policy=target.policy,
            headers=target.headers,
            proxy=proxy,
            timeout=timeout,
            connect_timeout=timeout,
        ) as response:
            async with reading_body(_shown(url, target.policy.secrets), timeout):
                data = json.loads(await response.read())
    except _ModelMissing as exc:
        return exc.detail
    except (PizzagptError, ValueError) as exc:
        return str(exc)
    entries = data.get("data") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        return "the model list is not in the OpenAI format"
    return sorted(
        str(entry.get("id") if isinstance(entry, dict) else entry)
        for entry in entries
        if entry is not None
    )
