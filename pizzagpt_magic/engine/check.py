"""Checking: an answer becomes an ``Outcome`` (its value, or the error it ended with), or, when
it does not fit its schema and a repair is left, a new prompt to send."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import SchemaError

if TYPE_CHECKING:
    from ..api import Completion
    from .prompts import Prompt

__all__ = ["Outcome", "check"]


@dataclass(slots=True)
class Outcome:
    """What one key ended with: the answer's ``value`` (its text, or with a schema the dict or
    model instance), or the ``error``; the ``completion`` when an answer came (its ``text`` is
    kept even when it failed the schema)."""

    key: str
    value: Any = None
    error: BaseException | None = None
    completion: Completion | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def cached(self) -> bool:
        return self.completion is not None and self.completion.cached

    @property
    def text(self) -> str | None:
        if self.completion is not None:
            return self.completion.text
        return getattr(self.error, "text", None)

    def result(self) -> Any:
        """The value, or the exception in its place."""
        return self.value if self.error is None else self.error


def check(prompt: Prompt, result: Completion | BaseException, retries: int = 1) -> Outcome | Prompt:
    """The outcome of ``prompt``'s ``result``; a repair prompt when its answer does not fit the
    schema and fewer than ``retries`` repairs were asked for."""
    if isinstance(result, BaseException):
        return Outcome(prompt.key, error=result)
    schema = prompt.schema
    if schema is None:
        result.value = result.text
        return Outcome(prompt.key, result.text, completion=result)
    try:
        value = schema.parse(result.text)
    except SchemaError as exc:
        if prompt.attempt < retries:
            return prompt.repaired(result.text, exc)
        return Outcome(prompt.key, error=exc, completion=result)
    result.value = value
    return Outcome(prompt.key, value, completion=result)
