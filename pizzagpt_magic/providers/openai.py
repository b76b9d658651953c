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
from collections.abc import Iterator
from typing import Any, ClassVar

from .._version import __version__
from ..errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionLostError,
    HTTPStatusError,
    ModelNotFoundError,
    NonJSONResponseError,
    PromptError,
    ResponseError,
    ResponseShapeError,
)
from ..transport import (
    Policy,
    _getenv,
    _shown,
    check_url,
    open_response,
    read_body,
    reading_body,
    send,
)
from .base import AsyncGeneratorProvider, AsyncResult, FinishReason, Messages, Usage
from .tool_calls import ToolCallDeltas, ToolCalls, parse_tool_calls

__all__ = [
    "OpenAICompatible",
    "ResponseFormatRefused",
    "SSEDecoder",
    "Target",
    "list_models",
    "parse_completion",
    "refuse_response_format",
    "takes_response_format",
]

#: Statuses retried, as the official SDK does.
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
_UTF8_NAMES = frozenset({"utf-8", "utf8"})
_KEYLIKE = re.compile(r"\b(?:sk|key|pk|rk)[-_][A-Za-z0-9*_\-.]{4,}")
_MODEL_MISSING = re.compile(
    r"model.*(not found|does not exist|invalid|unknown|not available)|invalid model",
    re.I | re.S,
)


class SSEDecoder:
    """Server-sent events from bytes that arrive split anywhere (mid-line, mid-character).

    ``feed`` returns the ``data`` of every event completed by the new bytes; comment lines
    (``:`` keep-alive pings) and the other fields are skipped, several ``data:`` lines of one
    event are joined with newlines, as the format says.
    """

    __slots__ = ("_buffer", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        if b"\n" not in chunk and b"\r" not in chunk:
            return []
        *lines, self._buffer = re.split(rb"\r\n|\r(?!$)|\n", self._buffer)
        return list(self._lines(lines))

    def close(self) -> list[str]:
        """Events left when the stream ended (a last event without its blank line)."""
        lines = [self._buffer.rstrip(b"\r")] if self._buffer else []
        self._buffer = b""
        return [*self._lines(lines), *self._lines([b""])]

    def _lines(self, lines: list[bytes]) -> Iterator[str]:
        for raw in lines:
            if not raw:
                if self._data:
                    yield "\n".join(self._data)
                    self._data = []
                continue
            line = raw.decode("utf-8", "replace")
            name, _, value = line.partition(":")
            if name == "data":
                self._data.append(value[1:] if value.startswith(" ") else value)


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


def parse_completion(data: Any) -> tuple[str, str | None, Usage | None]:
    """``(text, finish_reason, usage)`` of a non-streamed Chat Completions answer."""
    if not isinstance(data, dict):
        raise ResponseShapeError(f"expected a JSON object, got {type(data).__name__}", data)
    if "error" in data and "choices" not in data:
        raise ResponseError(f"The endpoint sent an error: {_error_text(json.dumps(data))[0]}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ResponseShapeError("no 'choices' in the answer", data)
    message = choices[0].get("message") or {}
    content = message.get("content") if isinstance(message, dict) else None
    if content is None and isinstance(message, dict) and message.get("refusal"):
        content = str(message["refusal"])
    if content is not None and not isinstance(content, str):
        raise ResponseShapeError(f"'content' is {type(content).__name__}, expected text", data)
    return content or "", choices[0].get("finish_reason"), _usage(data.get("usage"))


def _usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    counts = {
        k: v
        for k in ("prompt_tokens", "completion_tokens", "total_tokens")
        if isinstance(v := value.get(k), int)
    }
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
    ) -> dict[str, Any]:
        """The request body: parameters left at None are not sent, as the SDK does."""
        body: dict[str, Any] = {"model": model, "messages": messages}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
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
    ) -> tuple[Any, Target]:
        """The open 2xx response to the request, and where it went; ``response_format`` asks
        for a schema, and ``extra`` adds to the body (``tools``)."""
        if not model:
            raise ConfigurationError(f"Name a model for {name}: {name}:MODEL")
        if not messages:
            raise PromptError("Cannot send an empty message list")
        target = cls.target(base_url, api_key_env, name, max_retries)
        body = cls.body(model, messages, stream, temperature, max_tokens, response_format)
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
            text = raw.decode("utf-8", "replace")
            raise NonJSONResponseError(response.content_type, text[:200]) from None
        text, finish, usage = parse_completion(data)
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
        decoder = SSEDecoder()
        deltas = ToolCallDeltas()
        finish: str | None = None
        usage: Usage | None = None
        done = False
        async with reading_body(shown_url, timeout, secrets):
            async for chunk in response.content.iter_any():
                for data in decoder.feed(chunk):
                    if data.strip() == "[DONE]":
                        done = True
                        break
                    text, reason, used = _event(data)[:3]
                    finish = reason or finish
                    usage = used or usage
                    if text:
                        yield text
                    cls._tool_deltas(data, deltas)
                if done:
                    break
            if not done:
                done = any(data.strip() == "[DONE]" for data in decoder.close())
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
        )
        try:
            raw = await read_body(response, target.shown_url, timeout, target.policy.secrets)
        finally:
            response.release()
        return cls._parse_body(raw, response)

    @staticmethod
    def _parse_body(raw: bytes, response: Any) -> tuple[str, str | None, Usage | None]:
        # JSON is UTF-8 (RFC 8259), but a declared charset other than UTF-8 is honoured.
        charset = response.charset
        if charset is None or charset.lower() in _UTF8_NAMES:
            charset = "utf-8"
        try:
            data = json.loads(raw.decode(charset, "replace"))
        except (ValueError, LookupError):
            text = raw.decode("utf-8", "replace")
            raise NonJSONResponseError(response.content_type, text[:200]) from None
        return parse_completion(data)

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
        **kwargs: Any,
    ) -> AsyncResult:
        """Yield the answer's text as it arrives, then ``Usage`` (when reported) and the
        ``FinishReason``.

        ``base_url`` ends in ``/v1`` (``http://localhost:11434/v1``); the key is read from
        ``$api_key_env``; ``name`` names the endpoint in messages. Other keyword arguments are
        accepted and ignored, as in gpt4free.
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
        )
        shown_url, policy = target.shown_url, target.policy
        try:
            if response.headers.get("Content-Type", "").startswith("text/event-stream"):
                async for item in cls._events(response, shown_url, timeout, policy):
                    yield item
                return
            raw = await read_body(response, shown_url, timeout, policy.secrets)
        finally:
            response.release()
        content, finish, usage = cls._parse_body(raw, response)
        if content:
            yield content
        if usage is not None:
            yield usage
        yield FinishReason(finish or "stop")

    @classmethod
    async def _events(
        cls, response: Any, shown_url: str, timeout: float, policy: Policy
    ) -> AsyncResult:
        decoder = SSEDecoder()
        finish: str | None = None
        usage: Usage | None = None
        done = False
        async with reading_body(shown_url, timeout, policy.secrets):
            async for chunk in response.content.iter_any():
                for data in decoder.feed(chunk):
                    if data.strip() == "[DONE]":
                        done = True
                        break
                    text, reason, used = _event(data)
                    finish = reason or finish
                    usage = used or usage
                    if text:
                        yield text
                if done:
                    break
            if not done:
                for data in decoder.close():
                    if data.strip() == "[DONE]":
                        done = True
        if not done:
            raise ConnectionLostError(
                f"The answer from {shown_url} was cut off before its end (the stream "
                "closed without [DONE])"
            )
        if usage is not None:
            yield usage
        yield FinishReason(finish or "stop")


class Target:
    """An endpoint's checked base URL, its chat URL (and that URL as messages show it, secrets
    masked), the request headers (never changed once made) and the retry policy."""

    __slots__ = ("base_url", "chat_url", "headers", "policy", "shown_url")

    def __init__(self, base_url: str, headers: dict[str, str], policy: Policy) -> None:
        self.base_url = base_url
        self.chat_url = f"{base_url}/chat/completions"
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


def _event(data: str) -> tuple[str, str | None, Usage | None]:
    """``(text, finish_reason, usage)`` of one streamed chunk."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise ResponseShapeError(f"a streamed event is not JSON: {data[:120]!r}") from None
    if not isinstance(chunk, dict):
        raise ResponseShapeError(f"a streamed event is {type(chunk).__name__}, not an object")
    if "error" in chunk:
        raise ResponseError(f"The endpoint sent an error mid-answer: {_error_text(data)[0]}")
    text = ""
    finish = None
    choices = chunk.get("choices") or []
    if choices and isinstance(choices[0], dict):
        delta = choices[0].get("delta") or {}
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str):
            text = content
        finish = choices[0].get("finish_reason")
    return text, finish, _usage(chunk.get("usage"))


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
        url = f"{target.base_url}/models"
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
