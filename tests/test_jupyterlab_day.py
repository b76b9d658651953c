"""A day in JupyterLab: what a notebook user notices first, each checked here (and what shows
only in a browser, in tests/browser/test_themes.py)."""

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
    assert x.upper() == x.text.upper() and "6 times 7" in x and x.format() == x.text
    assert x == x.text and hash(x) == hash(x.text)
    assert type(str(x)) is str and str(x) == x.text
    bundle, metadata = x._repr_mimebundle_()
    assert "text/html" in bundle and metadata["pizzagpt_magic"]["model"] == "gpt-4o-mini"
    assert json_round_trip(x) == x.text
    again = pickle.loads(pickle.dumps(x))
    assert again == x and again.shown_as == "markdown"


def test_output_still_holds_the_value_of_the_format(shell, emu):
    cell(shell, '%pizza -f json -o data [[echo]]{"a": 1}[[/echo]]')
    assert shell.user_ns["data"] == {"a": 1}
    answer = Answer("Use:\n\n```python\nx = 1\n```\n", format="code")
    assert answer.value == "x = 1\n" and answer.startswith("Use:")


def json_round_trip(value):
    import json

    return json.loads(json.dumps(value))


# -- 1. Restart and Run All opens no cell twice --------------------------------------------------

INSERT = "%%pizza --insert\n[[echo]]Count them:\n\n```python\nsales.size\n```\n[[/echo]]"


def run_in_cell(kernel, code: str, cell_id: str) -> dict:
    """Run ``code`` as JupyterLab runs a notebook cell (with its id); the execute_reply."""
    client = kernel.client
    message = client.session.msg(
        "execute_request",
        {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        metadata={"cellId": cell_id},
    )
    client.shell_channel.send(message)
    kernel.collect([message["header"]["msg_id"]])
    return kernel.reply(message["header"]["msg_id"])


def inserted(reply: dict) -> list[str]:
    return [p["text"] for p in reply.get("payload", []) if p["source"] == "set_next_input"]


@pytest.mark.kernel
def test_a_cell_run_again_does_not_insert_its_code_again(emulator, tmp_path):
    from kernel_helpers import Kernel

    env = {
        "PIZZAGPT_URL": emulator.url,
        "PIZZAGPT_STORE": str(tmp_path / "store.sqlite"),
        "JPY_SESSION_NAME": str(tmp_path / "analysis.ipynb"),
    }
    for restart in range(2):  # the second kernel is "Restart and Run All"
        kernel = Kernel(env)
        try:
            run_in_cell(kernel, "%load_ext pizzagpt_magic", "cell-load")
            first = run_in_cell(kernel, INSERT, "cell-ask")
            assert inserted(first) == ([] if restart else ["sales.size"])
            assert inserted(run_in_cell(kernel, INSERT, "cell-ask")) == []
            # Another cell asking the same opens its own cell.
            other = run_in_cell(kernel, INSERT, "cell-other")
            assert inserted(other) == ([] if restart else ["sales.size"])
            changed = run_in_cell(kernel, INSERT.replace("sales.size", "sales.shape"), "cell-ask")
            assert inserted(changed) == ([] if restart else ["sales.shape"])
            run_in_cell(kernel, "import pizzagpt_magic.store as s; s.get_store().flush()", "f")
        finally:
            kernel.shutdown()


def test_an_answer_without_code_inserts_nothing_but_a_note(shell, emu, capsys):
    shell.set_next_input = lambda *a, **k: pytest.fail("nothing is to be inserted")
    cell(shell, "%pizza --insert [[echo]]Sorry, I cannot tell without the data.[[/echo]]")
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "The answer holds no code: no cell was inserted."
    assert Answer("x = 1\nprint(x)").has_code and not Answer("Just prose, here.").has_code


# -- 8. an interrupt is one short KeyboardInterrupt ----------------------------------------------


@pytest.mark.kernel
def test_an_interrupt_shows_one_short_keyboard_interrupt(emulator):
    import re
    import time

    from kernel_helpers import Kernel, error_of

    kernel = Kernel({"PIZZAGPT_URL": emulator.url})
    try:
        kernel.execute("%load_ext pizzagpt_magic\nitems = [1, 2]")
        for code in (
            "%pizza --no-cache [[fault:latency=5]] never answered",
            "%%pizza --no-cache --each items\n[[fault:latency=5]] about {item}",
        ):
            msg_id = kernel.submit(code)
            deadline = time.monotonic() + 20
            while not emulator.in_flight and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            kernel.manager.interrupt_kernel()
            messages = kernel.collect([msg_id], timeout=30)[msg_id]
            error = error_of(messages)
            assert error["ename"] == "KeyboardInterrupt"
            shown = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error["traceback"]))
            lines = [line for line in shown.splitlines() if line.strip()]
            assert len(lines) <= 6, shown  # as an interrupted time.sleep: a few lines
            assert "pizzagpt_magic" not in shown and "asyncio" not in shown
            assert "selectors" not in shown and lines[-1].startswith("KeyboardInterrupt")
            kernel.reply(msg_id)
            while emulator.in_flight:
                time.sleep(0.05)
    finally:
        kernel.shutdown()


# -- 3. the --each -f json summary shows JSON ----------------------------------------------------


def test_each_json_summary_shows_valid_json_in_code_style(shell, emu):
    import json
    import re

    shell.user_ns["names"] = ["a"]
    answer = r'{"path": "C:\\temp\\x", "quote": "say \"hi\"", "n": [1, 2]}'
    summary = cell(shell, "%%pizza --each names -f json\n[[echo]]" + answer + "[[/echo]] {item}")
    html = summary._repr_mimebundle_()["text/html"]
    (shown,) = re.findall(r"<li><code>0</code>: <code>(.*?)</code></li>", html)
    import html as html_module

    assert json.loads(html_module.unescape(shown)) == json.loads(answer)
    assert json.loads(repr(summary).splitlines()[1].split("] ", 1)[1]) == json.loads(answer)


# -- 11. a batch replayed from the cache says so -------------------------------------------------


def test_a_batch_replayed_from_the_cache_says_so(shell, emu):
    shell.user_ns["names"] = ["a", "b"]
    first = repr(cell(shell, "%%pizza --each names\nhello {item}"))
    assert "cache" not in first.splitlines()[0]
    again = repr(cell(shell, "%%pizza --each names\nhello {item}"))
    assert again.startswith("2 answers of gpt-4o-mini, all from the cache, in ")
    shell.user_ns["names"] = ["a", "c"]
    mixed = repr(cell(shell, "%%pizza --each names\nhello {item}"))
    assert "(1 from the cache)" in mixed.splitlines()[0]


# -- 10. %pizza --log is a compact table ---------------------------------------------------------


@pytest.fixture
def store_file(tmp_path, monkeypatch):
    import pizzagpt_magic.store as stores

    path = tmp_path / "store.sqlite3"
    monkeypatch.setenv("PIZZAGPT_STORE", str(path))
    yield path
    stores.forget_stores()


def test_log_is_a_compact_table_and_full_shows_everything(store_file, shell, emu):
    from test_render import audit

    long_answer = "First line of the answer.\n\n" + "\n".join(f"line {i}" for i in range(50))
    cell(shell, "%%pizza\nA question\nwith a second line [[echo]]" + long_answer + "[[/echo]]")
    cell(shell, "%%pizza\nA question\nwith a second line [[echo]]" + long_answer + "[[/echo]]")
    failing(shell, "%pizza --no-cache [[fault:status=500]] broken")
    table = cell(shell, "%pizza --log 3")
    lines = repr(table).splitlines()
    assert lines[0].split() == [
        "time",
        "cell",
        "model",
        "s",
        "tokens",
        "cached",
        "question",
        "answer",
    ]
    assert len(lines) == 4  # one line an exchange: the first lines only
    assert "gpt-4o-mini" in lines[1] and "A question" in lines[1]
    assert "First line of the answer." in lines[1] and "line 49" not in repr(table)
    assert " yes " in lines[2] and " yes " not in lines[1]  # the second came from the cache
    assert "failed: HTTPStatusError: HTTP 500" in lines[3]
    assert all(line.split()[1].startswith("[") for line in lines[1:])  # the cell
    html = table._repr_mimebundle_()["text/html"]
    assert audit(html) == [] and html.count("<tr>") == 4
    full = repr(cell(shell, "%pizza --log 2 --full"))
    assert "line 49" in full and "with a second line" in full
    assert "--full goes with --log" in failing(shell, "%pizza --full")


# -- 6. --each progress in a notebook: one display, in place, then the summary ------------------


@pytest.mark.kernel
def test_each_progress_is_a_display_in_place_that_becomes_the_summary(emulator):
    from kernel_helpers import Kernel, error_of, of_type, stderr_of

    kernel = Kernel({"PIZZAGPT_URL": emulator.url})
    try:
        kernel.execute("%load_ext pizzagpt_magic\nitems = list(range(12))")
        messages = kernel.execute(
            "%%pizza --each items --concurrency 2 --no-cache\n[[fault:latency=0.15]] about {item}"
        )
        assert error_of(messages) is None
        assert stderr_of(messages) == ""  # no tqdm text in the error box
        (shown,) = of_type(messages, "display_data")
        updates = of_type(messages, "update_display_data")
        progress = [shown, *updates[:-1]]
        assert len(progress) >= 3 and "answered" in progress[-1]["content"]["data"]["text/plain"]
        assert all(m["content"]["transient"] == shown["content"]["transient"] for m in updates)
        summary = updates[-1]["content"]["data"]
        assert summary["text/plain"].startswith("12 answers from gpt-4o-mini")
        assert "text/html" in summary and not of_type(messages, "execute_result")
        # A failing batch: the summary shows, the cell fails with one line.
        failed = kernel.execute(
            "%%pizza --each items --no-cache\n[[fault:status=500;times=1]] again {item}"
        )
        assert error_of(failed)["ename"] == "UsageError"
        last = of_type(failed, "display_data", "update_display_data")[-1]["content"]["data"]
        assert "1 failed" in last["text/plain"]
    finally:
        kernel.shutdown()


def test_each_progress_in_a_terminal_stays_text(shell, emu, capsys):
    shell.user_ns["items"] = [1, 2, 3]
    cell(shell, "%%pizza --each items --no-cache\nabout {item}")
    assert "3/3" in capsys.readouterr().err  # tqdm's bar


# -- 14. {n} in math or code says how to keep the braces -----------------------------------------


@pytest.mark.parametrize(
    "question",
    [
        "%pizza Simplify $x^{n} + 1$",
        "%%pizza\nWhat does this print?\n\n```python\nprint(f'{n}')\n```",
        "%%pizza\nSolve\n\n$$\n\\\\frac{n}{2}\n$$",
    ],
)
def test_an_undefined_name_in_math_or_code_says_how_to_keep_the_braces(shell, emu, question):
    message = failing(shell, question)
    assert message.startswith("Name 'n' in {n} is not defined (it is inside ")
    assert "write {{n}} to keep the braces" in message and "--no-interpolate" in message
    assert emu.requests == 0


def test_an_undefined_name_in_prose_has_no_hint(shell, emu):
    assert failing(shell, "%pizza Tell me about {n} and $5") == "Name 'n' in {n} is not defined"


# -- 11. smaller things --------------------------------------------------------------------------


def test_fix_sends_the_users_frames_and_the_error_only(shell, emu):
    shell.run_cell("import json\njson.loads('{broken')", store_history=True)
    shell.set_next_input = lambda *a, **k: None
    cell(shell, "%pizza -f text --fix")
    sent = emu.questions[-1]
    assert "json.loads('{broken')" in sent and "JSONDecodeError" in sent
    assert "decoder.py" not in sent and "site-packages" not in sent
    assert "/lib/python" not in sent and "frames inside libraries" in sent


def test_help_shows_fix_with_its_optional_number(shell, capsys):
    shell.run_line_magic("pinfo", "%pizza")
    assert "[--fix [N]]" in capsys.readouterr().out


def test_a_table_in_a_question_rounds_floats_and_ends_with_a_blank_line(shell, emu):
    pd = pytest.importorskip("pandas")
    shell.user_ns["df"] = pd.DataFrame({"share": [0.1 + 0.2, 2 / 3], "n": [1, 2]})
    sent = str(cell(shell, "%pizza -f text {df} Which is larger?"))
    assert "| 0.3 |" in sent and "| 0.6667 |" in sent and "0.30000000000000004" not in sent
    assert "| 1 | 0.6667 | 2 |\n> \n>  Which is larger?" in sent  # not read as a row


def test_pizzagpt_answers_name_their_model_under_them(shell, emu):
    bundle, _ = cell(shell, "%pizza hello")._repr_mimebundle_()
    assert "<em>gpt-4o-mini</em>" in bundle["text/html"]


def test_register_endpoint_returns_nothing(monkeypatch):
    from pizzagpt_magic import backends

    monkeypatch.setattr(backends, "_registered", {})
    assert backends.register_endpoint("local", "http://127.0.0.1:9/v1") is None
    assert backends.resolve("local:m").endpoint.base_url == "http://127.0.0.1:9/v1"


def test_an_unknown_provider_is_named(shell):
    message = failing(shell, "%pizza -m nosuch:model hi")
    assert message.startswith("unknown provider 'nosuch'; providers: pizzagpt, openai")


def test_fig_counts_one_image(shell):
    from pizzagpt_magic.images import DisplayedImages

    figures = DisplayedImages()
    figures.add(b"\x89PNG\r\n\x1a\n", "image/png", 1)
    with pytest.raises(IndexError, match="Fig holds 1 image "):
        figures[-2]


# -- speed: %load_ext loads only what parses the options -----------------------------------------


def test_load_ext_loads_no_mode_renderer_or_image_code():
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "InteractiveShell.instance().run_line_magic('load_ext', 'pizzagpt_magic')\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('pizzagpt_magic'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    for module in ("render", "images", "errors", "magics.ask", "magics.each", "magics.log"):
        assert f"pizzagpt_magic.{module}" not in out
    assert "pizzagpt_magic.figures" in out  # Fig is hooked from the start


def test_load_ext_builds_no_parser_yet_and_help_still_shows_every_option():
    import subprocess
    import sys

    script = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "shell = InteractiveShell.instance()\n"
        "shell.run_line_magic('load_ext', 'pizzagpt_magic')\n"
        "from pizzagpt_magic.magics import PizzaMagics\n"
        "print('built' if PizzaMagics.pizza.parser._parser is not None else 'lazy')\n"
        "shell.run_line_magic('pinfo', '%pizza')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("lazy\n")
    # The usage comes with the first %pizza? all the same.
    assert "--no-interpolate" in out and "[--fix [N]]" in out and "--each" in out
