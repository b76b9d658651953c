"""Usage reports: %pizza --usage, pizzagpt usage and pizzagpt_magic.usage() agree with a count
made by hand over a store with mixed models, cache hits and failures."""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict

import pytest
from test_cost import FIXTURE, prices, store_file  # noqa: F401 - fixtures
from test_magics import cell, failing

import pizzagpt_magic
from pizzagpt_magic import cost, reports
from pizzagpt_magic.cli import main
from pizzagpt_magic.errors import PizzagptError


@pytest.fixture
def mixed(store_file, shell, endpoint, prices):  # noqa: F811
    """A store holding priced, local and unpriced answers, cache hits and failures, and the
    count of it all made answer by answer."""
    cost.set_prices({"emu:emu-mini": FIXTURE["emu:emu-mini"]})  # emu-large stays local
    count: dict[str, Counter] = defaultdict(Counter)
    money: dict[str, float] = defaultdict(float)
    saved: dict[str, float] = defaultdict(float)
    asked = [
        ("emu:emu-mini", "What is 6 times 7?"),
        ("emu:emu-mini", "What is 6 times 8?"),
        ("emu:emu-mini", "What is 6 times 7?"),  # a cache hit
        ("emu:emu-mini", "Name three rivers of Europe."),
        ("emu:emu-large", "What is 2 plus 2?"),
        ("emu:emu-large", "What is 2 plus 2?"),  # a cache hit
        ("fake_provider.EchoProvider", "hello there"),
        ("fake_provider.EchoProvider", "hello again"),
    ]
    for model, question in asked:
        answer = cell(shell, f"%pizza --no-stream -m {model} {question}")
        key = answer.completion.model_id
        if answer.completion.cached:
            count[key]["cache_hits"] += 1
            saved[key] += answer.completion.cost.saved or 0.0
        else:
            count[key]["requests"] += 1
            count[key]["input_tokens"] += answer.usage["prompt_tokens"]
            count[key]["output_tokens"] += answer.usage["completion_tokens"]
            money[key] += answer.completion.cost.usd or 0.0
            if answer.completion.cost.usd is None:
                count[key]["unpriced"] += 1
    for model in ("emu:emu-mini", "emu:emu-large"):
        failing(shell, f"%pizza --no-stream -m {model} Fail now [[fault:status=400]]")
        count[model]["requests"] += 1
        count[model]["failures"] += 1
    return count, money, saved


def check(records, count, money, saved):
    assert {r["model"] for r in records} == set(count)
    for record in records:
        model = record["model"]
        for name in ("requests", "failures", "cache_hits", "input_tokens", "output_tokens"):
            assert record[name] == count[model][name], (model, name)
        assert record["unpriced"] == count[model]["unpriced"]
        if count[model]["unpriced"]:
            unknown = record["cost"] is None or record["cost"] != record["cost"]  # None, or NaN
            assert unknown and record["cost_label"] == "unpriced"
        else:
            assert record["cost"] == pytest.approx(money[model], abs=1e-12)
        assert record["cost_saved"] == pytest.approx(saved[model], abs=1e-12)


def test_usage_reports_agree_with_a_hand_count(mixed, shell, capsys):
    count, money, saved = mixed
    assert money["emu:emu-mini"] > 0 and saved["emu:emu-mini"] > 0
    report = cell(shell, "%pizza --usage")
    assert isinstance(report, reports.UsageReport)
    check(report.records(), count, money, saved)
    labels = {r["model"]: r["cost_label"] for r in report.records()}
    assert labels == {
        "emu:emu-mini": cost.format_usd(money["emu:emu-mini"]),
        "emu:emu-large": "local",
        "fake_provider.EchoProvider:echo-1": "unpriced",
    }
    # The command line says the same.
    capsys.readouterr()
    assert main(["usage", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    check(printed, count, money, saved)
    assert printed == report.records()
    assert main(["usage"]) == 0
    text = capsys.readouterr().out
    for line in ("emu:emu-mini", "local", "unpriced", "total"):
        assert line in text
    # And Python.
    frame = pizzagpt_magic.usage()
    check(frame.to_dict("records"), count, money, saved)


def test_usage_is_shown_as_tables_through_the_safe_renderer(mixed, shell):
    report = cell(shell, "%pizza --usage --since 1h")
    bundle = report._repr_mimebundle_()
    html = bundle["text/html"]
    assert html.count("<table>") == 1 + len(report.more)
    assert "<th>cache hits</th>" in html and "fake_provider.EchoProvider" in html
    assert "The store" in bundle["text/plain"] and "cache hits" in bundle["text/plain"]
    assert "--usage" in failing(shell, "%pizza --usage what did I spend?")
    assert "--since" in failing(shell, "%pizza --since 1d hello")
    assert "--since takes a date" in failing(shell, "%pizza --usage --since yesterday")


def test_a_kernel_sees_its_own_usage_apart_from_the_store(store_file, shell, endpoint, prices):  # noqa: F811
    from pizzagpt_magic.store import get_store

    shell.history_manager.session_number = 7  # as a terminal IPython's history numbers it
    cell(shell, "%pizza --no-stream -m emu:emu-mini What is 6 times 7?")
    store = get_store()
    store.log({"provider": "emu", "model": "emu-mini", "session": "elsewhere", "cached": True})
    report = cell(shell, "%pizza --usage")
    assert report.title == "This kernel" and report.rows[0]["cache_hits"] == 0
    assert report.more[0].rows[0]["cache_hits"] == 1


def test_usage_by_day_and_source(mixed):
    from pizzagpt_magic.store import get_store

    store = get_store()
    days = reports.usage_report(store, by="day").records()
    assert len(days) == 1 and days[0]["requests"] == sum(c["requests"] for c in mixed[0].values())
    sources = reports.usage_report(store, by="source").records()
    assert [s["source"] for s in sources] == ["magic"]
    with pytest.raises(ValueError, match="by must be one of"):
        reports.usage_report(store, by="week")


def test_plots_of_cost_and_tokens(mixed, shell, tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    plot = cell(shell, "%pizza --usage --plot")
    assert plot._repr_png_().startswith(b"\x89PNG")
    assert "cost per day for 3 models" in repr(plot)
    picture = tmp_path / "tokens.png"
    assert main(["usage", "--plot", "tokens", "-o", str(picture)]) == 0
    assert picture.read_bytes().startswith(b"\x89PNG")
    capsys.readouterr()
    assert main(["usage", "--plot"]) == 2
    assert "-o FILE.png" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert "needs matplotlib" in failing(shell, "%pizza --usage --plot")
    assert main(["usage", "--plot", "-o", str(picture)]) == 1
    assert "needs matplotlib" in capsys.readouterr().err


def test_usage_without_a_store(shell, capsys):
    assert "store is off" in failing(shell, "%pizza --usage")
    assert main(["usage"]) == 1
    assert "the store is off" in capsys.readouterr().err
    assert len(pizzagpt_magic.usage()) == 0


def test_usage_records_never_say_zero_for_unknown_costs():
    row = {
        "requests": 2,
        "failures": 0,
        "cache_hits": 0,
        "cost": 0.0,
        "unpriced": 2,
        "local": 0,
        "free": 0,
    }
    assert reports.cost_label(row) == "unpriced"
    assert reports.cost_label({**row, "cost": 0.5, "unpriced": 1}) == "$0.5000 + 1 unpriced"
    assert reports.cost_label({**row, "unpriced": 0, "free": 2}) == "free"
    with pytest.raises(PizzagptError):
        cost.set_prices({"x:y": {"input": "cheap", "output": 1}})


def test_a_store_of_the_first_schema_is_migrated(tmp_path):
    import sqlite3

    from pizzagpt_magic import store as stores

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as connection:
        for statement in stores.MIGRATIONS[1]:
            connection.execute(statement)
        connection.execute(
            "INSERT INTO log (time, provider, model, parameters, messages, prompt, answer, "
            "prompt_tokens, completion_tokens, source) "
            "VALUES (1, 'openai', 'gpt-4o', '{}', '[]', 'q', 'a', 10, 5, 'api')"
        )
        connection.execute("PRAGMA user_version = 1")
    store = stores.Store(path)
    try:
        assert store.usable
        (row,) = reports.usage_report(store).records()
        assert (row["requests"], row["input_tokens"], row["unpriced"]) == (1, 10, 1)
        assert row["cost"] is None and row["cost_label"] == "unpriced"
        store._reader().execute("DROP INDEX log_usage")  # as a store made elsewhere might be
        assert reports.usage_report(store).records() == [row]
    finally:
        store.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == stores.SCHEMA_VERSION
