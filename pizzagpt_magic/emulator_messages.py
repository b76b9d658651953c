"""The emulator's Anthropic Messages API routes: ``POST /v1/messages`` (streamed as the Messages
server-sent events with ``"stream": true``) and ``GET /v1/models`` in the Messages form.

They answer as the OpenAI-compatible routes do (the same deterministic text for the last user
message, the same fault markers), in the Messages API's shapes: ``x-api-key`` (with
``--api-key``) and ``anthropic-version`` are required, ``max_tokens`` is required and cuts the
answer at that many words (``stop_reason: max_tokens``), ``temperature`` must be within 0 to 1, an
unknown model is a 404 ``not_found_error``, a ``system`` role among the messages is a 400
``invalid_request_error``, 429 is ``rate_limit_error`` and 529 ``overloaded_error``. Usage counts
words; the faults ``cache-read=N`` and ``cache-write=N`` report that many prompt tokens read from
and written to the prompt cache.

A ``tool_choice`` that names one of the request's ``tools`` is answered with a ``tool_use`` block
(``input_json_delta`` events when streamed) whose input is the simplest value of the tool's
``input_schema``: each property present, strings ``"emulated"``, integers the number of words of
the question, numbers that and a half, booleans true, arrays of one item, the first of an enum.

Tools, as the OpenAI-compatible routes have them (a request with ``tools`` and no forced
``tool_choice``): a question holding ``[[tool:NAME(JSON args)]]`` markers is answered with a
``tool_use`` block a marker (``stop_reason: tool_use``; streamed, each block opened by
``content_block_start`` and its input sent as ``input_json_delta`` pieces of ``chunk-size``
characters); once the results came back as ``tool_result`` blocks, the answer quotes each
result, verbatim. With ``[[tool-repeat]]`` in the question it calls them again in every answer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from typing import TYPE_CHECKING, Any

from aiohttp import web

__all__ = ["MESSAGES_MODELS", "MessagesRoutes", "anthropic_error"]

#: The models the Messages routes serve.
MESSAGES_MODELS = ("emu-claude", "emu-claude-mini")
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error(
    status: int, message: str, kind: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """An error answer in the Messages API's form."""
    kind = kind or _ERROR_TYPES.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    return web.json_response(
        {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_emu"},
        status=status,
        headers=headers,
    )


def _text_of(content: Any) -> str:
    """The text of a message's content: its text blocks, and the content of its tool results."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(b.get("text", "")) if b.get("type") == "text" else _text_of(b.get("content"))
            for b in content
            if isinstance(b, dict) and b.get("type") in ("text", "tool_result")
        )
    return ""


def _only_results(message: dict[str, Any]) -> bool:
    """Whether a user message only carries tool results back (no question of its own)."""
    content = message.get("content")
    return (
        isinstance(content, list)
        and bool(content)
        and all(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
    )


def _blocks_of(message: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    content = message.get("content")
    return [
        b
        for b in (content if isinstance(content, list) else [])
        if isinstance(b, dict) and b.get("type") == kind
    ]


def _messages_tool_turn(messages: list[Any]) -> tuple[list[Any], list[tuple[str, str, str]]]:
    """As ``emulator._tool_turn``, in the Messages form: since the last user message that asks
    something, the assistant messages with ``tool_use`` blocks, and each ``tool_result``
    received as ``(tool name, arguments as JSON, result)``."""
    asking = max(
        (
            i
            for i, m in enumerate(messages)
            if isinstance(m, dict) and m.get("role") == "user" and not _only_results(m)
        ),
        default=-1,
    )
    later = [m for m in messages[asking + 1 :] if isinstance(m, dict)]
    asked = [m for m in later if m.get("role") == "assistant" and _blocks_of(m, "tool_use")]
    called = {
        str(block.get("id")): (str(block.get("name")), json.dumps(block.get("input")))
        for message in asked
        for block in _blocks_of(message, "tool_use")
    }
    results = [
        (*called.get(str(block.get("tool_use_id")), ("?", "")), _text_of(block.get("content")))
        for message in later
        if message.get("role") == "user"
        for block in _blocks_of(message, "tool_result")
    ]
    return asked, results


def _tool_uses(markers: list[tuple[str, str]], round_number: int) -> list[dict[str, Any]]:
    """The ``tool_use`` blocks of a question's markers (arguments that are no JSON object are
    sent as ``{}``: the API's input is always one)."""
    blocks = []
    for number, (name, arguments) in enumerate(markers):
        try:
            value = json.loads(arguments.strip() or "{}")
        except ValueError:
            value = None
        blocks.append(
            {
                "type": "tool_use",
                "id": f"toolu_{round_number}_{number}",
                "name": name,
                "input": value if isinstance(value, dict) else {},
            }
        )
    return blocks


def _images_of(content: Any) -> list[str]:
    """What the image blocks of a message are: ``"PNG 640×480"`` each (or their media type)."""
    found = []
    for block in content if isinstance(content, list) else []:
        if not (isinstance(block, dict) and block.get("type") == "image"):
            continue
        source = block.get("source") or {}
        if source.get("type") != "base64":
            found.append("a URL")
            continue
        try:
            blob = base64.b64decode(str(source.get("data", ""))[:64])
        except ValueError:
            blob = b""
        if blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) >= 24:
            width, height = struct.unpack(">II", blob[16:24])
            found.append(f"PNG {width}×{height}")
        else:
            found.append(str(source.get("media_type", "an image")))
    return found


def example_of(schema: Any, words: int) -> Any:
    """The simplest value of a JSON Schema (see the module's docstring)."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_of(schema[key][0], words)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        return {name: example_of(value, words) for name, value in properties.items()}
    return {
        "array": lambda: [example_of(schema.get("items"), words)],
        "string": lambda: "emulated",
        "integer": lambda: words,
        "number": lambda: words + 0.5,
        "boolean": lambda: True,
    }.get(str(kind), lambda: None)()


def _forced_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    choice = body.get("tool_choice")
    if not isinstance(choice, dict) or choice.get("type") != "tool":
        return None
    tools = body.get("tools")
    if not isinstance(tools, list):
        return None
    return next(
        (t for t in tools if isinstance(t, dict) and t.get("name") == choice.get("name")), None
    )


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


class MessagesRoutes:
    """The Messages routes, mixed into ``Emulator`` (which brings the key, the faults, the
    latency and the statistics)."""

    api_key: str | None
    chunk_delay: float
    questions: list[str]
    #: The Messages requests seen: ``{"body": ..., "headers": ...}`` each.
    message_requests: list[dict[str, Any]]

    if TYPE_CHECKING:  # what ``Emulator`` brings

        async def _counted(self, request: web.Request, answer: Any) -> web.StreamResponse: ...
        def _choose_fault(self, request: web.Request, question: str) -> dict[str, Any]: ...
        async def _wait(self, fault: dict[str, Any]) -> None: ...
        @staticmethod
        def _retry_after(fault: dict[str, Any]) -> dict[str, str]: ...
        async def _drop(self, request: web.Request) -> web.StreamResponse: ...

    def _refuse_anthropic_key(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get("x-api-key") == self.api_key:
            return None
        return anthropic_error(401, "invalid x-api-key", "authentication_error")

    async def handle_anthropic_models(self, request: web.Request) -> web.Response:
        refused = self._refuse_anthropic_key(request)
        if refused is not None:
            return refused
        models = list(MESSAGES_MODELS)
        after = request.query.get("after_id")
        if after in models:
            models = models[models.index(after) + 1 :]
        limit = int(request.query.get("limit", "20"))
        page = models[:limit]
        return web.json_response(
            {
                "data": [
                    {
                        "type": "model",
                        "id": m,
                        "display_name": m.replace("-", " ").title(),
                        "created_at": "2026-01-01T00:00:00Z",
                    }
                    for m in page
                ],
                "has_more": len(models) > limit,
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }
        )

    async def handle_messages(self, request: web.Request) -> web.StreamResponse:
        return await self._counted(request, self._messages)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        refused = self._refuse_anthropic_key(request)
        if refused is not None:
            return refused
        if not request.headers.get("anthropic-version"):
            return anthropic_error(400, "anthropic-version: header is required")
        try:
            body = await request.json()
        except ValueError:
            return anthropic_error(400, "The body is not JSON")
        if not isinstance(body, dict):
            return anthropic_error(400, "The body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return anthropic_error(400, "messages: Field required")
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return anthropic_error(400, "max_tokens: Field required")
        temperature = body.get("temperature")
        if temperature is not None and not (
            isinstance(temperature, (int, float)) and 0 <= temperature <= 1
        ):
            return anthropic_error(400, "temperature: range: 0..1")
        roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
        if any(role not in ("user", "assistant") for role in roles):
            bad = next(r for r in roles if r not in ("user", "assistant"))
            return anthropic_error(
                400,
                f'messages: Unexpected role "{bad}". The Messages API accepts a top-level '
                '`system` parameter, not "system" as an input message role.',
            )
        self.message_requests.append({"body": body, "headers": dict(request.headers)})
        model = body.get("model")
        if model not in MESSAGES_MODELS:
            return anthropic_error(404, f"model: {model}")
        return await self._answer_messages(request, body, messages, model, max_tokens)

    async def _answer_messages(
        self,
        request: web.Request,
        body: dict[str, Any],
        messages: list[dict[str, Any]],
        model: str,
        max_tokens: int,
    ) -> web.StreamResponse:
        from .emulator import _TOOL_MARKER, HTML_PAGE, _large, _quote_results, make_answer

        users = [m for m in messages if m.get("role") == "user" and not _only_results(m)]
        question = _text_of(users[-1].get("content")) if users else ""
        self.questions.append(question)
        system = _text_of(body.get("system"))
        everything = "\n".join([system, *(_text_of(m.get("content")) for m in messages)])
        fault = self._choose_fault(request, everything)
        await self._wait(fault)
        if "status" in fault:
            status = fault["status"]
            retry = self._retry_after(fault)
            return anthropic_error(status, f"emulated status {status}", headers=retry)
        if fault.get("html"):
            return web.Response(text=HTML_PAGE, content_type="text/html")
        if fault.get("drop"):
            return await self._drop(request)
        tool = _forced_tool(body)
        markers = _TOOL_MARKER.findall(question) if body.get("tools") and tool is None else []
        tool_turn = _messages_tool_turn(messages) if markers else None
        calling = tool_turn is not None and (not tool_turn[0] or "[[tool-repeat]]" in question)
        if calling or fault.get("empty"):
            content = ""
        elif tool_turn is not None:
            content = _quote_results(model, *tool_turn)
        elif "large" in fault:
            content = _large(fault["large"])
        else:
            content = make_answer(question, model)
            if len(messages) > 1:
                content += f"\n\nThe conversation so far has {len(messages)} messages."
            if system:
                content += f"\n\nThe system message has {len(system)} characters."
            seen = _images_of(users[-1].get("content") if users else None)
            if seen:
                content += f"\n\nThe question holds {len(seen)} image(s): {', '.join(seen)}."
        stop = "end_turn"
        words = content.split(" ")
        if len(words) > max_tokens:
            content = " ".join(words[:max_tokens])
            stop = "max_tokens"
        usage = {
            "input_tokens": len(everything.split()),
            "output_tokens": len(content.split()),
            "cache_creation_input_tokens": fault.get("cache-write", 0),
            "cache_read_input_tokens": fault.get("cache-read", 0),
        }
        blocks: list[dict[str, Any]] = [{"type": "text", "text": content}] if content else []
        if calling:
            assert tool_turn is not None
            blocks = _tool_uses(markers, len(tool_turn[0]))
            stop = "tool_use"
            usage["output_tokens"] = sum(len(json.dumps(b["input"]).split()) + 1 for b in blocks)
        elif tool is not None:
            value = example_of(tool.get("input_schema"), len(question.split()))
            use = {"type": "tool_use", "id": "toolu_emulated", "name": tool["name"], "input": value}
            blocks = [use]
            stop = "tool_use"
            usage["output_tokens"] = len(json.dumps(value).split())
        message = {
            "id": "msg_emulated",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            if fault.get("invalid-json"):
                return web.Response(text='{"content": [{"ty', content_type="application/json")
            return web.json_response(message)
        return await self._stream_messages(request, message, fault)

    async def _stream_messages(
        self, request: web.Request, message: dict[str, Any], fault: dict[str, Any]
    ) -> web.StreamResponse:
        """Every content block with its index: ``content_block_start``, its text (``text_delta``)
        or input (``input_json_delta``) in pieces of ``chunk-size`` characters, then
        ``content_block_stop``. The faults ``cut``, ``stream-error`` and ``invalid-json`` strike
        at the middle piece of the whole answer."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        blocks = message["content"] or [{"type": "text", "text": ""}]
        usage = message["usage"]
        size = max(1, fault.get("chunk-size", 12))
        pause = fault.get("chunk-delay", self.chunk_delay)
        pieces_of = []
        for block in blocks:
            content = json.dumps(block["input"]) if block["type"] == "tool_use" else block["text"]
            pieces_of.append([content[i : i + size] for i in range(0, len(content), size)])
        middle = sum(len(pieces) for pieces in pieces_of) // 2
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**usage, "output_tokens": 1},
        }
        await response.write(_event("message_start", {"type": "message_start", "message": start}))
        number = 0
        for index, (block, pieces) in enumerate(zip(blocks, pieces_of)):
            first = {**block, "input": {}} if block["type"] == "tool_use" else {**block, "text": ""}
            await response.write(
                _event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": first},
                )
            )
            if index == 0:
                await response.write(_event("ping", {"type": "ping"}))
            for piece in pieces:
                if number == middle and number:
                    if fault.get("cut"):
                        await asyncio.sleep(0.01)
                        assert request.transport is not None
                        request.transport.close()
                        return response
                    if fault.get("stream-error"):
                        error = {
                            "type": "error",
                            "error": {"type": "overloaded_error", "message": "Overloaded"},
                        }
                        await response.write(_event("error", error))
                        await response.write_eof()
                        return response
                    if fault.get("invalid-json"):
                        await response.write(b"event: content_block_delta\ndata: {not json\n\n")
                number += 1
                delta = (
                    {"type": "input_json_delta", "partial_json": piece}
                    if block["type"] == "tool_use"
                    else {"type": "text_delta", "text": piece}
                )
                await response.write(
                    _event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
                )
                if pause:
                    await asyncio.sleep(pause)
            await response.write(
                _event("content_block_stop", {"type": "content_block_stop", "index": index})
            )
        await response.write(
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            )
        )
        await response.write(_event("message_stop", {"type": "message_stop"}))
        await response.write_eof()
        return response
