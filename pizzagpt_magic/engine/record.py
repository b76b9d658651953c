"""Recording: every answer goes to the store (cache and log) the moment it is checked, before
anything is assembled, so an interrupt, a crash or a stop loses nothing that arrived.

Only answers that passed their check are cached (a rerun asks again for the others); every
outcome, answered or failed, is logged. ``memory`` (a mapping such as a conversation's LRU
cache) is looked up first and kept up to date, for when the store is off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..api import Completion
    from .check import Outcome
    from .prompts import Prompt

__all__ = ["Recorder"]


def _api() -> Any:
    """The modules a record needs, imported once (``api`` imports the engine): a batch
    records tens of thousands of answers, and an import statement costs each of them."""
    global _MODULES
    if _MODULES is None:
        from .. import answers, api

        _MODULES = (answers, api)
    return _MODULES


_MODULES: tuple[Any, Any] | None = None


class Recorder:
    """Lookups in, and writes to, the store and ``memory`` for one batch."""

    def __init__(
        self,
        store: Any,
        *,
        cache: bool = True,
        log: bool = True,
        context: dict[str, Any] | None = None,
        memory: MutableMapping[str, Any] | None = None,
    ) -> None:
        from .. import store as stores
        from ..api import DEFAULT_STORE

        if isinstance(store, str) and store == DEFAULT_STORE:
            store = stores.get_store() if (cache or log) else None
        self.store = store
        self.cache = cache
        self.log = log and store is not None and stores.logging_enabled()
        self.context = context
        self.memory = memory
        #: The keys the store holds among those ``prefetch`` was given (None: not asked).
        self._stored: set[str] | None = None

    def prefetch(self, keys: list[str]) -> None:
        """Ask the store at once which of ``keys`` it holds, so that ``lookup`` reads only
        those (a large batch's plan would otherwise ask once a key)."""
        store = self.store
        if self.cache and store is not None and len(keys) > 64 and hasattr(store, "present"):
            self._stored = store.present(keys)

    def forget_prefetched(self) -> None:
        """Back to asking the store key by key (what ``prefetch`` found is out of date)."""
        self._stored = None

    def lookup(self, prompt: Prompt) -> Completion | None:
        """The kept answer of ``prompt``'s key (marked as cached), or None: the answer file's
        first when one is in effect (only it with ``answers_only``), then memory, the store."""
        answers, api = _api()
        settings = answers.current()
        if settings is not None:
            hit = api.from_answer_file(
                settings, prompt.backend, prompt.messages, prompt.parameters, False
            )
            if hit is not None or settings.refresh or settings.only:
                return hit
        if not self.cache:
            return None
        if self.memory is not None:
            hit = self.memory.get(prompt.key)
            if hit is not None:
                cost = hit.cost.hit() if hit.cost is not None else None
                return dataclasses.replace(hit, cached=True, seconds=0.0, cost=cost)
        if self.store is None or (self._stored is not None and prompt.key not in self._stored):
            return None
        found = self.store.get(prompt.key)
        if found is None:
            return None
        from ..cost import pricing_for
        from .keys import origin_of

        meta = found["meta"]
        backend = prompt.backend
        pricing = pricing_for(backend.provider, backend.model, origin_of(backend, prompt.base_url))
        return api.Completion(
            found["text"],
            backend.provider,
            backend.model,
            prompt.parameters,
            meta.get("finish_reason"),
            meta.get("usage"),
            0.0,
            cached=True,
            cost=pricing.cost(meta.get("usage")).hit(),
        )

    def record(self, prompt: Prompt, outcome: Outcome) -> None:
        """Keep ``outcome``: its answer in the store and ``memory`` when it passed (and was not
        a cache hit already), and in the answer file when one is in effect, and in the log
        whatever it was."""
        completion = outcome.completion
        answers, api = _api()
        if outcome.ok and completion is not None:
            settings = answers.current()
            if settings is not None:
                api.to_answer_file(settings, completion, prompt.messages)
        store = self.store
        if outcome.ok and completion is not None and not completion.cached:
            if store is not None:
                meta: dict[str, Any] = {
                    "finish_reason": completion.finish_reason,
                    "usage": completion.usage,
                }
                if completion.batch:
                    meta["batch"] = True
                store.put(prompt.key, completion.provider, completion.model, completion.text, meta)
            if self.memory is not None:
                self.memory[prompt.key] = dataclasses.replace(completion, cached=False)
        if not self.log:
            return
        log_exchange = api.log_exchange
        if outcome.ok:
            log_exchange(store, completion, prompt.messages, context=self.context)
        else:
            error = outcome.error
            context = self.context
            if getattr(error, "batch", False) or (completion is not None and completion.batch):
                context = {**(context or {}), "batch": True}  # a Batch API's failure
            log_exchange(
                store,
                None,
                prompt.messages,
                context=context,
                backend=prompt.backend,
                error=f"{type(error).__name__}: {error}",
                partial=outcome.text or getattr(error, "partial", None) or None,
                parameters=prompt.parameters,
            )
