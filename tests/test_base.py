"""The g4f-style interface: format_prompt, FinishReason, the mixin and the generator base."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pizzagpt_magic import (
    AsyncGeneratorProvider,
    FinishReason,
    ModelNotFoundError,
    PromptError,
    ProviderModelMixin,
    format_prompt,
)


def g4f_format_prompt(messages, add_special_tokens=False, do_continue=False):
    """gpt4free's own function, as its helper module has it, for comparison."""
    if not add_special_tokens and len(messages) <= 1:
        return messages[0]["content"]
    formatted = "\n".join(
        [f"{message['role'].capitalize()}: {message['content']}" for message in messages]
    )
    if do_continue:
        return formatted
    return f"{formatted}\nAssistant:"


def test_documented_examples():
    assert format_prompt([{"role": "user", "content": "Hello, world!"}]) == "Hello, world!"
    two = [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}]
    assert format_prompt(two) == "System: Be brief\nUser: Hi\nAssistant:"
    three = two + [{"role": "assistant", "content": "Hello"}]
    assert format_prompt(three) == "System: Be brief\nUser: Hi\nAssistant: Hello\nAssistant:"
    assert format_prompt(two, do_continue=True) == "System: Be brief\nUser: Hi"
    assert format_prompt(two[1:], add_special_tokens=True) == "User: Hi\nAssistant:"


def test_one_message_is_unchanged_whatever_its_role():
    text = "  multi\nline: System: x\n"
    assert format_prompt([{"role": "system", "content": text}]) == text


def test_empty_message_list_is_a_clear_error():
    with pytest.raises(PromptError, match="empty message list"):
        format_prompt([])
    assert issubclass(PromptError, ValueError)


messages_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "user", "assistant"]) | st.text(min_size=1),
            "content": st.text(),
        }
    ),
    min_size=1,
    max_size=6,
)


@given(messages_strategy, st.booleans(), st.booleans())
def test_matches_g4f_for_every_message_list(messages, special, do_continue):
    assert format_prompt(messages, special, do_continue) == g4f_format_prompt(
        messages, special, do_continue
    )


def test_finish_reason_joins_as_nothing():
    stop = FinishReason("stop")
    assert stop.reason == "stop"
    assert str(stop) == ""
    assert "".join(str(c) for c in ["a", "b", stop]) == "ab"
    assert stop == FinishReason("stop") and stop != FinishReason("length")
    assert repr(stop) == "FinishReason('stop')"


class Models(ProviderModelMixin):
    default_model = "small"
    models = ["small", "large"]
    model_aliases = {"big": "large"}


class NoModels(ProviderModelMixin):
    default_model = "only"


def test_get_model_resolves_defaults_and_aliases():
    assert Models.get_model("") == "small"
    assert Models.get_model(None) == "small"
    assert Models.get_model("big") == "large"
    assert Models.get_model("large") == "large"
    assert NoModels.get_models() == ["only"]
    assert Models.get_models() == ["small", "large"]


def test_unknown_model_names_provider_and_valid_models():
    with pytest.raises(ModelNotFoundError) as info:
        Models.get_model("huge")
    message = str(info.value)
    assert "'huge'" in message and "Models" in message and "small, large" in message
    assert isinstance(info.value, ValueError)


class Echo(AsyncGeneratorProvider):
    @classmethod
    async def create_async_generator(cls, model, messages, proxy=None, **kwargs):
        for word in format_prompt(messages).split():
            await asyncio.sleep(0)
            yield word
        yield FinishReason("stop")


MESSAGES = [{"role": "user", "content": "one two three"}]


def test_awaited_then_iterated_as_gpt4free_examples_do():
    async def main():
        generator = await Echo.create_async_generator(model="x", messages=MESSAGES)
        return [chunk async for chunk in generator]

    assert asyncio.run(main()) == ["one", "two", "three", FinishReason("stop")]


def test_iterated_directly():
    async def main():
        return [c async for c in Echo.create_async_generator("x", MESSAGES)]

    assert asyncio.run(main())[-1] == FinishReason("stop")


def test_create_async_joins_text():
    assert asyncio.run(Echo.create_async("x", MESSAGES)) == "onetwothree"


def test_create_completion_outside_and_inside_a_running_loop():
    assert "".join(map(str, Echo.create_completion("x", MESSAGES))) == "onetwothree"

    async def inside():
        return "".join(map(str, Echo.create_completion("x", MESSAGES)))

    assert asyncio.run(inside()) == "onetwothree"


def test_generator_can_be_closed_early():
    async def main():
        generator = Echo.create_async_generator("x", MESSAGES)
        first = await generator.__anext__()
        await generator.aclose()
        with pytest.raises(StopAsyncIteration):
            await generator.__anext__()
        return first

    assert asyncio.run(main()) == "one"
