"""Provider batch jobs: the jobs strategy against the emulator's Batch APIs (and those APIs
driven by the official SDKs), the store's job records, the magic and the command line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from keys import API_KEY

from pizzagpt_magic import backends
from pizzagpt_magic.batch import ask_many, ask_many_async
from pizzagpt_magic.emulator import EmulatorThread
from pizzagpt_magic.errors import BatchAPIUnavailable, BatchError, JobError, JobLineError
from pizzagpt_magic.store import forget_stores, get_store

MODEL = "emu:emu-mini"


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorThread]:
    with EmulatorThread(api_key=API_KEY) as emu:
        yield emu


@pytest.fixture
def emu(server: EmulatorThread, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> EmulatorThread:
    """The emulator as the endpoint ``emu`` with a Batch API, and as the ``anthropic`` preset;
    a store of the test's own."""
    server.reset_stats()
    server.files.clear()
    server.openai_batches.clear()
    server.message_batches.clear()
    server.emulator.batch_delay = 0.0
    server.emulator.batches = True
    server.emulator.batch_token_limit = None
    monkeypatch.setenv("EMU_API_KEY", API_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    monkeypatch.setenv("PIZZAGPT_STORE", str(tmp_path / "store.sqlite3"))
    forget_stores()
    monkeypatch.setitem(
        backends._registered,
        "emu",
        backends.Endpoint("emu", f"{server.url}/v1", "EMU_API_KEY", batch_api=True),
    )
    yield server
    forget_stores()


def uploaded_lines(emu: EmulatorThread) -> list[list[dict]]:
    """The lines of each input file uploaded, in order."""
    return [
        [json.loads(line) for line in f["content"].splitlines() if line.strip()]
        for f in emu.files.values()
        if f["purpose"] == "batch"
    ]


def ask(prompts: list[str], **options: object) -> list[object]:
    options.setdefault("model", MODEL)
    options.setdefault("errors", "return")
    return ask_many(prompts, batch_api=True, poll=0.02, progress=False, **options)  # type: ignore[return-value]


# -- the SDKs drive the emulator ----------------------------------------------------------------


def test_openai_sdk_drives_the_batch_routes(emu: EmulatorThread) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{emu.url}/v1", api_key=API_KEY)
    lines = [
        {
            "custom_id": f"row-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "emu-mini", "messages": [{"role": "user", "content": f"q {i}"}]},
        }
        for i in range(3)
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    uploaded = client.files.create(file=("in.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status in ("validating", "in_progress", "completed")
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed"
    assert batch.request_counts.completed == 3
    assert client.batches.list(limit=1).data[0].id == batch.id
    content = client.files.content(batch.output_file_id).text
    results = [json.loads(line) for line in content.splitlines()]
    assert sorted(r["custom_id"] for r in results) == ["row-0", "row-1", "row-2"]
    assert results[0]["response"]["body"]["choices"][0]["message"]["content"]


def test_anthropic_sdk_drives_the_message_batches(emu: EmulatorThread) -> None:
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.Anthropic(base_url=emu.url, api_key=API_KEY)
    batches = client.messages.batches
    created = batches.create(
        requests=[
            {
                "custom_id": f"row-{i}",
                "params": {
                    "model": "emu-claude",
                    "max_tokens": 100,
                    "messages": [{"role": "user", "content": f"q {i} [[batch:fail]]" * (i == 1)}],
                },
            }
            for i in range(3)
        ]
    )
    ended = batches.retrieve(created.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.succeeded == 2 and ended.request_counts.errored == 1
    results = {r.custom_id: r.result.type for r in batches.results(created.id)}
    assert results == {"row-0": "succeeded", "row-1": "errored", "row-2": "succeeded"}


# -- the jobs strategy --------------------------------------------------------------------------


def test_one_file_of_distinct_prompts_and_no_resubmission(emu: EmulatorThread) -> None:
    prompts = [f"question {i % 10}" for i in range(100)]
    first = ask(prompts)
    assert all(isinstance(a, str) for a in first)
    files = uploaded_lines(emu)
    assert len(files) == 1 and len(files[0]) == 10 and len(emu.openai_batches) == 1
    ids = [line["custom_id"] for line in files[0]]
    assert len(set(ids)) == 10
    assert all(len(i) <= 64 and set(i) <= set("0123456789abcdef") for i in ids)
    assert not any("question" in i for i in ids)
    # Again: from the cache, nothing submitted; and online calls find the answers too.
    assert ask(prompts) == first
    assert len(uploaded_lines(emu)) == 1
    online = ask_many(["question 3"], model=MODEL, progress=False)
    assert online == [first[3]]
    assert emu.chat_requests == []


def test_each_line_is_the_online_body_without_streaming(emu: EmulatorThread) -> None:
    ask(["what is 2+2?"], temperature=0.3, max_tokens=50, system="Be brief.")
    body = uploaded_lines(emu)[0][0]["body"]
    ask_many(
        ["what is 2+2?"],
        model=MODEL,
        temperature=0.3,
        max_tokens=50,
        system="Be brief.",
        cache=False,
        progress=False,
    )
    assert emu.chat_requests[-1]["body"] == body
    assert "stream" not in body and "stream_options" not in body
    assert uploaded_lines(emu)[0][0]["url"] == "/v1/chat/completions"


def test_a_restarted_call_resumes_its_job(emu: EmulatorThread) -> None:
    emu.emulator.batch_delay = 0.5
    handle = ask_many(["a", "b", "c"], model=MODEL, batch_api=True, wait=False, progress=False)
    assert handle.id.startswith("batch_") and len(emu.openai_batches) == 1
    assert handle.status()[0]["done"] is False
    forget_stores()  # as a new kernel would: the store read again from its file
    answers = ask(["a", "b", "c"])
    assert all(isinstance(a, str) for a in answers)
    assert len(emu.openai_batches) == 1 and len(uploaded_lines(emu)) == 1
    assert handle.result() == answers


def test_an_interrupt_stops_waiting_and_never_cancels(emu: EmulatorThread) -> None:
    emu.emulator.batch_delay = 30

    async def stopped() -> None:
        task = asyncio.ensure_future(
            ask_many_async(["x", "y"], model=MODEL, batch_api=True, poll=0.02, progress=False)
        )
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(stopped())
    (job,) = emu.openai_batches.values()
    assert job["status"] == "in_progress"
    emu.emulator.batch_delay = 0
    assert all(isinstance(a, str) for a in ask(["x", "y"]))
    assert len(emu.openai_batches) == 1


def test_failed_lines_fail_their_rows_and_a_rerun_submits_only_them(emu: EmulatorThread) -> None:
    prompts = ["good one", "bad [[batch:fail]]", "good two"]
    answers = ask(prompts)
    assert isinstance(answers[1], JobLineError) and "emulated failure" in str(answers[1])
    assert isinstance(answers[0], str) and isinstance(answers[2], str)
    with pytest.raises(BatchError):
        ask_many(prompts, model=MODEL, batch_api=True, poll=0.02, progress=False)
    files = uploaded_lines(emu)
    assert [len(f) for f in files] == [3, 1]
    assert "batch:fail" in files[1][0]["body"]["messages"][-1]["content"]


def test_an_expired_job_keeps_what_it_finished(emu: EmulatorThread) -> None:
    answers = ask(["kept", "lost [[batch:expire]]"])
    assert isinstance(answers[0], str)
    assert isinstance(answers[1], JobLineError) and "batch_expired" in str(answers[1])
    (record,) = get_store().jobs()
    assert record["status"] == "expired" and record["collected"] == 1


def test_a_job_refused_at_validation_says_why(emu: EmulatorThread) -> None:
    answers = ask(["fine", "broken [[batch:invalid]]"])
    assert all(isinstance(a, JobError) for a in answers)
    assert "marked invalid (line 2)" in str(answers[0])


def test_batch_max_requests_splits_the_job(emu: EmulatorThread) -> None:
    answers = ask([f"row {i}" for i in range(10)], batch_max_requests=4)
    assert all(isinstance(a, str) for a in answers)
    assert [len(f) for f in uploaded_lines(emu)] == [4, 4, 2]
    assert len(get_store().jobs()) == 3


def test_token_limit_exceeded_splits_and_drops_nothing(emu: EmulatorThread) -> None:
    emu.emulator.batch_token_limit = 12
    answers = ask([f"row number {i}" for i in range(8)])  # 3 words each: 24 tokens
    assert all(isinstance(a, str) for a in answers)
    sizes = [len(f) for f in uploaded_lines(emu)]
    assert sizes[0] == 8 and sum(sizes[1:]) >= 8


def test_backends_without_the_api_get_one_line_and_nothing_is_submitted(
    emu: EmulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu.emulator.batches = False
    with pytest.raises(BatchAPIUnavailable, match=r"'emu' has no Batch API \(GET /batches"):
        ask(["q"])
    assert emu.files == {}
    with pytest.raises(BatchAPIUnavailable, match="Pizzagpt has no Batch API"):
        ask(["q"], model="gpt-4o-mini")
    monkeypatch.setitem(
        backends._registered, "plain", backends.Endpoint("plain", f"{emu.url}/v1", "EMU_API_KEY")
    )
    with pytest.raises(BatchAPIUnavailable, match="batch_api=True"):
        ask(["q"], model="plain:emu-mini")
    with pytest.raises(BatchAPIUnavailable, match="provider class"):
        ask(["q"], model="fake_provider.EchoProvider:e9")
    assert emu.files == {}


def test_claude_jobs_with_failed_and_expired_requests(emu: EmulatorThread) -> None:
    prompts = ["one", "two [[batch:fail]]", "three [[batch:expire]]", "one"]
    answers = ask(prompts, model="anthropic:emu-claude")
    assert isinstance(answers[0], str) and answers[3] == answers[0]
    assert isinstance(answers[1], JobLineError) and isinstance(answers[2], JobLineError)
    (job,) = emu.message_batches.values()
    assert len(job["requests"]) == 3
    params = job["requests"][0]["params"]
    assert params["max_tokens"] == 4096 and "stream" not in params


def test_typed_answers_through_a_job(emu: EmulatorThread) -> None:
    pytest.importorskip("jsonschema")
    values = ask(["I love it, 5 stars", "awful, 1 star"], schema="sentiment pos|neg, stars int")
    assert all(isinstance(v, dict) and v["sentiment"] in ("pos", "neg") for v in values)
    body = uploaded_lines(emu)[0][0]["body"]
    assert body["response_format"]["type"] == "json_schema"
    values = ask(["fine, 3 stars"], model="anthropic:emu-claude", schema="stars int")
    assert isinstance(values[0], dict) and "stars" in values[0]


def test_cancel_keeps_what_finished(emu: EmulatorThread) -> None:
    from pizzagpt_magic.jobs import cancel_job, list_jobs

    emu.emulator.batch_delay = 30
    handle = ask_many(
        [f"r{i}" for i in range(4)], model=MODEL, batch_api=True, wait=False, progress=False
    )
    record = cancel_job(get_store(), handle.id)
    assert record["status"] in ("cancelling", "cancelled")
    answers = ask([f"r{i}" for i in range(4)])
    assert sum(isinstance(a, str) for a in answers) == 2
    assert sum(isinstance(a, JobLineError) for a in answers) == 2
    assert list_jobs(get_store())[0]["status"] == "cancelled"


def test_the_key_is_in_no_file_of_the_store(emu: EmulatorThread, tmp_path: Path) -> None:
    ask(["secret keeping"])
    ask(["secret keeping too"], model="anthropic:emu-claude")
    get_store().flush()
    for path in tmp_path.iterdir():
        assert API_KEY.encode() not in path.read_bytes()
    from pizzagpt_magic.jobs import format_jobs, list_jobs

    assert API_KEY not in format_jobs(list_jobs(get_store()))


def test_answers_say_they_came_through_a_batch(emu: EmulatorThread) -> None:
    ask(["priced as a batch"])
    store = get_store()
    store.flush()
    (record,) = store.records(1)
    assert record["batch"] == 1
    key = uploaded_lines(emu)[0][0]["custom_id"]
    assert store.get(key)["meta"]["batch"] is True


# -- the magic and the command line -------------------------------------------------------------


@pytest.fixture
def ip(emu: EmulatorThread) -> Iterator[object]:
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    config.PizzaMagics.batch_poll = 0.02
    config.PizzaMagics.progress = False
    shell = InteractiveShell(config=config)
    shell.run_line_magic("load_ext", "pizzagpt_magic")
    yield shell
    shell.run_line_magic("unload_ext", "pizzagpt_magic")
    shell.cleanup()
    InteractiveShell.clear_instance()


def test_magic_each_with_the_batch_api(ip: object, emu: EmulatorThread) -> None:
    from IPython.core.error import UsageError

    ip.user_ns["items"] = ["apple", "pear", "apple"]  # type: ignore[attr-defined]
    summary = ip.run_cell_magic(  # type: ignore[attr-defined]
        "pizza", f"--each items --batch-api -m {MODEL} -o out", "Name the fruit {item}"
    )
    assert summary is not None
    assert len(ip.user_ns["out"]) == 3 and len(uploaded_lines(emu)) == 1  # type: ignore[attr-defined]
    listing = ip.run_line_magic("pizza", "--jobs")  # type: ignore[attr-defined]
    assert "emu:emu-mini" in repr(listing) and "completed" in repr(listing)
    emu.emulator.batch_delay = 30
    ip.user_ns["more"] = ["plum"]  # type: ignore[attr-defined]
    handle = ip.run_cell_magic(  # type: ignore[attr-defined]
        "pizza", f"--each more --batch-api --no-wait -m {MODEL} -o h", "Name the fruit {item}"
    )
    assert ip.user_ns["h"] is handle and handle.status()[0]["done"] is False  # type: ignore[attr-defined]
    cancelled = ip.run_line_magic("pizza", f"--jobs cancel {handle.id}")  # type: ignore[attr-defined]
    assert "cancel" in repr(cancelled)
    with pytest.raises(UsageError, match="go with %%pizza --each"):
        ip.run_line_magic("pizza", "--batch-api hello")  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="Pizzagpt has no Batch API"):
        ip.run_cell_magic("pizza", "--each items --batch-api", "{item}")  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="--jobs cancel"):
        ip.run_line_magic("pizza", "--jobs cancel nope")  # type: ignore[attr-defined]


def test_cli_lists_jobs(emu: EmulatorThread, capsys: pytest.CaptureFixture[str]) -> None:
    from pizzagpt_magic.cli import main

    ask(["for the list"])
    assert main(["jobs", "--json"]) == 0
    (job,) = json.loads(capsys.readouterr().out)
    assert job["provider"] == "emu" and job["status"] == "completed" and job["requests"] == 1
    assert main(["jobs"]) == 0
    assert job["id"] in capsys.readouterr().out


def test_frame_methods_take_batch_api(emu: EmulatorThread) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("jsonschema")
    import pizzagpt_magic  # noqa: F401  (registers the accessor)

    frame = pd.DataFrame({"text": ["good, 4 stars", "bad, 1 star", "good, 4 stars"]})
    answers = frame.pizza.map(
        "Summarise {text}", model=MODEL, batch_api=True, batch_poll=0.02, progress=False
    )
    assert answers.notna().all() and len(uploaded_lines(emu)) == 1
    assert len(uploaded_lines(emu)[0]) == 2
    typed = frame.pizza.extract(
        "Stars in {text}", "stars int", model=MODEL, batch_api=True, batch_poll=0.02, progress=False
    )
    assert str(typed["stars"].dtype) == "Int64" and typed["_error"].isna().all()
    labels = frame.pizza.classify(
        "{text}",
        ["good", "bad"],
        model="anthropic:emu-claude",
        batch_api=True,
        batch_poll=0.02,
        progress=False,
    )
    assert len(labels) == 3 and len(emu.message_batches) == 1
    with pytest.raises(BatchAPIUnavailable):
        frame.pizza.filter("is {text} good?", model="gpt-4o-mini", batch_api=True, progress=False)


def test_results_gone_say_so_and_the_rerun_submits_anew(emu: EmulatorThread) -> None:
    handle = ask_many(["p", "q"], model=MODEL, batch_api=True, wait=False, progress=False)
    assert handle.status()[0]["done"] is True
    (job,) = emu.openai_batches.values()
    del emu.files[job["output_file_id"]]
    answers = ask(["p", "q"])
    assert all(isinstance(a, JobError) and "are gone from emu" in str(a) for a in answers)
    assert all(isinstance(a, str) for a in ask(["p", "q"]))
    assert [len(f) for f in uploaded_lines(emu)] == [2, 2]


def test_a_network_error_while_polling_is_polled_again(
    emu: EmulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pizzagpt_magic.errors import ConnectError
    from pizzagpt_magic.providers.batches.openai import OpenAIBatches

    real = OpenAIBatches.poll
    calls = []

    async def flaky(self: OpenAIBatches, job_id: str) -> object:
        calls.append(job_id)
        if len(calls) == 1:
            raise ConnectError("Cannot reach the endpoint: connection reset")
        return await real(self, job_id)

    monkeypatch.setattr(OpenAIBatches, "poll", flaky)
    assert all(isinstance(a, str) for a in ask(["m", "n"]))
    assert len(calls) == 2 and len(emu.openai_batches) == 1


def test_a_store_of_version_5_gains_the_jobs_tables(tmp_path: Path) -> None:
    import sqlite3

    from pizzagpt_magic import store as stores

    path = tmp_path / "old.sqlite3"
    connection = sqlite3.connect(path)
    for number in range(1, 6):
        for statement in stores.MIGRATIONS.get(number, ()):
            connection.execute(statement)
    connection.execute("PRAGMA user_version = 5")
    connection.execute(
        "INSERT INTO log (time, provider, model, parameters, messages, prompt, source) "
        "VALUES (0, 'p', 'm', '{}', '[]', 'kept', 'api')"
    )
    connection.commit()
    connection.close()
    store = stores.Store(path)
    assert store.usable
    assert store.records(5)[0]["prompt"] == "kept"
    assert store.add_job(
        {
            "id": "b1",
            "api": "openai",
            "provider": "p",
            "origin": "u",
            "model": "m",
            "status": "in_progress",
            "requests": 2,
        },
        ["k1", "k2"],
    )
    assert store.job_keys("b1") == ["k1", "k2"] and store.jobs(live=True)[0]["id"] == "b1"
    store.close()
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == stores.SCHEMA_VERSION


def test_a_resumed_claude_job_reads_its_typed_answers(emu: EmulatorThread) -> None:
    pytest.importorskip("jsonschema")
    emu.emulator.batch_delay = 0.3
    handle = ask_many(
        ["4 stars"],
        model="anthropic:emu-claude",
        schema="stars int",
        batch_api=True,
        wait=False,
        progress=False,
    )
    assert handle.id.startswith("msgbatch_")
    forget_stores()
    (value,) = ask(["4 stars"], model="anthropic:emu-claude", schema="stars int")
    assert isinstance(value, dict) and isinstance(value["stars"], int)
    assert len(emu.message_batches) == 1


def test_a_job_over_the_size_limit_is_split(
    emu: EmulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pizzagpt_magic.providers.batches.openai import OpenAIBatches

    monkeypatch.setattr(OpenAIBatches, "max_bytes", 1500)
    answers = ask([f"a longer row of text, number {i}, " + "x" * 200 for i in range(9)])
    assert all(isinstance(a, str) for a in answers)
    files = uploaded_lines(emu)
    assert len(files) > 1 and sum(len(f) for f in files) == 9
    assert all(len(json.dumps(f)) < 1500 * 2 for f in files)


def test_with_the_store_off_jobs_are_kept_in_memory(
    emu: EmulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIZZAGPT_STORE", "")
    forget_stores()
    emu.emulator.batch_delay = 0.3
    handle = ask_many(["mem a", "mem b"], model=MODEL, batch_api=True, wait=False, progress=False)
    answers = ask(["mem a", "mem b"])
    assert all(isinstance(a, str) for a in answers) and len(emu.openai_batches) == 1
    from pizzagpt_magic.jobs import list_jobs

    assert handle.id in [j["id"] for j in list_jobs(None)]


def test_batch_answers_cost_the_batch_share(emu: EmulatorThread) -> None:
    from pizzagpt_magic import cost

    cost.set_prices({"emu:emu-mini": {"input": 1.0, "output": 2.0}})
    try:
        ask(["priced row"])
        (online,) = ask_many(["priced row"], model=MODEL, cache=False, progress=False)
        store = get_store()
        store.flush()
        batch_record, online_record = store.records(2)[::-1]
        assert batch_record["batch"] == 1 and online_record["batch"] is None
        assert batch_record["cost"] == pytest.approx(online_record["cost"] * 0.5)
        cost.set_batch_discount(0.25)
        cheaper = cost.Cost(1.0, "priced").at_batch_price()
        assert cheaper.usd == 0.25 and cheaper.label == f"{cost.format_usd(0.25)} (batch)"
        assert cheaper.as_dict()["batch"] is True
    finally:
        cost.set_batch_discount(0.5)
        cost.set_prices(None)


# -- usage: batch and online apart ----------------------------------------------------------------


def test_usage_counts_batch_and_online_apart(
    ip: object, emu: EmulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    from pizzagpt_magic import cost
    from pizzagpt_magic.cli import main
    from pizzagpt_magic.reports import usage_report

    cost.set_prices({"emu:emu-mini": {"input": 1.0, "output": 2.0}})
    try:
        answers = ask(["first row", "second row", "third row [[batch:fail]]"])
        assert isinstance(answers[2], JobLineError)
        ask_many(["an online question", "another one"], model=MODEL, progress=False)
        ask_many(["first row"], model=MODEL, progress=False)  # a cache hit of a batch answer
    finally:
        cost.set_prices(None)
    store = get_store()
    store.flush()
    # The count by hand, from the log.
    expected = {}
    for via, mine in (
        ("batch", [r for r in store.records(None) if r["batch"] and not r["cached"]]),
        ("online", [r for r in store.records(None) if not (r["batch"] and not r["cached"])]),
    ):
        sent = [r for r in mine if not r["cached"]]
        expected[via] = {
            "requests": len(sent),
            "failures": sum(r["error"] is not None for r in sent),
            "cache_hits": sum(bool(r["cached"]) for r in mine),
            "input_tokens": sum(r["prompt_tokens"] or 0 for r in sent),
            "output_tokens": sum(r["completion_tokens"] or 0 for r in sent),
            "cost": sum(r["cost"] or 0.0 for r in mine),
        }
    assert expected["batch"]["requests"] == 3 and expected["batch"]["failures"] == 1
    assert expected["online"]["requests"] == 2 and expected["online"]["cache_hits"] == 1
    # Two answers of the batch at half the price of two online ones of the same size.
    assert 0 < expected["batch"]["cost"] < expected["online"]["cost"]

    def check(records: list[dict]) -> None:
        found = {r["via"]: r for r in records if r["model"] == MODEL}
        assert set(found) == {"batch", "online"}
        for via, counts in expected.items():
            for name, value in counts.items():
                assert found[via][name] == pytest.approx(value, abs=1e-12), (via, name)

    report = usage_report(store)
    check(report.records())
    text = report.text()
    header = next(line for line in text.splitlines() if line.startswith("model"))
    assert header.split()[:2] == ["model", "via"]
    rows = [line.split() for line in text.splitlines() if line.startswith(MODEL)]
    assert [row[1] for row in rows] == ["online", "batch"]
    assert [row[2] for row in rows] == ["2", "3"]  # requests
    # The magic: this kernel's report and the store's, both apart.
    shown = ip.run_line_magic("pizza", "--usage")  # type: ignore[attr-defined]
    check(shown.more[0].records() if shown.more else shown.records())
    assert "batch" in shown._repr_mimebundle_()["text/html"]
    # The command line, as text and as JSON.
    assert main(["usage", "--json"]) == 0
    check(json.loads(capsys.readouterr().out))
    assert main(["usage"]) == 0
    assert " batch " in capsys.readouterr().out


def test_a_store_of_version_7_gets_the_batch_column_in_its_usage_index(tmp_path: Path) -> None:
    import sqlite3

    from pizzagpt_magic import store as stores

    path = tmp_path / "v7.sqlite3"
    connection = sqlite3.connect(path)
    for number in range(1, 8):
        for statement in stores.MIGRATIONS.get(number, ()):
            connection.execute(statement)
    for name, kind in stores.LOG_COLUMNS.items():
        connection.execute(f"ALTER TABLE log ADD COLUMN {name} {kind}")
    connection.execute(  # the usage index as version 7 made it
        "CREATE INDEX log_usage ON log (provider, model, cached, pricing, error, time, session, "
        "source, prompt_tokens, completion_tokens, cache_read_input_tokens, cost, cost_saved)"
    )
    connection.execute("PRAGMA user_version = 7")
    connection.execute(
        "INSERT INTO log (time, provider, model, parameters, messages, prompt, source, batch, "
        "prompt_tokens, cost) VALUES (0, 'p', 'm', '{}', '[]', 'kept', 'api', 1, 7, 0.5)"
    )
    connection.commit()
    connection.close()
    store = stores.Store(path)
    assert store.usable and store.records(5)[0]["prompt"] == "kept"
    (row,) = store.usage()
    assert row["via"] == "batch" and row["input_tokens"] == 7 and row["cost"] == 0.5
    store.close()
    connection = sqlite3.connect(path)
    columns = [r[2] for r in connection.execute("PRAGMA index_info(log_usage)")]
    assert columns[:4] == ["provider", "model", "cached", "batch"]
    assert connection.execute("PRAGMA user_version").fetchone()[0] == stores.SCHEMA_VERSION
    connection.close()


# -- estimates: the online price and the batch price ---------------------------------------------


def test_estimate_with_the_batch_api_shows_both_prices(ip: object, emu: EmulatorThread) -> None:
    from pizzagpt_magic import cost
    from pizzagpt_magic.batch import estimate_many

    cost.set_prices({"emu:emu-mini": {"input": 1.0, "output": 2.0}})
    try:
        ip.run_line_magic("config", "PizzaMagics.batch_discount = 0.4")  # type: ignore[attr-defined]
        ip.user_ns["items"] = ["apple", "pear", "apple", "plum"]  # type: ignore[attr-defined]
        cell = f"--each items --estimate --max-tokens 50 -m {MODEL}"
        online = ip.run_cell_magic("pizza", cell, "Name the fruit {item}")  # type: ignore[attr-defined]
        both = ip.run_cell_magic("pizza", cell + " --batch-api", "Name the fruit {item}")  # type: ignore[attr-defined]
        assert emu.files == {} and emu.openai_batches == {}  # an estimate sends nothing
        assert online.batch_usd is None and "Batch API" not in online.line()
        assert both.requests == 3 and both.output_tokens == 3 * 50
        assert both.usd == pytest.approx(online.usd) and both.usd > 0
        assert both.batch_share == 0.4
        assert both.batch_usd == pytest.approx(both.usd * 0.4)
        line = repr(both)
        assert f"cost {cost.format_usd(both.usd)} online" in line
        assert f"{cost.format_usd(both.batch_usd)} through the Batch API (40%" in line
        assert both.as_dict()["batch_usd"] == pytest.approx(both.usd * 0.4)
        bundle = both._repr_mimebundle_()
        markdown = bundle["text/markdown"]
        assert "| online | 3 |" in markdown and "| Batch API (40%) | 3 |" in markdown
        assert "$" not in markdown.replace("\\$", "")  # no mathematics in a notebook
        assert bundle["text/plain"] == line
        # The Python API.
        python = estimate_many(["apple", "pear", "apple"], model=MODEL, batch_api=True)
        assert python.requests == 2 and python.batch_usd == pytest.approx(python.usd * 0.4)
        assert estimate_many(["apple"], model=MODEL).batch_usd is None
    finally:
        ip.run_line_magic("config", "PizzaMagics.batch_discount = 0.5")  # type: ignore[attr-defined]
        cost.set_prices(None)


def test_frame_estimates_with_the_batch_api_show_both_prices(emu: EmulatorThread) -> None:
    pd = pytest.importorskip("pandas")
    import pizzagpt_magic  # noqa: F401  (registers the accessor)
    from pizzagpt_magic import cost

    frame = pd.DataFrame({"text": ["good", "bad", "good"]})
    cost.set_prices({"emu:emu-mini": {"input": 1.0, "output": 2.0}})
    try:
        online = frame.pizza.estimate("map", "Summarise {text}", model=MODEL, max_tokens=20)
        both = frame.pizza.estimate(
            "map", "Summarise {text}", model=MODEL, max_tokens=20, batch_api=True
        )
    finally:
        cost.set_prices(None)
    assert emu.files == {}
    assert online.batch_cost_label is None and "Batch API" not in str(online)
    assert both.requests == 2 and both.usd == pytest.approx(online.usd)
    assert both.batch_usd == pytest.approx(both.usd * 0.5)
    assert f"{cost.format_usd(both.batch_usd)} through the Batch API (50%" in str(both)
