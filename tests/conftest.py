"""Shared fixtures: the emulator on loopback, aioresponses on any aiohttp, fresh shells."""

from __future__ import annotations

import asyncio
import inspect
import os
import types
from collections.abc import Iterator

import aiohttp
import pytest
from aioresponses import aioresponses
from keys import API_KEY

# The store is off unless a test turns it on with a file of its own: the suite must neither
# read nor write the user's store (kernels and commands the tests start inherit this).
os.environ["PIZZAGPT_STORE"] = ""
# Request counts in the tests mean one request a distinct prompt, unless a test asks for packing
# (pack="auto", or PIZZAGPT_PACK set to "auto" or "" in its kernel): the package's default is
# "auto" (see test_packed.test_the_default_is_auto).
os.environ["PIZZAGPT_PACK"] = "1"

from pizzagpt_magic.emulator import EmulatorThread

# aioresponses 0.7.9 builds ClientResponse objects without the ``stream_writer`` argument that
# aiohttp 3.14 made required. A response class that supplies an idle writer lets the same tests
# run on every aiohttp the package supports; on older aiohttp it changes nothing.
_NEEDS_WRITER = "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters


class CompatResponse(aiohttp.ClientResponse):
    def __init__(self, method: str, url: object, **kwargs: object) -> None:
        if _NEEDS_WRITER:
            kwargs.setdefault("stream_writer", types.SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)  # type: ignore[arg-type]


class CompatAioresponses(aioresponses):
    def add(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        kwargs.setdefault("response_class", CompatResponse)
        super().add(*args, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with CompatAioresponses() as mock:
        yield mock


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorThread]:
    """One emulator on a free loopback port for the whole run (statistics reset per test)."""
    with EmulatorThread() as emu:
        yield emu


@pytest.fixture
def emu(emulator: EmulatorThread, monkeypatch: pytest.MonkeyPatch) -> EmulatorThread:
    """The shared emulator, with ``PIZZAGPT_URL`` pointing at it and fresh statistics."""
    emulator.reset_stats()
    monkeypatch.setenv("PIZZAGPT_URL", emulator.url)
    return emulator


@pytest.fixture(autouse=True)
def _quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries in tests wait milliseconds, not seconds (Retry-After still counts)."""
    from pizzagpt_magic.providers.anthropic import Anthropic
    from pizzagpt_magic.providers.openai import OpenAICompatible
    from pizzagpt_magic.providers.pizzagpt import Pizzagpt

    monkeypatch.setattr(Pizzagpt, "backoff_base", 0.01)
    monkeypatch.setattr(OpenAICompatible, "backoff_base", 0.01)
    monkeypatch.setattr(Anthropic, "backoff_base", 0.01)


def _current_loop() -> asyncio.AbstractEventLoop | None:
    local = getattr(asyncio.get_event_loop_policy(), "_local", None)
    return getattr(local, "_loop", None)


@pytest.fixture(autouse=True)
def _close_leftover_loop() -> Iterator[None]:
    """Close the loop a test leaves set as current.

    Once a loop has been nested, nest_asyncio2 (as in a kernel) makes ``asyncio.run`` reuse and
    keep the current loop instead of closing its own; tests must not hand that loop on.
    """
    before = _current_loop()
    yield
    after = _current_loop()
    if after is not None and after is not before and not after.is_running():
        if not after.is_closed():
            after.run_until_complete(after.shutdown_asyncgens())
            after.close()
        asyncio.set_event_loop(None)


@pytest.fixture(autouse=True, scope="session")
def _close_loops() -> Iterator[None]:
    yield
    from pizzagpt_magic.loop import close_private_loops

    close_private_loops()


@pytest.fixture(scope="session")
def keyed_emulator() -> Iterator[EmulatorThread]:
    """An emulator whose OpenAI-compatible routes want ``Authorization: Bearer API_KEY``."""
    with EmulatorThread(api_key=API_KEY) as emu:
        yield emu


@pytest.fixture
def endpoint(keyed_emulator: EmulatorThread, monkeypatch: pytest.MonkeyPatch) -> EmulatorThread:
    """The keyed emulator registered as the endpoint ``emu`` (key in ``$EMU_API_KEY``)."""
    from pizzagpt_magic import backends

    keyed_emulator.reset_stats()
    monkeypatch.setenv("EMU_API_KEY", API_KEY)
    monkeypatch.setitem(
        backends._registered,
        "emu",
        backends.Endpoint("emu", f"{keyed_emulator.url}/v1", "EMU_API_KEY"),
    )
    return keyed_emulator


@pytest.fixture
def claude(keyed_emulator: EmulatorThread, monkeypatch: pytest.MonkeyPatch) -> EmulatorThread:
    """The keyed emulator as the ``anthropic`` preset: ``$ANTHROPIC_BASE_URL`` points at it and
    ``$ANTHROPIC_API_KEY`` holds its key."""
    keyed_emulator.reset_stats()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", keyed_emulator.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    return keyed_emulator


@pytest.fixture
def shell(emu: EmulatorThread) -> Iterator[object]:
    """A fresh InteractiveShell with history off and the extension loaded."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    ip = InteractiveShell(config=config)
    ip.run_line_magic("load_ext", "pizzagpt_magic")
    yield ip
    ip.run_line_magic("unload_ext", "pizzagpt_magic")
    ip.cleanup()
    InteractiveShell.clear_instance()
