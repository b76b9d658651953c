"""``Err``: the errors earlier cells raised, to ask about them (``%pizza why? {Err[-1]}``).

The extension puts one ``CellErrors`` in the user namespace as ``Err`` (unless the name is taken)
and records into it after every cell that raised. ``Err[12]`` is the error of cell 12, as text: the
traceback of the user's code (IPython's and this package's own frames left out) and the error
line. ``Err[-1]`` is the newest error, ``Err[-2]`` the one before. Beside ``In[n]`` and
``Out[n]``, which IPython keeps, this lets a question quote a cell, its result and its error.
"""

from __future__ import annotations

import functools
import logging
import os
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import IPython
from IPython.core.error import UsageError

__all__ = ["CellErrors"]

logger = logging.getLogger(__name__)

# IPython's CachingCompiler.format_code_name: a cell's file name to ("Cell", "In[n]"), else None.
CodeName = Callable[[str], "tuple[str, str] | None"]

# Frames from these places are the machinery around a cell, not the user's code: IPython, this
# package, and the wrappers IPython's decorators compile.
_MACHINERY = (
    os.path.dirname(IPython.__file__) + os.sep,
    os.path.dirname(__file__) + os.sep,
    "<decorator-gen-",
)


@functools.lru_cache(maxsize=1)
def _libraries() -> tuple[str, ...]:
    """Where installed libraries and the standard library live."""
    import sysconfig

    paths = sysconfig.get_paths()
    folders = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    return tuple(os.path.join(folder, "") for folder in sorted(folders))


def is_machinery(filename: str) -> bool:
    """Whether code of ``filename`` is the machinery around a cell (IPython, this package)."""
    return filename.startswith(_MACHINERY)


class NoErrorRecorded(KeyError):
    """``Err[n]`` for a cell with no recorded error; its text reads as a sentence (a plain
    ``KeyError`` would show it quoted)."""

    def __str__(self) -> str:
        return str(self.args[0])


def describe(error: BaseException, limit: int, code_name: CodeName | None = None) -> str:
    """``error`` as text: the traceback of the user's frames and the error line, its start cut
    so that it fits in ``limit`` characters (the error line is at the end and always kept).

    ``code_name`` is the shell compiler's ``format_code_name``: frames of notebook cells are
    then named ``In[n]`` rather than by a temporary file.
    """
    if isinstance(error, UsageError):
        return f"UsageError: {error}"[-limit:]  # as IPython shows it: a magic's message only
    frames = []
    hidden = 0
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename.startswith(_MACHINERY):
            continue
        label = code_name(frame.filename) if code_name is not None else None
        if label is None and frame.filename.startswith(_libraries()):
            hidden += 1  # pandas' or the standard library's inside: not the user's code
            continue
        # A cell is named In[n]; a module of the user's by its file name, not a local path.
        name = label[1] if label is not None else os.path.basename(frame.filename)
        frames.append(
            traceback.FrameSummary(
                name, frame.lineno, frame.name, lookup_line=False, line=frame.line
            )
        )
    last = "".join(traceback.format_exception_only(type(error), error)).rstrip("\n")
    if not frames:
        return last[-limit:]
    inside = f"  [{hidden} frame{'s' if hidden > 1 else ''} inside libraries]\n" if hidden else ""
    text = (
        "Traceback (most recent call last):\n"
        + "".join(traceback.format_list(frames))
        + inside
        + last
    )
    if len(text) <= limit:
        return text
    marker = f"[… {len(text) - limit:,} characters of the traceback cut]\n"
    return marker + text[len(text) - max(0, limit - len(marker)) :]


class CellErrors(Mapping[int, str]):
    """Errors of earlier cells, by execution count; negative keys count back from the newest."""

    def __init__(
        self, size: int = 20, limit: int = 3000, code_name: CodeName | None = None
    ) -> None:
        self.size = size
        self.limit = limit
        self.code_name = code_name
        self._errors: OrderedDict[int, str] = OrderedDict()

    def record(self, result: Any) -> None:
        """``post_run_cell`` callback: keep the error of a cell that raised one.

        ``result`` may be None: IPython passes none for a cell whose run was cut short (an
        interrupt reaching an async cell)."""
        if result is None:
            return
        error = result.error_before_exec or result.error_in_exec
        numbered = getattr(result.info, "store_history", True) and result.execution_count
        if not isinstance(error, Exception) or not numbered:
            return  # a success, an interrupt, or a cell run outside the history
        try:
            text = describe(error, self.limit, self.code_name)
        except Exception:  # an exception that cannot be shown must not disturb the cell
            logger.debug(
                "cannot describe the error of cell %s", result.execution_count, exc_info=True
            )
            return
        self._errors[result.execution_count] = text
        self._errors.move_to_end(result.execution_count)
        while len(self._errors) > self.size:
            self._errors.popitem(last=False)

    def __getitem__(self, key: int) -> str:
        if isinstance(key, int) and key < 0:
            counts = list(self._errors)
            if -key <= len(counts):
                return self._errors[counts[key]]
        elif key in self._errors:
            return self._errors[key]
        kept = f"errors are recorded for cells {', '.join(map(str, self._errors))}"
        if not self._errors:
            kept = "no errors are recorded yet"
        elif isinstance(key, int) and key < 0:
            raise NoErrorRecorded(f"there are fewer than {-key} recorded errors; {kept}")
        raise NoErrorRecorded(f"cell {key} raised no error; {kept}")

    def __iter__(self) -> Iterator[int]:
        return iter(self._errors)

    def __len__(self) -> int:
        return len(self._errors)

    def __str__(self) -> str:
        return "\n\n".join(f"Cell [{count}]:\n{text}" for count, text in self._errors.items())

    def __repr__(self) -> str:
        cells = ", ".join(map(str, self._errors)) or "none yet"
        return f"<Err: errors of cells {cells}; Err[n] is cell n's, Err[-1] the newest>"
