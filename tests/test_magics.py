"""%pizza and %%pizza through a fresh InteractiveShell against the emulator."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets import TraitError
from traitlets.config import Config

from pizzagpt_magic.magics import PizzaMagics, split_options
from pizzagpt_magic.render import Answer


def magics(shell) -> PizzaMagics:
    return shell.magics_manager.registry["PizzaMagics"]


def cell(shell, source):
    """Run a cell; return its result (raising the cell's error, as a notebook would show it)."""
    result = shell.run_cell(source)
    if result.error_before_exec:
        raise result.error_before_exec
    if result.error_in_exec:
        raise result.error_in_exec
    return result.result


def failing(shell, source) -> str:
    """Run a cell that must fail with a one-line UsageError; return the message."""
    with pytest.raises(UsageError) as info:
        cell(shell, source)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_line_magic_returns_a_displayable_answer(shell, emu):
    answer = cell(shell, "%pizza What is 6 times 7?")
    assert isinstance(answer, Answer)
    bundle, metadata = answer._repr_mimebundle_()
    assert set(bundle) == {"text/html", "text/plain"}
    assert "> What is 6 times 7?" in bundle["text/plain"]
    # The output records where the answer came from (the saved notebook keeps it).
    assert metadata["pizzagpt_magic"]["provider"] == "pizzagpt"
    assert metadata["pizzagpt_magic"]["model"] == "gpt-4o-mini"
    assert metadata["pizzagpt_magic"]["cached"] is False
    assert emu.questions == ["What is 6 times 7?"]
    assert shell.user_ns["Out"]  # it landed in Out[n]


def test_cell_magic_sends_the_body(shell, emu):
    answer = cell(shell, "%%pizza\nLine one\n  line two with 'quotes' and \"more\"\n")
    assert emu.questions == ["Line one\n  line two with 'quotes' and \"more\""]
    assert "Line one" in answer.text


def test_assignment_and_semicolon(shell, emu):
    shell.displayhook.flush = lambda: None
    cell(shell, "x = %pizza hello there")
    assert isinstance(shell.user_ns["x"], Answer)
    result = shell.run_cell("%pizza quiet please;")
    assert result.success and result.result is None  # silenced, yet asked
    assert emu.questions[-1] == "quiet please"


NOT_PYTHON = [
    "what's up (see #3)",
    "it's \"open",
    "unclosed ( [ {",
    "a # b ) c",
    "'" * 3 + '"' * 3,
    "tab\tand back\\slash",
]


@pytest.mark.parametrize("question", NOT_PYTHON)
def test_text_that_is_not_python_is_fine(shell, emu, question):
    assert isinstance(cell(shell, f"%pizza --no-interpolate {question}"), Answer)
    assert emu.questions[-1] == question
    assert isinstance(cell(shell, f"%%pizza --no-interpolate\n{question}\nmore"), Answer)
    assert emu.questions[-1] == f"{question}\nmore"


def test_semicolon_silences_the_cell_magic_too(shell, emu):
    result = shell.run_cell("%%pizza\nquiet cell;\n")
    assert result.success and result.result is None
    assert emu.questions[-1] == "quiet cell"


def test_trailing_question_mark_asks_instead_of_help(shell, emu):
    answer = cell(shell, "%pizza is this right?")
    assert isinstance(answer, Answer)
    assert emu.questions == ["is this right?"]
    cell(shell, "y = %pizza and this??")
    assert emu.questions[-1] == "and this??"


def test_output_stores_the_value(shell, emu):
    cell(shell, "%pizza -o reply say hi")
    assert isinstance(shell.user_ns["reply"], str) and "say hi" in shell.user_ns["reply"]
    cell(shell, '%%pizza -f json -o data\n[[echo]]```json\n{"rows": [1, 2]}\n```[[/echo]]')
    assert shell.user_ns["data"] == {"rows": [1, 2]}
    cell(shell, "%%pizza -f code -o snippet\n[[echo]]Use:\n\n```python\nprint(1)\n```\n[[/echo]]")
    assert shell.user_ns["snippet"] == "print(1)\n"


def test_formats(shell, emu):
    text = cell(shell, "%pizza -f text **plain**")
    assert set(text.bundle()) == {"text/plain"}
    code = cell(shell, "%%pizza --format code\n[[echo]]```sql\nSELECT 1\n```[[/echo]]")
    assert "SELECT" in code.bundle()["text/html"] and code.code == "SELECT 1\n"
    data = cell(shell, '%pizza -f JSON [[echo]]{"a": 1}[[/echo]]')
    assert data.bundle()["application/json"] == {"a": 1}
    asked = len(emu.questions)
    message = failing(shell, "%pizza -f json [[echo]]not json at all[[/echo]]")
    assert "not JSON" in message and "'_pizza_answer'" in message
    assert shell.user_ns["_pizza_answer"] == "not json at all"  # what the model said is kept
    shown = cell(shell, "%pizza -f text [[echo]]not json at all[[/echo]]")
    assert str(shown) == "not json at all" and len(emu.questions) == asked + 1  # from the cache
    assert "invalid choice" in failing(shell, "%pizza -f yaml hi")


def test_insert_puts_the_code_in_the_next_cell(shell, emu):
    shell.rl_next_input = None
    answer = cell(
        shell,
        "%%pizza --insert -o reply\n[[echo]]Run:\n\n```python\nx = 1\n```\n"
        "and\n\n```python\nprint(x)\n```\n[[/echo]]",
    )
    assert shell.rl_next_input == "x = 1\nprint(x)"
    assert answer.shown_as == "markdown" and shell.user_ns["reply"].startswith("Run:")
    cell(shell, "%pizza --insert -f code [[echo]]SELECT 1[[/echo]]")  # bare code: all of it
    assert shell.rl_next_input == "SELECT 1"
    mixed = "Install it:\n\n```bash\npip install plotly\n```\n\n"
    mixed += "then:\n\n```python\nimport plotly\n```\n"
    cell(shell, f"%%pizza --insert\n[[echo]]{mixed}[[/echo]]")
    assert shell.rl_next_input == "import plotly"  # the Python blocks only: the cell must run
    cell(shell, "%%pizza --insert\n[[echo]]```sql\nSELECT 2\n```\n[[/echo]]")
    assert shell.rl_next_input == "SELECT 2"  # no Python block: all the code
    shell.rl_next_input = None
    shell.user_ns["rows"] = [1]
    assert "--each" in failing(shell, "%%pizza --insert --each rows\nabout {item}")
    failing(shell, "%pizza --insert --no-cache [[fault:status=500]] fails")
    assert shell.rl_next_input is None  # nothing to insert after a failure


def test_system_message(shell, emu):
    cell(shell, '%pizza -s "Answer in French" hello')
    assert emu.questions[-1] == "System: Answer in French\nUser: hello\nAssistant:"
    magics(shell).system = "Be brief"
    cell(shell, "%pizza hi again")
    assert emu.questions[-1] == "System: Be brief\nUser: hi again\nAssistant:"


def test_interpolation(shell, emu):
    shell.user_ns.update(n=3, cfg={"k": "v"}, items=[1, 2])
    cell(shell, '%pizza n={n} k={cfg[k]} last={items[-1]} {{n}} json {"a": {"b": 1}}')
    assert emu.questions[-1] == 'n=3 k=v last=2 {n} json {"a": {"b": 1}}'
    cell(shell, "%%pizza\ndef f(x):\n    return {x: 1 for x in range($n)}\nvalue {n}\n")
    assert emu.questions[-1] == "def f(x):\n    return {x: 1 for x in range($n)}\nvalue 3"
    cell(shell, "%pizza --no-interpolate keep {n} and $n")
    assert emu.questions[-1] == "keep {n} and $n"
    magics(shell).interpolate = False
    cell(shell, "%pizza also {n}")
    assert emu.questions[-1] == "also {n}"


def test_undefined_name_is_a_usage_error(shell, emu):
    assert "'nowhere'" in failing(shell, "%pizza tell me about {nowhere}")
    assert emu.requests == 0


def test_chat_history_and_reset(shell, emu):
    cell(shell, "%pizza first question")
    cell(shell, "%pizza -c second question")
    assert emu.questions[-1].startswith("User: first question\nAssistant: **Emulated")
    assert emu.questions[-1].endswith("User: second question\nAssistant:")
    history = cell(shell, "%pizza --history")
    plain = history._repr_mimebundle_()["text/plain"]
    assert "[1] You: first question" in plain and "[2] You: second question" in plain
    cell(shell, "%pizza --reset")
    assert "empty" in str(cell(shell, "%pizza --history"))
    cell(shell, "%pizza -c fresh start")
    assert emu.questions[-1] == "fresh start"


def test_failed_exchange_leaves_history_unchanged(shell, emu):
    cell(shell, "%pizza kept")
    before = list(magics(shell).conversation.exchanges)
    failing(shell, "%pizza -c [[fault:status=500]]")
    failing(shell, "%pizza -c -f json [[echo]]no structure here[[/echo]]")
    assert list(magics(shell).conversation.exchanges) == before
    cell(shell, "%pizza -c next works")
    assert len(magics(shell).conversation.exchanges) == 2


def test_history_length_bounds_the_conversation(shell, emu):
    magics(shell).history_length = 2
    for i in range(4):
        cell(shell, f"%pizza q{i}")
    assert [e.prompt for e in magics(shell).conversation.exchanges] == ["q2", "q3"]
    magics(shell).history_length = 0  # keep nothing: -c sends the question alone
    cell(shell, "%pizza -c alone")
    assert emu.questions[-1] == "alone"
    assert "empty" in str(cell(shell, "%pizza --history"))


def test_cache_hit_and_bypass(shell, emu):
    first = cell(shell, "%pizza cache me")
    second = cell(shell, "%pizza cache me")
    assert emu.requests == 1 and second.cached and not first.cached
    assert second.text == first.text
    cell(shell, "%pizza --no-cache cache me")
    assert emu.requests == 2
    cell(shell, "%pizza -m gpt-4o-mini -s other cache me")
    assert emu.requests == 3  # another system message is another request
    magics(shell).cache = False
    cell(shell, "%pizza cache me")
    assert emu.requests == 4


def test_cache_is_bounded(shell, emu):
    magics(shell).cache_size = 2
    for prompt in ("a", "b", "c", "a"):
        cell(shell, f"%pizza {prompt}")
    assert emu.requests == 4  # "a" was evicted by "c"


def test_models(shell, emu):
    listing = cell(shell, "%pizza --models")
    assert "gpt-4o-mini" in str(listing) and "(default)" in listing._repr_mimebundle_()["text/html"]


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("%pizza", "empty"),
        ("%pizza    ", "empty"),
        ("%%pizza\n   \n", "empty"),
        ("%pizza --bogus hi", "unrecognized arguments: --bogus"),
        ("%pizza -m gpt-9 hi", "valid models: gpt-4o-mini"),
        ("%pizza --timeout 0 hi", "--timeout"),
        ("%pizza --timeout soon hi", "invalid float value"),
        ("%pizza -o 1bad hi", "variable name"),
        ("%pizza -o class hi", "variable name"),
        ("%pizza --proxy ftp://x hi", "--proxy"),
        ("%pizza --history extra words", "no question"),
        ("%%pizza stray words\nbody", "cell body"),
        ("%pizza --each xs hi", "cell magic"),
        ("%pizza [[fault:status=503]]", "HTTP 503"),
        ("%pizza [[fault:misuse]]", "Misuse detected"),
        ("%pizza [[fault:empty]]", "empty answer"),
        ("%pizza [[fault:string-answer]]", "'answer' is str"),
        ("%pizza [[fault:html]]", "text/html"),
        ("%pizza [[fault:invalid-json]]", "Expected a JSON answer"),
        ("%pizza [[fault:drop]]", "lost"),
        ("%pizza --timeout 0.2 [[fault:latency=3]]", "within 0.2 s"),
    ],
)
def test_errors_are_one_line_usage_errors(shell, emu, source, words):
    magics(shell).retries = 0
    assert words in failing(shell, source)
    assert isinstance(cell(shell, "%pizza still working"), Answer)


def test_cell_fails_so_run_all_stops(shell, emu):
    result = shell.run_cell("%pizza [[fault:status=500]]")
    assert not result.success
    assert isinstance(result.error_in_exec, UsageError)


def test_hostile_answer_is_rendered_safely(shell, emu):
    answer = cell(
        shell,
        '%%pizza\n[[echo]]**Hi** <img src=x onerror="alert(1)"> '
        "[x](javascript:alert(1))\n\n```html\n<b>code</b>\n```[[/echo]]",
    )
    html = answer.bundle()["text/html"]
    assert "<img" not in html and "href" not in html
    import html as html_module
    import re

    shown = html_module.unescape(re.sub(r"<[^>]+>", "", html))
    assert "<strong>Hi</strong>" in html and "<b>code</b>" in shown and "<pre " in html
    assert answer.text.count("<img") == 1  # the plain text is the answer as sent


def test_prompt_too_large_is_refused_before_sending(shell, emu):
    magics(shell).max_prompt_chars = 50
    assert "over the limit" in failing(shell, "%pizza " + "x" * 60)
    assert emu.requests == 0


def test_per_call_proxy_reaches_the_request(shell, emu):
    magics(shell).retries = 0
    message = failing(shell, "%pizza --proxy http://user:pw@127.0.0.1:9 hi")
    assert "pw" not in message and "user:" not in message


def test_split_options_keeps_the_prompt_verbatim():
    actions = PizzaMagics.pizza.parser._option_string_actions
    assert split_options("-m gpt -c what's 'up' -x?", actions) == ("-m gpt -c", "what's 'up' -x?")
    assert split_options('-s "be brief" hi', actions) == ('-s "be brief"', "hi")
    assert split_options("-mgpt hi", actions) == ("-mgpt", "hi")
    assert split_options("--format=json hi", actions) == ("--format=json", "hi")
    assert split_options("-- -5 degrees", actions) == ("", "-5 degrees")
    assert split_options("-5 degrees", actions) == ("", "-5 degrees")
    assert split_options("--bogus hi", actions) == ("--bogus", "hi")


def test_config_before_loading_and_validation(emu):
    config = Config()
    config.HistoryManager.enabled = False
    config.PizzaMagics.format = "text"
    config.PizzaMagics.timeout = 5.0
    config.PizzaMagics.system = "From the config"
    shell = InteractiveShell(config=config)
    try:
        shell.run_line_magic("load_ext", "pizzagpt_magic")
        pizza = magics(shell)
        assert (pizza.format, pizza.timeout, pizza.system) == ("text", 5.0, "From the config")
        answer = cell(shell, "%pizza hi")
        assert set(answer.bundle()) == {"text/plain"}
        for name, bad in [
            ("model", "gpt-9"),
            ("timeout", 0.0),
            ("retries", 11),
            ("cache_size", 0),
            ("base_url", "ftp://x"),
            ("proxy", "socks5://x"),
            ("history_length", -1),
            ("format", "yaml"),
            ("concurrency", 0),
        ]:
            with pytest.raises(TraitError):
                setattr(pizza, name, bad)
        shell.run_line_magic("config", "PizzaMagics.retries = 1")
        assert pizza.retries == 1
        listed = shell.run_cell("%config PizzaMagics")
        assert listed.success
        pizza.base_url = emu.url
        assert isinstance(cell(shell, "%pizza via base_url"), Answer)
    finally:
        shell.run_line_magic("unload_ext", "pizzagpt_magic")
        InteractiveShell.clear_instance()


def test_unload_and_reload(shell, emu):
    cell(shell, "%pizza before")
    shell.run_line_magic("reload_ext", "pizzagpt_magic")
    assert isinstance(cell(shell, "%pizza after reload?"), Answer)
    assert len(shell.magics_manager.registry) and "PizzaMagics" in shell.magics_manager.registry
    assert sum(isinstance(c, PizzaMagics) for c in shell.configurables) == 1
    from pizzagpt_magic.loop import run_sync
    from pizzagpt_magic.session import get_session

    session = run_sync(get_session())
    assert not session.closed
    shell.run_line_magic("unload_ext", "pizzagpt_magic")
    assert session.closed  # unloading closes the keep-alive session
    assert "pizza" not in shell.magics_manager.magics["line"]
    assert "pizza" not in shell.magics_manager.magics["cell"]
    assert not any(isinstance(c, PizzaMagics) for c in shell.configurables)
    assert all(
        getattr(t, "__name__", "") != "keep_question_marks"
        for t in shell.input_transformers_cleanup
    )
    shell.run_line_magic("load_ext", "pizzagpt_magic")


def test_no_global_hooks(shell):
    assert shell.CustomTB is None or "pizzagpt" not in repr(shell.CustomTB)
    assert not shell.custom_exceptions


def test_what_loading_adds_to_the_shell_and_unloading_takes_away(emu):
    """Two registrations, both undone by unload: the input transformer for questions that end
    in "?", and the post-cell callback that records errors for {Err[n]}. No exception handler,
    no excepthook, nothing else."""
    import sys

    def state(ip):
        return {
            "events": {name: list(cbs) for name, cbs in ip.events.callbacks.items()},
            "cleanup": list(ip.input_transformers_cleanup),
            "post": list(ip.input_transformers_post),
            "custom_exceptions": ip.custom_exceptions,
            "excepthook": sys.excepthook,
            "ast": list(ip.ast_transformers),
        }

    config = Config()
    config.HistoryManager.enabled = False
    ip = InteractiveShell(config=config)
    try:
        before = state(ip)
        ip.run_line_magic("load_ext", "pizzagpt_magic")
        loaded = state(ip)
        added = {
            key: [x for x in loaded[key] if x not in before[key]]
            for key in ("cleanup", "post", "ast")
        }
        assert [t.__name__ for t in added["cleanup"]] == ["keep_question_marks"]
        assert added["post"] == added["ast"] == []
        for name, callbacks in loaded["events"].items():
            new = [cb for cb in callbacks if cb not in before["events"][name]]
            expected = ["after_cell"] if name == "post_run_cell" else []
            assert [cb.__name__ for cb in new] == expected, name
        assert loaded["custom_exceptions"] == before["custom_exceptions"] == ()
        assert loaded["excepthook"] is before["excepthook"]
        ip.run_line_magic("unload_ext", "pizzagpt_magic")
        assert state(ip) == before
    finally:
        ip.cleanup()
        InteractiveShell.clear_instance()


def test_config_lists_every_trait(shell, capsys):
    shell.run_cell("%config PizzaMagics")
    out = capsys.readouterr().out
    for name in (
        "model",
        "format",
        "base_url",
        "timeout",
        "retries",
        "proxy",
        "cache",
        "cache_size",
        "history_length",
        "interpolate",
        "concurrency",
    ):
        assert f"PizzaMagics.{name}=" in out, name


def test_terminal_gets_no_spinner(shell, emu, capsys):
    cell(shell, "%pizza --no-cache [[fault:latency=0.8]] take your time")
    out = capsys.readouterr()
    assert "is answering" not in out.out + out.err
    assert "\r" not in out.out


def test_help_shows_usage(shell, capsys):
    shell.run_cell("%pizza?")
    out = capsys.readouterr().out
    assert "--no-interpolate" in out and "-f <{markdown,text,code,json}>" in out


# -- robustness: loading with rejected config, --each system messages, --help ---------------


@pytest.mark.parametrize(("name", "value"), [("timeout", "-1"), ("model", "'gpt-4o'")])
def test_a_rejected_config_value_does_not_stop_reloading(shell, emu, name, value):
    from pizzagpt_magic.magics import ConfigWarning

    shell.run_line_magic("config", f"PizzaMagics.{name} = {value}")  # refused, reported
    assert "pizza" in shell.magics_manager.magics["line"]
    with pytest.warns(ConfigWarning, match=f"PizzaMagics.{name}"):
        shell.run_line_magic("reload_ext", "pizzagpt_magic")
    assert "pizza" in shell.magics_manager.magics["line"]
    assert "Emulated" in str(cell(shell, "%pizza still here"))
    # Nothing half-built stays behind: one PizzaMagics among the configurables.
    assert sum(isinstance(c, PizzaMagics) for c in shell.configurables) == 1
    assert name not in shell.config.PizzaMagics
    shell.run_line_magic("reload_ext", "pizzagpt_magic")  # and quietly from now on


def test_each_interpolates_the_system_message_per_item(shell, emu):
    shell.run_cell("for item in ['Paris', 'Oslo']: pass\ncities = ['Rome', 'Lima']")
    cell(shell, '%%pizza --each cities -s "Answer about {item} only (#{index})" -o out\nTell me')
    systems = [q for q in emu.questions]
    assert any("Answer about Rome only (#0)" in q for q in systems)
    assert any("Answer about Lima only (#1)" in q for q in systems)
    assert not any("Oslo" in q for q in systems)
    shell.user_ns.pop("item")
    cell(shell, '%%pizza --each cities -s "About {item}" --no-cache\nAgain')


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_flags_show_the_usage(shell, emu, flag, capsys):
    result = cell(shell, f"%pizza {flag}")
    assert result is None
    shown = capsys.readouterr().out
    assert "%pizza" in shown and "--model" in shown and "--each" in shown
    assert len(emu.questions) == 0


def test_infinite_timeout_means_no_limit_and_nan_is_refused(shell, emu):
    assert "Emulated" in str(cell(shell, "%pizza --timeout inf no limit"))
    shell.run_line_magic("config", "PizzaMagics.timeout = float('inf')")
    assert "Emulated" in str(cell(shell, "%pizza --no-cache no limit either"))
    assert "--timeout must be more than 0" in failing(shell, "%pizza --timeout nan q")
    with pytest.raises(TraitError):
        magics(shell).timeout = float("nan")


def test_load_ext_imports_no_heavy_module():
    # aiohttp, the renderer's parser, sanitiser, math and link libraries load on first use.
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "InteractiveShell.instance().run_line_magic('load_ext', 'pizzagpt_magic')\n"
        "heavy = ('aiohttp', 'nh3', 'pyromark', 'math_core', 'linkify_it', 'multidict')\n"
        "print(' '.join(name for name in heavy if name in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == []
