"""A cost limit in a real kernel: a 200-item batch stops at its limit, keeps its answers, and a
rerun sends only the rest; the kernel's usage report counts what it asked."""

from __future__ import annotations

import sqlite3

import pytest
from kernel_helpers import Kernel, error_of, result_text

pytestmark = pytest.mark.kernel

PRICES = {"emu:emu-mini": {"input": 0.15, "output": 0.6}}
#: The estimate of one item below: 17 input tokens (67 characters, 4 a token) and 20 output.
EACH = (17 * 0.15 + 20 * 0.6) / 1e6


@pytest.fixture
def kernel(emulator, tmp_path):
    store = tmp_path / "store.sqlite3"
    kernel = Kernel({"PIZZAGPT_URL": emulator.url, "PIZZAGPT_STORE": str(store)})
    for setup in (
        "%load_ext pizzagpt_magic",
        f"%config PizzaMagics.endpoints = {{'emu': {{'base_url': '{emulator.url}/v1'}}}}",
        f"%config PizzaMagics.prices = {PRICES!r}",
        "%config PizzaMagics.progress = False",
        "items = [f'Item {i:03}: the quick brown fox jumps over the lazy dog by the river.' "
        "for i in range(200)]",
    ):
        assert error_of(kernel.execute(setup)) is None
    kernel.store = store
    yield kernel
    kernel.shutdown()


def test_a_batch_stops_at_its_limit_and_a_rerun_sends_the_rest(kernel, emulator):
    emulator.reset_stats()
    limit = 50 * EACH
    batch = "%%pizza --each items -m emu:emu-mini --max-tokens 20 {} -o answers\n{{item}}"
    messages = kernel.execute(batch.format(f"--max-cost {limit!r}"), timeout=120)
    error = error_of(messages)
    assert error is not None and error["ename"] == "UsageError"
    assert error["evalue"].startswith("Stopped at --max-cost") and "\n" not in error["evalue"]
    assert "answers are in 'answers'" in error["evalue"]
    kept = int(result_text(kernel.execute("sum(a is not None for a in answers)")))
    assert 40 <= kept <= 55 and emulator.requests == kept
    flush = "from pizzagpt_magic.store import get_store\nget_store().flush()"
    assert result_text(kernel.execute(flush)) == "True"  # every write on disk
    with sqlite3.connect(kernel.store) as connection:
        spent, logged = connection.execute("SELECT total(cost), count(*) FROM log").fetchone()
    assert spent <= limit and logged == kept
    # With no limit, only the rest is sent; the kept answers are the same.
    kernel.execute("first = list(answers)")
    assert error_of(kernel.execute(batch.format(""), timeout=120)) is None
    assert emulator.requests == 200
    same = "all(a == b for a, b in zip(first, answers) if a is not None) and None not in answers"
    assert result_text(kernel.execute(same)) == "True"
    # The kernel's report counts its 200 requests, and the cost of each.
    report = "r = %pizza --usage\n(r.rows[0]['requests'], r.rows[0]['cache_hits'], r.title)"
    assert result_text(kernel.execute(report)) == f"(200, {kept}, 'This kernel')"


def test_the_kernel_budget_holds_for_the_dataframe_operations(kernel, emulator):
    emulator.reset_stats()
    each = (17 * 0.15 + 20 * 0.6) / 1e6  # the estimate of one row below
    setup = (
        "import pandas as pd\n"
        f"%config PizzaMagics.budget = {10 * each!r}\n"
        "frame = pd.DataFrame({'text': items[:40]})"
    )
    assert error_of(kernel.execute(setup)) is None
    ask = "frame.pizza.map('{text}', model='emu:emu-mini', max_tokens=20, progress=False)"
    error = error_of(kernel.execute(f"out = {ask}", timeout=120))
    assert error is not None and error["ename"] == "BudgetExceededError"
    assert error["evalue"].startswith("Stopped at PizzaMagics.budget")
    sent = emulator.requests
    assert 5 <= sent <= 10
    spent = "get_ipython().magics_manager.registry['PizzaMagics'].spent"
    kept = f"(int(_pizza_batch.notna().sum()), 0 < {spent} <= {10 * each!r})"
    assert result_text(kernel.execute(kept)) == f"({sent}, True)"
    # With the budget spent, the next operation sends nothing; lifted, it sends only the rest.
    assert error_of(kernel.execute(f"out = {ask}")) is not None and emulator.requests == sent
    kernel.execute("%config PizzaMagics.budget = None")
    assert error_of(kernel.execute(f"out = {ask}", timeout=120)) is None
    assert emulator.requests == 40
