"""The store: a SQLite cache and log shared by the API, the magics and the command line, across
processes; and what happens when the file cannot be used."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import warnings
from contextlib import closing
from pathlib import Path

import pytest
from keys import API_KEY
from test_magics import cell, failing, magics

from pizzagpt_magic import api
from pizzagpt_magic import store as stores
from pizzagpt_magic.cli import main
from pizzagpt_magic.loop import run_sync
from pizzagpt_magic.store import Store, StoreWarning


@pytest.fixture
def store_file(tmp_path, monkeypatch):
    """A store of the test's own, in effect through $PIZZAGPT_STORE."""
    path = tmp_path / "store.sqlite3"
    monkeypatch.setenv("PIZZAGPT_STORE", str(path))
    monkeypatch.setattr(stores, "_warned", False)
    yield path
    stores.forget_stores()


def rows(path: Path, sql: str) -> list[tuple]:
    stores.forget_stores()  # every write on disk first
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute(sql).fetchall()


def test_the_api_answers_from_the_store_across_processes(store_file, emu):
    first = api.ask("What is 6 times 7?")
    assert api.ask("What is 6 times 7?") == first and emu.requests == 1
    # Another process (here: a fresh interpreter) finds the answer too.
    script = "from pizzagpt_magic import ask; print(ask('What is 6 times 7?'))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == first.strip() and emu.requests == 1
    # cache=False asks again, and keeps the new answer.
    api.ask("What is 6 times 7?", cache=False)
    assert emu.requests == 2
    logged = rows(store_file, "SELECT source, cached, prompt FROM log ORDER BY id")
    assert logged == [
        ("api", 0, "What is 6 times 7?"),
        ("api", 1, "What is 6 times 7?"),
        ("api", 1, "What is 6 times 7?"),
        ("api", 0, "What is 6 times 7?"),
    ]
    assert rows(store_file, "PRAGMA user_version") == [(stores.SCHEMA_VERSION,)]
    assert rows(store_file, "PRAGMA journal_mode") == [("wal",)]


def test_the_cache_key_knows_the_server_and_the_parameters(store_file, emu, endpoint):
    api.ask("hi there", model="emu:emu-mini", temperature=0.1)
    api.ask("hi there", model="emu:emu-mini", temperature=0.2)
    api.ask("hi there", model="emu:emu-large", temperature=0.2)
    assert endpoint.requests == 3
    api.ask("hi there", model="emu:emu-mini", temperature=0.1)
    assert endpoint.requests == 3
    completion = run_sync(api.complete("hi there", model="emu:emu-mini", temperature=0.1))
    assert completion.cached and completion.usage["total_tokens"] > 0  # metadata kept
    api.ask("hi there")  # the same words to Pizzagpt: its own answer
    assert emu.requests == 1


def test_failures_are_logged_with_their_one_line_error(store_file, emu):
    with pytest.raises(Exception, match="HTTP 500"):
        api.ask("broken [[fault:status=500]]", max_retries=0)
    ((error, answer),) = rows(store_file, "SELECT error, answer FROM log")
    assert error.startswith("HTTPStatusError: HTTP 500") and answer is None


def test_magics_use_the_store_and_log_where_they_were_asked(store_file, shell, emu, capsys):
    cell(shell, "%pizza What is 2 + 2?")
    magics(shell).conversation.cache.clear()  # as after a restart: memory is empty
    again = cell(shell, "%pizza What is 2 + 2?")
    assert again.completion.cached and emu.requests == 1
    cell(shell, "%pizza --no-log Not to be logged")
    magics(shell).log = False
    cell(shell, "%pizza Nor this")
    magics(shell).log = True
    os.environ["PIZZAGPT_LOG"] = "0"
    try:
        cell(shell, "%pizza Nor this one")
    finally:
        del os.environ["PIZZAGPT_LOG"]
    logged = rows(store_file, "SELECT source, cell, cached, prompt FROM log ORDER BY id")
    assert [r[3] for r in logged] == ["What is 2 + 2?", "What is 2 + 2?"]
    assert all(r[0] == "magic" for r in logged) and [r[2] for r in logged] == [0, 1]
    assert logged[0][1] is not None


def test_log_shows_the_newest_exchanges_safely(store_file, shell, emu):
    from test_render import audit

    cell(shell, "%pizza [[echo]]Hi <img src=x onerror=alert(1)> [x](javascript:alert(1))[[/echo]]")
    cell(shell, "%pizza Second question")
    shown = cell(shell, "%pizza --log 5")
    html = shown._repr_mimebundle_()["text/html"]
    assert audit(html) == []
    assert "Second question" in str(shown) and "&lt;img src=x" in html
    assert str(cell(shell, "%pizza --log 1 --full")).count("You:") == 1
    assert audit(cell(shell, "%pizza --log 5 --full")._repr_mimebundle_()["text/html"]) == []
    assert "at least 1" in failing(shell, "%pizza --log 0")
    assert "take no question" in failing(shell, "%pizza --log 3 a question")


def test_a_batch_larger_than_the_memory_cache_is_served_whole_when_rerun(store_file, shell, emu):
    magics(shell).cache_size = 16
    shell.user_ns["items"] = list(range(300))
    cell(shell, "%%pizza --each items -o out --concurrency 16\nItem {item}?")
    assert emu.requests == 300
    cell(shell, "%%pizza --each items -o again --concurrency 16\nItem {item}?")
    assert emu.requests == 300  # not one request more
    assert shell.user_ns["again"] == shell.user_ns["out"]


def test_command_line_cache_and_logs(store_file, emu, capsys):
    assert main(["ask", "What is 1 + 1?"]) == 0
    assert main(["ask", "What is 1 + 1?"]) == 0 and emu.requests == 1
    assert main(["ask", "--no-cache", "--no-log", "What is 1 + 1?"]) == 0 and emu.requests == 2
    capsys.readouterr()
    assert main(["logs", "--json", "-n", "5"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["source"], r["cached"]) for r in records] == [("cli", True), ("cli", False)]
    assert main(["logs", "-q", "1 + 1", "-m", "gpt-4o-mini", "--since", "1h"]) == 0
    assert capsys.readouterr().out.count("  gpt-4o-mini  cli") == 2
    assert main(["logs", "-q", "umbrella"]) == 0 and capsys.readouterr().out == ""
    assert main(["logs", "--since", "yesterday-ish"]) == 2
    assert main(["cache", "info"]) == 0
    info = capsys.readouterr().out
    assert f"path: {store_file}" in info and "cached answers: 1 " in info
    assert "logged exchanges: 2" in info
    assert main(["cache", "clear"]) == 0 and "Cleared 1 cached answers" in capsys.readouterr().out
    assert main(["logs", "--prune", "--older-than", "0"]) == 0
    assert "Deleted 2 exchanges" in capsys.readouterr().out


def test_logs_from_python(store_file, emu):
    api.ask("alpha question")
    api.ask("beta question", system="be brief")
    import pizzagpt_magic

    frame = pizzagpt_magic.logs(10)
    assert list(frame["prompt"]) == ["beta question", "alpha question"]
    assert frame["system"].iloc[0] == "be brief"
    assert list(stores.logs(query="alpha")["prompt"]) == ["alpha question"]
    assert len(stores.logs(since="1d")) == 2


def test_the_cache_is_bounded_least_recently_used_first(tmp_path):
    store = Store(tmp_path / "s.sqlite3", cache_max_mb=0.01)  # about 10 kB
    text = "x" * 1000
    for i in range(40):
        store.put(f"key{i}", "p", "m", text, {})
        if i == 0:
            store.flush()
            assert store.get("key0")  # used: moves to the back of the queue
    store.flush()
    with closing(sqlite3.connect(store.path)) as connection:
        (size,) = connection.execute("SELECT sum(size) FROM cache").fetchone()
    store._queue.put(store._trim)
    store.flush()
    info = store.info()
    assert info["cache_bytes"] <= store.cache_max_bytes < size
    assert store.get("key39") is not None and store.get("key1") is None
    store.close()


def test_an_old_store_is_migrated_and_a_newer_one_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(stores, "_warned", False)
    path = tmp_path / "s.sqlite3"
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA user_version = 0")  # an empty file of no version
    store = Store(path)
    assert store.usable
    store.close()
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.warns(StoreWarning, match="newer than this package"):
        assert not Store(path).usable


# -- faults ------------------------------------------------------------------------------------


def one_warning_then_answers(emu, question):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "Emulated" in api.ask(question)
        assert "Emulated" in api.ask(question + " again")
    store_warnings = [w for w in caught if issubclass(w.category, StoreWarning)]
    assert len(store_warnings) == 1, [str(w.message) for w in caught]
    assert "answers are kept in memory only" in str(store_warnings[0].message)
    return str(store_warnings[0].message)


def test_a_corrupt_store(store_file, emu):
    store_file.write_bytes(b"this is not a database, but the user's unlucky file" * 100)
    message = one_warning_then_answers(emu, "corrupt?")
    assert "not a database" in message


def test_a_store_that_cannot_be_created(tmp_path, monkeypatch, emu):
    monkeypatch.setattr(stores, "_warned", False)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("PIZZAGPT_STORE", str(blocker / "store.sqlite3"))
    one_warning_then_answers(emu, "unwritable?")
    stores.forget_stores()


def test_a_read_only_directory(tmp_path, monkeypatch, emu):
    monkeypatch.setattr(stores, "_warned", False)
    if os.geteuid() == 0:
        # Permissions do not stop root; a directory of the proc file system does.
        folder = Path(f"/proc/{os.getpid()}")
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
    with pytest.raises(OSError):
        (folder / "probe").write_text("")  # the directory really is not writable
    monkeypatch.setenv("PIZZAGPT_STORE", str(folder / "store.sqlite3"))
    try:
        one_warning_then_answers(emu, "read-only?")
    finally:
        if folder.is_relative_to(tmp_path):
            folder.chmod(0o700)
        stores.forget_stores()


def test_a_store_locked_too_long(store_file, emu, monkeypatch):
    monkeypatch.setattr(stores, "BUSY_TIMEOUT", 0.3)
    Store(store_file).close()  # created
    holder = sqlite3.connect(store_file, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert "Emulated" in api.ask("locked?")
            assert "Emulated" in api.ask("locked, again?")
            stores.forget_stores()
        messages = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
        assert len(messages) == 1 and "locked" in messages[0]
    finally:
        holder.execute("ROLLBACK")
        holder.close()


FULL_DISK = """
import resource, signal, sys, warnings
from pizzagpt_magic import ask
from pizzagpt_magic.store import StoreWarning
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (96 * 1024, resource.RLIM_INFINITY))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for i in range(60):
        answer = ask(f"question {i} " + "with a long tail " * 200)
        assert "Emulated" in answer
    from pizzagpt_magic.store import forget_stores
    forget_stores()
store_warnings = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
print(len(store_warnings), store_warnings[0] if store_warnings else "")
"""


def test_a_full_disk(store_file, emu):
    """Files may not grow past 96 kB (RLIMIT_FSIZE: what a full disk does to a write)."""
    env = {**os.environ, "PIZZAGPT_URL": emu.url}
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    count, _, message = out.stdout.strip().partition(" ")
    assert count == "1" and ("full" in message or "disk" in message or "I/O" in message), out
    assert emu.requests == 60


WRITER = """
import sys
from pizzagpt_magic.store import Store
store = Store(sys.argv[1])
for i in range(1000):
    store.log({"provider": "p", "model": "m", "prompt": f"{sys.argv[2]} {i}", "answer": "a",
               "source": "test", "messages": []})
    if i % 3 == 0:
        store.put(f"{sys.argv[2]}-{i}", "p", "m", "answer", {})
store.close()
assert store.usable, store.failed
"""


def test_two_processes_write_at_once(tmp_path):
    path = tmp_path / "shared.sqlite3"
    Store(path).close()
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), name], stderr=subprocess.PIPE)
        for name in ("first", "second")
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err.decode()[-2000:]
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("SELECT count(*) FROM log").fetchone() == (2000,)
        assert connection.execute("SELECT count(*) FROM cache").fetchone() == (668,)
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_no_secret_reaches_the_file(store_file, endpoint, emu, monkeypatch):
    api.ask("with a key", model="emu:emu-mini")
    password = "proxy-pass-93c1f0"
    with pytest.raises(Exception, match="proxy"):
        api.ask("through a proxy", proxy=f"http://user:{password}@127.0.0.1:9", max_retries=0)
    monkeypatch.setenv("EMU_API_KEY", API_KEY + "-refused")
    with pytest.raises(Exception, match="refused the API key"):
        api.ask("refused key", model="emu:emu-mini")
    stores.forget_stores()
    data = b"".join(
        p.read_bytes() for p in store_file.parent.iterdir() if p.name.startswith("store")
    )
    assert b"with a key" in data and b"through a proxy" in data  # the log is there...
    assert API_KEY.encode() not in data and password.encode() not in data  # ...no secret


# -- the store survives a killed kernel; an interrupted batch resumes --------------------------


@pytest.mark.kernel
def test_a_killed_kernel_loses_no_answer_and_the_rerun_asks_only_the_rest(tmp_path):
    import time

    from kernel_helpers import Kernel, error_of, result_text

    from pizzagpt_magic.emulator import EmulatorThread

    store = tmp_path / "store.sqlite3"
    batch = "%%pizza --each items -o out --concurrency 4\n{item}"
    setup = "%load_ext pizzagpt_magic\nitems = [f'item number {i}' for i in range(200)]"
    with EmulatorThread(latency=0.05) as emu:
        env = {"PIZZAGPT_URL": emu.url, "PIZZAGPT_STORE": str(store)}
        kernel = Kernel(env)
        try:
            assert error_of(kernel.execute(setup)) is None
            kernel.submit(batch)
            deadline = time.monotonic() + 60
            while emu.requests < 100:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            process = kernel.manager.provisioner.process
            os.kill(process.pid, 9)  # SIGKILL, mid-batch
            process.wait(10)
        finally:
            kernel.client.stop_channels()
            kernel.manager.cleanup_resources()
        answered = emu.requests
        assert answered < 200
        emu.reset_stats()
        kernel = Kernel(env)
        try:
            assert error_of(kernel.execute(setup)) is None
            messages = kernel.execute(batch, timeout=120)
            assert error_of(messages) is None
            assert result_text(kernel.execute("sum(a is not None for a in out)")) == "200"
        finally:
            kernel.shutdown()
    missing = 200 - answered
    # Only the items with no answer yet: at most those, plus the 4 in flight at the kill and
    # an answer or two that arrived in the last milliseconds, before the writer's commit.
    assert missing <= emu.requests <= missing + 6, (answered, emu.requests)


@pytest.mark.kernel
def test_an_interrupted_batch_keeps_its_answers_and_resumes(tmp_path):
    import time

    from kernel_helpers import Kernel, error_of, result_text, stderr_of

    from pizzagpt_magic.emulator import EmulatorThread

    batch = "%%pizza --each items -o out --concurrency 4\n{item}"
    with EmulatorThread(latency=0.1) as emu:
        kernel = Kernel({"PIZZAGPT_URL": emu.url, "PIZZAGPT_STORE": str(tmp_path / "s.db")})
        try:
            setup = "%load_ext pizzagpt_magic\nitems = [f'question {i}' for i in range(200)]"
            assert error_of(kernel.execute(setup)) is None
            msg_id = kernel.submit(batch)
            while emu.requests < 60:
                time.sleep(0.01)
            kernel.manager.interrupt_kernel()
            messages = kernel.collect([msg_id], timeout=30)[msg_id]
            messages.append({"msg_type": "reply", "content": kernel.reply(msg_id)})
            assert error_of(messages)["ename"] == "KeyboardInterrupt"
            kept = int(result_text(kernel.execute("sum(a is not None for a in out)")))
            assert 50 <= kept < 200
            assert f"Interrupted: {kept} of 200 answers kept in 'out'" in stderr_of(messages)
            time.sleep(0.3)
            asked = emu.requests
            assert error_of(kernel.execute(batch, timeout=120)) is None
            assert result_text(kernel.execute("sum(a is not None for a in out)")) == "200"
            # The rerun asked only for what had not arrived.
            assert emu.requests - asked == 200 - kept
        finally:
            kernel.shutdown()


@pytest.mark.skipif(sys.platform != "linux", reason="XDG_DATA_HOME is where Linux keeps user data")
def test_the_store_location_follows_the_environment(tmp_path, monkeypatch):
    """Where the store is, found once per setting, still follows every change."""
    monkeypatch.delenv("PIZZAGPT_STORE", raising=False)
    for name in ("one", "two", "one"):
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / name))
        assert stores.store_path() == tmp_path / name / "pizzagpt-magic" / "store.sqlite3"
    assert stores.store_path(" ") is None and stores.store_path(str(tmp_path)) == tmp_path
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert stores.store_path("~/s.db") == tmp_path / "home" / "s.db"
    monkeypatch.setenv("HOME", str(tmp_path / "other"))
    assert stores.store_path("~/s.db") == tmp_path / "other" / "s.db"
    monkeypatch.setenv("PIZZAGPT_STORE", "")
    assert stores.store_path(str(tmp_path)) is None


def test_a_store_of_the_first_schema_gains_the_prompt_cache_columns(tmp_path):
    path = tmp_path / "old.sqlite3"
    with closing(sqlite3.connect(path)) as connection:
        for statement in stores.MIGRATIONS[1]:
            connection.execute(statement)
        connection.execute("PRAGMA user_version = 1")
        connection.execute(
            "INSERT INTO log (time, provider, model, parameters, messages, prompt, answer, "
            "prompt_tokens, source) VALUES (1, 'openai', 'm', '{}', '[]', 'old', 'a', 3, 'api')"
        )
        connection.commit()
    store = Store(path)
    store.log(
        {
            "provider": "anthropic",
            "model": "claude",
            "prompt": "new",
            "answer": "b",
            "usage": {"prompt_tokens": 150, "cache_read_input_tokens": 120},
        }
    )
    records = store.records(None)
    store.close()
    assert [(r["prompt"], r["prompt_tokens"], r["cache_read_input_tokens"]) for r in records] == [
        ("new", 150, 120),
        ("old", 3, None),
    ]
    assert rows(path, "PRAGMA user_version") == [(stores.SCHEMA_VERSION,)]


def _logged(store: Store, prompt: str) -> None:
    store.log({"provider": "p", "model": "m", "prompt": prompt, "source": "test", "messages": []})


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_store_file_deleted_or_replaced_in_use_is_noticed(tmp_path, monkeypatch, how):
    monkeypatch.setattr(stores, "_warned", False)
    path = tmp_path / "store.sqlite3"
    store = Store(path)
    _logged(store, "before")
    assert store.flush()
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        other = Store(tmp_path / "other.sqlite3")
        other.close()
        os.replace(tmp_path / "other.sqlite3", path)
    with pytest.warns(StoreWarning, match=f"was {how} while in use"):
        _logged(store, "after")
        assert store.flush()
    assert not store.usable  # memory only from here: nothing goes into the old file unseen
    store.close()


FULL_WRITES = """
import resource, signal, sys, warnings
from pizzagpt_magic.store import Store, StoreWarning
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100 * 1024, resource.RLIM_INFINITY))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    store = Store(sys.argv[1])
    for i in range(200):
        store.log({"provider": "p", "model": "m", "prompt": f"{i} " + "tail " * 700,
                   "source": "t", "messages": []})
    store.flush()
print(store.failed)
"""


def test_a_full_disk_names_its_own_error(tmp_path):
    """SQLite rolls a transaction back by itself when a write fails for want of space; a
    second ROLLBACK must not hide that cause behind "cannot rollback - no transaction is
    active"."""
    out = subprocess.run(
        [sys.executable, "-c", FULL_WRITES, str(tmp_path / "store.sqlite3")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "rollback" not in out.stdout and ("full" in out.stdout or "I/O" in out.stdout), out


@pytest.mark.parametrize(
    "argv",
    [
        ["logs", "--prune", "--older-than", "-1"],
        ["logs", "--prune", "--older-than", "nan"],
        ["logs", "--prune", "--older-than", "inf"],
        ["logs", "-n", "-1"],
    ],
)
def test_negative_and_non_finite_counts_are_refused(store_file, emu, capsys, argv):
    api.ask("kept")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "0 or more" in err
    assert len(api.stores.get_store().records(None)) == 1
    with pytest.raises(ValueError):
        api.stores.get_store().prune(float("nan"))
    with pytest.raises(ValueError):
        api.stores.get_store().records(-1)


@pytest.mark.parametrize(
    "argv", [["logs"], ["cache", "info"], ["logs", "--prune", "--older-than", "1"]]
)
def test_reading_commands_do_not_make_a_store(tmp_path, monkeypatch, capsys, argv):
    path = tmp_path / "nowhere" / "store.sqlite3"
    monkeypatch.setenv("PIZZAGPT_STORE", str(path))
    assert main(argv) == 1
    assert f"no store at {path}" in capsys.readouterr().err
    assert stores.logs() == [] and stores.logs(path=str(path)) == []
    assert not path.exists() and not path.parent.exists()
