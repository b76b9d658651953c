"""An interrupt of ``%pizza`` shown as an interrupted ``time.sleep`` is: the cell's line and
``KeyboardInterrupt``, not the frames of the magics, the event loop and the selector below it."""

from __future__ import annotations

import builtins
from typing import Any

__all__ = ["KeyboardInterrupt"]


class KeyboardInterrupt(builtins.KeyboardInterrupt):  # noqa: A001 - shown by this name
    """The interrupt a ``%pizza`` cell ends with (``except KeyboardInterrupt`` catches it).

    IPython asks an exception with ``_render_traceback_`` for its own traceback lines: this one
    gives IPython's traceback of the user's frames only (the cell that ran the magic)."""

    def _render_traceback_(self) -> list[str]:
        from IPython import get_ipython

        from ..cell_errors import is_machinery

        shell = get_ipython()
        entries = []
        tb = self.__traceback__
        while tb is not None:
            entries.append(tb)
            tb = tb.tb_next
        users = [e for e in entries if not is_machinery(e.tb_frame.f_code.co_filename)]
        if shell is None or not users:
            return ["KeyboardInterrupt"]
        # The user's frames end where the package's begin: the traceback is cut there.
        last = users[-1]
        last.tb_next = None
        formatter: Any = shell.InteractiveTB
        return list(formatter.structured_traceback(type(self), self, users[0], tb_offset=0))
