"""The provider's transport against real loopback servers: stale keep-alive connections,
redirects, charsets, timeouts, malformed URLs and proxy settings."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from pizzagpt_magic import ConfigurationError, ConnectError, RedirectError, ask
from pizzagpt_magic.loop import run_sync
from pizzagpt_magic.session import close_session

ANSWER = {"answer": {"content": "fine"}}


class ClosingServer:
    """Answers the first request on a connection with keep-alive, then closes the
    connection when the next request arrives on it, without answering: the race of a server
    closing an idle connection just as the client reuses it."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def stop(self) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()
        await asyncio.sleep(0.05)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                self.requests += 1
                if served:
                    break
                body = json.dumps(ANSWER).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Connection: keep-alive\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
                served += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


def test_a_reused_connection_closed_by_the_server_is_replaced_at_once(caplog):
    server = ClosingServer()
    url = run_sync(server.start())
    try:
        assert ask("one", base_url=url, max_retries=0) == "fine"
        # With no retries allowed, the second question still succeeds: the stale
        # connection's failure is not a retry, and no backoff is waited.
        with caplog.at_level("DEBUG", logger="pizzagpt_magic"):
            assert ask("two", base_url=url, max_retries=0) == "fine"
        messages = [record.getMessage() for record in caplog.records]
        assert any("a reused connection was closed" in m for m in messages), messages
        assert not any("retrying in" in m for m in messages), messages
        assert server.connections == 2 and server.requests == 3
    finally:
        run_sync(close_session())
        run_sync(server.stop())


async def _app_server(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
def server():
    """A loopback aiohttp app on the private loop: ``server(routes) -> base URL``."""
    runners = []

    def start(routes) -> str:
        app = web.Application()
        app.add_routes(routes)
        runner, url = run_sync(_app_server(app))
        runners.append(runner)
        return url

    yield start
    run_sync(close_session())
    for runner in runners:
        run_sync(runner.cleanup())


@pytest.mark.parametrize("status", [301, 302, 303])
def test_a_redirect_that_would_become_a_get_is_named(server, status):
    async def moved(request):
        raise (
            web.HTTPFound("/new/place")
            if status == 302
            else (
                web.HTTPMovedPermanently("/new/place") if status == 301 else web.HTTPSeeOther("/x")
            )
        )

    url = server([web.post("/api/chatx-completion", moved)])
    with pytest.raises(RedirectError) as info:
        ask("q", base_url=url, max_retries=0)
    message = str(info.value)
    assert f"redirected ({status})" in message and "127.0.0.1" in message
    # No 405 from following it as a GET (the port, which may hold the digits, aside).
    assert "405" not in message.replace(url, "") and info.value.location.startswith(url)


@pytest.mark.parametrize("status", [307, 308])
def test_307_and_308_repeat_the_post(server, status):
    seen = []

    async def moved(request):
        raise (
            web.HTTPTemporaryRedirect("/v2/ask")
            if status == 307
            else (web.HTTPPermanentRedirect("/v2/ask"))
        )

    async def answer(request):
        seen.append((request.method, (await request.json())["question"]))
        return web.json_response(ANSWER)

    url = server([web.post("/api/chatx-completion", moved), web.post("/v2/ask", answer)])
    assert ask("where?", base_url=url) == "fine"
    assert seen == [("POST", "where?")]


@pytest.mark.parametrize(
    ("charset", "declared"), [("iso-8859-1", True), ("utf-8", False), ("cp1252", True)]
)
def test_the_declared_charset_is_honoured(server, charset, declared):
    text = "café über"

    async def answer(request):
        body = json.dumps({"answer": {"content": text}}, ensure_ascii=False).encode(charset)
        content_type = "application/json" + (f"; charset={charset}" if declared else "")
        return web.Response(body=body, headers={"Content-Type": content_type})

    url = server([web.post("/api/chatx-completion", answer)])
    assert ask("q", base_url=url) == text


@pytest.mark.parametrize(
    ("charset", "declared"),
    [("iso-8859-1", "iso-8859-1"), ("utf-8", None), ("utf-8", '"UTF-8"'), ("cp1252", "cp1252")],
)
def test_an_endpoints_declared_charset_is_honoured(server, monkeypatch, charset, declared):
    from pizzagpt_magic import backends

    text = "café über"

    async def answer(request):
        message = {"role": "assistant", "content": text}
        data = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
        body = json.dumps(data, ensure_ascii=False).encode(charset)
        content_type = "application/json" + (f"; charset={declared}" if declared else "")
        return web.Response(body=body, headers={"Content-Type": content_type})

    url = server([web.post("/v1/chat/completions", answer)])
    monkeypatch.setitem(
        backends._registered, "charsets", backends.Endpoint("charsets", f"{url}/v1")
    )
    assert ask("q", model="charsets:m", stream=False) == text


def test_an_infinite_timeout_means_no_limit(server):
    async def answer(request):
        await asyncio.sleep(0.05)
        return web.json_response(ANSWER)

    url = server([web.post("/api/chatx-completion", answer)])
    assert ask("q", base_url=url, timeout=float("inf"), connect_timeout=float("inf")) == "fine"


def test_pizzagpt_url_without_a_scheme_names_the_variable(monkeypatch):
    monkeypatch.setenv("PIZZAGPT_URL", "localhost:38829")
    with pytest.raises(ConfigurationError, match=r"PIZZAGPT_URL='localhost:38829'.*http://"):
        ask("q")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("127.0.0.1:1", "HTTP_PROXY='127.0.0.1:1' is not a URL"),
        ("socks5://127.0.0.1:1", "HTTP_PROXY='socks5://127.0.0.1:1' is a socks5:// URL"),
    ],
)
def test_a_malformed_proxy_variable_is_named(emu, monkeypatch, value, words):
    for name in ("http_proxy", "all_proxy", "ALL_PROXY", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", value)
    with pytest.raises(ConfigurationError) as info:
        ask("q")
    assert words in str(info.value)


def test_a_dead_proxy_is_named_as_the_proxy(emu, monkeypatch):
    for name in ("http_proxy", "all_proxy", "ALL_PROXY", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://user:s3cret-pw@127.0.0.1:1")
    with pytest.raises(ConnectError) as info:
        ask("q", max_retries=0)
    message = str(info.value)
    assert "Cannot reach the proxy" in message and "(from HTTP_PROXY)" in message
    assert "s3cret-pw" not in message
