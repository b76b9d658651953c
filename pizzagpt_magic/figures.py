"""``Fig``: the images cells displayed, kept from the display publisher's messages.

Apart from ``images`` (which turns values into message parts) so that ``%load_ext``, which hooks
``Fig`` to the publisher, loads nothing more than this.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Iterator
from typing import Any

__all__ = ["DisplayedImage", "DisplayedImages"]


class DisplayedImage:
    """An image a cell displayed (kept in ``Fig``)."""

    __slots__ = ("cell", "data", "mime")

    def __init__(self, data: bytes, mime: str, cell: int | None) -> None:
        self.data = data
        self.mime = mime
        self.cell = cell

    def _repr_png_(self) -> bytes | None:
        return self.data if self.mime == "image/png" else None

    def _repr_jpeg_(self) -> bytes | None:
        return self.data if self.mime == "image/jpeg" else None

    def __repr__(self) -> str:
        where = f" of cell {self.cell}" if self.cell else ""
        return f"<{self.mime} image{where}, {len(self.data):,} bytes>"


class DisplayedImages:
    """``Fig``: the images cells displayed, newest last; ``Fig[-1]`` is the newest."""

    def __init__(self, size: int = 5) -> None:
        self._images: deque[DisplayedImage] = deque(maxlen=size)

    def add(self, data: bytes, mime: str, cell: int | None) -> None:
        self._images.append(DisplayedImage(data, mime, cell))

    def __getitem__(self, index: int) -> DisplayedImage:
        if not self._images:
            raise IndexError("no image has been displayed yet (Fig keeps the newest 5)")
        try:
            return self._images[index]
        except IndexError:
            raise IndexError(
                f"Fig holds {len(self._images)} image{'' if len(self._images) == 1 else 's'} "
                f"(the newest 5 are kept); Fig[{index}] is not one of them"
            ) from None

    def __len__(self) -> int:
        return len(self._images)

    def __iter__(self) -> Iterator[DisplayedImage]:
        return iter(self._images)

    def __repr__(self) -> str:
        shown = ", ".join(repr(i) for i in self._images) or "none yet"
        return f"<Fig: images cells displayed, newest last (Fig[-1]): {shown}>"

    def hook(self, execution_count: Any) -> Any:
        """A display-publisher hook that keeps the images of ``display_data`` messages."""

        def keep(message: Any) -> Any:
            try:
                if message.get("msg_type") == "display_data":
                    data = message.get("content", {}).get("data", {})
                    for mime in ("image/png", "image/jpeg"):
                        if mime in data:
                            raw = data[mime]
                            blob = base64.b64decode(raw) if isinstance(raw, str) else bytes(raw)
                            self.add(blob, mime, execution_count())
                            break
            except Exception:  # noqa: BLE001 - a display must never fail because of this
                pass
            return message

        return keep
