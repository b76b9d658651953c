"""Driving a real ipykernel through jupyter_client, for the tests that need one."""

from __future__ import annotations

import os
import queue
import time
from typing import Any

from jupyter_client import KernelManager


class Kernel:
    """A started ipykernel and its client; ``execute`` collects one cell's messages."""

    def __init__(self, env: dict[str, str]) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env={**os.environ, **env})
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self._replies: dict[str, dict[str, Any]] = {}

    def submit(self, code: str) -> str:
        return self.client.execute(code, store_history=True, allow_stdin=False)

    def collect(self, msg_ids: list[str], timeout: float = 60) -> dict[str, list[dict[str, Any]]]:
        """iopub messages of each request, up to and including its idle status."""
        pending = set(msg_ids)
        found: dict[str, list[dict[str, Any]]] = {m: [] for m in msg_ids}
        deadline = time.monotonic() + timeout
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(pending)} cells did not finish")
            try:
                msg = self.client.get_iopub_msg(timeout=remaining)
            except queue.Empty:
                continue
            parent = msg["parent_header"].get("msg_id")
            if parent in found:
                found[parent].append(msg)
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    pending.discard(parent)
        return found

    def reply(self, msg_id: str, timeout: float = 60) -> dict[str, Any]:
        """The execute_reply of a request (replies of others are kept for later)."""
        deadline = time.monotonic() + timeout
        while msg_id not in self._replies:
            msg = self.client.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            self._replies[msg["parent_header"].get("msg_id")] = msg["content"]
        return self._replies.pop(msg_id)

    def execute(self, code: str, timeout: float = 60) -> list[dict[str, Any]]:
        """Run a cell; its iopub messages, with its execute_reply appended as type "reply"."""
        msg_id = self.submit(code)
        messages = self.collect([msg_id], timeout)[msg_id]
        return messages + [{"msg_type": "reply", "content": self.reply(msg_id)}]

    def drain(self, seconds: float) -> list[dict[str, Any]]:
        """Every iopub message that arrives within ``seconds``."""
        messages = []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                messages.append(self.client.get_iopub_msg(timeout=remaining))
            except queue.Empty:
                break
        return messages

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def of_type(messages: list[dict[str, Any]], *types: str) -> list[dict[str, Any]]:
    return [m for m in messages if m["msg_type"] in types]


def result_text(messages: list[dict[str, Any]]) -> str:
    results = of_type(messages, "execute_result")
    assert len(results) == 1, [m["msg_type"] for m in messages]
    return results[0]["content"]["data"]["text/plain"]


def answer_text(messages: list[dict[str, Any]]) -> str:
    """The answer a cell shows: its result, or the live output the answer took the place of
    (a placeholder or a stream)."""
    results = of_type(messages, "execute_result")
    if results:
        return result_text(messages)
    shown = of_type(messages, "display_data", "update_display_data")
    assert shown, [m["msg_type"] for m in messages]
    return shown[-1]["content"]["data"]["text/plain"]


def error_of(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The cell's error: an error message, or a failed execute_reply (how UsageError shows)."""
    errors = of_type(messages, "error")
    if errors:
        return errors[0]["content"]
    replies = [
        m["content"] for m in of_type(messages, "reply") if m["content"]["status"] == "error"
    ]
    return replies[0] if replies else None


def stderr_of(messages: list[dict[str, Any]]) -> str:
    return "".join(
        m["content"]["text"]
        for m in of_type(messages, "stream")
        if m["content"]["name"] == "stderr"
    )
