"""The formats an answer is shown in (``-f``): a ground-floor module, importing nothing, so the
magics' options can name them without loading the renderer at ``%load_ext``."""

from __future__ import annotations

__all__ = ["FORMATS"]

FORMATS = ("markdown", "text", "code", "json")
