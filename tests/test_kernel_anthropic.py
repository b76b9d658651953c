"""Claude's streamed answers in a real kernel behave as the other providers' do: the display
grows in place and ends with the finished answer, and an interrupt keeps what arrived."""

from __future__ import annotations

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
    kernel = Kernel(
        {
            "PIZZAGPT_URL": emulator.url,
            "ANTHROPIC_BASE_URL": keyed_emulator.url,
            "ANTHROPIC_API_KEY": API_KEY,
        }
    )
    assert error_of(kernel.execute("%load_ext pizzagpt_magic")) is None
    yield kernel
    kernel.shutdown()


def test_a_slow_stream_grows_in_place_then_shows_the_finished_answer(kernel):
    messages = kernel.execute(f"%pizza -m anthropic:emu-claude Tell me about 1, 2 and 3 {SLOW}")
    assert error_of(messages) is None
    displays = of_type(messages, "display_data")
    updates = of_type(messages, "update_display_data")
    texts = [displays[0]["content"]["data"]["text/plain"]] + [
        u["content"]["data"]["text/plain"] for u in updates[:-1]
    ]
    # The output the answer grew in ends as the finished answer, without the marker.
    final = updates[-1]["content"]
    answer = final["data"]["text/plain"]
    assert len(displays) == 1 and len(texts) >= 3
    assert all(answer.startswith(t) for t in texts)
    assert ARRIVING not in final["data"]["text/html"] and not of_type(messages, "execute_result")
    plain = kernel.execute(
        f"%pizza --no-stream --no-cache -m anthropic:emu-claude Tell me about 1, 2 and 3 {SLOW}"
    )
    assert of_type(plain, "execute_result")[0]["content"]["data"] == final["data"]
    meta = final["metadata"]["pizzagpt_magic"]
    assert meta["provider"] == "anthropic" and meta["finish_reason"] == "stop"
    assert meta["usage"]["completion_tokens"] > 0 and "cache_read_input_tokens" in meta["usage"]


def test_an_interrupt_mid_stream_keeps_the_text_so_far(kernel):
    msg_id = kernel.submit(
        "%pizza -m anthropic:emu-claude --no-cache Tell me a long story "
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
    assert time.monotonic() - started < 2
    assert error_of(messages)["ename"] == "KeyboardInterrupt"
    last = of_type(messages, "update_display_data")[-1]["content"]["data"]
    assert "interrupted" in last["text/html"] and last["text/plain"].startswith("**Emulated")
    assert result_text(kernel.execute(f"_pizza_answer == {last['text/plain']!r}")) == "True"
    after = kernel.execute("%pizza --no-stream -m anthropic:emu-claude next question")
    assert "next question" in answer_text(after)
