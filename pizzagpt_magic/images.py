"""Images in questions: figures, pictures and image bytes become image parts of the message.

A value put in a question with ``{name}`` is an image when it is a matplotlib ``Figure``, a PIL
image, an ``IPython.display.Image`` (PNG or JPEG), PNG or JPEG ``bytes``, or one of the images
cells displayed (``Fig``); GIF and WebP bytes are converted. It is downscaled to ``max_side``
pixels on its long side, encoded as PNG, and sent as an ``image_url`` part with a ``data:`` URL,
where it stood in the question.

Its size is checked before it costs anything: a figure's size in inches times its dpi, a
picture's header. One over ``MAX_PIXELS`` is refused in one line; a large figure is drawn at a
lower dpi rather than drawn whole and scaled down.
Only backends that take images get them (the endpoints; the Messages API provider sends each as
a base64 ``image`` block); the cache key and the log hold each image's hash and size, never its
bytes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from typing import Any

from .errors import PromptError
from .figures import DisplayedImage, DisplayedImages

__all__ = [
    "MAX_PIXELS",
    "DisplayedImages",
    "ImagePart",
    "content_key",
    "content_text",
    "check_size",
    "image_bytes",
    "is_image",
    "loggable",
    "prepare",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
GIF_SIGNATURES = (b"GIF87a", b"GIF89a")
DATA_URL_PREFIX = "data:image/png;base64,"
#: The largest image taken, in pixels (width × height), before any drawing or decoding.
MAX_PIXELS = 50_000_000
#: A figure is drawn at most this many times ``max_side`` on its long side, then scaled.
DRAW_MARGIN = 2
_ADDRESS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


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
        head = bytes(value[:12])
        return (
            head[:8] == PNG_SIGNATURE
            or head[:3] == JPEG_SIGNATURE
            or head[:6] in GIF_SIGNATURES
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        )
    if isinstance(value, DisplayedImage):
        return True
    module = type(value).__module__
    if module.startswith("matplotlib") and hasattr(value, "savefig"):
        return True
    if module.startswith("PIL") and hasattr(value, "save") and hasattr(value, "size"):
        return True
    if module.startswith("IPython") and type(value).__name__ == "Image":
        return getattr(value, "format", None) in ("png", "jpeg", "jpg", "gif", "webp") and bool(
            getattr(value, "data", None)
        )
    return False


def _too_big(reference: str, width: float, height: float, max_pixels: int) -> PromptError:
    return PromptError(
        f"{reference} is {int(width):,}×{int(height):,} pixels, over the limit of "
        f"{max_pixels:,} (images.MAX_PIXELS); make it smaller (a figure: its size or dpi)"
    )


def figure_pixels(figure: Any) -> tuple[float, float]:
    """A matplotlib figure's size in pixels as ``savefig`` would draw it, without drawing."""
    dpi = figure.dpi
    try:
        import matplotlib

        saved = matplotlib.rcParams.get("savefig.dpi", "figure")
        if saved not in ("figure", None):
            dpi = float(saved)
    except ImportError:  # pragma: no cover - a figure without matplotlib
        pass
    width, height = figure.get_size_inches()
    return float(width) * dpi, float(height) * dpi


def check_size(value: Any, reference: str, max_pixels: int = MAX_PIXELS) -> None:
    """A ``PromptError`` when ``value``, a figure or a Pillow image, is over ``max_pixels``,
    measured without drawing or decoding it (encoded bytes are measured from their header
    when they are prepared)."""
    module = type(value).__module__
    if module.startswith("matplotlib") and hasattr(value, "get_size_inches"):
        width, height = figure_pixels(value)
    elif module.startswith("PIL") and hasattr(value, "size"):
        width, height = value.size
    else:
        return
    if width * height > max_pixels:
        raise _too_big(reference, width, height, max_pixels)


def image_bytes(
    value: Any,
    reference: str = "the image",
    max_side: int | None = None,
    max_pixels: int = MAX_PIXELS,
) -> bytes:
    """The image's encoded bytes (PNG, JPEG, GIF or WebP); a figure is measured first (a
    ``PromptError`` over ``max_pixels``) and drawn at no more than ``DRAW_MARGIN`` times
    ``max_side`` on its long side."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, DisplayedImage):
        return value.data
    module = type(value).__module__
    if module.startswith("matplotlib"):
        width, height = figure_pixels(value)
        if width * height > max_pixels:
            raise _too_big(reference, width, height, max_pixels)
        options: dict[str, Any] = {}
        longest = max(width, height)
        if max_side is not None and longest > DRAW_MARGIN * max_side:
            dpi = width / float(value.get_size_inches()[0])
            options["dpi"] = dpi * DRAW_MARGIN * max_side / longest
        buffer = io.BytesIO()
        value.savefig(buffer, format="png", bbox_inches="tight", **options)
        return buffer.getvalue()
    if module.startswith("PIL"):
        width, height = value.size
        if width * height > max_pixels:
            raise _too_big(reference, width, height, max_pixels)
        buffer = io.BytesIO()
        image = value if value.mode in ("RGB", "RGBA", "L", "LA", "P") else value.convert("RGBA")
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    return bytes(value.data)


def _said(exc: BaseException) -> str:
    """An image library's error as one line, without object addresses (``<_io.BytesIO object
    at 0x...>`` says nothing to the reader)."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not an image format Pillow can read"
    text = _ADDRESS.sub("the image data", " ".join(str(exc).split()))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def prepare(
    value: Any, reference: str, max_side: int, max_bytes: int, max_pixels: int = MAX_PIXELS
) -> ImagePart:
    """``value`` as a PNG at most ``max_side`` pixels on its long side; a ``PromptError``
    naming ``reference`` when it cannot be read, is over ``max_pixels`` (checked before it is
    drawn or decoded) or is over ``max_bytes``."""
    try:
        from PIL import Image
    except ImportError:
        raise PromptError(
            f"{reference} is an image; sending images needs Pillow (pip install pillow)"
        ) from None
    try:
        raw = image_bytes(value, reference, max_side, max_pixels)
        with warnings.catch_warnings():
            # Pillow's own bomb check warns past 89 megapixels; the limit here comes first.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as opened:
                width, height = opened.size  # from the header: nothing decoded yet
                if width * height > max_pixels:
                    raise _too_big(reference, width, height, max_pixels)
                image = opened.copy()
    except PromptError:
        raise
    except Exception as exc:  # the user's object: any failure is one line
        raise PromptError(f"Cannot read {reference} as an image: {_said(exc)}") from None
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
