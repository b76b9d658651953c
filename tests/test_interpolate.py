"""Interpolation rules and value formatting."""

from __future__ import annotations

import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pizzagpt_magic.errors import InterpolationError
from pizzagpt_magic.interpolate import describe_table, format_value, interpolate

NS = {
    "x": 41,
    "name": "Ada",
    "d": {"a": [1, 2], "key with": "v", "k-1": "dash"},
    "obj": types.SimpleNamespace(attr=types.SimpleNamespace(deep="bottom")),
    "rows": [10, 20, 30],
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{x} + 1", "41 + 1"),
        ("hi {name}!", "hi Ada!"),
        ("{obj.attr.deep}", "bottom"),
        ("{d[a][1]} {d['a'][0]} {d[\"a\"]}", "2 1 [1, 2]"),
        ("{d[k-1]}", "dash"),
        ("{rows[-1]}", "30"),
        ("{{x}}", "{x}"),
        ("{{{x}}}", "{41}"),
        ('{"a": {"b": 1}}', '{"a": {"b": 1}}'),
        ("def f(): return {1, 2}", "def f(): return {1, 2}"),
        ("{ x }", "{ x }"),
        ("{}", "{}"),
        ("}} stray", "}} stray"),
        ("{x:>5}", "{x:>5}"),
        ("{0}", "{0}"),
        ("unclosed {x", "unclosed {x"),
    ],
)
def test_rules(template, expected):
    assert interpolate(template, NS) == expected


def test_undefined_name_is_named():
    with pytest.raises(InterpolationError, match="'missing'") as info:
        interpolate("about {missing.attr}", NS)
    assert info.value.name == "missing"


def test_failing_lookup_says_which_step():
    with pytest.raises(InterpolationError, match=r"d\[zz\] failed \(KeyError"):
        interpolate("{d[zz]}", NS)
    with pytest.raises(InterpolationError, match="AttributeError"):
        interpolate("{obj.nope}", NS)


def test_substitution_is_one_pass():
    assert interpolate("{evil}", {"evil": "{x}", "x": 1}) == "{x}"


@given(st.text().filter(lambda t: "{" not in t and "}" not in t))
def test_text_without_braces_is_unchanged(text):
    assert interpolate(text, {}) == text


# JSON's own structure never puts two braces together ("{{"); its strings could, so the
# strings here hold no braces (the rule for "{{" in prompts is the documented escape).
BRACELESS = st.text(max_size=5).filter(lambda t: "{" not in t and "}" not in t)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | BRACELESS,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(BRACELESS, children, max_size=3)
        ),
        max_leaves=10,
    )
)
def test_json_passes_through(value):
    import json

    text = json.dumps(value)
    assert interpolate(text, {}) == text


def test_long_values_are_cut_with_a_marker():
    text = format_value("x" * 10_000, budget=100)
    assert len(text) == 100
    assert text.endswith("more characters cut]")
    assert format_value([1, 2]) == "[1, 2]"


def test_tables_are_described_within_budget():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"city": ["Rome", "Milan", "Pisa"] * 400, "pop": range(1200)})
    text = describe_table(frame, budget=600)
    assert len(text) <= 600
    assert "DataFrame: 1,200 rows × 2 columns" in text
    assert "city (" in text and "pop (int64)" in text
    assert "| index | city | pop |" in text and "| 0 | Rome | 0 |" in text
    assert "more rows" in text
    series = describe_table(frame["pop"], budget=300)
    assert series.startswith("Series 'pop': 1,200 rows") and len(series) <= 300
    assert interpolate("{frame}", {"frame": frame}).startswith("DataFrame:")


def test_wide_tables_list_some_columns():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({f"column_{i}": [i] for i in range(200)})
    text = describe_table(frame, budget=800)
    assert len(text) <= 800 and "more" in text and "column_0" in text


class _BadText:
    def __str__(self) -> str:
        raise RuntimeError("no text today")


class _BadRepr:
    def __repr__(self) -> str:
        raise ValueError("no repr either")


class _BadError(Exception):
    def __str__(self) -> str:
        raise TypeError("a broken exception")


class _WorseText:
    def __str__(self) -> str:
        raise _BadError


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (_BadText(), "RuntimeError: no text today"),
        (_BadRepr(), "ValueError: no repr either"),
        (_WorseText(), "_BadError"),
    ],
)
def test_a_value_whose_text_fails_is_one_line_naming_it(value, said):
    with pytest.raises(InterpolationError) as info:
        interpolate("Look at {thing}", {"thing": value})
    assert str(info.value) == f"Cannot put {{thing}} in the prompt: its text failed ({said})"
    assert info.value.name == "thing"


def test_the_magic_shows_a_failing_text_as_one_line(shell):
    from test_magics import failing

    shell.user_ns["thing"] = _BadText()
    message = failing(shell, "%pizza Look at {thing}")
    assert (
        message == "Cannot put {thing} in the prompt: its text failed (RuntimeError: no text today)"
    )
