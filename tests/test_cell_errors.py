"""``{Err[n]}``: the errors of earlier cells, recorded after each cell and asked about."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from pizzagpt_magic.cell_errors import CellErrors, describe


def run(shell, source: str):
    """Run a numbered cell, as a notebook does; return its result object."""
    return shell.run_cell(source, store_history=True)


def test_a_failing_cell_is_recorded_with_the_users_frames(shell):
    run(shell, "def ratio(a, b):\n    return a / b\n")
    result = run(shell, "ratio(1, 0)")
    assert not result.success
    text = shell.user_ns["Err"][result.execution_count]
    assert text.startswith("Traceback (most recent call last):")
    assert "return a / b" in text and "ratio(1, 0)" in text
    assert f'File "In[{result.execution_count}]", line 1, in <module>' in text  # named as a cell
    assert text.endswith("ZeroDivisionError: division by zero")
    assert "interactiveshell.py" not in text  # IPython's own frames are left out
    assert shell.user_ns["Err"][-1] == text


def test_question_quotes_the_newest_error(shell, emu):
    run(shell, "{}['missing']")
    run(shell, "x = 1")  # a success in between changes nothing
    answer = run(shell, "%pizza Why did this fail? {Err[-1]}").result
    assert "KeyError: 'missing'" in emu.questions[-1]
    assert "KeyError: 'missing'" in answer.text


def test_syntax_errors_and_magic_errors_are_recorded(shell):
    broken = run(shell, "def f(:\n    pass")
    assert "SyntaxError" in shell.user_ns["Err"][broken.execution_count]
    failed = run(shell, "%pizza -f yaml hi")
    assert shell.user_ns["Err"][failed.execution_count].startswith("UsageError: argument -f")
    assert "\n" not in shell.user_ns["Err"][failed.execution_count]  # no machinery frames


def test_missing_error_is_one_clear_line(shell):
    failing = run(shell, "1/0")
    result = run(shell, "%pizza explain {Err[999]}")
    assert isinstance(result.error_in_exec, UsageError)
    message = str(result.error_in_exec)
    assert "\n" not in message
    number = failing.execution_count
    assert f"cell 999 raised no error; errors are recorded for cells {number}" in message
    # That failure is recorded too (cell 2): two errors, so three back is one too many.
    result = run(shell, "%pizza explain {Err[-3]}")
    expected = f"fewer than 3 recorded errors; errors are recorded for cells {number}, {number + 1}"
    assert expected in str(result.error_in_exec)


def test_unrecorded_cases(shell):
    errors = shell.user_ns["Err"]
    run(shell, "raise KeyboardInterrupt")  # an interrupt is not an error to ask about
    shell.run_cell("1/0", store_history=False)  # nor a cell run outside the history
    assert len(errors) == 0
    assert "none yet" in repr(errors)
    with pytest.raises(KeyError, match="no errors are recorded yet"):
        errors[-1]


def test_bounded_and_cut_from_the_start():
    class Result:
        error_before_exec = info = None

        def __init__(self, count: int, error: Exception) -> None:
            self.execution_count, self.error_in_exec = count, error

    errors = CellErrors(size=3, limit=80)
    for count in range(1, 6):
        try:
            raise ValueError(f"bad value number {count} " + "x" * 100)
        except ValueError as exc:
            errors.record(Result(count, exc))
    assert list(errors) == [3, 4, 5]
    assert [errors[-1], errors[-3]] == [errors[5], errors[3]]
    assert all(len(text) <= 80 for text in errors.values())
    assert errors[5].endswith("x" * 20)  # the error line's end survives the cut


def test_describe_keeps_the_error_line_when_long():
    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        raise RuntimeError("the bottom")

    try:
        deep(50)
    except RuntimeError as exc:
        text = describe(exc, 200)
    assert len(text) <= 200
    assert text.startswith("[… ") and "characters of the traceback cut]" in text
    assert text.endswith("RuntimeError: the bottom")


def test_unload_removes_err_and_keeps_a_users_own(shell):
    run(shell, "1/0")
    shell.run_line_magic("unload_ext", "pizzagpt_magic")
    assert "Err" not in shell.user_ns
    run(shell, "1/0")  # the callback is gone too: nothing is recorded, nothing fails
    shell.user_ns["Err"] = "mine"
    shell.run_line_magic("load_ext", "pizzagpt_magic")
    assert shell.user_ns["Err"] == "mine"
    shell.run_line_magic("unload_ext", "pizzagpt_magic")
    assert shell.user_ns["Err"] == "mine"
    shell.run_line_magic("load_ext", "pizzagpt_magic")  # as the fixture expects
    callback = shell.magics_manager.registry["PizzaMagics"].after_cell
    assert shell.events.callbacks["post_run_cell"].count(callback) == 1


def test_err_comes_back_after_reset(shell):
    run(shell, "1/0")
    shell.run_line_magic("reset", "-f")
    assert "Err" not in shell.user_ns
    run(shell, "[][0]")
    assert shell.user_ns["Err"][-1].endswith("IndexError: list index out of range")
