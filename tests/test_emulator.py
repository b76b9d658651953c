"""The offline emulator: the contract it enforces, its answers, faults and command line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import aiohttp
import pytest

from pizzagpt_magic.emulator import MISUSE_TEXT, EmulatorThread, make_answer, parse_fault, serve

HEADERS = {"x-secret": "Marinara"}


async def post(url, json=None, headers=HEADERS, data=None):
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{url}/api/chatx-completion", json=json, data=data, headers=headers
        ) as response:
            return response.status, response.content_type, await response.text()


def test_contract_is_enforced():
    async def main():
        async with serve() as emu:
            assert emu.url.startswith("http://127.0.0.1:")
            results = [
                await post(emu.url, {"question": "hi"}, headers={}),
                await post(emu.url, {"question": 3}),
                await post(emu.url, {"nothing": "here"}),
                await post(emu.url, data=b"not json"),
                await post(emu.url, {"question": "hi"}),
            ]
            return results, emu.requests

    results, requests = asyncio.run(main())
    assert [status for status, _, _ in results] == [401, 400, 400, 400, 200]
    assert '"answer": {"content": "**Emulated' in results[-1][2]
    assert requests == 5


def test_faults_by_header_and_per_server():
    async def main():
        async with serve() as emu:
            by_header = await post(
                emu.url, {"question": "q"}, headers={**HEADERS, "x-pizzagpt-fault": "status=418"}
            )
        async with serve(fault="misuse") as emu:
            per_server = await post(emu.url, {"question": "q"})
        return by_header, per_server

    by_header, per_server = asyncio.run(main())
    assert by_header[0] == 418
    assert MISUSE_TEXT in per_server[2]


def test_answers_restate_question_numbers_and_table():
    question = "Sales:\n| region | units |\n|---|---|\n| north | 12 |\n| south | 30 |"
    answer = make_answer(question)
    assert "> Sales:" in answer
    assert "sum: 42" in answer and "max: 30" in answer
    assert "a table of 2 rows and 2 columns (region, units)" in answer
    assert make_answer(question) == answer  # deterministic


def test_chat_prompts_quote_the_last_question():
    prompt = "System: Be brief\nUser: first\nAssistant: reply\nUser: second one\nAssistant:"
    answer = make_answer(prompt)
    assert "> second one" in answer and "> first" not in answer
    assert "4 messages" in answer


def test_a_long_question_is_quoted_by_both_ends():
    # How long a traceback is depends on the machine's paths; the request's tail must show anyway.
    question = "This cell failed.\n" + "x" * 1500 + "\nkeep the column names"
    answer = make_answer(question)
    assert "> This cell failed." in answer and "> keep the column names" in answer
    assert "> …" in answer and len(answer) < 1400


def test_echo_returns_text_verbatim():
    assert (
        make_answer("x [[echo]]<b>raw</b>\n```py\n1\n```[[/echo]] y") == "<b>raw</b>\n```py\n1\n```"
    )


def test_parse_fault():
    assert parse_fault("status=503; retry-after=1.5;times=2") == {
        "status": 503,
        "retry-after": 1.5,
        "times": 2,
    }
    assert parse_fault("drop") == {"drop": True}
    with pytest.raises(ValueError, match="unknown fault"):
        parse_fault("explode")


def test_command_line_prints_its_url_first():
    process = subprocess.Popen(
        [sys.executable, "-m", "pizzagpt_magic.emulator", "--port", "0", "--latency", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        status, _, body = asyncio.run(post(url, {"question": "2 + 2"}))
        assert status == 200 and "sum: 4" in body
    finally:
        process.terminate()
        process.wait(10)
        process.stdout.close()


def test_command_line_rejects_bad_fault():
    result = subprocess.run(
        [sys.executable, "-m", "pizzagpt_magic.emulator", "--fault", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "unknown fault" in result.stderr


def test_answers_that_fit_a_schema():
    jsonschema = pytest.importorskip("jsonschema")
    from pizzagpt_magic.emulator import conforming
    from pizzagpt_magic.schema import as_schema

    schema = {
        "type": "object",
        "properties": {
            "label": {"enum": ["pos", "neg", "neu"]},
            "n": {"type": "integer", "minimum": 1, "maximum": 5},
            "x": {"type": "number"},
            "ok": {"type": "boolean"},
            "day": {"type": "string", "format": "date"},
            "maybe": {"anyOf": [{"$ref": "#/$defs/Tag"}, {"type": "null"}]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "inner": {"type": "object", "properties": {"k": {"type": "string"}}},
        },
        "required": ["label", "n"],
        "$defs": {"Tag": {"type": "string", "enum": ["a", "b"]}},
    }
    question = "I would say neg, 9 out of 10, not great, on 2024-02-29"
    value = conforming(schema, question)
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())
    assert value["label"] == "neg" and value["n"] == 5 and value["x"] == 9.0
    assert value["ok"] is False and value["day"] == "2024-02-29" and len(value["tags"]) == 2
    assert conforming(schema, question) == value  # deterministic
    bad = conforming(schema, question, bad=True)
    assert not jsonschema.Draft202012Validator(schema).is_valid(bad)
    # The schema in the prompt, as the package asks for it on backends without response_format
    spec = as_schema("sentiment pos|neg|neu, score int")
    asked = f"Review: neu, 3 stars\n\n{spec.instructions()}"
    assert json.loads(make_answer(asked)) == {"sentiment": "neu", "score": 3}
    assert json.loads(make_answer(asked, bad=True))["sentiment"] == 12345


def test_response_format_on_v1_and_a_server_that_refuses_it():
    body = {
        "model": "emu-mini",
        "messages": [{"role": "user", "content": "pos 4 [[fault:badjson;times=1]]"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "a",
                "strict": True,
                "schema": {"type": "object", "properties": {"s": {"enum": ["pos", "neg"]}}},
            },
        },
    }

    async def post(url):
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                return response.status, await response.json()

    with EmulatorThread() as emu, EmulatorThread(response_format=False) as old:
        status, data = asyncio.run(post(emu.url))
        assert status == 200 and json.loads(data["choices"][0]["message"]["content"]) == {
            "s": 12345
        }
        status, data = asyncio.run(post(emu.url))  # times=1: the fault is spent
        assert json.loads(data["choices"][0]["message"]["content"]) == {"s": "pos"}
        status, data = asyncio.run(post(old.url))
        assert status == 400 and "'response_format'" in data["error"]["message"]
