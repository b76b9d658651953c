"""Tools against a real third-party server: LiteLLM's proxy on loopback, whose mock can answer
with tool calls (``mock_tool_calls``).

Its mock calls the same tools in every answer, so the loop ends at the round limit, having run
the tool and sent the results back in the proxy's accepted form. Streamed, the mock sends the
text and drops the calls (a limit of LiteLLM's mock, not of the protocol): the package then
takes the text as the answer.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from pizzagpt_magic import api, backends
from pizzagpt_magic.errors import ToolRoundsError
from pizzagpt_magic.loop import run_sync

LITELLM_KEY = "sk-litellm-master-tools-81c4"
CONFIG = """\
model_list:
  - model_name: mock-tools
    litellm_params:
      model: openai/mock-tools
      api_key: sk-none
      mock_response: "Let me look."
      mock_tool_calls:
        - id: call_lt_1
          type: function
          function:
            name: missing
            arguments: '{"name": "sales"}'
"""


@pytest.fixture(scope="module")
def litellm(tmp_path_factory):
    """LiteLLM's proxy with the mock above, started as tests/test_openai_peers.py starts it."""
    executable = shutil.which("litellm") or str(Path(sys.executable).with_name("litellm"))
    if not Path(executable).exists():
        pytest.fail("LiteLLM's proxy is in the test extra: pip install -e '.[test]'")
    config = tmp_path_factory.mktemp("litellm-tools") / "config.yaml"
    config.write_text(CONFIG)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": LITELLM_KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    log = config.with_name("litellm.log").open("w")
    process = subprocess.Popen(
        [executable, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health/liveliness", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    output = config.with_name("litellm.log").read_text()[-2000:]
                    pytest.fail(f"LiteLLM did not start: {output}")
                time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def endpoint(litellm, monkeypatch):
    monkeypatch.setenv("LITELLM_TOOLS_KEY", LITELLM_KEY)
    monkeypatch.setitem(
        backends._registered,
        "litellm",
        backends.Endpoint("litellm", f"{litellm}/v1", "LITELLM_TOOLS_KEY"),
    )
    return litellm


NAMESPACE = {"sales": pd.DataFrame({"units": [1, None, 3, None]})}


def test_the_proxys_tool_calls_run_and_go_back(endpoint):
    with pytest.raises(ToolRoundsError) as info:
        run_sync(
            api.complete(
                "What is missing in sales?",
                model="litellm:mock-tools",
                tools=True,
                namespace=NAMESPACE,
                store=None,
                stream=False,
                tool_rounds=2,
            )
        )
    # Two rounds ran the call and the proxy took the results back; the third answer still
    # called, so the loop stopped there with the text so far.
    assert "after 2 rounds" in str(info.value)
    assert [(c.name, c.arguments, c.error) for c in info.value.calls] == [
        ("missing", {"name": "sales"}, None)
    ] * 2
    assert info.value.calls[0].chars > 40
    assert info.value.partial == "\n\n".join(["Let me look."] * 3)


def test_the_proxys_stream_drops_the_calls(endpoint):
    completion = run_sync(
        api.complete(
            "What is missing in sales?",
            model="litellm:mock-tools",
            tools=True,
            namespace=NAMESPACE,
            store=None,
            stream=True,
        )
    )
    assert completion.text == "Let me look." and completion.tool_calls == []
