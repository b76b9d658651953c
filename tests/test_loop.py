"""run_sync: the private loop, a running (re-entrant) loop, the worker thread, interrupts."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from pizzagpt_magic import ask
from pizzagpt_magic.loop import run_sync
from pizzagpt_magic.session import get_session


async def loop_of() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_private_loop_persists_between_calls():
    first = run_sync(loop_of())
    second = run_sync(loop_of())
    assert first is second and not first.is_running()


def test_private_loop_keeps_the_session(emu):
    ask("one")
    session = run_sync(get_session())
    ask("two")
    assert run_sync(get_session()) is session
    assert emu.connections == 1


def test_each_thread_has_its_own_private_loop():
    loops = []
    thread = threading.Thread(target=lambda: loops.append(run_sync(loop_of())))
    thread.start()
    thread.join()
    assert loops[0] is not run_sync(loop_of())


def test_inside_a_running_loop_uses_that_loop(emu):
    async def main():
        loop = asyncio.get_running_loop()
        assert run_sync(loop_of()) is loop
        answer = ask("nested")  # synchronous call inside a coroutine
        return answer

    assert "Emulated" in asyncio.run(main())


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not on Windows")
def test_unpatchable_loop_falls_back_to_a_worker_thread(emu):
    uvloop = pytest.importorskip("uvloop")

    async def main():
        loop = asyncio.get_running_loop()
        worker_loop = run_sync(loop_of())
        assert worker_loop is not loop
        return ask("from uvloop"), worker_loop

    loop = uvloop.new_event_loop()
    try:
        answer, worker_loop = loop.run_until_complete(main())
    finally:
        loop.close()
    assert "Emulated" in answer
    assert worker_loop.is_running()  # the worker's persistent loop serves later calls too


def interrupt_soon(loop, delay=0.05):
    def fire():
        raise KeyboardInterrupt

    return loop.call_later(delay, fire)


async def slow(state: dict[str, bool]) -> None:
    """Sleep until cancelled, then clean up (with an await of its own) and note it in state."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        state["cancelled"] = True
        await asyncio.sleep(0.01)
        state["cleaned"] = True
        raise


def test_interrupt_cancels_and_awaits_the_task():
    state: dict[str, bool] = {}

    async def main():
        loop = asyncio.get_running_loop()
        interrupt_soon(loop)
        with pytest.raises(KeyboardInterrupt):
            run_sync(slow(state))
        assert state == {"cancelled": True, "cleaned": True}
        leftovers = [t for t in asyncio.all_tasks(loop) if t is not asyncio.current_task()]
        assert leftovers == []
        assert run_sync(loop_of()) is loop  # the loop is still usable

    asyncio.run(main())


def test_interrupt_on_private_loop():
    loop = run_sync(loop_of())
    interrupt_soon(loop)
    with pytest.raises(KeyboardInterrupt):
        run_sync(asyncio.sleep(30))
    assert [t for t in asyncio.all_tasks(loop) if not t.done()] == []
    assert run_sync(loop_of()) is loop


def test_exceptions_propagate_unchanged():
    async def fail():
        raise LookupError("boom")

    with pytest.raises(LookupError, match="boom"):
        run_sync(fail())


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop and SIGINT are POSIX here")
def test_interrupt_in_the_worker_thread_fallback():
    import os
    import signal

    uvloop = pytest.importorskip("uvloop")
    state: dict[str, bool] = {}

    async def main():
        # A real SIGINT, as a kernel interrupt sends, while the caller waits on the worker.
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            run_sync(slow(state))
        timer.join()
        worker_loop = run_sync(loop_of())

        async def pending():
            return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

        return worker_loop, await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(pending(), worker_loop)
        )

    loop = uvloop.new_event_loop()
    try:
        worker_loop, leftovers = loop.run_until_complete(main())
    finally:
        loop.close()
    assert state == {"cancelled": True, "cleaned": True}  # waited for, before the interrupt
    assert leftovers == [] and worker_loop.is_running()
