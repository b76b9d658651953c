"""Tools through Claude's native ``tool_use`` / ``tool_result``: the request next to the official
``anthropic`` SDK's, the calls read from the same bytes as the SDK reads them, the messages that
carry calls and results back, and the tool loop against the emulator's Messages routes."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pandas as pd
import pytest
from keys import API_KEY
from test_anthropic_peers import event, sdk_client, serve_bytes
from test_tools import HOSTILE, numbers, sales, snapshot

from pizzagpt_magic import api, backends
from pizzagpt_magic import store as stores
from pizzagpt_magic.errors import (
    ConfigurationError,
    ConnectionLostError,
    PromptError,
    ResponseError,
    ToolRoundsError,
)
from pizzagpt_magic.loop import run_sync
from pizzagpt_magic.providers.anthropic import Anthropic, to_messages
from pizzagpt_magic.providers.base import FinishReason, Usage
from pizzagpt_magic.providers.tool_calls import (
    ToolCall,
    ToolCalls,
    ToolUseBlocks,
    assistant_message,
    messages_tools,
    tool_message,
)
from pizzagpt_magic.tools import MAX_CALLS_PER_ANSWER, TOOL_NAMES, Toolbox

anthropic = pytest.importorskip("anthropic")  # in the test extra: present wherever the suite runs

MODEL = "anthropic:emu-claude"
SPECS = Toolbox({}).specs()
#: The tools as the Messages API documents them, written out for the SDK.
SDK_TOOLS = [
    {
        "name": s["function"]["name"],
        "description": s["function"]["description"],
        "input_schema": s["function"]["parameters"],
    }
    for s in SPECS
]
QUESTION = "How many nulls in sales, and which variables are there?"
#: A history with a turn of calls and their results, as the tool loop sends it ...
OURS = [
    {"role": "system", "content": "Be brief"},
    {"role": "user", "content": QUESTION},
    assistant_message(
        "Let me look.",
        [
            ToolCall("toolu_01A", "missing", '{"name": "sales"}'),
            ToolCall("toolu_01B", "list_variables", "not JSON at all"),
        ],
    ),
    tool_message("toolu_01A", "| price | 72 | 14.4000% |"),
    tool_message("toolu_01B", "error: arguments are not JSON"),
]
#: ... and the same in the Messages form, as the SDK is given it.
SDK_MESSAGES = [
    {"role": "user", "content": QUESTION},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_01A", "name": "missing", "input": {"name": "sales"}},
            {"type": "tool_use", "id": "toolu_01B", "name": "list_variables", "input": {}},
        ],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01A",
                "content": "| price | 72 | 14.4000% |",
            },
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01B",
                "content": "error: arguments are not JSON",
            },
        ],
    },
]


async def drain(agen) -> tuple[str, list[ToolCall], str | None, Usage | None]:
    text, calls, finish, usage = [], [], None, None
    async for chunk in agen:
        if isinstance(chunk, str):
            text.append(chunk)
        elif isinstance(chunk, ToolCalls):
            calls = chunk.calls
        elif isinstance(chunk, FinishReason):
            finish = chunk.reason
        elif isinstance(chunk, Usage):
            usage = chunk
    return "".join(text), calls, finish, usage


def generator(url: str, **options):
    """Our provider's tool turn against a server of bytes (key in ``$PEER_KEY``)."""
    return Anthropic.create_tool_generator(
        "m",
        OURS,
        SPECS,
        base_url=url,
        api_key_env="PEER_KEY",
        name="peer",
        **options,
    )


# -- the messages and the tools in the Messages form ----------------------------------------------


def test_calls_and_results_become_tool_use_and_tool_result_blocks():
    system, messages = to_messages(OURS)
    assert system == "Be brief" and messages == SDK_MESSAGES
    # Without text, the assistant's turn is its calls only; a text reply after the results is a
    # user message of its own; results of two turns are two user messages.
    calls = [ToolCall("a", "head", '{"name": "sales", "n": 2}')]
    _, messages = to_messages(
        [
            {"role": "user", "content": "q"},
            assistant_message("", calls),
            tool_message("a", "r1"),
            assistant_message("", [ToolCall("b", "head", "[1, 2]")]),
            tool_message("b", "r2"),
            {"role": "user", "content": "and then?"},
        ]
    )
    assert messages == [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "a", "name": "head", "input": {"name": "sales", "n": 2}}
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": "r1"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "b", "name": "head", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "b", "content": "r2"}]},
        {"role": "user", "content": "and then?"},
    ]
    with pytest.raises(PromptError, match="tool_call_id"):
        to_messages([{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}])


def test_tools_in_the_messages_form():
    assert messages_tools(SPECS) == SDK_TOOLS
    bare = {"type": "function", "function": {"name": "ping"}}
    assert messages_tools([bare]) == [
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}}
    ]
    assert messages_tools(SDK_TOOLS[:1]) == SDK_TOOLS[:1]  # already in the Messages form
    with pytest.raises(PromptError, match="neither"):
        messages_tools([{"type": "web_search"}])


# -- next to the official SDK --------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{}, {"stream": True}, {"stream": True, "temperature": 0.5, "max_tokens": 300}],
)
def test_the_request_with_tools_equals_the_sdks(claude, options):
    stream = options.get("stream", False)
    temperature = options.get("temperature")
    max_tokens = options.get("max_tokens")

    async def with_sdk():
        async with sdk_client(claude.url) as client:
            extra = {"extra_body": {"temperature": temperature}} if temperature is not None else {}
            result = await client.messages.create(
                model="emu-claude",
                max_tokens=max_tokens or Anthropic.default_max_tokens,
                system="Be brief",
                messages=SDK_MESSAGES,
                tools=SDK_TOOLS,
                **({"stream": True} if stream else {}),
                **extra,
            )
            if stream:
                async for _ in result:
                    pass

    asyncio.run(with_sdk())
    sdk = claude.message_requests[-1]
    text, calls, finish, _ = run_sync(
        drain(
            Anthropic.create_tool_generator(
                "emu-claude",
                OURS,
                SPECS,
                base_url=claude.url,
                api_key_env="ANTHROPIC_API_KEY",
                stream=stream,
                temperature=temperature,
                max_tokens=max_tokens,
            )
        )
    )
    ours = claude.message_requests[-1]
    assert ours is not sdk and ours["body"] == sdk["body"]
    keys = [{k.lower(): v for k, v in r["headers"].items()}["x-api-key"] for r in (ours, sdk)]
    assert keys == [API_KEY, API_KEY]
    # The results went back: the emulator's answer says so.
    assert calls == [] and finish == "stop" and "The conversation so far has 3 messages" in text


def tool_event(index: int, partial: str) -> bytes:
    data = {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "input_json_delta", "partial_json": partial},
    }
    return event("content_block_delta", json.dumps(data, ensure_ascii=False))


def block_start(index: int, block: dict) -> bytes:
    data = {"type": "content_block_start", "index": index, "content_block": block}
    return event("content_block_start", json.dumps(data))


def text_delta(text: str) -> bytes:
    data = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }
    return event("content_block_delta", json.dumps(data))


START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 410, "output_tokens": 1},
    },
}
STOP = (
    '{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},'
    '"usage":{"output_tokens":92}}'
)
#: A text block and three tool_use blocks: inputs split mid-token (one in the middle of an
#: escape, one with an event cut across network pieces in the middle of a character), and one
#: without any input_json_delta.
CAFE = tool_event(2, 'é", "columns": ["price", "un')
CUT = CAFE.index("é".encode()) + 1
TOOL_STREAM = [
    event("message_start", json.dumps(START)),
    block_start(0, {"type": "text", "text": ""}),
    event("ping", '{"type": "ping"}'),
    text_delta("I'll look at "),
    text_delta("the data."),
    event("content_block_stop", '{"type":"content_block_stop","index":0}'),
    block_start(1, {"type": "tool_use", "id": "toolu_01A", "name": "value_counts", "input": {}}),
    tool_event(1, ""),
    tool_event(1, '{"na'),
    tool_event(1, 'me": "sa'),
    tool_event(1, 'les", "column": "r\\u0'),
    tool_event(1, '0e9gion", "top": 1'),
    tool_event(1, "2}"),
    event("content_block_stop", '{"type":"content_block_stop","index":1}'),
    block_start(2, {"type": "tool_use", "id": "toolu_01B", "name": "describe", "input": {}}),
    tool_event(2, '{"name": "Caf'),
    CAFE[:CUT],
    CAFE[CUT:],
    tool_event(2, 'its"]}'),
    event("content_block_stop", '{"type":"content_block_stop","index":2}'),
    block_start(3, {"type": "tool_use", "id": "toolu_01C", "name": "list_variables", "input": {}}),
    event("content_block_stop", '{"type":"content_block_stop","index":3}'),
    event("message_delta", STOP),
    event("message_stop", '{"type":"message_stop"}'),
]
MESSAGE = {
    **START["message"],
    "content": [
        {"type": "text", "text": "I'll look at the data."},
        {
            "type": "tool_use",
            "id": "toolu_01A",
            "name": "value_counts",
            "input": {"name": "sales", "column": "région", "top": 12},
        },
        {
            "type": "tool_use",
            "id": "toolu_01B",
            "name": "describe",
            "input": {"name": "Café", "columns": ["price", "units"]},
        },
        {"type": "tool_use", "id": "toolu_01C", "name": "list_variables", "input": {}},
    ],
    "stop_reason": "tool_use",
    "usage": {"input_tokens": 410, "output_tokens": 92},
}


async def serve_json(body: dict) -> tuple[object, str]:
    from aiohttp import web

    async def handler(request):
        return web.json_response(body)

    app = web.Application()
    app.router.add_post("/v1/messages", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


def sdk_calls(message) -> list[tuple[str, str, object]]:
    return [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]


def our_calls(calls: list[ToolCall]) -> list[tuple[str, str, object]]:
    return [(c.id, c.name, json.loads(c.arguments)) for c in calls]


@pytest.mark.parametrize("stream", [True, False])
def test_the_same_answer_reads_the_same_calls(monkeypatch, stream):
    """For the same bytes, streamed or whole: the SDK's text and tool_use blocks are ours."""
    monkeypatch.setenv("PEER_KEY", API_KEY)

    async def main():
        runner, url = await (serve_bytes(TOOL_STREAM) if stream else serve_json(MESSAGE))
        try:
            async with sdk_client(url) as client:
                asked = {"model": "m", "max_tokens": 100, "messages": SDK_MESSAGES}
                if stream:
                    async with client.messages.stream(**asked, tools=SDK_TOOLS) as events:
                        message = await events.get_final_message()
                else:
                    message = await client.messages.create(**asked, tools=SDK_TOOLS)
            ours = await drain(generator(url, stream=stream))
        finally:
            await runner.cleanup()
        return message, ours

    message, (text, calls, finish, usage) = asyncio.run(main())
    assert text == "".join(b.text for b in message.content if b.type == "text")
    assert our_calls(calls) == sdk_calls(message)
    assert sdk_calls(message)[0] == (
        "toolu_01A",
        "value_counts",
        {"name": "sales", "column": "région", "top": 12},
    )
    assert len(calls) == 3 and calls[2].arguments == "{}"
    assert message.stop_reason == "tool_use" and finish == "tool_calls"
    assert (usage.prompt_tokens, usage.completion_tokens) == (410, 92)


def test_a_stream_cut_after_a_call_keeps_its_text(monkeypatch):
    monkeypatch.setenv("PEER_KEY", API_KEY)

    async def main():
        runner, url = await serve_bytes(TOOL_STREAM[:10])
        try:
            return await drain(generator(url))
        finally:
            await runner.cleanup()

    with pytest.raises(ConnectionLostError, match="without message_stop"):
        asyncio.run(main())

    # Through the loop, the text that arrived is the error's partial.
    async def loop():
        runner, url = await serve_bytes(TOOL_STREAM[:10])
        endpoint = backends.Endpoint("peer", url, "PEER_KEY", api="anthropic")
        backend = backends.Backend("peer", "m", endpoint=endpoint)
        try:
            await api.complete_with_tools(
                backend, [{"role": "user", "content": "q"}], Toolbox({}), store=None
            )
        finally:
            await runner.cleanup()

    with pytest.raises(ConnectionLostError) as info:
        asyncio.run(loop())
    assert info.value.partial == "I'll look at the data."


def test_tool_input_counts_towards_the_answer_limit(monkeypatch):
    monkeypatch.setenv("PEER_KEY", API_KEY)
    monkeypatch.setattr(Anthropic, "max_answer_chars", 30)

    async def main():
        runner, url = await serve_bytes(TOOL_STREAM)
        try:
            return await drain(generator(url))
        finally:
            await runner.cleanup()

    with pytest.raises(ResponseError, match="over 30 characters"):
        asyncio.run(main())


def test_an_error_event_mid_call_masks_the_key(monkeypatch):
    monkeypatch.setenv("PEER_KEY", API_KEY)
    error = {"type": "error", "error": {"type": "overloaded_error", "message": f"bad {API_KEY}"}}
    pieces = [*TOOL_STREAM[:9], event("error", json.dumps(error))]

    async def main():
        runner, url = await serve_bytes(pieces)
        try:
            return await drain(generator(url))
        finally:
            await runner.cleanup()

    with pytest.raises(ResponseError) as info:
        asyncio.run(main())
    assert "overloaded_error" in str(info.value) and API_KEY not in str(info.value)


def test_blocks_assembled_in_any_pieces():
    blocks = ToolUseBlocks()
    blocks.start(1, {"type": "tool_use", "id": "a", "name": "head", "input": {}})
    blocks.delta(0, '{"ignored": 1}')  # a text block's index: ignored, as the SDK does
    for piece in ['{"name"', ': "s"', ', "n": 3}']:
        blocks.delta(1, piece)
    blocks.start(4, {"type": "tool_use", "id": "", "name": "missing", "input": {"name": "s"}})
    assert blocks.calls() == [
        ToolCall("a", "head", '{"name": "s", "n": 3}'),
        ToolCall("toolu_4", "missing", '{"name": "s"}'),
    ]
    assert blocks.chars == len('{"name": "s", "n": 3}')
    from pizzagpt_magic.errors import ResponseShapeError

    with pytest.raises(ResponseShapeError):
        blocks.start(10**9, {"type": "tool_use"})


def test_the_sdk_reads_the_emulators_tool_use(claude):
    """The wire reference for the emulator: the SDK reads its calls, streamed and not, and its
    answer to the results quotes them."""
    question = '[[tool:head({"name": "sales", "n": 3})]] [[tool:list_variables({})]] sales?'
    messages = [{"role": "user", "content": question}]

    async def with_sdk():
        async with sdk_client(claude.url) as client:
            asked = {"model": "emu-claude", "max_tokens": 500, "tools": SDK_TOOLS}
            whole = await client.messages.create(**asked, messages=messages)
            async with client.messages.stream(**asked, messages=messages) as events:
                streamed = await events.get_final_message()
            follow = [
                *messages,
                {"role": "assistant", "content": [b.model_dump() for b in whole.content]},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": b.id, "content": f"result {i}"}
                        for i, b in enumerate(whole.content)
                    ],
                },
            ]
            answer = await client.messages.create(**asked, messages=follow)
            return whole, streamed, answer

    whole, streamed, answer = asyncio.run(with_sdk())
    assert whole.stop_reason == streamed.stop_reason == "tool_use"
    assert (
        sdk_calls(whole)
        == sdk_calls(streamed)
        == [
            ("toolu_0_0", "head", {"name": "sales", "n": 3}),
            ("toolu_0_1", "list_variables", {}),
        ]
    )
    text = answer.content[0].text
    assert answer.stop_reason == "end_turn"
    assert "Result of head(" in text and "result 0" in text and "result 1" in text


# -- the tool loop against the emulator -----------------------------------------------------------


@pytest.fixture
def namespace() -> dict[str, object]:
    import os

    return {
        "sales": sales(),
        "prices": pd.Series([1.5, 2.5, None, 2.5], name="price"),
        "matrix": np.arange(12, dtype=float).reshape(4, 3),
        "rate": 0.25,
        "note": HOSTILE,
        "os": os,
        "_private": pd.DataFrame({"secret": [1]}),
    }


def ask(question, namespace, **options):
    options.setdefault("store", None)
    return run_sync(api.complete(question, model=MODEL, tools=True, namespace=namespace, **options))


def tool_results(request) -> list[dict]:
    return [
        block
        for message in request["body"]["messages"]
        if message["role"] == "user" and isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]


@pytest.mark.parametrize("stream", [True, False])
def test_the_answer_quotes_pandas_numbers(claude, namespace, stream):
    frame = namespace["sales"]
    question = (
        'Which region sells most in {sales}? [[tool:describe({"name": "sales"})]] '
        '[[tool:value_counts({"name": "sales", "column": "region"})]]'
        '[[tool:missing({"name": "sales"})]] [[fault:chunk-size=5]]'
    )
    streamed: list[str] = []
    completion = ask(question, namespace, stream=stream, on_text=streamed.append)
    assert "".join(streamed) == completion.text
    first, second = claude.message_requests
    assert first["body"].get("stream", False) is stream
    assert [t["name"] for t in first["body"]["tools"]] == list(TOOL_NAMES)
    assert all("input_schema" in t for t in first["body"]["tools"])
    sent = second["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert [b["type"] for b in sent[1]["content"]] == ["tool_use"] * 3
    assert [b["tool_use_id"] for b in sent[2]["content"]] == [b["id"] for b in sent[1]["content"]]
    text = completion.text
    described = frame.describe(include="all")
    for statistic in ("mean", "std", "max"):
        value = described.loc[statistic, "price"]
        assert f"| {statistic} | {value} |" in text
    for value, count in frame["region"].value_counts(dropna=False).items():
        assert f"| {value} | {count} |" in text
    for column, nulls in frame.isna().sum().items():
        assert f"| {column} | {nulls} |" in text
    assert [c["name"] for c in completion.tool_calls] == ["describe", "value_counts", "missing"]
    assert completion.metadata()["tool_calls"][1]["arguments"] == {
        "name": "sales",
        "column": "region",
    }
    # Both rounds' tokens, as the Messages API counts them.
    assert completion.finish_reason == "stop" and completion.usage["prompt_tokens"] > 0


def test_the_round_limit(claude, namespace, tmp_path):
    store = stores.Store(tmp_path / "s.sqlite3")
    question = "[[tool:list_variables()]] [[tool-repeat]] about sales"
    with pytest.raises(ToolRoundsError) as info:
        ask(question, namespace, store=store, tool_rounds=3)
    assert "after 3 rounds" in str(info.value) and "\n" not in str(info.value)
    assert len(claude.message_requests) == 4
    assert len(info.value.calls) == 3
    (logged,) = store.records(1)
    assert logged["error"].startswith("ToolRoundsError: The model still called tools")
    assert [c["name"] for c in logged["tool_calls"]] == ["list_variables"] * 3
    store.close()


def test_a_failing_tool_gets_one_line(claude, namespace):
    namespace["weird"] = pd.DataFrame({"a": [object(), object()]})
    completion = ask('[[tool:correlation({"name": "weird"})]] weird?', namespace, stream=False)
    (result,) = tool_results(claude.message_requests[-1])
    assert result["content"] == "error: weird has fewer than two numeric columns to correlate"
    assert result["content"] in completion.text
    assert completion.tool_calls[0]["error"]


def test_hostile_calls_are_refused(claude, namespace):
    before = snapshot(namespace)
    question = (
        'about sales [[tool:__import__(\'os\')({})]] [[tool:describe({"name": "os"})]] '
        '[[tool:head({"name": "sales", "n": 100000000})]] '
        '[[tool:value_counts({"name": "sales", "column": 7})]]' + " [[tool:list_variables()]]" * 96
    )
    completion = ask(question, namespace)
    results = [b["content"] for b in tool_results(claude.message_requests[-1])]
    assert len(results) == 100  # every call of the answer has its result, in one user message
    assert all(r.startswith("error: ") and "\n" not in r for r in results[:4])
    assert "there is no tool named '__import__'" in results[0]
    assert "no variable named 'os'" in results[1]
    assert sum(r.startswith("error: not run") for r in results) == 100 - MAX_CALLS_PER_ANSWER
    assert snapshot(namespace) == before
    assert completion.tool_calls[-1]["name"] == "(refused)"


def test_the_cache_knows_the_data_and_the_log_the_calls(claude, namespace, tmp_path):
    store = stores.Store(tmp_path / "s.sqlite3")
    question = 'sales? [[tool:describe({"name": "sales", "columns": ["units"]})]]'
    first = ask(question, namespace, store=store)
    again = ask(question, namespace, store=store)
    assert again.cached and again.text == first.text and again.tool_calls == first.tool_calls
    assert len(claude.message_requests) == 2
    namespace["sales"].loc[0, "units"] = 12345
    changed = ask(question, namespace, store=store)
    assert not changed.cached and len(claude.message_requests) == 4
    assert 12345.0 in numbers(changed.text) and 12345.0 not in numbers(first.text)
    latest = store.records(3)[0]
    assert latest["provider"] == "anthropic" and latest["model"] == "emu-claude"
    assert latest["tool_calls"][0]["name"] == "describe"
    assert latest["tool_calls"][0]["arguments"] == {"name": "sales", "columns": ["units"]}
    assert json.loads(latest["parameters"]["tools"])["variables"].keys() == {"sales"}
    store.close()


def test_anthropic_endpoints_take_tools_and_classes_still_do_not(claude, emu, namespace):
    api.check_tools(backends.resolve(MODEL))
    api.check_tools(backends.resolve("anthropic:claude-sonnet-4-5"))
    with pytest.raises(ConfigurationError, match="Pizzagpt takes no tools") as info:
        run_sync(api.complete("sales?", tools=True, namespace=namespace, store=None))
    assert "\n" not in str(info.value) and "anthropic:MODEL" in str(info.value)
    assert emu.requests == 0 and claude.message_requests == []


@pytest.mark.parametrize(
    ("fault", "error", "match"),
    [
        ("cut", ConnectionLostError, "lost|cut off"),
        ("stream-error", ResponseError, "overloaded_error: Overloaded"),
        ("invalid-json", ResponseError, "not JSON"),
    ],
)
def test_stream_faults_strike_in_the_middle_of_the_calls(claude, namespace, fault, error, match):
    question = (
        '[[tool:describe({"name": "sales"})]] [[tool:missing({"name": "sales"})]] '
        f"[[fault:{fault};chunk-size=4]]"
    )
    with pytest.raises(error, match=match):
        ask(question, namespace)
    assert len(claude.message_requests) == 1  # nothing ran, nothing more was asked
