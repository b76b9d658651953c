"""Model options, aliases and saved prompts in real kernels: what one kernel saves, a new kernel
uses, and a saved prompt sends the same bytes there (so the store answers it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from kernel_helpers import Kernel, error_of, result_text

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernel-prompts")
    return {
        "PIZZAGPT_CONFIG": str(root / "config"),
        "PIZZAGPT_STORE": str(root / "store.sqlite3"),
    }


def start(emulator, folders) -> Kernel:
    kernel = Kernel({"PIZZAGPT_URL": emulator.url, **folders})
    setup = (
        "%load_ext pizzagpt_magic\n"
        f"%config PizzaMagics.endpoints = {{'emu': {{'base_url': '{emulator.url}/v1'}}}}\n"
        "%config PizzaMagics.stream = False"
    )
    assert error_of(kernel.execute(setup)) is None
    return kernel


@pytest.fixture(scope="module")
def kernel(emulator, folders):
    kernel = start(emulator, folders)
    yield kernel
    kernel.shutdown()


def ok(kernel: Kernel, code: str) -> list:
    messages = kernel.execute(code)
    error = error_of(messages)
    assert error is None, error
    return messages


def failure(kernel: Kernel, code: str) -> str:
    error = error_of(kernel.execute(code))
    assert error is not None and error["ename"] == "UsageError", error
    assert "\n" not in error["evalue"]
    return error["evalue"]


def test_options_arrive_in_the_body_as_json(kernel, emulator):
    emulator.reset_stats()
    ok(kernel, """%pizza -m emu:emu-mini -O seed=7 -O stop='["x"]' -O top_p=0.5 hello""")
    raw = emulator.chat_requests[-1]["raw"]
    body = json.loads(raw)
    assert body["seed"] == 7 and body["stop"] == ["x"] and body["top_p"] == 0.5
    assert b'"seed": 7, "stop": ["x"], "top_p": 0.5' in raw  # sorted, after the owned keys


def test_refused_keys_and_pizzagpt_refusing_options(kernel, emulator):
    emulator.reset_stats()
    assert "set by pizzagpt_magic itself" in failure(kernel, "%pizza -m emu:emu-mini -O model=x hi")
    assert "names a credential" in failure(kernel, "%pizza -m emu:emu-mini -O api_key=k hi")
    assert "Pizzagpt takes no model options (seed)" in failure(kernel, "%pizza -O seed=7 hi")
    assert "-O KEY=VALUE (capital O)" in failure(kernel, "%pizza -o seed=7 hi")
    assert emulator.requests == 0


def test_an_alias_saved_in_one_kernel_works_in_a_new_one(kernel, emulator, folders):
    ok(kernel, "%pizza --alias quick=emu:emu-mini -O seed=11 --max-tokens 50")
    fresh = start(emulator, folders)
    try:
        emulator.reset_stats()
        ok(fresh, "%pizza -m quick alias in a new kernel")
        body = emulator.chat_requests[-1]["body"]
        assert body["model"] == "emu-mini" and body["seed"] == 11 and body["max_tokens"] == 50
        listed = result_text(ok(fresh, "%pizza --aliases"))
        assert "quick = emu:emu-mini" in listed
    finally:
        fresh.shutdown()


def test_a_saved_prompt_sends_the_same_bytes_in_a_new_kernel(kernel, emulator, folders):
    ok(
        kernel,
        "%%pizza --save brief -m emu:emu-mini -s 'Reply in {lang}.' -O seed=3 "
        "-O stop='[\"\\n\\n\"]' --temperature 0.4\nSummarise {doc}:\n{input}",
    )
    ok(kernel, "doc = 'the minutes'; lang = 'Italian'")
    emulator.reset_stats()
    first = ok(kernel, "%pizza -t brief in two lines")
    assert emulator.requests == 1
    sent = emulator.chat_requests[-1]["raw"]
    body = json.loads(sent)
    assert body["messages"][-1]["content"] == "Summarise the minutes:\nin two lines"
    assert body["messages"][0]["content"] == "Reply in Italian."
    assert body["seed"] == 3 and body["stop"] == ["\n\n"] and body["temperature"] == 0.4
    fresh = start(emulator, folders)
    try:
        ok(fresh, "doc = 'the minutes'; lang = 'Italian'")
        again = ok(fresh, "_r = %pizza -t brief in two lines\n_r.completion.cached")
        assert result_text(again) == "True"  # the store answered: same cache key
        assert emulator.requests == 1
        ok(fresh, "%pizza -t brief --no-cache in two lines")
        assert emulator.requests == 2
        assert emulator.chat_requests[-1]["raw"] == sent  # byte for byte
        assert result_text(first).split("\n")[0] in result_text(
            ok(fresh, "%pizza -t brief in two lines")
        )
    finally:
        fresh.shutdown()


def test_input_and_a_missing_placeholder(kernel, emulator):
    ok(kernel, "%%pizza --save ask-about -m emu:emu-mini\nAbout {subject}: {input}")
    emulator.reset_stats()
    assert "'subject'" in failure(kernel, "%pizza -t ask-about why")
    assert "needs {input}" in failure(kernel, "subject = 'TOML'\n%pizza -t ask-about")
    assert emulator.requests == 0  # nothing was sent
    ok(kernel, "%%pizza -t ask-about\nwhy {subject}?")
    assert emulator.chat_requests[-1]["body"]["messages"][-1]["content"] == (
        "About TOML: why TOML?"
    )


def test_a_saved_each_with_a_schema_over_a_dataframe(kernel, emulator):
    ok(
        kernel,
        '%%pizza --save rate -m emu:emu-mini --concurrency 2 --schema "stars int, reason" '
        "-O seed=5\nRate: {item.review}",
    )
    ok(kernel, "import pandas as pd\nreviews = pd.DataFrame({'review': ['good', 'bad', 'fine']})")
    emulator.reset_stats()
    ok(kernel, "%pizza -t rate --each reviews -o rated")
    asked = sorted(r["body"]["messages"][-1]["content"] for r in emulator.chat_requests)
    assert [a.split("\n")[0] for a in asked] == ["Rate: bad", "Rate: fine", "Rate: good"]
    assert all(r["body"]["seed"] == 5 for r in emulator.chat_requests)
    assert all("response_format" in r["body"] for r in emulator.chat_requests)
    typed = result_text(
        ok(
            kernel,
            "type(rated).__name__, list(rated.columns), str(rated.stars.dtype), "
            "bool(rated._error.isna().all())",
        )
    )
    assert typed == "('DataFrame', ['stars', 'reason', '_error'], 'Int64', True)"


def test_command_line_prompts_list_and_ask_t(kernel, emulator, folders):
    ok(kernel, "%pizza --save cli-sum -m emu:emu-mini Summarise {text}.")
    env = {**os.environ, **folders, "PIZZAGPT_URL": emulator.url}
    run = [sys.executable, "-m", "pizzagpt_magic"]
    listed = subprocess.run(
        [*run, "prompts", "list"], capture_output=True, text=True, env=env, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert any(
        line.split()[:2] == ["cli-sum", "emu:emu-mini"] for line in listed.stdout.splitlines()
    )
    emulator.reset_stats()
    answered = subprocess.run(
        [
            *run,
            "ask",
            "-t",
            "cli-sum",
            "--var",
            "text=the budget",
            "-m",
            "emu-mini",
            "--base-url",
            f"{emulator.url}/v1",
            "--no-stream",
            "--no-cache",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert answered.returncode == 0, answered.stderr
    assert "Summarise the budget." in answered.stdout
    assert emulator.chat_requests[-1]["body"]["messages"][-1]["content"] == "Summarise the budget."
