"""Ask a language model from a Jupyter notebook.

``%load_ext pizzagpt_magic`` registers the ``%pizza`` line magic and the ``%%pizza`` cell magic.
The same backends serve Python code through ``ask``, ``ask_async``, ``complete``, ``ask_many`` and
``ask_many_async``: Pizzagpt by default, Claude through Anthropic's Messages API
(``anthropic:claude-sonnet-4-5``), any OpenAI-compatible endpoint (``ollama:llama3.2``,
``openai:gpt-4o-mini``, ``register_endpoint``) or gpt4free-style provider class.

Importing the package is cheap: the public names load their modules (and aiohttp) on first use.
It also gives every pandas DataFrame and Series the ``.pizza`` accessor (``df.pizza.map``,
``filter``, ``classify``, ``extract``, ``agg``), without importing pandas (see ``frames``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import frames as _frames
from ._version import __version__

_EXPORTS = {
    "AsyncGeneratorProvider": "providers.base",
    "AsyncResult": "providers.base",
    "FinishReason": "providers.base",
    "Messages": "providers.base",
    "ProviderModelMixin": "providers.base",
    "format_prompt": "providers.base",
    "Pizzagpt": "providers.pizzagpt",
    "OpenAICompatible": "providers.openai",
    "Anthropic": "providers.anthropic",
    "Usage": "providers.base",
    "Completion": "api",
    "Endpoint": "backends",
    "register_endpoint": "backends",
    "logs": "store",
    "usage": "reports",
    "set_prices": "cost",
    "Store": "store",
    "StoreWarning": "store",
    "complete": "api",
    "ask": "api",
    "ask_async": "api",
    "ask_many": "batch",
    "ask_many_async": "batch",
    "estimate_many": "batch",
    "answers_frame": "batch",
    "AnswerFormatError": "errors",
    "AuthenticationError": "errors",
    "ProviderError": "errors",
    "BatchError": "errors",
    "BudgetExceededError": "errors",
    "ConfigurationError": "errors",
    "RedirectError": "errors",
    "ConnectError": "errors",
    "ConnectionLostError": "errors",
    "EmptyAnswerError": "errors",
    "HTTPStatusError": "errors",
    "InterpolationError": "errors",
    "MisuseError": "errors",
    "ModelNotFoundError": "errors",
    "NonJSONResponseError": "errors",
    "PizzagptError": "errors",
    "PromptError": "errors",
    "RequestTimeoutError": "errors",
    "ResponseError": "errors",
    "ResponseShapeError": "errors",
    "SchemaError": "errors",
    "SchemaSpecError": "errors",
    "TransportError": "errors",
    "ToolError": "errors",
    "ToolRoundsError": "errors",
    "Toolbox": "tools",
    "JobError": "errors",
    "JobLineError": "errors",
    "BatchAPIUnavailable": "errors",
    "JobHandle": "jobs",
    "list_jobs": "jobs",
    "cancel_job": "jobs",
}

__all__ = sorted(_EXPORTS) + ["__version__", "load_ipython_extension", "unload_ipython_extension"]

if TYPE_CHECKING:  # pragma: no cover
    from .api import Completion, ask, ask_async, complete
    from .backends import Endpoint, register_endpoint
    from .batch import answers_frame, ask_many, ask_many_async, estimate_many
    from .cost import set_prices
    from .errors import (
        AnswerFormatError,
        AuthenticationError,
        BatchAPIUnavailable,
        BatchError,
        BudgetExceededError,
        ConfigurationError,
        ConnectError,
        ConnectionLostError,
        EmptyAnswerError,
        HTTPStatusError,
        InterpolationError,
        JobError,
        JobLineError,
        MisuseError,
        ModelNotFoundError,
        NonJSONResponseError,
        PizzagptError,
        PromptError,
        ProviderError,
        RedirectError,
        RequestTimeoutError,
        ResponseError,
        ResponseShapeError,
        SchemaError,
        SchemaSpecError,
        ToolError,
        ToolRoundsError,
        TransportError,
    )
    from .jobs import JobHandle, cancel_job, list_jobs
    from .providers.anthropic import Anthropic
    from .providers.base import (
        AsyncGeneratorProvider,
        AsyncResult,
        FinishReason,
        Messages,
        ProviderModelMixin,
        Usage,
        format_prompt,
    )
    from .providers.openai import OpenAICompatible
    from .providers.pizzagpt import Pizzagpt
    from .reports import usage
    from .store import Store, StoreWarning, logs
    from .tools import Toolbox


# ``df.pizza`` and ``s.pizza``: registered now if pandas is imported, else when it is.
_frames.install()


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%pizza`` and ``%%pizza`` (``%load_ext pizzagpt_magic``)."""
    from .magics import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics and close the session (``%unload_ext pizzagpt_magic``)."""
    from .magics import unload

    unload(ipython)
