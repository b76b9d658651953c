"""The Message Batches API (Claude): one request carries every line, results as JSONL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from ...errors import HTTPStatusError, JobError, JobLineError, PizzagptError, ResponseError
from . import BatchClient, JobState, Line, LineResult, _error_of

if TYPE_CHECKING:
    from ...backends import Backend

__all__ = ["AnthropicBatches"]


_UNANSWERED = {
    "expired": "the request expired before it was processed",
    "canceled": "the batch was cancelled before this request was processed",
}


class AnthropicBatches(BatchClient):
    """The Message Batches API."""

    api = "anthropic"
    max_requests = 100_000
    max_bytes = 256 * 1024 * 1024

    def __init__(self, backend: Backend, request: dict[str, Any]) -> None:
        super().__init__(backend, request)
        self.batches_url = f"{self.base_url}/v1/messages/batches"
        self._forced: dict[str, Any] = {}

    def line(self, prompt: Any) -> Line:
        from ..anthropic import Anthropic, forced_tool

        schema = prompt.schema
        forced = forced_tool(schema.response_format()) if schema is not None else None
        body = Anthropic.body(
            self.backend.model,
            prompt.sent_messages(),
            False,
            prompt.temperature,
            prompt.max_tokens,
            forced,
        )
        if forced is not None:
            self._forced[prompt.key] = forced
        return Line(prompt.key, body)

    def remember(self, prompt: Any) -> None:
        from ..anthropic import forced_tool

        schema = prompt.schema
        if schema is not None:
            forced = forced_tool(schema.response_format())
            if forced is not None:
                self._forced[prompt.key] = forced

    async def probe(self) -> None:
        await self._probe(f"{self.batches_url}?limit=1")

    async def submit(self, lines: Sequence[Line]) -> JobState:
        requests = [{"custom_id": line.custom_id, "params": line.body} for line in lines]
        return self._state(await self._json("POST", self.batches_url, {"requests": requests}))

    def _state(self, data: Any) -> JobState:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise ResponseError(f"{self.name} sent a batch without an id")
        status = str(data.get("processing_status") or "unknown")
        counts = data.get("request_counts") or {}
        succeeded = int(counts.get("succeeded") or 0)
        failed = sum(int(counts.get(k) or 0) for k in ("errored", "canceled", "expired"))
        total = succeeded + failed + int(counts.get("processing") or 0)
        state = JobState(
            data["id"],
            status,
            done=status == "ended",
            total=total,
            completed=succeeded,
            failed=failed,
            output=data.get("results_url"),
        )
        if state.done and counts.get("expired"):
            state.status = "expired"
        return state

    async def poll(self, job_id: str) -> JobState:
        return self._state(await self._json("GET", f"{self.batches_url}/{job_id}"))

    async def cancel(self, job_id: str) -> JobState:
        return self._state(await self._json("POST", f"{self.batches_url}/{job_id}/cancel"))

    async def results(self, state: JobState) -> AsyncIterator[LineResult]:
        from ..anthropic import parse_message

        if not state.output:
            return
        url = state.output
        if not url.startswith(f"{self.base_url}/"):
            # The key goes only to its own endpoint: results elsewhere are asked for here.
            url = f"{self.batches_url}/{state.id}/results"
        try:
            async for record in self._lines(url):
                custom_id = str(record.get("custom_id"))
                result = record.get("result") or {}
                kind = result.get("type")
                if kind == "succeeded":
                    try:
                        text, finish, usage = parse_message(
                            result.get("message"), self._forced.get(custom_id)
                        )
                    except PizzagptError as exc:
                        yield LineResult(custom_id, error=exc)
                        continue
                    yield LineResult(
                        custom_id,
                        text,
                        finish or "stop",
                        usage.as_dict() if usage is not None else None,
                    )
                else:
                    message = _error_of(
                        result.get("error"), _UNANSWERED.get(str(kind), "no result")
                    )
                    yield LineResult(
                        custom_id, error=JobLineError(f"{self.name}: {message} ({kind})")
                    )
        except HTTPStatusError as exc:
            if exc.status == 404:
                raise JobError(
                    f"the results of job {state.id} are gone from {self.name} (batches are "
                    "archived after a while); run again to submit its unanswered rows anew"
                ) from None
            raise
