"""The emulator's Message Batches routes (Anthropic): ``POST /v1/messages/batches`` (``requests``:
``custom_id`` of at most 64 characters of ``[A-Za-z0-9_-]``, unique; ``params``), ``GET
/v1/messages/batches`` and ``/{id}``, ``/{id}/results`` (JSONL), ``POST /{id}/cancel``.

A batch ends ``Emulator.batch_delay`` seconds after it was created: each request answered as
``POST /v1/messages`` would answer it. ``[[batch:fail]]`` and ``[[batch:invalid]]`` in a request
make it ``errored``, ``[[batch:expire]]`` ``expired``; a cancelled batch cancels the second half
of its requests. ``emulator_batches`` has the OpenAI-compatible routes.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

__all__ = ["MessageBatchRoutes"]

_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

_counter = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}{next(_counter):06d}{int(time.time() * 1000) % 100000:05d}"


def _everything(body: Any) -> str:
    from .emulator import _text_of

    if not isinstance(body, dict):
        return ""
    parts = [_text_of(body.get("system"))]
    parts += [_text_of(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict)]
    return "\n".join(parts)


def _message_answer(params: Any) -> tuple[bool, dict[str, Any]]:
    """What ``POST /v1/messages`` answers to ``params``: (succeeded, message or error)."""
    from .emulator import _text_of, make_answer
    from .emulator_messages import MESSAGES_MODELS, _forced_tool, example_of

    if not isinstance(params, dict):
        return False, {"type": "invalid_request_error", "message": "params: must be an object"}
    model = params.get("model")
    messages = params.get("messages")
    max_tokens = params.get("max_tokens")
    if not isinstance(messages, list) or not messages:
        return False, {"type": "invalid_request_error", "message": "messages: Field required"}
    if not isinstance(max_tokens, int) or max_tokens < 1:
        return False, {"type": "invalid_request_error", "message": "max_tokens: Field required"}
    if "stream" in params:
        return False, {"type": "invalid_request_error", "message": "stream: not allowed in batch"}
    if model not in MESSAGES_MODELS:
        return False, {"type": "not_found_error", "message": f"model: {model}"}
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    question = _text_of(users[-1].get("content")) if users else ""
    system = _text_of(params.get("system"))
    content = make_answer(question, model)
    if len(messages) > 1:
        content += f"\n\nThe conversation so far has {len(messages)} messages."
    if system:
        content += f"\n\nThe system message has {len(system)} characters."
    stop = "end_turn"
    words = content.split(" ")
    if len(words) > max_tokens:
        content = " ".join(words[:max_tokens])
        stop = "max_tokens"
    blocks: list[dict[str, Any]] = [{"type": "text", "text": content}]
    usage = {"input_tokens": len(_everything(params).split()), "output_tokens": len(words)}
    tool = _forced_tool(params)
    if tool is not None:
        value = example_of(tool.get("input_schema"), len(question.split()))
        blocks = [
            {"type": "tool_use", "id": "toolu_emulated", "name": tool["name"], "input": value}
        ]
        stop = "tool_use"
    return True, {
        "id": "msg_emulated",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


def _iso(seconds: float | None) -> Any:
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class MessageBatchRoutes:
    """The Message Batches routes, mixed into ``Emulator`` through ``BatchRoutes``."""

    batch_delay: float
    batches: bool
    message_batches: dict[str, dict[str, Any]]
    batch_work_seconds: float

    if TYPE_CHECKING:  # what ``Emulator`` and ``BatchRoutes`` bring

        def _no_batches(
            self, request: web.Request, anthropic: bool = False
        ) -> web.Response | None: ...

    def add_message_batch_routes(self, app: web.Application) -> None:
        router = app.router
        router.add_post("/v1/messages/batches", self.handle_mbatch_create)
        router.add_get("/v1/messages/batches", self.handle_mbatch_list)
        router.add_get("/v1/messages/batches/{id}", self.handle_mbatch_get)
        router.add_get("/v1/messages/batches/{id}/results", self.handle_mbatch_results)
        router.add_post("/v1/messages/batches/{id}/cancel", self.handle_mbatch_cancel)

    def _mbatch_object(self, request: web.Request, job: dict[str, Any]) -> dict[str, Any]:
        self._advance_messages(job)
        counts = job["counts"]
        ended = job["status"] == "ended"
        base = f"{request.scheme}://{request.host}"
        return {
            "id": job["id"],
            "type": "message_batch",
            "processing_status": job["status"],
            "request_counts": counts,
            "ended_at": _iso(job.get("ended")),
            "created_at": _iso(job["created"]),
            "expires_at": _iso(job["created"] + 86400),
            "archived_at": None,
            "cancel_initiated_at": _iso(job.get("cancel_at")),
            "results_url": f"{base}/v1/messages/batches/{job['id']}/results" if ended else None,
        }

    async def handle_mbatch_create(self, request: web.Request) -> web.Response:
        from .emulator_messages import anthropic_error

        refused = self._no_batches(request, anthropic=True)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return anthropic_error(400, "The body is not JSON")
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return anthropic_error(400, "requests: Field required")
        seen: set[str] = set()
        for number, item in enumerate(requests):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
                return anthropic_error(
                    400,
                    f"requests.{number}.custom_id: String should match pattern "
                    "'^[a-zA-Z0-9_-]{1,64}$'",
                )
            if custom_id in seen:
                return anthropic_error(400, f"Duplicate custom_id: {custom_id}")
            seen.add(custom_id)
        job: dict[str, Any] = {
            "id": _new_id("msgbatch_"),
            "requests": requests,
            "status": "in_progress",
            "created": time.time(),
            "counts": {
                "processing": len(requests),
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
        }
        self.message_batches[job["id"]] = job
        return web.json_response(self._mbatch_object(request, job))

    def _advance_messages(self, job: dict[str, Any]) -> None:
        if job["status"] not in ("in_progress", "canceling"):
            return
        canceling = job["status"] == "canceling"
        if not canceling and time.time() - job["created"] < self.batch_delay:
            return
        started = time.perf_counter()
        results: list[bytes] = []
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for number, item in enumerate(job["requests"]):
            params = item.get("params")
            text = _everything(params)
            if canceling and number >= len(job["requests"]) // 2:
                result: dict[str, Any] = {"type": "canceled"}
            elif "[[batch:expire]]" in text:
                result = {"type": "expired"}
            elif "[[batch:fail]]" in text or "[[batch:invalid]]" in text:
                result = {
                    "type": "errored",
                    "error": {
                        "type": "error",
                        "error": {
                            "type": "invalid_request_error",
                            "message": "emulated failure of this request",
                        },
                    },
                }
            else:
                ok, answer = _message_answer(params)
                if ok:
                    result = {"type": "succeeded", "message": answer}
                else:
                    result = {"type": "errored", "error": {"type": "error", "error": answer}}
            counts[result["type"]] += 1
            line = {"custom_id": item["custom_id"], "result": result}
            results.append(json.dumps(line, ensure_ascii=False).encode())
        job["results"] = b"\n".join(results) + b"\n"
        job["counts"] = counts
        job["status"] = "ended"
        job["ended"] = time.time()
        self.batch_work_seconds += time.perf_counter() - started

    async def handle_mbatch_list(self, request: web.Request) -> web.Response:
        refused = self._no_batches(request, anthropic=True)
        if refused is not None:
            return refused
        limit = int(request.query.get("limit", "20"))
        jobs = sorted(self.message_batches.values(), key=lambda j: j["created"], reverse=True)
        page = [self._mbatch_object(request, j) for j in jobs[:limit]]
        return web.json_response(
            {
                "data": page,
                "has_more": len(jobs) > limit,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            }
        )

    def _mbatch(self, request: web.Request) -> dict[str, Any] | web.Response:
        from .emulator_messages import anthropic_error

        refused = self._no_batches(request, anthropic=True)
        if refused is not None:
            return refused
        job = self.message_batches.get(request.match_info["id"])
        if job is None:
            return anthropic_error(404, "Not found: message batch")
        return job

    async def handle_mbatch_get(self, request: web.Request) -> web.Response:
        job = self._mbatch(request)
        if isinstance(job, web.Response):
            return job
        return web.json_response(self._mbatch_object(request, job))

    async def handle_mbatch_results(self, request: web.Request) -> web.Response:
        from .emulator_messages import anthropic_error

        job = self._mbatch(request)
        if isinstance(job, web.Response):
            return job
        self._advance_messages(job)
        if job["status"] != "ended":
            return anthropic_error(400, "the batch is still in progress")
        return web.Response(body=job["results"], content_type="application/binary")

    async def handle_mbatch_cancel(self, request: web.Request) -> web.Response:
        job = self._mbatch(request)
        if isinstance(job, web.Response):
            return job
        if job["status"] == "in_progress":
            job["status"] = "canceling"
            job["cancel_at"] = time.time()
        return web.json_response(self._mbatch_object(request, job))
