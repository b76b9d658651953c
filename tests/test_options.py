"""Model options: KEY=VALUE parsing, the canonical form, the cache key, and the layers'
precedence (question > saved prompt > alias > settings)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pizzagpt_magic import api, options
from pizzagpt_magic.backends import resolve
from pizzagpt_magic.errors import ConfigurationError, OptionError
from pizzagpt_magic.options import merge, parse_option, parse_options, settle

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)


@given(keys, json_values)
def test_any_json_value_round_trips_through_key_equals_value(key, value):
    text = f"{key}={json.dumps(value)}"
    parsed_key, parsed = parse_option(text)
    assert parsed_key == key
    assert parsed == value and type(parsed) is type(value)


@given(keys, st.text())
def test_a_value_that_is_not_json_is_text(key, text):
    try:
        json.loads(text)
    except ValueError:
        assert parse_option(f"{key}={text}") == (key, text)


def test_values_read_as_json_where_they_can():
    assert parse_options(
        ["top_p=0.2", "logprobs=true", "seed=null", 'stop=["\\n\\n"]', 'thinking={"type": "x"}']
    ) == {
        "top_p": 0.2,
        "logprobs": True,
        "seed": None,
        "stop": ["\n\n"],
        "thinking": {"type": "x"},
    }
    # Text as it is, JSON's non-standard constants included, and an = in the value.
    assert parse_options(["effort=high", "x=NaN", "y=a=b", "z="]) == {
        "effort": "high",
        "x": "NaN",
        "y": "a=b",
        "z": "",
    }
    assert parse_options(["seed=1", "seed=2"]) == {"seed": 2}  # the later one wins


@pytest.mark.parametrize("text", ["seed", "=7", "1seed=7", "se ed=7", ""])
def test_malformed_options_are_one_line_errors(text):
    with pytest.raises(OptionError) as info:
        parse_option(text)
    assert "KEY=VALUE" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("key", ["model", "messages", "stream", "tools", "stream_options"])
def test_owned_keys_are_refused(key):
    with pytest.raises(OptionError, match="set by pizzagpt_magic itself"):
        merge({key: 1})


@pytest.mark.parametrize(
    "layer",
    [
        {"api_key": "x"},
        {"Authorization": "Bearer x"},
        {"extra_headers": {"x-api-key": "x"}},
        {"extra_body": [{"access_token": "x"}]},
        {"apiKey": "x"},
    ],
)
def test_credentials_are_refused_at_any_level(layer):
    with pytest.raises(OptionError, match="names a credential"):
        merge(layer)


def test_keys_that_merely_look_alike_pass():
    assert merge({"max_tokens": 3, "top_k": 5, "keywords": ["a"], "monkey": 1})


@given(st.dictionaries(keys, json_values, max_size=5))
def test_canonical_form_sorts_keys_at_every_level(layer):
    layer = {k: v for k, v in layer.items() if v is not None and k not in options.OWNED}
    layer = {k: v for k, v in layer.items() if not options.names_credential(k)}
    try:
        merged = merge(layer)
    except OptionError:  # a nested key that names a credential
        return
    shuffled = dict(reversed(list(layer.items())))
    assert options.dumps(merge(shuffled)) == options.dumps(merged)
    assert json.dumps(merged) == json.dumps(merged, sort_keys=True)


def test_values_that_json_cannot_hold_are_refused():
    for value in (float("nan"), {1, 2}, object(), {1: "a"}):
        with pytest.raises(OptionError):
            merge({"x": value})
    assert merge({"x": (1, 2)}) == {"x": [1, 2]}


def test_the_cache_key_holds_options_in_canonical_form():
    backend = resolve("openai:m")
    messages = [{"role": "user", "content": "hi"}]

    def key(opts):
        return api.store_key(backend, messages, options=opts)

    # -O seed=1 and options={"seed": 1} are the same request, whatever the order of keys.
    assert key(parse_options(["seed=1", 'x={"b":1,"a":2}'])) == key(
        {"x": {"a": 2, "b": 1}, "seed": 1}
    )
    assert key({"seed": 1}) != key({"seed": 1.0})  # 1 and 1.0 are not
    assert key({"seed": 1}) != key({"seed": True})
    assert key({}) == key(None) == api.store_key(backend, messages)  # no options: the key of old
    assert api.parameters_of(None, None, options={"b": 1, "a": {"d": 1, "c": 2}}) == {
        "options": {"a": {"c": 2, "d": 1}, "b": 1}
    }
    assert list(api.parameters_of(None, None, options={"b": 1, "a": 2})["options"]) == ["a", "b"]


def test_settle_precedence_question_saved_alias_settings(tmp_path, monkeypatch):
    from pizzagpt_magic.prompts import set_alias

    monkeypatch.setenv("PIZZAGPT_CONFIG", str(tmp_path))
    set_alias("fast", "openai:m", {"temperature": 0.3, "seed": 1, "top_p": 0.5, "n": 2})
    backend = resolve("fast")
    assert backend.alias == "fast" and backend.id == "openai:m"
    settings = {"temperature": 0.9, "max_tokens": 50}
    saved = {"seed": 2, "stop": ["x"]}
    question = {"top_p": None, "n": 3}
    settled, temperature, max_tokens, merged = settle(backend, saved, question, settings=settings)
    assert temperature == 0.3  # the alias's, over the settings'
    assert max_tokens == 50  # the settings', none above it
    assert merged == {"n": 3, "seed": 2, "stop": ["x"]}  # top_p=null dropped the alias's
    assert settled.options == {} and settled == backend
    # The question's temperature wins over all.
    assert settle(backend, saved, {"temperature": 1}, settings=settings)[1] == 1.0
    # A settled backend keeps nothing to merge again.
    assert settle(settled, None)[3] == {}


def test_sampling_options_are_checked():
    backend = resolve("openai:m")
    for layer in ({"temperature": "hot"}, {"max_tokens": 0}, {"max_tokens": 2.5}):
        with pytest.raises(OptionError):
            settle(backend, layer)


def test_pizzagpt_and_provider_classes_refuse_options():
    with pytest.raises(ConfigurationError, match="Pizzagpt takes no model options \\(seed\\)"):
        settle(resolve("gpt-4o-mini"), {"seed": 7})
    from fake_provider import EchoProvider

    from pizzagpt_magic.backends import provider_of

    with pytest.raises(ConfigurationError, match="takes no model options"):
        settle(provider_of(EchoProvider), {"seed": 7})
    # No options: nothing to refuse.
    assert settle(resolve("gpt-4o-mini"), {"seed": None})[3] == {}
