"""Schemas: the concise spec's grammar, JSON Schema dicts, Pydantic models, strict schemas,
validation."""

from __future__ import annotations

import datetime
import json
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pizzagpt_magic.errors import AnswerFormatError, SchemaError, SchemaSpecError
from pizzagpt_magic.schema import as_schema, is_model, parse_spec, strict_schema

jsonschema = pytest.importorskip("jsonschema")

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
labels = st.lists(st.from_regex(r"[A-Za-z0-9_.\-]{1,8}", fullmatch=True), min_size=2, max_size=5)
kinds = st.one_of(
    st.sampled_from(["", "str", "int", "float", "bool", "date"]),
    labels.filter(lambda ls: len(set(ls)) == len(ls)).map("|".join),
)
descriptions = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=",\n\r:"), max_size=30
)


@st.composite
def specs(draw):
    fields = draw(
        st.lists(
            st.tuples(names, kinds, descriptions), min_size=1, max_size=6, unique_by=lambda f: f[0]
        )
    )
    parts = []
    for name, kind, description in fields:
        part = f"{name} {kind}".rstrip()
        if description.strip():
            part += f": {description}"
        parts.append(part)
    return draw(st.sampled_from([", ", ",", "\n", " \n "])).join(parts), fields


@settings(max_examples=80, deadline=None)
@given(specs())
def test_any_spec_that_parses_is_a_json_schema_and_round_trips(case):
    spec, fields = case
    schema = parse_spec(spec)
    jsonschema.Draft202012Validator.check_schema(schema.json_schema)
    assert list(schema.json_schema["properties"]) == [f[0] for f in fields]
    assert schema.json_schema["required"] == [f[0] for f in fields]
    assert schema.json_schema["additionalProperties"] is False
    again = parse_spec(schema.spec())
    assert again.json_schema == schema.json_schema
    # a spec is already strict
    assert strict_schema(schema.json_schema) == schema.json_schema


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=60))
def test_any_text_parses_or_fails_on_one_line(text):
    try:
        schema = parse_spec(text)
    except SchemaSpecError as exc:
        assert "\n" not in str(exc)
    else:
        jsonschema.Draft202012Validator.check_schema(schema.json_schema)


def test_spec_grammar():
    schema = parse_spec("sentiment pos|neg|neu, score int: 1 to 5, reason")
    props = schema.json_schema["properties"]
    assert props == {
        "sentiment": {"type": "string", "enum": ["pos", "neg", "neu"]},
        "score": {"type": "integer", "description": "1 to 5"},
        "reason": {"type": "string"},
    }
    assert [c.kind for c in schema.columns] == ["labels", "int", "str"]
    multi = parse_spec("name\nbio: a short bio, in one sentence\nborn date\nok bool\nx float")
    assert multi.json_schema["properties"]["bio"]["description"] == "a short bio, in one sentence"
    assert multi.json_schema["properties"]["born"] == {"type": "string", "format": "date"}
    assert [c.kind for c in multi.columns] == ["str", "str", "date", "bool", "float"]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("", "names no field"),
        ("name, age integer", "field 2 ('age integer'): unknown type 'integer'"),
        ("a, a int", "named twice"),
        ("9lives int", "cannot name a field"),
        ("a x|x", "listed twice"),
        ("a b c", "NAME [TYPE]"),
        ("a pos|", "unknown type"),
    ],
)
def test_bad_specs_name_the_field(spec, words):
    with pytest.raises(SchemaSpecError, match=None) as info:
        parse_spec(spec)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_schema_dicts_and_other_values():
    schema = as_schema(
        {
            "title": "A person!",
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name"],
        }
    )
    assert schema.name == "A_person"
    strict = schema.strict
    assert strict["required"] == ["name", "age"] and strict["additionalProperties"] is False
    assert strict["properties"]["age"] == {"type": ["integer", "null"]}
    assert as_schema(dict(schema.json_schema)) is schema  # made once, validator compiled once
    assert as_schema("a, b int") is as_schema("a, b int")
    with pytest.raises(SchemaSpecError, match="not a JSON Schema"):
        as_schema({"type": "object", "properties": {"a": {"type": "nope"}}})
    with pytest.raises(SchemaSpecError, match="describes an object"):
        as_schema({"type": "integer"})
    with pytest.raises(SchemaSpecError, match="not int"):
        as_schema(5)
    assert as_schema(None) is None


def test_validation_errors_are_one_line_and_name_the_field():
    schema = as_schema("sentiment pos|neg|neu, score int: 1 to 5, born date")
    good = {"sentiment": "pos", "score": 4, "born": "2024-05-31"}
    assert schema.parse(json.dumps(good)) == good
    assert schema.parse("Sure!\n```json\n" + json.dumps(good) + "\n```") == good
    cases = [
        ({**good, "sentiment": "great"}, "sentiment", "is not one of"),
        ({**good, "score": "4"}, "score", "is not of type 'integer'"),
        ({"sentiment": "pos", "born": "2024-05-31"}, "score", "missing"),
        ({**good, "extra": 1}, "extra", "not a field"),
        ({**good, "born": "31 May"}, "born", "is not a 'date'"),
    ]
    for data, field, words in cases:
        with pytest.raises(SchemaError) as info:
            schema.parse(json.dumps(data))
        error = info.value
        assert error.field == field and words in str(error) and "\n" not in str(error)
        assert isinstance(error, AnswerFormatError) and error.text == json.dumps(data)
    with pytest.raises(SchemaError, match="not JSON"):
        schema.parse("I think it is positive.")


def test_pydantic_models():
    pydantic = pytest.importorskip("pydantic")

    class Kind(str, __import__("enum").Enum):
        fruit = "fruit"
        veg = "veg"

    class Item(pydantic.BaseModel):
        name: str
        kind: Kind
        size: typing.Literal["s", "m", "l"]
        price: float | None = None
        fresh: bool = True
        picked: datetime.date

        @pydantic.field_validator("name")
        @classmethod
        def no_shouting(cls, value: str) -> str:
            if value.isupper():
                raise ValueError("no shouting")
            return value

    assert is_model(Item) and not is_model(dict)
    schema = as_schema(Item)
    assert schema.name == "Item" and schema.model is Item
    assert [(c.name, c.kind) for c in schema.columns] == [
        ("name", "str"),
        ("kind", "labels"),
        ("size", "labels"),
        ("price", "float"),
        ("fresh", "bool"),
        ("picked", "date"),
    ]
    strict = schema.strict
    assert set(strict["required"]) == {"name", "kind", "size", "price", "fresh", "picked"}
    value = schema.parse('{"name": "fig", "kind": "fruit", "size": "s", "picked": "2024-09-01"}')
    assert isinstance(value, Item) and value.picked == datetime.date(2024, 9, 1)
    assert schema.as_data(value)["kind"] == "fruit"
    with pytest.raises(SchemaError, match="field 'name'.*no shouting"):
        schema.parse('{"name": "FIG", "kind": "fruit", "size": "s", "picked": "2024-09-01"}')
    with pytest.raises(SchemaError, match="field 'kind'"):
        schema.parse('{"name": "fig", "kind": "nut", "size": "s", "picked": "2024-09-01"}')


def test_instructions_and_response_format():
    schema = as_schema("a int")
    assert schema.response_format()["json_schema"]["strict"] is True
    text = schema.instructions()
    assert "JSON Schema" in text and json.dumps(schema.json_schema, indent=1) in text


def test_without_jsonschema_nothing_is_sent(emu, monkeypatch):
    import sys

    from pizzagpt_magic import ConfigurationError, ask
    from pizzagpt_magic import schema as schemas

    monkeypatch.setitem(sys.modules, "jsonschema", None)
    monkeypatch.setattr(schemas, "_cache", {})
    with pytest.raises(ConfigurationError, match=r"pip install 'pizzagpt-magic\[schema\]'"):
        ask("hi", schema="a, b int")
    assert emu.requests == 0
