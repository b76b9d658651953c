"""One keep-alive ``aiohttp.ClientSession`` per event loop.

A session belongs to the loop that made it and is never handed to another loop. It closes when
asked (``close_session``), when its loop shuts down through ``asyncio.run`` or an
``asyncio.Runner`` (their ``shutdown_asyncgens`` step finalises a guard generator kept for each
session), and, for the private loops of ``pizzagpt_magic.loop``, before those loops close.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "close_all_sessions",
    "close_session",
    "get_session",
    "pause_requests",
    "wait_until_allowed",
    "widen_pool",
]

logger = logging.getLogger(__name__)

#: Connections of the shared pool when no batch asked for more.
POOL_LIMIT = 64
#: The most connections the pool grows to, whatever concurrency a batch asks for (file
#: descriptors are a limited resource too); a batch asking for more is told so.
POOL_MAX = 512
_pool_wanted = POOL_LIMIT


class _LoopSession:
    __slots__ = ("guard", "not_before", "session")

    def __init__(self, session: aiohttp.ClientSession, guard: AsyncGenerator[None, None]) -> None:
        self.session = session
        self.guard = guard
        # loop.time() before which no request starts: a 429 answer pauses every request on the
        # loop, so a batch slows down as a whole instead of each item hammering on alone.
        self.not_before = 0.0


_exit_hook = False
_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSession] = (
    weakref.WeakKeyDictionary()
)


async def _close_on_shutdown(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    # asyncio.run() and Runner.close() call loop.shutdown_asyncgens(), which closes every live
    # async generator first iterated on the loop: this one's finally block closes the session.
    try:
        yield
    finally:
        if not session.closed:
            logger.debug("closing the shared session as its loop shuts down")
            await session.close()


def ready_session() -> aiohttp.ClientSession | None:
    """The running loop's shared session when it exists and no pause holds requests back
    (the common case, answered without a coroutine); else None."""
    loop = asyncio.get_running_loop()
    last = _last
    entry = last[1] if last[0]() is loop else _remember(loop)
    if entry is None or (entry.not_before and entry.not_before > loop.time()):
        return None
    session = entry.session
    return None if session.closed else session


def _dead() -> None:
    return None


#: The loop asked last (weakly) and its entry: most requests come from one loop, and a plain
#: look here is cheaper than the weak dictionary's.
_last: tuple[Callable[[], asyncio.AbstractEventLoop | None], _LoopSession | None] = (_dead, None)


def _remember(loop: asyncio.AbstractEventLoop) -> _LoopSession | None:
    global _last
    entry = _sessions.get(loop)
    if entry is not None:
        _last = (weakref.ref(loop), entry)
    return entry


async def get_session() -> aiohttp.ClientSession:
    """The running loop's shared session, made on first use."""
    import aiohttp

    loop = asyncio.get_running_loop()
    entry = _sessions.get(loop)
    if entry is not None and not entry.session.closed:
        return entry.session
    connector = aiohttp.TCPConnector(
        limit=_pool_wanted, limit_per_host=_pool_wanted, keepalive_timeout=60
    )
    # The proxy variables are read per request by the provider (providers.pizzagpt.env_proxy).
    session = aiohttp.ClientSession(connector=connector)
    global _exit_hook
    if not _exit_hook:
        _exit_hook = True
        atexit.register(close_all_sessions)
    guard = _close_on_shutdown(session)
    await guard.__anext__()
    _sessions[loop] = _LoopSession(session, guard)
    _remember(loop)
    logger.debug("opened a shared session on %r", loop)
    return session


def widen_pool(concurrency: int) -> int:
    """Let the shared pool hold ``concurrency`` connections (up to ``POOL_MAX``), on every
    loop's session from now on; returns the pool's size. The pool only grows."""
    global _pool_wanted
    size = max(POOL_LIMIT, min(concurrency, POOL_MAX))
    if size <= _pool_wanted:
        return _pool_wanted
    _pool_wanted = size
    for entry in list(_sessions.values()):
        connector = entry.session.connector
        # aiohttp reads these on every acquire; it has no public setter for them.
        if connector is not None and getattr(connector, "_limit", size) < size:
            connector._limit = size
            connector._limit_per_host = size
    return size


async def close_session() -> None:
    """Close the running loop's shared session, if it has one."""
    await _close_entry(asyncio.get_running_loop())


def pause_requests(delay: float) -> None:
    """Hold back every request on the running loop for ``delay`` seconds from now."""
    loop = asyncio.get_running_loop()
    entry = _sessions.get(loop)
    if entry is not None:
        entry.not_before = max(entry.not_before, loop.time() + delay)


async def wait_until_allowed() -> None:
    """Sleep while the running loop's requests are held back by ``pause_requests``."""
    loop = asyncio.get_running_loop()
    entry = _sessions.get(loop)
    while entry is not None and entry.not_before > loop.time():
        await asyncio.sleep(entry.not_before - loop.time())


def close_all_sessions() -> None:
    """Close every shared session whose loop can still run code, from outside any loop.

    Sessions on a running loop of another thread are closed on that loop; a session whose loop
    is closed already holds no live connection worth waiting for and is dropped.
    """
    for loop, entry in list(_sessions.items()):
        if loop.is_closed() or entry.session.closed:
            _sessions.pop(loop, None)
            continue
        if loop.is_running():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                continue  # the caller's own loop: it must await close_session() itself
        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(_close_entry(loop), loop).result(timeout=5)
            else:
                loop.run_until_complete(_close_entry(loop))
        except Exception:  # at exit, a loop in an odd state must not stop the others closing
            logger.debug("could not close the session of %r", loop, exc_info=True)


async def _close_entry(loop: asyncio.AbstractEventLoop) -> None:
    global _last
    entry = _sessions.pop(loop, None)
    if _last[1] is entry:
        _last = (_dead, None)
    if entry is not None:
        await entry.session.close()
        await entry.guard.aclose()
