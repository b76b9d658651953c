"""The Anthropic provider next to the official ``anthropic`` SDK (1.x, in the test extra): what it
sends for the same call, and what it reads from the same server-sent event bytes."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from keys import API_KEY

from pizzagpt_magic import api, backends
from pizzagpt_magic.errors import ResponseError
from pizzagpt_magic.loop import run_sync
from pizzagpt_magic.providers.anthropic import STOP_REASONS, Anthropic

anthropic = pytest.importorskip("anthropic")  # in the test extra: present wherever the suite runs

SYSTEM = "Be brief"
MESSAGES = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "What is 2 + 2?"},
]


def sdk_client(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key=API_KEY, max_retries=0)


def test_the_sdk_is_the_1x_line():
    # Its wire is the documented one (x-api-key, anthropic-version 2023-06-01); see setup.cfg.
    assert anthropic.__version__.startswith("1.")


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"temperature": 0.2, "max_tokens": 50},
        {"stream": True},
        {"stream": True, "temperature": 1.0, "max_tokens": 7},
    ],
)
def test_the_request_equals_the_sdks(claude, options):
    stream = options.get("stream", False)
    temperature = options.get("temperature")
    max_tokens = options.get("max_tokens")

    async def with_sdk():
        async with sdk_client(claude.url) as client:
            # The 1.x SDK's create() takes temperature through extra_body.
            extra = {"extra_body": {"temperature": temperature}} if temperature is not None else {}
            result = await client.messages.create(
                model="emu-claude",
                max_tokens=max_tokens or Anthropic.default_max_tokens,
                system=SYSTEM,
                messages=MESSAGES,
                **({"stream": True} if stream else {}),
                **extra,
            )
            if stream:
                async for _ in result:
                    pass

    asyncio.run(with_sdk())
    sdk = claude.message_requests[-1]
    messages = [{"role": "system", "content": SYSTEM}, *MESSAGES]
    backend = backends.resolve("anthropic:emu-claude")
    parameters = {"temperature": temperature, "max_tokens": max_tokens}
    run_sync(api.complete_messages(backend, messages, stream=stream, cache=False, **parameters))
    ours = claude.message_requests[-1]
    assert ours is not sdk and ours["body"] == sdk["body"]
    sdk_headers = {k.lower(): v for k, v in sdk["headers"].items()}
    our_headers = {k.lower(): v for k, v in ours["headers"].items()}
    for header in ("x-api-key", "anthropic-version", "content-type"):
        assert our_headers[header] == sdk_headers[header]
    assert our_headers["anthropic-version"] == "2023-06-01" and "authorization" not in sdk_headers


def event(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


START = (
    '{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",'
    '"model":"m","content":[],"stop_reason":null,"stop_sequence":null,'
    '"usage":{"input_tokens":25,"output_tokens":1,"cache_creation_input_tokens":40,'
    '"cache_read_input_tokens":300}}}'
)


def delta(text: str) -> str:
    data = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }
    return json.dumps(data)


STREAMS = {
    "documented": [
        event("message_start", START),
        event(
            "content_block_start",
            '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
        ),
        event("ping", '{"type": "ping"}'),
        event("content_block_delta", delta("Hello")),
        event("content_block_delta", delta("! **Four**.")),
        event("content_block_stop", '{"type":"content_block_stop","index":0}'),
        event(
            "message_delta",
            '{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
            '"usage":{"output_tokens":15}}',
        ),
        event("message_stop", '{"type":"message_stop"}'),
    ],
    "cut-at-max-tokens-split-anywhere": [
        b"event: message_start\r\ndata: " + START.encode()[:40],
        START.encode()[40:] + b"\r\n\r\n: keep-alive\r\n\r\nevent: content_block_start\n",
        b'data: {"type":"content_block_start","index":0,"content_block":'
        b'{"type":"text","text":"Caf\xc3',
        b'\xa9 "}}\n\nevent: content_block_delta\ndata: {"type":"content_block_delta","index":0,',
        b'\ndata: "delta":{"type":"text_delta","text":"\xe2\x82',
        b'\xac5 each"}}\n\n',
        event(
            "message_delta",
            '{"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},'
            '"usage":{"input_tokens":30,"output_tokens":4,"cache_read_input_tokens":0}}',
        ),
        b'event: message_stop\ndata: {"type":"message_stop"}',
    ],
}


async def serve_bytes(pieces: list[bytes]) -> tuple[web.AppRunner, str]:
    async def handler(request):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
            await asyncio.sleep(0.005)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


def sdk_reading(message) -> tuple[str, str | None, dict[str, int]]:
    """What the SDK's accumulated message says, in the names every provider reports."""
    text = "".join(block.text for block in message.content if block.type == "text")
    usage = message.usage
    read = usage.cache_read_input_tokens
    written = usage.cache_creation_input_tokens
    counts = {
        "prompt_tokens": usage.input_tokens + (read or 0) + (written or 0),
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + (read or 0) + (written or 0) + usage.output_tokens,
    }
    if read is not None:
        counts["cache_read_input_tokens"] = read
    if written is not None:
        counts["cache_creation_input_tokens"] = written
    return text, STOP_REASONS.get(message.stop_reason, message.stop_reason), counts


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_the_same_stream_reads_the_same(name, monkeypatch):
    """For the same server-sent event bytes: the same text, stop reason and usage."""
    monkeypatch.setenv("PEER_KEY", API_KEY)

    async def main():
        runner, url = await serve_bytes(STREAMS[name])
        try:
            async with sdk_client(url) as client:
                async with client.messages.stream(
                    model="m", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
                ) as stream:
                    message = await stream.get_final_message()
            endpoint = backends.Endpoint("peer", url, "PEER_KEY", api="anthropic")
            backend = backends.Backend("peer", "m", endpoint=endpoint)
            ours = await api.complete_messages(
                backend, [{"role": "user", "content": "hi"}], cache=False, log=False
            )
        finally:
            await runner.cleanup()
        return sdk_reading(message), (ours.text, ours.finish_reason, ours.usage)

    sdk, ours = asyncio.run(main())
    assert ours == sdk


def test_an_error_event_fails_both(monkeypatch):
    monkeypatch.setenv("PEER_KEY", API_KEY)
    pieces = [
        *STREAMS["documented"][:4],
        event(
            "error", '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
        ),
    ]

    async def main():
        runner, url = await serve_bytes(pieces)
        try:
            with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
                async with sdk_client(url) as client:
                    async with client.messages.stream(
                        model="m", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
                    ) as stream:
                        await stream.get_final_message()
            endpoint = backends.Endpoint("peer", url, "PEER_KEY", api="anthropic")
            backend = backends.Backend("peer", "m", endpoint=endpoint)
            with pytest.raises(ResponseError) as info:
                await api.complete_messages(
                    backend, [{"role": "user", "content": "hi"}], cache=False, log=False
                )
        finally:
            await runner.cleanup()
        return info.value

    error = asyncio.run(main())
    assert str(error) == "peer sent an error mid-answer: overloaded_error: Overloaded"
    assert error.partial == "Hello"


def test_a_forced_tool_equals_the_sdks_and_the_emulator_streams_it(claude):
    from pizzagpt_magic.providers.anthropic import forced_tool

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "count", "schema": schema}}
    forced = forced_tool(response_format)

    async def with_sdk():
        async with sdk_client(claude.url) as client:
            await client.messages.create(
                model="emu-claude",
                max_tokens=Anthropic.default_max_tokens,
                messages=MESSAGES,
                tools=[forced.tool],
                tool_choice={"type": "tool", "name": "count"},
            )
            async with client.messages.stream(
                model="emu-claude",
                max_tokens=100,
                messages=MESSAGES,
                tools=[forced.tool],
                tool_choice={"type": "tool", "name": "count"},
            ) as stream:
                return await stream.get_final_message()

    streamed = asyncio.run(with_sdk())
    sdk = claude.message_requests[0]
    text, finish, _ = run_sync(
        Anthropic.complete("emu-claude", MESSAGES, response_format=response_format)
    )
    assert claude.message_requests[-1]["body"] == sdk["body"]
    # What the emulator streams as input_json_delta events, the SDK reads as the same input.
    (block,) = streamed.content
    assert block.type == "tool_use" and block.input == json.loads(text) == {"n": 5}
    assert streamed.stop_reason == "tool_use" and finish == "stop"
