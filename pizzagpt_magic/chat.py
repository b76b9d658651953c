"""A conversation: its history of exchanges and a bounded cache of answers.

``Conversation.ask`` answers from the cache when the same request (model, system message,
history sent, prompt) was answered before; it never changes the history. The caller records an
exchange with ``record`` once it has accepted the answer, so a failed exchange leaves no trace.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from .api import ask_async, build_messages
from .providers.base import Messages
from .providers.pizzagpt import Pizzagpt

__all__ = ["Conversation", "Exchange", "Reply"]


@dataclass(frozen=True)
class Exchange:
    """One question and its answer."""

    prompt: str
    answer: str
    model: str


@dataclass(frozen=True)
class Reply:
    """An answer's text, and whether it came from the cache."""

    text: str
    cached: bool


class Conversation:
    """The history of exchanges (the newest ``max_exchanges``) and the answer cache."""

    def __init__(self, max_exchanges: int = 20, cache_size: int = 128) -> None:
        from cachetools import LRUCache

        # A deque with maxlen 0 keeps nothing, so 0 means "no history" with no special case.
        self.exchanges: deque[Exchange] = deque(maxlen=max_exchanges)
        self.cache: LRUCache[tuple[Any, ...], str] = LRUCache(maxsize=max(1, cache_size))

    def resize(self, *, max_exchanges: int | None = None, cache_size: int | None = None) -> None:
        from cachetools import LRUCache

        if max_exchanges is not None and max_exchanges != self.exchanges.maxlen:
            self.exchanges = deque(self.exchanges, maxlen=max_exchanges)
        if cache_size is not None and cache_size != self.cache.maxsize:
            cache: LRUCache[tuple[Any, ...], str] = LRUCache(maxsize=max(1, cache_size))
            cache.update(self.cache)
            self.cache = cache

    def history(self) -> Messages:
        """The recorded exchanges as alternating user and assistant messages."""
        messages: Messages = []
        for exchange in self.exchanges:
            messages.append({"role": "user", "content": exchange.prompt})
            messages.append({"role": "assistant", "content": exchange.answer})
        return messages

    def messages(self, prompt: str, *, system: str | None = None, chat: bool = False) -> Messages:
        """The messages a request for ``prompt`` sends."""
        return build_messages(prompt, system=system, history=self.history() if chat else ())

    @staticmethod
    def _key(prompt: str, model: str, system: str | None, history: Messages) -> tuple[Any, ...]:
        sent = tuple((m["role"], m["content"]) for m in history)
        return (Pizzagpt.get_model(model), system or "", sent, prompt)

    def lookup(
        self, prompt: str, *, model: str, system: str | None = None, chat: bool = False
    ) -> str | None:
        """The cached answer to this request, or None."""
        history = self.history() if chat else []
        return self.cache.get(self._key(prompt, model, system, history))

    async def ask(
        self,
        prompt: str,
        *,
        model: str,
        system: str | None = None,
        chat: bool = False,
        use_cache: bool = True,
        **request: Any,
    ) -> Reply:
        """The answer to ``prompt``, from the cache if allowed and present."""
        history = self.history() if chat else []
        key = self._key(prompt, model, system, history)
        if use_cache and key in self.cache:
            return Reply(self.cache[key], cached=True)
        text = await ask_async(prompt, model=model, system=system, history=history, **request)
        self.cache[key] = text
        return Reply(text, cached=False)

    def record(self, prompt: str, answer: str, model: str) -> None:
        self.exchanges.append(Exchange(prompt, answer, model))

    def reset(self) -> int:
        """Forget the history; returns how many exchanges were forgotten."""
        count = len(self.exchanges)
        self.exchanges.clear()
        return count
