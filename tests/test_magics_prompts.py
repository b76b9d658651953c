"""%pizza with model options (-O), aliases (--alias, --aliases, -m NAME) and saved prompts
(--save, -t, --prompts), in a fresh shell against the emulator."""

from __future__ import annotations

import pytest
from test_magics import cell, failing, magics

from pizzagpt_magic.prompts import aliases_path, load_prompt, prompt_path


@pytest.fixture(autouse=True)
def config(tmp_path, monkeypatch):
    folder = tmp_path / "config"
    monkeypatch.setenv("PIZZAGPT_CONFIG", str(folder))
    return folder


def test_options_go_into_the_body_as_json(shell, endpoint):
    cell(shell, """%pizza --no-stream -m emu:emu-mini -O seed=7 -O stop='["x"]' -O user=ana hi""")
    body = endpoint.chat_requests[-1]["body"]
    assert body["seed"] == 7 and body["stop"] == ["x"] and body["user"] == "ana"
    # The same options in another order: the same request, from the cache.
    answer = cell(
        shell, """%pizza --no-stream -m emu:emu-mini -O user=ana -O stop='["x"]' -O seed=7 hi"""
    )
    assert answer.completion.cached and endpoint.requests == 1
    cell(shell, "%pizza --no-stream -m emu:emu-mini -O seed=7.0 -O stop='[\"x\"]' -O user=ana hi")
    assert endpoint.requests == 2  # 7.0 is not 7


@pytest.mark.parametrize("key", ["model", "messages", "stream", "tools"])
def test_owned_keys_are_refused(shell, endpoint, key):
    assert "set by pizzagpt_magic itself" in failing(shell, f"%pizza -m emu:emu-mini -O {key}=1 hi")
    assert endpoint.requests == 0


def test_credentials_and_malformed_options_are_refused(shell, endpoint):
    assert "names a credential" in failing(shell, "%pizza -m emu:emu-mini -O api_key=sk-1 hi")
    message = failing(shell, "%pizza -m emu:emu-mini -O seed hi")
    assert "KEY=VALUE" in message
    assert endpoint.requests == 0


def test_lowercase_o_with_an_equals_sign_hints_at_capital_o(shell, endpoint):
    message = failing(shell, "%pizza -m emu:emu-mini -o seed=7 hi")
    assert "-O KEY=VALUE (capital O)" in message
    assert endpoint.requests == 0


def test_pizzagpt_refuses_options_before_sending(shell, emu):
    message = failing(shell, "%pizza -O seed=7 hi")
    assert "Pizzagpt takes no model options (seed)" in message
    assert emu.requests == 0


def test_alias_then_m(shell, endpoint, config, capsys):
    cell(shell, "%pizza --alias fast=emu:emu-mini -O seed=3 --temperature 0.2 --max-tokens 40")
    assert "Alias 'fast': emu:emu-mini" in capsys.readouterr().out
    assert 'model = "emu:emu-mini"' in aliases_path().read_text()
    cell(shell, "%pizza --no-stream -m fast hi")
    body = endpoint.chat_requests[-1]["body"]
    assert body["model"] == "emu-mini" and body["seed"] == 3
    assert body["temperature"] == 0.2 and body["max_tokens"] == 40
    # The question's options win; null drops the alias's.
    cell(shell, "%pizza --no-stream -m fast --temperature 0.5 -O seed=null hello")
    body = endpoint.chat_requests[-1]["body"]
    assert body["temperature"] == 0.5 and "seed" not in body and body["max_tokens"] == 40
    listing = cell(shell, "%pizza --aliases")
    assert "fast = emu:emu-mini" in listing.plain and "seed=3" in listing.plain
    # The settings go below an alias: its temperature stays.
    magics(shell).temperature = 1.5
    cell(shell, "%pizza --no-stream -m fast once more")
    assert endpoint.chat_requests[-1]["body"]["temperature"] == 0.2
    # The alias as the default model.
    shell.run_line_magic("config", "PizzaMagics.model = 'fast'")
    assert magics(shell).model == "fast"
    cell(shell, "%pizza --no-stream default model")
    assert endpoint.chat_requests[-1]["body"]["seed"] == 3
    cell(shell, "%pizza --alias fast=")
    assert "Removed the alias 'fast'" in capsys.readouterr().out
    assert "No alias named 'fast'" in failing(shell, "%pizza --alias fast=")


def test_alias_errors(shell, endpoint):
    assert "NAME=MODEL" in failing(shell, "%pizza --alias fast")
    assert "Pizzagpt takes no model options" in failing(
        shell, "%pizza --alias p=gpt-4o-mini -O seed=1"
    )
    assert "names a credential" in failing(
        shell, "%pizza --alias e=emu:emu-mini -O Authorization=x"
    )
    assert "takes no question" in failing(shell, "%pizza --alias e=emu:emu-mini what?")
    assert not aliases_path().exists()


def test_save_then_template(shell, endpoint, capsys):
    cell(
        shell,
        "%%pizza --save tsum -m emu:emu-mini -s 'Answer in {lang}.' -f text -O seed=5 "
        "--temperature 0.1\nSummarise {report}:\n{input}\n",
    )
    assert "Saved the prompt 'tsum'" in capsys.readouterr().out
    assert endpoint.requests == 0  # saving asks nothing
    saved = load_prompt("tsum")
    assert saved.prompt == "Summarise {report}:\n{input}"  # placeholders unexpanded
    assert saved.system == "Answer in {lang}." and saved.format == "text"
    assert saved.options == {"seed": 5, "temperature": 0.1}
    shell.user_ns.update(report="the Q3 report", lang="French")
    answer = cell(shell, "%pizza --no-stream -t tsum focus on costs")
    body = endpoint.chat_requests[-1]["body"]
    assert body["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Summarise the Q3 report:\nfocus on costs"},
    ]
    assert body["seed"] == 5 and body["temperature"] == 0.1 and answer.shown_as == "text"
    # The cell magic: the body is the input; options given override the saved ones.
    cell(shell, "%%pizza --no-stream -t tsum -O seed=6 -f markdown\nfocus on {lang}")
    body = endpoint.chat_requests[-1]["body"]
    assert body["seed"] == 6 and body["messages"][-1]["content"].endswith("focus on French")
    listing = cell(shell, "%pizza --prompts")
    assert listing.plain.split() == ["tsum", "emu:emu-mini", "Summarise", "{report}:"]


def test_missing_placeholder_and_input(shell, endpoint):
    cell(shell, "%%pizza --save t -m emu:emu-mini\nTell me about {topic}: {input}")
    message = failing(shell, "%pizza -t t quickly")
    assert "'topic'" in message
    assert "needs {input}" in failing(shell, "%pizza -t t")
    assert endpoint.requests == 0  # nothing was sent
    assert "No saved prompt named 'nope'" in failing(shell, "%pizza -t nope hi")


def test_a_saved_prompt_without_input_appends_the_question(shell, endpoint):
    cell(shell, "%pizza --save brief -m emu:emu-mini Be brief.")
    cell(shell, "%pizza --no-stream -t brief what is TOML")
    assert endpoint.chat_requests[-1]["body"]["messages"][-1]["content"] == (
        "Be brief.\n\nwhat is TOML"
    )
    cell(shell, "%pizza --no-stream -t brief")
    assert endpoint.chat_requests[-1]["body"]["messages"][-1]["content"] == "Be brief."


def test_per_run_flags_are_not_saved(shell, endpoint):
    shell.user_ns["items"] = [1, 2]
    for flags, named in (
        ("--each items", "--each"),
        ("-o x", "-o"),
        ("-c", "-c"),
        ("--no-cache", "--no-cache"),
        ("--insert", "--insert"),
    ):
        message = failing(shell, f"%%pizza --save s {flags}\nhi {{item}}")
        assert message.startswith(f"{named} is given with each run")
    assert "Nothing to save" in failing(shell, "%pizza --save s")
    assert "Pizzagpt takes no model options" in failing(shell, "%pizza --save s -O seed=1 hi")
    assert "names a credential" in failing(
        shell, "%pizza --save s -m emu:emu-mini -O x-api-key=1 hi"
    )
    assert not prompt_path("s").exists()


def test_a_saved_each_prompt_over_a_list(shell, endpoint):
    cell(shell, "%%pizza --save rate -m emu:emu-mini --concurrency 2\nRate {item}.")
    shell.user_ns["reviews"] = ["good", "bad"]
    cell(shell, "%pizza -t rate --each reviews -o rated --no-stream")
    asked = sorted(m["body"]["messages"][-1]["content"] for m in endpoint.chat_requests)
    assert asked == ["Rate bad.", "Rate good."]
    assert len(shell.user_ns["rated"]) == 2


def test_an_invalid_file_is_a_one_line_usage_error(shell, config):
    path = config / "prompts" / "bad.toml"
    path.parent.mkdir(parents=True)
    path.write_text('prompt = "hi"\nformat = "yaml"\n')
    message = failing(shell, "%pizza -t bad")
    assert message.startswith(f"{path}: format: must be one of")
    assert failing(shell, "%pizza --prompts").startswith(f"{path}: format")


def test_the_options_setting_is_the_lowest_layer(shell, endpoint):
    shell.run_line_magic("config", "PizzaMagics.options = {'seed': 1, 'user': 'nb'}")
    assert magics(shell).options == {"seed": 1, "user": "nb"}
    cell(shell, "%pizza --alias a=emu:emu-mini -O seed=2")
    cell(shell, "%pizza --no-stream -m a -O user=cell hi")
    body = endpoint.chat_requests[-1]["body"]
    assert body["seed"] == 2 and body["user"] == "cell"
    assert "Pizzagpt takes no model options" in failing(shell, "%pizza hi")
    with pytest.raises(Exception, match="set by pizzagpt_magic itself"):
        magics(shell).options = {"model": "x"}
