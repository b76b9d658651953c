"""Packed --each batches in a real kernel, against the emulator."""

from __future__ import annotations

import pytest
from kernel_helpers import Kernel, error_of, result_text

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def kernel(emulator, tmp_path_factory):
    store = tmp_path_factory.mktemp("store") / "store.sqlite3"
    # No pack setting: the package's default ("auto").
    started = Kernel(
        {"PIZZAGPT_URL": emulator.url, "PIZZAGPT_STORE": str(store), "PIZZAGPT_PACK": ""}
    )
    started.execute("%load_ext pizzagpt_magic")
    started.execute(
        "import pandas as pd\n"
        "reviews = pd.Series([f'Review {n}: the pizza was {n % 7} minutes late' for n in "
        "range(1000)], index=[f'r{n}' for n in range(1000)])"
    )
    yield started
    started.shutdown()


def test_a_thousand_rows_in_few_requests_each_answer_on_its_own_row(kernel, emulator):
    emulator.reset_stats()
    messages = kernel.execute(
        "%%pizza --each reviews -o notes\nDid this review complain? {item}", timeout=120
    )
    assert error_of(messages) is None
    assert emulator.requests <= 50 and emulator.packed_rows == 1000
    check = kernel.execute(
        "from pizzagpt_magic.emulator import make_answer\n"
        "all(notes[i] == make_answer(f'Did this review complain? {reviews[i]}') "
        "for i in reviews.index), list(notes.index[:2])"
    )
    assert result_text(check) == "(True, ['r0', 'r1'])"
    # The same cell with one row a request, or another pack size, sends nothing: same keys.
    emulator.reset_stats()
    for pack in ("1", "7"):
        again = kernel.execute(
            f"%%pizza --each reviews -o again --pack {pack}\nDid this review complain? {{item}}"
        )
        assert error_of(again) is None
    assert emulator.requests == 0


def test_pack_1_sends_one_request_a_distinct_prompt(kernel, emulator):
    emulator.reset_stats()
    messages = kernel.execute(
        "%%pizza --each reviews --pack 1 --concurrency 16 -o single\nOne word for: {item}",
        timeout=120,
    )
    assert error_of(messages) is None
    assert emulator.requests == 1000 and emulator.packs == 0


def test_typed_columns_with_a_schema_travel_packed(kernel, emulator):
    kernel.execute("late = [f'Minutes late: {n % 7}; order {n}' for n in range(1000)]")
    emulator.reset_stats()
    messages = kernel.execute(
        "%%pizza --each late --schema 'late bool, minutes int' -o typed\n{item}",
        timeout=120,
    )
    assert error_of(messages) is None
    assert emulator.requests <= 60
    check = kernel.execute(
        "[str(t) for t in typed.dtypes], bool((typed['minutes'] == "
        "[n % 7 for n in range(1000)]).all()), int(typed['_error'].notna().sum())"
    )
    assert result_text(check) == "(['boolean', 'Int64', 'string'], True, 0)"


def test_a_bad_pack_value_is_one_line(kernel):
    messages = kernel.execute("%%pizza --each reviews --pack 0\n{item}")
    error = error_of(messages)
    assert error is not None and "pack must be a whole number" in error["evalue"]
    assert "\n" not in error["evalue"]
