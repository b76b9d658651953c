"""The Batch API of OpenAI-compatible endpoints: files, batches, output and error files."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ...errors import HTTPStatusError, JobError, JobLineError, PizzagptError, ResponseError
from ..openai import OpenAICompatible, parse_completion_counts, takes_response_format
from . import CHAT_PATH, BatchClient, JobState, Line, LineResult, _error_of, _one_line

__all__ = ["OpenAIBatches"]

#: A line of the input file: compact JSON, with an encoder made once for the job's lines.
_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class OpenAIBatches(BatchClient):
    """The Batch API of an OpenAI-compatible endpoint."""

    api = "openai"
    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024

    def line(self, prompt: Any) -> Line:
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
            prompt.options,
        )
        record = {"custom_id": prompt.key, "method": "POST", "url": CHAT_PATH, "body": body}
        return Line(prompt.key, body, _compact(record).encode())

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
        for file_id in (state.output, state.error_output):
            if not file_id:
                continue
            try:
                async for record in self._lines(f"{self.base_url}/files/{file_id}/content"):
                    yield _openai_result(record, parse_completion_counts, self.name)
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
    finish = finish or "stop"
    if isinstance(finish, str):  # interned: the answers a job keeps share one string
        finish = sys.intern(finish)
    return LineResult(custom_id, text, finish, usage)
