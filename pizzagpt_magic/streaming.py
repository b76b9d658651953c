"""Showing an answer while it arrives.

In a notebook the answer grows in place: one display, updated at most ``interval`` seconds apart
(and further apart when rendering takes long, so display never costs more than a small share of
the time), each update rendered by the same safe renderer as any answer. When the answer is
complete the cell's result shows the finished answer, exactly as a non-streamed one, and the
display is emptied once that result is sent. In a terminal the text is printed as it comes.

An interrupted or cut stream keeps its text on screen, marked as such.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, TextIO

__all__ = ["StreamView"]

#: What the display becomes once the finished answer is shown as the cell's result.
EMPTY = {"text/plain": ""}


class StreamView:
    """``on_text`` receives each chunk; ``finish()`` or ``stop(note)`` ends the view."""

    def __init__(
        self,
        *,
        notebook: bool,
        interval: float = 0.1,
        budget: float = 0.08,
        out: TextIO | None = None,
    ) -> None:
        self.notebook = notebook
        self.interval = interval
        #: Share of the time rendering may take: after a render of r seconds the next waits
        #: at least r / budget.
        self.budget = budget
        self.out = out
        self.chunks: list[str] = []
        self.updates = 0
        self.first_update: float | None = None
        self._handle: Any = None
        self._renderer: Any = None
        self._next_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._printed = ""

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def on_text(self, chunk: str) -> None:
        self.chunks.append(chunk)
        if not self.notebook:
            stream = self.out or sys.stdout
            stream.write(chunk)
            stream.flush()
            self._printed = chunk
            return
        now = time.monotonic()
        if now >= self._next_at:
            self._update()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._next_at - now, self._update)

    def _update(self, note: str = "") -> None:
        from IPython.display import display

        from .render import StreamRenderer

        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        started = time.monotonic()
        if self._renderer is None:
            self._renderer = StreamRenderer()
        bundle = self._renderer.render(self.text, note)
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
            self.first_update = time.monotonic()
        else:
            self._handle.update(bundle, raw=True)
        self.updates += 1
        took = time.monotonic() - started
        self._next_at = time.monotonic() + max(self.interval, took / self.budget)

    def finish(self, events: Any = None) -> None:
        """The answer is complete: the finished answer shows as the cell's result instead.

        With ``events`` (IPython's event manager) the display is emptied once the cell has run,
        after its result is sent, so the answer never leaves the screen in between (emptied
        first, it vanished until the frontend had drawn the result)."""
        self._cancel()
        if self.notebook:
            handle = self._handle
            if handle is None:
                return
            if events is None:
                handle.update(EMPTY, raw=True)
                return

            def empty() -> None:
                events.unregister("post_execute", empty)
                handle.update(EMPTY, raw=True)

            events.register("post_execute", empty)
        elif self.chunks and not self._printed.endswith("\n"):
            (self.out or sys.stdout).write("\n")

    def stop(self, note: str) -> None:
        """The answer stopped short: keep its text on screen, with ``note`` under it."""
        self._cancel()
        if not self.chunks:
            return
        if self.notebook:
            self._update(note)
        else:
            stream = self.out or sys.stdout
            stream.write(f"{'' if self._printed.endswith(chr(10)) else chr(10)}[{note}]\n")
            stream.flush()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
