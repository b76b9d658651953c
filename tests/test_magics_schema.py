"""%pizza --schema and %%pizza --each --schema in a fresh shell."""

from __future__ import annotations

import typing

import pytest

pytest.importorskip("jsonschema")

SPEC = "sentiment pos|neg|neu, score int: 1 to 5, reason"


def magics(shell):
    return shell.magics_manager.registry["PizzaMagics"]


def test_one_answer_with_a_spec(shell, emu):
    answer = shell.run_cell(f'%pizza --schema "{SPEC}" -o got I liked it, pos, 4 of 5').result
    assert shell.user_ns["got"] == {
        "sentiment": "pos",
        "score": 4,
        "reason": "I liked it, pos, 4 of 5",
    }
    bundle = answer._repr_mimebundle_()[0]
    assert "<table>" in bundle["text/html"] and "<code>sentiment</code>" in bundle["text/html"]
    assert bundle["application/json"]["score"] == 4
    assert '"sentiment": "pos"' in bundle["text/plain"]
    assert "JSON Schema" in emu.questions[-1]  # Pizzagpt: the schema in the prompt


def test_a_value_is_escaped_in_the_table(shell, emu):
    answer = shell.run_cell('%pizza --schema "note" <script>alert(1)</script>').result
    html = answer._repr_mimebundle_()[0]["text/html"]
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_schema_from_the_namespace(shell, emu):
    shell.user_ns["shape"] = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "size": {"type": "integer"}},
        "required": ["city", "size"],
    }
    shell.run_cell("%pizza --schema {shape} -o place Rome, 2800000 people")
    assert shell.user_ns["place"] == {"city": "Rome, 2800000 people", "size": 2800000}
    pydantic = pytest.importorskip("pydantic")

    class Fruit(pydantic.BaseModel):
        name: str
        colour: typing.Literal["red", "green", "yellow"]

    shell.user_ns["Fruit"] = Fruit
    shell.run_cell("%pizza --schema {Fruit} -o fruit a green fig")
    fruit = shell.user_ns["fruit"]
    assert isinstance(fruit, Fruit) and fruit.colour == "green"


def test_bad_schemas_fail_before_sending(shell, emu):
    shell.user_ns["number"] = 5
    for line, words in [
        ('%pizza --schema "a, b integer" hi', "field 2 ('b integer'): unknown type 'integer'"),
        ("%pizza --schema {nowhere} hi", "'nowhere'"),
        ("%pizza --schema {number} hi", "not int"),
        ("%config PizzaMagics.schema_retries = 9", ""),
    ]:
        result = shell.run_cell(line)
        if words:
            assert words in str(result.error_in_exec) and "--schema" in str(result.error_in_exec)
    assert magics(shell).schema_retries == 1
    assert emu.requests == 0


def test_an_answer_that_does_not_fit_keeps_its_text(shell, emu):
    magics(shell).schema_retries = 0
    result = shell.run_cell(f'%pizza --schema "{SPEC}" pos [[fault:badjson]]')
    message = str(result.error_in_exec)
    assert "does not fit the schema: field 'sentiment'" in message and "_pizza_answer" in message
    assert '"sentiment": 12345' in shell.user_ns["_pizza_answer"]
    magics(shell).schema_retries = 1
    assert shell.run_cell(f'%pizza --schema "{SPEC}" pos [[fault:badjson;times=1]]').success


def test_each_with_a_schema_gives_a_typed_frame(shell, emu):
    pd = pytest.importorskip("pandas")
    reviews = pd.DataFrame(
        {"text": ["great, pos 5", "bad, neg 1", "meh, neu 3", "great, pos 5"]},
        index=["a", "b", "c", "d"],
    )
    shell.user_ns["reviews"] = reviews
    summary = shell.run_cell(
        f'%%pizza --each reviews --schema "{SPEC}" -o out\nReview: {{item.text}}'
    ).result
    out = shell.user_ns["out"]
    assert list(out.index) == ["a", "b", "c", "d"]
    assert str(out["score"].dtype) == "Int64" and list(out["score"]) == [5, 1, 3, 5]
    assert list(out["sentiment"].cat.categories) == ["pos", "neg", "neu"]
    assert out["_error"].isna().all()
    assert emu.requests == 3  # the repeated review was asked once
    plain = summary._repr_mimebundle_()["text/plain"]
    assert plain.startswith("4 answers from gpt-4o-mini") and "score" in plain
    assert "<table" in summary._repr_mimebundle_()["text/html"]
    # a rerun is answered from memory
    shell.run_cell(f'%%pizza --each reviews --schema "{SPEC}" -o again\nReview: {{item.text}}')
    assert emu.requests == 3 and shell.user_ns["again"].equals(out)


def test_each_without_a_schema_is_deduplicated_too(shell, emu):
    shell.user_ns["xs"] = ["same", "same", "other", "same"]
    shell.run_cell("%%pizza --each xs -o out --concurrency 4\n{item}")
    assert emu.requests == 2 and shell.user_ns["out"][0] == shell.user_ns["out"][3]


def test_each_failures_are_rows_of_na(shell, emu):
    pytest.importorskip("pandas")
    magics(shell).schema_retries = 0
    shell.user_ns["xs"] = ["pos 1", "neg 2 [[fault:badjson]]", "neu 3"]
    result = shell.run_cell(f'%%pizza --each xs --schema "{SPEC}" -o out\n{{item}}')
    assert "1 of 3 prompts failed (#1: The answer does not fit" in str(result.error_in_exec)
    out = shell.user_ns["out"]
    assert out.loc[1].drop("_error").isna().all() and out.loc[1, "_error"].startswith("SchemaError")
    assert out.loc[2, "score"] == 3


def test_each_over_a_list_without_pandas_values(shell, emu, monkeypatch):
    from pizzagpt_magic.engine import assemble
    from pizzagpt_magic.errors import ConfigurationError

    def no_pandas():
        raise ConfigurationError("no pandas")

    monkeypatch.setattr(assemble, "_pandas", no_pandas)
    shell.user_ns["xs"] = ["pos 1", "neg 2"]
    summary = shell.run_cell(f'%%pizza --each xs --schema "{SPEC}" -o out\n{{item}}').result
    assert shell.user_ns["out"][1]["score"] == 2
    assert "[1]" in summary._repr_mimebundle_()["text/plain"]


def test_a_cell_and_a_method_call_share_their_keys(shell, emu, tmp_path, monkeypatch):
    from pizzagpt_magic import ask, ask_many
    from pizzagpt_magic import store as stores
    from pizzagpt_magic.engine import make_prompt

    path = str(tmp_path / "answers.sqlite3")
    monkeypatch.setenv("PIZZAGPT_STORE", path)
    stores.forget_stores()
    try:
        ask_many(["pos 1", "neg 2"], schema=SPEC, progress=False)
        ask("neu 3", schema=SPEC)
        assert emu.requests == 3
        shell.user_ns["xs"] = ["pos 1", "neg 2", "neu 3"]
        shell.run_cell(f'%%pizza --each xs --schema "{SPEC}" -o out\n{{item}}')
        shell.run_cell(f'%pizza --schema "{SPEC}" -o one neg 2')
        assert emu.requests == 3  # every answer came from the store
        assert shell.user_ns["one"] == {"sentiment": "neg", "score": 2, "reason": "neg 2"}
        assert make_prompt("neg 2", schema=SPEC).key in magics(shell).conversation.cache
    finally:
        stores.forget_stores()
