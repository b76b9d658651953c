"""How the emulator answers a packed request (many rows in one request, see
``engine.send.packed``), on both of its routes.

A packed request's user message is a JSON document with ``rows`` (each an ``id`` and its
``text``) and, optionally, a ``template`` with ``{text}`` where the rows differ. The emulator
answers each row exactly as it answers that row's question asked alone (the same deterministic
text, or the same value that fits the schema), so a packed batch and a batch of single requests
get the same answers. The reply is ``{"answers": [{"id": ..., "answer": ...}, ...]}``, or with
a schema each row's fields beside its ``id``.

A ``[[fault:pack=WHAT]]`` marker in a row's text changes the whole pack's reply (``times=N``
applies it to the first N packs carrying that marker only; a row asked alone ignores it):

``pack=omit``      the row's item is left out of the reply
``pack=shuffle``   the items come back in reverse order
``pack=repeat``    the row's id comes twice, with two different answers
``pack=prose``     the whole reply is prose, not JSON
``pack=cut``       the reply is cut off halfway (finish reason ``length``)
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

__all__ = ["PACK_FAULTS", "find_pack", "pack_reply"]

PACK_FAULTS = ("omit", "shuffle", "repeat", "prose", "cut")
_MARKER = re.compile(r"\[\[fault:([^\]]*)\]\]")
_DECODER = json.JSONDecoder()


def find_pack(text: str) -> dict[str, Any] | None:
    """The pack document in a request's text (a user message, or Pizzagpt's one question), or
    None when the request is not a pack."""
    start = text.find('{"')
    while start >= 0:
        try:
            document, _ = _DECODER.raw_decode(text, start)
        except ValueError:
            document = None
        if isinstance(document, dict) and _is_pack(document):
            return document
        start = text.find('{"', start + 1)
    return None


def _is_pack(document: dict[str, Any]) -> bool:
    rows = document.get("rows")
    return (
        isinstance(rows, list)
        and bool(rows)
        and all(isinstance(r, dict) and "id" in r and isinstance(r.get("text"), str) for r in rows)
    )


def row_schema(reply_schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The schema of one row's answer inside a pack's reply schema; None for plain answers."""
    if not isinstance(reply_schema, dict):
        return None
    items = ((reply_schema.get("properties") or {}).get("answers") or {}).get("items") or {}
    properties = {k: v for k, v in (items.get("properties") or {}).items() if k != "id"}
    if set(properties) == {"answer"}:
        return None
    row = {
        **{k: v for k, v in reply_schema.items() if k in ("$defs", "definitions")},
        **items,
        "properties": properties,
        "required": [n for n in items.get("required") or [] if n != "id"],
    }
    return row


def _faults(rows: list[dict[str, Any]], seen: Counter[str]) -> set[str]:
    """The pack faults the rows' markers ask for (``times`` counted per marker)."""
    from .emulator import parse_fault

    faults: set[str] = set()
    for row in rows:
        for spec in _MARKER.findall(row["text"]):
            try:
                fault = parse_fault(spec)
            except ValueError:
                continue
            what = fault.get("pack")
            if what not in PACK_FAULTS:
                continue
            if "times" in fault:
                seen[f"pack:{spec}"] += 1
                if seen[f"pack:{spec}"] > fault["times"]:
                    continue
            faults.add(f"{what}:{row['id']}")
    return faults


def pack_reply(
    document: dict[str, Any],
    reply_schema: dict[str, Any] | None,
    model: str,
    seen: Counter[str],
) -> tuple[str, str]:
    """The reply's text and finish reason for a pack ``document``; ``reply_schema`` is the
    reply's JSON Schema (from ``response_format``, or the instructions in the prompt)."""
    from .emulator import conforming, make_answer

    template = document.get("template")
    schema = row_schema(reply_schema)
    rows = document["rows"]
    faults = _faults(rows, seen)
    kinds = {fault.split(":", 1)[0] for fault in faults}
    if "prose" in kinds:
        return "Here are the answers: the first row is fine, and so are the others.", "stop"
    items: list[dict[str, Any]] = []
    for row in rows:
        text = row["text"]
        question = template.replace("{text}", text, 1) if isinstance(template, str) else text
        if f"omit:{row['id']}" in faults:
            continue
        if schema is None:
            item: dict[str, Any] = {"id": row["id"], "answer": make_answer(question, model)}
        else:
            item = {"id": row["id"], **conforming(schema, question)}
        items.append(item)
        if f"repeat:{row['id']}" in faults:
            items.append({**item, **({"answer": "another answer"} if schema is None else {})})
            if schema is not None:
                first = next((k for k in item if k != "id"), None)
                if first is not None:
                    items[-1][first] = "another answer"
    if "shuffle" in kinds:
        items.reverse()
    reply = json.dumps({"answers": items}, ensure_ascii=False)
    if "cut" in kinds:
        return reply[: len(reply) // 2], "length"
    return reply, "stop"
