"""The OpenAI-compatible provider next to its peers: the official ``openai`` SDK (what it sends,
what it reads from the same bytes) and a real third-party server, LiteLLM's proxy, on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web
from keys import API_KEY

from pizzagpt_magic import api, backends
from pizzagpt_magic.errors import HTTPStatusError, ModelNotFoundError, PizzagptError
from pizzagpt_magic.loop import run_sync

openai = pytest.importorskip("openai")  # in the test extra: present wherever the suite runs


def sdk_client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key=API_KEY, max_retries=0)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"temperature": 0.2, "max_tokens": 50},
        {"stream": True},
        {"stream": True, "temperature": 1.5, "max_tokens": 7},
    ],
)
def test_the_request_equals_the_sdks(endpoint, options):
    messages = [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "What is 2 + 2?"},
    ]
    stream = options.get("stream", False)
    parameters = {k: v for k, v in options.items() if k != "stream"}

    async def with_sdk():
        async with sdk_client(f"{endpoint.url}/v1") as client:
            # As the SDK is called by default: stream given only when on.
            extra = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
            result = await client.chat.completions.create(
                model="emu-mini", messages=messages, **parameters, **extra
            )
            if stream:
                async for _ in result:
                    pass

    asyncio.run(with_sdk())
    sdk = endpoint.chat_requests[-1]
    backend = backends.resolve("emu:emu-mini")
    run_sync(api.complete_messages(backend, messages, stream=stream, **parameters))
    ours = endpoint.chat_requests[-1]
    assert ours["body"] == sdk["body"]
    for header in ("Authorization", "Content-Type"):
        assert ours["headers"][header] == sdk["headers"][header]


STREAMS = {
    "litellm-like": [
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}\n\n',
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"content":"lo **w"}}]}\n\n',
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}\n\n',
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
        b'"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}}\n\n',
        b"data: [DONE]\n\n",
    ],
    "split-anywhere": [
        b': ping\n\ndata: {"id":"c","object":"chat.completion.chunk","created":1,',
        b'"model":"m","choices":[{"index":0,"delta":{"content":"Caf\xc3',
        b"\xa9 \xe2\x82",
        b'\xac"},"finish_reason":null}]}\r\n\r\ndata: {"id":"c","object":"chat.completion.chunk",'
        b'"created":1,"model":"m","choices":[{"index":0,"delta":{"content":null},'
        b'"finish_reason":"stop"}]}\n',
        b"\ndata: [DONE]\n\n",
    ],
}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_the_same_stream_reads_the_same(name):
    """For the same server-sent event bytes: the same text, finish reason and usage."""

    async def main():
        async def handler(request):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for piece in STREAMS[name]:
                await response.write(piece)
                await asyncio.sleep(0.005)
            await response.write_eof()
            return response

        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"
        try:
            async with sdk_client(url) as client:
                text, finish, usage = "", None, None
                stream = await client.chat.completions.create(
                    model="m",
                    messages=[{"role": "user", "content": "hi"}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
                async for chunk in stream:
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
                        finish = chunk.choices[0].finish_reason or finish
                    if chunk.usage:
                        usage = chunk.usage.model_dump(
                            include={"prompt_tokens", "completion_tokens", "total_tokens"}
                        )
            backend = backends.Backend("peer", "m", endpoint=backends.Endpoint("peer", url))
            ours = await api.complete_messages(backend, [{"role": "user", "content": "hi"}])
        finally:
            await runner.cleanup()
        return (text, finish, usage), (ours.text, ours.finish_reason, ours.usage)

    sdk, ours = asyncio.run(main())
    assert ours == sdk


# -- LiteLLM's proxy: a real OpenAI-compatible server, offline ----------------------------------

LITELLM_KEY = "sk-litellm-master-5e1d0c9b"
LITELLM_CONFIG = """\
model_list:
  - model_name: mock-mini
    litellm_params:
      model: openai/mock-mini
      api_key: sk-none
      mock_response: "Hello **world** from the mock."
"""


@pytest.fixture(scope="module")
def litellm(tmp_path_factory):
    executable = shutil.which("litellm") or str(Path(sys.executable).with_name("litellm"))
    if not Path(executable).exists():
        pytest.fail("LiteLLM's proxy is in the test extra: pip install -e '.[test]'")
    config = tmp_path_factory.mktemp("litellm") / "config.yaml"
    config.write_text(LITELLM_CONFIG)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": LITELLM_KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    log = config.with_name("litellm.log").open("w")
    process = subprocess.Popen(
        [executable, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health/liveliness", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    output = config.with_name("litellm.log").read_text()[-2000:]
                    pytest.fail(f"LiteLLM did not start: {output}")
                time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def litellm_endpoint(litellm, monkeypatch):
    monkeypatch.setenv("LITELLM_TEST_KEY", LITELLM_KEY)
    monkeypatch.setitem(
        backends._registered,
        "litellm",
        backends.Endpoint("litellm", f"{litellm}/v1", "LITELLM_TEST_KEY"),
    )
    return litellm


@pytest.mark.parametrize("stream", [False, True])
def test_litellm_plain_and_streamed(litellm_endpoint, stream):
    chunks = []
    completion = run_sync(
        api.complete("hi", model="litellm:mock-mini", stream=stream, on_text=chunks.append)
    )
    assert completion.text == "Hello **world** from the mock."
    assert completion.finish_reason == "stop"
    if stream:
        assert len(chunks) > 3 and "".join(chunks) == completion.text
    assert completion.usage and completion.usage["total_tokens"] > 0


def test_litellm_wrong_key(litellm_endpoint, monkeypatch):
    wrong = "sk-wrong-litellm-key-42"
    monkeypatch.setenv("LITELLM_TEST_KEY", wrong)
    with pytest.raises(PizzagptError) as info:
        run_sync(api.complete("hi", model="litellm:mock-mini", max_retries=0))
    # LiteLLM without a database answers a key it does not know with 400 (or 401).
    assert isinstance(info.value, HTTPStatusError) and info.value.status in (400, 401)
    assert wrong not in str(info.value) and "\n" not in str(info.value)


def test_litellm_unknown_model(litellm_endpoint):
    with pytest.raises(ModelNotFoundError) as info:
        run_sync(api.complete("hi", model="litellm:no-such-model"))
    assert info.value.models == ["mock-mini"]
    assert "'no-such-model' is not supported by litellm; valid models: mock-mini" in str(info.value)
