"""A loopback server whose answers a test writes byte by byte: a careless or hostile endpoint.

``ScriptedServer`` runs aiohttp.web on a loop of its own in a daemon thread; every request goes
to its ``script`` (an async function of the request), which a test sets and may change between
requests. Helpers build the usual answers: server-sent events from raw lines, a JSON body.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

Script = Callable[[web.Request], Awaitable[web.StreamResponse]]


def chunk(text: str = "", finish: str | None = None, **delta: Any) -> bytes:
    """One ``data:`` event of a streamed Chat Completions answer."""
    if text:
        delta["content"] = text
    event = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def sse(*pieces: bytes, content_type: str = "text/event-stream", pause: float = 0.0) -> Script:
    """A script that sends ``pieces`` as they are, ``pause`` seconds apart."""

    async def send(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
            if pause:
                await asyncio.sleep(pause)
        return response

    return send


def body(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Script:
    """A script that answers with ``payload`` as JSON (bytes and text as they are)."""

    async def send(request: web.Request) -> web.StreamResponse:
        await request.read()
        if isinstance(payload, (bytes, str)):
            return web.Response(
                body=payload if isinstance(payload, bytes) else payload.encode(),
                status=status,
                headers={"Content-Type": "application/json", **(headers or {})},
            )
        return web.json_response(payload, status=status, headers=headers)

    return send


class ScriptedServer:
    """``with ScriptedServer() as server: server.script = sse(...)``; ``server.url`` is its
    base; ``server.paths`` lists the paths with query asked, in order."""

    def __init__(self) -> None:
        self.script: Script = body({"error": "no script"}, status=500)
        self.paths: list[str] = []
        self.url = ""
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path_qs)
        return await self.script(request)

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
