"""The cache key: one function for every path that asks (a question, ``--each``, ``ask_many``,
and whatever sends prompts in packs, jobs or on other workers).

A key is a hash of what changes the answer, and of nothing else: the backend and the server it
answers from (``provider@origin``), the model, the parameters (temperature, max tokens, the
schema as canonical JSON) and the messages (images by their own hash). Never the row a prompt
came from, the request that carried it, the pack, the job or the partition.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import store as stores
from ..errors import PizzagptError

if TYPE_CHECKING:
    from ..backends import Backend
    from ..providers.base import Messages
    from ..schema import Schema

__all__ = ["origin_of", "parameters_of", "prompt_key"]


def origin_of(backend: Backend, base_url: str | None = None) -> str:
    """Where a backend's answers come from (an endpoint's or Pizzagpt's URL, a class's path):
    part of the cache key, so answers of one server never stand in for another's."""
    if backend.endpoint is not None:
        return backend.endpoint.url
    if backend.is_pizzagpt:
        try:
            return str(backend.cls.base_url(base_url))
        except PizzagptError:
            return ""
    return backend.provider


def parameters_of(
    temperature: float | None, max_tokens: int | None, schema: Schema | None = None
) -> dict[str, Any]:
    """The parameters given (None means the backend's default, and is left out); a schema as
    its JSON Schema, as the log records it."""
    parameters: dict[str, Any] = {}
    if temperature is not None:
        parameters["temperature"] = temperature
    if max_tokens is not None:
        parameters["max_tokens"] = max_tokens
    if schema is not None:
        parameters["schema"] = schema.json_schema
    return parameters


def prompt_key(
    backend: Backend,
    messages: Messages,
    temperature: float | None = None,
    max_tokens: int | None = None,
    base_url: str | None = None,
    schema: Schema | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The cache key of a request (see the module's docstring). A request without a schema
    has the key it had before schemas existed, so stores written then still answer. ``extra``
    holds more of what changes the answer (the tool set, model options), canonical JSON each."""
    parameters: dict[str, Any] = {}
    if temperature is not None:
        parameters["temperature"] = temperature
    if max_tokens is not None:
        parameters["max_tokens"] = max_tokens
    if schema is not None:
        parameters["schema"] = schema.key
    if extra:
        parameters.update(extra)
    return stores.request_key(
        f"{backend.provider}@{origin_of(backend, base_url)}", backend.model, parameters, messages
    )
