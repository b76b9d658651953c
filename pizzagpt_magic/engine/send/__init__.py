"""Sending: the strategies that take pending prompts and yield each one's result as it arrives.

Every strategy has one method::

    async def send(self, pending: Pending, request: Mapping[str, Any])
        -> AsyncIterator[tuple[Prompt, Completion | Exception]]

It takes prompts from ``pending`` (``await pending.next()`` one at a time, or ``pending.take(n)``
for what is ready now) until ``next`` gives None, and yields ``(prompt, result)`` for each, in the
order results arrive: the ``Completion``, or the exception that prompt ended with (an exception
never stops the others). ``prompt.key`` says which answer it is. ``request`` holds how a
request is sent (``proxy``, ``timeout``, ``connect_timeout``, ``max_retries``, and a ``gate``:
an async context manager factory entered around each request, such as a cluster-wide limit).
The engine may add prompts to ``pending`` while the strategy runs (a repair): ``next`` waits for
them, and gives None once every prompt handed out has been settled and none is queued. A cost
limit is a gate on ``pending``: a prompt it refuses is not handed out, and from then on nothing
is, so every strategy stops at the limit the same way.

A strategy bounds its own requests in flight (its ``concurrency``); the pause after a 429 (see
``session.pause_requests``) and the retry policy are the transport's, below ``fetch``, so every
strategy shares them. A strategy knows nothing of where its prompts came from.

``single`` sends one prompt a request, ``packed`` several prompts a request, ``jobs`` the
prompts as the provider's batch jobs (the Batch APIs, at the batch price); ``fetch`` is how any
strategy asks for one prompt.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ...api import Completion
    from ..prompts import Prompt

__all__ = ["Pending", "Strategy", "fetch"]

#: What a strategy yields: a prompt and its completion, or the exception it ended with.
Result = tuple["Prompt", "Completion | Exception"]


class Strategy(Protocol):
    """The interface of a send strategy (see the module's docstring)."""

    def send(self, pending: Pending, request: Mapping[str, Any]) -> AsyncIterator[Result]: ...


class Pending:
    """The prompts waiting to be sent: the plan's at first, then the repairs the checks add.

    ``open`` counts the prompts handed to the strategy or queued whose outcome the engine has
    not settled yet; when it reaches 0 with nothing queued, ``next`` gives None.
    """

    __slots__ = ("_queue", "_wake", "gate", "open", "stopped")

    def __init__(
        self, prompts: Iterable[Prompt] = (), gate: Callable[[Prompt], bool] | None = None
    ) -> None:
        self._queue: deque[Prompt] = deque(prompts)
        self.open = len(self._queue)
        self._wake: asyncio.Event | None = None
        #: Asked before each prompt is handed out (a cost limit): once it says no, nothing
        #: more is handed out, and what is queued is dropped.
        self.gate = gate
        #: Whether the gate stopped the sending.
        self.stopped = False

    def _admit(self, prompt: Prompt) -> bool:
        if self.gate is None or (not self.stopped and self.gate(prompt)):
            return True
        self.stopped = True
        self.open -= 1 + len(self._queue)  # neither this one nor the queued ones will settle
        self._queue.clear()
        self._signal()
        return False

    def __len__(self) -> int:
        """How many prompts are queued now."""
        return len(self._queue)

    def _signal(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def add(self, prompt: Prompt) -> None:
        """Queue one more prompt (a repair)."""
        self._queue.append(prompt)
        self.open += 1
        self._signal()

    def settle(self) -> None:
        """One prompt handed out has its outcome (or was replaced by a repair)."""
        self.open -= 1
        if self.open <= 0:
            self._signal()

    def take(self, count: int) -> list[Prompt]:
        """Up to ``count`` queued prompts, without waiting."""
        taken: list[Prompt] = []
        while self._queue and len(taken) < count:
            prompt = self._queue.popleft()
            if self._admit(prompt):
                taken.append(prompt)
        return taken

    def take_where(self, count: int, wanted: Callable[[Prompt], bool]) -> list[Prompt]:
        """Up to ``count`` queued prompts for which ``wanted`` is true, without waiting; the
        others keep their places. The gate (a cost limit) is asked for each, in order."""
        candidates: list[Prompt] = []
        kept: list[Prompt] = []
        queue = self._queue
        while queue and len(candidates) < count:
            prompt = queue.popleft()
            if wanted(prompt):
                candidates.append(prompt)
            else:
                kept.append(prompt)
                if len(kept) > 4 * count:  # a long run of others: look no further
                    break
        queue.extendleft(reversed(kept))
        taken: list[Prompt] = []
        for number, prompt in enumerate(candidates):
            if not self._admit(prompt):
                # The rest were taken from the queue and will never be handed out either.
                self.open -= len(candidates) - number - 1
                break
            taken.append(prompt)
        return taken

    async def next(self) -> Prompt | None:
        """The next prompt to send, waiting for one while any may still come; else None."""
        while True:
            if self._queue:
                prompt = self._queue.popleft()
                if self._admit(prompt):
                    return prompt
                continue
            if self.open <= 0:
                return None
            if self._wake is None:
                self._wake = asyncio.Event()
            self._wake.clear()
            await self._wake.wait()


async def fetch(prompt: Prompt, request: Mapping[str, Any]) -> Completion:
    """Ask for one prompt, not streamed: its ``Completion``.

    A prompt with a schema goes to an OpenAI-compatible endpoint with ``response_format``
    ``json_schema``; an endpoint that refuses it (a 400 naming ``response_format``) is asked
    again with the schema in the prompt, and is asked so from then on. Other backends get the
    schema in the prompt.
    """
    from ...api import _fetch
    from ...cost import pricing_for
    from ...providers.openai import (
        ResponseFormatRefused,
        refuse_response_format,
        takes_response_format,
    )
    from ..keys import origin_of

    gate = request.get("gate")
    if gate is not None:
        # A limit shared with other processes (a cluster's): held for this request alone.
        async with gate():
            return await fetch(prompt, {k: v for k, v in request.items() if k != "gate"})
    backend = prompt.backend
    options = {**request, "base_url": prompt.base_url}
    schema = prompt.schema
    completion: Completion | None = None
    if schema is None:
        completion = await _fetch(
            backend,
            prompt.sent_messages(),
            False,
            prompt.temperature,
            prompt.max_tokens,
            None,
            options,
        )
    else:
        endpoint = backend.endpoint
        if endpoint is not None and takes_response_format(endpoint.url):
            try:
                completion = await _fetch(
                    backend,
                    prompt.sent_messages(),
                    False,
                    prompt.temperature,
                    prompt.max_tokens,
                    None,
                    options,
                    schema.response_format(),
                )
            except ResponseFormatRefused:
                refuse_response_format(endpoint.url)
        if completion is None:
            completion = await _fetch(
                backend,
                prompt.sent_messages(schema_in_prompt=True),
                False,
                prompt.temperature,
                prompt.max_tokens,
                None,
                options,
            )
    assert completion is not None
    completion.parameters = prompt.parameters
    completion.cost = pricing_for(
        backend.provider, backend.model, origin_of(backend, prompt.base_url)
    ).cost(completion.usage)
    return completion
