"""run_sync: the private loop, a running (re-entrant) loop, the worker thread, interrupts."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from pizzagpt_magic import ask
from pizzagpt_magic.loop import run_sync
from pizzagpt_magic.session import close_session, get_session


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


def test_each_loop_has_its_own_session_and_a_closed_one_is_replaced(emu):
    """The session a request takes is its own loop's, however the loops take turns."""

    async def session_of_a_question(close: bool = False) -> object:
        ask("which session?")
        session = await get_session()
        if close:
            await close_session()
        return session

    one, two = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        first = one.run_until_complete(session_of_a_question())
        other = two.run_until_complete(session_of_a_question())
        assert other is not first
        assert one.run_until_complete(session_of_a_question(close=True)) is first
        assert first.closed
        again = one.run_until_complete(session_of_a_question())
        assert again is not first and not again.closed
        assert two.run_until_complete(session_of_a_question()) is other
    finally:
        for loop in (one, two):
            loop.run_until_complete(close_session())
            loop.close()


def test_other_threads_share_the_worker_loop():
    loops = []
    for _ in range(2):
        thread = threading.Thread(target=lambda: loops.append(run_sync(loop_of())))
        thread.start()
        thread.join()
    assert loops[0] is loops[1]
    assert loops[0] is not run_sync(loop_of())


def test_inside_a_running_loop_uses_that_loop(emu):
    async def main():
        loop = asyncio.get_running_loop()
        assert run_sync(loop_of()) is loop
        answer = ask("nested")  # synchronous call inside a coroutine
        return answer

    loop = asyncio.new_event_loop()
    try:
        assert "Emulated" in loop.run_until_complete(main())
    finally:
        loop.run_until_complete(close_session())
        loop.close()


def test_deferred_interrupts_wait_on_the_worker(emu):
    """A framework that turns Ctrl-C into a cancel of its task (ipykernel for async cells,
    asyncio.run) would never see that cancel run under a nested wait: the call waits on the
    worker loop instead, with KeyboardInterrupt in place meanwhile."""
    import signal

    def deferring_handler(signum, frame):  # what such a framework installs
        pass

    seen = []

    async def main():
        loop = asyncio.get_running_loop()
        previous = signal.signal(signal.SIGINT, deferring_handler)
        try:
            assert run_sync(loop_of()) is not loop
            seen.append(signal.getsignal(signal.SIGINT))
            return ask("nested under a deferring handler")
        finally:
            signal.signal(signal.SIGINT, previous)

    loop = asyncio.new_event_loop()
    try:
        assert "Emulated" in loop.run_until_complete(main())
    finally:
        loop.close()
    assert seen == [deferring_handler]  # restored after the wait


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


def _open_descriptors() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


def test_threads_share_one_loop_and_pool(emu):
    """Every thread without a loop of its own asks through one shared worker loop: loops,
    descriptors and connections stay bounded however many threads ask."""
    import gc

    from pizzagpt_magic.session import POOL_LIMIT

    def ask_in_threads(count: int, together: bool) -> list[str]:
        answers: list[str] = []
        threads = [
            threading.Thread(target=lambda i=i: answers.append(ask(f"thread {i}")))
            for i in range(count)
        ]
        for thread in threads:
            thread.start()
            if not together:
                thread.join(30)
        for thread in threads:
            thread.join(30)
        return answers

    def open_loops() -> int:
        loops = [o for o in gc.get_objects() if isinstance(o, asyncio.BaseEventLoop)]
        return sum(not loop.is_closed() for loop in loops)

    assert len(ask_in_threads(1, together=False)) == 1
    descriptors, connections, loops = _open_descriptors(), emu.connections, open_loops()
    # One after another (a thread per task, as a ThreadPoolExecutor's turnover gives):
    # nothing grows per thread.
    assert len(ask_in_threads(200, together=False)) == 200
    assert _open_descriptors() - descriptors <= 4
    assert emu.connections - connections <= 2
    # All at once: the shared pool's limit bounds connections, not the number of threads (the
    # emulator runs in this process, so each connection is two descriptors here).
    assert len(ask_in_threads(200, together=True)) == 200
    assert _open_descriptors() - descriptors <= 2 * POOL_LIMIT + 4
    assert open_loops() == loops
