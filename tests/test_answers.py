"""The answer file: lines, lookups before the store, answers-only, atomic writes, two writers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from keys import API_KEY

from pizzagpt_magic import answers
from pizzagpt_magic.api import ask, ask_async
from pizzagpt_magic.batch import ask_many
from pizzagpt_magic.errors import AnswerMissingError, BatchError
from pizzagpt_magic.store import Store


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def record(key: str, text: str = "an answer") -> dict:
    return {
        "text": text,
        "key": key,
        "provider": "pizzagpt",
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"question {key}"}],
    }


# -- the file -----------------------------------------------------------------------------------


def test_lines_are_sorted_with_fields_in_a_fixed_order(tmp_path):
    path = tmp_path / "a.answers.jsonl"
    file = answers.AnswerFile(path)
    for key in ("c", "a", "b"):
        file.add(record(key))
    file.flush()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "b", "c"]
    assert list(json.loads(lines[0])) == ["key", "provider", "model", "messages", "text"]
    assert all(line.count("\n") == 0 for line in lines)


def test_an_unchanged_rerun_does_not_write(tmp_path):
    path = tmp_path / "a.jsonl"
    first = answers.AnswerFile(path)
    first.add(record("k", "multi\nline answer"))
    first.flush()
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    time.sleep(0.01)
    again = answers.AnswerFile(path)
    again.add(record("k", "multi\nline answer"))
    assert again.flush() is False
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_a_bad_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"key": "k", "text": "x"}\nnot json\n', encoding="utf-8")
    with pytest.raises(answers.ConfigurationError, match=r"a\.jsonl is not valid at line 2"):
        answers.AnswerFile(path).get("k")


def test_lookups_do_not_reread_an_unchanged_file(tmp_path, monkeypatch):
    path = tmp_path / "a.jsonl"
    file = answers.AnswerFile(path)
    file.add(record("k"))
    file.flush()
    reads = []
    original = answers.AnswerFile._read
    monkeypatch.setattr(answers.AnswerFile, "_read", lambda self: reads.append(1) or original(self))
    for _ in range(100):
        assert file.get("k")["text"] == "an answer"
    assert reads == []


WRITER = textwrap.dedent(
    """
    import sys
    from pizzagpt_magic.answers import AnswerFile
    path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    file = AnswerFile(path)
    for n in range(count):
        file.add({"key": f"{name}-{n:04d}", "text": "x" * 2000, "provider": "p", "model": "m"})
        file.flush()
    """
)


def test_two_processes_writing_lose_nothing(tmp_path):
    path = tmp_path / "shared.jsonl"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, "60"])
        for name in ("left", "right")
    ]
    for writer in writers:
        assert writer.wait(timeout=120) == 0
    keys = [line["key"] for line in lines_of(path)]
    assert len(keys) == 120 and keys == sorted(keys)
    # The lock is not beside the file, where it would be committed with the notebook.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.jsonl"]


def test_a_kill_during_writes_leaves_a_valid_file(tmp_path):
    path = tmp_path / "killed.jsonl"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "k", "100000"])
    deadline = time.monotonic() + 30
    while not path.exists() or len(path.read_bytes()) < 200_000:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    lines = lines_of(path)  # every line parses: the old file or the new one, never half
    assert len(lines) >= 90
    assert [line["key"] for line in lines] == sorted(line["key"] for line in lines)


# -- lookups ------------------------------------------------------------------------------------


def test_the_file_is_read_before_the_store_and_gets_every_answer(emu, tmp_path):
    path = tmp_path / "nb.answers.jsonl"
    store = Store(tmp_path / "store.sqlite3")
    first = ask("What is 6 x 7?", store=store, answers=path)
    assert emu.requests == 1
    (line,) = lines_of(path)
    assert line["text"] == first and line["model"] == "gpt-4o-mini"
    # Another store, no network needed: the file answers.
    again = ask("What is 6 x 7?", store=None, answers=path, answers_only=True)
    assert again == first and emu.requests == 1
    # An answer the store had (asked without the file) reaches the file when asked with it.
    ask("Another question", store=store)
    assert emu.requests == 2
    ask("Another question", store=store, answers=path)
    assert emu.requests == 2 and len(lines_of(path)) == 2
    store.close()


def test_answers_only_fails_in_one_line_and_sends_nothing(emu, tmp_path):
    path = tmp_path / "nb.jsonl"
    with pytest.raises(AnswerMissingError) as caught:
        ask("A question never asked " + "x" * 100, store=None, answers=path, answers_only=True)
    message = str(caught.value)
    assert "\n" not in message and "nb.jsonl" in message and "nothing is sent" in message
    assert "A question never asked" in message and len(message) < 250
    assert emu.requests == 0


def test_answers_only_from_the_environment(emu, tmp_path, monkeypatch):
    path = tmp_path / "env.jsonl"
    ask("Asked once", store=None, answers=path)
    monkeypatch.setenv("PIZZAGPT_ANSWERS", str(path))
    monkeypatch.setenv("PIZZAGPT_ANSWERS_ONLY", "1")
    assert ask("Asked once", store=None) and emu.requests == 1
    with pytest.raises(AnswerMissingError):
        ask("Not asked", store=None)
    assert emu.requests == 1


def test_a_line_is_found_whatever_server_answered(emulator, tmp_path, monkeypatch):
    from pizzagpt_magic.emulator import EmulatorThread

    path = tmp_path / "moved.jsonl"
    monkeypatch.setenv("PIZZAGPT_URL", emulator.url)
    asked = ask("Where does this live?", store=None, answers=path)
    with EmulatorThread() as elsewhere:
        monkeypatch.setenv("PIZZAGPT_URL", elsewhere.url)
        assert ask("Where does this live?", store=None, answers=path) == asked
        assert elsewhere.requests == 0
    assert emulator.url not in path.read_text(encoding="utf-8")


def test_no_key_reaches_the_file(endpoint, tmp_path):
    path = tmp_path / "keyed.jsonl"
    ask("Keyed question", model="emu:emu-mini", store=None, answers=path)
    ask("Keyed question 2", model="emu:emu-mini", store=None, answers=path, stream=False)
    data = path.read_bytes()
    assert len(lines_of(path)) == 2
    assert API_KEY.encode() not in data and b"Bearer" not in data
    assert endpoint.url.encode() not in data


def test_a_batch_reads_and_writes_the_file_once(emu, tmp_path, monkeypatch):
    path = tmp_path / "batch.jsonl"
    writes = []
    original = answers.AnswerFile._replace
    monkeypatch.setattr(
        answers.AnswerFile, "_replace", lambda self, text: writes.append(1) or original(self, text)
    )
    questions = [f"Row {n}" for n in range(40)]
    first = ask_many(questions, store=None, answers=path, progress=False)
    assert emu.requests == 40 and len(lines_of(path)) == 40
    assert len(writes) <= 3  # at the first answer, at most every half second, at the end
    again = ask_many(questions, store=None, answers=path, answers_only=True, progress=False)
    assert again == first and emu.requests == 40
    with pytest.raises(BatchError) as caught:
        ask_many(
            questions + ["New row"], store=None, answers=path, answers_only=True, progress=False
        )
    assert list(caught.value.errors) == [40] and emu.requests == 40


def test_refresh_replaces_the_line(emu, tmp_path):
    from pizzagpt_magic.answers import settings_for, using
    from pizzagpt_magic.loop import run_sync

    path = tmp_path / "refresh.jsonl"
    ask("Refresh me", store=None, answers=path)
    (before,) = lines_of(path)
    path.write_text(json.dumps({**before, "text": "edited by hand"}) + "\n", encoding="utf-8")
    answers._FILES.clear()
    assert ask("Refresh me", store=None, answers=path) == "edited by hand"
    with using(settings_for(path, refresh=True)):
        fresh = run_sync(ask_async("Refresh me", store=None))
    assert emu.requests == 2 and fresh == before["text"]
    assert lines_of(path) == [before]


# -- review -------------------------------------------------------------------------------------


def notebook_with(keys: list[str]) -> dict:
    output = {
        "output_type": "execute_result",
        "execution_count": 1,
        "data": {"text/plain": "x"},
        "metadata": {"pizzagpt_magic": {"answer_key": keys[0]}},
    }
    batch = {
        "output_type": "execute_result",
        "execution_count": 2,
        "data": {"text/plain": "y"},
        "metadata": {"pizzagpt_magic": {"answer_keys": keys[1:]}},
    }
    return {
        "cells": [{"cell_type": "code", "source": "", "outputs": [output, batch]}],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def test_prune_and_diff_on_the_command_line(tmp_path, capsys):
    from pizzagpt_magic.cli import main

    path = tmp_path / "a.jsonl"
    file = answers.AnswerFile(path)
    for key in ("k1", "k2", "k3", "k4"):
        file.add(record(key))
    file.flush()
    old = tmp_path / "old.jsonl"
    old.write_bytes(path.read_bytes())
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text(json.dumps(notebook_with(["k1", "k3", "k4"])), encoding="utf-8")
    assert main(["answers", "prune", str(path), "--notebook", str(notebook)]) == 0
    assert "Dropped 1 unused answers" in capsys.readouterr().out
    assert [line["key"] for line in lines_of(path)] == ["k1", "k3", "k4"]
    assert main(["answers", "diff", str(old), str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["- k2  question k2"]
    cleared = tmp_path / "cleared.ipynb"
    cleared.write_text(
        json.dumps({**notebook_with(["k1"]), "cells": [{"cell_type": "code", "outputs": []}]}),
        encoding="utf-8",
    )
    assert main(["answers", "prune", str(path), "--notebook", str(cleared)]) == 1
    assert "has no saved outputs" in capsys.readouterr().err
