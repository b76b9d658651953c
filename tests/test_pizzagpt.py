"""The Pizzagpt provider: wire format and errors (aioresponses), and real loopback behaviour."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pizzagpt_magic import (
    ConnectError,
    ConnectionLostError,
    EmptyAnswerError,
    FinishReason,
    HTTPStatusError,
    MisuseError,
    ModelNotFoundError,
    NonJSONResponseError,
    Pizzagpt,
    PizzagptError,
    RequestTimeoutError,
    ResponseShapeError,
    ask,
    ask_async,
)
from pizzagpt_magic.providers.pizzagpt import parse_answer, parse_retry_after, redact
from pizzagpt_magic.session import close_session, get_session

BASE = "http://pizza.test"
ENDPOINT = f"{BASE}/api/chatx-completion"
MESSAGES = [{"role": "user", "content": "Hello, world!"}]


async def collect(**kwargs):
    kwargs.setdefault("base_url", BASE)
    try:
        return [c async for c in Pizzagpt.create_async_generator("gpt-4o-mini", MESSAGES, **kwargs)]
    finally:
        await close_session()


def run(**kwargs):
    return asyncio.run(collect(**kwargs))


# -- the wire format, against aioresponses ------------------------------------------------------


def test_sends_seed_headers_and_question(mocked):
    mocked.post(ENDPOINT, payload={"answer": {"content": "Ciao!"}})
    assert run() == ["Ciao!", FinishReason("stop")]
    (call,) = mocked.requests[("POST", pytest.importorskip("yarl").URL(ENDPOINT))]
    assert call.kwargs["json"] == {"question": "Hello, world!"}
    headers = call.kwargs["headers"]
    assert headers["x-secret"] == "Marinara"
    assert headers["accept"] == "application/json"
    assert headers["content-type"] == "application/json"
    assert headers["accept-language"] == "en-US,en;q=0.9"
    assert headers["origin"] == BASE and headers["referer"] == f"{BASE}/en"
    assert "Chrome/" in headers["user-agent"]


def test_multi_message_prompt_is_formatted(mocked):
    mocked.post(ENDPOINT, payload={"answer": {"content": "ok"}})

    async def main():
        messages = [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}]
        text = await Pizzagpt.create_async("gpt-4o-mini", messages, base_url=BASE)
        await close_session()
        return text

    assert asyncio.run(main()) == "ok"
    (call,) = next(iter(mocked.requests.values()))
    assert call.kwargs["json"]["question"] == "System: Be brief\nUser: Hi\nAssistant:"


def test_top_level_content_is_accepted(mocked):
    mocked.post(ENDPOINT, payload={"content": "flat"})
    assert run()[0] == "flat"


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"status": 404}, HTTPStatusError, "HTTP 404"),
        ({"status": 500}, HTTPStatusError, "HTTP 500"),
        (
            {"body": "<html><body>Blocked</body></html>", "content_type": "text/html"},
            NonJSONResponseError,
            "text/html",
        ),
        ({"payload": {"answer": "just a string"}}, ResponseShapeError, "'answer' is str"),
        ({"payload": ["a", "list"]}, ResponseShapeError, "JSON object"),
        ({"payload": {"answer": {"content": 42}}}, ResponseShapeError, "'content' is int"),
        ({"payload": {"answer": {"content": ""}}}, EmptyAnswerError, "empty"),
        ({"payload": {"answer": {"content": " \n "}}}, EmptyAnswerError, "empty"),
        ({"payload": {"answer": {}}}, EmptyAnswerError, "without content"),
        (
            {"body": '{"answer": {"content": "cut', "content_type": "application/json"},
            NonJSONResponseError,
            "application/json",
        ),
    ],
)
def test_bad_answers_become_typed_errors(mocked, kwargs, error, words):
    mocked.post(ENDPOINT, **kwargs)
    with pytest.raises(error, match=words) as info:
        run(max_retries=0)
    assert isinstance(info.value, PizzagptError)
    assert "\n" not in str(info.value)


def test_non_json_error_shows_type_and_start_of_body(mocked):
    page = "<html>" + "x" * 1000
    mocked.post(ENDPOINT, body=page, content_type="text/html")
    with pytest.raises(NonJSONResponseError) as info:
        run()
    assert info.value.content_type == "text/html"
    assert len(info.value.excerpt) == 200 and info.value.excerpt.startswith("<html>")


@pytest.mark.parametrize(
    "text",
    [
        "Misuse detected. Please get in touch, we can come up with a solution for your use case.",
        "Misuse detected. please get in touch",
        "MISUSE DETECTED",
    ],
)
def test_misuse_is_detected_whatever_the_case(mocked, text):
    mocked.post(ENDPOINT, payload={"answer": {"content": text}})
    with pytest.raises(MisuseError) as info:
        run()
    assert isinstance(info.value, ValueError)
    assert str(info.value) == " ".join(text.split())


def test_unknown_model_is_rejected_before_any_request(mocked):
    async def main():
        return [c async for c in Pizzagpt.create_async_generator("gpt-5", MESSAGES)]

    with pytest.raises(ModelNotFoundError, match="gpt-4o-mini"):
        asyncio.run(main())
    assert not mocked.requests


def test_retries_503_then_answers(mocked):
    mocked.post(ENDPOINT, status=503)
    mocked.post(ENDPOINT, status=502)
    mocked.post(ENDPOINT, payload={"answer": {"content": "third time"}})
    assert run()[0] == "third time"
    assert len(next(iter(mocked.requests.values()))) == 3


def test_gives_up_after_max_retries(mocked):
    for _ in range(3):
        mocked.post(ENDPOINT, status=504)
    with pytest.raises(HTTPStatusError) as info:
        run(max_retries=2)
    assert info.value.status == 504
    assert len(next(iter(mocked.requests.values()))) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500])
def test_does_not_retry_other_statuses(mocked, status):
    mocked.post(ENDPOINT, status=status)
    mocked.post(ENDPOINT, payload={"answer": {"content": "never"}})
    with pytest.raises(HTTPStatusError):
        run()
    assert len(next(iter(mocked.requests.values()))) == 1


def test_nothing_is_retried_after_the_answer_arrived(mocked):
    mocked.post(ENDPOINT, payload={"answer": {"content": "Misuse detected."}})
    mocked.post(ENDPOINT, payload={"answer": {"content": "fine"}})
    with pytest.raises(MisuseError):
        run()
    assert len(next(iter(mocked.requests.values()))) == 1


def test_too_long_retry_after_is_not_waited_for(mocked):
    mocked.post(ENDPOINT, status=429, headers={"Retry-After": "3600"})
    started = time.monotonic()
    with pytest.raises(HTTPStatusError) as info:
        run()
    assert time.monotonic() - started < 5
    assert info.value.retry_after == 3600


def test_connection_errors_are_retried(mocked):
    import aiohttp

    mocked.post(ENDPOINT, exception=aiohttp.ServerDisconnectedError())
    mocked.post(ENDPOINT, payload={"answer": {"content": "back"}})
    assert run()[0] == "back"


def test_proxy_is_passed_per_call_and_credentials_never_shown(mocked):
    import aiohttp

    proxy = "http://alice:s3cret@proxy.test:3128"
    mocked.post(
        ENDPOINT,
        exception=aiohttp.ClientProxyConnectionError(
            aiohttp.client_reqrep.ConnectionKey("proxy.test", 3128, False, True, None, None, None),
            OSError(111, f"refused by {proxy}"),
        ),
        repeat=True,
    )
    with pytest.raises(ConnectError) as info:
        run(proxy=proxy, max_retries=1)
    message = str(info.value)
    assert "s3cret" not in message and "alice" not in message
    calls = next(iter(mocked.requests.values()))
    assert all(call.kwargs["proxy"] == proxy for call in calls)


def test_redact_masks_userinfo_and_secrets():
    assert redact("via http://bob:pw@h:1/x failed") == "via http://***@h:1/x failed"
    assert redact("pw leaked", "pw") == "*** leaked"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3", 3.0), ("0.5", 0.5), ("-2", 0.0), ("", None), (None, None), ("soon", None)],
)
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


@given(st.binary(max_size=300))
def test_parse_answer_raises_only_documented_errors(body):
    try:
        text = parse_answer(body)
    except PizzagptError:
        return
    assert isinstance(text, str) and text.strip()


@given(st.text(min_size=1).filter(lambda t: t.strip() and "misuse detected" not in t.lower()))
def test_parse_answer_returns_any_content(text):
    assert parse_answer(json.dumps({"answer": {"content": text}})) == text


# -- over a real loopback socket ------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(emu):
    async def main():
        try:
            for i in range(10):
                await ask_async(f"question {i}")
        finally:
            await close_session()

    asyncio.run(main())
    assert emu.requests == 10
    assert emu.connections == 1


def test_one_session_per_loop_never_shared():
    async def sessions():
        session = await get_session()
        assert await get_session() is session
        return session

    loops = [asyncio.new_event_loop() for _ in range(2)]
    try:
        first, second = (loop.run_until_complete(sessions()) for loop in loops)
        assert first is not second and not first.closed
        for loop in loops:
            # What asyncio.run() and asyncio.Runner do before closing a loop.
            loop.run_until_complete(loop.shutdown_asyncgens())
        assert first.closed and second.closed
    finally:
        for loop in loops:
            loop.close()


def test_close_session_then_a_new_one(emu):
    async def main():
        await ask_async("one")
        session = await get_session()
        await close_session()
        assert session.closed
        await ask_async("two")
        assert (await get_session()) is not session
        await close_session()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_pizzagpt_url_is_read_at_request_time(emulator, monkeypatch):
    monkeypatch.delenv("PIZZAGPT_URL", raising=False)
    assert Pizzagpt.base_url() == "https://www.pizzagpt.it"
    monkeypatch.setenv("PIZZAGPT_URL", emulator.url + "/")
    assert Pizzagpt.base_url() == emulator.url
    assert "Emulated" in ask("hello")
    monkeypatch.setattr(Pizzagpt, "url", "http://example.invalid")
    monkeypatch.delenv("PIZZAGPT_URL")
    assert Pizzagpt.base_url() == "http://example.invalid"
    assert Pizzagpt.base_url(emulator.url) == emulator.url


def test_retry_on_emulated_503_then_answer(emu):
    assert "Emulated" in ask("flaky [[fault:status=503;times=2]]")
    assert emu.requests == 3


def test_retry_after_is_honoured(emu):
    started = time.monotonic()
    assert "Emulated" in ask("slow down [[fault:status=429;retry-after=0.6;times=1]]")
    assert time.monotonic() - started >= 0.6
    assert emu.requests == 2


def test_total_timeout(emu):
    with pytest.raises(RequestTimeoutError, match="0.3 s"):
        ask("[[fault:latency=2]]", timeout=0.3)


def test_connection_dropped_mid_answer(emu):
    with pytest.raises(ConnectionLostError, match="lost"):
        ask("[[fault:drop]]")
    assert emu.requests == 1
    assert "Emulated" in ask("after the drop")


def test_connect_refused_after_retries(monkeypatch):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("PIZZAGPT_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(ConnectError, match="Cannot reach"):
        ask("anyone there?", max_retries=1)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("status=500", HTTPStatusError),
        ("misuse", MisuseError),
        ("empty", EmptyAnswerError),
        ("string-answer", ResponseShapeError),
        ("invalid-json", NonJSONResponseError),
        ("html", NonJSONResponseError),
    ],
)
def test_emulated_faults(emu, fault, error):
    with pytest.raises(error):
        ask(f"[[fault:{fault}]]")


def test_large_answer(emu):
    assert len(ask("[[fault:large=5000000]]")) == 5_000_000


SEED_EXAMPLE = """
async def example_usage():
    # Example messages for the API request
    messages = [
        {"role": "user", "content": "Hello, world!"},
    ]

    # Create an asynchronous generator for the Pizzagpt API
    async_generator = await Pizzagpt.create_async_generator(model='gpt-4o-mini', messages=messages)

    # Iterate over the generator and print the responses
    async for response in async_generator:
        print(f"API Response: {response}")

if __name__ == "__main__":
    import asyncio
    asyncio.run(example_usage())
"""


def test_seed_example_runs_verbatim(emu, tmp_path: Path):
    script = tmp_path / "example.py"
    script.write_text("from pizzagpt_magic import Pizzagpt\n" + SEED_EXAMPLE)
    result = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-X", "dev", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PIZZAGPT_URL": emu.url},
    )
    assert result.returncode == 0, result.stderr
    assert "API Response: **Emulated gpt-4o-mini answer**" in result.stdout
    assert "> Hello, world!" in result.stdout
    assert "Unclosed" not in result.stderr


def test_proxy_environment_variables_are_honoured(emu, monkeypatch):
    import socket

    from pizzagpt_magic.providers.pizzagpt import env_proxy

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://carol:hunter2@127.0.0.1:{dead}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert env_proxy(emu.url) == f"http://carol:hunter2@127.0.0.1:{dead}"
    with pytest.raises(ConnectError) as info:
        ask("through a dead proxy", max_retries=0)
    assert "hunter2" not in str(info.value) and "carol" not in str(info.value)
    assert emu.requests == 0
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert env_proxy(emu.url) is None
    assert "Emulated" in ask("bypassing the proxy")


@pytest.mark.parametrize(
    ("env", "url", "expected"),
    [
        ({}, "http://h/x", None),
        ({"HTTP_PROXY": "http://p:1"}, "http://h/x", "http://p:1"),
        ({"HTTP_PROXY": "http://p:1"}, "https://h/x", None),
        (
            {"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:1"},
            "https://h/x",
            "http://low:1",
        ),
        ({"ALL_PROXY": "http://all:1"}, "https://h/x", "http://all:1"),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "h,other"}, "https://h/x", None),
        ({"HTTPS_PROXY": "http://p:1", "no_proxy": ".example.org"}, "https://a.example.org/", None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, "https://h/x", None),
        ({"HTTP_PROXY": "http://p:1", "REQUEST_METHOD": "GET"}, "http://h/x", None),
    ],
)
def test_env_proxy_follows_urllib(monkeypatch, env, url, expected):
    import urllib.request

    from pizzagpt_magic.providers.pizzagpt import env_proxy

    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert env_proxy(url) == expected
    proxies = urllib.request.getproxies_environment()
    host = url.split("/")[2]
    reference = (
        None
        if proxies.get("no") and urllib.request.proxy_bypass_environment(host, proxies)
        else proxies.get(url.split(":")[0]) or proxies.get("all")
    )
    assert env_proxy(url) == reference


def test_retries_reuse_the_connection(emu):
    from pizzagpt_magic.loop import run_sync
    from pizzagpt_magic.session import close_session

    # An empty pool: idle connections that earlier tests left would be reused too, each one
    # a peer the emulator counts.
    run_sync(close_session())
    assert "Emulated" in ask("[[fault:status=503;times=2]] keep the line")
    assert emu.requests == 3 and emu.connections == 1
