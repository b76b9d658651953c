"""The OpenAI-compatible provider against a server that answers badly on purpose: keys sent back
in errors, keep-alive comments forever, huge lines, and the odd but good answers of real
servers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
from aiohttp import web
from keys import API_KEY
from scripted import ScriptedServer, body, chunk, sse

from pizzagpt_magic.api import ask, complete
from pizzagpt_magic.errors import (
    AnswerTooLargeError,
    ConfigurationError,
    ConnectionLostError,
    EmptyAnswerError,
    PizzagptError,
    RequestTimeoutError,
)
from pizzagpt_magic.loop import run_sync
from pizzagpt_magic.providers.openai import OpenAICompatible, SSEDecoder, list_models

MODEL = "raw:raw-model"


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as running:
        yield running


@pytest.fixture
def raw(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> ScriptedServer:
    """The scripted server registered as the endpoint ``raw`` (key in ``$RAW_KEY``)."""
    from pizzagpt_magic import backends

    server.paths.clear()
    monkeypatch.setenv("RAW_KEY", API_KEY)
    monkeypatch.setitem(
        backends._registered, "raw", backends.Endpoint("raw", f"{server.url}/v1", "RAW_KEY")
    )
    return server


# -- 1. the key never shows, whatever error path the server takes ------------------------------


def _echo_key_in_stream(named: bool) -> object:
    error = {"error": {"message": f"bad key {API_KEY}; header was Bearer {API_KEY}"}}
    event = b"event: error\n" if named else b""
    return sse(chunk("Hel"), event + b"data: " + json.dumps(error).encode() + b"\n\n")


async def _redirect_with_key(request: web.Request) -> web.StreamResponse:
    await request.read()
    return web.Response(
        status=301,
        headers={"Location": f"/elsewhere?key={API_KEY}"},
        text=f"moved; your key {API_KEY}",
    )


async def _slow(request: web.Request) -> web.StreamResponse:
    await request.read()
    await asyncio.sleep(2)
    return web.json_response({})


KEY_PATHS = {
    "status": (body({"error": {"message": f"Invalid key {API_KEY}"}}, status=401), True),
    "stream error event": (_echo_key_in_stream(named=True), True),
    "stream error data": (_echo_key_in_stream(named=False), True),
    "json error object": (body({"error": {"message": f"key {API_KEY} over quota"}}), False),
    "json error in a stream answer": (body({"error": f"Bearer {API_KEY} refused"}), True),
    "not json": (body(f"<html>key={API_KEY}</html>"), False),
    "bad event": (sse(b"data: {" + API_KEY.encode() + b"\n\n"), True),
    "redirect": (_redirect_with_key, False),
    "timeout": (_slow, True),
}


@pytest.mark.parametrize("path", sorted(KEY_PATHS))
def test_no_error_path_shows_the_key(raw, path):
    script, stream = KEY_PATHS[path]
    raw.script = script
    with pytest.raises(PizzagptError) as info:
        ask("hi", model=MODEL, stream=stream, timeout=0.5, max_retries=0)
    shown = f"{info.value} {info.value.partial} {vars(info.value)}"
    assert API_KEY not in shown and API_KEY[3:] not in shown, shown
    assert "\n" not in str(info.value)


# -- 2. a proxy password in a URL without a scheme ---------------------------------------------


@pytest.mark.parametrize(
    "setting",
    [
        ("HTTP_PROXY", "carol:PW-proxy-9@127.0.0.1:1"),
        ("endpoint", "alice:PW-proxy-9@host/v1"),
        ("proxy", "user:PW-proxy-9@host:3128"),
    ],
)
def test_a_password_in_a_url_without_a_scheme_is_masked(raw, monkeypatch, caplog, setting):
    from pizzagpt_magic.backends import register_endpoint

    where, value = setting
    caplog.set_level("DEBUG")
    with pytest.raises(ConfigurationError) as info:
        if where == "HTTP_PROXY":
            monkeypatch.setenv("HTTP_PROXY", value)
            ask("hi", model=MODEL)
        elif where == "endpoint":
            register_endpoint("x-scheme-less", value)
        else:
            ask("hi", model=MODEL, proxy=value)
    assert "PW-proxy-9" not in str(info.value) and "***@" in str(info.value)
    assert "PW-proxy-9" not in caplog.text


# -- 3. keep-alive comments do not hold off the timeout ----------------------------------------


def test_keep_alive_comments_do_not_hold_off_the_timeout(raw):
    raw.script = sse(chunk("Part"), *[b": keepalive\n\n"] * 100, pause=0.05)
    started = time.monotonic()
    with pytest.raises(RequestTimeoutError, match="keep-alive") as info:
        ask("hi", model=MODEL, timeout=1)
    assert time.monotonic() - started < 3
    assert info.value.partial == "Part"


def test_a_silent_stream_times_out_with_its_text(raw):
    async def silent(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(chunk("Said"))
        await asyncio.sleep(5)
        return response

    raw.script = silent
    with pytest.raises(RequestTimeoutError, match=r"within 1 s$") as info:
        ask("hi", model=MODEL, timeout=1)
    assert info.value.partial == "Said"


def test_a_stream_that_keeps_sending_content_is_not_cut(raw):
    raw.script = sse(*[chunk("x")] * 30, chunk(finish="stop"), b"data: [DONE]\n\n", pause=0.05)
    assert ask("hi", model=MODEL, timeout=1) == "x" * 30


# -- 4. the decoder is linear and capped -------------------------------------------------------


def test_the_decoder_takes_a_long_line_in_many_small_chunks():
    decoder = SSEDecoder()
    line = b"data: " + b"x" * 4_000_000
    started = time.process_time()
    for start in range(0, len(line), 1000):
        assert decoder.feed(line[start : start + 1000]) == []
    assert decoder.feed(b"\r") == []
    assert decoder.feed(b"\n\n") == ["x" * 4_000_000]
    # Quadratic buffering took seconds here; linear takes milliseconds.
    assert time.process_time() - started < 1.0


def test_an_event_over_the_cap_stops_the_answer_and_keeps_the_text(raw, monkeypatch):
    monkeypatch.setattr(OpenAICompatible, "max_event_bytes", 10_000)
    raw.script = sse(chunk("Kept"), b"data: " + b"y" * 5000, *[b"y" * 5000] * 5)
    with pytest.raises(AnswerTooLargeError, match="max_event_bytes") as info:
        ask("hi", model=MODEL)
    assert info.value.partial == "Kept"


def test_an_answer_over_the_cap_stops_and_keeps_the_text(raw, monkeypatch):
    monkeypatch.setattr(OpenAICompatible, "max_answer_chars", 50)
    raw.script = sse(*[chunk("0123456789")] * 10, b"data: [DONE]\n\n")
    with pytest.raises(AnswerTooLargeError, match="max_answer_chars") as info:
        ask("hi", model=MODEL)
    assert info.value.partial == "0123456789" * 5


# -- 5. good answers that were lost or refused -------------------------------------------------

DONE = b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("script", "text"),
    [
        (sse(b"\xef\xbb\xbf" + chunk("first"), chunk(" second"), DONE), "first second"),
        (
            sse(b'data: {"error": null, "choices": [{"delta": {"content": "ok"}}]}\n\n', DONE),
            "ok",
        ),
        (
            sse(
                chunk(content=[{"type": "text", "text": "parts"}, {"type": "text", "text": "!"}]),
                DONE,
            ),
            "parts!",
        ),
        (sse(chunk("done"), chunk(finish="stop")), "done"),
        (sse(chunk("plain"), DONE, content_type="text/plain"), "plain"),
    ],
    ids=["bom", "error-null", "content-parts", "no-done-after-stop", "text-plain"],
)
def test_good_streamed_answers_are_read(raw, script, text):
    raw.script = script
    assert ask("hi", model=MODEL) == text


def test_a_stream_cut_before_its_finish_reason_is_still_cut(raw):
    raw.script = sse(chunk("half"))
    with pytest.raises(ConnectionLostError):
        ask("hi", model=MODEL)


def _answer(content: object, **extra: object) -> dict[str, object]:
    message = {"role": "assistant", "content": content, **extra}
    return {"choices": [{"message": message, "finish_reason": "stop"}], **extra}


def test_good_plain_answers_are_read(raw):
    raw.script = body(_answer([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]))
    assert ask("hi", model=MODEL, stream=False) == "ab"
    raw.script = body({"error": None, **_answer("fine")})
    assert ask("hi", model=MODEL, stream=False) == "fine"


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    ("held", "finish", "words"),
    [
        ({"tool_calls": [{"id": "c1"}]}, "tool_calls", "only tool calls"),
        ({"reasoning_content": "thinking..."}, "length", "only reasoning"),
    ],
)
def test_an_answer_without_text_says_what_it_held_and_why(raw, stream, held, finish, words):
    if stream:
        raw.script = sse(chunk(**held), chunk(finish=finish), DONE)
    else:
        answer = {"choices": [{"message": {"content": None, **held}, "finish_reason": finish}]}
        raw.script = body(answer)
    with pytest.raises(EmptyAnswerError, match=f"{words} .*{finish}") as info:
        ask("hi", model=MODEL, stream=stream)
    assert info.value.finish_reason == finish


def test_a_count_that_is_not_a_number_is_not_a_count(raw):
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": True}
    raw.script = body({**_answer("ok"), "usage": usage})
    completion = run_sync(complete("hi", model=MODEL, stream=False))
    assert completion.usage == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    from pizzagpt_magic.api import _usage_of
    from pizzagpt_magic.providers.base import Usage

    odd = Usage(prompt_tokens=3, completion_tokens=-1, total_tokens=True)
    assert odd.as_dict() == {"prompt_tokens": 3} and _usage_of(odd) == {"prompt_tokens": 3}


# -- 6. a base URL with a query string ---------------------------------------------------------


def test_a_base_url_with_a_query_keeps_it_after_the_path(raw, monkeypatch):
    from pizzagpt_magic import backends

    url = f"{raw.url}/v1?api-version=2024-02-01"
    monkeypatch.setitem(backends._registered, "raw", backends.Endpoint("raw", url, "RAW_KEY"))
    raw.script = body(_answer("azure"))
    assert ask("hi", model=MODEL, stream=False) == "azure"
    raw.script = body({"data": [{"id": "gpt-4o"}]})
    assert run_sync(list_models(url, "RAW_KEY", name="raw")) == ["gpt-4o"]
    assert raw.paths == [
        "/v1/chat/completions?api-version=2024-02-01",
        "/v1/models?api-version=2024-02-01",
    ]


def test_the_decoder_gives_the_same_events_however_the_bytes_are_split():
    import random

    rng = random.Random(20)
    long_text = "é€😀x" * 30_000
    stream = (
        b"\xef\xbb\xbf: hello\r\n"
        + b"data: first\r\n\r\n"
        + b": " + b"c" * 70_000 + b"\n"
        + b"data:" + long_text.encode() + b"\ndata: more\n\n"
        + b"event: x\rdata: cr\r\r"
        + b"data\n\n"
    )  # fmt: skip
    expected = ["first", f"{long_text}\nmore", "cr", ""]
    assert SSEDecoder().feed(stream) + SSEDecoder().close() == expected
    for _ in range(30):
        decoder = SSEDecoder()
        events, at = [], 0
        while at < len(stream):
            size = rng.choice([1, 2, 3, 7, 100, 5000, 70_000])
            events += decoder.feed(stream[at : at + size])
            at += size
        assert events + decoder.close() == expected


def test_the_answer_limit_is_a_trait_and_the_text_so_far_is_kept(raw, shell):
    from test_magics import failing

    shell.run_line_magic("config", "PizzaMagics.max_answer_chars = 2048")
    assert OpenAICompatible.max_answer_chars == 2048
    raw.script = sse(*[chunk("0123456789")] * 300, DONE)
    message = failing(shell, "%pizza -m raw:raw-model hi")
    assert "over 2,048 characters (PizzaMagics.max_answer_chars)" in message
    assert shell.user_ns["_pizza_answer"] == "0123456789" * 204
    shell.run_line_magic("unload_ext", "pizzagpt_magic")
    assert OpenAICompatible.max_answer_chars == 64 * 1024 * 1024
    shell.run_line_magic("load_ext", "pizzagpt_magic")


def test_a_reader_slow_between_chunks_is_not_the_servers_silence(raw):
    """Only waiting for the server counts: a reader that works on each chunk for longer than
    the timeout (the generator is suspended meanwhile) is not cut off."""
    raw.script = sse(*[chunk("x")] * 4, chunk(finish="stop"), DONE)

    async def read() -> str:
        text = ""
        agen = OpenAICompatible.create_async_generator(
            "raw-model",
            [{"role": "user", "content": "hi"}],
            base_url=f"{raw.url}/v1",
            api_key_env="RAW_KEY",
            timeout=0.3,
        )
        async for item in agen:
            if isinstance(item, str):
                text += item
                await asyncio.sleep(0.5)
        return text

    assert run_sync(read()) == "xxxx"


# -- the Messages API provider's error paths mask the key too ---------------------------------

ODD_KEY = "k3y-with-no-usual-shape-0123456789"  # not key-like: only the key itself finds it


@pytest.mark.parametrize(
    ("script", "stream"),
    [
        (
            sse(
                b"event: error\ndata: "
                + json.dumps({"error": {"message": ODD_KEY}}).encode()
                + b"\n\n"
            ),
            True,
        ),
        (sse(b"event: content_block_delta\ndata: {" + ODD_KEY.encode() + b"\n\n"), True),
        (body({"type": "error", "error": {"type": "x", "message": f"bad {ODD_KEY}"}}), False),
        (body(f"<html>{ODD_KEY}</html>"), False),
    ],
    ids=["error-event", "bad-event", "json-error", "not-json"],
)
def test_the_messages_api_masks_the_key_on_every_error_path(raw, monkeypatch, script, stream):
    from pizzagpt_magic.providers.anthropic import Anthropic

    monkeypatch.setenv("ODD_KEY", ODD_KEY)
    raw.script = script

    async def read() -> str:
        agen = Anthropic.create_async_generator(
            "claude", [{"role": "user", "content": "hi"}], base_url=raw.url,
            api_key_env="ODD_KEY", stream=stream, max_retries=0,
        )  # fmt: skip
        return "".join([item async for item in agen if isinstance(item, str)])

    with pytest.raises(PizzagptError) as info:
        run_sync(read())
    assert ODD_KEY not in f"{info.value} {vars(info.value)}"


def test_usage_counts_are_what_the_usage_object_gives():
    from hypothesis import given
    from hypothesis import strategies as st

    from pizzagpt_magic.providers.openai import _usage, usage_counts

    count = st.one_of(st.integers(-2, 10**6), st.none(), st.booleans(), st.floats(), st.text())
    names = st.sampled_from(["prompt_tokens", "completion_tokens", "total_tokens", "other"])
    details = st.one_of(st.none(), st.fixed_dictionaries({"cached_tokens": count}))
    usage = st.one_of(
        st.none(),
        st.lists(st.integers()),
        st.tuples(st.dictionaries(names, count), details).map(
            lambda pair: {**pair[0], **({"prompt_tokens_details": pair[1]} if pair[1] else {})}
        ),
    )

    @given(usage)
    def agree(value):
        made = _usage(value)
        expected = made.as_dict() if made is not None else None
        assert usage_counts(value) == (expected or None)

    agree()
