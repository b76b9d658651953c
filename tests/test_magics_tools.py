"""%pizza --tools: options, scope, display, metadata, cache and refusals, in a fresh shell."""

from __future__ import annotations

import pandas as pd
import pytest
from test_magics import cell, failing, magics

from pizzagpt_magic.magics.parsing import split_options


@pytest.fixture
def frames(shell):
    shell.user_ns["sales"] = pd.DataFrame(
        {"region": ["n", "s", "n", None], "units": [3, 4, None, 1]}
    )
    shell.user_ns["other"] = pd.DataFrame({"secret": [42]})
    return shell


def tools_of(request):
    return [t["function"]["name"] for t in request["body"].get("tools", [])]


def test_tools_answers_with_a_looked_at_line(frames, endpoint):
    answer = cell(
        frames,
        "%pizza --no-stream --tools -m emu:emu-mini How many nulls in {sales}? "
        '[[tool:missing({"name": "sales"})]] [[tool:list_variables({})]]',
    )
    assert "| units | 1 | 25.0000% |" in answer.text
    # Only the variable the question names is visible.
    assert "- sales: DataFrame" in answer.text and "other" not in answer.text
    assert "missing" in tools_of(endpoint.chat_requests[0])
    bundle, metadata = answer._repr_mimebundle_()
    assert answer.looked_at() == "looked at: missing(sales), list_variables()"
    html = bundle["text/html"]
    assert html.startswith("<details><summary><small>looked at: missing(sales), list_variables()")
    assert "characters</li>" in html
    assert bundle["text/plain"].startswith("[looked at: missing(sales), list_variables()]")
    calls = metadata["pizzagpt_magic"]["tool_calls"]
    assert [c["name"] for c in calls] == ["missing", "list_variables"]
    assert all(isinstance(c["chars"], int) for c in calls)


def test_claude_takes_tools_as_tool_use(frames, claude):
    answer = cell(
        frames,
        "%pizza --no-stream --tools -m anthropic:emu-claude How many nulls in {sales}? "
        '[[tool:missing({"name": "sales"})]] [[tool:list_variables({})]]',
    )
    assert "| units | 1 | 25.0000% |" in answer.text and "other" not in answer.text
    assert answer.looked_at() == "looked at: missing(sales), list_variables()"
    first, second = claude.message_requests
    assert "missing" in [t["name"] for t in first["body"]["tools"]]
    assert [b["type"] for b in second["body"]["messages"][-1]["content"]] == ["tool_result"] * 2


def test_tools_all_and_the_trait(frames, endpoint):
    line = "%pizza --no-stream --tools all -m emu:emu-mini [[tool:list_variables()]]"
    answer = cell(frames, line)
    assert "- other: DataFrame" in answer.text and "- sales: DataFrame" in answer.text
    assert "In:" not in answer.text and "get_ipython" not in answer.text
    magics(frames).tools = True
    cell(frames, "%pizza --no-stream -m emu:emu-mini about sales")
    assert tools_of(endpoint.chat_requests[-1]) and endpoint.chat_requests[-1]["body"]["tools"]
    cell(frames, "%pizza --no-stream --no-tools -m emu:emu-mini about sales again")
    assert "tools" not in endpoint.chat_requests[-1]["body"]


def test_a_changed_frame_is_asked_again(frames, endpoint):
    line = '%pizza --no-stream --tools -m emu:emu-mini {sales} [[tool:describe({"name": "sales"})]]'
    first = cell(frames, line)
    again = cell(frames, line)
    assert again.completion.cached and again.looked_at() == first.looked_at()
    assert len(endpoint.chat_requests) == 2
    cell(frames, "sales.loc[0, 'units'] = 99")
    changed = cell(frames, line)
    assert not changed.completion.cached and len(endpoint.chat_requests) == 4


def test_the_word_after_tools_starts_the_question():
    from pizzagpt_magic.magics.pizza import PizzaMagics

    actions = PizzaMagics.pizza.parser._option_string_actions
    assert split_options("--tools Which columns?", actions) == ("--tools", "Which columns?")
    assert split_options("--tools all Which?", actions) == ("--tools all", "Which?")


def test_refusals(frames, endpoint, emu):
    message = failing(frames, "%pizza --tools about sales")
    assert "Pizzagpt takes no tools" in message and "nothing was sent" in message
    assert emu.requests == 0
    assert "does not go with --each" in failing(
        frames, "%%pizza --tools --each sales -m emu:emu-mini\n{item}"
    )
    with pytest.raises(Exception, match="tool_rounds"):
        magics(frames).tool_rounds = 0


def test_the_round_limit_is_one_line(frames, endpoint):
    magics(frames).tool_rounds = 2
    message = failing(
        frames, "%pizza --tools -m emu:emu-mini sales [[tool:list_variables()]] [[tool-repeat]]"
    )
    assert "after 2 rounds" in message
    assert len(endpoint.chat_requests) == 3


def test_streaming_the_final_answer(frames, endpoint, capsys):
    cell(frames, '%pizza --tools -m emu:emu-mini sales [[tool:head({"name": "sales", "n": 2})]]')
    printed = capsys.readouterr().out
    assert "Result of head" in printed and printed.count("Emulated emu-mini answer") == 1
    assert endpoint.chat_requests[-1]["body"]["stream"] is True
