"""Prompts: what is asked, with everything that changes its answer, and its cache key.

A ``Prompt`` holds the backend, the messages, the parameters (temperature, max tokens, schema, model
options) and Pizzagpt's base URL override. Its ``key`` (``keys.prompt_key``) is computed once, when
it is made. A repair (``repaired``) is a new prompt with the same key: the conversation so far, the
answer that did not fit and the request to fix it travel as ``follow_up``, which is sent but is not
part of the key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .keys import parameters_of, prompt_key

if TYPE_CHECKING:
    from ..backends import Backend
    from ..errors import SchemaError
    from ..providers.base import Messages
    from ..schema import Schema

__all__ = ["Prompt", "make_prompt"]


class Prompt:
    """One request to make (see the module's docstring)."""

    __slots__ = (
        "attempt",
        "backend",
        "base_url",
        "follow_up",
        "key",
        "max_tokens",
        "messages",
        "options",
        "schema",
        "temperature",
    )

    def __init__(
        self,
        backend: Backend,
        messages: Messages,
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        schema: Schema | None = None,
        base_url: str | None = None,
        key: str | None = None,
        follow_up: Messages | None = None,
        attempt: int = 0,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.messages = messages
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.schema = schema
        #: Model options, canonical (``options.settle`` made them).
        self.options: Mapping[str, Any] = options or {}
        self.base_url = base_url
        self.follow_up: Messages = follow_up or []
        #: How many repairs came before this one (0: the first ask).
        self.attempt = attempt
        self.key: str = key or prompt_key(
            backend, messages, temperature, max_tokens, base_url, schema, None, self.options
        )

    def __repr__(self) -> str:
        return f"<Prompt {self.key[:12]} to {self.backend.id} (attempt {self.attempt})>"

    @property
    def parameters(self) -> dict[str, Any]:
        """The parameters as the log and ``Completion.parameters`` record them."""
        return parameters_of(self.temperature, self.max_tokens, self.schema, self.options)

    def sent_messages(self, schema_in_prompt: bool = False) -> Messages:
        """The messages a request sends: the prompt's, its follow-up, and, when the schema
        cannot travel as ``response_format``, the schema's instructions added to the first
        question."""
        messages = self.messages + self.follow_up if self.follow_up else self.messages
        if not (schema_in_prompt and self.schema is not None):
            return messages
        instructions = self.schema.instructions()
        users = [i for i, m in enumerate(self.messages) if m.get("role") == "user"]
        if not users:
            return [*messages, {"role": "user", "content": instructions}]
        index = users[-1]
        content = messages[index]["content"]
        if isinstance(content, list):
            content = [*content, {"type": "text", "text": "\n\n" + instructions}]
        else:
            content = f"{content}\n\n{instructions}"
        changed = list(messages)
        changed[index] = {**messages[index], "content": content}
        return changed

    def repaired(self, text: str, error: SchemaError) -> Prompt:
        """The prompt that asks again after ``text`` failed the schema with ``error``."""
        assert self.schema is not None
        follow_up = [
            *self.follow_up,
            {"role": "assistant", "content": text},
            {"role": "user", "content": self.schema.repair_request(error)},
        ]
        return Prompt(
            self.backend,
            self.messages,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            schema=self.schema,
            base_url=self.base_url,
            key=self.key,
            follow_up=follow_up,
            attempt=self.attempt + 1,
            options=self.options,
        )


def _makers() -> tuple[Any, Any]:
    """``api._prepare`` and ``schema.as_schema``, imported once (``api`` imports the engine;
    a batch makes tens of thousands of prompts, and an import statement costs each)."""
    global _MAKERS
    if _MAKERS is None:
        from ..api import _prepare
        from ..schema import as_schema

        _MAKERS = (_prepare, as_schema)
    return _MAKERS


_MAKERS: tuple[Any, Any] | None = None


def make_prompt(
    prompt: Any,
    *,
    model: str | None = None,
    provider: Any = None,
    system: str | None = None,
    history: Iterable[Mapping[str, Any]] = (),
    temperature: float | None = None,
    max_tokens: int | None = None,
    schema: Any = None,
    base_url: str | None = None,
    options: Mapping[str, Any] | None = None,
    variables: Mapping[str, Any] | None = None,
) -> Prompt:
    """The ``Prompt`` of a question as ``ask`` takes it: text (or content parts), or a saved
    prompt with ``variables`` for its placeholders, with the model id or alias (or a provider
    class), a system message, earlier messages, parameters, model options and a schema in any
    of its forms. A prompt that cannot be sent is a ``PromptError`` (or a
    ``SchemaSpecError``, a ``ConfigurationError``) here, before anything is sent."""
    _prepare, as_schema = _makers()
    question = _prepare(
        prompt,
        model,
        provider,
        system,
        history,
        temperature,
        max_tokens,
        options,
        variables,
        schema,
    )
    question.backend.check_images(question.messages)
    return Prompt(
        question.backend,
        question.messages,
        temperature=question.temperature,
        max_tokens=question.max_tokens,
        schema=as_schema(question.schema),
        base_url=base_url,
        options=question.options,
    )
