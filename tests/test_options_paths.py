"""Model options on every path a question takes: a schema through the engine, ask_many's batch
engine, tools, the Messages API, and a saved prompt that carries a schema."""

from __future__ import annotations

import json

import pytest
from test_magics import cell

from pizzagpt_magic import ask, ask_many, saved
from pizzagpt_magic.loop import run_sync
from pizzagpt_magic.prompts import SavedPrompt, load_prompt, prompt_path, save_prompt


@pytest.fixture(autouse=True)
def config(tmp_path, monkeypatch):
    folder = tmp_path / "config"
    monkeypatch.setenv("PIZZAGPT_CONFIG", str(folder))
    return folder


def test_a_schema_question_sends_its_options(endpoint):
    value = ask(
        "Rome has about 2800000 people.",
        model="emu:emu-mini",
        schema="city, people int",
        options={"seed": 7, "top_p": 0.5},
        cache=False,
    )
    assert set(value) == {"city", "people"}
    body = endpoint.chat_requests[-1]["body"]
    assert body["seed"] == 7 and body["top_p"] == 0.5
    assert body["response_format"]["type"] == "json_schema"  # the schema's, not an option's


def test_a_batch_sends_its_options_and_keys_them(endpoint, tmp_path, monkeypatch):
    from pizzagpt_magic import store as stores

    monkeypatch.setenv("PIZZAGPT_STORE", str(tmp_path / "store.sqlite3"))
    try:
        items = ["Rome", "Milan"]
        ask_many(items, model="emu:emu-mini", options={"seed": 1}, progress=False)
        assert [r["body"]["seed"] for r in endpoint.chat_requests] == [1, 1]
        ask_many(items, model="emu:emu-mini", options={"seed": 1}, progress=False)
        assert endpoint.requests == 2  # the same options: from the store
        ask_many(items, model="emu:emu-mini", options={"seed": 1.0}, progress=False)
        assert endpoint.requests == 4  # 1.0 is not 1
        ask_many(items, model="emu:emu-mini", progress=False)
        assert endpoint.requests == 6 and "seed" not in endpoint.chat_requests[-1]["body"]
    finally:
        stores.forget_stores()


def test_tools_send_options(shell, endpoint):
    import pandas as pd

    shell.user_ns["sales"] = pd.DataFrame({"units": [1, 2]})
    cell(
        shell,
        "%pizza --no-stream --tools -m emu:emu-mini -O seed=9 How many rows in {sales}? "
        '[[tool:describe({"name": "sales"})]]',
    )
    assert endpoint.chat_requests
    assert all(r["body"]["seed"] == 9 for r in endpoint.chat_requests)
    assert "tools" in endpoint.chat_requests[0]["body"]


def test_the_messages_api_takes_options(claude):
    from pizzagpt_magic import api

    run_sync(
        api.complete(
            "Hi",
            model="anthropic:emu-claude",
            options={"top_k": 5, "metadata": {"user_id": "u1"}},
            cache=False,
        )
    )
    body = claude.message_requests[-1]["body"]
    assert body["top_k"] == 5 and body["metadata"] == {"user_id": "u1"}
    assert body["max_tokens"]  # the package's own keys stay


def test_system_is_owned(endpoint):
    from pizzagpt_magic.errors import OptionError

    with pytest.raises(OptionError, match="set by pizzagpt_magic itself"):
        ask("hi", model="emu:emu-mini", options={"system": "x"})
    assert endpoint.requests == 0


def test_a_saved_prompt_keeps_its_schema(shell, endpoint, capsys):
    cell(
        shell,
        '%%pizza --save place -m emu:emu-mini --schema "city, people int" -O seed=4\n'
        "Where is this? {input}",
    )
    assert load_prompt("place").schema == "city, people int"
    answer = cell(shell, "%pizza -t place Rome has about 2800000 people.")
    assert set(answer.value) == {"city", "people"}
    body = endpoint.chat_requests[-1]["body"]
    assert body["seed"] == 4 and body["response_format"]["type"] == "json_schema"
    # A JSON Schema named by {name} is saved as the schema itself: a table in the file.
    shell.user_ns["shape"] = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    cell(shell, "%%pizza --save city -m emu:emu-mini --schema {shape}\nCity of: {input}")
    assert "\n[schema]\n" in prompt_path("city").read_text(encoding="utf-8")
    assert load_prompt("city").schema == shell.user_ns["shape"]
    del shell.user_ns["shape"]  # the saved prompt no longer needs the variable
    answer = cell(shell, "%pizza -t city The Colosseum.")
    assert set(answer.value) == {"city"}
    # In Python, the saved schema applies too.
    value = ask(saved("city").fill(input="The Duomo."), cache=False)
    assert set(value) == {"city"}
    capsys.readouterr()


def test_a_schema_with_a_null_is_saved_as_json_text(config):
    schema = {
        "type": "object",
        "properties": {"note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}},
        "required": ["note"],
    }
    save_prompt(SavedPrompt("n", "Note: {input}", schema=schema))
    text = (config / "prompts" / "n.toml").read_text()
    assert "schema_json = " in text
    assert load_prompt("n").schema == schema
    assert json.loads(json.dumps(load_prompt("n").schema)) == schema


def test_the_command_line_asks_a_saved_schema(config, endpoint, capsys):
    from pizzagpt_magic.cli import main

    save_prompt(SavedPrompt("place", "Where: {input}", model="emu:emu-mini", schema="city"))
    assert main(["ask", "-t", "place", "-O", "seed=2", "--no-cache", "Rome."]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"city"}
    body = endpoint.chat_requests[-1]["body"]
    assert body["seed"] == 2 and body["response_format"]["type"] == "json_schema"


def test_the_accessor_takes_aliases_options_and_saved_prompts(endpoint, monkeypatch):
    import pandas as pd

    import pizzagpt_magic.frames  # noqa: F401  (the accessor)
    from pizzagpt_magic.prompts import set_alias

    monkeypatch.setenv("PIZZAGPT_STORE", "")
    frame = pd.DataFrame({"review": ["good", "bad"]})
    set_alias("quick", "emu:emu-mini", {"seed": 3, "temperature": 0.2})
    frame.pizza.map("Rate: {review}", model="quick", progress=False, cache=False)
    assert [r["body"]["seed"] for r in endpoint.chat_requests] == [3, 3]
    assert all(r["body"]["temperature"] == 0.2 for r in endpoint.chat_requests)
    frame.pizza.map(
        "Rate: {review}", model="quick", options={"seed": None, "top_p": 0.5}, progress=False
    )
    body = endpoint.chat_requests[-1]["body"]
    assert "seed" not in body and body["top_p"] == 0.5 and body["temperature"] == 0.2
    save_prompt(SavedPrompt("rate", "Rate: {review}", model="quick", options={"seed": 8}))
    answers = frame.pizza.map(saved("rate"), progress=False)
    assert list(answers.index) == [0, 1]
    assert endpoint.chat_requests[-1]["body"]["seed"] == 8
    save_prompt(SavedPrompt("rated", "Rate: {review}", model="emu:emu-mini", schema="stars int"))
    typed = frame.pizza.map(saved("rated"), progress=False)
    assert list(typed.columns) == ["stars", "_error"]


def test_agg_and_the_partition_function_take_saved_prompts(endpoint, monkeypatch):
    import pandas as pd

    import pizzagpt_magic.frames  # noqa: F401  (the accessor)
    from pizzagpt_magic.distributed import apply_batch, output_meta

    monkeypatch.setenv("PIZZAGPT_STORE", "")
    frame = pd.DataFrame({"review": ["good", "bad", "good"]})
    save_prompt(
        SavedPrompt("gist", "What do the reviews say?", model="emu:emu-mini", options={"seed": 4})
    )
    summary = frame.pizza.agg(saved("gist"), progress=False)
    assert "What do the reviews say?" in endpoint.questions[-1] and summary
    assert endpoint.chat_requests[-1]["body"]["seed"] == 4
    save_prompt(
        SavedPrompt(
            "rated", "Rate: {review}", model="emu:emu-mini", schema="stars int", options={"seed": 9}
        )
    )
    endpoint.reset_stats()
    out = apply_batch(frame, saved("rated"), progress=False)
    assert list(out.columns) == ["review", "stars", "_error"] and endpoint.requests == 2
    assert all(r["body"]["seed"] == 9 for r in endpoint.chat_requests)
    meta = output_meta(frame.iloc[:0], schema=saved("rated").schema)
    assert list(meta.columns) == list(out.columns)


def test_packed_requests_carry_the_options_of_their_rows(endpoint):
    items = [f"Fact {n}" for n in range(6)]
    ask_many(items, model="emu:emu-mini", options={"seed": 2}, pack=3, progress=False, cache=False)
    assert 0 < endpoint.requests < len(items)  # packed
    assert all(r["body"]["seed"] == 2 for r in endpoint.chat_requests)
    # Rows with other options (here, of two saved prompts) never share a request.
    endpoint.reset_stats()
    save_prompt(SavedPrompt("one", "One {x}", model="emu:emu-mini", options={"seed": 1}))
    save_prompt(SavedPrompt("two", "Two {x}", model="emu:emu-mini", options={"seed": 2}))
    rows = [saved(name).fill(x=n) for n in range(3) for name in ("one", "two")]
    ask_many(rows, pack=6, progress=False, cache=False)
    assert sorted(r["body"]["seed"] for r in endpoint.chat_requests) == [1, 2]
