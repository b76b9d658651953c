"""Provider Batch APIs: submit many requests as one job, poll it, read its results.

Two wires, one interface (``BatchClient``):

- ``OpenAIBatches``, for OpenAI-compatible endpoints (OpenAI, Groq, any endpoint registered with
  ``batch_api=True``): ``POST {base}/files`` (purpose ``batch``, JSONL of ``{custom_id, method,
  url, body}``, one model a file), ``POST {base}/batches`` (``endpoint`` ``/v1/chat/completions``,
  ``completion_window`` ``24h``), ``GET {base}/batches/{id}``, ``GET {base}/files/{id}/content``
  for the output and error files, ``POST {base}/batches/{id}/cancel``. Each line's ``url`` is
  ``/v1/chat/completions`` whatever the base URL (Groq's ends in ``/openai/v1``).
- ``AnthropicBatches``, for the Messages API: ``POST /v1/messages/batches`` with ``requests:
  [{custom_id, params}]``, ``GET /v1/messages/batches/{id}``, its ``results_url`` JSONL, cancel.

Each line's body is the body the online request sends, without streaming
(``OpenAICompatible.body`` and ``Anthropic.body`` make both). ``probe`` asks ``GET
.../batches?limit=1`` before anything is uploaded, so a server without the API (a 404) never
gets an orphan file. Results are read as a stream of lines, never whole, so memory does not grow
with a job's size. Keys travel in headers only, never in a job's record or an error.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import (
    BatchAPIUnavailable,
    HTTPStatusError,
    JobError,
    JobLineError,
    PizzagptError,
    ResponseError,
)
from ..transport import read_body, reading_body, send

if TYPE_CHECKING:
    from ..backends import Backend

__all__ = ["AnthropicBatches", "BatchClient", "JobState", "Line", "LineResult", "client_for"]

#: The line ``url`` of an OpenAI-compatible batch, whatever the base URL.
CHAT_PATH = "/v1/chat/completions"
#: Seconds a batch request (not a result download) may take.
TIMEOUT = 120.0


@dataclass
class Line:
    """One request of a job: its ``custom_id``, the body the online request sends, and the
    line as the job's file holds it (encoded once: its size decides the splits)."""

    custom_id: str
    body: dict[str, Any]
    data: bytes = b""


@dataclass
class LineResult:
    """One line's result: the answer's text, finish reason and usage, or the error."""

    custom_id: str
    text: str | None = None
    finish: str | None = None
    usage: dict[str, int] | None = None
    error: Exception | None = None


@dataclass
class JobState:
    """What the provider says of a job: its status, whether it is over, its counts, and where
    its results are."""

    id: str
    status: str
    done: bool = False
    total: int = 0
    completed: int = 0
    failed: int = 0
    #: Why the provider refused the whole job (validation errors), one line each.
    errors: list[str] = field(default_factory=list)
    #: The error code of the first refusal (``token_limit_exceeded``), if any.
    code: str | None = None
    output: str | None = None
    error_output: str | None = None
    input_file: str | None = None

    @property
    def refused(self) -> bool:
        """Whether the whole job was refused (it failed validation)."""
        return self.status == "failed"


class BatchClient:
    """The interface of a Batch API (see the module's docstring)."""

    api = ""
    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024

    def __init__(self, backend: Backend, request: dict[str, Any]) -> None:
        assert backend.endpoint is not None
        self.backend = backend
        self.endpoint = backend.endpoint
        self.name = backend.provider
        self.request = request
        cls = self.endpoint.provider
        self.target = cls.target(
            self.endpoint.url, self.endpoint.api_key_env, self.name, request.get("max_retries")
        )
        self.base_url: str = self.target.base_url

    @property
    def origin(self) -> str:
        return self.endpoint.url

    def line(self, prompt: Any) -> Line:
        raise NotImplementedError

    def size(self, line: Line) -> int:
        return len(line.data) + 1 if line.data else len(json.dumps(line.body)) + 160

    async def probe(self) -> None:
        raise NotImplementedError

    async def submit(self, lines: Sequence[Line]) -> JobState:
        raise NotImplementedError

    async def poll(self, job_id: str) -> JobState:
        raise NotImplementedError

    def results(self, state: JobState) -> AsyncIterator[LineResult]:
        raise NotImplementedError

    async def cancel(self, job_id: str) -> JobState:
        raise NotImplementedError

    # -- the wire ---------------------------------------------------------------------------

    async def _json(
        self,
        method: str,
        url: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        timeout = float(self.request.get("timeout") or TIMEOUT)
        response = await send(
            method,
            url,
            self.target.policy,
            body,
            headers or self.target.headers,
            self.request.get("proxy"),
            max(timeout, TIMEOUT),
            self.request.get("connect_timeout") or 10.0,
            False,
            data,
        )
        try:
            raw = await read_body(response, url, timeout, self.target.policy.secrets)
        finally:
            response.release()
        try:
            return json.loads(raw.decode("utf-8", "replace"))
        except ValueError:
            raise ResponseError(f"{self.name} sent a batch answer that is not JSON") from None

    async def _lines(self, url: str) -> AsyncIterator[dict[str, Any]]:
        """The JSON lines at ``url``, one at a time as they arrive."""
        headers = {k: v for k, v in self.target.headers.items() if k != "Content-Type"}
        headers["Accept"] = "application/jsonl, application/json, */*"
        response = await send(
            "GET",
            url,
            self.target.policy,
            None,
            headers,
            self.request.get("proxy"),
            float("inf"),
            self.request.get("connect_timeout") or 10.0,
            True,
        )
        try:
            rest = b""
            async with reading_body(url, TIMEOUT, self.target.policy.secrets):
                async for chunk in response.content.iter_chunked(1 << 16):
                    rest += chunk
                    *lines, rest = rest.split(b"\n")
                    for raw in lines:
                        if raw.strip():
                            yield json.loads(raw)
            if rest.strip():
                yield json.loads(rest)
        finally:
            response.release()

    async def _probe(self, url: str) -> None:
        try:
            await self._json("GET", url)
        except HTTPStatusError as exc:
            if exc.status in (404, 405, 501):
                raise unavailable(
                    self.backend,
                    f"GET {url.removeprefix(self.base_url)} answered {exc.status}",
                ) from None
            raise


def unavailable(backend: Backend, why: str) -> BatchAPIUnavailable:
    """The one-line error of a backend without a Batch API."""
    if backend.is_pizzagpt:
        name = "Pizzagpt"
    elif backend.endpoint is None:
        name = f"the provider class {backend.provider}"
    else:
        name = f"the endpoint {backend.provider!r}"
    return BatchAPIUnavailable(
        f"{name} has no Batch API ({why}); nothing was submitted: ask without the Batch API, "
        "or use an endpoint that has one (openai, groq, anthropic)"
    )


def client_for(backend: Backend, request: dict[str, Any]) -> BatchClient:
    """The Batch API client of ``backend``; ``BatchAPIUnavailable`` when it has none."""
    endpoint = backend.endpoint
    if endpoint is None:
        why = "its answers come one at a time" if backend.is_pizzagpt else "it is a class"
        raise unavailable(backend, why)
    if not endpoint.batch_api:
        raise unavailable(
            backend,
            "not declared: register_endpoint(..., batch_api=True) says it has one",
        )
    if endpoint.api == "anthropic":
        return AnthropicBatches(backend, request)
    return OpenAIBatches(backend, request)


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())[:500]


def _error_of(body: Any, fallback: str) -> str:
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            inner = error.get("error")
            if isinstance(inner, dict):
                error = inner
            message = error.get("message") or error.get("type") or error.get("code")
            if message:
                return _one_line(message)
    return fallback


# -- OpenAI-compatible ------------------------------------------------------------------------


class OpenAIBatches(BatchClient):
    """The Batch API of an OpenAI-compatible endpoint."""

    api = "openai"
    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024

    def line(self, prompt: Any) -> Line:
        from .openai import OpenAICompatible, takes_response_format

        schema = prompt.schema
        response_format = None
        messages = prompt.sent_messages()
        if schema is not None:
            if takes_response_format(self.endpoint.url):
                response_format = schema.response_format()
            else:
                messages = prompt.sent_messages(schema_in_prompt=True)
        body = OpenAICompatible.body(
            self.backend.model,
            messages,
            False,
            prompt.temperature,
            prompt.max_tokens,
            response_format,
        )
        record = {"custom_id": prompt.key, "method": "POST", "url": CHAT_PATH, "body": body}
        data = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
        return Line(prompt.key, body, data)

    async def probe(self) -> None:
        await self._probe(f"{self.base_url}/batches?limit=1")

    async def submit(self, lines: Sequence[Line]) -> JobState:
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="file"; filename="batch-{int(time.time())}.jsonl"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        parts = [head, b"\n".join(line.data for line in lines), b"\n"]
        parts.append(f"\r\n--{boundary}--\r\n".encode())
        headers = {k: v for k, v in self.target.headers.items() if k != "Content-Type"}
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        uploaded = await self._json(
            "POST", f"{self.base_url}/files", data=b"".join(parts), headers=headers
        )
        file_id = uploaded.get("id") if isinstance(uploaded, dict) else None
        if not isinstance(file_id, str):
            raise ResponseError(f"{self.name} did not say which file it kept")
        created = await self._json(
            "POST",
            f"{self.base_url}/batches",
            {"input_file_id": file_id, "endpoint": CHAT_PATH, "completion_window": "24h"},
        )
        state = self._state(created)
        state.input_file = file_id
        return state

    def _state(self, data: Any) -> JobState:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise ResponseError(f"{self.name} sent a batch without an id")
        status = str(data.get("status") or "unknown")
        counts = data.get("request_counts") or {}
        errors: list[str] = []
        code = None
        for error in (data.get("errors") or {}).get("data") or []:
            if not isinstance(error, dict):
                continue
            code = code or error.get("code")
            where = f" (line {error['line']})" if error.get("line") is not None else ""
            errors.append(_one_line(f"{error.get('message') or error.get('code')}{where}"))
        return JobState(
            data["id"],
            status,
            done=status in ("completed", "failed", "expired", "cancelled"),
            total=int(counts.get("total") or 0),
            completed=int(counts.get("completed") or 0),
            failed=int(counts.get("failed") or 0),
            errors=errors,
            code=code,
            output=data.get("output_file_id"),
            error_output=data.get("error_file_id"),
            input_file=data.get("input_file_id"),
        )

    async def poll(self, job_id: str) -> JobState:
        return self._state(await self._json("GET", f"{self.base_url}/batches/{job_id}"))

    async def cancel(self, job_id: str) -> JobState:
        return self._state(await self._json("POST", f"{self.base_url}/batches/{job_id}/cancel"))

    async def results(self, state: JobState) -> AsyncIterator[LineResult]:
        from .openai import parse_completion

        for file_id in (state.output, state.error_output):
            if not file_id:
                continue
            try:
                async for record in self._lines(f"{self.base_url}/files/{file_id}/content"):
                    yield _openai_result(record, parse_completion, self.name)
            except HTTPStatusError as exc:
                if exc.status == 404:
                    raise JobError(
                        f"the results of job {state.id} are gone from {self.name} (its files "
                        "expire after a while); run again to submit its unanswered rows anew"
                    ) from None
                raise


def _openai_result(record: Any, parse: Any, name: str) -> LineResult:
    custom_id = str(record.get("custom_id")) if isinstance(record, dict) else ""
    error = record.get("error") if isinstance(record, dict) else None
    response = record.get("response") if isinstance(record, dict) else None
    if error:
        code = error.get("code") if isinstance(error, dict) else None
        message = _error_of({"error": error}, "the line failed")
        return LineResult(custom_id, error=JobLineError(f"{name}: {message} ({code or 'error'})"))
    if not isinstance(response, dict):
        return LineResult(custom_id, error=JobLineError(f"{name}: the line has no response"))
    status = int(response.get("status_code") or 0)
    body = response.get("body")
    if status >= 400:
        message = _error_of(body, f"HTTP {status}")
        return LineResult(custom_id, error=JobLineError(f"{name}: {message} (HTTP {status})"))
    try:
        text, finish, usage = parse(body)
    except PizzagptError as exc:
        return LineResult(custom_id, error=exc)
    return LineResult(
        custom_id, text, finish or "stop", usage.as_dict() if usage is not None else None
    )


_UNANSWERED = {
    "expired": "the request expired before it was processed",
    "canceled": "the batch was cancelled before this request was processed",
}


# -- Anthropic --------------------------------------------------------------------------------


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
        from .anthropic import Anthropic, forced_tool

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
        from .anthropic import parse_message

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
