"""df.pizza and s.pizza in a real kernel against the emulator: each method, its dtypes and
index, deduplication, estimates, errors, and an interrupt followed by a rerun."""

from __future__ import annotations

import json
import time

import pytest
from kernel_helpers import Kernel, error_of, result_text, stderr_of

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def kernel(emulator, tmp_path_factory):
    store = tmp_path_factory.mktemp("frames") / "store.sqlite3"
    kernel = Kernel({"PIZZAGPT_URL": emulator.url, "PIZZAGPT_STORE": str(store)})
    messages = kernel.execute(
        "import sys\n%load_ext pizzagpt_magic\n%config PizzaMagics.progress = False\n"
        "'pandas' in sys.modules"
    )
    assert error_of(messages) is None, error_of(messages)
    assert result_text(messages) == "False"  # %load_ext did not import pandas
    setup = kernel.execute(
        "import pandas as pd\n"
        "df = pd.DataFrame({'review': [f'review {i}' for i in range(8)],\n"
        "                   'stars': list(range(8)), 'price': [i / 2 for i in range(8)]},\n"
        "                  index=[f'r{i}' for i in range(8)])\n"
        "type(df.pizza).__name__"
    )
    assert result_text(setup) == "'FramePizza'"
    yield kernel
    kernel.shutdown()


def value(kernel: Kernel, code: str) -> str:
    messages = kernel.execute(code)
    assert error_of(messages) is None, error_of(messages)
    return result_text(messages)


def echo(answer: dict[str, object]) -> str:
    """A row text the emulator answers with ``answer`` as JSON, whatever the question."""
    return f"[[echo]]{json.dumps(answer)}[[/echo]]"


def test_map_gives_a_string_series_aligned_on_a_shuffled_index(kernel, emulator):
    emulator.reset_stats()
    out = value(
        kernel,
        "shuffled = df.sample(frac=1, random_state=3)\n"
        "m = shuffled.pizza.map('[[echo]]{review} has {stars} stars at {price}[[/echo]]')\n"
        "(str(m.dtype), list(m.index) == list(shuffled.index),\n"
        " all(m[k] == f'review {i} has {i} stars at {i / 2}' for i, k in enumerate(df.index)),\n"
        " m.attrs['pizza'])",
    )
    assert out == "('string', True, True, {'rows': 8, 'requests': 8, 'cached': 0, 'failed': 0})"
    assert emulator.requests == 8


def test_map_on_a_series_uses_value_and_index(kernel):
    out = value(kernel, "df.review.pizza.map('[[echo]]{index}={value}[[/echo]]').tolist()[:2]")
    assert out == "['r0=review 0', 'r1=review 1']"


def test_map_asks_each_distinct_prompt_once(kernel, emulator):
    emulator.reset_stats()
    out = value(
        kernel,
        "rep = pd.DataFrame({'city': ['Rome', 'Oslo', 'Rome', 'Lima'] * 25})\n"
        "m = rep.pizza.map('Name a pizza from {city} (dedup test)')\n"
        "(m.nunique(), bool(m.notna().all()), m.attrs['pizza']['requests'])",
    )
    assert out == "(3, True, 3)"
    assert emulator.requests == 3


def test_filter_on_a_non_unique_index_asks_a_boolean(kernel, emulator):
    emulator.reset_stats()
    yes, no = echo({"answer": True}), echo({"answer": False})
    kernel.execute(
        f"dup = pd.DataFrame({{'text': ['late courier {yes}', 'nice crust {no}',\n"
        f"                            'cold, delivered late {yes}', 'bad sauce {no}',\n"
        f"                            'broken {echo({'answer': 'maybe'})}']}},\n"
        "                   index=[7, 7, 8, 8, 9])"
    )
    out = value(
        kernel,
        "kept = dup.pizza.filter('Is this about delivery? {text}')\n"
        "mask = dup.pizza.mask('Is this about delivery? {text}')\n"
        "(kept.index.tolist(), [t.split()[0] for t in kept.text], str(mask.dtype),\n"
        " mask.tolist())",
    )
    assert out == "([7, 8], ['late', 'cold,'], 'boolean', [True, False, True, False, <NA>])"
    asked = [q for q in emulator.questions if "Is this about delivery?" in q]
    assert asked and all('"type": "boolean"' in q for q in asked)  # asked as a boolean
    # The unusable answer was asked again once (the engine's repair); then it is <NA>. Only
    # it is asked again by the second call: a failure is not kept in the store.
    assert emulator.requests == (5 + 1) + 2


def test_classify_gives_exactly_the_labels_repairing_what_plainly_means_one(kernel, emulator):
    emulator.reset_stats()
    rows = [
        echo({"label": "positive"}),
        echo({"label": "Negative!"}),  # outside the labels, plainly one of them
        echo({"label": "neutral"}),  # outside the labels, none of them: <NA>
        echo({"label": "mixed"}),
        "[[fault:badjson;times=1]] a mixed review",  # broken once, repaired by asking again
    ]
    kernel.execute(f"moods = pd.Series({rows!r}, index=[3, 1, 2, 0, 4])")
    out = value(
        kernel,
        "c = moods.pizza.classify('Sentiment of {value}', ['positive', 'negative', 'mixed'])\n"
        "(str(c.dtype), list(c.cat.categories), c.index.tolist(), c.astype(object).tolist())",
    )
    assert " ".join(out.split()) == (
        "('category', ['positive', 'negative', 'mixed'], [3, 1, 2, 0, 4], "
        "['positive', 'negative', nan, 'mixed', 'mixed'])"
    )
    # The three answers outside the labels were asked again once each.
    assert emulator.requests == 5 + 3


def test_extract_gives_typed_columns_ready_to_join(kernel):
    rows = [
        echo({"city": "Rome", "year": 2021, "good": True}),
        echo({"city": "Oslo", "year": "soon", "good": False}),  # fails the schema twice
    ]
    kernel.execute(f"trips = pd.DataFrame({{'note': {rows!r}}}, index=['b', 'a'])")
    out = value(
        kernel,
        "x = trips.pizza.extract('Trip: {note}', 'city, year int, good bool')\n"
        "j = trips.join(x)\n"
        "(dict(x.dtypes.astype(str)), int(j.loc['b', 'year']), j.loc['b', 'city'],\n"
        " bool(j.loc['b', 'good']), bool(pd.isna(j.loc['a', 'year'])),\n"
        " j.loc['a', '_error'].split(':')[0], x.index.tolist())",
    )
    assert " ".join(out.split()) == (
        "({'city': 'string', 'year': 'Int64', 'good': 'boolean', '_error': 'string'}, "
        "2021, 'Rome', True, True, 'SchemaError', ['b', 'a'])"
    )


def test_a_missing_column_fails_in_one_line_before_anything_is_sent(kernel, emulator):
    emulator.reset_stats()
    messages = kernel.execute("df.pizza.map('Is {reveiw} positive?')")
    error = error_of(messages)
    assert error["ename"] == "InterpolationError"
    assert error["evalue"] == (
        "Column 'reveiw' in the template is not a column of the DataFrame; "
        "its columns are: review, stars, price"
    )
    assert emulator.requests == 0


def test_agg_reads_5000_rows_as_a_three_level_tree(kernel, emulator):
    emulator.reset_stats()
    kernel.execute(
        "big = pd.DataFrame({'review': [f'review {i}: crust {i % 7}' for i in range(5000)],\n"
        "                    'stars': [i % 5 for i in range(5000)]})\n"
        "question = 'What do the reviews say about the crust?'"
    )
    plan = value(kernel, "e = big.pizza.estimate('agg', question, max_prompt_chars=6000)\ne")
    levels = json.loads(value(kernel, "e.levels").replace("'", '"'))
    assert len(levels) == 3 and levels[-1] == 1 and emulator.requests == 0
    assert f"{sum(levels):,} requests to send" in plan
    out = value(
        kernel,
        "a = big.pizza.agg(question, max_prompt_chars=6000)\n"
        "(a.rows, a.chunks, a.levels, a.requests)",
    )
    assert out == f"(5000, {levels[0]}, {levels}, {sum(levels)})"
    assert emulator.requests == sum(levels)  # as the tree predicted
    assert all(len(q) <= 6000 for q in emulator.questions)
    assert "Read 5,000 rows in" in value(kernel, "repr(a)")
    # Everything is in the store now: the estimate counts it, and a rerun sends nothing.
    assert f"{sum(levels)} already answered, 0 requests" in value(
        kernel, "big.pizza.estimate('agg', question, max_prompt_chars=6000)"
    )
    value(kernel, "big.pizza.agg(question, max_prompt_chars=6000).requests")
    assert emulator.requests == sum(levels)


def test_estimate_sends_nothing_and_counts_exactly(kernel, emulator):
    kernel.execute(
        "est = pd.DataFrame({'n': [i % 10 for i in range(40)]})\n"
        "est.head(3).pizza.map('Estimate test {n}')"
    )
    emulator.reset_stats()
    out = value(
        kernel,
        "e = est.pizza.estimate('map', 'Estimate test {n}')\n"
        "(e.rows, e.distinct, e.cached, e.requests, e.input_tokens)",
    )
    assert out == "(40, 10, 3, 7, 27)"  # 7 prompts of 15 characters, 4 to a token
    out = value(
        kernel, "f = est.pizza.filter('Estimate test {n}', dry_run=True)\n(f.distinct, f.cached)"
    )
    assert out == "(10, 0)"
    assert emulator.requests == 0


def test_an_interrupt_keeps_what_arrived_and_a_rerun_sends_only_the_rest(kernel, emulator):
    emulator.reset_stats()
    emulator.latency = 0.2
    try:
        kernel.execute("slow = pd.DataFrame({'n': range(60)})")
        msg_id = kernel.submit("r = slow.pizza.map('Interrupt test {n}', concurrency=4)")
        deadline = time.monotonic() + 30
        while emulator.requests < 12 and time.monotonic() < deadline:
            time.sleep(0.02)
        kernel.manager.interrupt_kernel()
        messages = kernel.collect([msg_id], timeout=30)[msg_id]
        messages.append({"msg_type": "reply", "content": kernel.reply(msg_id)})
        assert error_of(messages)["ename"] == "KeyboardInterrupt"
        assert "Interrupted:" in stderr_of(messages) and "_pizza_batch" in stderr_of(messages)
    finally:
        emulator.latency = 0
    kept = int(value(kernel, "int(_pizza_batch.notna().sum())"))
    assert 0 < kept < 60
    assert value(kernel, "_pizza_batch.index.equals(slow.index)") == "True"
    emulator.reset_stats()
    stored = int(value(kernel, "slow.pizza.estimate('map', 'Interrupt test {n}').cached"))
    # The store holds what the variable holds, and at most the one answer whose recording the
    # interrupt itself cut short (KeyboardInterrupt can land between two statements).
    assert kept <= stored <= kept + 1
    out = value(
        kernel, "r = slow.pizza.map('Interrupt test {n}')\n(int(r.notna().sum()), r.attrs['pizza'])"
    )
    assert out == (
        f"(60, {{'rows': 60, 'requests': {60 - stored}, 'cached': {stored}, 'failed': 0}})"
    )
    assert emulator.requests == 60 - stored


def test_a_429_pauses_the_operation_and_every_row_is_answered(kernel, emulator):
    emulator.reset_stats()
    out = value(
        kernel,
        "import time\n"
        "t = pd.DataFrame({'n': range(12)})\n"
        "started = time.monotonic()\n"
        "r = t.pizza.map('429 test {n} [[fault:status=429;retry-after=0.5;times=1]]',\n"
        "                concurrency=4)\n"
        "(bool(r.notna().all()), time.monotonic() - started >= 0.5)",
    )
    assert out == "(True, True)"
    assert emulator.requests == 13


def test_the_accessor_and_each_share_a_cache_key(kernel, emulator):
    kernel.execute("shared = pd.DataFrame({'city': ['Bari', 'Pisa']})")
    emulator.reset_stats()
    value(kernel, "shared.pizza.map('A pizza from {city}? (shared test)').tolist()")
    assert emulator.requests == 2
    messages = kernel.execute(
        "%%pizza --each shared -o from_cell\nA pizza from {item.city}? (shared test)"
    )
    assert error_of(messages) is None
    assert emulator.requests == 2  # the cell found both answers in the store
    # With a schema too: the cell's typed batch and extract's columns are the same answers.
    messages = kernel.execute(
        "%%pizza --each shared --schema 'dough, minutes int' -o typed\nA pizza from {item.city}?"
    )
    assert error_of(messages) is None and emulator.requests == 4
    out = value(
        kernel,
        "x = shared.pizza.extract('A pizza from {city}?', 'dough, minutes int')\n"
        "(x.equals(typed), x.attrs['pizza']['requests'])",
    )
    assert out == "(True, 0)" and emulator.requests == 4
