"""Providers in the gpt4free style; nothing here imports IPython."""

from __future__ import annotations

from .base import (
    AsyncGeneratorProvider,
    AsyncResult,
    FinishReason,
    Messages,
    ProviderModelMixin,
    ResponseType,
    format_prompt,
)
from .pizzagpt import Pizzagpt

__all__ = [
    "AsyncGeneratorProvider",
    "AsyncResult",
    "FinishReason",
    "Messages",
    "Pizzagpt",
    "ProviderModelMixin",
    "ResponseType",
    "format_prompt",
]
