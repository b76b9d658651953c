"""Images in questions: figures, pictures and image bytes become image parts of the message.

A value put in a question with ``{name}`` is an image when it is a matplotlib ``Figure``, a PIL
image, an ``IPython.display.Image`` (PNG or JPEG), PNG or JPEG ``bytes``, or one of the images
cells displayed (``Fig``). It is downscaled to ``max_side`` pixels on its long side, encoded as
PNG, and sent as an ``image_url`` part with a ``data:`` URL, where it stood in the question.
Only backends that take images get them (the OpenAI-compatible endpoints); the cache key and
the log hold each image's hash and size, never its bytes.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import PromptError

__all__ = [
    "DisplayedImages",
    "ImagePart",
    "content_key",
    "content_text",
    "image_bytes",
    "is_image",
    "loggable",
    "prepare",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
DATA_URL_PREFIX = "data:image/png;base64,"


@dataclass(frozen=True)
class ImagePart:
    """One image ready to send: PNG bytes, their size in pixels and hash."""

    png: bytes
    width: int
    height: int
    reference: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.png).hexdigest()

    def part(self) -> dict[str, Any]:
        """The message part: ``{"type": "image_url", "image_url": {"url": "data:..."}}``."""
        encoded = base64.b64encode(self.png).decode("ascii")
        return {"type": "image_url", "image_url": {"url": DATA_URL_PREFIX + encoded}}


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


def is_image(value: Any) -> bool:
    """Whether ``value`` goes into a question as an image."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value[:8]) == PNG_SIGNATURE or bytes(value[:3]) == JPEG_SIGNATURE
    if isinstance(value, DisplayedImage):
        return True
    module = type(value).__module__
    if module.startswith("matplotlib") and hasattr(value, "savefig"):
        return True
    if module.startswith("PIL") and hasattr(value, "save") and hasattr(value, "size"):
        return True
    if module.startswith("IPython") and type(value).__name__ == "Image":
        return getattr(value, "format", None) in ("png", "jpeg", "jpg") and bool(
            getattr(value, "data", None)
        )
    return False


def image_bytes(value: Any) -> bytes:
    """The image's encoded bytes (PNG or JPEG)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, DisplayedImage):
        return value.data
    module = type(value).__module__
    if module.startswith("matplotlib"):
        buffer = io.BytesIO()
        value.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()
    if module.startswith("PIL"):
        buffer = io.BytesIO()
        image = value if value.mode in ("RGB", "RGBA", "L", "LA", "P") else value.convert("RGBA")
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    return bytes(value.data)


def prepare(value: Any, reference: str, max_side: int, max_bytes: int) -> ImagePart:
    """``value`` as a PNG at most ``max_side`` pixels on its long side; a ``PromptError``
    naming ``reference`` when it cannot be read or is over ``max_bytes``."""
    try:
        from PIL import Image
    except ImportError:
        raise PromptError(
            f"{reference} is an image; sending images needs Pillow (pip install pillow)"
        ) from None
    try:
        raw = image_bytes(value)
        with Image.open(io.BytesIO(raw)) as opened:
            image = opened.copy()
    except Exception as exc:  # the user's object: any failure is one line
        raise PromptError(f"Cannot read {reference} as an image: {exc}") from None
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    png = buffer.getvalue()
    if len(png) > max_bytes:
        raise PromptError(
            f"{reference} is {len(png):,} bytes as a {image.width}×{image.height} PNG, over the "
            f"limit of {max_bytes:,} (PizzaMagics.image_max_bytes); nothing was sent"
        )
    return ImagePart(png, image.width, image.height, reference)


def has_images(content: Any) -> bool:
    return isinstance(content, list) and any(
        isinstance(p, dict) and p.get("type") == "image_url" for p in content
    )


def _image_summary(part: dict[str, Any]) -> dict[str, Any]:
    url = str(part.get("image_url", {}).get("url", ""))
    data = url.split(",", 1)[1] if url.startswith("data:") and "," in url else url
    try:
        blob = base64.b64decode(data)
    except ValueError:
        blob = data.encode()
    return {"type": "image", "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}


def loggable(content: Any) -> Any:
    """Message content with each image replaced by its hash and size (for keys and logs)."""
    if not isinstance(content, list):
        return content
    return [
        _image_summary(p) if isinstance(p, dict) and p.get("type") == "image_url" else p
        for p in content
    ]


def content_key(content: Any) -> Any:
    """Message content as a hashable value, images by their hash."""
    if not isinstance(content, list):
        return content
    return tuple(
        tuple(sorted((k, str(v)) for k, v in p.items())) if isinstance(p, dict) else str(p)
        for p in loggable(content)
    )


def content_text(content: Any) -> str:
    """Message content as text: parts joined, each image as ``[image WxH]``-like marker."""
    if not isinstance(content, list):
        return str(content)
    out = []
    for part in loggable(content):
        if isinstance(part, dict) and part.get("type") == "text":
            out.append(str(part.get("text", "")))
        elif isinstance(part, dict) and part.get("type") == "image":
            out.append(f"[image {part['sha256'][:12]}, {part['bytes']:,} bytes]")
    return "".join(out)
