"""The small Python API: ``ask`` and ``ask_async`` for one question.

Both build the conversation (an optional system message, earlier exchanges, the question), send
it through the provider on the shared keep-alive session and return the answer's text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import PromptError
from .providers.base import Messages
from .providers.pizzagpt import Pizzagpt

__all__ = ["ask", "ask_async", "build_messages"]


def build_messages(
    prompt: str,
    *,
    system: str | None = None,
    history: Iterable[Mapping[str, Any]] = (),
) -> Messages:
    """The message list for ``prompt``: the system message, then ``history``, then the prompt."""
    if not isinstance(prompt, str):
        raise PromptError(f"The prompt must be text, not {type(prompt).__name__}")
    if not prompt.strip():
        raise PromptError("The prompt is empty")
    messages: Messages = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.extend({"role": m["role"], "content": m["content"]} for m in history)
    messages.append({"role": "user", "content": prompt})
    return messages


async def ask_async(
    prompt: str,
    *,
    model: str | None = None,
    system: str | None = None,
    history: Iterable[Mapping[str, Any]] = (),
    proxy: str | None = None,
    timeout: float | None = None,
    connect_timeout: float | None = None,
    max_retries: int | None = None,
    base_url: str | None = None,
    provider: type[Pizzagpt] = Pizzagpt,
) -> str:
    """Ask one question and return the answer's text.

    ``history`` is earlier ``{"role", "content"}`` messages (a chat); ``timeout`` and
    ``connect_timeout`` are seconds; ``base_url`` overrides ``$PIZZAGPT_URL``.
    """
    messages = build_messages(prompt, system=system, history=history)
    return await provider.create_async(
        provider.get_model(model),
        messages,
        proxy=proxy,
        timeout=timeout,
        connect_timeout=connect_timeout,
        max_retries=max_retries,
        base_url=base_url,
    )


def ask(prompt: str, **options: Any) -> str:
    """Ask one question synchronously; safe inside a running loop such as a notebook's.

    Takes the options of ``ask_async``.
    """
    from .loop import run_sync

    return run_sync(ask_async(prompt, **options))
