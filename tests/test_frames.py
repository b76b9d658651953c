"""df.pizza and s.pizza in-process: registration, row templates, the agg tree, estimates."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pizzagpt_magic  # noqa: F401  (registers the accessor)
from pizzagpt_magic import InterpolationError, PromptError
from pizzagpt_magic.frames.agg import combine_prompt, plan_tree
from pizzagpt_magic.frames.classify import match_label
from pizzagpt_magic.frames.template import RowTemplate
from pizzagpt_magic.interpolate import Row, batch_items, interpolate


def _python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_accessor_comes_with_pandas_imported_after_the_package():
    out = _python(
        """
        import sys, pizzagpt_magic
        before = "pandas" in sys.modules
        import pandas as pd
        print(before, type(pd.DataFrame({"a": [1]}).pizza).__name__,
              type(pd.Series([1]).pizza).__name__)
        """
    )
    assert out == "False FramePizza SeriesPizza"


def test_the_accessor_comes_with_pandas_imported_before_the_package():
    out = _python(
        """
        import pandas as pd, sys, pizzagpt_magic
        print(type(pd.DataFrame({"a": [1]}).pizza).__name__, pizzagpt_magic.frames.installed(),
              any(type(f).__name__ == "_PandasHook" for f in sys.meta_path))
        """
    )
    assert out == "FramePizza True False"


def test_load_ext_does_not_import_pandas_and_the_accessor_follows_it():
    out = _python(
        """
        import sys
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "pizzagpt_magic")
        print("pandas" in sys.modules)
        shell.run_cell("import pandas as pd; kind = type(pd.DataFrame({'a': [1]}).pizza).__name__")
        print(shell.user_ns["kind"])
        """
    )
    assert out == "False\nFramePizza"


def test_load_ext_after_pandas_gives_the_accessor_at_once():
    out = _python(
        """
        import pandas as pd
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "pizzagpt_magic")
        print(type(pd.DataFrame({"a": [1]}).pizza).__name__)
        """
    )
    assert out == "FramePizza"


def test_uninstall_takes_the_accessor_off_and_install_puts_it_back():
    out = _python(
        """
        import pandas as pd, pizzagpt_magic
        from pizzagpt_magic import frames
        frames.uninstall()
        gone = not any(hasattr(x, "pizza") for x in (pd.DataFrame({"a": [1]}), pd.Series([1])))
        frames.install()
        print(gone, type(pd.Series([1]).pizza).__name__)
        """
    )
    assert out == "True SeriesPizza"


FRAME = pd.DataFrame(
    {"review": ["good", "bad", "late"], "stars": [5, 1, 2], "price": [9.5, 7.0, 8.25]},
    index=["a", "b", "c"],
)


def test_templates_fill_columns_index_and_row():
    template = RowTemplate("{index}: {review} ({stars}★) | {row}", FRAME.columns)
    assert template.render(FRAME) == [
        "a: good (5★) | review: good; stars: 5; price: 9.5",
        "b: bad (1★) | review: bad; stars: 1; price: 7.0",
        "c: late (2★) | review: late; stars: 2; price: 8.25",
    ]
    assert RowTemplate("{{x}} {review}", FRAME.columns).render(FRAME)[0] == "{x} good"
    assert RowTemplate("no fields", FRAME.columns).render(FRAME) == ["no fields"] * 3
    assert RowTemplate("{row[stars]}", FRAME.columns).render(FRAME) == ["5", "1", "2"]
    spaced = pd.DataFrame({"unit price": [1.5, 2.0], "n": [1, 2]})
    assert RowTemplate("{row['unit price']} x {n}", spaced.columns).render(spaced) == [
        "1.5 x 1",
        "2.0 x 2",
    ]


def test_a_series_template_uses_value_index_and_its_name():
    series = FRAME["review"]
    assert RowTemplate("{index}={value}/{review}", None, series_name="review").render(series) == [
        "a=good/good",
        "b=bad/bad",
        "c=late/late",
    ]
    with pytest.raises(InterpolationError, match=r"\{stars\}.*\{value\} and \{index\}"):
        RowTemplate("{stars}", None, series_name="review")


def test_a_missing_column_is_named_with_the_columns():
    with pytest.raises(InterpolationError) as info:
        RowTemplate("Is {reveiw} positive?", FRAME.columns)
    message = str(info.value)
    assert message == (
        "Column 'reveiw' in the template is not a column of the DataFrame; "
        "its columns are: review, stars, price"
    )
    assert "\n" not in message and info.value.name == "reveiw"


def test_rows_give_the_prompts_of_each():
    """The accessor and %%pizza --each fill a row's values the same way, so the same row
    gives the same prompt (and cache key) in both."""
    frame = FRAME.assign(count=[1, 2, 3])  # int beside float: iterrows would make floats
    labels, rows = batch_items(frame)
    each = [
        interpolate("{item.review} {item.count} {index} | {item}", {"item": r, "index": i})
        for i, r in zip(labels, rows)
    ]
    accessor = RowTemplate("{review} {count} {index} | {row}", frame.columns).render(frame)
    assert each == accessor
    assert str(rows[0]) == "review: good; stars: 5; price: 9.5; count: 1"
    assert isinstance(rows[0], Row)


_text = st.text(alphabet=st.sampled_from("ab {}[].'_x0"), max_size=30)


@given(_text)
def test_templates_read_as_interpolate_reads_them(template):
    namespace = {"a": "A", "ab": "AB", "x": "X", "x0": "X0", "index": 7, "b": "B"}
    frame = pd.DataFrame({k: [v] for k, v in namespace.items() if k != "index"}, index=[7])
    try:
        expected = interpolate(template, namespace)
    except InterpolationError:
        expected = None
    try:
        got = RowTemplate(template, frame.columns).render(frame)[0]
    except InterpolationError:
        got = None
    if expected is not None and template.strip():
        assert got == expected


def test_the_tree_packs_rows_in_order_and_predicts_its_levels():
    plan = plan_tree([10] * 100, 100, 1000)
    assert plan.chunks[0] == (0, 10) and plan.chunks[-1] == (90, 100) and len(plan.chunks) == 10
    assert plan.levels[0] == 10 and plan.levels[-1] == 1
    assert all(
        plan.levels[i + 1] == -(-plan.levels[i] // plan.fan_in) for i in range(len(plan.levels) - 1)
    )
    assert plan.requests == sum(plan.levels)
    one = plan_tree([10] * 5, 100, 1000)
    assert one.levels == [1] and one.chunks == [(0, 5)]
    with pytest.raises(PromptError, match="longest row takes 500"):
        plan_tree([10, 500], 100, 1000)


def test_a_combining_prompt_cuts_each_partial_answer_to_its_slot():
    prompt = combine_prompt("Q?", ["x" * 500, "short"], (0, 20), 40, 100, last=False)
    assert "Part 1:\n" in prompt and "Part 2:\nshort" in prompt
    assert "more characters cut" in prompt and len(prompt) < 600
    assert "rows 1 to 20" in prompt and "under 100 characters" in prompt


def test_labels_are_matched_when_plainly_meant():
    labels = ["positive", "negative", "mixed feelings"]
    assert match_label('{"label": "Positive"}', labels) == "positive"
    assert match_label('```json\n{"label": "NEGATIVE."}\n```', labels) == "negative"
    assert match_label('"Mixed-Feelings"', labels) == "mixed feelings"
    assert match_label('{"label": "neutral"}', labels) is None
    assert match_label("I think it is positive", labels) is None


def test_unknown_options_fail_before_anything_is_sent(emu):
    with pytest.raises(TypeError, match="unexpected keyword argument temprature"):
        FRAME.pizza.map("{review}", temprature=0.2)
    assert emu.requests == 0


def test_bad_input_fails_in_one_line_before_anything_is_sent(emu):
    from pizzagpt_magic import SchemaSpecError

    frame = pd.DataFrame({"a": ["x" * 50, "y"]})
    with pytest.raises(
        PromptError, match=r"^The prompt of row 0 \(by position\) is 50 characters, "
    ):
        frame.pizza.map("{a}", max_prompt_chars=20)
    with pytest.raises(PromptError, match="is 80 characters with the system message"):
        frame.pizza.map("{a}", system="s" * 30, max_prompt_chars=20)
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    with pytest.raises(PromptError, match="is 57 characters with the history, over"):
        frame.pizza.map("{a}", history=history, max_prompt_chars=20)
    with pytest.raises(SchemaSpecError, match="unknown type 'spec'"):
        frame.pizza.extract("{a}", "bad spec ::")
    with pytest.raises(ValueError, match="at least two distinct labels"):
        frame.pizza.classify("{a}", ["only"])
    with pytest.raises(ValueError, match="unknown method 'sort'"):
        frame.pizza.estimate("sort", "{a}")
    assert emu.requests == 0


def test_empty_frames_give_empty_results(emu):
    empty = pd.DataFrame({"a": pd.Series([], dtype=str)})
    assert str(empty.pizza.map("{a}").dtype) == "string"
    assert empty.pizza.filter("{a}").empty
    assert list(empty.pizza.classify("{a}", ["x", "y"]).cat.categories) == ["x", "y"]
    assert list(empty.pizza.extract("{a}", "n int").columns) == ["n", "_error"]
    with pytest.raises(PromptError, match="no rows"):
        empty.pizza.agg("Anything?")
    assert emu.requests == 0


def test_history_goes_before_every_row(emu):
    history = [
        {"role": "user", "content": "Say it in Italian"},
        {"role": "assistant", "content": "Sì"},
    ]
    frame = pd.DataFrame({"a": ["one", "two"]})
    frame.pizza.map("[[echo]]{a}[[/echo]]", history=history, progress=False)
    assert len(emu.questions) == 2 and all("Say it in Italian" in q for q in emu.questions)


def test_a_progress_bar_counts_the_requests(emu, capsys):
    frame = pd.DataFrame({"n": [1, 2, 3, 1]})
    frame.pizza.map("Progress test {n}")
    err = capsys.readouterr().err
    assert "map: 100%" in err and "3/3" in err  # the distinct prompts sent
    frame.pizza.map("Progress test {n}", progress=False)
    assert capsys.readouterr().err == ""


def test_agg_on_a_series_reads_its_values(emu):
    series = pd.Series(["red", "green", "blue"], index=[9, 8, 7], name="colour")
    answer = series.pizza.agg("Which colour is warmest?", progress=False)
    assert (answer.rows, answer.chunks, answer.levels, answer.requests) == (3, 1, [1], 1)
    assert (
        emu.questions[-1]
        == "Which colour is warmest?\n\nAnswer from these 3 rows:\n\nred\ngreen\nblue"
    )
    assert str(answer) == answer.text and "Read 3 rows in one prompt; 1 request sent." in repr(
        answer
    )


def test_a_failed_agg_question_stops_the_tree_and_a_rerun_asks_only_the_rest(emu, tmp_path):
    from pizzagpt_magic import HTTPStatusError
    from pizzagpt_magic.store import Store

    store = Store(tmp_path / "store.sqlite3")
    rows = [f"row {i} " + "x" * 40 for i in range(30)]
    rows[17] += " [[fault:status=500;times=1]]"
    frame = pd.DataFrame({"text": rows})
    options = {"store": store, "max_prompt_chars": 600, "progress": False}
    plan = frame.pizza.estimate("agg", "Anything odd?", template="{text}", **options)
    assert len(plan.levels) >= 2 and plan.levels[0] >= 3
    with pytest.raises(HTTPStatusError):
        frame.pizza.agg("Anything odd?", template="{text}", **options)
    assert emu.requests == plan.levels[0]  # the first level only: one of its questions failed
    again = frame.pizza.estimate("agg", "Anything odd?", template="{text}", **options)
    assert (again.cached, again.requests) == (plan.levels[0] - 1, 1 + sum(plan.levels[1:]))
    answer = frame.pizza.agg("Anything odd?", template="{text}", **options)
    assert answer.requests == 1 + sum(plan.levels[1:]) and answer.rows == 30
    assert emu.requests == plan.levels[0] + 1 + sum(plan.levels[1:])
    store.close()


def test_an_aggregate_shows_through_the_safe_renderer():
    from pizzagpt_magic.frames.agg import Aggregate

    bundle = Aggregate(
        "**Late** <script>x()</script>", 5000, 40, [40, 5, 1], 46
    )._repr_mimebundle_()
    assert "<strong>Late</strong>" in bundle["text/html"] and "<script>" not in bundle["text/html"]
    footer = "Read 5,000 rows in 40 chunks, combined over 2 more levels; 46 requests sent."
    assert footer in bundle["text/html"] and bundle["text/plain"].endswith(footer)


def test_estimate_sends_nothing_and_counts_exactly(emu, tmp_path):
    from pizzagpt_magic.store import Store

    store = Store(tmp_path / "store.sqlite3")
    frame = pd.DataFrame({"text": [f"t{i % 4}" for i in range(12)]})
    found = frame.pizza.estimate("map", "Say {text}", store=store, pack=1)
    assert (found.rows, found.distinct, found.cached, found.requests) == (12, 4, 0, 4)
    packed = frame.pizza.estimate("map", "Say {text}", store=store, pack="auto")
    assert (packed.distinct, packed.cached, packed.requests) == (4, 0, 1)
    assert emu.requests == 0
    frame.head(2).pizza.map("Say {text}", store=store, progress=False, pack=1)
    assert emu.requests == 2
    found = frame.pizza.map("Say {text}", store=store, dry_run=True, pack=1)
    assert (found.distinct, found.cached, found.requests) == (4, 2, 2)
    assert found.input_tokens == 3  # "Say t2", "Say t3": 12 characters, 4 to a token
    assert emu.requests == 2
    assert "12 rows, 4 distinct prompts, 2 already answered, 2 requests" in str(found)
