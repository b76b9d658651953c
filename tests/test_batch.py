"""ask_many and %%pizza --each: order, concurrency, failures, shared backoff, tables."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from pizzagpt_magic import BatchError, HTTPStatusError, ask_many, ask_many_async
from pizzagpt_magic.emulator import EmulatorThread
from pizzagpt_magic.interpolate import Row, batch_items


def test_answers_come_back_in_input_order(emu):
    prompts = [f"item {i} [[fault:latency={0.05 * (5 - i % 5):g}]]" for i in range(15)]
    answers = ask_many(prompts, concurrency=5, progress=False)
    assert [a.split("> ")[1].split("\n")[0] for a in answers] == [f"item {i}" for i in range(15)]


def test_concurrency_is_bounded(emulator, monkeypatch):
    with EmulatorThread(latency=0.05) as slow:
        monkeypatch.setenv("PIZZAGPT_URL", slow.url)
        ask_many([f"q{i}" for i in range(40)], concurrency=6, progress=False)
        assert slow.max_in_flight == 6
        assert slow.requests == 40
        assert slow.connections <= 6  # the shared keep-alive session carries them all


def test_failures_are_collected_then_raised(emu):
    prompts = ["fine", "[[fault:status=500]]", "also fine", "[[fault:misuse]]"]
    with pytest.raises(BatchError) as info:
        ask_many(prompts, progress=False)
    error = info.value
    assert sorted(error.errors) == [1, 3]
    assert "2 of 4 prompts failed" in str(error) and "#1: HTTPStatusError" in str(error)
    assert isinstance(error.results[0], str) and isinstance(error.results[1], HTTPStatusError)
    assert emu.requests == 4  # every item was tried


def test_failures_returned_in_place(emu):
    results = ask_many(["a", "[[fault:status=404]]"], errors="return", progress=False)
    assert isinstance(results[0], str) and isinstance(results[1], HTTPStatusError)


def test_bad_arguments():
    with pytest.raises(ValueError, match="errors"):
        ask_many(["a"], errors="ignore")
    with pytest.raises(ValueError, match="concurrency"):
        ask_many(["a"], concurrency=0)
    assert ask_many([], progress=False) == []


def test_429_slows_the_whole_batch(emu):
    # One item is told to wait 0.5 s; the others, sent once that answer has arrived, wait too.
    prompts = ["[[fault:status=429;retry-after=0.5;times=1]] first"] + [
        f"later {i}" for i in range(5)
    ]
    started = time.monotonic()

    async def main():
        from pizzagpt_magic import ask_async
        from pizzagpt_magic.session import _sessions

        loop = asyncio.get_running_loop()

        def paused() -> bool:
            entry = _sessions.get(loop)
            return entry is not None and entry.not_before > 0

        async def delayed(prompt, **options):
            if not prompt.startswith("[[fault"):
                deadline = loop.time() + 0.4  # start only after the 429 has arrived
                while not paused() and loop.time() < deadline:
                    await asyncio.sleep(0.005)
            return await ask_async(prompt, **options), time.monotonic() - started

        return await ask_many_async(prompts, concurrency=6, progress=False, ask=delayed)

    results = asyncio.run(main())
    assert all(elapsed >= 0.5 for _, elapsed in results)
    assert emu.requests == 7  # the 429, its retry, and five items that each asked once


def test_progress_bar_counts_and_failures(emu, capsys):
    ask_many(["a", "[[fault:status=500]]", "b"], errors="return", progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "failed=1" in err


def test_batch_items():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"city": ["Rome", "Pisa"], "pop": [2.8, 0.09]}, index=["r", "p"])
    labels, rows = batch_items(frame)
    assert labels == ["r", "p"] and isinstance(rows[0], Row)
    assert (
        rows[0].city == "Rome" and rows[1]["pop"] == 0.09 and str(rows[0]) == "city: Rome; pop: 2.8"
    )
    labels, values = batch_items(frame["city"])
    assert labels == ["r", "p"] and values == ["Rome", "Pisa"]
    assert batch_items(x for x in "ab") == ([0, 1], ["a", "b"])
    with pytest.raises(TypeError):
        batch_items("a string")
    with pytest.raises(AttributeError, match="no column"):
        _ = rows[0].nope


# -- the magic -------------------------------------------------------------------------------


def magics(shell):
    return shell.magics_manager.registry["PizzaMagics"]


def test_each_over_a_list(shell, emu):
    shell.user_ns["fruits"] = ["apple", "pear", "fig"]
    summary = shell.run_cell(
        "%%pizza --each fruits -o notes --concurrency 2\nNumber {index}: {item}"
    ).result
    assert shell.user_ns["notes"][1].count("Number 1: pear") == 1
    assert len(shell.user_ns["notes"]) == 3
    plain = summary._repr_mimebundle_()["text/plain"]
    assert plain.startswith("3 answers from gpt-4o-mini in") and "0 failed" in plain
    assert sorted(emu.questions) == ["Number 0: apple", "Number 1: pear", "Number 2: fig"]
    assert emu.max_in_flight <= 2


def test_each_with_json_and_code_formats(shell, emu):
    shell.user_ns["ids"] = [1, 2, "oops"]
    result = shell.run_cell(
        '%%pizza --each ids -f json -o parsed\n[[echo]]{{"id": {item}}}[[/echo]]'
    )
    assert not result.success  # "oops" gave {"id": oops}: not JSON, so that item failed
    message = str(result.error_in_exec)
    assert "1 of 3 prompts failed (#2: The answer is not JSON" in message and "'parsed'" in message
    assert shell.user_ns["parsed"] == [{"id": 1}, {"id": 2}, None]
    shell.user_ns["ids"] = [1, 2]
    summary = shell.run_cell(
        '%%pizza --each ids -f json -o parsed\n[[echo]]{{"id": {item}}}[[/echo]]'
    ).result
    assert shell.user_ns["parsed"] == [{"id": 1}, {"id": 2}]
    assert '[0] {"id": 1}' in summary._repr_mimebundle_()["text/plain"]
    shell.user_ns["tables"] = ["sales", "costs"]
    shell.run_cell(
        "%%pizza --each tables -f code -o queries\n[[echo]]Here:\n\n```sql\nSELECT * FROM "
        "{item}\n```\n[[/echo]]"
    )
    assert shell.user_ns["queries"] == ["SELECT * FROM sales\n", "SELECT * FROM costs\n"]


def test_each_over_series_and_dataframe(shell, emu):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"city": ["Rome", "Pisa"], "pop": [2.8, 0.09]}, index=[10, 20])
    shell.user_ns.update(frame=frame, cities=frame["city"])
    shell.run_cell("%%pizza --each frame -o out\n{item.city} has {item[pop]} M people; {item}")
    out = shell.user_ns["out"]
    assert isinstance(out, pd.Series) and list(out.index) == [10, 20]
    assert "Rome has 2.8 M people; city: Rome; pop: 2.8" in out[10]
    shell.run_cell("%%pizza --each cities -o out2\nAbout {item} (row {index})")
    assert "About Pisa (row 20)" in shell.user_ns["out2"][20]


def test_each_failure_keeps_the_other_answers(shell, emu):
    shell.user_ns["xs"] = ["good", "bad [[fault:status=500]]", "good too"]
    magics(shell).retries = 0
    result = shell.run_cell("%%pizza --each xs -o out\n{item}")
    assert not result.success
    assert "1 of 3 prompts failed" in str(result.error_in_exec) and "'out'" in str(
        result.error_in_exec
    )
    out = shell.user_ns["out"]
    assert out[1] is None and "good too" in out[2]


def test_each_errors(shell, emu):
    shell.user_ns.update(empty=[], number=5, text="abc")
    for source, words in [
        ("%%pizza --each nowhere\n{item}", "not defined"),
        ("%%pizza --each empty\n{item}", "is empty"),
        ("%%pizza --each number\n{item}", "not iterable"),
        ("%%pizza --each text\n{item}", "not iterable"),
        ("%%pizza --each empty\n", "empty"),
        ("%%pizza --each number --concurrency 0\n{item}", "--concurrency"),
        ("%%pizza --each xs\n{item} {undefined_thing}", "undefined_thing"),
    ]:
        shell.user_ns["xs"] = [1]
        result = shell.run_cell(source)
        assert words in str(result.error_in_exec), source
    assert emu.requests == 0


def test_each_uses_the_cache(shell, emu):
    shell.user_ns["xs"] = ["same", "same", "other"]
    shell.run_cell("%%pizza --each xs -o a --concurrency 1\n{item}")
    assert emu.requests == 2
    shell.run_cell("%%pizza --each xs -o b\n{item}")
    assert emu.requests == 2 and shell.user_ns["a"] == shell.user_ns["b"]


def test_table_in_prompt_is_summarised(shell, emu):
    pd = pytest.importorskip("pandas")
    shell.user_ns["sales"] = pd.DataFrame(
        {"region": ["north", "south"] * 500, "units": range(1000)}
    )
    magics(shell).value_budget = 700
    shell.run_cell("%%pizza\nWhich region sells more?\n{sales}")
    sent = emu.questions[-1]
    assert "DataFrame: 1,000 rows × 2 columns" in sent and "| index | region | units |" in sent
    assert len(sent) <= 700 + len("Which region sells more?\n")


def test_oversize_prompt_refused_before_sending(shell, emu):
    shell.user_ns["big"] = "x" * 5000
    magics(shell).max_prompt_chars = 3000
    result = shell.run_cell("%pizza {big}")  # cut to the 4,000-character budget: still too long
    assert "over the limit of 3,000" in str(result.error_in_exec)
    assert emu.requests == 0


# -- scale: huge and endless iterables, a concurrency above the pool's default ---------------


@pytest.mark.parametrize(
    "source", [range(10**8), itertools.count(), (i for i in itertools.count())], ids=repr
)
def test_batch_items_refuses_a_huge_or_endless_source_at_once(source):
    from pizzagpt_magic.errors import PromptError

    started = time.process_time()
    with pytest.raises(PromptError, match="over the limit of 100,000 for one batch") as info:
        batch_items(source)
    assert "\n" not in str(info.value)
    assert time.process_time() - started < 2  # nothing like 10**8 items was built
    assert batch_items(iter(range(5)), limit=5) == (list(range(5)), list(range(5)))


def test_ask_many_refuses_an_endless_generator_at_once(emu):
    from pizzagpt_magic.errors import PromptError

    with pytest.raises(PromptError, match="more than 100,000 items"):
        ask_many((f"q{n}" for n in itertools.count()), progress=False)
    with pytest.raises(PromptError, match="more than 100,000 items"):
        ask_many(itertools.count(), ask=lambda item: item, progress=False)
    assert ask_many((f"q{n}" for n in range(3)), progress=False)[2].count("q2")
    assert emu.requests == 3


def test_the_pool_follows_a_concurrency_above_its_default(monkeypatch):
    from pizzagpt_magic import session

    monkeypatch.setattr(session, "_pool_wanted", session.POOL_LIMIT)
    with EmulatorThread(latency=0.3) as slow:
        monkeypatch.setenv("PIZZAGPT_URL", slow.url)
        ask_many([f"q{i}" for i in range(300)], concurrency=150, progress=False)
        assert slow.max_in_flight == 150  # not held at the pool's 64
        monkeypatch.setattr(session, "POOL_MAX", 100)
        monkeypatch.setattr(session, "_pool_wanted", session.POOL_LIMIT)
        with pytest.warns(UserWarning, match=r"concurrency 120 is over .* cap of 100"):
            ask_many([f"r{i}" for i in range(120)], concurrency=120, progress=False)


def test_each_over_a_huge_or_endless_iterable_is_one_line(shell, emu):
    from IPython.core.error import UsageError

    shell.user_ns.update(huge=range(10**8), endless=itertools.count())
    for name, count in (("huge", "100,000,000"), ("endless", "more than 100,000")):
        result = shell.run_cell(f"%%pizza --each {name}\n{{item}}")
        error = result.error_in_exec
        assert isinstance(error, UsageError), error
        assert str(error) == (
            f"--each: {name!r} has {count} items, over the limit of 100,000 for one batch; "
            "split it (islice, or a slice of the frame) and run each part"
        )
    assert emu.requests == 0
