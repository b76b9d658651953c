"""An offline server that speaks the Pizzagpt protocol, for tests, demos and benchmarks.

Run it with ``python -m pizzagpt_magic.emulator [--port 0]``: the first line it prints is the base
URL to put in ``PIZZAGPT_URL``. In Python, ``async with serve() as emu`` (on the running loop) or
``with EmulatorThread() as emu`` (on a loop of its own in a thread) give ``emu.url``.

Answers are deterministic: they restate the question, and the numbers and the Markdown table it
holds, so a reader can see that a prompt travelled intact. A question that mentions JSON gets a
fenced JSON answer. Text between ``[[echo]]`` and ``[[/echo]]`` in the question is sent back
verbatim as the whole answer.

Faults, for one request (a ``[[fault:SPEC]]`` marker in the question, or an ``x-pizzagpt-fault``
header) or for every request (``--fault SPEC``), where SPEC is ``;``-separated items:

``status=CODE``          answer with that HTTP status (``retry-after=SECONDS`` adds the header)
``latency=SECONDS``      wait before answering
``misuse``               the service's misuse refusal
``empty``                ``{"answer": {"content": ""}}``
``string-answer``        ``{"answer": "<text>"}``
``invalid-json``         a truncated JSON body
``html``                 an HTML block page with status 200
``large=BYTES``          an answer of about that size
``badjson``              with a schema: JSON that breaks it (a field of the wrong type)
``drop``                 send part of the body, then close the connection
``times=N``              apply the fault to the first N requests carrying this SPEC only

Schemas: a request with ``response_format`` ``{"type": "json_schema", ...}`` on ``/v1``, or a
question holding the package's schema instructions (a JSON Schema in a fenced block after "Answer
with one JSON object ..."), on either route, is answered with JSON that fits the schema, made
from the question: a label the question names (else one picked by its hash), the first number
in it, a date in it, a piece of its text. ``--no-response-format`` makes ``/v1`` refuse
``response_format`` with a 400 naming it, as some servers do.

The same server speaks the OpenAI-compatible Chat Completions API under ``/v1``:
``POST /v1/chat/completions`` (streamed as server-sent events with ``"stream": true``) and
``GET /v1/models``; with ``--api-key KEY`` both want ``Authorization: Bearer KEY``. ``GET /stats``
gives the server's counters as JSON. The answer is
the same deterministic text, for the last user message; an unknown model is a 404
``model_not_found``; ``max_tokens`` cuts the answer at that many words (finish reason
``length``); usage is a deterministic function of the text: ``prompt_tokens`` is the number of
whitespace-separated words in the text of all the messages, ``completion_tokens`` the number in
the answer (after the ``max_tokens`` cut), ``total_tokens`` their sum. More faults for these
routes:

``chunk-size=CHARS``     characters per streamed chunk (default 12)
``chunk-delay=SECONDS``  pause between streamed chunks
``cut``                  close the stream halfway, without ``[DONE]``
``stream-error``         send an error event halfway

The same server speaks Anthropic's Messages API too: ``POST /v1/messages`` (streamed as the
Messages server-sent events with ``"stream": true``) and ``GET /v1/models`` in that API's form for a
request that sends ``anthropic-version``; with ``--api-key KEY`` they want ``x-api-key: KEY``. The
same answers and faults (``emulator_messages`` has the details), and two more:

``cache-read=N``         report N prompt tokens read from the prompt cache
``cache-write=N``        report N prompt tokens written to the prompt cache

Tools (a request with ``tools``): a question holding ``[[tool:NAME(JSON args)]]`` markers makes
the emulator call those tools, all in its first answer (``finish_reason: tool_calls``, streamed
as ``delta.tool_calls`` pieces with ``"stream": true``); once the results came back as ``role:
tool`` messages, it answers quoting each result it received, verbatim. With
``[[tool-repeat]]`` in the question it calls them again in every answer and never answers.

The Batch APIs (OpenAI's ``/v1/files`` and ``/v1/batches``, Anthropic's
``/v1/messages/batches``) are in ``emulator_batches``, with ``--batch-delay SECONDS`` and their
own fault markers.
Packed requests (many rows in one request) are answered row by row as each row would be alone;
``[[fault:pack=...]]`` markers change a pack's reply (see ``emulator_packs``).
``--row-latency S`` adds S seconds per answered row, and ``--rate-limit N`` answers at most N
requests a second, the others with a 429 and ``Retry-After``.

``--fail-rate P`` injects a random fault (statuses and drops) into that share of requests, and
``--jitter S`` adds up to S random seconds to each answer (``--seed`` makes both repeatable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import ssl
import statistics
import sys
import threading
import zlib
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from .emulator_batches import BatchRoutes
from .emulator_messages import MessagesRoutes

__all__ = ["Emulator", "EmulatorThread", "conforming", "make_answer", "parse_fault", "serve"]

MISUSE_TEXT = (
    "Misuse detected. Please get in touch, we can come up with a solution for your use case."
)
HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>Access denied</title></head>"
    "<body><h1>Access denied</h1><p>Your request was blocked.</p></body></html>"
)
SECRET = "Marinara"
ENDPOINT = "/api/chatx-completion"
#: The models the OpenAI-compatible routes serve.
OPENAI_MODELS = ("emu-mini", "emu-large", "llama3.2:1b")

_FAULT_MARKER = re.compile(r"\[\[fault:([^\]]*)\]\]")
_ECHO = re.compile(r"\[\[echo\]\](.*?)\[\[/echo\]\]", re.S)
_TOOL_MARKER = re.compile(r"\[\[tool:([A-Za-z_][\w.]*)\((.*?)\)\]\]", re.S)
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w.])")
_RANDOM_FAULTS = ("status=500", "status=502", "status=503", "status=429;retry-after=0", "drop")


def parse_fault(spec: str) -> dict[str, Any]:
    """``"status=503;retry-after=1"`` as ``{"status": 503, "retry-after": 1.0}``."""
    fault: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        key, _, value = item.partition("=")
        key = key.strip().lower()
        if key in {"status", "large", "times", "chunk-size", "cache-read", "cache-write"}:
            fault[key] = int(value)
        elif key in {"latency", "retry-after", "chunk-delay"}:
            fault[key] = float(value)
        elif key == "pack":  # a packed request's fault (see emulator_packs); alone, none
            fault[key] = value.strip().lower()
        elif key in {
            "misuse",
            "empty",
            "string-answer",
            "invalid-json",
            "html",
            "drop",
            "cut",
            "stream-error",
            "badjson",
        }:
            fault[key] = True
        else:
            raise ValueError(f"unknown fault {key!r} in {spec!r}")
    return fault


def _table_summary(text: str) -> str | None:
    rows = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    rows = [r for r in rows if not re.fullmatch(r"\|[\s:|-]+\|?", r)]
    if len(rows) < 2:
        return None
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    return (
        f"a table of {len(rows) - 1} rows and {len(header)} columns "
        f"({', '.join(h for h in header if h)})"
    )


_SCHEMA_INTRO = "Answer with one JSON object, and nothing else, that fits this JSON Schema:"
_SCHEMA_BLOCK = re.compile(re.escape(_SCHEMA_INTRO) + r"\s*```json\s*\n(.*?)\n```", re.S)
_REPAIR = "Your answer cannot be used."
_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")


def schema_in(question: str) -> tuple[dict[str, Any] | None, str]:
    """The JSON Schema a question asks for in its text (the package's instructions), and the
    question without it."""
    match = _SCHEMA_BLOCK.search(question)
    if match is None:
        return None, question
    try:
        schema = json.loads(match.group(1))
    except ValueError:
        return None, question
    # The instructions follow the question: what comes after them (an answer that did not
    # fit, the request to repair it) is not the question.
    return schema if isinstance(schema, dict) else None, question[: match.start()]


def _stable(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "replace"))


def conforming(schema: Any, question: str, bad: bool = False) -> Any:
    """A value that fits ``schema``, made from ``question`` (see the module's docstring); with
    ``bad``, one that breaks it."""
    question = _FAULT_MARKER.sub("", question).strip()
    value = _value(schema, question, schema if isinstance(schema, dict) else {}, "")
    if bad:
        if isinstance(value, dict) and value:
            name = next(iter(value))
            wrong = value[name]
            value[name] = 12345 if isinstance(wrong, str) else "not the right type"
        else:
            value = ["not", "the", "right", "shape"]
    return value


def _value(node: Any, text: str, root: dict[str, Any], name: str) -> Any:
    for _ in range(8):
        if not isinstance(node, dict):
            return None
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = root
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            continue
        options = node.get("anyOf") or node.get("oneOf")
        if isinstance(options, list) and options:
            real = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            node = (real or options)[0]
            continue
        break
    if not isinstance(node, dict):
        return None
    if "const" in node:
        return node["const"]
    enum = node.get("enum")
    if isinstance(enum, list) and enum:
        lower = text.lower()
        named = [(lower.find(str(e).lower()), i) for i, e in enumerate(enum)]
        found = sorted((at, i) for at, i in named if at >= 0)
        return enum[found[0][1]] if found else enum[_stable(text + name) % len(enum)]
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in node):
        properties = node.get("properties") or {}
        return {key: _value(sub, text, root, key) for key, sub in properties.items()}
    if kind == "array":
        count = max(1, int(node.get("minItems") or 1))
        return [_value(node.get("items") or {}, text, root, name) for _ in range(count)]
    if kind in ("integer", "number"):
        numbers = [float(n) for n in _NUMBER.findall(text)]
        low, high = node.get("minimum"), node.get("maximum")
        if numbers:
            number = numbers[0]
        else:
            number = float(_stable(text + name) % 5 + 1)
        if isinstance(low, (int, float)):
            number = max(number, low)
        if isinstance(high, (int, float)):
            number = min(number, high)
        return int(number) if kind == "integer" else number
    if kind == "boolean":
        return not re.search(r"\b(no|not|false|never)\b", text, re.I)
    if kind == "null":
        return None
    if node.get("format") in ("date", "date-time"):
        date = _DATE.search(text)
        day = date.group(0) if date else f"2024-01-{_stable(text + name) % 28 + 1:02d}"
        return day if node.get("format") == "date" else f"{day}T00:00:00Z"
    snippet = " ".join(text.split())[:40] or name
    return snippet


def make_answer(question: str, model: str = "gpt-4o-mini", bad: bool = False) -> str:
    """The deterministic Markdown answer the emulator gives to ``question``."""
    echo = _ECHO.search(question)
    if echo:
        return echo.group(1)
    schema, rest = schema_in(question)
    if schema is not None:
        return json.dumps(conforming(schema, rest, bad), ensure_ascii=False)
    question = _FAULT_MARKER.sub("", question).strip()
    numbers = [float(n) for n in _NUMBER.findall(question)]
    if "json" in question.lower():
        data = {
            "model": model,
            "question": question[-300:],
            "numbers": numbers,
            "characters": len(question),
        }
        return "```json\n" + json.dumps(data, indent=2, ensure_ascii=False) + "\n```"
    turns = re.findall(r"^(System|User|Assistant): ", question, re.M)
    last = question
    if len(turns) > 1 and question.endswith("Assistant:"):
        users = re.findall(r"^User: (.*?)(?=^(?:System|User|Assistant):)", question, re.M | re.S)
        last = users[-1].strip() if users else question
    # A long question is quoted by its two ends, so what was added last stays visible.
    quoted = last if len(last) <= 1200 else f"{last[:800]}\n…\n{last[-400:]}"
    lines = [
        f"**Emulated {model} answer** to a question of {len(question)} characters.",
        "",
        "> " + "\n> ".join(quoted.splitlines() or [""]),
    ]
    if len(turns) > 1:
        lines += ["", f"The conversation so far has {len(turns)} messages."]
    if numbers:
        shown = ", ".join(f"{n:g}" for n in numbers[:10]) + (" …" if len(numbers) > 10 else "")
        lines += [
            "",
            f"- numbers seen: {len(numbers)} ({shown})",
            f"- sum: {sum(numbers):g}, mean: {statistics.fmean(numbers):g}, "
            f"min: {min(numbers):g}, max: {max(numbers):g}",
        ]
    table = _table_summary(question)
    if table:
        lines += ["", f"The question holds {table}."]
    return "\n".join(lines)


class Emulator(MessagesRoutes, BatchRoutes):
    """The server's state and handlers; ``start()`` and ``stop()`` run it on the current loop."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        fault: str | None = None,
        latency: float = 0.0,
        jitter: float = 0.0,
        fail_rate: float = 0.0,
        seed: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        api_key: str | None = None,
        chunk_delay: float = 0.0,
        response_format: bool = True,
        batch_delay: float = 0.0,
        row_latency: float = 0.0,
        rate_limit: float = 0.0,
    ) -> None:
        self.host = host
        self._init_batches(batch_delay)
        #: Seconds each answered row adds to an answer (a packed request's rows all count).
        self.row_latency = row_latency
        #: Requests a second answered; more get a 429 with ``Retry-After`` (0: no limit).
        self.rate_limit = rate_limit
        self._answered_at: deque[float] = deque()
        #: Packed requests seen, and the rows they carried.
        self.packs = 0
        self.packed_rows = 0
        self._pack_faults: Counter[str] = Counter()
        #: Whether ``/v1`` takes ``response_format`` (else it refuses it with a 400).
        self.response_format = response_format
        self.api_key = api_key
        self.chunk_delay = chunk_delay
        #: The OpenAI-compatible requests seen: ``{"body": ..., "headers": ...}`` each.
        self.chat_requests: list[dict[str, Any]] = []
        self.message_requests: list[dict[str, Any]] = []
        self.port = port
        self.fault = parse_fault(fault) if fault else {}
        self.fault_spec = fault or ""
        self.latency = latency
        self.jitter = jitter
        self.fail_rate = fail_rate
        self.random = random.Random(seed)
        self.ssl_context = ssl_context
        self.url = ""
        #: What the server saw: request count, peers (one per TCP connection), concurrency.
        self.requests = 0
        self.questions: list[str] = []
        self.peers: set[tuple[str, int]] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self._times: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None

    @property
    def connections(self) -> int:
        """How many distinct TCP connections have carried requests."""
        return len(self.peers)

    def reset_stats(self) -> None:
        self.requests = 0
        self.questions.clear()
        self.chat_requests.clear()
        self.message_requests.clear()
        self.peers.clear()
        self.max_in_flight = 0
        self._times.clear()
        self.packs = 0
        self.packed_rows = 0
        self._pack_faults.clear()
        self._answered_at.clear()

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_post(ENDPOINT, self.handle)
        app.router.add_post("/v1/chat/completions", self.handle_chat)
        app.router.add_get("/v1/models", self.handle_models)
        app.router.add_post("/v1/messages", self.handle_messages)
        app.router.add_get("/", self.handle_index)
        self.add_batch_routes(app)
        app.router.add_get("/stats", self.handle_stats)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.make_app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.port = sock.getsockname()[1]
        scheme = "https" if self.ssl_context else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"{scheme}://{host}:{self.port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def handle_index(self, request: web.Request) -> web.Response:
        return web.Response(text="Pizzagpt emulator: POST /api/chatx-completion\n")

    async def handle_stats(self, request: web.Request) -> web.Response:
        """What the server saw, for tests and benchmarks in other processes (not counted)."""
        return web.json_response(
            {
                "requests": self.requests,
                "max_in_flight": self.max_in_flight,
                "connections": self.connections,
                "packs": self.packs,
                "packed_rows": self.packed_rows,
            }
        )

    def _choose_fault(self, request: web.Request, question: str) -> dict[str, Any]:
        spec = request.headers.get("x-pizzagpt-fault", "")
        marker = _FAULT_MARKER.search(question)
        if marker:
            spec = marker.group(1)
        if not spec and self.fault_spec:
            spec = self.fault_spec
        if not spec and self.fail_rate and self.random.random() < self.fail_rate:
            spec = self.random.choice(_RANDOM_FAULTS)
        if not spec:
            return {}
        fault = parse_fault(spec)
        if "times" in fault:
            self._times[spec] += 1
            if self._times[spec] > fault["times"]:
                return {}
        return fault

    async def handle(self, request: web.Request) -> web.StreamResponse:
        return await self._counted(request, self._answer)

    async def _counted(self, request: web.Request, answer: Any) -> web.StreamResponse:
        """``answer(request)``, counted: requests, connections, requests in flight."""
        self.requests += 1
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.peers.add(tuple(peer[:2]))
        limited = self._rate_limited()
        if limited is not None:
            return limited
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await answer(request)
        finally:
            self.in_flight -= 1

    def _rate_limited(self) -> web.Response | None:
        """A 429 with ``Retry-After`` when ``rate_limit`` requests were answered in the last
        second; None when this one may be answered."""
        if not self.rate_limit:
            return None
        now = asyncio.get_running_loop().time()
        answered = self._answered_at
        while answered and answered[0] <= now - 1.0:
            answered.popleft()
        if len(answered) >= self.rate_limit:
            wait = answered[0] + 1.0 - now
            return web.json_response(
                {"error": {"message": "Rate limit reached", "type": "rate_limit_exceeded"}},
                status=429,
                headers={"Retry-After": f"{max(wait, 0.001):.3f}"},
            )
        answered.append(now)
        return None

    def _pack(
        self, text: str, reply_schema: dict[str, Any] | None, model: str
    ) -> tuple[str, str, int] | None:
        """A packed request's reply, finish reason and row count; None when ``text`` holds no
        pack (see ``emulator_packs``)."""
        from .emulator_packs import find_pack, pack_reply

        document = find_pack(text)
        if document is None:
            return None
        self.packs += 1
        self.packed_rows += len(document["rows"])
        content, finish = pack_reply(document, reply_schema, model, self._pack_faults)
        return content, finish, len(document["rows"])

    async def _wait(self, fault: dict[str, Any]) -> None:
        """The latency of this answer: the fault's, else the server's, plus jitter."""
        delay = fault.get("latency", self.latency)
        if self.jitter:
            delay += self.random.uniform(0, self.jitter)
        if delay:
            await asyncio.sleep(delay)

    @staticmethod
    def _retry_after(fault: dict[str, Any]) -> dict[str, str]:
        return {"Retry-After": f"{fault['retry-after']:g}"} if "retry-after" in fault else {}

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("x-secret") != SECRET:
            return web.json_response({"error": "missing or wrong x-secret header"}, status=401)
        try:
            payload = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        question = payload.get("question") if isinstance(payload, dict) else None
        if not isinstance(question, str):
            return web.json_response({"error": "'question' must be a string"}, status=400)
        self.questions.append(question)
        fault = self._choose_fault(request, question)
        await self._wait(fault)
        await asyncio.sleep(self.row_latency)
        if "status" in fault:
            return web.json_response(
                {"error": f"emulated status {fault['status']}"},
                status=fault["status"],
                headers=self._retry_after(fault),
            )
        if fault.get("html"):
            return web.Response(text=HTML_PAGE, content_type="text/html")
        if fault.get("invalid-json"):
            return web.Response(text='{"answer": {"content": "cut', content_type="application/json")
        if fault.get("drop"):
            return await self._drop(request)
        model = payload.get("model") or "gpt-4o-mini"
        if fault.get("misuse"):
            content = MISUSE_TEXT
        elif fault.get("empty"):
            content = ""
        elif "large" in fault:
            content = _large(fault["large"])
        elif (packed := self._pack(question, schema_in(question)[0], model)) is not None:
            content, _, rows = packed
            await asyncio.sleep(self.row_latency * (rows - 1))
        else:
            content = make_answer(question, model, bool(fault.get("badjson")))
        if fault.get("string-answer"):
            return web.json_response({"answer": content})
        return web.json_response({"answer": {"content": content, "citations": []}})

    async def _drop(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 4096
        await response.prepare(request)
        await response.write(b'{"answer": {"content": "The answer was cut')
        await asyncio.sleep(0.01)
        assert request.transport is not None
        request.transport.close()
        return response

    # -- the OpenAI-compatible routes ---------------------------------------------------------

    def _refuse_key(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        if request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return _openai_error(401, "Incorrect API key provided", "invalid_api_key")

    async def handle_models(self, request: web.Request) -> web.Response:
        if request.headers.get("anthropic-version"):
            return await self.handle_anthropic_models(request)
        refused = self._refuse_key(request)
        if refused is not None:
            return refused
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "emulator"}
                    for m in OPENAI_MODELS
                ],
            }
        )

    async def handle_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._counted(request, self._chat)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        refused = self._refuse_key(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return _openai_error(400, "The body is not JSON", "invalid_json")
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            return _openai_error(400, "'messages' must be a non-empty list", "invalid_messages")
        self.chat_requests.append({"body": body, "headers": dict(request.headers)})
        model = body.get("model")
        if "response_format" in body and not self.response_format:
            return _openai_error(
                400,
                "Invalid parameter: 'response_format' of type "
                f"{(body['response_format'] or {}).get('type')!r} is not supported by this server",
                "invalid_request_error",
            )
        if model not in OPENAI_MODELS:
            return _openai_error(404, f"The model `{model}` does not exist", "model_not_found")
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        question = _text_of(users[-1].get("content")) if users else ""
        self.questions.append(question)
        everything = "\n".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
        fault = self._choose_fault(request, everything)
        await self._wait(fault)
        await asyncio.sleep(self.row_latency)
        if "status" in fault:
            return _openai_error(
                fault["status"],
                f"emulated status {fault['status']}",
                "emulated",
                self._retry_after(fault),
            )
        if fault.get("html"):
            return web.Response(text=HTML_PAGE, content_type="text/html")
        if fault.get("drop"):
            return await self._drop(request)
        markers = _TOOL_MARKER.findall(question) if body.get("tools") else []
        tool_turn = _tool_turn(messages) if markers else None
        if tool_turn is not None and (not tool_turn[0] or "[[tool-repeat]]" in question):
            calls = [
                {
                    "id": f"call_{len(tool_turn[0])}_{number}",
                    "type": "function",
                    "function": {"name": name, "arguments": arguments.strip() or "{}"},
                }
                for number, (name, arguments) in enumerate(markers)
            ]
            return await self._tool_calls(request, body, model, calls, everything, fault)
        asked = body.get("response_format")
        wanted = asked.get("json_schema") if isinstance(asked, dict) else None
        reply_schema = wanted.get("schema") if isinstance(wanted, dict) else None
        finish = "stop"
        if fault.get("empty"):
            content = ""
        elif tool_turn is not None:
            content = _quote_results(model, *tool_turn)
        elif (
            packed := self._pack(question, reply_schema or schema_in(question)[0], model)
        ) is not None:
            content, finish, rows = packed
            await asyncio.sleep(self.row_latency * (rows - 1))
        elif "large" in fault:
            content = _large(fault["large"])
        elif isinstance(wanted, dict) and isinstance(wanted.get("schema"), dict):
            # The question, not a request to repair an answer that came before.
            asked = [_text_of(m.get("content")) for m in users]
            while len(asked) > 1 and asked[-1].startswith(_REPAIR):
                asked.pop()
            content = json.dumps(
                conforming(wanted["schema"], asked[-1], bool(fault.get("badjson"))),
                ensure_ascii=False,
            )
        elif schema_in(everything)[0] is not None:
            schema, rest = schema_in(everything)
            content = json.dumps(conforming(schema, rest, bool(fault.get("badjson"))))
        else:
            content = make_answer(question, model)
            if len(messages) > 1:
                content += f"\n\nThe conversation so far has {len(messages)} messages."
            seen = _images_of(users[-1].get("content") if users else None)
            if seen:
                content += f"\n\nThe question holds {len(seen)} image(s): {', '.join(seen)}."
        limit = body.get("max_tokens")
        words = content.split(" ")
        if isinstance(limit, int) and len(words) > limit:
            content = " ".join(words[:limit])
            finish = "length"
        usage = {
            "prompt_tokens": len(everything.split()),
            "completion_tokens": len(content.split()),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if not body.get("stream"):
            if fault.get("invalid-json"):
                return web.Response(text='{"choices": [{"mess', content_type="application/json")
            return web.json_response(
                {
                    "id": "chatcmpl-emulated",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._stream(request, model, content, finish, usage, include_usage, fault)

    async def _stream(
        self,
        request: web.Request,
        model: str,
        content: str,
        finish: str,
        usage: dict[str, int],
        include_usage: bool,
        fault: dict[str, Any],
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        size = max(1, fault.get("chunk-size", 12))
        pause = fault.get("chunk-delay", self.chunk_delay)
        pieces = [content[i : i + size] for i in range(0, len(content), size)]
        base = {"id": "chatcmpl-emulated", "object": "chat.completion.chunk", "created": 0}

        def event(data: dict[str, Any]) -> bytes:
            return f"data: {json.dumps({**base, 'model': model, **data})}\n\n".encode()

        await response.write(b": emulator keep-alive\n\n")
        for number, piece in enumerate(pieces):
            if number == len(pieces) // 2 and number:
                if fault.get("cut"):
                    await asyncio.sleep(0.01)
                    assert request.transport is not None
                    request.transport.close()
                    return response
                if fault.get("stream-error"):
                    error = {"error": {"message": "emulated error mid-stream", "type": "server"}}
                    await response.write(f"data: {json.dumps(error)}\n\n".encode())
                    await response.write_eof()
                    return response
                if fault.get("invalid-json"):
                    await response.write(b"data: {not json\n\n")
            delta: dict[str, Any] = {"content": piece}
            if number == 0:
                delta["role"] = "assistant"
            await response.write(event({"choices": [{"index": 0, "delta": delta}]}))
            if pause:
                await asyncio.sleep(pause)
        await response.write(
            event({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        )
        if include_usage:
            await response.write(event({"choices": [], "usage": usage}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _tool_calls(
        self,
        request: web.Request,
        body: dict[str, Any],
        model: str,
        calls: list[dict[str, Any]],
        everything: str,
        fault: dict[str, Any],
    ) -> web.StreamResponse:
        """An answer that calls tools: whole, or streamed as ``delta.tool_calls`` pieces."""
        words = sum(len(c["function"]["arguments"].split()) + 1 for c in calls)
        usage = {"prompt_tokens": len(everything.split()), "completion_tokens": words}
        usage["total_tokens"] = usage["prompt_tokens"] + words
        base = {"id": "chatcmpl-emulated", "created": 0, "model": model}
        if not body.get("stream"):
            message = {"role": "assistant", "content": None, "tool_calls": calls}
            return web.json_response(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                    "usage": usage,
                }
            )
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        size = max(1, fault.get("chunk-size", 12))
        pause = fault.get("chunk-delay", self.chunk_delay)

        async def event(delta: dict[str, Any], finish: str | None = None) -> None:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            data = {**base, "object": "chat.completion.chunk", "choices": [choice]}
            await response.write(f"data: {json.dumps(data)}\n\n".encode())
            if pause:
                await asyncio.sleep(pause)

        for index, call in enumerate(calls):
            first = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            delta: dict[str, Any] = {"tool_calls": [first]}
            if index == 0:
                delta = {"role": "assistant", "content": None, **delta}
            await event(delta)
            arguments = call["function"]["arguments"]
            for start in range(0, len(arguments), size):
                piece = {"index": index, "function": {"arguments": arguments[start : start + size]}}
                await event({"tool_calls": [piece]})
        await event({}, "tool_calls")
        if (body.get("stream_options") or {}).get("include_usage"):
            data = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            await response.write(f"data: {json.dumps(data)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _tool_turn(messages: list[Any]) -> tuple[list[Any], list[tuple[str, str, str]]]:
    """Since the last user message: the assistant messages that called tools, and each result
    received as ``(tool name, arguments, result)``."""
    last_user = max(
        (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"),
        default=-1,
    )
    later = [m for m in messages[last_user + 1 :] if isinstance(m, dict)]
    asked = [m for m in later if m.get("role") == "assistant" and m.get("tool_calls")]
    called: dict[str, tuple[str, str]] = {}
    for message in asked:
        for call in message["tool_calls"]:
            function = call.get("function") or {}
            called[str(call.get("id"))] = (
                str(function.get("name")),
                str(function.get("arguments")),
            )
    results = []
    for message in later:
        if message.get("role") == "tool":
            name, arguments = called.get(str(message.get("tool_call_id")), ("?", ""))
            results.append((name, arguments, _text_of(message.get("content"))))
    return asked, results


def _quote_results(model: str, asked: list[Any], results: list[tuple[str, str, str]]) -> str:
    """The answer after tool results: each quoted verbatim, in a fence longer than any run of
    backticks in it."""
    lines = [
        f"**Emulated {model} answer** after {len(asked)} round(s) of tool calls and "
        f"{len(results)} result(s).",
    ]
    for name, arguments, result in results:
        longest = max((len(run) for run in re.findall(r"`+", result)), default=0)
        fence = "`" * max(3, longest + 1)
        lines += ["", f"Result of {name}({arguments}):", f"{fence}text", result, fence]
    return "\n".join(lines)


def _large(size: int) -> str:
    """An answer of ``size`` characters."""
    unit = "All work and no pizza makes the model a dull boy. "
    return (unit * (size // len(unit) + 1))[:size]


def _images_of(content: Any) -> list[str]:
    """What the image parts of a message are: ``"PNG 640×480"`` each (or their type)."""
    import base64
    import struct

    found = []
    for part in content if isinstance(content, list) else []:
        if not (isinstance(part, dict) and part.get("type") == "image_url"):
            continue
        url = str((part.get("image_url") or {}).get("url", ""))
        kind = url[5 : url.find(";")] if url.startswith("data:") and ";" in url else "a URL"
        try:
            blob = base64.b64decode(url.split(",", 1)[1][:64])
        except (ValueError, IndexError):
            blob = b""
        if blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) >= 24:
            width, height = struct.unpack(">II", blob[16:24])
            found.append(f"PNG {width}×{height}")
        else:
            found.append(kind)
    return found


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _openai_error(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        status=status,
        headers=headers,
    )


@asynccontextmanager
async def serve(host: str = "127.0.0.1", port: int = 0, **options: Any) -> AsyncIterator[Emulator]:
    """Run an emulator on the running loop for the duration of the block."""
    emulator = Emulator(host, port, **options)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


class EmulatorThread:
    """An emulator on a loop of its own in a daemon thread: ``with EmulatorThread() as emu``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        self.emulator = Emulator(host, port, **options)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, daemon=True, name="pizzagpt-emulator"
        )

    @property
    def url(self) -> str:
        return self.emulator.url

    def __getattr__(self, name: str) -> Any:
        return getattr(self.emulator, name)

    def start(self) -> str:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.emulator.start(), self.loop).result(10)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.emulator.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def __enter__(self) -> EmulatorThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pizzagpt_magic.emulator",
        description="Offline Pizzagpt-compatible server. Prints its base URL, then serves "
        "until interrupted.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each answer")
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.0,
        help="up to this many random seconds more for each answer",
    )
    parser.add_argument("--fault", help="a fault SPEC for every request, e.g. 'status=503'")
    parser.add_argument(
        "--fail-rate",
        type=float,
        default=0.0,
        help="share of requests (0..1) that get a random fault",
    )
    parser.add_argument("--seed", type=int, help="seed for --fail-rate")
    parser.add_argument(
        "--api-key",
        help="key the /v1 routes require: a bearer token for the OpenAI-compatible ones, "
        "x-api-key for the Messages API (default: none)",
    )
    parser.add_argument(
        "--chunk-delay",
        type=float,
        default=0.0,
        help="seconds between streamed chunks on the /v1 routes",
    )
    parser.add_argument(
        "--no-response-format",
        action="store_true",
        help="refuse response_format on the OpenAI-compatible routes (a 400 naming it)",
    )
    parser.add_argument(
        "--batch-delay",
        type=float,
        default=0.0,
        help="seconds a Batch API job stays in progress (see emulator_batches)",
    )
    parser.add_argument(
        "--row-latency",
        type=float,
        default=0.0,
        help="seconds each answered row adds to an answer (every row of a packed request)",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=0.0,
        help="requests a second answered; beyond, a 429 with Retry-After (default: no limit)",
    )
    parser.add_argument("--cert", help="TLS certificate (PEM); serves HTTPS with --key")
    parser.add_argument("--key", help="TLS private key (PEM)")
    args = parser.parse_args(argv)
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    if args.fault:
        try:
            parse_fault(args.fault)
        except ValueError as exc:
            parser.error(str(exc))
    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    async def run() -> None:
        async with serve(
            args.host,
            args.port,
            fault=args.fault,
            latency=args.latency,
            jitter=args.jitter,
            fail_rate=args.fail_rate,
            seed=args.seed,
            ssl_context=context,
            api_key=args.api_key,
            chunk_delay=args.chunk_delay,
            response_format=not args.no_response_format,
            batch_delay=args.batch_delay,
            row_latency=args.row_latency,
            rate_limit=args.rate_limit,
        ) as emu:
            print(emu.url, flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
