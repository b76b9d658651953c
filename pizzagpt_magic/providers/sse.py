"""Server-sent events (the ``text/event-stream`` format) read from bytes as they arrive.

``SSEDecoder`` turns pieces of a stream, split anywhere, into the ``data`` of its events, in
time proportional to their length however long a line is, and bounded in size when asked.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import Any

from ..errors import AnswerTooLargeError

__all__ = ["BOM", "SSEDecoder"]

#: A UTF-8 byte-order mark, which the format says to drop from the stream's start.
BOM = b"\xef\xbb\xbf"
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


class SSEDecoder:
    """Server-sent events from bytes that arrive split anywhere (mid-line, mid-character).

    ``feed`` returns the ``data`` of every event completed by the new bytes; comment lines
    (``:`` keep-alive pings) and the other fields are skipped, several ``data:`` lines of one
    event are joined with newlines, and a leading byte-order mark is dropped, as the format
    says.

    A line that spans pieces is never re-joined per piece: once its field is known, a
    ``data`` line's pieces are decoded as they come and joined once at its end, and a comment's
    are dropped, so a long line costs time in proportion to its length. ``max_event_bytes``
    bounds one event (an ``AnswerTooLargeError``, after the events completed before it).
    """

    __slots__ = (
        "_data",
        "_data_size",
        "_decoder",
        "_error",
        "_first",
        "_mode",
        "_pieces",
        "_size",
        "_skip_lf",
        "max_event_bytes",
    )

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self.max_event_bytes = max_event_bytes
        #: The unfinished line: bytes while its field is unknown, then decoded text (a data
        #: line) or nothing (any other line); ``_mode`` says which.
        self._pieces: list[Any] = []
        self._mode = _UNKNOWN
        self._decoder: Any = None
        self._size = 0
        self._data: list[str] = []
        self._data_size = 0
        self._skip_lf = False
        self._first = True
        self._error: AnswerTooLargeError | None = None

    def feed(self, chunk: bytes) -> list[str]:
        if self._error is not None:
            raise self._error
        if self._skip_lf:
            # A CR ended the last chunk: a LF starting this one belongs to the same break.
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\n" not in chunk and b"\r" not in chunk:
            if chunk:
                self._extend(chunk)
                if self.max_event_bytes is not None:
                    self._check([])
            return []
        lines: list[Any]
        *lines, rest = _LINE_BREAK.split(chunk)
        if rest == b"" and chunk.endswith(b"\r"):
            self._skip_lf = True
        if self._size:
            lines[0] = self._end_line(lines[0])
        if rest:
            self._extend(rest)
        events = list(self._lines(lines))
        if self.max_event_bytes is not None:
            self._check(events)
        return events

    def close(self) -> list[str]:
        """Events left when the stream ended (a last event without its blank line)."""
        if self._error is not None:
            raise self._error
        lines = [self._end_line(b"")] if self._size else []
        return [*self._lines(lines), *self._lines([b""])]

    def _extend(self, piece: bytes) -> None:
        """Add ``piece`` to the unfinished line."""
        self._size += len(piece)
        mode = self._mode
        if mode is _DATA:
            self._pieces.append(self._decoder.decode(piece))
            return
        if mode is _SKIP:
            return
        self._pieces.append(piece)
        if self._size < 8:
            return  # too short to know the field yet
        line = b"".join(self._pieces)
        head = line[len(BOM) :] if self._first and line.startswith(BOM) else line
        if len(head) < 6:
            self._pieces = [line]  # "data:" and its optional space are not both here yet
            return
        if head[:5] != b"data:":
            self._mode = _SKIP
            self._pieces = []
            return
        self._first = False
        self._mode = _DATA
        self._decoder = _utf8_decoder("replace")
        start = 6 if head[5:6] == b" " else 5
        self._pieces = [self._decoder.decode(head[start:])]

    def _end_line(self, last: bytes) -> Any:
        """The unfinished line completed by ``last``: bytes, or the text of a data line."""
        mode, pieces = self._mode, self._pieces
        self._mode, self._pieces, self._size = _UNKNOWN, [], 0
        if mode is _DATA:
            pieces.append(self._decoder.decode(last, True))
            self._decoder = None
            return _Text("".join(pieces))
        if mode is _SKIP:
            return _SKIPPED
        pieces.append(last)
        return b"".join(pieces)

    def _check(self, events: list[str]) -> None:
        """Over the limit: an error now, or, after the events completed before it, at the
        next call."""
        limit = self.max_event_bytes
        if limit is None or self._size + self._data_size <= limit:
            return
        self._pieces = []
        self._mode = _UNKNOWN
        self._data = []
        self._size = self._data_size = 0
        self._error = AnswerTooLargeError(
            f"A streamed event is over {limit:,} bytes (PizzaMagics.max_event_bytes); "
            "the answer was stopped there"
        )
        if not events:
            raise self._error

    def _lines(self, lines: list[Any]) -> Iterator[str]:
        for raw in lines:
            if type(raw) is _Text:
                self._first = False
                self._data.append(raw.text)
                self._data_size += len(raw.text)
                continue
            if raw is _SKIPPED:
                self._first = False
                continue
            if self._first:
                self._first = False
                if raw.startswith(BOM):
                    raw = raw[len(BOM) :]
            if not raw:
                if self._data:
                    yield "\n".join(self._data)
                    self._data = []
                    self._data_size = 0
                continue
            if raw[:5] != b"data:":
                if raw != b"data":
                    continue  # a comment, or a field other than data
                raw = b"data:"
            start = 6 if raw[5:6] == b" " else 5
            self._data.append(raw[start:].decode("utf-8", "replace"))
            self._data_size += len(raw) - start


class _Text:
    """The decoded value of a data line that spanned pieces."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


_UNKNOWN, _DATA, _SKIP = object(), object(), object()
_SKIPPED = object()
_utf8_decoder = codecs.getincrementaldecoder("utf-8")
