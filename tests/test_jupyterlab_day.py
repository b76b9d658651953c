"""A day in JupyterLab: what a notebook user notices first, each checked here (and what shows
only in a browser, in tests/browser/test_jupyterlab_day.py)."""

from __future__ import annotations

import pickle

import pytest
from IPython.core.error import UsageError

from pizzagpt_magic.render import Answer


def magics(shell):
    return shell.magics_manager.registry["PizzaMagics"]


def cell(shell, source):
    result = shell.run_cell(source)
    if result.error_before_exec:
        raise result.error_before_exec
    if result.error_in_exec:
        raise result.error_in_exec
    return result.result


def failing(shell, source) -> str:
    with pytest.raises(UsageError) as info:
        cell(shell, source)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- 12. the answer is a str ---------------------------------------------------------------------


def test_the_answer_is_a_str_that_keeps_its_display_and_metadata(shell, emu):
    cell(shell, "x = %pizza What is 6 times 7?")
    x = shell.user_ns["x"]
    assert isinstance(x, str) and isinstance(x, Answer)
    assert x.upper() == x.text.upper() and "6 times 7" in x
    assert x == x.text and hash(x) == hash(x.text)
    assert type(str(x)) is str and str(x) == x.text
    bundle, metadata = x._repr_mimebundle_()
    assert "text/html" in bundle and metadata["pizzagpt_magic"]["model"] == "gpt-4o-mini"
    assert json_round_trip(x) == x.text
    again = pickle.loads(pickle.dumps(x))
    assert again == x and again.format == "markdown"


def test_output_still_holds_the_value_of_the_format(shell, emu):
    cell(shell, '%pizza -f json -o data [[echo]]{"a": 1}[[/echo]]')
    assert shell.user_ns["data"] == {"a": 1}
    answer = Answer("Use:\n\n```python\nx = 1\n```\n", format="code")
    assert answer.value == "x = 1\n" and answer.startswith("Use:")


def json_round_trip(value):
    import json

    return json.loads(json.dumps(value))
