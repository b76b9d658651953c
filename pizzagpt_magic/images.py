"""Images in questions: figures, pictures and image bytes become image parts of the message.

A value put in a question with ``{name}`` is an image when it is a matplotlib ``Figure``, a PIL
image, an ``IPython.display.Image`` (PNG or JPEG), PNG or JPEG ``bytes``, or one of the images
cells displayed (``Fig``). It is downscaled to ``max_side`` pixels on its long side, encoded as
PNG, and sent as an ``image_url`` part with a ``data:`` URL, where it stood in the question.
Only backends that take images get them (the endpoints; the Messages API provider sends each as
a base64 ``image`` block); the cache key and the log hold each image's hash and size, never its
bytes.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from typing import Any

from .errors import PromptError
from .figures import DisplayedImage, DisplayedImages

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
