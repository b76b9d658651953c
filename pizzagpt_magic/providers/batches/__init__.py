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

Each wire is a module of this package (``openai``, ``anthropic``). Each line's body is the body
the online request sends, without streaming
(``OpenAICompatible.body`` and ``Anthropic.body`` make both). ``probe`` asks ``GET
.../batches?limit=1`` before anything is uploaded, so a server without the API (a 404) never
gets an orphan file. Results are read as a stream of lines, never whole, so memory does not grow
with a job's size. Keys travel in headers only, never in a job's record or an error.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...errors import BatchAPIUnavailable, HTTPStatusError, ResponseError
from ...transport import read_body, reading_body, send

if TYPE_CHECKING:
    from ...backends import Backend

__all__ = ["BatchClient", "JobState", "Line", "LineResult", "client_for", "unavailable"]

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

    def remember(self, prompt: Any) -> None:
        """Note what reading ``prompt``'s result needs, for a job submitted earlier."""

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
                    end = rest.rfind(b"\n")
                    if end < 0:
                        continue
                    complete, rest = rest[:end], rest[end + 1 :]
                    for record in _decoded(complete):
                        yield record
            for record in _decoded(rest):
                yield record
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


def _decoded(data: bytes) -> list[Any]:
    """The JSON values of the lines in ``data``: decoded as one array (a JSON decode a line
    costs more than the line), or line by line when that is not the same thing."""
    lines = [line for line in data.split(b"\n") if line.strip()]
    if len(lines) > 1:
        try:
            values = json.loads(b"[" + b",".join(lines) + b"]")
        except ValueError:
            pass
        else:
            if len(values) == len(lines):
                return values
    return [json.loads(line) for line in lines]


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
        from .anthropic import AnthropicBatches

        return AnthropicBatches(backend, request)
    from .openai import OpenAIBatches

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
