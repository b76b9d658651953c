"""Run a coroutine to completion from synchronous code, on the right event loop.

``run_sync`` picks, in order:

1. the loop already running in this thread (a Jupyter kernel's), made re-entrant with
   ``nest_asyncio2`` the first time it is needed, never at import;
2. with no running loop in the main thread (terminal IPython, a script, pytest), one persistent
   private loop, so the keep-alive session survives from call to call;
3. one shared worker loop, in a daemon thread, for everything else: other threads (however many
   ask, they share its one session and connection pool, so nothing grows per thread), a running
   loop that cannot be patched (uvloop, for one), and a call made inside a running task whose
   interrupts are not Python's ``KeyboardInterrupt`` (a notebook cell with top-level ``await``:
   ipykernel then only schedules a cancel on the loop, which a nested wait would never let run,
   so the wait happens on the worker with Python's own SIGINT handler in place).

Whichever it is, a ``KeyboardInterrupt`` (a kernel interrupt, Ctrl-C) while waiting cancels the
task and waits for it to wind down before the interrupt propagates, so nothing keeps running on
the loop and nothing lands in a later cell.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import signal
import threading
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["close_private_loops", "run_sync"]

T = TypeVar("T")

logger = logging.getLogger(__name__)

_local = threading.local()
_private_loops: list[asyncio.AbstractEventLoop] = []
_worker: _WorkerLoop | None = None
_lock = threading.Lock()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def run_sync(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` from synchronous code and return its result."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None:
        if threading.current_thread() is threading.main_thread():
            return _run_on(_private_loop(), awaitable)
        return _worker_loop().run(awaitable)
    if not _interrupt_is_deferred(loop) and _make_reentrant(loop):
        return _run_on(loop, awaitable)
    return _worker_loop().run(awaitable)


def _interrupt_is_deferred(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether an interrupt now would only be scheduled on ``loop`` (and so never reach a
    nested wait): a task is running and SIGINT is not Python's ``KeyboardInterrupt``."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if asyncio.current_task(loop) is None:
        return False
    return signal.getsignal(signal.SIGINT) is not signal.default_int_handler


def _make_reentrant(loop: asyncio.AbstractEventLoop) -> bool:
    if getattr(loop, "_nest_patched", False):
        return True
    if not isinstance(loop, asyncio.BaseEventLoop):
        logger.debug("%r cannot be made re-entrant; using a worker thread", loop)
        return False
    import nest_asyncio2

    nest_asyncio2.apply(loop)
    return True


def _run_on(loop: asyncio.AbstractEventLoop, awaitable: Awaitable[T]) -> T:
    task = loop.create_task(_await(awaitable))
    try:
        return loop.run_until_complete(task)
    except BaseException:
        # An interrupt (or any escape) while the task is still pending: cancel it and let it
        # unwind on the loop before re-raising, however many interrupts arrive meanwhile.
        while not task.done():
            task.cancel()
            try:
                loop.run_until_complete(asyncio.wait([task]))
            except BaseException:  # noqa: S112 - keep unwinding
                continue
        if task.done() and not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as never retrieved
        raise


def _private_loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
        with _lock:
            if not _private_loops:
                atexit.register(close_private_loops)
            _private_loops.append(loop)
    return loop


class _WorkerLoop:
    """A loop running forever in a daemon thread, for callers whose own loop cannot nest."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, daemon=True, name="pizzagpt-worker-loop"
        )
        self.thread.start()

    def run(self, awaitable: Awaitable[T]) -> T:
        finished = threading.Event()

        async def runner() -> T:
            try:
                return await awaitable
            finally:
                finished.set()

        future = asyncio.run_coroutine_threadsafe(runner(), self.loop)
        # While the main thread waits here, an interrupt must raise KeyboardInterrupt in it
        # (whatever handler the caller's framework installed), so the wait can end at once.
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return future.result()
        except BaseException:
            if not future.done():
                future.cancel()
                finished.wait(timeout=30)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def close(self) -> None:
        from .session import close_all_sessions

        close_all_sessions()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


def _worker_loop() -> _WorkerLoop:
    global _worker
    with _lock:
        if _worker is None or _worker.loop.is_closed():
            _worker = _WorkerLoop()
            atexit.register(_worker.close)
        return _worker


def close_private_loops() -> None:
    """Close the private loops and their sessions (run at exit; safe to call any time)."""
    from .session import close_all_sessions

    close_all_sessions()
    with _lock:
        loops, _private_loops[:] = list(_private_loops), []
    for loop in loops:
        if loop.is_closed() or loop.is_running():
            continue
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    _local.__dict__.pop("loop", None)
