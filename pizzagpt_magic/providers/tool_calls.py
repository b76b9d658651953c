"""Tool calls in answers: the ``ToolCalls`` chunk a provider yields when the model asks to run
tools, the calls as each API sends them, and the messages that carry calls and their results back.

The Chat Completions API: streamed, a call arrives in pieces keyed by ``index``: the first delta of
a call holds its ``id``, ``type`` and ``function.name`` (and often an empty ``arguments``), the
later ones more of ``function.arguments``, a JSON text cut anywhere.

The Messages API: a call is a ``tool_use`` content block (``id``, ``name``, ``input``, a JSON
object). Streamed, ``content_block_start`` opens the block (its ``input`` empty) and
``input_json_delta`` events carry its input as ``partial_json`` pieces, keyed by the block's
``index``. Tools are offered as ``{"name", "description", "input_schema"}`` (``messages_tools``).

Nothing here runs a tool.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import PromptError, ResponseShapeError
from .base import ResponseType

__all__ = [
    "MAX_CALLS",
    "ToolCall",
    "ToolCallDeltas",
    "ToolCalls",
    "ToolUseBlocks",
    "assistant_message",
    "messages_tools",
    "parse_tool_calls",
    "parse_tool_use",
    "tool_message",
]

#: Most calls one answer may hold, as sent (a larger index is a broken answer): the tool loop
#: runs far fewer, and answers the rest with a refusal.
MAX_CALLS = 4096
#: Longest name or id of a call kept, in characters (the rest is cut).
_MAX_LABEL = 200


@dataclass(frozen=True)
class ToolCall:
    """One call the model asked for: its id, the tool's name and the arguments as JSON text,
    exactly as the model wrote them (unchecked)."""

    id: str
    name: str
    arguments: str


class ToolCalls(ResponseType):
    """The calls of an answer, yielded after its text and before its ``FinishReason``."""

    def __init__(self, calls: list[ToolCall]) -> None:
        self.calls = list(calls)

    def __repr__(self) -> str:
        return f"ToolCalls({self.calls!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ToolCalls) and other.calls == self.calls

    __hash__ = None  # type: ignore[assignment]


def _text(value: Any, limit: int | None = _MAX_LABEL) -> str:
    text = value if isinstance(value, str) else "" if value is None else str(value)
    return text if limit is None else text[:limit]


def parse_tool_calls(value: Any) -> list[ToolCall]:
    """The calls of a non-streamed message's ``tool_calls`` list (None or absent: none)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ResponseShapeError(f"'tool_calls' is {type(value).__name__}, expected a list")
    if len(value) > MAX_CALLS:
        raise ResponseShapeError(f"the answer holds {len(value):,} tool calls")
    calls = []
    for number, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise ResponseShapeError(f"a tool call is {type(entry).__name__}, expected an object")
        function = entry.get("function") or {}
        if not isinstance(function, dict):
            raise ResponseShapeError("a tool call's 'function' is not an object")
        calls.append(
            ToolCall(
                _text(entry.get("id")) or f"call_{number}",
                _text(function.get("name")),
                _text(function.get("arguments"), None),
            )
        )
    return calls


class ToolCallDeltas:
    """The calls of a streamed answer, assembled from its ``delta.tool_calls`` pieces."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, list[Any]] = {}

    def feed(self, deltas: Any) -> None:
        """Take one chunk's ``delta.tool_calls`` list."""
        if not isinstance(deltas, list):
            raise ResponseShapeError(f"'tool_calls' is {type(deltas).__name__}, expected a list")
        for delta in deltas:
            if not isinstance(delta, dict):
                raise ResponseShapeError("a streamed tool call is not an object")
            index = delta.get("index", len(self._calls))
            if type(index) is not int or not 0 <= index < MAX_CALLS:
                raise ResponseShapeError(f"a streamed tool call has the index {index!r}")
            call = self._calls.setdefault(index, ["", "", []])
            if delta.get("id"):
                call[0] = _text(delta["id"])
            function = delta.get("function") or {}
            if not isinstance(function, dict):
                raise ResponseShapeError("a streamed tool call's 'function' is not an object")
            if function.get("name"):
                call[1] += _text(function["name"])
                call[1] = call[1][:_MAX_LABEL]
            if function.get("arguments"):
                call[2].append(_text(function["arguments"], None))

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self) -> list[ToolCall]:
        """The calls so far, in index order."""
        return [
            ToolCall(call[0] or f"call_{index}", call[1], "".join(call[2]))
            for index, call in sorted(self._calls.items())
        ]


def assistant_message(text: str, calls: list[ToolCall]) -> dict[str, Any]:
    """The assistant message that asked for ``calls``, as the next request sends it back."""
    return {
        "role": "assistant",
        "content": text or None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in calls
        ],
    }


def tool_message(call_id: str, result: str) -> dict[str, Any]:
    """The message holding one call's result."""
    return {"role": "tool", "tool_call_id": call_id, "content": result}


# -- the Messages API ------------------------------------------------------------------------


def messages_tools(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tools in the OpenAI ``tools`` format (``{"type": "function", "function": {"name",
    "description", "parameters"}}``) as the Messages API takes them (``{"name", "description",
    "input_schema"}``); one already in that form is kept as it is."""
    converted = []
    for spec in specs:
        if not isinstance(spec, dict):
            raise PromptError(f"A tool is {type(spec).__name__}, not a dict")
        function = spec.get("function")
        if spec.get("type", "function") != "function" or not isinstance(function, dict):
            if "name" in spec and "input_schema" in spec:
                converted.append(spec)
                continue
            raise PromptError(
                "A tool is neither in the OpenAI tools format nor in the Messages one"
            )
        tool: dict[str, Any] = {"name": str(function.get("name", ""))}
        if function.get("description"):
            tool["description"] = str(function["description"])
        schema = function.get("parameters")
        tool["input_schema"] = (
            schema if isinstance(schema, dict) else {"type": "object", "properties": {}}
        )
        converted.append(tool)
    return converted


def _tool_use(block: dict[str, Any], number: int) -> ToolCall:
    value = block.get("input")
    return ToolCall(
        _text(block.get("id")) or f"toolu_{number}",
        _text(block.get("name")),
        "{}" if value is None else json.dumps(value),
    )


def parse_tool_use(content: list[Any]) -> list[ToolCall]:
    """The calls of a non-streamed Messages answer: its ``tool_use`` blocks, each input as JSON
    text."""
    calls = [
        _tool_use(block, number)
        for number, block in enumerate(content)
        if isinstance(block, dict) and block.get("type") == "tool_use"
    ]
    if len(calls) > MAX_CALLS:
        raise ResponseShapeError(f"the answer holds {len(calls):,} tool calls")
    return calls


class ToolUseBlocks:
    """The calls of a streamed Messages answer: the ``tool_use`` blocks its
    ``content_block_start`` events open, with their input assembled from the
    ``input_json_delta`` pieces of each block's index (none: the block's own input, as the
    official SDK keeps it; ``{}`` when that is empty too). ``chars`` counts the input received,
    so a caller can bound it with the text."""

    __slots__ = ("_blocks", "chars")

    def __init__(self) -> None:
        self._blocks: dict[int, tuple[str, str, Any, list[str]]] = {}
        self.chars = 0

    def start(self, index: Any, block: dict[str, Any]) -> None:
        """Open a ``tool_use`` block at ``index``."""
        if type(index) is not int or not 0 <= index < MAX_CALLS:
            raise ResponseShapeError(f"a streamed tool_use block has the index {index!r}")
        self._blocks[index] = (
            _text(block.get("id")),
            _text(block.get("name")),
            block.get("input"),
            [],
        )

    def delta(self, index: Any, piece: Any) -> None:
        """Take one ``input_json_delta``'s ``partial_json``; a piece for a block that is no
        ``tool_use`` one is ignored, as the official SDK ignores it."""
        block = self._blocks.get(index) if type(index) is int else None
        if block is not None and isinstance(piece, str) and piece:
            block[3].append(piece)
            self.chars += len(piece)

    def __bool__(self) -> bool:
        return bool(self._blocks)

    def calls(self) -> list[ToolCall]:
        """The calls so far, in index order."""
        calls = []
        for index, (call_id, name, start, pieces) in sorted(self._blocks.items()):
            if pieces:
                arguments = "".join(pieces)
            else:
                arguments = json.dumps(start) if start else "{}"
            calls.append(ToolCall(call_id or f"toolu_{index}", name, arguments))
        return calls
