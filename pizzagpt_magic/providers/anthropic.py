"""``Anthropic``: Claude through Anthropic's own Messages API on aiohttp, in the gpt4free provider
interface; a peer of ``OpenAICompatible``, with the same arguments and results.

It takes the OpenAI-style messages every provider takes and sends them in the Messages form:
system messages as the top-level ``system``, ``image_url`` parts as ``image`` blocks (base64 for
a ``data:`` URL), ``max_tokens`` always (``default_max_tokens`` when none is given), headers
``x-api-key`` and ``anthropic-version: 2023-06-01``. ``create_async_generator`` yields the
answer's text as it arrives (the Messages server-sent events with ``stream=True``, one chunk
otherwise), then the token ``Usage`` (with the prompt cache's counts) and the ``FinishReason``:
``end_turn`` and ``stop_sequence`` are ``"stop"`` and ``max_tokens`` is ``"length"``, as for the
other providers. Requests go through ``transport.send``: the same retries (429 and 529
``overloaded_error`` among them, honouring ``retry-after``), proxies, redirects and typed errors.

A ``response_format`` of the ``json_schema`` kind (the form the OpenAI-compatible provider sends)
is asked for in the Messages API's native form, a tool the model must call whose input schema is
the schema (``forced_tool``); the tool's input is then the answer's text, as JSON.

``create_tool_generator`` offers tools the model may call (``tool_use`` blocks, yielded as
``ToolCalls``), as ``OpenAICompatible.create_tool_generator`` does with the same arguments and
results; ``to_messages`` sends the calls back as ``tool_use`` blocks and their results as
``tool_result`` blocks.

The base URL is the service's root (``https://api.anthropic.com``, or ``$ANTHROPIC_BASE_URL`` as the
official SDK reads it); the routes ``/v1/messages`` and ``/v1/models`` are added to it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from .._version import __version__
from ..errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionLostError,
    HTTPStatusError,
    ModelNotFoundError,
    NonJSONResponseError,
    PizzagptError,
    PromptError,
    ResponseError,
    ResponseShapeError,
)
from ..transport import (
    Policy,
    _getenv,
    _shown,
    check_url,
    mask_error,
    open_response,
    read_body,
    reading_body,
    send,
)
from .base import AsyncGeneratorProvider, AsyncResult, FinishReason, Messages, Usage
from .tool_calls import ToolCall, ToolCalls, ToolUseBlocks, messages_tools, parse_tool_use

__all__ = [
    "API_VERSION",
    "DEFAULT_BASE_URL",
    "STOP_REASONS",
    "Anthropic",
    "ForcedTool",
    "MessagesDecoder",
    "forced_tool",
    "list_models",
    "parse_message",
    "to_messages",
]

#: The API version the documentation asks for in ``anthropic-version``.
API_VERSION = "2023-06-01"
DEFAULT_BASE_URL = "https://api.anthropic.com"
#: Statuses retried, as the official SDK does (529 is ``overloaded_error``).
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
#: ``stop_reason`` as the finish reason every provider gives; others pass through as they are.
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_UTF8_NAMES = frozenset({"utf-8", "utf8"})
_KEYLIKE = re.compile(r"\b(?:sk|key|pk|rk)[-_][A-Za-z0-9*_\-.]{4,}")
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.S)
#: Models a page of ``GET /v1/models`` asks for (the API's largest), and pages read at most.
_MODEL_PAGE_SIZE = 1000
_MODEL_PAGES = 10


class MessagesDecoder:
    """Server-sent events, with their names, from bytes that arrive split anywhere.

    ``feed`` returns ``(event, data)`` for every event completed by the new bytes: comment lines
    (``:`` keep-alive pings) and the ``id`` and ``retry`` fields are skipped, several ``data:``
    lines are joined with newlines, as the format says. An event with neither a name nor data is
    no event.

    A line that spans pieces is joined once, at its end, so a long line costs time in proportion
    to its length; ``max_event_bytes`` bounds one event (a ``ResponseError``, after the events
    completed before it).
    """

    __slots__ = (
        "_data",
        "_error",
        "_event",
        "_pending",
        "_pieces",
        "_size",
        "_skip_lf",
        "max_event_bytes",
    )

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self.max_event_bytes = max_event_bytes
        self._pieces: list[bytes] = []  # the unfinished line, and its size
        self._pending = 0
        self._size = 0  # the unfinished event's complete lines
        self._data: list[str] = []
        self._event = ""
        self._skip_lf = False
        self._error: ResponseError | None = None

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        if self._error is not None:
            raise self._error
        if not chunk:
            return []
        if self._skip_lf:
            # A CR ended the last piece: a LF starting this one belongs to the same break.
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\n" not in chunk and b"\r" not in chunk:
            if chunk:
                self._pieces.append(chunk)
                self._pending += len(chunk)
                self._check([])
            return []
        *lines, rest = _LINE_BREAK.split(chunk)
        if rest == b"" and chunk.endswith(b"\r"):
            self._skip_lf = True
        if self._pieces:
            lines[0] = b"".join([*self._pieces, lines[0]])
            self._pieces = []
        self._pending = len(rest)
        if rest:
            self._pieces.append(rest)
        events = list(self._lines(lines))
        self._check(events)
        return events

    def close(self) -> list[tuple[str, str]]:
        """Events left when the stream ended (a last event without its blank line)."""
        if self._error is not None:
            raise self._error
        lines = [b"".join(self._pieces)] if self._pieces else []
        self._pieces = []
        self._pending = 0
        return [*self._lines(lines), *self._lines([b""])]

    def _check(self, events: list[tuple[str, str]]) -> None:
        """Over the limit: an error now, or, after the events completed before it, at the
        next call."""
        limit = self.max_event_bytes
        if limit is None or self._size + self._pending <= limit:
            return
        self._pieces, self._data, self._size, self._pending = [], [], 0, 0
        self._error = ResponseError(
            f"A streamed event is over {limit:,} bytes (Anthropic.max_event_bytes); the answer "
            "was stopped there"
        )
        if not events:
            raise self._error

    def _lines(self, lines: list[bytes]) -> Iterator[tuple[str, str]]:
        for raw in lines:
            if not raw:
                if self._data or self._event:
                    yield self._event, "\n".join(self._data)
                self._data = []
                self._event = ""
                self._size = 0
                continue
            self._size += len(raw)
            line = raw.decode("utf-8", "replace")
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value


_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


# -- messages ----------------------------------------------------------------------------------


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type", "text") == "text"
        )
    return "" if content is None else str(content)


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = str(image.get("url", "") if isinstance(image, dict) else image or "")
    if url.startswith("data:"):
        match = _DATA_URL.fullmatch(url)
        if match is None:
            raise PromptError("An image's data: URL must be base64 (data:image/png;base64,...)")
        media_type, data = match.groups()
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if not url:
        raise PromptError("An image part has no URL")
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> Any:
    """A message's content in the Messages form: text as it is, parts as blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return _text(content)
    blocks = []
    for part in content:
        if isinstance(part, str):
            blocks.append({"type": "text", "text": part})
        elif not isinstance(part, dict):
            raise PromptError(f"A message part is {type(part).__name__}, not a dict")
        elif part.get("type") == "image_url":
            blocks.append(_image_block(part))
        elif part.get("type", "text") == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        else:  # a block already in the Messages form (image, document, tool_result ...)
            blocks.append(part)
    return blocks


def _tool_use_turn(message: Mapping[str, Any]) -> dict[str, Any]:
    """An assistant message that called tools (``tool_calls.assistant_message``): its text, if
    any, then a ``tool_use`` block a call, the arguments as the JSON object they hold."""
    content = message.get("content")
    blocks = _blocks(content) if content else []
    if isinstance(blocks, str):
        blocks = [{"type": "text", "text": blocks}]
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise PromptError("A tool call of an assistant message has no function")
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError):
            arguments = None
        blocks.append(
            {
                "type": "tool_use",
                "id": str(call.get("id", "")),
                "name": str(function.get("name", "")),
                # The API takes an object; the call ran (and failed) with what the model wrote.
                "input": arguments if isinstance(arguments, dict) else {},
            }
        )
    return {"role": "assistant", "content": blocks}


def _tool_result(message: Mapping[str, Any]) -> dict[str, Any]:
    """A ``role: tool`` message (``tool_calls.tool_message``) as a ``tool_result`` block."""
    call_id = message.get("tool_call_id")
    if not call_id:
        raise PromptError("A tool message needs the tool_call_id of the call it answers")
    return {
        "type": "tool_result",
        "tool_use_id": str(call_id),
        "content": _blocks(message.get("content")),
    }


def to_messages(messages: Messages) -> tuple[str | None, list[dict[str, Any]]]:
    """``(system, messages)`` in the Messages form: the system messages' text, joined by blank
    lines (None when there is none), and the user and assistant messages with their content as
    blocks.

    An assistant message with ``tool_calls`` becomes ``tool_use`` blocks after its text, and the
    ``role: tool`` results that follow it become ``tool_result`` blocks, all of one turn in one
    user message, as the Messages API wants them."""
    system: list[str] = []
    converted: list[dict[str, Any]] = []
    results: list[dict[str, Any]] | None = None  # the tool_result blocks of the open turn
    for message in messages:
        role = message.get("role")
        if role == "tool":
            if results is None:
                results = []
                converted.append({"role": "user", "content": results})
            results.append(_tool_result(message))
            continue
        results = None
        if role == "system":
            system.append(_text(message.get("content")))
        elif role == "assistant" and message.get("tool_calls"):
            converted.append(_tool_use_turn(message))
        elif role in ("user", "assistant"):
            converted.append({"role": role, "content": _blocks(message.get("content"))})
        else:
            raise PromptError(
                f"The Messages API takes user, assistant and tool messages, not {role!r}"
            )
    if not converted:
        raise PromptError("The Messages API needs a user message, not only a system message")
    return "\n\n".join(s for s in system if s) or None, converted


class ForcedTool:
    """The tool a schema is asked for by: its definition, and whether the schema (not an object
    at its top) was wrapped as the ``value`` of one."""

    __slots__ = ("name", "tool", "wrapped")

    def __init__(self, name: str, tool: dict[str, Any], wrapped: bool) -> None:
        self.name = name
        self.tool = tool
        self.wrapped = wrapped

    def text(self, data: Any) -> str:
        """The answer's text from the tool's input: the JSON of the value asked for."""
        if self.wrapped and isinstance(data, dict):
            data = data.get("value")
        return json.dumps(data, ensure_ascii=False)


def forced_tool(response_format: Any) -> ForcedTool | None:
    """The tool that asks for a ``response_format`` of the ``json_schema`` kind (None for any
    other: the Messages API has no JSON mode, and a prompt asking for JSON does as well)."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    spec = spec if isinstance(spec, dict) else {}
    name = re.sub(r"[^A-Za-z0-9_-]", "_", str(spec.get("name") or "answer"))[:64]
    schema = spec.get("schema")
    schema = schema if isinstance(schema, dict) else {}
    # A tool's input is an object: any other schema is the value of one.
    wrapped = schema.get("type") != "object"
    if wrapped:
        schema = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
    description = spec.get("description") or "Give the answer, in exactly this shape."
    tool = {"name": name, "description": str(description), "input_schema": schema}
    return ForcedTool(name, tool, wrapped)


# -- answers -----------------------------------------------------------------------------------


def _error_text(body: str) -> tuple[str, str]:
    """``(message, type)`` of a Messages API error body (or the body's start)."""
    try:
        data = json.loads(body)
    except ValueError:
        return " ".join(body.split())[:200], ""
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        message = error.get("message") or json.dumps(error)[:200]
        return " ".join(str(message).split()), str(error.get("type") or error.get("code") or "")
    return " ".join(str(error).split())[:200], ""


def _finish(stop_reason: Any) -> str | None:
    if not isinstance(stop_reason, str):
        return None
    return STOP_REASONS.get(stop_reason, stop_reason)


_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


def _count(counts: dict[str, int], usage: Any) -> None:
    """Take the counts ``usage`` reports (each is a running total, so a later one replaces)."""
    if isinstance(usage, dict):
        for name in _COUNTS:
            value = usage.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                counts[name] = value


def usage_of(counts: dict[str, int]) -> Usage | None:
    """The ``Usage`` of a Messages answer's counts.

    ``prompt_tokens`` is every token of the prompt, as for the other providers: the Messages
    API's ``input_tokens`` leaves out those read from or written to the prompt cache, so they
    are added to it, and reported on their own as well.
    """
    if not counts:
        return None
    read = counts.get("cache_read_input_tokens")
    written = counts.get("cache_creation_input_tokens")
    prompt = counts.get("input_tokens")
    if prompt is not None:
        prompt += (read or 0) + (written or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=counts.get("output_tokens"),
        cache_read_input_tokens=read,
        cache_creation_input_tokens=written,
    )


def parse_message(
    data: Any, forced: ForcedTool | None = None, calls: list[ToolCall] | None = None
) -> tuple[str, str | None, Usage | None]:
    """``(text, finish_reason, usage)`` of a non-streamed Messages answer; with ``forced``, the
    text is the JSON of the forced tool's input. ``calls``, when given, gets the answer's
    ``tool_use`` blocks."""
    if not isinstance(data, dict):
        raise ResponseShapeError(f"expected a JSON object, got {type(data).__name__}", data)
    if data.get("type") == "error" or ("error" in data and "content" not in data):
        message, kind = _error_text(json.dumps(data))
        raise ResponseError(f"The endpoint sent an error: {kind + ': ' if kind else ''}{message}")
    content = data.get("content")
    if not isinstance(content, list):
        raise ResponseShapeError("no 'content' list in the answer", data)
    text = "".join(
        block["text"]
        for block in content
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )
    counts: dict[str, int] = {}
    _count(counts, data.get("usage"))
    finish = _finish(data.get("stop_reason"))
    if calls is not None:
        calls.extend(parse_tool_use(content))
    if forced is not None:
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                if block.get("name") == forced.name:
                    # The answer asked for: complete, not a call for the caller to make.
                    text = forced.text(block.get("input"))
                    finish = "stop" if finish == "tool_calls" else finish
                    break
    return text, finish, usage_of(counts)


def _read_event(
    name: str, data: str, counts: dict[str, int], who: str, calls: ToolUseBlocks | None = None
) -> tuple[str, str | None]:
    """``(text, stop_reason)`` of one streamed event; its usage goes into ``counts``, and, when
    ``calls`` is given, its ``tool_use`` block or input piece into ``calls``."""
    if name == "error":
        message, kind = _error_text(data)
        message = _KEYLIKE.sub("***", message)
        raise ResponseError(
            f"{who} sent an error mid-answer: {kind + ': ' if kind else ''}{message or 'no detail'}"
        )
    # As the official SDK reads a stream: events without a name, and pings, carry nothing.
    if not name or name == "ping" or not data:
        return "", None
    try:
        event = json.loads(data)
    except ValueError:
        raise ResponseShapeError(f"a streamed event is not JSON: {data[:120]!r}") from None
    if not isinstance(event, dict):
        raise ResponseShapeError(f"a streamed event is {type(event).__name__}, not an object")
    if name == "content_block_delta":
        delta = event.get("delta")
        if isinstance(delta, dict) and delta.get("type") == "text_delta":
            text = delta.get("text")
            return (text if isinstance(text, str) else ""), None
        if (
            calls is not None
            and isinstance(delta, dict)
            and delta.get("type") == "input_json_delta"
        ):
            calls.delta(event.get("index"), delta.get("partial_json"))
    elif name == "content_block_start":
        block = event.get("content_block")
        if isinstance(block, dict) and block.get("type") == "text":
            start = block.get("text")
            return (start if isinstance(start, str) else ""), None
        if calls is not None and isinstance(block, dict) and block.get("type") == "tool_use":
            calls.start(event.get("index"), block)
    elif name == "message_delta":
        _count(counts, event.get("usage"))
        delta = event.get("delta")
        return "", (delta.get("stop_reason") if isinstance(delta, dict) else None)
    elif name == "message_start":
        started = event.get("message")
        if isinstance(started, dict):
            counts.clear()
            _count(counts, started.get("usage"))
            content = started.get("content")
            if isinstance(content, list) and content:
                if calls is not None:
                    for index, block in enumerate(content):
                        if isinstance(block, dict) and block.get("type") == "tool_use":
                            calls.start(index, block)
                return parse_message(started)[0], None
    return "", None


class _ModelMissing(Exception):
    def __init__(self, detail: str) -> None:
        self.detail = detail


class Target:
    """An endpoint's checked base URL, its messages URL (and that URL as messages show it,
    secrets masked), the request headers (never changed once made) and the retry policy."""

    __slots__ = ("base_url", "headers", "messages_url", "policy", "shown_url")

    def __init__(self, base_url: str, headers: dict[str, str], policy: Policy) -> None:
        self.base_url = base_url
        self.messages_url = f"{base_url}/v1/messages"
        self.shown_url = _shown(self.messages_url, policy.secrets)
        self.headers = headers
        self.policy = policy


class Anthropic(AsyncGeneratorProvider):
    """Provider for Anthropic's Messages API (Claude), or any server that speaks it."""

    label: ClassVar[str] = "anthropic"
    working: ClassVar[bool] = True
    supports_stream: ClassVar[bool] = True
    supports_message_history: ClassVar[bool] = True
    supports_system_message: ClassVar[bool] = True
    #: ``max_tokens`` sent when none is given (the API requires one): within every Claude
    #: model's output limit.
    default_max_tokens: ClassVar[int] = 4096
    timeout: ClassVar[float] = 60.0
    connect_timeout: ClassVar[float] = 10.0
    max_retries: ClassVar[int] = 2
    backoff_base: ClassVar[float] = 0.5
    backoff_max: ClassVar[float] = 30.0
    max_retry_after: ClassVar[float] = 60.0
    #: Seconds ``list_models`` waits for ``GET /v1/models``.
    models_timeout: ClassVar[float] = 3.0
    #: The largest streamed event read, in bytes, and the longest answer, in characters.
    max_event_bytes: ClassVar[int] = 16 * 1024 * 1024
    max_answer_chars: ClassVar[int] = 64 * 1024 * 1024

    @staticmethod
    def api_key(api_key_env: str | None, name: str) -> str | None:
        """The key in ``$api_key_env``; a ``ConfigurationError`` naming the variable when it
        is unset (nothing is sent then). No variable: no key (a local server may need none)."""
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
            "anthropic-version": API_VERSION,
        }
        if key:
            headers["x-api-key"] = key
        return headers

    @classmethod
    def body(
        cls,
        model: str,
        messages: Messages,
        stream: bool,
        temperature: float | None = None,
        max_tokens: int | None = None,
        forced: ForcedTool | None = None,
        options: Mapping[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The request body: ``max_tokens`` always, other parameters only when given, then the
        model options (``top_k``, ``thinking``, ...; checked and in canonical order, see
        ``pizzagpt_magic.options``); ``forced`` is a tool the model must call
        (``forced_tool``), ``tools`` those it may call (in the OpenAI ``tools`` format)."""
        system, converted = to_messages(messages)
        body: dict[str, Any] = {
            "model": model,
            "messages": converted,
            "max_tokens": cls.default_max_tokens if max_tokens is None else max_tokens,
        }
        if system is not None:
            body["system"] = system
        if temperature is not None:
            body["temperature"] = temperature
        if options:
            body.update(options)
        if tools:
            body["tools"] = messages_tools(tools)
        if forced is not None:
            body["tools"] = [forced.tool]
            body["tool_choice"] = {"type": "tool", "name": forced.name}
        if stream:
            body["stream"] = True
        return body

    @classmethod
    def target(
        cls, base_url: str, api_key_env: str | None, name: str, max_retries: int | None = None
    ) -> Target:
        """Where and how an endpoint's requests go, made once per settings and key (the key is
        read from ``$api_key_env`` at each call, so a changed key is used at once)."""
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
            message, kind = _error_text(body)
            message = _KEYLIKE.sub("***", message)
            if status in (401, 403):
                said = f": {message}" if message else ""
                if api_key_env:
                    text = f"{name} refused the API key in {api_key_env} (HTTP {status}{said})"
                else:
                    text = (
                        f"{name} needs an API key (HTTP {status}{said}); register the endpoint "
                        "with api_key_env naming the variable that holds it"
                    )
                return AuthenticationError(status, reason, url, text)
            if status == 404 and kind == "not_found_error" and "model" in message.lower():
                return _ModelMissing(message)
            detail = f"{kind}: {message}" if kind and message else message or kind
            return HTTPStatusError(status, reason, url, retry_after, detail)

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
        forced: ForcedTool | None = None,
        options: Mapping[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> tuple[Any, Target]:
        """The open 2xx response to the request, and where it went."""
        if not model:
            raise ConfigurationError(f"Name a model for {name}: {name}:MODEL")
        if not messages:
            raise PromptError("Cannot send an empty message list")
        body = cls.body(model, messages, stream, temperature, max_tokens, forced, options, tools)
        target = cls.target(base_url, api_key_env, name, max_retries)
        try:
            response = await send(
                "POST",
                target.messages_url,
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
            raise ModelNotFoundError(
                name, model, [] if isinstance(models, str) else models, exc.detail
            ) from None
        return response, target

    @classmethod
    async def complete(
        cls,
        model: str,
        messages: Messages,
        proxy: str | None = None,
        *,
        base_url: str | None = None,
        api_key_env: str | None = "ANTHROPIC_API_KEY",
        name: str = "",
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        max_retries: int | None = None,
        response_format: dict[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> tuple[str, str | None, Usage | None]:
        """``(text, finish_reason, usage)`` of one answer asked for without streaming
        (``response_format`` as ``answer`` takes it)."""
        return await cls.answer(
            base_url or default_base_url(),
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
            response_format,
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
        """``complete`` with its arguments in order, as ``OpenAICompatible.answer`` takes them.

        A ``response_format`` of the ``json_schema`` kind is asked for as a forced tool, and
        the answer's text is the JSON of its input (see ``forced_tool``)."""
        name = name or cls.label
        forced = forced_tool(response_format)
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
            forced,
            options,
        )
        try:
            raw = await read_body(response, target.shown_url, timeout, target.policy.secrets)
            return cls._parse_body(raw, response, forced)
        except PizzagptError as exc:  # whatever text of the server's it quotes: no key
            raise mask_error(exc, target.policy.secrets) from None
        finally:
            response.release()

    @classmethod
    def _parse_body(
        cls,
        raw: bytes,
        response: Any,
        forced: ForcedTool | None = None,
        calls: list[ToolCall] | None = None,
    ) -> tuple[str, str | None, Usage | None]:
        if len(raw) > cls.max_answer_chars:
            raise ResponseError(
                f"The answer is {len(raw):,} bytes, over {cls.max_answer_chars:,} "
                "(Anthropic.max_answer_chars)"
            )
        charset = response.charset
        if charset is None or charset.lower() in _UTF8_NAMES:
            charset = "utf-8"
        try:
            data = json.loads(raw.decode(charset, "replace"))
        except (ValueError, LookupError):
            text = raw.decode("utf-8", "replace")
            raise NonJSONResponseError(response.content_type, text[:200]) from None
        return parse_message(data, forced, calls)

    @classmethod
    async def create_async_generator(
        cls,
        model: str,
        messages: Messages,
        proxy: str | None = None,
        *,
        base_url: str | None = None,
        api_key_env: str | None = "ANTHROPIC_API_KEY",
        name: str = "",
        stream: bool = True,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        max_retries: int | None = None,
        response_format: dict[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> AsyncResult:
        """Yield the answer's text as it arrives, then ``Usage`` (when reported) and the
        ``FinishReason``.

        ``base_url`` is the service's root (``$ANTHROPIC_BASE_URL``, else
        ``https://api.anthropic.com``, as the official SDK has it); the key is read from
        ``$api_key_env``; ``name`` names the endpoint in messages. A ``response_format`` is
        asked for as ``answer`` does, without streaming (the tool's input is read whole). Other
        keyword arguments are accepted and ignored, as in gpt4free.
        """
        name = name or cls.label
        timeout = cls.timeout if timeout is None else timeout
        forced = forced_tool(response_format)
        stream = stream and forced is None
        response, target = await cls._send(
            base_url or default_base_url(),
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
            forced,
            options,
        )
        try:
            if response.headers.get("Content-Type", "").startswith("text/event-stream"):
                async for item in cls._events(response, target, timeout, name):
                    yield item
                return
            raw = await read_body(response, target.shown_url, timeout, target.policy.secrets)
            content, finish, usage = cls._parse_body(raw, response, forced)
        except PizzagptError as exc:  # whatever text of the server's it quotes: no key
            raise mask_error(exc, target.policy.secrets) from None
        finally:
            response.release()
        if content:
            yield content
        if usage is not None:
            yield usage
        yield FinishReason(finish or "stop")

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
        """One turn of a conversation with ``tools`` offered (in the OpenAI ``tools`` format,
        sent as the Messages API's tools), as ``OpenAICompatible.create_tool_generator`` has it:
        the answer's text as it arrives, then ``ToolCalls`` when the model called any (its
        ``tool_use`` blocks), ``Usage`` (when reported) and the ``FinishReason``
        (``"tool_calls"``).

        ``messages`` may hold the assistant's earlier calls and ``role: tool`` results (see
        ``to_messages``). An answer with calls and no text is a complete answer here.
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
            options=options,
            tools=tools,
        )
        calls: list[ToolCall] = []
        try:
            if response.headers.get("Content-Type", "").startswith("text/event-stream"):
                blocks = ToolUseBlocks()
                async for item in cls._events(response, target, timeout, name, blocks):
                    yield item
                return
            raw = await read_body(response, target.shown_url, timeout, target.policy.secrets)
            content, finish, usage = cls._parse_body(raw, response, calls=calls)
        except PizzagptError as exc:  # whatever text of the server's it quotes: no key
            raise mask_error(exc, target.policy.secrets) from None
        finally:
            response.release()
        if content:
            yield content
        if calls:
            yield ToolCalls(calls)
        if usage is not None:
            yield usage
        yield FinishReason(finish or ("tool_calls" if calls else "stop"))

    @classmethod
    async def _events(
        cls,
        response: Any,
        target: Target,
        timeout: float,
        name: str,
        calls: ToolUseBlocks | None = None,
    ) -> AsyncResult:
        """The events of a streamed answer: text as it comes, then usage and finish reason. A
        stream that ends before ``message_stop`` was cut off.

        With ``calls`` (tools offered), the ``tool_use`` blocks are gathered there and yielded
        as ``ToolCalls`` before the usage; their input counts towards ``max_answer_chars``."""
        decoder = MessagesDecoder(cls.max_event_bytes)
        stop_reason: str | None = None
        counts: dict[str, int] = {}
        size = 0
        done = False
        ended = False
        async with reading_body(target.shown_url, timeout, target.policy.secrets):
            chunks = response.content.iter_any()
            while not (done or ended):
                try:
                    events = decoder.feed(await chunks.__anext__())
                except StopAsyncIteration:
                    events, ended = decoder.close(), True
                for event, data in events:
                    if event == "message_stop":
                        done = True
                        break
                    text, reason = _read_event(event, data, counts, name, calls)
                    stop_reason = reason or stop_reason
                    if text or calls is not None:
                        size += len(text)
                        if size + (0 if calls is None else calls.chars) > cls.max_answer_chars:
                            raise ResponseError(
                                f"The answer is over {cls.max_answer_chars:,} characters "
                                "(Anthropic.max_answer_chars); it was stopped there"
                            )
                        if text:
                            yield text
        if not done:
            raise ConnectionLostError(
                f"The answer from {target.shown_url} was cut off before its end (the stream "
                "closed without message_stop)"
            )
        if calls:
            yield ToolCalls(calls.calls())
        usage = usage_of(counts)
        if usage is not None:
            yield usage
        yield FinishReason(_finish(stop_reason) or ("tool_calls" if calls else "stop"))


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


def default_base_url() -> str:
    """``$ANTHROPIC_BASE_URL``, else ``https://api.anthropic.com``, as the official SDK reads it."""
    return (_getenv("ANTHROPIC_BASE_URL") or "").strip() or DEFAULT_BASE_URL


async def list_models(
    base_url: str | None = None,
    api_key_env: str | None = "ANTHROPIC_API_KEY",
    *,
    name: str = "",
    proxy: str | None = None,
    timeout: float | None = None,
) -> list[str] | str:
    """The model ids ``GET {base_url}/v1/models`` lists (every page), or the one-line reason
    they could not be read (so that a list of providers can show an unreachable one)."""
    from ..errors import PizzagptError

    name = name or Anthropic.label
    timeout = Anthropic.models_timeout if timeout is None else timeout
    found: list[str] = []
    after = ""
    try:
        target = Anthropic.target(base_url or default_base_url(), api_key_env, name, 0)
        for _ in range(_MODEL_PAGES):
            url = f"{target.base_url}/v1/models?limit={_MODEL_PAGE_SIZE}"
            if after:
                from urllib.parse import quote

                url += f"&after_id={quote(after, safe='')}"
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
                    page = json.loads(await response.read())
            entries = page.get("data") if isinstance(page, dict) else None
            if not isinstance(entries, list):
                return "the model list is not in the Messages API's format"
            found += [
                str(entry.get("id"))
                for entry in entries
                if isinstance(entry, dict) and "id" in entry
            ]
            last = page.get("last_id")
            if not page.get("has_more") or not isinstance(last, str) or not last:
                break
            after = last
    except _ModelMissing as exc:
        return exc.detail
    except (PizzagptError, ValueError) as exc:
        return str(exc)
    return sorted(found)
