"""The emulator's Batch API routes: OpenAI's ``/v1/files`` and ``/v1/batches``, and Anthropic's
``/v1/messages/batches`` (in ``emulator_message_batches``), in the shapes the official SDKs read.

OpenAI-compatible: ``POST /v1/files`` (multipart, ``purpose`` and ``file``), ``GET
/v1/files/{id}`` and ``/v1/files/{id}/content``; ``POST /v1/batches`` (``input_file_id``,
``endpoint``, ``completion_window``), ``GET /v1/batches`` (``limit``, ``after``), ``GET
/v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``. A job is ``validating`` when it is created,
as OpenAI's are, and validated when it is next looked at (every line a JSON object with a unique
``custom_id``, ``method`` POST, the batch's ``url``, a ``body`` with one ``model`` for the whole
file and no ``stream``): one that fails is ``failed`` with its ``errors`` (the line named).
Messages: ``POST /v1/messages/batches`` (``requests``: ``custom_id`` of at most 64 characters of
``[A-Za-z0-9_-]``, unique; ``params``), ``GET /v1/messages/batches`` and ``/{id}``,
``/{id}/results`` (JSONL), ``POST /{id}/cancel``.

A job is ``in_progress`` for ``Emulator.batch_delay`` seconds after it was created, then ended:
each line answered as its online route would answer it (the same deterministic text, schemas,
``max_tokens``). Markers in a line's messages:

``[[batch:fail]]``     the line fails (OpenAI: a 400 in the error file; Messages: ``errored``)
``[[batch:expire]]``   the job expires: the other lines are answered, this one ``expired``
``[[batch:invalid]]``  the job fails validation (OpenAI; Messages: the line is ``errored``)

``Emulator.batch_token_limit`` (tokens: words of the messages) refuses an OpenAI job whose
tokens, with those of the model's jobs still in progress, go over it (``token_limit_exceeded``).
``Emulator.batches = False`` makes the batch routes answer 404 (a server with files but no
batches). ``batch_work_seconds`` is the time the emulator spent validating and answering lines.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .emulator_message_batches import MessageBatchRoutes, _everything, _new_id

__all__ = ["BatchRoutes"]


def _words(body: dict[str, Any]) -> int:
    from .emulator import _text_of

    messages = body.get("messages") if isinstance(body, dict) else None
    return sum(
        len(_text_of(m.get("content")).split()) for m in messages or [] if isinstance(m, dict)
    )


def _chat_answer(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """What ``POST /v1/chat/completions`` answers to ``body`` without streaming."""
    from .emulator import OPENAI_MODELS, _text_of, conforming, make_answer, schema_in

    model = body.get("model")
    if model not in OPENAI_MODELS:
        error = {"message": f"The model `{model}` does not exist", "code": "model_not_found"}
        return 404, {"error": {**error, "type": "invalid_request_error", "param": None}}
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    users = [m for m in messages if m.get("role") == "user"]
    question = _text_of(users[-1].get("content")) if users else ""
    everything = "\n".join(_text_of(m.get("content")) for m in messages)
    asked = body.get("response_format")
    wanted = asked.get("json_schema") if isinstance(asked, dict) else None
    if isinstance(wanted, dict) and isinstance(wanted.get("schema"), dict):
        content = json.dumps(conforming(wanted["schema"], question), ensure_ascii=False)
    elif schema_in(everything)[0] is not None:
        schema, rest = schema_in(everything)
        content = json.dumps(conforming(schema, rest))
    else:
        content = make_answer(question, model)
        if len(messages) > 1:
            content += f"\n\nThe conversation so far has {len(messages)} messages."
    finish = "stop"
    limit = body.get("max_tokens")
    words = content.split(" ")
    if isinstance(limit, int) and len(words) > limit:
        content = " ".join(words[:limit])
        finish = "length"
    usage = {"prompt_tokens": len(everything.split()), "completion_tokens": len(content.split())}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return 200, {
        "id": "chatcmpl-emulated",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": usage,
    }


def _stamp(seconds: float | None) -> Any:
    return None if seconds is None else int(seconds)


class BatchRoutes(MessageBatchRoutes):
    """The Batch API routes, mixed into ``Emulator`` (which brings the key checks)."""

    if TYPE_CHECKING:  # what ``Emulator`` brings

        def _refuse_key(self, request: web.Request) -> web.Response | None: ...
        def _refuse_anthropic_key(self, request: web.Request) -> web.Response | None: ...

    def _init_batches(self, delay: float = 0.0) -> None:
        #: Seconds a job stays in progress.
        self.batch_delay = delay
        #: Whether the batch routes exist (else 404, as on a server without them).
        self.batches = True
        #: Tokens of in-progress jobs per model an OpenAI job may bring (None: no limit).
        self.batch_token_limit: int | None = None
        self.files: dict[str, dict[str, Any]] = {}
        self.openai_batches: dict[str, dict[str, Any]] = {}
        self.message_batches: dict[str, dict[str, Any]] = {}
        self.batch_work_seconds = 0.0

    def add_batch_routes(self, app: web.Application) -> None:
        router = app.router
        router.add_post("/v1/files", self.handle_file_upload)
        router.add_get("/v1/files/{id}", self.handle_file)
        router.add_get("/v1/files/{id}/content", self.handle_file_content)
        router.add_post("/v1/batches", self.handle_batch_create)
        router.add_get("/v1/batches", self.handle_batch_list)
        router.add_get("/v1/batches/{id}", self.handle_batch_get)
        router.add_post("/v1/batches/{id}/cancel", self.handle_batch_cancel)
        self.add_message_batch_routes(app)

    # -- files --------------------------------------------------------------------------------

    def _file_object(self, record: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": record["id"],
            "object": "file",
            "bytes": len(record["content"]),
            "created_at": _stamp(record["created"]),
            "filename": record["filename"],
            "purpose": record["purpose"],
            "status": "processed",
        }

    def _keep_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": _new_id("file-"),
            "content": content,
            "filename": filename,
            "purpose": purpose,
            "created": time.time(),
        }
        self.files[record["id"]] = record
        return record

    async def handle_file_upload(self, request: web.Request) -> web.Response:
        from .emulator import _openai_error

        refused = self._refuse_key(request)
        if refused is not None:
            return refused
        try:
            form = await request.post()
        except ValueError:
            return _openai_error(400, "expected multipart/form-data", "invalid_request_error")
        upload = form.get("file")
        purpose = str(form.get("purpose") or "")
        if upload is None or not hasattr(upload, "file"):
            return _openai_error(400, "'file' is a required property", "invalid_request_error")
        if purpose != "batch":
            return _openai_error(400, f"purpose {purpose!r} is not 'batch'", "invalid_purpose")
        name = getattr(upload, "filename", None) or "upload.jsonl"
        record = self._keep_file(upload.file.read(), name, purpose)
        return web.json_response(self._file_object(record))

    async def handle_file(self, request: web.Request) -> web.Response:
        from .emulator import _openai_error

        refused = self._refuse_key(request)
        if refused is not None:
            return refused
        record = self.files.get(request.match_info["id"])
        if record is None:
            return _openai_error(404, "No such File object", "not_found")
        return web.json_response(self._file_object(record))

    async def handle_file_content(self, request: web.Request) -> web.StreamResponse:
        from .emulator import _openai_error

        refused = self._refuse_key(request)
        if refused is not None:
            return refused
        record = self.files.get(request.match_info["id"])
        if record is None:
            return _openai_error(404, "No such File object", "not_found")
        return web.Response(body=record["content"], content_type="application/octet-stream")

    # -- OpenAI batches -----------------------------------------------------------------------

    def _no_batches(self, request: web.Request, anthropic: bool = False) -> web.Response | None:
        from .emulator import _openai_error
        from .emulator_messages import anthropic_error

        refused = self._refuse_anthropic_key(request) if anthropic else self._refuse_key(request)
        if refused is not None:
            return refused
        if self.batches:
            return None
        if anthropic:
            return anthropic_error(404, "Not found")
        return _openai_error(404, "Invalid URL (GET /v1/batches)", "not_found")

    def _validate(
        self, content: bytes, endpoint: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The lines of an input file, and the validation errors (OpenAI's shape)."""
        lines: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        models: set[Any] = set()
        for number, raw in enumerate(content.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                errors.append({"code": "invalid_json_line", "message": "not JSON", "line": number})
                continue
            if not isinstance(line, dict):
                errors.append(
                    {"code": "invalid_json_line", "message": "not an object", "line": number}
                )
                continue
            custom_id = line.get("custom_id")
            body = line.get("body")
            problem = None
            if not isinstance(custom_id, str) or not custom_id:
                problem = ("missing_required_parameter", "custom_id is required")
            elif custom_id in seen:
                problem = ("duplicate_custom_id", f"custom_id {custom_id!r} is not unique")
            elif line.get("method") != "POST":
                problem = ("invalid_method", "method must be POST")
            elif line.get("url") != endpoint:
                problem = ("mismatched_endpoint", f"url must be {endpoint}")
            elif not isinstance(body, dict) or not body.get("model"):
                problem = ("missing_required_parameter", "body.model is required")
            elif "stream" in body or "stream_options" in body:
                problem = ("invalid_request", "stream is not supported in batches")
            elif "[[batch:invalid]]" in _everything(body):
                problem = ("invalid_request", "the line was marked invalid")
            if problem is not None:
                errors.append({"code": problem[0], "message": problem[1], "line": number})
                continue
            assert isinstance(custom_id, str) and isinstance(body, dict)
            seen.add(custom_id)
            models.add(body["model"])
            lines.append(line)
        if len(models) > 1:
            errors.append(
                {"code": "mixed_models", "message": "a batch file takes one model", "line": None}
            )
        return lines, errors

    def _batch_object(self, job: dict[str, Any], advance: bool = True) -> dict[str, Any]:
        if advance:
            self._advance(job)
        counts = job["counts"]
        return {
            "id": job["id"],
            "object": "batch",
            "endpoint": job["endpoint"],
            "errors": {"object": "list", "data": job["errors"]} if job["errors"] else None,
            "input_file_id": job["input_file_id"],
            "completion_window": "24h",
            "status": job["status"],
            "output_file_id": job.get("output_file_id"),
            "error_file_id": job.get("error_file_id"),
            "created_at": _stamp(job["created"]),
            "in_progress_at": _stamp(job["created"]),
            "expires_at": _stamp(job["created"] + 86400),
            "completed_at": _stamp(job.get("completed")),
            "failed_at": _stamp(job.get("failed_at")),
            "expired_at": _stamp(job.get("expired_at")),
            "cancelled_at": _stamp(job.get("cancelled_at")),
            "request_counts": {
                "total": counts[0],
                "completed": counts[1],
                "failed": counts[2],
            },
            "metadata": None,
        }

    def _queued_tokens(self, model: Any) -> int:
        return sum(
            j["tokens"]
            for j in self.openai_batches.values()
            if j["model"] == model and j["status"] == "in_progress"
        )

    async def handle_batch_create(self, request: web.Request) -> web.Response:
        from .emulator import _openai_error

        refused = self._no_batches(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return _openai_error(400, "The body is not JSON", "invalid_json")
        file_id = body.get("input_file_id") if isinstance(body, dict) else None
        record = self.files.get(file_id) if isinstance(file_id, str) else None
        if record is None:
            return _openai_error(400, f"No such file: {file_id}", "invalid_request_error")
        endpoint = body.get("endpoint")
        if endpoint not in ("/v1/chat/completions", "/v1/embeddings", "/v1/completions"):
            return _openai_error(400, f"endpoint {endpoint!r} is not supported", "invalid_value")
        if body.get("completion_window") != "24h":
            return _openai_error(400, "completion_window must be '24h'", "invalid_value")
        job = {
            "id": _new_id("batch_"),
            "endpoint": endpoint,
            "input_file_id": file_id,
            "lines": [],
            "model": None,
            "tokens": 0,
            "errors": [],
            "status": "validating",
            "created": time.time(),
            "counts": [0, 0, 0],
        }
        self.openai_batches[job["id"]] = job
        # The answer says "validating", as OpenAI's does: the file is read afterwards, so the
        # time the client waits for it is not the emulator's time reading every line.
        answer = self._batch_object(job, advance=False)
        return web.json_response(answer)

    def _check(self, job: dict[str, Any]) -> None:
        """Validate a new job's file: it fails with its errors, or is in progress."""
        started = time.perf_counter()
        lines, errors = self._validate(self.files[job["input_file_id"]]["content"], job["endpoint"])
        model = lines[0]["body"]["model"] if lines else None
        tokens = sum(_words(line["body"]) for line in lines)
        if not errors and self.batch_token_limit is not None:
            if tokens + self._queued_tokens(model) > self.batch_token_limit:
                errors.append(
                    {
                        "code": "token_limit_exceeded",
                        "message": f"Enqueued token limit reached for {model} in organization "
                        f"org-emulated. Limit: {self.batch_token_limit}",
                        "line": None,
                    }
                )
        job.update(lines=lines, model=model, tokens=tokens, errors=errors)
        if errors:
            job["status"], job["failed_at"] = "failed", time.time()
        else:
            job["status"], job["counts"] = "in_progress", [len(lines), 0, 0]
        self.batch_work_seconds += time.perf_counter() - started

    def _advance(self, job: dict[str, Any]) -> None:
        """Validate the job if it is new; end it when its time has come: answer its lines."""
        if job["status"] == "validating":
            self._check(job)
        if job["status"] not in ("in_progress", "cancelling"):
            return
        cancelling = job["status"] == "cancelling"
        if not cancelling and time.time() - job["created"] < self.batch_delay:
            return
        started = time.perf_counter()
        expire = any("[[batch:expire]]" in _everything(line["body"]) for line in job["lines"])
        output: list[bytes] = []
        failures: list[bytes] = []
        done = failed = 0
        for number, line in enumerate(job["lines"]):
            body = line["body"]
            text = _everything(body)
            custom_id = line["custom_id"]
            stopped = None
            if cancelling and number >= len(job["lines"]) // 2:
                stopped = (
                    "batch_cancelled",
                    "This request could not be executed before the batch was cancelled.",
                )
            elif expire and "[[batch:expire]]" in text:
                stopped = (
                    "batch_expired",
                    "This request could not be executed before the completion window expired.",
                )
            if stopped is not None:
                record = {
                    "id": f"batch_req_{number}",
                    "custom_id": custom_id,
                    "response": None,
                    "error": {"code": stopped[0], "message": stopped[1]},
                }
                failures.append(json.dumps(record).encode())
                failed += 1
                continue
            if "[[batch:fail]]" in text:
                status, answer = (
                    400,
                    {
                        "error": {
                            "message": "emulated failure of this line",
                            "type": "invalid_request_error",
                            "param": None,
                            "code": "emulated",
                        }
                    },
                )
            else:
                status, answer = _chat_answer(body)
            record = {
                "id": f"batch_req_{number}",
                "custom_id": custom_id,
                "response": {"status_code": status, "request_id": f"req_{number}", "body": answer},
                "error": None,
            }
            if status == 200:
                output.append(json.dumps(record, ensure_ascii=False).encode())
                done += 1
            else:
                failures.append(json.dumps(record, ensure_ascii=False).encode())
                failed += 1
        now = time.time()
        if output:
            job["output_file_id"] = self._keep_file(
                b"\n".join(output) + b"\n", "batch_output.jsonl", "batch_output"
            )["id"]
        if failures:
            job["error_file_id"] = self._keep_file(
                b"\n".join(failures) + b"\n", "batch_errors.jsonl", "batch_output"
            )["id"]
        job["counts"] = [len(job["lines"]), done, failed]
        if cancelling:
            job["status"], job["cancelled_at"] = "cancelled", now
        elif expire:
            job["status"], job["expired_at"] = "expired", now
        else:
            job["status"], job["completed"] = "completed", now
        self.batch_work_seconds += time.perf_counter() - started

    async def handle_batch_list(self, request: web.Request) -> web.Response:
        refused = self._no_batches(request)
        if refused is not None:
            return refused
        limit = int(request.query.get("limit", "20"))
        jobs = sorted(self.openai_batches.values(), key=lambda j: j["created"], reverse=True)
        page = [self._batch_object(j) for j in jobs[:limit]]
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(jobs) > limit,
            }
        )

    async def handle_batch_get(self, request: web.Request) -> web.Response:
        from .emulator import _openai_error

        refused = self._no_batches(request)
        if refused is not None:
            return refused
        job = self.openai_batches.get(request.match_info["id"])
        if job is None:
            return _openai_error(404, "No such batch", "not_found")
        return web.json_response(self._batch_object(job))

    async def handle_batch_cancel(self, request: web.Request) -> web.Response:
        from .emulator import _openai_error

        refused = self._no_batches(request)
        if refused is not None:
            return refused
        job = self.openai_batches.get(request.match_info["id"])
        if job is None:
            return _openai_error(404, "No such batch", "not_found")
        if job["status"] == "validating":
            self._check(job)
        if job["status"] == "in_progress":
            job["status"] = "cancelling"
            job["cancel_at"] = time.time()
        return web.json_response(self._batch_object(job))
