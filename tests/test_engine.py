"""The batch engine: one cache key, deduplication, record on arrival, repairs, strategies,
response_format and its fallback, typed frames."""

from __future__ import annotations

import asyncio
import json

import pytest

from pizzagpt_magic import BatchError, SchemaError, ask, ask_many, complete
from pizzagpt_magic import store as stores
from pizzagpt_magic.api import build_messages, store_key
from pizzagpt_magic.backends import Endpoint, resolve
from pizzagpt_magic.chat import Conversation
from pizzagpt_magic.emulator import EmulatorThread
from pizzagpt_magic.engine import Batch, Outcome, Pending, Single, fetch, make_prompt, prompt_key
from pizzagpt_magic.providers import openai as openai_provider
from pizzagpt_magic.store import Store

pytest.importorskip("jsonschema")

SPEC = "sentiment pos|neg|neu, score int: 1 to 5, reason"


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "answers.sqlite3")
    yield store
    store.close()


@pytest.fixture
def emu_v1(emu, monkeypatch):
    """The shared emulator's /v1 routes as the endpoint ``local`` (no key)."""
    from pizzagpt_magic import backends

    monkeypatch.setitem(backends._registered, "local", Endpoint("local", f"{emu.url}/v1"))
    return emu


# -- keys --------------------------------------------------------------------------------------


def test_one_key_for_every_path(emu):
    backend = resolve("gpt-4o-mini")
    messages = build_messages("Hello", system="Be brief")
    prompt = make_prompt("Hello", system="Be brief")
    assert prompt.key == store_key(backend, messages) == prompt_key(backend, messages)
    # A request without a schema keeps the key it had before schemas (stores stay valid).
    legacy = stores.request_key(f"pizzagpt@{emu.url}", "gpt-4o-mini", {}, messages)
    assert prompt.key == legacy
    with_schema = make_prompt("Hello", system="Be brief", schema=SPEC)
    assert with_schema.key != prompt.key
    assert with_schema.key == make_prompt("Hello", system="Be brief", schema=SPEC).key
    other = make_prompt("Hello", system="Be brief", schema="sentiment pos|neg")
    assert other.key != with_schema.key
    # The same schema in another form is the same key: what is sent decides it.
    as_dict = make_prompt("Hello", system="Be brief", schema=with_schema.schema.json_schema)
    assert as_dict.key == with_schema.key
    # The position of a prompt, or the batch it is in, is no part of it.
    batch = Batch([make_prompt("x"), make_prompt("Hello", system="Be brief")], store=None)
    assert batch.plan.keys[1] == prompt.key


def test_conversation_cache_uses_the_engine_key(emu):
    conversation = Conversation()
    backend = resolve("gpt-4o-mini")
    asyncio.run(conversation.ask("Hi there", backend=backend, store=None))
    assert make_prompt("Hi there").key in conversation.cache


# -- deduplication -----------------------------------------------------------------------------


@pytest.mark.parametrize("schema", [None, SPEC])
def test_identical_prompts_are_sent_once(emu, schema):
    prompts = [f"review {i % 100}: pos" for i in range(1000)]
    answers = ask_many(prompts, schema=schema, concurrency=32, progress=False, store=None)
    assert emu.requests == 100
    assert answers[0] == answers[100] == answers[900] and len(answers) == 1000
    if schema:
        assert answers[7] == {"sentiment": "pos", "score": 7, "reason": "review 7: pos"}


def test_duplicates_share_an_outcome_and_a_failure(emu):
    results = ask_many(
        ["a", "[[fault:status=404]]", "a", "[[fault:status=404]]"],
        errors="return",
        progress=False,
        store=None,
    )
    assert emu.requests == 2
    assert results[0] == results[2] and isinstance(results[3], Exception)
    with pytest.raises(BatchError) as info:
        ask_many(["b", "[[fault:status=404]]", "[[fault:status=404]]"], progress=False)
    assert sorted(info.value.errors) == [1, 2]


# -- the store: written on arrival, and a rerun sends only what is missing ---------------------


def test_each_answer_is_in_the_store_before_the_caller_sees_it(emu, store):
    prompts = [make_prompt(f"q{i}", schema=SPEC) for i in range(10)]
    batch = Batch(prompts, store=store)
    seen = []

    def arrived(positions, outcome):
        assert store.get(outcome.key) is not None  # recorded before it is handed on
        seen.extend(positions)

    asyncio.run(batch.run(Single(4), on_outcome=arrived))
    assert sorted(seen) == list(range(10))
    again = Batch(prompts, store=store)
    assert again.plan.requests == 0 and all(o.cached for o in again.outcomes)
    assert again.results() == batch.results()
    record = store.records(1)[0]
    assert record["parameters"]["schema"]["properties"]["score"] == {
        "type": "integer",
        "description": "1 to 5",
    }


def test_rerun_sends_only_what_failed(emu, store):
    prompts = [f"item {i}" for i in range(8)] + ["bad [[fault:status=500;times=1]]"]
    results = ask_many(prompts, errors="return", progress=False, store=store, max_retries=0)
    assert isinstance(results[-1], Exception) and emu.requests == 9
    again = ask_many(prompts, progress=False, store=store, max_retries=0)
    assert emu.requests == 10 and again[:8] == results[:8]


def test_interrupt_keeps_what_arrived(emu, store):
    quick = [make_prompt(f"quick {i}") for i in range(5)]
    slow = [make_prompt(f"slow {i} [[fault:latency=5]]") for i in range(3)]
    batch = Batch(quick + slow, store=store)

    async def main():
        task = asyncio.ensure_future(batch.run(Single(8)))
        while sum(o is not None for o in batch.outcomes) < 5:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert [o is not None for o in batch.outcomes] == [True] * 5 + [False] * 3
    assert Batch(quick + slow, store=store).plan.requests == 3


# -- checks and repairs ------------------------------------------------------------------------


def test_a_bad_answer_is_repaired_once(emu_v1):
    value = ask("great, pos [[fault:badjson;times=1]]", schema=SPEC, model="local:emu-mini")
    assert value["sentiment"] == "pos" and emu_v1.requests == 2
    repair = emu_v1.chat_requests[-1]["body"]["messages"]
    assert repair[-2]["role"] == "assistant" and "12345" in repair[-2]["content"]
    assert "field 'sentiment'" in repair[-1]["content"]


def test_an_answer_that_stays_bad_is_a_schema_error(emu_v1, store):
    with pytest.raises(SchemaError) as info:
        ask("pos [[fault:badjson]]", schema=SPEC, model="local:emu-mini", store=store)
    error = info.value
    assert error.field == "sentiment" and "\n" not in str(error) and "12345" in error.text
    assert emu_v1.requests == 2
    emu_v1.reset_stats()
    with pytest.raises(SchemaError):
        ask("pos [[fault:badjson]]", schema=SPEC, model="local:emu-mini", schema_retries=0)
    assert emu_v1.requests == 1
    # not cached: asked again next time
    emu_v1.reset_stats()
    with pytest.raises(SchemaError):
        ask("pos [[fault:badjson]]", schema=SPEC, model="local:emu-mini", store=store)
    assert emu_v1.requests == 2
    assert "SchemaError" in store.records(1)[0]["error"]


def test_complete_gives_the_value_and_the_metadata(emu_v1):
    completion = asyncio.run(complete("neu 2", schema=SPEC, model="local:emu-mini"))
    assert completion.value == {"sentiment": "neu", "score": 2, "reason": "neu 2"}
    assert json.loads(completion.text) == completion.value
    assert completion.parameters["schema"]["required"] == ["sentiment", "score", "reason"]


# -- how the schema travels --------------------------------------------------------------------


def test_endpoints_get_response_format_and_pizzagpt_gets_the_schema_in_the_prompt(emu_v1):
    ask("pos 3", schema=SPEC, model="local:emu-mini")
    body = emu_v1.chat_requests[-1]["body"]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["response_format"]["json_schema"]["schema"]["additionalProperties"] is False
    assert "JSON Schema" not in body["messages"][-1]["content"]
    assert ask("neg 1", schema=SPEC) == {"sentiment": "neg", "score": 1, "reason": "neg 1"}
    assert "JSON Schema" in emu_v1.questions[-1] and '"enum"' in emu_v1.questions[-1]


def test_an_endpoint_that_refuses_response_format_gets_the_schema_in_the_prompt(monkeypatch):
    from pizzagpt_magic import backends

    monkeypatch.setattr(openai_provider, "_NO_RESPONSE_FORMAT", set())
    with EmulatorThread(response_format=False) as old:
        monkeypatch.setitem(backends._registered, "old", Endpoint("old", f"{old.url}/v1"))
        value = ask("pos 4", schema=SPEC, model="old:emu-mini", store=None)
        assert value == {"sentiment": "pos", "score": 4, "reason": "pos 4"}
        assert old.requests == 2  # refused, then asked with the schema in the prompt
        assert "response_format" in old.chat_requests[0]["body"]
        assert "response_format" not in old.chat_requests[1]["body"]
        values = ask_many(
            [f"neg {i} [[fault:badjson;times=1]]" for i in range(1, 4)],
            schema=SPEC,
            model="old:emu-mini",
            progress=False,
            store=None,
        )
        # remembered for the endpoint: no more refusals; the faulted one repaired
        assert old.requests == 2 + 3 + 1
        assert [v["score"] for v in values] == [1, 2, 3]


# -- strategies --------------------------------------------------------------------------------


class Reversed:
    """A strategy that takes everything pending at once and sends it last first, one at a time:
    a stand-in for a strategy with its own way of sending."""

    async def send(self, pending: Pending, request):
        while True:
            taken = pending.take(1000)
            if not taken:
                prompt = await pending.next()
                if prompt is None:
                    return
                taken = [prompt]
            for prompt in reversed(taken):
                try:
                    yield prompt, await fetch(prompt, request)
                except Exception as exc:
                    yield prompt, exc


def test_a_strategy_plugs_in_and_gives_the_same_answers(emu):
    texts = [f"item {i}: neu {i}" for i in range(6)] + ["item [[fault:badjson;times=1]] pos 5"]
    single = Batch([make_prompt(t, schema=SPEC) for t in texts], store=None)
    asyncio.run(single.run(Single(3)))
    emu.reset_stats()
    texts[-1] = texts[-1].replace("times=1", "times=1;latency=0")  # a fresh fault counter
    other = Batch([make_prompt(t, schema=SPEC) for t in texts], store=None)
    asyncio.run(other.run(Reversed()))
    assert other.results()[:6] == single.results()[:6]
    assert other.results()[6]["score"] == 5 and other.sent == 8  # 7, and one repair


def test_outcomes_and_failed_prompts():
    batch = Batch([None], store=None, failed={0: ValueError("no")})
    assert isinstance(batch.outcomes[0], Outcome) and batch.failures[0].args == ("no",)
    assert asyncio.run(batch.run()) == batch.outcomes


# -- typed frames ------------------------------------------------------------------------------


def test_answers_frame_types_every_column(emu):
    pd = pytest.importorskip("pandas")
    from pizzagpt_magic import answers_frame

    spec = "label pos|neg|neu, n int, x float, ok bool, day date, note"
    texts = ["pos 3 on 2024-05-01", "neg 2", "[[fault:badjson]] neu", "[[fault:status=404]]"]
    values = ask_many(texts, schema=spec, errors="return", progress=False, store=None)
    frame = answers_frame(values, spec, index=pd.Index(["a", "b", "c", "d"]))
    assert list(frame.columns) == ["label", "n", "x", "ok", "day", "note", "_error"]
    dtypes = {k: str(v) for k, v in frame.dtypes.items()}
    assert dtypes["n"] == "Int64" and dtypes["x"] == "Float64" and dtypes["ok"] == "boolean"
    assert dtypes["label"] == "category" and dtypes["note"] == "string"
    assert dtypes["day"].startswith("datetime64") and dtypes["_error"] == "string"
    assert list(frame["label"].cat.categories) == ["pos", "neg", "neu"]
    assert frame.loc["a", "n"] == 3 and frame.loc["a", "day"] == pd.Timestamp("2024-05-01")
    assert frame.loc[["c", "d"]].drop(columns="_error").isna().all().all()
    assert frame.loc["c", "_error"].startswith("SchemaError: ")
    assert frame.loc["d", "_error"].startswith("HTTPStatusError: ")
    assert frame["_error"].isna().sum() == 2
    # a field an answer lacks is <NA>; the list's positions by default
    partial = answers_frame([{"label": "pos"}], spec)
    assert list(partial.index) == [0] and pd.isna(partial.loc[0, "n"])


def test_no_strategy_learns_where_its_prompts_came_from():
    """Below engine/, nothing imports IPython, and only assemble knows pandas."""
    from pathlib import Path

    import pizzagpt_magic.engine as engine

    root = Path(engine.__file__).parent
    for path in root.rglob("*.py"):
        imports = [
            line
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip().startswith(("import ", "from "))
        ]
        assert not any("IPython" in line for line in imports), path
        if path.name != "assemble.py":
            assert not any("pandas" in line for line in imports), path
