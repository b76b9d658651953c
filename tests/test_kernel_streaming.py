"""Streamed answers in a real kernel: the display grows, an interrupt keeps what arrived, and
the key never reaches the frontend."""

from __future__ import annotations

import json
import queue
import time

import pytest
from kernel_helpers import Kernel, answer_text, error_of, of_type, result_text
from keys import API_KEY

from pizzagpt_magic.streaming import ARRIVING

pytestmark = pytest.mark.kernel

SLOW = "[[fault:chunk-size=8;chunk-delay=0.03]]"


@pytest.fixture(scope="module")
def kernel(emulator, keyed_emulator):
    kernel = Kernel({"PIZZAGPT_URL": emulator.url, "EMU_API_KEY": API_KEY})
    messages = kernel.execute(
        "%load_ext pizzagpt_magic\n"
        f"%config PizzaMagics.endpoints = {{'emu': {{'base_url': '{keyed_emulator.url}/v1', "
        "'api_key_env': 'EMU_API_KEY'}}"
    )
    assert error_of(messages) is None
    kernel.seen: list[dict] = []
    yield kernel
    kernel.shutdown()


def run(kernel, code):
    messages = kernel.execute(code)
    kernel.seen += messages
    return messages


def test_a_slow_stream_grows_in_place_then_shows_the_finished_answer(kernel, keyed_emulator):
    messages = run(kernel, f"%pizza -m emu:emu-mini Tell me about 1, 2 and 3 {SLOW}")
    assert error_of(messages) is None
    displays = of_type(messages, "display_data")
    updates = of_type(messages, "update_display_data")
    assert len(displays) == 1
    texts = [displays[0]["content"]["data"]["text/plain"]] + [
        u["content"]["data"]["text/plain"] for u in updates[:-1]
    ]
    assert not of_type(messages, "execute_result")  # the answer is in the streamed output
    final = updates[-1]["content"]
    answer = final["data"]["text/plain"]
    # Several updates, each a longer beginning of the answer, at most about 10 a second.
    assert len(texts) >= 3
    assert all(answer.startswith(t) for t in texts)
    assert [len(t) for t in texts] == sorted(len(t) for t in texts)
    assert len(texts) < len(answer) / 8  # not one update per chunk
    # Each update is rendered HTML, never Markdown for the frontend to parse, and says the
    # answer is still arriving; the finished answer does not.
    for message in [*displays, *updates[:-1]]:
        assert set(message["content"]["data"]) == {"text/html", "text/plain"}
        assert message["content"]["data"]["text/html"].endswith(ARRIVING + "</div>")
    assert ARRIVING not in final["data"]["text/html"]
    # The display ends as the finished answer, exactly as a non-streamed one shows.
    plain = run(
        kernel, f"%pizza --no-stream --no-cache -m emu:emu-mini Tell me about 1, 2 and 3 {SLOW}"
    )
    unstreamed = of_type(plain, "execute_result")[0]["content"]
    assert unstreamed["data"] == final["data"]
    assert final["metadata"]["pizzagpt_magic"]["provider"] == "emu"
    assert final["metadata"]["pizzagpt_magic"]["usage"]["completion_tokens"] > 0
    assert not of_type(plain, "update_display_data")  # no stream, no growing display


def test_an_interrupt_mid_stream_keeps_the_text_so_far(kernel, keyed_emulator):
    run(kernel, "%pizza --reset")
    msg_id = kernel.submit(
        "%pizza -m emu:emu-mini --no-cache Tell me a long story "
        "[[fault:chunk-size=4;chunk-delay=0.1]]"
    )
    messages = []
    deadline = time.monotonic() + 20
    while len(of_type(messages, "update_display_data")) < 2:
        assert time.monotonic() < deadline
        try:
            message = kernel.client.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if message["parent_header"].get("msg_id") == msg_id:
            messages.append(message)
    started = time.monotonic()
    kernel.manager.interrupt_kernel()
    messages += kernel.collect([msg_id], timeout=30)[msg_id]
    messages.append({"msg_type": "reply", "content": kernel.reply(msg_id)})
    kernel.seen += messages
    assert time.monotonic() - started < 2
    assert error_of(messages)["ename"] == "KeyboardInterrupt"
    last = of_type(messages, "update_display_data")[-1]["content"]["data"]
    assert "interrupted" in last["text/html"] and last["text/plain"].startswith("**Emulated")
    assert ARRIVING not in last["text/html"]
    assert result_text(run(kernel, f"_pizza_answer == {last['text/plain']!r}")) == "True"
    # Nothing was recorded in the conversation, and the next cell answers.
    assert result_text(run(kernel, "%pizza --history")) == "The conversation is empty."
    after = run(kernel, "%pizza --no-stream -m emu:emu-mini next question")
    assert "next question" in answer_text(after)


def test_a_hostile_stream_is_inert_at_every_update(kernel):
    from hostile import HOSTILE
    from test_render import audit

    text = "\n\n".join(HOSTILE[:12])
    messages = run(
        kernel,
        "%%pizza -m emu:emu-mini --no-cache\n[[echo]]" + text + "[[/echo]] "
        "[[fault:chunk-size=9;chunk-delay=0.002]]",
    )
    shown = [m["content"]["data"] for m in of_type(messages, "display_data", "update_display_data")]
    assert len(shown) >= 2
    for data in shown:
        assert "text/markdown" not in data
        if "text/html" in data:
            assert audit(data["text/html"]) == []


def test_the_key_reaches_no_frontend_message(kernel):
    run(kernel, "%config PizzaMagics")
    run(kernel, "%pizza --models emu")
    run(kernel, "%pizza -m emu:no-such-model hi")
    run(kernel, "import os; os.environ['EMU_API_KEY'] = 'sk-refused-5b9c2d7e'")
    run(kernel, "%pizza -m emu:emu-mini refused")
    run(kernel, f"import os; os.environ['EMU_API_KEY'] = {API_KEY!r}")
    everything = json.dumps(
        [m for m in kernel.seen if "os.environ" not in json.dumps(m.get("content", ""))],
        default=str,
    )
    assert "EMU_API_KEY" in everything  # the refusal names the variable...
    assert API_KEY not in everything and "sk-refused-5b9c2d7e" not in everything  # ...not the key


def test_an_assigned_or_silenced_stream_leaves_no_empty_output(kernel):
    messages = run(kernel, f"x = %pizza -m emu:emu-mini --no-cache Tell me about 4 {SLOW}")
    shown = of_type(messages, "display_data", "update_display_data")
    assert shown and not of_type(messages, "execute_result")
    # Not the cell's result, yet what streamed stays, finished: the answer, without the marker.
    last = shown[-1]["content"]["data"]
    assert ARRIVING not in last["text/html"] and "Tell me about 4" in last["text/plain"]
    assert result_text(run(kernel, "x == " + repr(last["text/plain"]))) == "True"
    # A later display of the same answer is an output of its own cell, as usual.
    again = run(kernel, "x")
    assert "Tell me about 4" in result_text(again)
    silenced = run(kernel, f"%pizza -m emu:emu-mini --no-cache Tell me about 5 {SLOW};")
    assert not of_type(silenced, "display_data", "update_display_data", "execute_result")
