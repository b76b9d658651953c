"""Provider batch jobs in a real kernel: a 1,000-row frame submitted as one file of its 100
distinct prompts, a restart while the job runs (the rerun submits nothing and gets the answers),
an interrupt that leaves the job running, failed lines as ``_error`` and a rerun of only them,
a split job, cancel, and the key in no file of the store."""

from __future__ import annotations

import json
import time

import pytest
from kernel_helpers import Kernel, error_of, result_text, stderr_of
from keys import API_KEY

from pizzagpt_magic.emulator import EmulatorThread

pytestmark = pytest.mark.kernel
pytest.importorskip("pandas")

SETUP = """
%load_ext pizzagpt_magic
import pandas as pd
from pizzagpt_magic import register_endpoint
register_endpoint('emu', '{url}/v1', api_key_env='EMU_API_KEY', batch_api=True)
%config PizzaMagics.progress = False
%config PizzaMagics.batch_poll = 0.1
reviews = pd.DataFrame({{'text': [f'review number {{i % 100}}' for i in range(1000)]}})
"""
CELL = "%%pizza --each reviews --batch-api -m emu:emu-mini -o labels\nLabel {item.text}"


@pytest.fixture
def emu():
    with EmulatorThread(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def kernel(emu, tmp_path):
    kernel = Kernel({"EMU_API_KEY": API_KEY, "PIZZAGPT_STORE": str(tmp_path / "store.sqlite3")})
    assert error_of(kernel.execute(SETUP.format(url=emu.url))) is None
    yield kernel
    kernel.shutdown()


def lines_of(emu) -> list[int]:
    return [
        len(f["content"].splitlines())
        for f in emu.emulator.files.values()
        if f["purpose"] == "batch"
    ]


def wait_for_jobs(emu, count: int = 1) -> None:
    deadline = time.monotonic() + 30
    while len(emu.emulator.openai_batches) < count:
        assert time.monotonic() < deadline, "no job was submitted"
        time.sleep(0.05)


def wait_for_the_store(path, count: int = 1) -> None:
    """Until the store on disk holds ``count`` jobs: the kernel records a job as soon as the
    provider has accepted it (a kill in the milliseconds between loses the record, and the
    rerun submits again)."""
    import sqlite3
    from contextlib import closing

    deadline = time.monotonic() + 30
    while True:
        try:
            with closing(sqlite3.connect(path)) as connection:
                if connection.execute("SELECT count(*) FROM jobs").fetchone()[0] >= count:
                    return
        except sqlite3.Error:
            pass
        assert time.monotonic() < deadline, "the job was not recorded"
        time.sleep(0.05)


def test_a_restart_while_the_job_runs_then_the_rerun_gets_the_answers(emu, kernel, tmp_path):
    emu.emulator.batch_delay = 4
    kernel.submit(CELL)
    wait_for_jobs(emu)
    wait_for_the_store(tmp_path / "store.sqlite3")
    assert lines_of(emu) == [100]
    kernel.manager.restart_kernel(now=True)
    kernel.client.wait_for_ready(timeout=60)
    assert error_of(kernel.execute(SETUP.format(url=emu.url))) is None
    messages = kernel.execute(CELL, timeout=120)
    assert error_of(messages) is None
    assert lines_of(emu) == [100] and len(emu.emulator.openai_batches) == 1
    facts = kernel.execute(
        "(len(labels), int(labels.isna().sum()), labels.iloc[0] == labels.iloc[100])"
    )
    assert result_text(facts) == "(1000, 0, True)"
    listing = result_text(kernel.execute("%pizza --jobs"))
    assert "emu:emu-mini" in listing and "completed" in listing
    for path in tmp_path.iterdir():
        assert API_KEY.encode() not in path.read_bytes()


def test_an_interrupt_leaves_the_job_running(emu, kernel):
    emu.emulator.batch_delay = 30
    msg_id = kernel.submit(CELL)
    wait_for_jobs(emu)
    time.sleep(0.5)
    kernel.manager.interrupt_kernel()
    messages = kernel.collect([msg_id], 30)[msg_id]
    assert "KeyboardInterrupt" in json.dumps(error_of(messages))
    assert "keeps running" in stderr_of(messages)
    (job,) = emu.emulator.openai_batches.values()
    assert job["status"] == "in_progress"
    emu.emulator.batch_delay = 0
    assert error_of(kernel.execute(CELL, timeout=120)) is None
    assert len(emu.emulator.openai_batches) == 1


def test_failed_lines_typed_columns_a_split_and_cancel(emu, kernel):
    pytest.importorskip("jsonschema")
    cell = (
        "%%pizza --each rows --batch-api -m emu:emu-mini --schema 'stars int' -o typed\n"
        "How many stars: {item}"
    )
    setup = (
        "%config PizzaMagics.batch_max_requests = 4\n"
        "rows = [f'{i} stars' + (' [[batch:fail]]' if i == 3 else '') for i in range(10)]"
    )
    assert error_of(kernel.execute(setup)) is None
    messages = kernel.execute(cell, timeout=120)
    assert "1 of 10" in json.dumps(error_of(messages))
    assert lines_of(emu) == [4, 4, 2]
    facts = kernel.execute(
        "(str(typed['stars'].dtype), int(typed['_error'].notna().sum()), "
        "'emulated failure' in typed['_error'][3])"
    )
    assert result_text(facts) == "('Int64', 1, True)"
    kernel.execute(cell, timeout=120)
    assert lines_of(emu) == [4, 4, 2, 1]
    emu.emulator.batch_delay = 30
    handle = "%%pizza --each more --batch-api --no-wait -m emu:emu-mini -o h\nLabel {item}"
    assert error_of(kernel.execute("more = ['x', 'y']")) is None
    assert error_of(kernel.execute(handle)) is None
    job_id = result_text(kernel.execute("h.id")).strip("'")
    cancelled = result_text(kernel.execute(f"%pizza --jobs cancel {job_id}"))
    assert "cancel" in cancelled
    assert emu.emulator.openai_batches[job_id]["status"] in ("cancelling", "cancelled")
