"""Backends: model ids, endpoints, the OpenAI-compatible provider and gpt4free-style classes."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from fake_provider import EchoProvider
from keys import API_KEY

from pizzagpt_magic import api, backends
from pizzagpt_magic.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    ConnectionLostError,
    HTTPStatusError,
    ModelNotFoundError,
    NonJSONResponseError,
    ProviderError,
    ResponseError,
    ResponseShapeError,
)
from pizzagpt_magic.loop import run_sync
from pizzagpt_magic.providers.openai import OpenAICompatible, SSEDecoder, list_models

# -- model ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "provider", "model"),
    [
        (None, "pizzagpt", "gpt-4o-mini"),
        ("", "pizzagpt", "gpt-4o-mini"),
        ("gpt-4o-mini", "pizzagpt", "gpt-4o-mini"),
        ("pizzagpt:gpt-4o-mini", "pizzagpt", "gpt-4o-mini"),
        ("ollama:llama3.2:1b", "ollama", "llama3.2:1b"),
        ("openai:gpt-4o-mini", "openai", "gpt-4o-mini"),
        (
            "openrouter:meta-llama/llama-3.1-8b-instruct",
            "openrouter",
            "meta-llama/llama-3.1-8b-instruct",
        ),
        ("lmstudio:qwen2.5-7b", "lmstudio", "qwen2.5-7b"),
        ("llamacpp:any", "llamacpp", "any"),
        ("fake_provider.EchoProvider", "fake_provider.EchoProvider", "echo-1"),
        ("fake_provider.EchoProvider:echo-2", "fake_provider.EchoProvider", "echo-2"),
    ],
)
def test_model_ids(model_id, provider, model):
    backend = backends.resolve(model_id)
    assert (backend.provider, backend.model) == (provider, model)
    assert backends.resolve(backend.id) == backend  # the id names the same backend again


@pytest.mark.parametrize(
    ("model_id", "error", "text"),
    [
        ("gpt-5", ModelNotFoundError, "PROVIDER:MODEL"),
        ("nope:model", ConfigurationError, "unknown provider 'nope'; providers: pizzagpt, openai"),
        ("ollama", ConfigurationError, "ollama:MODEL"),
        ("ollama:", ConfigurationError, "ollama:MODEL"),
        ("fake_provider.Missing:x", ConfigurationError, "has no provider named 'Missing'"),
        ("no_such_package.Provider", ConfigurationError, "Cannot import"),
        ("fake_provider.NotAProvider", ConfigurationError, "not a provider class"),
    ],
)
def test_bad_model_ids_are_one_line_errors(model_id, error, text):
    with pytest.raises(error) as info:
        backends.resolve(model_id)
    assert text in str(info.value) and "\n" not in str(info.value)


def test_endpoints_presets_overrides_and_registration(monkeypatch):
    table = backends.endpoints()
    assert table["openai"].url == "https://api.openai.com/v1"
    assert table["openai"].api_key_env == "OPENAI_API_KEY"
    assert (
        table["ollama"].url == "http://localhost:11434/v1" and table["ollama"].api_key_env is None
    )
    assert table["lmstudio"].url == "http://localhost:1234/v1"
    assert table["llamacpp"].url == "http://localhost:8080/v1"
    assert table["openrouter"].api_key_env == "OPENROUTER_API_KEY"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9999/v1/")
    assert backends.PRESETS["openai"].url == "http://127.0.0.1:9999/v1"
    for value, url in [
        ("gpu-box", "http://gpu-box:11434/v1"),
        ("gpu-box:1234", "http://gpu-box:1234/v1"),
        ("https://ollama.example.com", "https://ollama.example.com:11434/v1"),
        ("http://10.0.0.2:8000/", "http://10.0.0.2:8000/v1"),
    ]:
        monkeypatch.setenv("OLLAMA_HOST", value)
        assert backends.PRESETS["ollama"].url == url
    # A same name replaces a preset; the configured table comes last.
    extra = {"ollama": {"base_url": "http://box:1/v1"}, "mine": {"base_url": "http://m/v1"}}
    table = backends.endpoints(extra)
    assert table["ollama"].url == "http://box:1/v1" and table["mine"].api_key_env is None
    assert backends.resolve("mine:m1", extra).endpoint == table["mine"]
    monkeypatch.setattr(backends, "_registered", {})
    backends.register_endpoint("vllm", "http://127.0.0.1:8000/v1", api_key_env="VLLM_KEY")
    assert backends.resolve("vllm:qwen").endpoint.api_key_env == "VLLM_KEY"
    for bad in [
        ("bad name", "http://x/v1"),
        ("ok", "localhost:8000/v1"),
        ("pizzagpt", "http://x/v1"),
    ]:
        with pytest.raises(ConfigurationError):
            backends.register_endpoint(*bad)
    with pytest.raises(ConfigurationError, match="environment variable"):
        backends.register_endpoint("k", "http://x/v1", api_key_env="sk-not-a-name!")


def test_the_presets_table():
    """Every preset's base URL and key variable, as each service documents them."""
    table = {
        name: (e.base_url, e.api_key_env, e.base_url_env, e.api)
        for name, e in backends.PRESETS.items()
    }
    assert table == {
        "openai": ("https://api.openai.com/v1", "OPENAI_API_KEY", "OPENAI_BASE_URL", "openai"),
        "ollama": ("http://localhost:11434/v1", None, "OLLAMA_HOST", "openai"),
        "lmstudio": ("http://localhost:1234/v1", None, None, "openai"),
        "llamacpp": ("http://localhost:8080/v1", None, None, "openai"),
        "openrouter": ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", None, "openai"),
        "anthropic": (
            "https://api.anthropic.com",
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            "anthropic",
        ),
        "gemini": (
            "https://generativelanguage.googleapis.com/v1beta/openai",
            "GEMINI_API_KEY",
            None,
            "openai",
        ),
        "groq": ("https://api.groq.com/openai/v1", "GROQ_API_KEY", None, "openai"),
        "mistral": ("https://api.mistral.ai/v1", "MISTRAL_API_KEY", None, "openai"),
        "deepseek": ("https://api.deepseek.com", "DEEPSEEK_API_KEY", None, "openai"),
        "together": ("https://api.together.ai/v1", "TOGETHER_API_KEY", None, "openai"),
        "vllm": ("http://localhost:8000/v1", None, None, "openai"),
    }


@pytest.mark.parametrize(
    ("preset", "url"),
    [
        ("gemini", "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"),
        ("groq", "https://api.groq.com/openai/v1/chat/completions"),
        ("mistral", "https://api.mistral.ai/v1/chat/completions"),
        ("deepseek", "https://api.deepseek.com/chat/completions"),
        ("together", "https://api.together.ai/v1/chat/completions"),
    ],
)
def test_a_preset_sends_its_key_to_its_documented_url(mocked, monkeypatch, preset, url):
    variable = backends.PRESETS[preset].api_key_env
    monkeypatch.setenv(variable, "sk-preset-test-000000")
    mocked.post(url, payload={"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]})
    assert api.ask("hi", model=f"{preset}:some-model", stream=False, cache=False) == "ok"
    (key, calls), *_ = mocked.requests.items()
    assert str(key[1]) == url
    assert calls[0].kwargs["headers"]["Authorization"] == "Bearer sk-preset-test-000000"
    monkeypatch.delenv(variable)
    with pytest.raises(ConfigurationError, match=f"set the environment variable {variable}"):
        api.ask("hi", model=f"{preset}:some-model", cache=False)


def test_entry_point_providers(monkeypatch):
    class EP:
        def __init__(self, name, value):
            self.name, self.value = name, value

        def load(self):
            if isinstance(self.value, Exception):
                raise self.value
            return self.value

    points = {
        "echo": EP("echo", EchoProvider),
        "corp": EP("corp", {"base_url": "http://corp:8000/v1", "api_key_env": "CORP_KEY"}),
        "broken": EP("broken", ImportError("no module named x")),
    }
    monkeypatch.setattr(backends, "_entry_points", lambda: points)
    assert backends.resolve("echo").cls is EchoProvider
    assert backends.resolve("echo:e2").model == "e2"
    assert backends.resolve("corp:m").endpoint.url == "http://corp:8000/v1"
    assert "corp" in backends.endpoints() and "broken" not in backends.endpoints()
    with pytest.raises(ConfigurationError, match="'broken' failed to load"):
        backends.resolve("broken:x")


def test_parameters_are_refused_by_pizzagpt_and_nothing_is_sent(emu):
    with pytest.raises(ConfigurationError, match="Pizzagpt takes no temperature"):
        api.ask("hi", temperature=0.2)
    with pytest.raises(ConfigurationError, match="max_tokens"):
        api.ask("hi", max_tokens=10)
    assert emu.requests == 0


# -- server-sent events -------------------------------------------------------------------------

STREAM = (
    b": keep-alive\r\n\r\n"
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Caf\xc3\xa9 "}}]}\n\n'
    b"event: message\nid: 7\n"
    b'data: {"choices":[{"index":0,\ndata: "delta":{"content":"\xe2\x82\xac5"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\r\n\r\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}}\r\r'
    b"data: [DONE]\n\n"
)


def test_sse_decoder_reads_events_split_anywhere():
    whole = SSEDecoder().feed(STREAM)
    assert len(whole) == 5 and whole[-1] == "[DONE]"
    assert json.loads(whole[1])["choices"][0]["delta"]["content"] == "€5"
    for step in (1, 2, 3, 7):
        decoder = SSEDecoder()
        events = []
        for start in range(0, len(STREAM), step):  # splits mid-line and mid-character
            events += decoder.feed(STREAM[start : start + step])
        assert events + decoder.close() == whole


def test_sse_decoder_flushes_a_last_event_without_its_blank_line():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.close() == ["[DONE]"]


# -- the provider against the emulator ----------------------------------------------------------


def ask(prompt, **options):
    return run_sync(api.complete(prompt, **options))


def test_plain_and_streamed_answers(endpoint):
    chunks = []
    streamed = ask("What is 6 times 7?", model="emu:emu-mini", on_text=chunks.append)
    assert len(chunks) > 3 and "".join(chunks) == streamed.text
    plain = ask("What is 6 times 7?", model="emu:emu-mini", stream=False)
    assert plain.text == streamed.text and "6, 7" in plain.text
    for completion in (streamed, plain):
        assert completion.provider == "emu" and completion.model == "emu-mini"
        assert completion.finish_reason == "stop"
        assert completion.usage == {"prompt_tokens": 5, "completion_tokens": 30, "total_tokens": 35}
    first, second = (r["body"] for r in endpoint.chat_requests)
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    assert "stream" not in second
    assert endpoint.chat_requests[0]["headers"]["Authorization"] == f"Bearer {API_KEY}"


def test_history_system_and_parameters_reach_the_endpoint(endpoint):
    completion = ask(
        "And now?",
        model="emu:emu-mini",
        system="Be brief",
        history=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        temperature=0.3,
        max_tokens=4,
    )
    body = endpoint.chat_requests[-1]["body"]
    assert body["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "And now?"},
    ]
    assert body["temperature"] == 0.3 and body["max_tokens"] == 4
    assert completion.finish_reason == "length" and completion.truncated
    assert len(completion.text.split(" ")) == 4
    assert completion.parameters == {"temperature": 0.3, "max_tokens": 4}


def test_a_missing_key_names_the_variable_and_sends_nothing(endpoint, monkeypatch):
    monkeypatch.delenv("EMU_API_KEY")
    with pytest.raises(ConfigurationError, match="set the environment variable EMU_API_KEY"):
        ask("hi", model="emu:emu-mini")
    assert endpoint.requests == 0


def test_a_refused_key_names_the_variable_not_the_key(endpoint, monkeypatch):
    wrong = "sk-wrong-0123456789abcdef"
    monkeypatch.setenv("EMU_API_KEY", wrong)
    with pytest.raises(AuthenticationError) as info:
        ask("hi", model="emu:emu-mini")
    message = str(info.value)
    assert "refused the API key in EMU_API_KEY" in message and "401" in message
    assert wrong not in message and wrong not in repr(info.value)
    assert endpoint.requests == 1  # a refused key is not retried


def test_an_unknown_model_lists_the_endpoints_models(endpoint):
    with pytest.raises(ModelNotFoundError) as info:
        ask("hi", model="emu:gpt-9")
    assert info.value.models == ["emu-large", "emu-mini", "llama3.2:1b"]
    assert "'gpt-9' is not supported by emu" in str(info.value)


@pytest.mark.parametrize("stream", [True, False])
def test_retries_on_5xx_and_429(endpoint, stream):
    completion = ask(
        "hi [[fault:status=503;times=2]]", model="emu:emu-mini", stream=stream, max_retries=2
    )
    assert "Emulated" in completion.text and endpoint.requests == 3
    endpoint.reset_stats()
    ask("hi [[fault:status=429;retry-after=0.2;times=1]]", model="emu:emu-mini", stream=stream)
    assert endpoint.requests == 2
    endpoint.reset_stats()
    with pytest.raises(HTTPStatusError, match="HTTP 500 .*emulated status 500"):
        ask("hi [[fault:status=500]]", model="emu:emu-mini", stream=stream, max_retries=1)
    assert endpoint.requests == 2


def test_a_cut_stream_keeps_the_partial_text(endpoint):
    chunks = []
    with pytest.raises(ConnectionLostError) as info:
        ask("tell me [[fault:cut;chunk-size=4]]", model="emu:emu-mini", on_text=chunks.append)
    assert info.value.partial == "".join(chunks) and info.value.partial.startswith("**Emu")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("fault", "error", "text"),
    [
        ("stream-error", ResponseError, "emulated error mid-stream"),
        ("invalid-json", ResponseShapeError, "not JSON"),
    ],
)
def test_bad_events_are_typed_errors(endpoint, fault, error, text):
    with pytest.raises(error, match=text) as info:
        ask(f"hi [[fault:{fault};chunk-size=4]]", model="emu:emu-mini")
    assert info.value.partial


@pytest.mark.parametrize(
    ("fault", "error"),
    [("invalid-json", NonJSONResponseError), ("html", NonJSONResponseError)],
)
def test_bad_plain_answers_are_typed_errors(endpoint, fault, error):
    with pytest.raises(error):
        ask(f"hi [[fault:{fault}]]", model="emu:emu-mini", stream=False)


def test_a_local_endpoint_that_is_not_running(monkeypatch, unused_port):
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{unused_port}")
    with pytest.raises(ConnectError) as info:
        ask("hi", model="ollama:llama3.2")
    assert str(info.value) == (
        f"Nothing is listening at http://127.0.0.1:{unused_port} (ollama): is the server running?"
    )


@pytest.fixture
def unused_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_key_does_not_follow_a_redirect_to_another_origin(endpoint):
    """A 307 to another origin repeats the POST there without the Authorization header."""
    seen = []

    async def main():
        async def moved(request):
            seen.append(request.headers.get("Authorization"))
            raise web.HTTPTemporaryRedirect(f"{endpoint.url}/v1/chat/completions")

        app = web.Application()
        app.router.add_post("/v1/chat/completions", moved)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        backends._registered["moved"] = backends.Endpoint(
            "moved", f"http://127.0.0.1:{port}/v1", "EMU_API_KEY"
        )
        try:
            for _ in range(2):
                with pytest.raises(AuthenticationError):
                    await api.complete("hi", model="moved:emu-mini", stream=False)
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        backends._registered.pop("moved", None)
    # The endpoint itself got the key each time (dropping it for the redirect left the
    # endpoint's own headers as they were)...
    assert seen == [f"Bearer {API_KEY}"] * 2
    # ...the emulator, another origin, got the request without it (and so refused it).
    assert endpoint.requests == 2


def test_a_changed_key_is_used_at_once(endpoint, monkeypatch):
    monkeypatch.setenv("EMU_API_KEY", "sk-old-0123456789")
    for stream in (False, True):
        with pytest.raises(AuthenticationError):
            ask("hi", model="emu:emu-mini", stream=stream)
    monkeypatch.setenv("EMU_API_KEY", API_KEY)
    for stream in (False, True):
        assert ask("hi", model="emu:emu-mini", stream=stream).text
    monkeypatch.delenv("EMU_API_KEY")
    with pytest.raises(ConfigurationError, match="EMU_API_KEY"):
        ask("hi", model="emu:emu-mini", stream=False)
    assert endpoint.requests == 4  # the old key twice (refused), the new one twice
    sent = [r["headers"]["Authorization"] for r in endpoint.chat_requests]
    assert sent == [f"Bearer {API_KEY}"] * 2


def test_unknown_request_options_are_refused_before_anything_is_sent(endpoint):
    for call in (
        lambda: api.complete("hi", model="emu:emu-mini", stream=False, timeot=3),
        lambda: api.complete_messages(
            backends.resolve("emu:emu-mini"), [{"role": "user", "content": "hi"}], proxi=None
        ),
    ):
        with pytest.raises(TypeError, match="timeot|proxi"):
            run_sync(call())
    assert endpoint.requests == 0


def test_list_models(endpoint, monkeypatch, unused_port):
    assert run_sync(list_models(f"{endpoint.url}/v1", "EMU_API_KEY", name="emu")) == [
        "emu-large",
        "emu-mini",
        "llama3.2:1b",
    ]
    refused = run_sync(list_models(f"http://127.0.0.1:{unused_port}/v1", name="local"))
    assert refused.startswith("Nothing is listening at") and "(local)" in refused
    monkeypatch.setenv("EMU_API_KEY", "sk-wrong-key-123456")
    wrong = run_sync(list_models(f"{endpoint.url}/v1", "EMU_API_KEY", name="emu"))
    assert "refused the API key in EMU_API_KEY" in wrong and "sk-wrong" not in wrong


# -- request shapes (aioresponses) --------------------------------------------------------------


def test_request_shape(mocked, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-shape-test-000000")
    url = "https://api.openai.com/v1/chat/completions"
    mocked.post(
        url,
        payload={
            "choices": [{"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}],
        },
    )
    assert api.ask("hi", model="openai:gpt-4o-mini", stream=False, temperature=0) == "ok"
    (key, calls), *_ = mocked.requests.items()
    assert key[0] == "POST" and str(key[1]) == url
    call = calls[0].kwargs
    assert call["json"] == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0,
    }
    assert call["headers"]["Authorization"] == "Bearer sk-shape-test-000000"
    assert call["headers"]["Content-Type"] == "application/json"
    assert call["allow_redirects"] is False


# -- gpt4free-style provider classes ------------------------------------------------------------


def test_a_provider_class_by_import_path(monkeypatch):
    EchoProvider.calls.clear()
    chunks = []
    completion = ask(
        "hello there", model="fake_provider.EchoProvider:e9", on_text=chunks.append, temperature=0.5
    )
    # Text chunks are joined; the reasoning object is not text and is never shown.
    assert completion.text == "[e9] hello there "
    assert chunks == ["[e9] ", "hello ", "there "]
    assert "thinking" not in completion.text
    assert completion.finish_reason == "stop"
    assert completion.usage == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert EchoProvider.calls[-1]["temperature"] == 0.5
    assert EchoProvider.calls[-1]["stream"] is True
    # The class given directly, as ask(provider=...) always allowed.
    assert api.ask("x", provider=EchoProvider) == "[echo-1] x "


def test_a_failing_provider_class_is_one_typed_error():
    with pytest.raises(ProviderError) as info:
        ask("hi", model="fake_provider.BrokenProvider")
    assert str(info.value) == "BrokenProvider failed: RuntimeError: the upstream site changed"
    assert info.value.partial == "half an answer"


def test_the_openai_provider_has_the_gpt4free_interface(endpoint):
    async def run():
        agen = OpenAICompatible.create_async_generator(
            "emu-mini",
            [{"role": "user", "content": "hi"}],
            base_url=f"{endpoint.url}/v1",
            api_key_env="EMU_API_KEY",
        )
        return [chunk async for chunk in agen]

    chunks = run_sync(run())
    text = "".join(c for c in chunks if isinstance(c, str))
    assert text.startswith("**Emulated emu-mini answer**")
    assert repr(chunks[-1]) == "FinishReason('stop')"
    assert "Usage(" in repr(chunks[-2])


def test_an_installed_package_adds_providers_through_entry_points(tmp_path, monkeypatch):
    """A real distribution on sys.path declaring the group, read by importlib.metadata."""
    info = tmp_path / "pizza_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pizza-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[pizzagpt_magic.providers]\n"
        "echoes = fake_provider:EchoProvider\n"
        "gateway = pizza_plugin_endpoints:GATEWAY\n"
    )
    (tmp_path / "pizza_plugin_endpoints.py").write_text(
        "GATEWAY = {'base_url': 'http://127.0.0.1:9/v1', 'api_key_env': 'GATEWAY_KEY'}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    backends._entry_points.cache_clear()
    monkeypatch.setattr(backends, "_resolved", {})
    try:
        assert backends.resolve("echoes:e3").cls is EchoProvider
        gateway = backends.resolve("gateway:big-model")
        assert gateway.endpoint.url == "http://127.0.0.1:9/v1"
        assert gateway.endpoint.api_key_env == "GATEWAY_KEY"
        assert "gateway" in backends.endpoints()
    finally:
        backends._entry_points.cache_clear()
