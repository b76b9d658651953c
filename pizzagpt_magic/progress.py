"""The placeholder shown in a notebook while an answer is on its way.

It appears once the wait has lasted a moment (so a quick answer shows no flicker and leaves no
trace), shows the model and the seconds elapsed, updated in place about every half second, and
gives its place to what follows: the answer as it arrives, the finished answer, or a note saying
why none came (its display is a ``streaming.LiveOutput``, which never ends empty).
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any

__all__ = ["Progress"]


class Progress:
    """``async with Progress("gpt-4o-mini", output)``: a live placeholder in ``output`` (a
    ``LiveOutput``) for the block's duration; none when ``output`` is None."""

    def __init__(
        self,
        label: str,
        output: Any = None,
        *,
        interval: float = 0.5,
        show_after: float = 0.3,
    ) -> None:
        self.label = label
        self.output = output
        self.enabled = output is not None
        self.interval = interval
        self.show_after = show_after
        self._ticker: asyncio.Task[None] | None = None
        self._started = 0.0

    def _bundle(self) -> dict[str, str]:
        elapsed = time.monotonic() - self._started
        return {"text/plain": f"⏳ {self.label} is answering… {elapsed:.1f} s"}

    @property
    def seconds(self) -> float:
        """Seconds since the wait began."""
        return time.monotonic() - self._started

    async def _tick(self) -> None:
        await asyncio.sleep(self.show_after)
        while True:
            self.output.show(self._bundle())
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> Progress:
        if self.enabled:
            self._started = time.monotonic()
            self._ticker = asyncio.ensure_future(self._tick())
        return self

    def stop(self) -> None:
        """End the placeholder now (the answer has begun to show itself in its place)."""
        self.enabled = False
        if self._ticker is not None:
            self._ticker.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
