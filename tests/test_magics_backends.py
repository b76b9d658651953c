"""%pizza with other backends: endpoints, parameters, streaming in a terminal, metadata, keys."""

from __future__ import annotations

import pytest
from keys import API_KEY
from test_magics import cell, failing, magics

from pizzagpt_magic.render import Answer, PrintedAnswer


def test_an_endpoint_model_answers_with_metadata(shell, endpoint, capsys):
    answer = cell(shell, "%pizza --no-stream -m emu:emu-mini What is 6 times 7?")
    assert isinstance(answer, Answer) and "6, 7" in answer.text
    bundle, metadata = answer._repr_mimebundle_()
    meta = metadata["pizzagpt_magic"]
    assert meta["provider"] == "emu" and meta["model"] == "emu-mini"
    assert meta["usage"] == {"prompt_tokens": 5, "completion_tokens": 30, "total_tokens": 35}
    assert meta["finish_reason"] == "stop" and meta["cached"] is False
    # The cell shows the token counts.
    assert "5 prompt + 30 answer tokens" in bundle["text/html"]
    # Not streamed: printed once, as the cell's result, not on the way.
    assert capsys.readouterr().out.count("Emulated emu-mini answer") == 1
    again = cell(shell, "%pizza --no-stream -m emu:emu-mini What is 6 times 7?")
    assert again.completion.cached and endpoint.requests == 1


def test_a_terminal_prints_the_stream_once(shell, endpoint, capsys):
    answer = cell(shell, "x = %pizza -m emu:emu-mini What is 6 times 7?")
    printed = capsys.readouterr().out
    assert printed.count("Emulated emu-mini answer") == 1
    assert isinstance(answer, type(None))  # an assignment shows nothing
    assert isinstance(shell.user_ns["x"], PrintedAnswer) and shell.user_ns["x"].text in printed
    result = cell(shell, "%pizza --no-cache -m emu:emu-mini What is 6 times 7?")
    assert isinstance(result, PrintedAnswer) and shell.user_ns["_"] is result
    printed = capsys.readouterr().out
    assert printed.count("Emulated emu-mini answer") == 1  # no second copy at the end
    assert endpoint.chat_requests[-1]["body"]["stream"] is True


def test_the_model_trait_and_configured_endpoints(shell, keyed_emulator, monkeypatch):
    keyed_emulator.reset_stats()
    monkeypatch.setenv("MINE_KEY", API_KEY)
    shell.run_line_magic(
        "config",
        f"PizzaMagics.endpoints = {{'mine': {{'base_url': '{keyed_emulator.url}/v1', "
        "'api_key_env': 'MINE_KEY'}}",
    )
    shell.run_line_magic("config", "PizzaMagics.model = 'mine:llama3.2:1b'")
    assert magics(shell).model == "mine:llama3.2:1b"
    answer = cell(shell, "%pizza --no-stream Hello?")
    assert keyed_emulator.chat_requests[-1]["body"]["model"] == "llama3.2:1b"
    assert answer.completion.provider == "mine"
    # The same question to another backend is another request (the cache knows the provider).
    cell(shell, "%pizza --no-stream -m mine:emu-mini Hello?")
    assert keyed_emulator.requests == 2


def test_parameters(shell, endpoint, emu):
    assert "Pizzagpt takes no temperature" in failing(shell, "%pizza --temperature 0.2 hi")
    assert "Pizzagpt takes no max_tokens" in failing(shell, "%pizza --max-tokens 5 hi")
    assert emu.requests == 0
    assert "from 0 to 2" in failing(shell, "%pizza -m emu:emu-mini --temperature 3 hi")
    assert "at least 1" in failing(shell, "%pizza -m emu:emu-mini --max-tokens 0 hi")
    answer = cell(shell, "%pizza --no-stream -m emu:emu-mini --temperature 0.5 --max-tokens 4 hi")
    body = endpoint.chat_requests[-1]["body"]
    assert body["temperature"] == 0.5 and body["max_tokens"] == 4
    assert answer.truncated and "cut at the token limit" in answer.bundle()["text/html"]
    # Different parameters are a different request, not a cache hit.
    cell(shell, "%pizza --no-stream -m emu:emu-mini --temperature 0.7 --max-tokens 4 hi")
    assert endpoint.requests == 2
    magics(shell).temperature = 0.1
    cell(shell, "%pizza --no-stream -m emu:emu-mini hi")
    assert endpoint.chat_requests[-1]["body"]["temperature"] == 0.1


def test_a_cut_stream_keeps_the_partial_answer(shell, endpoint, capsys):
    message = failing(shell, "%pizza -m emu:emu-mini question [[fault:cut;chunk-size=5]]")
    # Said once, in a reader's words: the printed text is only marked, the error says why.
    assert message.startswith("The answer was cut off after ")
    assert message.endswith(
        ": the connection to the server was lost; what arrived is in '_pizza_answer'"
    )
    assert capsys.readouterr().out.endswith("\n[incomplete]\n")
    assert shell.user_ns["_pizza_answer"].startswith("**Emulated")
    assert not magics(shell).conversation.exchanges  # nothing recorded
    assert "next" in cell(shell, "%pizza --no-stream -m emu:emu-mini next").text


def test_models_lists_every_provider(shell, endpoint, monkeypatch):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for name in ("OLLAMA_HOST",):
        monkeypatch.setenv(name, f"127.0.0.1:{port}")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    magics(shell).endpoints = {
        "lmstudio": {"base_url": f"http://127.0.0.1:{port}/v1"},
        "llamacpp": {"base_url": f"http://127.0.0.1:{port}/v1"},
    }
    listing = cell(shell, "%pizza --models")
    plain = str(listing)
    assert "pizzagpt: gpt-4o-mini" in plain
    assert "emu: emu:emu-large, emu:emu-mini, emu:llama3.2:1b" in plain
    lines = plain.splitlines()
    # The providers that answer first; endpoints configured here that do not, with why; the
    # presets with no server or key in one line at the end.
    assert lines[:2] == [
        "pizzagpt: gpt-4o-mini",
        "emu: emu:emu-large, emu:emu-mini, emu:llama3.2:1b",
    ]
    assert lines[2].startswith("lmstudio: unreachable: Nothing is listening at")
    assert lines[-1].startswith(
        "Not available: no API key set: openai (OPENAI_API_KEY), openrouter (OPENROUTER_API_KEY)"
    )
    assert "; no server running: ollama" in lines[-1] and len(lines) == 5
    assert "(default)" in listing._repr_mimebundle_()["text/html"]
    one = str(cell(shell, "%pizza --models emu"))
    assert one == "emu: emu:emu-large, emu:emu-mini, emu:llama3.2:1b"
    assert "no provider named 'nope'" in failing(shell, "%pizza --models nope")


def test_a_provider_class_from_the_magic(shell, capsys):
    answer = cell(shell, "%pizza --no-stream -m fake_provider.EchoProvider:e1 hello")
    assert answer.text == "[e1] hello "
    assert answer.completion.usage["total_tokens"] == 7
    assert "fake_provider.EchoProvider:e1" in str(cell(shell, "%pizza --history"))
    assert "BrokenProvider failed" in failing(shell, "%pizza -m fake_provider.BrokenProvider hi")


def test_bad_model_ids_are_usage_errors(shell):
    assert "ollama:MODEL" in failing(shell, "%pizza -m ollama hi")
    assert "Cannot import" in failing(shell, "%pizza -m nowhere.Provider hi")
    assert "PROVIDER:MODEL" in failing(shell, "%pizza -m gpt-9 hi")
    with pytest.raises(Exception, match="PROVIDER:MODEL"):
        magics(shell).model = "gpt-9"


def test_the_key_appears_nowhere(shell, endpoint, capsys, monkeypatch):
    outputs = []
    outputs.append(cell(shell, "%pizza --no-stream -m emu:emu-mini hi"))
    outputs.append(cell(shell, "%pizza -c -m emu:emu-mini again"))
    outputs.append(cell(shell, "%pizza --history"))
    shell.run_line_magic("config", "PizzaMagics")
    monkeypatch.setenv("EMU_API_KEY", API_KEY + "x")
    outputs.append(failing(shell, "%pizza -m emu:emu-mini refused"))
    monkeypatch.setenv("EMU_API_KEY", API_KEY)
    outputs.append(failing(shell, "%pizza -m emu:gpt-9 unknown"))
    text = "\n".join(
        str(o) + repr(o) + str(getattr(o, "_repr_mimebundle_", lambda: "")()) for o in outputs
    )
    text += capsys.readouterr().out + repr(magics(shell).conversation.exchanges)
    text += repr(magics(shell).conversation.cache) + repr(vars(magics(shell)))
    assert "EMU_API_KEY" in text  # the refusal names the variable...
    assert API_KEY not in text  # ...never the key


def test_batches_use_the_backend_without_streaming(shell, endpoint, capsys):
    shell.user_ns["items"] = ["Paris", "Oslo", "Rome"]
    summary = cell(shell, "%%pizza --each items -o out -m emu:emu-mini\nA fact about {item}?")
    assert len(shell.user_ns["out"]) == 3 and "Oslo" in shell.user_ns["out"][1]
    assert "emu:emu-mini" in str(summary)
    assert all("stream" not in r["body"] for r in endpoint.chat_requests)
    assert "Emulated" not in capsys.readouterr().out.split("Out[")[0]  # no stream printed


def test_ask_many_takes_model_ids(endpoint):
    from pizzagpt_magic import ask_many

    answers = ask_many(["one?", "two?"], model="emu:emu-mini", max_tokens=2, progress=False)
    assert answers == ["**Emulated emu-mini", "**Emulated emu-mini"]
    assert [r["body"]["model"] for r in endpoint.chat_requests] == ["emu-mini", "emu-mini"]


def test_a_configured_model_may_name_a_configured_endpoint(emu, endpoint):
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    config.PizzaMagics.model = "mine:emu-mini"  # set before the endpoint it names
    config.PizzaMagics.endpoints = {"mine": {"base_url": f"{endpoint.url}/v1"}}
    shell = InteractiveShell(config=config)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "ignoring the configured model"
            shell.run_line_magic("load_ext", "pizzagpt_magic")
        assert magics(shell).model == "mine:emu-mini"
    finally:
        shell.run_line_magic("unload_ext", "pizzagpt_magic")
        shell.cleanup()
        InteractiveShell.clear_instance()
