"""A real gpt4free provider class through the package, offline: g4f's own OpenAI template,
pointed at the emulator (g4f is in the test extra)."""

from __future__ import annotations

import pytest
from test_magics import cell

from pizzagpt_magic import api
from pizzagpt_magic.loop import run_sync

pytest.importorskip("g4f")  # in the test extra
import g4f_local  # noqa: E402


@pytest.fixture
def provider(emu, monkeypatch):
    monkeypatch.setattr(g4f_local.EmulatorProvider, "base_url", f"{emu.url}/v1")
    return emu


def test_a_g4f_class_streams_and_its_response_objects_become_metadata(provider):
    chunks = []
    completion = run_sync(
        api.complete(
            "What is 2 + 3?",
            model="g4f_local.EmulatorProvider:emu-mini",
            on_text=chunks.append,
            max_tokens=50,
            temperature=0.5,
        )
    )
    assert len(chunks) > 3 and "".join(chunks) == completion.text
    assert completion.text.startswith("**Emulated emu-mini answer**")
    # g4f's own FinishReason and Usage objects, understood; nothing else shown as text.
    assert completion.finish_reason == "stop"
    assert completion.usage == {"prompt_tokens": 5, "completion_tokens": 30, "total_tokens": 35}
    body = provider.chat_requests[-1]["body"]
    assert body["max_tokens"] == 50 and body["temperature"] == 0.5 and body["stream"] is True


def test_a_g4f_class_from_the_magic(provider, shell, capsys):
    answer = cell(shell, "%pizza -m g4f_local.EmulatorProvider What is 6 times 7?")
    assert "6, 7" in answer.text and answer.completion.provider == "g4f_local.EmulatorProvider"
    assert capsys.readouterr().out.count("Emulated emu-mini answer") == 1  # streamed, once
    assert provider.chat_requests[-1]["body"]["model"] == "emu-mini"  # the class's default
