"""Tool calls in answers: the ``ToolCalls`` chunk a provider yields when the model asks to run
tools, the assembly of the streamed ``tool_calls`` deltas of the Chat Completions API, and the
messages that carry calls and their results back.

Streamed, a call arrives in pieces keyed by ``index``: the first delta of a call holds its ``id``,
``type`` and ``function.name`` (and often an empty ``arguments``), the later ones more of
``function.arguments``, a JSON text cut anywhere. Nothing here runs a tool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ResponseShapeError
from .base import ResponseType

__all__ = [
    "MAX_CALLS",
    "ToolCall",
    "ToolCallDeltas",
    "ToolCalls",
    "assistant_message",
    "parse_tool_calls",
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
