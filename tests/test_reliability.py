"""Faults, load and hostile input thrown at the extension through the magic."""

from __future__ import annotations

import asyncio
import gc
import os
import string
import time

import nbformat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from pizzagpt_magic.emulator import EmulatorThread
from pizzagpt_magic.loop import run_sync
from pizzagpt_magic.magics import PizzaMagics, split_options


def magics(shell) -> PizzaMagics:
    return shell.magics_manager.registry["PizzaMagics"]


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


async def _our_tasks() -> int:
    return sum(1 for t in asyncio.all_tasks() if not t.done() and t is not asyncio.current_task())


def pending_tasks() -> int:
    return run_sync(_our_tasks())


def open_connections() -> int:
    from pizzagpt_magic.session import get_session

    session = run_sync(get_session())
    return sum(len(c) for c in session.connector._conns.values()) + len(session.connector._acquired)


ANSWERED, FAILED = "answered", "failed"


def assert_outcome(result, pizza, history, outcome, words) -> None:
    """An answered question adds one exchange; a failed one is a one-line UsageError holding
    ``words`` and leaves the history as it was."""
    if outcome == ANSWERED:
        assert result.success, str(result.error_in_exec)[:300]
        assert len(pizza.conversation.exchanges) == len(history) + 1
    else:
        assert isinstance(result.error_in_exec, UsageError)
        message = str(result.error_in_exec)
        assert words in message and "\n" not in message, message
        assert list(pizza.conversation.exchanges) == history


FAULTS = [
    ("status=429;retry-after=0.2;times=1", ANSWERED, None),
    ("status=429;times=1", ANSWERED, None),
    ("status=502;times=2", ANSWERED, None),
    ("status=503;times=1", ANSWERED, None),
    ("status=504;times=3", ANSWERED, None),
    ("status=429", FAILED, "HTTP 429"),
    ("status=500", FAILED, "HTTP 500"),
    ("status=502", FAILED, "HTTP 502"),
    ("status=503", FAILED, "HTTP 503"),
    ("status=504", FAILED, "HTTP 504"),
    ("drop", FAILED, "lost while the answer was arriving"),
    ("latency=3", FAILED, "No answer from"),
    ("invalid-json", FAILED, "Expected a JSON answer but got application/json"),
    ("html", FAILED, "Expected a JSON answer but got text/html"),
    ("string-answer", FAILED, "'answer' is str"),
    ("empty", FAILED, "empty answer"),
    ("misuse", FAILED, "Misuse detected. Please get in touch"),
    ("large=5000000", ANSWERED, None),
]


@pytest.mark.parametrize(("fault", "outcome", "words"), FAULTS)
def test_fault_matrix(shell, emu, fault, outcome, words):
    pizza = magics(shell)
    pizza.timeout = 1.0
    pizza.retries = 3
    shell.run_cell("%pizza first, to have a history")
    connections = max(open_connections(), 1)
    history = list(pizza.conversation.exchanges)
    result = shell.run_cell(f"%pizza -c --no-cache question [[fault:{fault}]];")
    assert_outcome(result, pizza, history, outcome, words)
    assert pending_tasks() == 0
    after = shell.run_cell("x = %pizza --no-cache the kernel still answers")
    assert after.success and "still answers" in shell.user_ns["x"].text
    assert open_connections() <= connections


# More rows of the matrix: faults that are not the service's answer. Each sets up its fault
# (an environment, a server) and names the outcome; the kernel-only row (an interrupt in a cell
# with top-level await) is in test_kernel.
ENVIRONMENT_FAULTS = [
    ("threads", ANSWERED, None),
    ("stale-keepalive", ANSWERED, None),
    ("url-without-scheme", FAILED, "PIZZAGPT_URL='localhost:1' is not a URL"),
    ("proxy-without-scheme", FAILED, "HTTP_PROXY='127.0.0.1:1' is not a URL"),
    ("proxy-socks", FAILED, "HTTP_PROXY='socks5://127.0.0.1:1' is a socks5:// URL"),
    ("proxy-dead", FAILED, "Cannot reach the proxy http://127.0.0.1:1 (from HTTP_PROXY)"),
]


@pytest.mark.parametrize(("fault", "outcome", "words"), ENVIRONMENT_FAULTS)
def test_environment_fault_matrix(shell, emu, monkeypatch, fault, outcome, words):
    import threading

    from test_transport import ClosingServer

    pizza = magics(shell)
    pizza.retries = 0
    shell.run_cell("%pizza first, to have a history")
    history = list(pizza.conversation.exchanges)
    for name in ("http_proxy", "all_proxy", "ALL_PROXY", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = None
    if fault == "threads":
        from pizzagpt_magic import ask

        threads = [threading.Thread(target=ask, args=(f"t{i}",)) for i in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    elif fault == "stale-keepalive":
        server = ClosingServer()
        monkeypatch.setenv("PIZZAGPT_URL", run_sync(server.start()))
        shell.run_cell("%pizza --no-cache the connection is now pooled;")
    elif fault == "url-without-scheme":
        monkeypatch.setenv("PIZZAGPT_URL", "localhost:1")
    else:
        proxy = {"proxy-without-scheme": "127.0.0.1:1", "proxy-socks": "socks5://127.0.0.1:1"}
        monkeypatch.setenv("HTTP_PROXY", proxy.get(fault, "http://127.0.0.1:1"))
    history = list(pizza.conversation.exchanges)
    result = shell.run_cell("%pizza -c --no-cache question;")
    if server is not None:
        run_sync(server.stop())
    assert_outcome(result, pizza, history, outcome, words)
    assert pending_tasks() == 0
    monkeypatch.setenv("PIZZAGPT_URL", emu.url)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    after = shell.run_cell("x = %pizza --no-cache the kernel still answers")
    assert after.success and "still answers" in shell.user_ns["x"].text


def test_connect_refused_through_the_magic(shell, monkeypatch):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("PIZZAGPT_URL", f"http://127.0.0.1:{port}")
    magics(shell).retries = 1
    result = shell.run_cell("%pizza hello?")
    assert isinstance(result.error_in_exec, UsageError)
    assert f"Cannot reach http://127.0.0.1:{port}" in str(result.error_in_exec)
    assert pending_tasks() == 0


def test_soak(shell, monkeypatch):
    calls = 1000
    with EmulatorThread(fail_rate=0.1, jitter=0.004, seed=7) as noisy:
        monkeypatch.setenv("PIZZAGPT_URL", noisy.url)
        pizza = magics(shell)
        pizza.retries = 1
        pizza.timeout = 5
        for i in range(50):  # warm up before measuring
            shell.run_cell(f"%pizza --no-cache warm {i}")
        gc.collect()
        rss_before, tasks_before = rss_kib(), pending_tasks()
        answered = failed = 0
        started = time.monotonic()
        for i in range(calls):
            result = shell.run_cell(f"%pizza --no-cache soak question {i}")
            if result.success:
                assert f"soak question {i}" in result.result.text
                answered += 1
            else:
                assert isinstance(result.error_in_exec, UsageError)
                assert "\n" not in str(result.error_in_exec)
                failed += 1
        elapsed = time.monotonic() - started
        gc.collect()
        assert answered + failed == calls
        assert answered > calls * 0.9  # one retry recovers most of the 10% faults
        assert pending_tasks() == tasks_before == 0
        assert rss_kib() - rss_before < 20 * 1024, "memory should stay flat"
        assert elapsed < 120  # no hang
        assert noisy.connections < 200  # dropped connections are replaced, nothing piles up


def test_run_all_stops_at_the_failure_and_reruns_after_restart(emulator):
    cells = [nbformat.v4.new_code_cell("%load_ext pizzagpt_magic")]
    cells += [nbformat.v4.new_code_cell(f"%pizza --no-cache cell {i}") for i in range(20)]
    cells[9] = nbformat.v4.new_code_cell("%pizza --no-cache [[fault:status=500;times=1]] cell 8")
    cells[15] = nbformat.v4.new_code_cell("%pizza --no-cache {not_defined_yet} cell 14")
    cells.insert(15, nbformat.v4.new_code_cell("not_defined_yet = 'defined'"))
    nb = nbformat.v4.new_notebook(cells=cells)
    previous = os.environ.get("PIZZAGPT_URL")
    os.environ["PIZZAGPT_URL"] = emulator.url
    try:
        client = NotebookClient(nb, timeout=60, kernel_name="python3")
        with pytest.raises(CellExecutionError) as info:
            client.execute()
        assert info.value.ename == "UsageError" and "HTTP 500" in info.value.evalue
        ran = [bool(cell.outputs) for cell in nb.cells]
        assert ran[:10] == [False] + [True] * 9  # %load_ext prints nothing
        assert not any(ran[10:])  # stopped exactly there, as for any failing cell
        for cell in nb.cells:
            cell.outputs = []
        second = NotebookClient(nb, timeout=60, kernel_name="python3")
        second.execute()  # a fresh kernel: the fault fired once and is spent
        answers = [cell for cell in nb.cells if "%pizza" in cell.source]
        assert len(answers) == 20 and all(
            any(o.output_type == "execute_result" for o in cell.outputs) for cell in answers
        )
        assert "> defined cell 14" in str(nb.cells[16].outputs)
    finally:
        if previous is None:
            os.environ.pop("PIZZAGPT_URL", None)
        else:
            os.environ["PIZZAGPT_URL"] = previous


# -- hostile input ------------------------------------------------------------------------------

LINE_PIECES = [
    "-m",
    "-f",
    "json",
    "--format",
    "-o",
    "x",
    "-s",
    "'",
    '"',
    "--",
    "-c",
    "--reset",
    "--timeout",
    "0",
    "-1",
    "{",
    "}",
    "{x}",
    "{{",
    "}}",
    "?",
    ";",
    "--each",
    "=",
    "--no-cache",
    "--proxy",
    "http://u:p@h",
    "word",
    " ",
    "\\",
    "\t",
    "-",
]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.sampled_from(LINE_PIECES), max_size=8).map(" ".join)
    | st.text(alphabet=string.printable, max_size=40)
)
def test_option_parsing_fuzz(shell, line):
    """Any %pizza line is answered, or refused with one UsageError line; nothing else."""
    shell.user_ns["x"] = 1
    pizza = magics(shell)
    pizza.retries = 0
    try:
        result = pizza.pizza(line)
    except UsageError as exc:
        assert "\n" not in str(exc)
    else:
        assert result is None or hasattr(result, "_repr_mimebundle_")
    options, prompt = split_options(line, PizzaMagics.pizza.parser._option_string_actions)
    assert line.startswith(options) and prompt == prompt.strip()
