"""Showing an answer while it arrives.

In a notebook the answer grows in place: one display, updated at most ``interval`` seconds apart
(and further apart when rendering takes long, so display never costs more than a small share of
the time), each update rendered by the same safe renderer as any answer. When the answer is
complete the same display shows the finished answer, exactly as a non-streamed one shows it
(``LiveOutput``): a cell that streamed keeps one output, its answer, and no emptied display. While
text is still arriving a subtle marker ends the display; it goes when the answer is complete. In a
terminal the text is printed as it comes.

An interrupted or cut stream keeps its text on screen, marked as such.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, TextIO

__all__ = ["ARRIVING", "LiveOutput", "StreamView"]

#: The marker under an answer still arriving: quiet, in the theme's secondary text colour
#: (inside the answer's wrapper, so MathJax skips it like the rest).
ARRIVING = '<p style="color: var(--jp-ui-font-color2, #616161)"><em>▍ still arriving…</em></p>'


class LiveOutput:
    """One output of a notebook cell, shown in turn as the placeholder, the answer as it
    arrives, and the finished answer (or a short note when none came).

    A display, once sent, stays in the saved notebook: emptied, it is an empty output. So
    the finished answer takes the place of what was shown while waiting: when the cell shows
    the answer as its result, the answer appears here instead (``end_with``), and when the
    cell does not (``x = %pizza ...``, a question mid-cell), it appears here once the cell has
    run.
    """

    def __init__(self) -> None:
        self.handle: Any = None

    @property
    def shown(self) -> bool:
        """Whether anything has been displayed yet (a quick answer shows nothing)."""
        return self.handle is not None

    def show(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        from IPython.display import display

        if self.handle is None:
            self.handle = display(data, raw=True, display_id=True, metadata=metadata)
        else:
            self.handle.update(data, raw=True, metadata=metadata or {})

    def note(self, text: str) -> None:
        """End with a one-line note (nothing arrived): only when something was shown."""
        if self.handle is not None:
            self.show({"text/plain": text})

    def end_with(self, answer: Any, events: Any) -> None:
        """``answer`` takes this output's place; ``events`` (IPython's event manager) tells
        when the cell has run.

        The cell's display hook calls ``answer._ipython_display_`` (set here for the rest of
        this cell only) instead of sending a result of its own; later cells display the
        answer as usual."""
        if self.handle is None:
            return
        pending = [True]

        def show_here() -> None:
            if pending[0]:
                pending[0] = False
                answer.__dict__.pop("_ipython_display_", None)
                data, *metadata = _bundle_and_metadata(answer)
                self.show(data, *metadata)
            else:  # shown here already: a second display of it is a display of its own
                from IPython.display import display

                display(answer)

        def after_cell() -> None:
            events.unregister("post_execute", after_cell)
            if pending[0]:
                show_here()

        answer._ipython_display_ = show_here
        events.register("post_execute", after_cell)


def _bundle_and_metadata(answer: Any) -> tuple[Any, ...]:
    shown = answer._repr_mimebundle_()
    return tuple(shown) if isinstance(shown, tuple) else (shown,)


class StreamView:
    """``on_text`` receives each chunk; ``finish()`` or ``stop(note)`` ends the view."""

    def __init__(
        self,
        *,
        notebook: bool,
        output: LiveOutput | None = None,
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
        self.output = output if output is not None else LiveOutput()
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
        from .render import StreamRenderer

        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        started = time.monotonic()
        if self._renderer is None:
            self._renderer = StreamRenderer()
        bundle = self._renderer.render(self.text, note, arriving=ARRIVING if not note else "")
        if self.first_update is None:
            self.first_update = time.monotonic()
        self.output.show(bundle)
        self.updates += 1
        took = time.monotonic() - started
        self._next_at = time.monotonic() + max(self.interval, took / self.budget)

    def finish(self) -> None:
        """The answer is complete: in a notebook the finished answer takes the display's place
        (``LiveOutput.end_with``); a terminal ends the printed text's line."""
        self._cancel()
        if not self.notebook and self.chunks and not self._printed.endswith("\n"):
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
