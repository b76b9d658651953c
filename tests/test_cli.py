"""The pizzagpt command line: ask, its errors, and the emulator subcommand."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from keys import API_KEY

from pizzagpt_magic.cli import main


def test_ask_prints_the_answer(emu, capsys):
    assert main(["ask", "what", "is", "2 + 3?"]) == 0
    out = capsys.readouterr().out
    assert "> what is 2 + 3?" in out and "sum: 5" in out
    assert emu.questions == ["what is 2 + 3?"]


def test_ask_reads_stdin(emu, monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("from\nstdin\n"))
    assert main(["ask", "-"]) == 0
    assert emu.questions == ["from\nstdin\n"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("region,units\nNorth,251\n"))
    assert main(["ask", "Which", "region", "leads?", "-", "Answer", "briefly."]) == 0
    assert emu.questions[-1] == "Which region leads?\n\nregion,units\nNorth,251\n\nAnswer briefly."
    assert main(["ask", "-", "and", "-"]) == 2
    assert "standard input can be read once" in capsys.readouterr().err
    assert len(emu.questions) == 2


def test_ask_options(emu, capsys):
    assert main(["ask", "-s", "Be brief", "-m", "gpt-4o-mini", "--timeout", "5", "hi"]) == 0
    assert emu.questions[-1] == "System: Be brief\nUser: hi\nAssistant:"


def test_ask_json_and_code(emu, capsys):
    capsys.readouterr()
    assert main(["ask", "-f", "json", '[[echo]]Sure: {"a": [1]}[[/echo]]']) == 0
    assert json.loads(capsys.readouterr().out) == {"a": [1]}
    assert main(["ask", "-f", "code", "[[echo]]Run:\n```sh\nls -l\n```\n[[/echo]]"]) == 0
    assert capsys.readouterr().out == "ls -l\n"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["ask", "[[fault:status=500]]", "--retries", "0"], "HTTP 500"),
        (["ask", "-m", "gpt-9", "hi"], "valid models"),
        (["ask", "[[fault:misuse]]"], "Misuse detected"),
        (["ask", "-f", "json", "[[echo]]no structure here[[/echo]]"], "not JSON"),
        (["ask", " "], "empty"),
    ],
)
def test_failures_are_one_line_on_stderr(emu, capsys, argv, words):
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pizzagpt: ") and words in lines[0]


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["ask"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_console_script_and_module(emu):
    env = {**os.environ, "PIZZAGPT_URL": emu.url}
    script = shutil.which("pizzagpt", path=os.path.dirname(sys.executable))
    assert script, "the console script is installed beside the interpreter"
    for command in ([script], [sys.executable, "-m", "pizzagpt_magic"]):
        result = subprocess.run(
            command + ["ask", "hello from a shell"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "> hello from a shell" in result.stdout
    failed = subprocess.run(
        [script, "ask", "--base-url", "http://127.0.0.1:9", "--retries", "0", "hi"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr and failed.stderr.startswith("pizzagpt: Cannot reach")


def test_ask_an_endpoint_streams_once(endpoint, capsys):
    url = f"{endpoint.url}/v1"
    assert (
        main(["ask", "--base-url", url, "--api-key-env", "EMU_API_KEY", "-m", "emu-mini", "hi"])
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("Emulated emu-mini answer") == 1 and out.endswith("\n")
    assert endpoint.chat_requests[-1]["body"]["stream"] is True
    # A named endpoint, parameters, no streaming.
    argv = ["ask", "-m", "emu:emu-mini", "--temperature", "0.3", "--max-tokens", "3", "--no-stream"]
    assert main([*argv, "hello there"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "**Emulated emu-mini answer**"
    assert "cut at the token limit" in captured.err
    body = endpoint.chat_requests[-1]["body"]
    assert body["temperature"] == 0.3 and body["max_tokens"] == 3 and "stream" not in body
    # A model Pizzagpt does not serve, with --base-url: that URL is an endpoint, no key.
    assert main(["ask", "--base-url", url, "-m", "emu-mini", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pizzagpt: custom needs an API key") and API_KEY not in err


def test_ask_endpoint_errors(endpoint, capsys, monkeypatch):
    url = f"{endpoint.url}/v1"
    monkeypatch.delenv("EMU_API_KEY")
    argv = ["ask", "--base-url", url, "--api-key-env", "EMU_API_KEY", "-m", "emu-mini", "hi"]
    assert main(argv) == 1
    assert capsys.readouterr().err == (
        "pizzagpt: custom needs an API key: set the environment variable EMU_API_KEY\n"
    )
    assert endpoint.requests == 0
    assert main(["ask", "--temperature", "0.5", "hi"]) == 1
    assert "Pizzagpt takes no temperature" in capsys.readouterr().err
    assert main(["ask", "--api-key-env", "X", "hi"]) == 1
    assert "--api-key-env goes with --base-url" in capsys.readouterr().err


def test_ask_claude_at_another_address(claude, capsys, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_BASE_URL")
    monkeypatch.setenv("OTHER_KEY", API_KEY)
    argv = ["ask", "-m", "anthropic:emu-claude", "--base-url", claude.url, "hi"]
    assert main(argv) == 0
    assert "Emulated emu-claude answer" in capsys.readouterr().out
    # Another key variable: the same API at that address, with that key.
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    assert main([*argv[:-1], "--api-key-env", "OTHER_KEY", "hi"]) == 0
    assert "Emulated emu-claude answer" in capsys.readouterr().out
    assert len(claude.message_requests) == 2


def test_models_command(endpoint, capsys, monkeypatch):
    assert main(["models", "emu"]) == 0
    assert capsys.readouterr().out == "emu: emu:emu-large, emu:emu-mini, emu:llama3.2:1b\n"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["models", "openai"]) == 0
    assert "openai: unreachable: openai needs an API key" in capsys.readouterr().out
    assert main(["models", "nope"]) == 2


def test_ask_with_a_schema(emu, capsys, tmp_path):
    pytest.importorskip("jsonschema")
    capsys.readouterr()
    assert main(["ask", "--schema", "sentiment pos|neg|neu, score int", "neg", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == {"sentiment": "neg", "score": 2}
    shape = tmp_path / "shape.json"
    shape.write_text(
        json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    )
    assert main(["ask", "--schema", f"@{shape}", "seven 7"]) == 0
    assert json.loads(capsys.readouterr().out) == {"n": 7}
    assert main(["ask", "--schema", "a, b integer", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pizzagpt: schema spec, field 2") and err.count("\n") == 1
    assert main(["ask", "--schema", "pos|neg x", "[[fault:badjson]] hi"]) == 1
    assert len(emu.questions) == 2  # nothing sent for a bad spec
