"""A conversation: its history of exchanges and a bounded cache of answers.

``Conversation.ask`` answers from the cache when the same request (provider, model, parameters,
system message, history sent, prompt) was answered before; it never changes the history. The
caller records an exchange with ``record`` once it has accepted the answer, so a failed or
interrupted exchange leaves no trace.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import answers
from .api import Completion, build_messages, complete_messages, from_answer_file, log_exchange
from .engine.keys import parameters_of, prompt_key
from .providers.base import Messages

if TYPE_CHECKING:
    from .backends import Backend
    from .tools import Toolbox

__all__ = ["Conversation", "Exchange", "Reply"]


@dataclass(frozen=True)
class Exchange:
    """One question and its answer, and the backend that gave it."""

    prompt: Any  #: text, or content parts for a question with images
    answer: str
    model: str
    provider: str = "pizzagpt"

    @property
    def prompt_text(self) -> str:
        from .images import content_text

        return content_text(self.prompt)


@dataclass(frozen=True)
class Reply:
    """An answer's text, whether it came from the cache, and its metadata."""

    text: str
    cached: bool
    completion: Completion | None = None


class Conversation:
    """The history of exchanges (the newest ``max_exchanges``) and the answer cache."""

    def __init__(self, max_exchanges: int = 20, cache_size: int = 128) -> None:
        from cachetools import LRUCache

        # A deque with maxlen 0 keeps nothing, so 0 means "no history" with no special case.
        self.exchanges: deque[Exchange] = deque(maxlen=max_exchanges)
        # Keyed by the engine's cache key, as the store is: a batch and a question share it.
        self.cache: LRUCache[str, Completion] = LRUCache(maxsize=max(1, cache_size))

    def resize(self, *, max_exchanges: int | None = None, cache_size: int | None = None) -> None:
        from cachetools import LRUCache

        if max_exchanges is not None and max_exchanges != self.exchanges.maxlen:
            self.exchanges = deque(self.exchanges, maxlen=max_exchanges)
        if cache_size is not None and cache_size != self.cache.maxsize:
            cache: LRUCache[str, Completion] = LRUCache(maxsize=max(1, cache_size))
            cache.update(self.cache)
            self.cache = cache

    def history(self) -> Messages:
        """The recorded exchanges as alternating user and assistant messages."""
        messages: Messages = []
        for exchange in self.exchanges:
            messages.append({"role": "user", "content": exchange.prompt})
            messages.append({"role": "assistant", "content": exchange.answer})
        return messages

    def messages(self, prompt: Any, *, system: str | None = None, chat: bool = False) -> Messages:
        """The messages a request for ``prompt`` sends."""
        return build_messages(prompt, system=system, history=self.history() if chat else ())

    def lookup(
        self,
        prompt: Any,
        *,
        backend: Backend,
        system: str | None = None,
        chat: bool = False,
        temperature: float | None = None,
        max_tokens: int | None = None,
        store: Any = None,
        base_url: str | None = None,
        tools: Toolbox | None = None,
        schema: Any = None,
    ) -> bool:
        """Whether this request has an answer kept, in memory or in ``store``."""
        from .schema import as_schema

        messages = self.messages(prompt, system=system, chat=chat)
        settings = answers.current()
        if settings is not None:
            if settings.refresh:
                return False
            parameters = parameters_of(temperature, max_tokens, as_schema(schema))
            if tools is not None:
                parameters["tools"] = tools.key()
            if from_answer_file(settings, backend, messages, parameters, False):
                return True
        extra = {"tools": tools.key()} if tools is not None else None
        key = prompt_key(
            backend, messages, temperature, max_tokens, base_url, as_schema(schema), extra
        )
        if settings is None and key in self.cache:
            return True
        return store is not None and store.has(key)

    async def ask(
        self,
        prompt: Any,
        *,
        backend: Backend,
        system: str | None = None,
        chat: bool = False,
        use_cache: bool = True,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stream: bool = False,
        on_text: Callable[[str], Any] | None = None,
        store: Any = None,
        log: bool = True,
        context: dict[str, Any] | None = None,
        tools: Toolbox | None = None,
        tool_rounds: int = 5,
        schema: Any = None,
        schema_retries: int = 1,
        **request: Any,
    ) -> Reply:
        """The answer to ``prompt``: from memory, else from the store, else asked for (and then
        kept in both). ``use_cache`` False asks again whatever is kept. With ``log`` the
        exchange goes to ``store``'s log. With ``schema`` the reply's completion holds the
        answer's value (``Completion.value``)."""
        from .schema import as_schema

        schema = as_schema(schema)
        messages = self.messages(prompt, system=system, chat=chat)
        extra = {"tools": tools.key()} if tools is not None else None
        key = prompt_key(
            backend, messages, temperature, max_tokens, request.get("base_url"), schema, extra
        )
        # With an answer file, it is read first (then the store): every answer reaches it.
        if use_cache and key in self.cache and answers.current() is None:
            kept = self.cache[key]
            cost = kept.cost.hit() if kept.cost is not None else None
            hit = dataclasses.replace(kept, cached=True, seconds=0.0, cost=cost)
            if log and store is not None:
                from . import store as stores

                if stores.logging_enabled():
                    log_exchange(store, hit, messages, context=context)
            return Reply(hit.text, True, hit)
        completion = await complete_messages(
            backend,
            messages,
            stream=stream,
            temperature=temperature,
            max_tokens=max_tokens,
            on_text=on_text,
            cache=use_cache,
            log=log,
            store=store,
            context=context,
            tools=tools,
            tool_rounds=tool_rounds,
            schema=schema,
            schema_retries=schema_retries,
            **request,
        )
        self.cache[key] = dataclasses.replace(completion, cached=False)
        return Reply(completion.text, completion.cached, completion)

    def record(self, prompt: Any, answer: str, model: str, provider: str = "pizzagpt") -> None:
        self.exchanges.append(Exchange(prompt, answer, model, provider))

    def reset(self) -> int:
        """Forget the history; returns how many exchanges were forgotten."""
        count = len(self.exchanges)
        self.exchanges.clear()
        return count
