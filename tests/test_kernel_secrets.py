"""An endpoint that sends the API key back on every error path it has: in a real kernel, the key
must reach no output (iopub), no byte of the store and no line of the command line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from kernel_helpers import Kernel, error_of
from keys import API_KEY
from scripted import ScriptedServer, chunk

pytestmark = pytest.mark.kernel

SAID = f"the key {API_KEY} (Authorization: Bearer {API_KEY}) is wrong"
ERROR = {"error": {"message": SAID, "code": "invalid_api_key"}}


async def echo_key(request: web.Request) -> web.StreamResponse:
    """Each question names the error path to take (``path=NAME``); every one quotes the key."""
    body = await request.json() if request.can_read_body else {}
    question = str(body.get("messages", [{}])[-1].get("content", "")) if body else ""
    path = question.rsplit("path=", 1)[-1].split()[0] if "path=" in question else ""
    if path == "status":
        return web.json_response(ERROR, status=401)
    if path == "server-error":
        return web.json_response(ERROR, status=500)
    if path in ("event", "event-named"):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(chunk("Part of an answer, "))
        named = b"event: error\n" if path == "event-named" else b""
        await response.write(named + b"data: " + json.dumps(ERROR).encode() + b"\n\n")
        return response
    if path == "json-error":
        return web.json_response(ERROR)
    if path == "not-json":
        return web.Response(text=f"<html>{SAID}</html>", content_type="text/html")
    if path == "bad-event":
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(f"data: {{{SAID}\n\n".encode())
        return response
    if path == "redirect":
        return web.Response(status=301, text=SAID, headers={"Location": f"/moved?key={API_KEY}"})
    if path == "timeout":
        await asyncio.sleep(3)
    return web.json_response(ERROR, status=400)


PATHS = [
    "status",
    "server-error",
    "event",
    "event-named",
    "json-error",
    "not-json",
    "bad-event",
    "redirect",
    "timeout",
]


@pytest.fixture(scope="module")
def server():
    with ScriptedServer() as running:
        running.script = echo_key
        yield running


def test_the_key_reaches_no_output_no_store_and_no_command_line(server, tmp_path):
    store = tmp_path / "store.sqlite3"
    env = {"PIZZAGPT_STORE": str(store), "RAW_KEY": API_KEY}
    kernel = Kernel(env)
    seen: list[dict] = []
    try:
        setup = (
            "%load_ext pizzagpt_magic\n"
            "from pizzagpt_magic.backends import register_endpoint\n"
            f"register_endpoint('raw', '{server.url}/v1', api_key_env='RAW_KEY')\n"
            "%config PizzaMagics.retries = 0"
        )
        assert error_of(kernel.execute(setup)) is None
        for path in PATHS:
            for stream in ("", "--no-stream "):
                messages = kernel.execute(
                    f"%pizza -m raw:m --timeout 1 {stream}Say hello path={path}", timeout=60
                )
                assert error_of(messages) is not None, (path, stream)
                seen.extend(messages)
        kernel.execute("from pizzagpt_magic.store import forget_stores\nforget_stores()")
    finally:
        kernel.shutdown()
    outputs = json.dumps(seen, default=str)
    assert "Say hello path=status" in outputs  # the errors were shown
    assert API_KEY not in outputs and API_KEY[3:] not in outputs
    on_disk = b"".join(
        Path(f"{store}{suffix}").read_bytes()
        for suffix in ("", "-wal")
        if Path(f"{store}{suffix}").exists()
    )
    assert b"Say hello path=event" in on_disk  # the failures were logged
    assert API_KEY.encode() not in on_disk and API_KEY[3:].encode() not in on_disk

    cli_env = {**os.environ, **env}
    printed = []
    for path in PATHS:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pizzagpt_magic",
                "ask",
                "-m",
                "m",
                "--base-url",
                f"{server.url}/v1",
                "--api-key-env",
                "RAW_KEY",
                "--timeout",
                "1",
                "--retries",
                "0",
                f"Say hello path={path}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=cli_env,
        )
        assert result.returncode != 0, path
        printed.append(result.stdout + result.stderr)
    logs = subprocess.run(
        [sys.executable, "-m", "pizzagpt_magic", "logs", "-n", "100", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env,
    )
    printed.append(logs.stdout + logs.stderr)
    everything = "\n".join(printed)
    assert "path=timeout" in logs.stdout
    assert API_KEY not in everything and API_KEY[3:] not in everything
