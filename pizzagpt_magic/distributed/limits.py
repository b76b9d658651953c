"""A job-wide limit on requests in flight, shared by the workers of a Dask cluster.

Each worker taking its own share of a rate limit lets them exceed the provider's together; a
``distributed.Semaphore`` held by the scheduler is one limit for the whole job. A partition's
gate takes leases from it as its requests need them and keeps them while it runs (a finished
request hands its lease to the next one here, without asking the scheduler again), then gives
them all back when the partition is done: never more than ``limit`` requests in flight over
the cluster, and one round trip to the scheduler per lease, not per request. Waiting for a
lease blocks a thread, never the worker's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["DaskGate"]


class DaskGate:
    """An async context manager factory: at most ``limit`` requests in flight cluster-wide.

    Made in a Dask worker (where a task runs); every gate of the same ``limit`` and ``name``
    shares one semaphore. ``close()`` gives the leases back."""

    def __init__(self, limit: int, name: str | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from distributed import Semaphore

        self.limit = limit
        self.name = name or f"pizzagpt-requests-{limit}"
        self.semaphore: Any = Semaphore(max_leases=limit, name=self.name)
        self._threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pizzagpt-lease")
        self.held = 0  #: leases this gate holds
        self._idle = 0  #: held leases no request uses
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._asking = 0  #: leases asked of the scheduler and not given yet
        self.closed = False
        self._lock = threading.Lock()

    async def _take(self) -> None:
        if self._idle:
            self._idle -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        if self.held + self._asking < self.limit:
            self._asking += 1
            asyncio.get_running_loop().run_in_executor(
                self._threads, self._acquire
            ).add_done_callback(self._leased)
        await waiter

    def _acquire(self) -> bool:
        """A lease from the cluster (in a thread): True when this gate keeps it. A lease that
        comes after the gate closed goes straight back, so none is ever lost."""
        self.semaphore.acquire()
        if self.closed:
            self.semaphore.release()
            return False
        return True

    def _leased(self, done: Any) -> None:
        self._asking -= 1
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            self._fail(error)
            return
        if not done.result():
            return
        with self._lock:  # close() runs in the partition's thread
            if self.closed:
                self.semaphore.release()
                return
            self.held += 1
        self._give()

    def _give(self) -> None:
        """A lease is free: to the first request waiting for one, else kept idle."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._idle += 1

    def _fail(self, error: BaseException) -> None:
        if self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        await self._take()
        try:
            yield
        finally:
            self._give()

    def close(self) -> None:
        """Give every held lease back to the cluster (and any still coming, as it comes)."""
        with self._lock:
            self.closed = True
            held, self.held, self._idle = self.held, 0, 0
        self._threads.shutdown(wait=False, cancel_futures=True)
        for _ in range(held):
            self.semaphore.release()
