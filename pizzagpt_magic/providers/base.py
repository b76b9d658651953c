"""The gpt4free-style provider interface: message and result types, ``format_prompt``, and the
``ProviderModelMixin`` and ``AsyncGeneratorProvider`` base classes.

Nothing here knows of IPython or of HTTP; a provider subclass brings the transport.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, ClassVar

from ..errors import ModelNotFoundError, PromptError

__all__ = [
    "AsyncGeneratorProvider",
    "AsyncResult",
    "FinishReason",
    "Messages",
    "ProviderModelMixin",
    "ResponseType",
    "USAGE_COUNTS",
    "Usage",
    "format_prompt",
]

#: A conversation: ``{"role": "system" | "user" | "assistant", "content": str}`` dicts, in order.
Messages = list[dict[str, Any]]


class ResponseType:
    """Base of the non-text items a provider may yield between text chunks.

    ``str()`` of a response object is ``""``, so joining every chunk as text gives the answer.
    """

    def __str__(self) -> str:
        return ""


class FinishReason(ResponseType):
    """Why the answer ended (``"stop"`` for a complete answer)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"FinishReason({self.reason!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FinishReason) and other.reason == self.reason

    def __hash__(self) -> int:
        return hash((FinishReason, self.reason))


#: The counts a ``Usage`` may hold, in the order they are shown.
USAGE_COUNTS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


class Usage(ResponseType):
    """Token counts of one answer, as the backend reported them.

    ``prompt_tokens`` counts the whole prompt; of those, ``cache_read_input_tokens`` were read
    from the backend's prompt cache and ``cache_creation_input_tokens`` written to it, when the
    backend says so (Anthropic's Messages API does).
    """

    def __init__(
        self,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        total_tokens: int | None = None,
        cache_read_input_tokens: int | None = None,
        cache_creation_input_tokens: int | None = None,
        **extra: Any,
    ) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        if total_tokens is None and prompt_tokens is not None and completion_tokens is not None:
            total_tokens = prompt_tokens + completion_tokens
        self.total_tokens = total_tokens
        self.cache_read_input_tokens = cache_read_input_tokens
        self.cache_creation_input_tokens = cache_creation_input_tokens

    def as_dict(self) -> dict[str, int]:
        """The known counts, by name."""
        return {
            name: value
            for name in USAGE_COUNTS
            if type(value := getattr(self, name)) is int and value >= 0  # not True, not -1
        }

    def __repr__(self) -> str:
        return f"Usage({', '.join(f'{k}={v}' for k, v in self.as_dict().items())})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Usage) and other.as_dict() == self.as_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.as_dict().items()))


#: What ``create_async_generator`` gives: text chunks and response objects.
AsyncResult = AsyncIterator[str | ResponseType]


def _content_text(content: Any) -> str:
    """A message's content as text: a string as it is, ``{"type": "text"}`` parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) if isinstance(part, dict) else str(part)
            for part in content
            if not isinstance(part, dict) or part.get("type", "text") == "text"
        )
    if content is None:
        return ""
    return str(content)


def format_prompt(
    messages: Messages, add_special_tokens: bool = False, do_continue: bool = False
) -> str:
    """Turn a conversation into one prompt string, exactly as gpt4free does.

    One message gives its content unchanged. Several give a ``Role: content`` line each (the role
    capitalised), joined by newlines, then a last line ``Assistant:`` unless ``do_continue``.

    >>> format_prompt([{"role": "system", "content": "Be brief"},
    ...                {"role": "user", "content": "Hi"}])
    'System: Be brief\\nUser: Hi\\nAssistant:'
    """
    if not messages:
        raise PromptError("Cannot format a prompt from an empty message list")
    if not add_special_tokens and len(messages) == 1:
        return _content_text(messages[0]["content"])
    formatted = "\n".join(
        f"{str(message['role']).capitalize()}: {_content_text(message['content'])}"
        for message in messages
    )
    if do_continue:
        return formatted
    return f"{formatted}\nAssistant:"


class ProviderModelMixin:
    """Model bookkeeping: the default model, the served models and aliases for them."""

    default_model: ClassVar[str] = ""
    models: ClassVar[list[str]] = []
    model_aliases: ClassVar[dict[str, str]] = {}

    @classmethod
    def get_models(cls) -> list[str]:
        """The models this provider serves."""
        return list(cls.models) if cls.models else [cls.default_model]

    @classmethod
    def get_model(cls, model: str | None) -> str:
        """Resolve ``model``: empty means the default, an alias maps to its target.

        Raises ``ModelNotFoundError`` (a ``ValueError``) for a model the provider does not serve.
        """
        if not model or model == cls.default_model:
            return cls.default_model
        model = cls.model_aliases.get(model, model)
        valid = cls.get_models()
        if model not in valid:
            raise ModelNotFoundError(cls.__name__, model, valid)
        return model


class AwaitableAsyncGenerator(AsyncGenerator[Any, None]):
    """An async generator that may also be awaited, giving itself.

    gpt4free's own examples ``await`` the result of ``create_async_generator`` and then iterate
    it, which fails on a plain async generator; this wrapper makes both spellings work.
    """

    __slots__ = ("_agen",)

    def __init__(self, agen: AsyncGenerator[Any, None]) -> None:
        self._agen = agen

    def __await__(self) -> Any:
        return self
        yield  # pragma: no cover - makes this a generator function, as __await__ must be

    def __aiter__(self) -> AsyncGenerator[Any, None]:
        # ``async for`` reads the generator itself, with no step through this wrapper.
        return self._agen

    def __anext__(self) -> Any:
        return self._agen.__anext__()

    def asend(self, value: Any) -> Any:
        return self._agen.asend(value)

    def athrow(self, *args: Any) -> Any:
        return self._agen.athrow(*args)

    def aclose(self) -> Any:
        return self._agen.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._agen!r}>"


def _awaitable(method: Any) -> Any:
    func = method.__func__ if isinstance(method, classmethod) else method

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> AwaitableAsyncGenerator:
        return AwaitableAsyncGenerator(func(*args, **kwargs))

    return classmethod(wrapper) if isinstance(method, classmethod) else wrapper


class AsyncGeneratorProvider:
    """Base of providers that answer through an async generator.

    A subclass implements the classmethod ``create_async_generator(model, messages, proxy=None,
    **kwargs)`` as an async generator; the base class makes its result awaitable as well, and
    offers ``create_async`` (the joined text) and ``create_completion`` (a synchronous iterator
    that works inside a running event loop too).
    """

    working: ClassVar[bool] = False
    supports_stream: ClassVar[bool] = True
    supports_message_history: ClassVar[bool] = True
    supports_system_message: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        method = cls.__dict__.get("create_async_generator")
        func = method.__func__ if isinstance(method, classmethod) else method
        if func is not None and inspect.isasyncgenfunction(func):
            cls.create_async_generator = _awaitable(method)  # type: ignore[method-assign]

    @classmethod
    def create_async_generator(
        cls, model: str, messages: Messages, proxy: str | None = None, **kwargs: Any
    ) -> AsyncResult:
        raise NotImplementedError

    @classmethod
    async def create_async(
        cls, model: str, messages: Messages, proxy: str | None = None, **kwargs: Any
    ) -> str:
        """The whole answer as one string."""
        chunks = []
        async for chunk in cls.create_async_generator(model, messages, proxy=proxy, **kwargs):
            if isinstance(chunk, str):
                chunks.append(chunk)
        return "".join(chunks)

    @classmethod
    def create_completion(
        cls, model: str, messages: Messages, stream: bool = False, **kwargs: Any
    ) -> Iterator[str | ResponseType]:
        """Iterate the answer synchronously, even from inside a running event loop."""
        from ..loop import run_sync

        agen: Any = cls.create_async_generator(model, messages, **kwargs)
        try:
            while True:
                try:
                    yield run_sync(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            run_sync(agen.aclose())
