"""What only a real Jupyter kernel shows: its running loop, queued cells, interrupts."""

from __future__ import annotations

import re
import time

import pytest
from kernel_helpers import Kernel, answer_text, error_of, of_type, result_text, stderr_of

pytestmark = pytest.mark.kernel

# Unfinished tasks on the kernel's loop running code of this package.
# The package's own running tasks, told by where their code lives (by the package's folder:
# a checkout's path may hold the package's name too).
OUR_TASKS = (
    "import asyncio, os, pizzagpt_magic\n"
    "_ours = os.path.dirname(pizzagpt_magic.__file__) + os.sep\n"
    "sum(getattr(getattr(t.get_coro(), 'cr_code', None), 'co_filename', '').startswith(_ours)\n"
    "    for t in asyncio.all_tasks() if not t.done())"
)


@pytest.fixture(scope="module")
def kernel(emulator):
    kernel = Kernel({"PIZZAGPT_URL": emulator.url})
    messages = kernel.execute("%load_ext pizzagpt_magic")
    assert error_of(messages) is None
    yield kernel
    kernel.shutdown()


def test_the_kernel_has_a_running_loop(kernel):
    messages = kernel.execute("import asyncio\nasyncio.get_running_loop().is_running()")
    assert result_text(messages) == "True"


def test_twenty_queued_cells_all_run_in_order(kernel, emulator):
    emulator.reset_stats()
    ids = [kernel.submit(f"%pizza --no-cache queued question number {i}") for i in range(20)]
    found = kernel.collect(ids, timeout=120)
    counts = []
    for i, msg_id in enumerate(ids):
        messages = found[msg_id] + [{"msg_type": "reply", "content": kernel.reply(msg_id)}]
        assert error_of(messages) is None, error_of(messages)
        assert f"> queued question number {i}\n" in result_text(messages) + "\n"
        counts.append(of_type(messages, "execute_result")[0]["content"]["execution_count"])
    assert counts == sorted(counts) and len(set(counts)) == 20
    assert emulator.questions == [f"queued question number {i}" for i in range(20)]


def test_progress_placeholder_is_shown_then_becomes_the_answer(kernel):
    messages = kernel.execute("%pizza --no-cache [[fault:latency=1.6]] slow one")
    displays = of_type(messages, "display_data")
    assert len(displays) == 1
    shown = displays[0]["content"]["data"]["text/plain"]
    assert "gpt-4o-mini is answering" in shown
    assert float(re.search(r"([\d.]+) s$", shown).group(1)) >= 0.3  # not for a quick answer
    display_id = displays[0]["content"]["transient"]["display_id"]
    updates = [
        m["content"]
        for m in of_type(messages, "update_display_data")
        if m["content"]["transient"]["display_id"] == display_id
    ]
    seconds = [
        float(re.search(r"([\d.]+) s$", u["data"]["text/plain"]).group(1))
        for u in updates
        if "is answering" in u["data"]["text/plain"]
    ]
    assert len(seconds) >= 2  # ticks about every half second, in place
    assert seconds == sorted(seconds) and seconds[0] >= 0.4
    # The placeholder's output becomes the answer: no second output, none left empty.
    assert "slow one" in updates[-1]["data"]["text/plain"] and "text/html" in updates[-1]["data"]
    assert updates[-1]["metadata"]["pizzagpt_magic"]["model"] == "gpt-4o-mini"
    assert not of_type(messages, "execute_result")
    assert "slow one" in answer_text(messages)


def test_a_quick_answer_shows_no_placeholder_at_all(kernel):
    messages = kernel.execute("%pizza --no-cache a quick one")
    assert "a quick one" in result_text(messages)
    assert not of_type(messages, "display_data", "update_display_data")


def test_failed_cell_leaves_no_placeholder_and_one_line_error(kernel):
    for fault, placeholder in (("status=500", False), ("status=500;latency=0.8", True)):
        messages = kernel.execute(f"%pizza --no-cache [[fault:{fault}]] broken")
        error = error_of(messages)
        assert error["ename"] == "UsageError" and "HTTP 500" in error["evalue"]
        lines = stderr_of(messages).strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("UsageError: HTTP 500")
        updates = of_type(messages, "update_display_data")
        if placeholder:  # shown while the slow failure was on its way, then a short note
            assert len(of_type(messages, "display_data")) == 1
            last = updates[-1]["content"]["data"]["text/plain"]
            assert last.startswith("no answer after ") and "is answering" not in last
        else:
            assert not of_type(messages, "display_data") and not updates
    assert "works" in result_text(kernel.execute("%pizza still works"))


def interrupt_once_in_flight(kernel, emulator, code: str, in_flight: int, settle: float = 0):
    """Run ``code``, interrupt the kernel ``settle`` seconds after the server holds
    ``in_flight`` requests; return the cell's messages and the seconds from the interrupt to
    the cell's end."""
    msg_id = kernel.submit(code)
    deadline = time.monotonic() + 20
    while emulator.in_flight < in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    assert emulator.in_flight == in_flight
    time.sleep(settle)
    started = time.monotonic()
    kernel.manager.interrupt_kernel()
    messages = kernel.collect([msg_id], timeout=30)[msg_id]
    messages.append({"msg_type": "reply", "content": kernel.reply(msg_id)})
    assert error_of(messages)["ename"] == "KeyboardInterrupt"
    return messages, time.monotonic() - started, started


def test_interrupt_cancels_the_request(kernel, emulator):
    emulator.reset_stats()
    messages, elapsed, started = interrupt_once_in_flight(
        kernel, emulator, "%pizza --no-cache [[fault:latency=4]] never answered", 1, settle=0.6
    )
    assert elapsed < 3  # promptly, not when the answer would have come
    assert not of_type(messages, "execute_result")
    assert len(of_type(messages, "display_data")) == 1  # the placeholder was showing...
    updates = of_type(messages, "update_display_data")
    last = updates[-1]["content"]["data"]["text/plain"]  # ...and becomes a short note
    assert last.startswith("interrupted after ") and last.endswith("no answer")
    # The server saw the client go away: the request is not running on.
    deadline = time.monotonic() + 5
    while emulator.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    assert emulator.in_flight == 0
    assert result_text(kernel.execute(OUR_TASKS)) == "0"
    after = kernel.execute("%pizza --no-cache next question")
    assert "next question" in result_text(after)
    # Past the time the cancelled answer would have arrived, nothing of it shows up anywhere.
    late = kernel.drain(max(0.0, started + 4.5 - time.monotonic()))
    assert not any("never answered" in str(m["content"]) for m in late)
    assert emulator.questions[-1] == "next question"


def test_top_level_await_in_the_same_cell(kernel):
    messages = kernel.execute(
        "import asyncio\n"
        "await asyncio.sleep(0.01)\n"
        "first = %pizza awaited neighbour\n"
        "await asyncio.sleep(0.01)\n"
        "first.text.count('awaited neighbour')"
    )
    assert error_of(messages) is None, error_of(messages)
    assert result_text(messages) == "1"


def test_insert_asks_the_frontend_for_a_new_cell(kernel):
    messages = kernel.execute(
        "%%pizza --insert\n[[echo]]Try:\n\n```python\ndf.describe()\n```\n[[/echo]]"
    )
    assert error_of(messages) is None, error_of(messages)
    assert "Try:" in result_text(messages)  # the answer itself still shows
    payload = messages[-1]["content"]["payload"]
    assert payload == [{"source": "set_next_input", "text": "df.describe()", "replace": False}]


def test_a_question_quotes_the_error_of_an_earlier_cell(kernel, emulator):
    failed = kernel.execute("import csv, io\nrows = list(csv.reader(io.StringIO('a,b')))\nrows[3]")
    assert error_of(failed) is not None
    number = failed[-1]["content"]["execution_count"]
    messages = kernel.execute(f"%pizza What went wrong here? {{Err[{number}]}}")
    assert error_of(messages) is None, error_of(messages)
    asked = emulator.questions[-1]
    assert asked.startswith("What went wrong here? Traceback (most recent call last):")
    assert f'File "In[{number}]", line 3, in <module>\n    rows[3]' in asked  # named as a cell
    assert asked.endswith("IndexError: list index out of range")
    assert "site-packages" not in asked and "/tmp/" not in asked  # only the user's frames
    assert "IndexError: list index out of range" in result_text(messages)


def test_ask_is_safe_in_the_kernel(kernel):
    messages = kernel.execute(
        "from pizzagpt_magic import ask\nask('plain api call').count('plain api')"
    )
    assert result_text(messages) == "1"


def test_interrupt_cancels_a_whole_batch(kernel, emulator):
    emulator.reset_stats()
    kernel.execute("items = [f'batch item {i} [[fault:latency=4]]' for i in range(40)]")
    _, elapsed, _ = interrupt_once_in_flight(
        kernel, emulator, "%%pizza --each items --concurrency 4 --no-cache -o answers\n{item}", 4
    )
    assert elapsed < 3  # promptly, not when the answers would have come
    deadline = time.monotonic() + 5
    while emulator.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    assert emulator.in_flight == 0
    time.sleep(2.5)  # long enough for queued items to have started, had they not been cancelled
    assert emulator.requests == 4
    assert result_text(kernel.execute(OUR_TASKS)) == "0"
    # What arrived before the interrupt is kept (here nothing had: every slot is None).
    assert result_text(kernel.execute("answers == [None] * 40")) == "True"
    assert "after batch" in result_text(kernel.execute("%pizza --no-cache after batch"))


def test_interrupt_in_a_cell_with_top_level_await(kernel, emulator):
    """An async cell's interrupt only schedules a cancel on the kernel's loop: the wait must
    not nest that loop, or the cell never ends."""
    emulator.reset_stats()
    kernel.execute("import asyncio")
    msg_id = kernel.submit(
        "await asyncio.sleep(0)\nx = %pizza --no-cache [[fault:latency=8]] a slow question"
    )
    deadline = time.monotonic() + 20
    while emulator.in_flight < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)
    started = time.monotonic()
    kernel.manager.interrupt_kernel()
    messages = kernel.collect([msg_id], timeout=30)[msg_id]
    reply = kernel.reply(msg_id, timeout=10)
    elapsed = time.monotonic() - started
    assert elapsed < 2, elapsed
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert "Error in callback" not in stderr_of(messages)
    # The request was cancelled, and the kernel goes on answering.
    deadline = time.monotonic() + 5
    while emulator.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    assert emulator.in_flight == 0
    after = kernel.execute("%pizza after the interrupt")
    assert error_of(after) is None
    assert "after the interrupt" in result_text(after)
    again = kernel.execute("await asyncio.sleep(0)\ny = %pizza an async cell answers too\ny")
    assert error_of(again) is None and "an async cell answers too" in result_text(again)
