"""The Anthropic Messages API provider (``anthropic:MODEL``) against the emulator's Messages routes:
the request it sends, plain and streamed answers, usage with the prompt cache's counts, errors,
faults, the model list, images, and the same behaviour in a shell as the other providers."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import struct
import zlib
from contextlib import closing

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from keys import API_KEY
from test_magics import cell, failing

from pizzagpt_magic import api, backends
from pizzagpt_magic import store as stores
from pizzagpt_magic.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionLostError,
    HTTPStatusError,
    ModelNotFoundError,
    NonJSONResponseError,
    PromptError,
    ResponseError,
    ResponseShapeError,
)
from pizzagpt_magic.loop import run_sync
from pizzagpt_magic.providers import anthropic
from pizzagpt_magic.providers.anthropic import Anthropic, MessagesDecoder, to_messages
from pizzagpt_magic.providers.base import FinishReason, Usage


def ask(prompt, **options):
    return run_sync(api.complete(prompt, **options))


# -- the model id and the endpoint --------------------------------------------------------------


def test_anthropic_model_ids_name_the_messages_api(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    backend = backends.resolve("anthropic:claude-sonnet-4-5")
    assert (backend.provider, backend.model) == ("anthropic", "claude-sonnet-4-5")
    assert backend.endpoint.api == "anthropic" and backend.endpoint.provider is Anthropic
    assert backend.endpoint.url == "https://api.anthropic.com"
    assert backend.endpoint.api_key_env == "ANTHROPIC_API_KEY"
    assert backend.streams and backend.takes_images and backend.takes_parameters
    # As the official SDK reads it: the variable replaces the root, a trailing / dropped.
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/proxy/")
    assert backends.PRESETS["anthropic"].url == "http://127.0.0.1:9/proxy"
    with pytest.raises(ConfigurationError, match="anthropic:MODEL"):
        backends.resolve("anthropic")


def test_an_endpoint_of_ones_own_may_speak_the_messages_api(monkeypatch):
    monkeypatch.setattr(backends, "_registered", {})
    backends.register_endpoint(
        "claude-proxy", "http://127.0.0.1:9", api_key_env="PROXY_KEY", api="anthropic"
    )
    endpoint = backends.endpoints()["claude-proxy"]
    assert backends.resolve("claude-proxy:x").endpoint == endpoint
    extra = {"mine": {"base_url": "http://m", "api": "anthropic"}}
    assert backends.endpoints(extra)["mine"].provider is Anthropic
    with pytest.raises(ConfigurationError, match="api is one of 'openai', 'anthropic'"):
        backends.register_endpoint("bad", "http://x", api="cohere")


# -- messages in the Messages form --------------------------------------------------------------


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height)))
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_system_messages_go_to_the_top_and_images_become_blocks():
    data = base64.b64encode(png(3, 2)).decode()
    system, messages = to_messages(
        [
            {"role": "system", "content": "Be brief"},
            {"role": "system", "content": "Answer in French"},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Salut"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in "},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                ],
            },
        ]
    )
    assert system == "Be brief\n\nAnswer in French"
    assert messages == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Salut"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in "},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": data},
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
            ],
        },
    ]
    assert to_messages([{"role": "user", "content": "Hi"}]) == (None, [messages[0]])
    for bad, text in [
        ([{"role": "system", "content": "x"}], "needs a user message"),
        ([{"role": "function", "content": "x"}], "not 'function'"),
        ([{"role": "tool", "content": "x"}], "needs the tool_call_id"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": "data:x,abc"}]}],
            "must be base64",
        ),
    ]:
        with pytest.raises(PromptError, match=text):
            to_messages(bad)


def test_the_request_body_and_headers():
    body = Anthropic.body("m", [{"role": "user", "content": "Hi"}], stream=False)
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 4096,
    }
    body = Anthropic.body(
        "m",
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}],
        stream=True,
        temperature=0.0,
        max_tokens=7,
    )
    assert body["system"] == "S" and body["temperature"] == 0.0
    assert body["max_tokens"] == 7 and body["stream"] is True
    headers = Anthropic.headers("sk-ant-x")
    assert headers["x-api-key"] == "sk-ant-x" and headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in headers


# -- server-sent events -------------------------------------------------------------------------

EVENTS = (
    b"event: message_start\r\n"
    b'data: {"type":"message_start","message":{"id":"m","type":"message","role":"assistant",'
    b'"content":[],"model":"x","usage":{"input_tokens":5,"output_tokens":1,'
    b'"cache_read_input_tokens":7}}}\r\n\r\n'
    b": keep-alive\n\n"
    b'event: ping\ndata: {"type": "ping"}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,\n'
    b'data: "delta":{"type":"text_delta","text":"Caf\xc3\xa9 \xe2\x82\xac5"}}\n\n'
    b'data: {"type":"content_block_delta","delta":{"type":"text_delta","text":"unnamed"}}\n\n'
    b"event: message_delta\r"
    b'data: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},'
    b'"usage":{"output_tokens":3}}\r\r'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def test_the_event_decoder_reads_events_split_anywhere():
    whole = MessagesDecoder().feed(EVENTS)
    assert [name for name, _ in whole] == [
        "message_start",
        "ping",
        "content_block_delta",
        "",
        "message_delta",
        "message_stop",
    ]
    assert json.loads(whole[2][1])["delta"]["text"] == "Café €5"
    for step in (1, 2, 3, 7):
        decoder = MessagesDecoder()
        events = []
        for start in range(0, len(EVENTS), step):  # splits mid-line and mid-character
            events += decoder.feed(EVENTS[start : start + step])
        assert events + decoder.close() == whole
    decoder = MessagesDecoder()
    assert decoder.feed(b'event: message_stop\ndata: {"type":"message_stop"}') == []
    assert decoder.close() == [("message_stop", '{"type":"message_stop"}')]


def test_events_give_text_stop_reason_and_usage():
    counts: dict[str, int] = {}
    read = [anthropic._read_event(n, d, counts, "x") for n, d in MessagesDecoder().feed(EVENTS)]
    # An event without a name carries nothing, as the official SDK reads it.
    assert "".join(text for text, _ in read) == "Café €5"
    assert [reason for _, reason in read if reason] == ["max_tokens"]
    assert anthropic.usage_of(counts).as_dict() == {
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "total_tokens": 15,
        "cache_read_input_tokens": 7,
    }


# -- the provider against the emulator ----------------------------------------------------------


def test_plain_and_streamed_answers(claude):
    chunks = []
    streamed = ask("What is 6 times 7?", model="anthropic:emu-claude", on_text=chunks.append)
    assert len(chunks) > 3 and "".join(chunks) == streamed.text
    plain = ask("What is 6 times 7?", model="anthropic:emu-claude", stream=False)
    assert plain.text == streamed.text and "6, 7" in plain.text
    for completion in (streamed, plain):
        assert completion.provider == "anthropic" and completion.model == "emu-claude"
        assert completion.finish_reason == "stop" and not completion.truncated
        assert completion.usage == {
            "prompt_tokens": 5,
            "completion_tokens": 30,
            "total_tokens": 35,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        }
    first, second = claude.message_requests
    assert first["body"] == {
        "model": "emu-claude",
        "messages": [{"role": "user", "content": "What is 6 times 7?"}],
        "max_tokens": Anthropic.default_max_tokens,
        "stream": True,
    }
    assert "stream" not in second["body"]
    for request in (first, second):
        assert request["headers"]["x-api-key"] == API_KEY
        assert request["headers"]["anthropic-version"] == "2023-06-01"
        assert "Authorization" not in request["headers"]


def test_history_system_and_parameters_reach_the_api(claude):
    completion = ask(
        "And now?",
        model="anthropic:emu-claude",
        system="Be brief",
        history=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        temperature=0.3,
        max_tokens=4,
    )
    body = claude.message_requests[-1]["body"]
    assert body["system"] == "Be brief"
    assert body["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "And now?"},
    ]
    assert body["temperature"] == 0.3 and body["max_tokens"] == 4
    # stop_reason: max_tokens is the length note, as for every provider.
    assert completion.finish_reason == "length" and completion.truncated
    assert len(completion.text.split(" ")) == 4
    assert completion.parameters == {"temperature": 0.3, "max_tokens": 4}
    full = ask("And now?", model="anthropic:emu-claude", system="Be brief", cache=False)
    assert "The system message has 8 characters." in full.text


@pytest.mark.parametrize("stream", [True, False])
def test_the_prompt_caches_counts_reach_the_metadata_and_the_log(claude, tmp_path, stream):
    store = stores.Store(tmp_path / "store.sqlite3")
    try:
        completion = run_sync(
            api.complete(
                "Long context [[fault:cache-read=120;cache-write=30]]",
                model="anthropic:emu-claude",
                stream=stream,
                store=store,
            )
        )
        store.flush()
    finally:
        store.close()
    assert completion.usage["cache_read_input_tokens"] == 120
    assert completion.usage["cache_creation_input_tokens"] == 30
    # The whole prompt: its 3 words, and those read from and written to the cache.
    assert completion.usage["prompt_tokens"] == 3 + 120 + 30
    assert completion.metadata()["usage"] == completion.usage
    with closing(sqlite3.connect(tmp_path / "store.sqlite3")) as connection:
        logged = connection.execute(
            "SELECT prompt_tokens, cache_read_input_tokens, cache_creation_input_tokens FROM log"
        ).fetchall()
    assert logged == [(153, 120, 30)]


def test_a_missing_key_names_the_variable_and_sends_nothing(claude, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(ConfigurationError, match="set the environment variable ANTHROPIC_API_KEY"):
        ask("hi", model="anthropic:emu-claude")
    assert claude.requests == 0


@pytest.mark.parametrize("stream", [True, False])
def test_a_refused_key_names_the_variable_not_the_key(claude, monkeypatch, stream):
    wrong = "sk-ant-wrong-0123456789abcdef"
    monkeypatch.setenv("ANTHROPIC_API_KEY", wrong)
    with pytest.raises(AuthenticationError) as info:
        ask("hi", model="anthropic:emu-claude", stream=stream)
    message = str(info.value)
    assert message.startswith("anthropic refused the API key in ANTHROPIC_API_KEY (HTTP 401")
    assert "invalid x-api-key" in message and wrong not in repr(info.value)
    assert claude.requests == 1  # a refused key is not retried


def test_an_unknown_model_lists_the_apis_models(claude):
    with pytest.raises(ModelNotFoundError) as info:
        ask("hi", model="anthropic:claude-9")
    assert info.value.models == ["emu-claude", "emu-claude-mini"]
    assert "'claude-9' is not supported by anthropic; valid models: emu-claude" in str(info.value)


@pytest.mark.parametrize("stream", [True, False])
def test_retries_on_429_529_and_5xx_honouring_retry_after(claude, stream):
    completion = ask("hi [[fault:status=529;times=2]]", model="anthropic:emu-claude", stream=stream)
    assert "Emulated" in completion.text and claude.requests == 3
    claude.reset_stats()
    ask(
        "hi [[fault:status=429;retry-after=0.2;times=1]]",
        model="anthropic:emu-claude",
        stream=stream,
    )
    assert claude.requests == 2
    claude.reset_stats()
    with pytest.raises(HTTPStatusError) as info:
        ask("hi [[fault:status=529]]", model="anthropic:emu-claude", stream=stream, max_retries=1)
    assert claude.requests == 2 and info.value.status == 529
    assert str(info.value).endswith("overloaded_error: emulated status 529")
    claude.reset_stats()
    with pytest.raises(HTTPStatusError) as info:
        # A Retry-After longer than the limit is not waited for.
        ask("hi [[fault:status=429;retry-after=3600]]", model="anthropic:emu-claude")
    assert info.value.retry_after == 3600 and "rate_limit_error" in str(info.value)
    assert claude.requests == 1


def test_an_invalid_request_is_one_line(claude):
    with pytest.raises(HTTPStatusError) as info:
        ask("hi", model="anthropic:emu-claude", temperature=1.5)
    message = str(info.value)
    assert info.value.status == 400 and "\n" not in message
    assert message.endswith("invalid_request_error: temperature: range: 0..1")
    assert claude.requests == 1


def test_a_cut_stream_keeps_the_partial_text(claude):
    chunks = []
    with pytest.raises(ConnectionLostError) as info:
        ask(
            "tell me [[fault:cut;chunk-size=4]]",
            model="anthropic:emu-claude",
            on_text=chunks.append,
        )
    assert info.value.partial == "".join(chunks) and info.value.partial.startswith("**Emu")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("fault", "error", "text"),
    [
        ("stream-error", ResponseError, "anthropic sent an error mid-answer: overloaded_error"),
        ("invalid-json", ResponseShapeError, "not JSON"),
    ],
)
def test_bad_events_are_typed_errors(claude, fault, error, text):
    with pytest.raises(error, match=text) as info:
        ask(f"hi [[fault:{fault};chunk-size=4]]", model="anthropic:emu-claude")
    assert info.value.partial


@pytest.mark.parametrize("fault", ["invalid-json", "html"])
def test_bad_plain_answers_are_typed_errors(claude, fault):
    with pytest.raises(NonJSONResponseError):
        ask(f"hi [[fault:{fault}]]", model="anthropic:emu-claude", stream=False)


def test_list_models_reads_every_page(claude, monkeypatch):
    listed = run_sync(backends.list_providers("anthropic"))
    assert listed == {"anthropic": ["anthropic:emu-claude", "anthropic:emu-claude-mini"]}
    monkeypatch.setattr(anthropic, "_MODEL_PAGE_SIZE", 1)
    assert run_sync(anthropic.list_models(claude.url, "ANTHROPIC_API_KEY")) == [
        "emu-claude",
        "emu-claude-mini",
    ]
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wrong-123456")
    wrong = run_sync(anthropic.list_models(claude.url, "ANTHROPIC_API_KEY"))
    assert "refused the API key in ANTHROPIC_API_KEY" in wrong and "sk-ant-wrong" not in wrong
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    assert "ANTHROPIC_API_KEY" in run_sync(backends.list_providers("anthropic"))["anthropic"]


def test_the_key_does_not_follow_a_redirect_to_another_origin(claude):
    """A 307 to another origin repeats the POST there without the x-api-key header."""
    seen = []

    async def main():
        async def moved(request):
            seen.append(request.headers.get("x-api-key"))
            raise web.HTTPTemporaryRedirect(f"{claude.url}/v1/messages")

        app = web.Application()
        app.router.add_post("/v1/messages", moved)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        backends._registered["moved"] = backends.Endpoint(
            "moved", f"http://127.0.0.1:{port}", "ANTHROPIC_API_KEY", api="anthropic"
        )
        try:
            with pytest.raises(AuthenticationError):
                await api.complete("hi", model="moved:emu-claude", stream=False)
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        backends._registered.pop("moved", None)
    # The endpoint itself got the key; the emulator, another origin, got the request without
    # it, and so refused it.
    assert seen == [API_KEY] and claude.requests == 1


def test_the_provider_has_the_gpt4free_interface(claude):
    messages = [{"role": "user", "content": "What is 6 times 7?"}]

    async def main():
        items = [item async for item in Anthropic.create_async_generator("emu-claude", messages)]
        awaited = await Anthropic.create_async_generator("emu-claude", messages, stream=False)
        plain = [item async for item in awaited]
        text = await Anthropic.create_async("emu-claude", messages)
        return items, plain, text

    items, plain, text = asyncio.run(main())
    assert items[-1] == FinishReason("stop") and isinstance(items[-2], Usage)
    assert "".join(i for i in items if isinstance(i, str)) == text
    assert plain[0] == text and plain[-1] == FinishReason("stop")
    # A class given directly, as a gpt4free provider is.
    assert api.ask("What is 6 times 7?", provider=Anthropic, model="emu-claude") == text


# -- in a shell, as the other providers -------------------------------------------------------


def test_the_magic_streams_and_notes_the_length(shell, claude):
    answer = cell(shell, "%pizza -m anthropic:emu-claude --max-tokens 5 Name three toppings.")
    assert answer.text.count(" ") == 4
    assert "cut at the token limit" in answer.bundle()["text/html"]
    meta = answer.metadata
    assert meta["provider"] == "anthropic" and meta["finish_reason"] == "length"
    assert meta["usage"]["cache_read_input_tokens"] == 0
    assert claude.message_requests[-1]["body"]["stream"] is True


def test_the_magic_sends_images_as_blocks(shell, claude):
    shell.user_ns["picture"] = png(40, 20)
    answer = cell(shell, "%pizza --no-stream -m anthropic:emu-claude What is in {picture}?")
    assert "The question holds 1 image(s): PNG 40×20." in answer.text
    content = claude.message_requests[-1]["body"]["messages"][-1]["content"]
    assert [block["type"] for block in content] == ["text", "image", "text"]
    source = content[1]["source"]
    assert source["type"] == "base64" and source["media_type"] == "image/png"
    assert base64.b64decode(source["data"])[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_magic_turns_failures_into_one_line(shell, claude, monkeypatch):
    assert "valid models: emu-claude" in failing(shell, "%pizza -m anthropic:nope hi")
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    assert "ANTHROPIC_API_KEY" in failing(shell, "%pizza -m anthropic:emu-claude hi")
    listed = cell(shell, "%pizza --models anthropic")
    assert "ANTHROPIC_API_KEY" in listed._repr_mimebundle_()["text/plain"]


# -- a schema as a forced tool (the hook for typed answers) -----------------------------------

PERSON = {
    "type": "json_schema",
    "json_schema": {
        "name": "person",
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


def test_a_json_schema_response_format_is_a_forced_tool(claude):
    messages = [{"role": "user", "content": "Who is the cook here?"}]
    text, finish, usage = run_sync(
        Anthropic.complete("emu-claude", messages, response_format=PERSON)
    )
    assert json.loads(text) == {"name": "emulated", "age": 5} and finish == "stop"
    body = claude.message_requests[-1]["body"]
    assert body["tools"] == [
        {
            "name": "person",
            "description": "Give the answer, in exactly this shape.",
            "input_schema": PERSON["json_schema"]["schema"],
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "person"}
    # A schema that is not an object is the value of one, and read back as itself.
    names = {
        "type": "json_schema",
        "json_schema": {
            "name": "names list",
            "schema": {"type": "array", "items": {"type": "string"}},
        },
    }
    text, _, _ = run_sync(Anthropic.complete("emu-claude", messages, response_format=names))
    assert json.loads(text) == ["emulated"]
    tool = claude.message_requests[-1]["body"]["tools"][0]
    assert tool["name"] == "names_list" and tool["input_schema"]["required"] == ["value"]
    # The generator asks without streaming: the tool's input is read whole.
    items = run_sync(
        _items(Anthropic.create_async_generator("emu-claude", messages, response_format=PERSON))
    )
    assert json.loads(items[0]) == {"name": "emulated", "age": 5}
    assert "stream" not in claude.message_requests[-1]["body"]
    # Another kind (the Messages API has no JSON mode) sends no tool.
    run_sync(Anthropic.complete("emu-claude", messages, response_format={"type": "json_object"}))
    assert "tools" not in claude.message_requests[-1]["body"]


async def _items(agen):
    return [item async for item in agen]


def test_the_event_decoder_joins_a_long_line_once_and_bounds_an_event():
    line = b"data: " + b"x" * 2_000_000
    decoder = MessagesDecoder()
    for start in range(0, len(line), 100):  # 20,000 pieces of one line, kept until its end
        assert decoder.feed(line[start : start + 100]) == []
    assert decoder.feed(b"\n\n") == [("", "x" * 2_000_000)]
    decoder = MessagesDecoder(max_event_bytes=1000)
    events = decoder.feed(b"event: ping\ndata: {}\n\ndata: " + b"y" * 2000)
    assert events == [("ping", "{}")]  # the events before the one over the limit
    with pytest.raises(ResponseError, match="over 1,000 bytes"):
        decoder.feed(b"more")
    decoder = MessagesDecoder(max_event_bytes=1000)
    for _ in range(100):  # many small events in one piece are no large event
        assert len(decoder.feed(b"event: ping\ndata: {}\n\n" * 100)) == 100


@pytest.mark.parametrize("stream", [True, False])
def test_an_answer_over_its_limit_is_stopped(claude, monkeypatch, stream):
    monkeypatch.setattr(Anthropic, "max_answer_chars", 100)
    with pytest.raises(ResponseError, match="Anthropic.max_answer_chars") as info:
        ask("hi [[fault:large=5000;chunk-size=40]]", model="anthropic:emu-claude", stream=stream)
    assert len(info.value.partial) <= 100


@pytest.mark.parametrize("stream", [True, False])
def test_an_empty_answer_is_one_typed_error(claude, stream):
    from pizzagpt_magic.errors import EmptyAnswerError

    with pytest.raises(EmptyAnswerError, match="anthropic sent an empty answer"):
        ask("hi [[fault:empty]]", model="anthropic:emu-claude", stream=stream)


def test_a_403_names_the_variable_too(claude):
    with pytest.raises(AuthenticationError) as info:
        ask("hi [[fault:status=403]]", model="anthropic:emu-claude")
    assert str(info.value).startswith(
        "anthropic refused the API key in ANTHROPIC_API_KEY (HTTP 403: emulated status 403)"
    )
    assert API_KEY not in str(info.value) and claude.requests == 1


_names = st.sampled_from(["", "ping", "message_start", "content_block_delta", "error"])
_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=20,
)
_breaks = st.sampled_from([b"\n", b"\r\n", b"\r"])


@given(st.lists(st.tuples(_names, st.lists(_values, max_size=3), _breaks)), st.data())
def test_the_event_decoder_reads_any_events_split_anywhere(events, data):
    """Fuzzed: events written with any line breaks read back the same, whole or in pieces."""
    stream = b""
    expected = []
    for name, lines, brk in events:
        if name:
            stream += b"event: " + name.encode() + brk
        for line in lines:
            stream += b"data: " + line.encode() + brk
        stream += brk
        if name or lines:
            expected.append((name, "\n".join(lines)))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = MessagesDecoder()
    read = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)]):
        read += decoder.feed(stream[start:end])
    assert read + decoder.close() == expected
