"""The placeholder shown in a notebook while an answer is on its way.

It appears once the wait has lasted a moment (so a quick answer shows no flicker and leaves no
trace), shows the model and the seconds elapsed, updated in place about every half second, and
is emptied when the wait ends, whether by an answer, an error or an interrupt.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any

__all__ = ["EMPTY", "Progress"]

#: What the placeholder becomes when the wait is over.
EMPTY = {"text/plain": ""}


class Progress:
    """``async with Progress("gpt-4o-mini")``: a live placeholder for the block's duration."""

    def __init__(
        self, label: str, *, enabled: bool = True, interval: float = 0.5, show_after: float = 0.3
    ) -> None:
        self.label = label
        self.enabled = enabled
        self.interval = interval
        self.show_after = show_after
        self._handle: Any = None
        self._ticker: asyncio.Task[None] | None = None
        self._started = 0.0

    def _bundle(self) -> dict[str, str]:
        elapsed = time.monotonic() - self._started
        return {"text/plain": f"⏳ {self.label} is answering… {elapsed:.1f} s"}

    async def _tick(self) -> None:
        from IPython.display import display

        await asyncio.sleep(self.show_after)
        self._handle = display(self._bundle(), raw=True, display_id=True)
        while True:
            await asyncio.sleep(self.interval)
            self._handle.update(self._bundle(), raw=True)

    async def __aenter__(self) -> Progress:
        if self.enabled:
            self._started = time.monotonic()
            self._ticker = asyncio.ensure_future(self._tick())
        return self

    def stop(self) -> None:
        """End the placeholder now (the answer has begun to show itself)."""
        self.enabled = False
        if self._ticker is not None:
            self._ticker.cancel()
        if self._handle is not None:
            self._handle.update(EMPTY, raw=True)
            self._handle = None

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
        if self._handle is not None:
            # Empty text renders as nothing, and (unlike an empty bundle) every exporter
            # knows how to show it.
            self._handle.update(EMPTY, raw=True)
            self._handle = None
