"""The ``jobs`` strategy: the pending prompts as provider batch jobs, at the batch price.

    await batch.run(Jobs(store, wait=True))

Each prompt becomes one line whose ``custom_id`` is its cache key (64 hex characters: within
every provider's limit, unique within a job since a plan holds each key once, and no row text)
and whose body is the body the online request sends (``providers.batches``). Before submitting,
the store's live jobs of the same endpoint are looked up by key: a prompt already in one is not
submitted again, its job is polled instead (the same call after a kernel restart resumes, never
resubmits). What is left is split over the provider's limits (requests, bytes, and
``max_requests``), checked with the endpoint's ``probe`` once, and submitted; each job is in the
store (endpoint, ids, the rows' keys, never a key) the moment it exists.

Polling waits ``poll`` seconds at first, half as long again each time, up to ``poll_max``; a
network error while polling is logged and polled again later, never resubmitted. A finished job's
lines are read as a stream and yielded as they come, so the engine records each in the cache and
the log at once; lines that failed or expired are their rows' errors (a rerun submits only those,
as they are not in the cache), and an expired or cancelled job keeps every answer it finished. A
job refused at validation fails its rows with the provider's message; one refused for the tokens
queued (``token_limit_exceeded``) is split and submitted again, or waits for an earlier job to
finish. Repairs (an answer that does not fit its schema) are asked online, one at a time.

An interrupt (a cancelled task) stops the waiting and never cancels a job. With ``wait=False``
the jobs are submitted (or found) and nothing is waited for: ``submitted`` and ``resumed`` hold
their ids.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ...errors import HTTPStatusError, JobError, JobLineError, PizzagptError, TransportError
from . import Pending, Result, fetch

if TYPE_CHECKING:
    from ...providers.batches import BatchClient, JobState, Line
    from ..prompts import Prompt

__all__ = ["Jobs", "MemoryBook", "book_for"]

logger = logging.getLogger(__name__)

#: Writes the store may hold queued while a job's results are read: past it, reading waits for
#: the store, so memory does not grow with the lines read.
BACKLOG = 4000
#: Results read between two looks at the store's writer (``Jobs._keep_up``), and how long
#: the reading pauses for a writer that is writing, in seconds.
KEEP_UP_EVERY = 32
YIELD = 0.0001
#: The first and the longest wait between two polls, in seconds.
POLL_FIRST = 3.0
POLL_MAX = 60.0


def _completion() -> Any:
    """``api.Completion``, imported once (``api`` imports the engine)."""
    global _COMPLETION
    if _COMPLETION is None:
        from ...api import Completion

        _COMPLETION = Completion
    return _COMPLETION


_COMPLETION: Any = None


_E = TypeVar("_E", bound=BaseException)


def _from_job(error: _E) -> _E:
    """``error``, marked as a Batch API's (``batch``): the log counts it with the batch's
    requests, apart from the online ones."""
    error.batch = True  # type: ignore[attr-defined]
    return error


def _pricing(backend: Any) -> Any:
    """The pricing of ``backend``'s model at its endpoint (``cost.pricing_for``; a job's
    backend is always an endpoint)."""
    from ...cost import pricing_for
    from ..keys import origin_of

    return pricing_for(backend.provider, backend.model, origin_of(backend))


class MemoryBook:
    """The jobs of this process when the store is off: the store's job methods, in memory."""

    def __init__(self) -> None:
        self._jobs: dict[str, dict[str, Any]] = {}
        self._rows: dict[str, list[str]] = {}

    def add_job(self, job: dict[str, Any], keys: Any) -> bool:
        record = {
            "completed": 0,
            "failed": 0,
            "finished": None,
            "collected": 0,
            "error": None,
            "input_file": None,
            **job,
        }
        record.setdefault("created", time.time())
        self._jobs[job["id"]] = record
        self._rows[job["id"]] = list(keys)
        return True

    def update_job(self, job_id: str, **fields: Any) -> None:
        if job_id in self._jobs:
            self._jobs[job_id].update(fields)

    def jobs(
        self, n: int | None = None, *, live: bool = False, origin: str | None = None
    ) -> list[dict[str, Any]]:
        found = [
            dict(j)
            for j in self._jobs.values()
            if (not live or not j["collected"]) and (origin is None or j["origin"] == origin)
        ]
        found.sort(key=lambda j: j["created"], reverse=True)
        return found[:n] if n is not None else found

    def job(self, job_id: str) -> dict[str, Any] | None:
        found = self._jobs.get(job_id)
        return dict(found) if found is not None else None

    def job_keys(self, job_id: str) -> list[str]:
        return list(self._rows.get(job_id, ()))


#: The jobs of this process when no store keeps them.
MEMORY = MemoryBook()


def book_for(store: Any) -> Any:
    """Where jobs are kept: the store when it works, else this process's memory."""
    if store is not None and getattr(store, "usable", False) and hasattr(store, "add_job"):
        return store
    return MEMORY


@dataclass
class Tracked:
    """A job this run waits for: its client, id, the keys of this run's prompts in it."""

    client: BatchClient
    id: str
    keys: list[str]
    state: JobState | None = None
    over: bool = False


class Jobs:
    """Send the pending prompts as provider batch jobs (see the module's docstring)."""

    name = "jobs"

    def __init__(
        self,
        store: Any = None,
        *,
        wait: bool = True,
        poll: float = POLL_FIRST,
        poll_max: float = POLL_MAX,
        max_requests: int | None = None,
        on_status: Callable[[list[JobState]], Any] | None = None,
    ) -> None:
        if max_requests is not None and max_requests < 1:
            raise ValueError("max_requests must be at least 1")
        self.store = store
        self.book = book_for(store)
        self.wait = wait
        self.poll = max(0.0, poll)
        self.poll_max = max(self.poll, poll_max)
        self.max_requests = max_requests
        self.on_status = on_status
        #: The ids of the jobs this run submitted, and of those it found and resumed.
        self.submitted: list[str] = []
        self.resumed: list[str] = []
        self._tracked: list[Tracked] = []
        self._deferred: list[tuple[BatchClient, list[Line]]] = []
        #: Each model's pricing at its endpoint, found once for a job's lines.
        self._prices: dict[tuple[str, str, str], Any] = {}

    @property
    def ids(self) -> list[str]:
        """Every job this run waits for (resumed first)."""
        return [*self.resumed, *self.submitted]

    # -- submitting -------------------------------------------------------------------------

    def _chunks(self, client: BatchClient, lines: list[Line]) -> list[list[Line]]:
        limit = client.max_requests
        if self.max_requests is not None:
            limit = min(limit, self.max_requests)
        chunks: list[list[Line]] = []
        current: list[Line] = []
        size = 0
        for line in lines:
            weight = client.size(line)
            if current and (len(current) >= limit or size + weight > client.max_bytes):
                chunks.append(current)
                current, size = [], 0
            current.append(line)
            size += weight
        if current:
            chunks.append(current)
        return chunks

    async def _submit(self, client: BatchClient, lines: list[Line]) -> Tracked:
        state = await client.submit(lines)
        keys = [line.custom_id for line in lines]
        backend = client.backend
        self.book.add_job(
            {
                "id": state.id,
                "api": client.api,
                "provider": backend.provider,
                "origin": client.origin,
                "model": backend.model,
                "input_file": state.input_file,
                "status": state.status,
                "requests": len(lines),
                "created": time.time(),
            },
            keys,
        )
        self.submitted.append(state.id)
        logger.info("submitted job %s (%d requests) to %s", state.id, len(lines), client.name)
        # The lines are not kept while the job runs (tens of megabytes for a large job): a
        # job refused for the tokens queued makes them again from its prompts.
        tracked = Tracked(client, state.id, keys, state)
        self._tracked.append(tracked)
        return tracked

    async def prepare(self, prompts: list[Prompt], request: Mapping[str, Any]) -> dict[str, Prompt]:
        """Find the live jobs that hold these prompts, and submit the others; the prompts by
        key. ``BatchAPIUnavailable`` (nothing submitted) for a backend without a Batch API."""
        from ...providers.batches import client_for

        by_key = {p.key: p for p in prompts}
        groups: dict[tuple[str, str, str], list[Prompt]] = {}
        for prompt in prompts:
            backend = prompt.backend
            origin = backend.endpoint.url if backend.endpoint is not None else ""
            groups.setdefault((backend.provider, origin, backend.model), []).append(prompt)
        # Every backend is checked before anything is submitted.
        clients = {
            group: client_for(members[0].backend, dict(request))
            for group, members in groups.items()
        }
        for group, members in groups.items():
            client = clients[group]
            known: dict[str, str] = {}
            for job in self.book.jobs(live=True, origin=client.origin):
                if job["model"] != client.backend.model:
                    continue
                for key in self.book.job_keys(job["id"]):
                    known[key] = job["id"]
            attached: dict[str, list[str]] = {}
            fresh: list[Line] = []
            for prompt in members:
                job_id = known.get(prompt.key)
                if job_id is None:
                    fresh.append(client.line(prompt))
                else:
                    client.remember(prompt)
                    attached.setdefault(job_id, []).append(prompt.key)
            for job_id, keys in attached.items():
                self.resumed.append(job_id)
                self._tracked.append(Tracked(client, job_id, keys))
                logger.info("resuming job %s (%d of its rows asked)", job_id, len(keys))
            if fresh:
                await client.probe()
                for chunk in self._chunks(client, fresh):
                    await self._submit(client, chunk)
        return by_key

    # -- waiting ----------------------------------------------------------------------------

    async def send(self, pending: Pending, request: Mapping[str, Any]) -> AsyncIterator[Result]:
        prompts = pending.take(len(pending))
        by_key = await self.prepare(prompts, request)
        if not self.wait:
            return
        delay = self.poll
        first = True
        while any(not t.over for t in self._tracked) or self._deferred:
            if not first:
                await asyncio.sleep(delay)
                delay = min(self.poll_max, delay * 1.5 if delay else 0.0)
            first = False
            for tracked in list(self._tracked):
                if tracked.over:
                    continue
                state = await self._poll(tracked)
                if state is None or not state.done:
                    continue
                async for item in self._finish(tracked, state, by_key):
                    yield item
            if self._deferred and all(t.over for t in self._tracked):
                await self._retry_deferred()
            if self.on_status is not None:
                self.on_status([t.state for t in self._tracked if t.state is not None])
        # Repairs of answers that did not fit their schema: online, one at a time.
        while (prompt := await pending.next()) is not None:
            try:
                result: Any = await fetch(prompt, request)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one prompt's failure must not stop the others
                result = exc
            yield prompt, result

    async def _poll(self, tracked: Tracked) -> JobState | None:
        try:
            state = await tracked.client.poll(tracked.id)
        except (TransportError, HTTPStatusError) as exc:
            if isinstance(exc, HTTPStatusError) and exc.status < 500 and exc.status != 429:
                raise
            logger.warning("polling job %s failed (%s); polling again later", tracked.id, exc)
            return None
        tracked.state = state
        self.book.update_job(
            tracked.id, status=state.status, completed=state.completed, failed=state.failed
        )
        return state

    async def _retry_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for client, lines in deferred:
            await self._submit(client, lines)

    async def _finish(
        self, tracked: Tracked, state: JobState, by_key: dict[str, Prompt]
    ) -> AsyncIterator[Result]:
        tracked.over = True
        self.book.update_job(tracked.id, finished=time.time())
        if state.refused:
            async for item in self._refused(tracked, state, by_key):
                yield item
            self.book.update_job(tracked.id, collected=1, error="; ".join(state.errors)[:2000])
            return
        mine = set(tracked.keys)
        seen: set[str] = set()
        try:
            async for line in tracked.client.results(state):
                key = line.custom_id
                prompt = by_key.get(key)
                if prompt is None or key not in mine:
                    self._keep_foreign(tracked, line)
                    continue
                if key in seen:
                    continue
                seen.add(key)
                yield prompt, self._result(prompt, line)
                if len(seen) % KEEP_UP_EVERY == 0:
                    await self._keep_up()
        except JobError as exc:  # the results are gone: the rows fail, a rerun submits anew
            _from_job(exc)
            for key in mine - seen:
                yield by_key[key], exc
            self.book.update_job(tracked.id, collected=1, error=str(exc))
            return
        for key in tracked.keys:
            if key not in seen:
                yield (
                    by_key[key],
                    _from_job(
                        JobLineError(
                            f"{tracked.client.name}: no result for this row (job {tracked.id} "
                            f"{state.status})"
                        )
                    ),
                )
        self.book.update_job(tracked.id, collected=1)

    async def _refused(
        self, tracked: Tracked, state: JobState, by_key: dict[str, Prompt]
    ) -> AsyncIterator[Result]:
        client = tracked.client
        if state.code == "token_limit_exceeded":
            lines = [client.line(by_key[k]) for k in tracked.keys]
            others = any(not t.over for t in self._tracked)
            if len(lines) > 1:
                half = len(lines) // 2
                logger.info("job %s is over the tokens queued: split in two", tracked.id)
                for part in (lines[:half], lines[half:]):
                    await self._submit(client, part)
                return
            if others:
                logger.info("job %s waits for an earlier job to finish", tracked.id)
                self._deferred.append((client, lines))
                return
        reason = "; ".join(state.errors) or f"the job {state.status}"
        error = _from_job(JobError(f"{client.name} refused job {tracked.id}: {reason}"))
        for key in tracked.keys:
            yield by_key[key], error

    def _result(self, prompt: Prompt, line: Any) -> Any:
        if line.error is not None:
            return _from_job(line.error)
        if not (line.text or "").strip():
            from ...errors import EmptyAnswerError

            return _from_job(EmptyAnswerError(f"{prompt.backend.provider} sent an empty answer"))
        backend = prompt.backend
        assert backend.endpoint is not None  # a backend with a Batch API
        where = (backend.provider, backend.model, backend.endpoint.url)
        pricing = self._prices.get(where)
        if pricing is None:
            pricing = self._prices[where] = _pricing(backend)
        completion = _completion()(
            line.text,
            backend.provider,
            backend.model,
            prompt.parameters,
            line.finish,
            line.usage,
            0.0,
            batch=True,
            cost=pricing.cost(line.usage).at_batch_price(),
        )
        return completion

    async def _keep_up(self) -> None:
        """Past ``BACKLOG`` writes queued, wait until the store's writer has done half; while
        it writes, let it have the GIL a moment.

        A finished job's results are read without waiting for the network: this loop holds
        the GIL all along, and the writer, which gives the GIL up for each statement SQLite
        runs, would get it back only after the interpreter's switch interval (5 ms) each
        time. A short sleep here hands it over at once: ``time.sleep``, which lets go of the
        GIL for that long, where the event loop's shortest wait is a millisecond."""
        store = self.store
        if store is None:
            return
        if getattr(store, "backlog", 0) <= BACKLOG:
            if getattr(store, "writing", False):
                time.sleep(YIELD)
            return
        while store.backlog > BACKLOG // 2 and store.usable:
            await asyncio.sleep(0.005)

    def _keep_foreign(self, tracked: Tracked, line: Any) -> None:
        """A line of a resumed job that this run did not ask for: its answer goes to the
        cache all the same (checked when a later run finds it)."""
        store = self.store
        if store is None or line.error is not None or not line.text:
            return
        backend = tracked.client.backend
        meta = {"finish_reason": line.finish, "usage": line.usage, "batch": True}
        try:
            store.put(line.custom_id, backend.provider, backend.model, line.text, meta)
        except PizzagptError:  # pragma: no cover - the store never raises its own failures
            pass
