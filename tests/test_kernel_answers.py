"""A notebook with an answer file, run in real kernels: online, then offline with no key."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

pytestmark = pytest.mark.kernel

CELLS = [
    "%load_ext pizzagpt_magic",
    "import os\nfrom pizzagpt_magic import register_endpoint\n"
    "register_endpoint('local', os.environ['PIZZAGPT_URL'] + '/v1')",
    "%pizza --answers analysis.answers.jsonl",
    "%pizza What is a sensible first plot for monthly sales?",
    "%pizza -m local:emu-mini Which region leads, streamed?",
    "regions = ['North', 'South', 'East']",
    "%%pizza --each regions -o notes\nOne sentence about {item}.",
    "notes",
]


def notebook(cells: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    return nb


def run(nb, folder: Path, env: dict[str, str], monkeypatch) -> nbformat.NotebookNode:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()
    return nb


def saved(nb) -> str:
    """The notebook's outputs as they are saved."""
    return json.dumps([cell.outputs for cell in nb.cells], sort_keys=True, indent=1)


def test_a_rerun_offline_sends_nothing_and_saves_the_same_outputs(emulator, tmp_path, monkeypatch):
    emulator.reset_stats()
    folder = tmp_path / "project"
    folder.mkdir()
    online = run(
        notebook(CELLS),
        folder,
        {"PIZZAGPT_URL": emulator.url, "PIZZAGPT_STORE": str(tmp_path / "one.sqlite3")},
        monkeypatch,
    )
    asked = emulator.requests
    assert asked == 5
    file = folder / "analysis.answers.jsonl"
    assert len(file.read_text(encoding="utf-8").splitlines()) == 5
    first_bytes = file.read_bytes()
    offline = run(
        notebook(CELLS),
        folder,
        {
            "PIZZAGPT_STORE": str(tmp_path / "two.sqlite3"),
            "PIZZAGPT_ANSWERS_ONLY": "1",
        },
        monkeypatch,
    )
    assert emulator.requests == asked  # nothing sent
    assert saved(offline) == saved(online)
    assert file.read_bytes() == first_bytes
    text = saved(online)
    assert "answer file analysis.answers.jsonl" in text
    assert '"seconds"' not in text and '"cached"' not in text and " s, " not in text


def test_a_changed_question_changes_one_line_and_prune_drops_the_old(
    emulator, tmp_path, monkeypatch
):
    folder = tmp_path / "repo"
    folder.mkdir()
    env = {"PIZZAGPT_URL": emulator.url, "PIZZAGPT_STORE": str(tmp_path / "s.sqlite3")}
    run(notebook(CELLS), folder, env, monkeypatch)
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    subprocess.run(["git", "add", "analysis.answers.jsonl"], cwd=folder, check=True)
    changed = [c.replace("monthly sales", "weekly sales") for c in CELLS]
    nb = run(notebook(changed), folder, env, monkeypatch)
    lines = (folder / "analysis.answers.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6  # one new line; the old one stays until pruned
    path = folder / "analysis.ipynb"
    nbformat.write(nb, path)
    from pizzagpt_magic.cli import main

    assert (
        main(["answers", "prune", str(folder / "analysis.answers.jsonl"), "--notebook", str(path)])
        == 0
    )
    diff = subprocess.run(
        ["git", "diff", "--numstat", "analysis.answers.jsonl"],
        cwd=folder,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert diff[:2] == ["1", "1"]


def test_a_missing_answer_offline_fails_the_cell_in_one_line(emulator, tmp_path, monkeypatch):
    folder = tmp_path / "ci"
    folder.mkdir()
    (folder / "analysis.answers.jsonl").write_text("", encoding="utf-8")
    monkeypatch.setenv("PIZZAGPT_URL", emulator.url)
    monkeypatch.setenv("PIZZAGPT_ANSWERS_ONLY", "1")
    emulator.reset_stats()
    with pytest.raises(CellExecutionError) as caught:
        run(notebook(CELLS[:4]), folder, {}, monkeypatch)
    assert "UsageError: No answer to 'What is a sensible first plot" in str(caught.value)
    assert emulator.requests == 0


def test_two_kernels_writing_one_file_lose_nothing(emulator, tmp_path):
    from kernel_helpers import Kernel, error_of

    path = tmp_path / "shared.answers.jsonl"
    env = {"PIZZAGPT_URL": emulator.url, "PIZZAGPT_STORE": "", "PIZZAGPT_ANSWERS": str(path)}
    kernels = [Kernel(env), Kernel(env)]
    try:
        for kernel, side in zip(kernels, ("left", "right")):
            kernel.execute("%load_ext pizzagpt_magic")
            kernel.execute(f"names = [f'{side}-{{n}}' for n in range(30)]")
        # Both batches run at once, each writing the file as its answers arrive.
        cells = [
            (kernel, kernel.submit("%%pizza --each names -o out\nSay hello to {item}"))
            for kernel in kernels
        ]
        for kernel, msg_id in cells:
            messages = kernel.collect([msg_id], timeout=120)[msg_id]
            reply = {"msg_type": "reply", "content": kernel.reply(msg_id)}
            assert error_of([*messages, reply]) is None
    finally:
        for kernel in kernels:
            kernel.shutdown()
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    questions = {m["content"] for line in lines for m in line["messages"]}
    assert len(lines) == 60
    assert {
        f"Say hello to {side}-{n}" for side in ("left", "right") for n in range(30)
    } == questions
