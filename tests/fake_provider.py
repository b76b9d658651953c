"""gpt4free-style provider classes for the tests: found by import path, as ``-m`` finds them."""

from __future__ import annotations

import asyncio
from typing import Any


class FinishReason:
    """Not the package's own class: recognised by name and shape, as gpt4free's is."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Usage:
    def __init__(self, **counts: int) -> None:
        self.__dict__.update(counts)


class Reasoning:
    """A response object the package does not understand: never shown as text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return f"<thinking>{self.text}</thinking>"


class EchoProvider:
    """Streams the last message back, word by word, with the objects gpt4free yields."""

    default_model = "echo-1"
    supports_stream = True
    calls: list[dict[str, Any]] = []

    @classmethod
    async def create_async_generator(
        cls, model: str, messages: list[dict[str, Any]], **kwargs: Any
    ):
        cls.calls.append({"model": model, "messages": messages, **kwargs})
        yield Reasoning("secret plan")
        for word in f"[{model}] {messages[-1]['content']}".split(" "):
            await asyncio.sleep(0)
            yield word + " "
        yield Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7)
        yield FinishReason("stop")


class BrokenProvider:
    default_model = "broken"

    @classmethod
    async def create_async_generator(
        cls, model: str, messages: list[dict[str, Any]], **kwargs: Any
    ):
        yield "half an answer"
        raise RuntimeError("the upstream site changed")


class NotAProvider:
    pass
