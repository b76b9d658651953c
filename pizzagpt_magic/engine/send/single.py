"""The ``single`` strategy: one prompt a request, at most ``concurrency`` in flight."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ...session import widen_pool
from . import Pending, Result, fetch

__all__ = ["Single"]

logger = logging.getLogger(__name__)


class Single:
    """Send each pending prompt on its own request, ``concurrency`` at a time (see
    ``engine.send`` for the interface)."""

    name = "single"

    def __init__(self, concurrency: int = 8) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency

    @staticmethod
    def planned_requests(prompts: list[Any]) -> int:
        """How many requests ``prompts`` take: one each."""
        return len(prompts)

    async def send(self, pending: Pending, request: Mapping[str, Any]) -> AsyncIterator[Result]:
        arrived: asyncio.Queue[Result | None] = asyncio.Queue()

        async def worker() -> None:
            try:
                while (prompt := await pending.next()) is not None:
                    try:
                        result: Any = await fetch(prompt, request)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # one prompt's failure must not stop the others
                        logger.debug("%r failed: %r", prompt, exc)
                        result = exc
                    arrived.put_nowait((prompt, result))
            finally:
                arrived.put_nowait(None)

        count = min(self.concurrency, max(1, len(pending)))
        pool = widen_pool(count)  # the shared pool holds as many connections as workers
        if count > pool:
            warnings.warn(
                f"concurrency {count} is over the connection pool's cap of {pool} "
                f"(session.POOL_MAX): at most {pool} requests are in flight at once",
                stacklevel=2,
            )
        workers = [asyncio.ensure_future(worker()) for _ in range(count)]
        alive = len(workers)
        try:
            while alive:
                item = await arrived.get()
                if item is None:
                    alive -= 1
                    continue
                yield item
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
