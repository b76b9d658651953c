"""What questions cost: prices, the cost of an answer, cache savings, estimates and limits."""

from __future__ import annotations

import json
import random
import socket
import sqlite3
from fractions import Fraction

import pytest
from IPython.core.error import UsageError
from test_magics import cell, failing, magics
from traitlets import TraitError

from pizzagpt_magic import api, cost, estimates
from pizzagpt_magic import store as stores
from pizzagpt_magic.batch import ask_many, estimate_many
from pizzagpt_magic.cli import main
from pizzagpt_magic.errors import BudgetExceededError, ConfigurationError
from pizzagpt_magic.loop import run_sync

#: A price table for the tests (USD per million tokens).
FIXTURE = {
    "emu:emu-mini": {"input": 0.15, "output": 0.6},
    "emu:emu-large": {"input": 2.5, "output": 10.0, "cached_input": 1.25, "cache_write": 3.125},
    "gpt-4o-mini": {"input": 0.1, "output": 0.4},
    "far:*": {"input": 3, "output": 15},
}

PROSE = [
    "The river ran quietly past the old mill, where nobody had worked for many years.",
    "She opened the window and listened to the rain falling on the garden below.",
    "Every morning the baker lit his ovens long before the sun came over the hills.",
    "A small boat drifted along the coast, its white sail catching the evening light.",
    "The library was warm and still, and the only sound was the turning of pages.",
    "Children ran across the square, chasing pigeons that rose and settled again.",
    "He wrote letters to his brother every week, though the replies came rarely.",
    "The train was late, so the travellers waited on the platform with their coffee.",
    "In the autumn the forest turned gold and red, and the paths filled with leaves.",
    "Her grandmother kept a notebook of recipes written in a careful, looping hand.",
    "The market opened at dawn, and farmers arrived with baskets of fresh vegetables.",
    "Snow covered the village overnight, and in the morning everything was silent.",
    "They walked along the beach, collecting shells and talking about the future.",
    "The museum had a room full of clocks, each one ticking at its own slow pace.",
    "After the storm the fishermen mended their nets and counted the damaged boats.",
    "A cat slept on the warm stones of the wall, ignoring the people passing by.",
    "The teacher asked the class to describe their favourite place in a few lines.",
    "Lanterns hung between the houses, swaying gently in the breeze of the night.",
    "The old bridge had been repaired many times, but it still creaked underfoot.",
    "On Sundays the family gathered for a long lunch that lasted into the evening.",
    "The mountain road wound upward through pine trees and patches of melting snow.",
    "A violinist played in the station, and a few commuters stopped to listen.",
    "The garden was overgrown, yet roses still bloomed along the crumbling fence.",
    "He repaired bicycles in a narrow shop that smelled of oil and rubber.",
    "The festival brought music and dancing to the streets for three whole days.",
    "Clouds gathered over the harbour as the ferry pulled away from the pier.",
    "She planted tomatoes in the spring and gave most of the harvest to neighbours.",
    "The lighthouse keeper climbed the stairs each evening to light the great lamp.",
    "Rain had softened the fields, and the tractor left deep tracks in the mud.",
    "The bakery on the corner sold bread so good that people queued before opening.",
]


@pytest.fixture
def prices():
    cost.set_prices(FIXTURE)
    yield FIXTURE
    cost.set_prices(None)


@pytest.fixture
def store_file(tmp_path, monkeypatch):
    """A store of the test's own, in effect through $PIZZAGPT_STORE."""
    path = tmp_path / "store.sqlite3"
    monkeypatch.setenv("PIZZAGPT_STORE", str(path))
    stores.forget_stores()
    yield path
    stores.forget_stores()


def rows(path, sql):
    stores.forget_stores()  # every write on disk first
    with sqlite3.connect(path) as connection:
        return connection.execute(sql).fetchall()


def by_hand(name, usage):
    """A usage's cost worked out exactly, from the fixture's rates."""
    rate = {k: Fraction(str(v)) for k, v in FIXTURE[name].items()}
    read = usage.get("cache_read_input_tokens") or 0
    written = usage.get("cache_creation_input_tokens") or 0
    return (
        (usage["prompt_tokens"] - read - written) * rate["input"]
        + read * rate.get("cached_input", rate["input"])
        + written * rate.get("cache_write", rate["input"])
        + usage["completion_tokens"] * rate["output"]
    ) / 1_000_000


def test_fifty_usages_cost_their_hand_sum(prices):
    draw = random.Random(24)
    total, hand = 0.0, Fraction(0)
    for _ in range(50):
        name = draw.choice(["emu:emu-mini", "emu:emu-large", "gpt-4o-mini"])
        provider, _, model = name.rpartition(":")
        usage = {
            "prompt_tokens": draw.randint(0, 200_000),
            "completion_tokens": draw.randint(0, 16_000),
        }
        if draw.random() < 0.3:
            usage["cache_read_input_tokens"] = read = draw.randint(0, usage["prompt_tokens"])
            if draw.random() < 0.5:
                written = draw.randint(0, usage["prompt_tokens"] - read)
                usage["cache_creation_input_tokens"] = written
        # Every answer from a server of its own: the prices, not the address, decide.
        answered = cost.cost_of(usage, provider or "pizzagpt", model, "https://api.example.com")
        assert answered.pricing == "priced"
        total += answered.usd
        hand += by_hand(name, usage)
    assert abs(total - float(hand)) < 1e-9
    assert total > 1  # the sums are not trivially small


def test_local_free_and_unpriced_models_say_so():
    assert cost.pricing_for("ollama", "llama3.2", "http://localhost:11434/v1").status == "local"
    assert cost.pricing_for("lmstudio", "qwen", "http://192.0.2.7:1234/v1").status == "local"
    assert cost.pricing_for("emu", "emu-mini", "http://127.0.0.1:8765/v1").status == "local"
    assert cost.pricing_for("mine", "m", "http://[::1]:9000/v1").status == "local"
    # The emulator answering as Pizzagpt is on this machine too.
    assert cost.pricing_for("pizzagpt", "gpt-4o-mini", "http://127.0.0.1:8765").status == "local"
    assert cost.pricing_for("pizzagpt", "gpt-4o-mini", "https://www.pizzagpt.it").status == "free"
    local = cost.cost_of({"prompt_tokens": 9, "completion_tokens": 9}, "ollama", "llama3.2")
    assert (local.usd, local.label) == (0.0, "local")
    unknown = cost.cost_of(
        {"prompt_tokens": 9, "completion_tokens": 9},
        "fake_provider.EchoProvider",
        "echo-1",
        "fake_provider.EchoProvider",
    )
    assert unknown.usd is None and unknown.label == "unpriced"
    assert "$" not in unknown.label


def test_set_prices_win_over_everything_and_are_checked(prices):
    # Even over a local server's zero.
    assert cost.pricing_for("emu", "emu-mini", "http://127.0.0.1:1/v1").status == "priced"
    assert cost.pricing_for("far", "any-model", "https://far.example/v1").input == 3
    reported = cost.cost_of({"total_tokens": 12}, "emu", "emu-mini")
    assert reported.usd is None and reported.label == "usage not reported"
    for bad, message in [
        ({"x:y": {"input": 1}}, "needs 'output'"),
        ({"x:y": {"input": -1, "output": 1}}, "0 or more"),
        ({"x:y": {"input": 1, "output": 1, "per": 2}}, "unknown keys"),
        ({"x:y": 0.5}, "must be a dict"),
        ({"": {"input": 1, "output": 1}}, "provider:model"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            cost.set_prices(bad)


def test_prices_and_budget_are_settings(shell):
    pizza = magics(shell)
    with pytest.raises(TraitError, match="needs 'output'"):
        pizza.prices = {"emu:emu-mini": {"input": 1}}
    with pytest.raises(TraitError, match="0 or more"):
        pizza.budget = -1.0
    pizza.prices = {"emu:emu-mini": {"input": 1, "output": 2}}
    assert cost.pricing_for("emu", "emu-mini", "http://127.0.0.1:1/v1").output == 2
    shell.run_line_magic("unload_ext", "pizzagpt_magic")
    assert cost.pricing_for("emu", "emu-mini", "http://127.0.0.1:1/v1").status == "local"
    shell.run_line_magic("load_ext", "pizzagpt_magic")


def test_the_genai_prices_table_works_offline(monkeypatch):
    genai_prices = pytest.importorskip("genai_prices")

    def refuse(*args, **kwargs):
        raise AssertionError("genai-prices tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    cost.set_prices(None)
    pricing = cost.pricing_for("openai", "gpt-4o-mini", "https://api.openai.com/v1")
    assert (pricing.status, pricing.source) == ("priced", "genai-prices")
    usage = {"prompt_tokens": 1200, "completion_tokens": 300}
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1200, output_tokens=300),
        "gpt-4o-mini",
        provider_id="openai",
    )
    assert cost.cost_of(usage, "openai", "gpt-4o-mini", "https://api.openai.com/v1").usd == (
        pytest.approx(float(expected.total_price))
    )
    # An endpoint of its own name is looked up by its URL; a model unknown to the table is
    # unpriced, not free.
    assert cost.pricing_for("work", "gpt-4o-mini", "https://api.openai.com/v1").status == "priced"
    assert cost.pricing_for("openai", "no-such-model-x", "https://api.openai.com/v1").status == (
        "unpriced"
    )
    # Only the bundled data: nothing set up to fetch newer prices.
    from genai_prices import data_snapshot

    assert data_snapshot._custom_snapshot is None
    # Prices given win over the table.
    cost.set_prices({"openai:gpt-4o-mini": {"input": 1, "output": 1}})
    try:
        assert cost.cost_of(usage, "openai", "gpt-4o-mini").usd == pytest.approx(1500 / 1e6)
    finally:
        cost.set_prices(None)


def test_an_answer_costs_its_usage_and_a_cache_hit_saves_it(store_file, endpoint, prices, capsys):
    first = run_sync(api.complete("What is 6 times 7?", model="emu:emu-mini", stream=False))
    spent = (5 * 0.15 + 30 * 0.6) / 1e6
    assert first.cost == cost.Cost(pytest.approx(spent), "priced")
    assert first.metadata()["cost"] == {"usd": pytest.approx(spent), "pricing": "priced"}
    again = run_sync(api.complete("What is 6 times 7?", model="emu:emu-mini", stream=False))
    assert again.cached and endpoint.requests == 1
    assert again.cost.usd == 0 and again.cost.saved == pytest.approx(spent)
    assert again.metadata()["cost"]["saved"] == pytest.approx(spent)
    logged = rows(store_file, "SELECT cached, cost, cost_saved, pricing FROM log ORDER BY id")
    assert logged == [
        (0, pytest.approx(spent), None, "priced"),
        (1, 0.0, pytest.approx(spent), "priced"),
    ]
    assert main(["logs", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["cost"], r["cost_saved"], r["pricing"]) for r in records] == [
        (0.0, pytest.approx(spent), "priced"),
        (pytest.approx(spent), None, "priced"),
    ]
    assert main(["logs"]) == 0
    printed = capsys.readouterr().out
    assert "$0.000019" in printed and "from the cache: $0, saved $0.000019" in printed


def test_the_cell_footer_shows_the_cost_beside_the_tokens(shell, endpoint, prices):
    answer = cell(shell, "%pizza --no-stream -m emu:emu-mini What is 6 times 7?")
    html = answer._repr_mimebundle_()[0]["text/html"]
    assert "5 prompt + 30 answer tokens · $0.000019" in html
    assert answer.metadata["cost"]["pricing"] == "priced"
    again = cell(shell, "%pizza --no-stream -m emu:emu-mini What is 6 times 7?")
    assert "from the cache: $0, saved $0.000019" in again._repr_mimebundle_()[0]["text/html"]
    cost.set_prices({})  # the emulator is on this machine: without a price, local
    local = cell(shell, "%pizza --no-stream --no-cache -m emu:emu-large What is 6 times 8?")
    assert local.metadata["cost"] == {"usd": 0.0, "pricing": "local"}
    assert "answer tokens · local" in local._repr_mimebundle_()[0]["text/html"]


def test_usage_reports_cached_input_tokens(mocked, prices):
    from pizzagpt_magic.providers.openai import parse_completion

    _, _, usage = parse_completion(
        {
            "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": 100,
                "completion_tokens": 10,
                "prompt_tokens_details": {"cached_tokens": 60},
            },
        }
    )
    assert usage.as_dict()["cache_read_input_tokens"] == 60
    charged = cost.cost_of(usage.as_dict(), "emu", "emu-large")
    assert charged.usd == pytest.approx((40 * 2.5 + 60 * 1.25 + 10 * 10) / 1e6)
    # Anthropic's counts: tokens read from the prompt cache and written to it.
    both = {
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "cache_read_input_tokens": 50,
        "cache_creation_input_tokens": 30,
    }
    charged = cost.cost_of(both, "emu", "emu-large")
    assert charged.usd == pytest.approx((20 * 2.5 + 50 * 1.25 + 30 * 3.125 + 10 * 10) / 1e6)


# -- estimates ---------------------------------------------------------------------------------


def test_estimates_learn_characters_a_token_from_the_log(store_file, endpoint, prices):
    from pizzagpt_magic.backends import resolve

    backend = resolve("emu:emu-mini")
    fresh = [[{"role": "user", "content": p}] for p in PROSE[20:]]
    store = stores.get_store()
    before, _ = estimates.estimate_batch(backend, fresh, store=store)
    assert before.chars_per_token == estimates.CHARS_PER_TOKEN  # nothing logged yet
    assert before.output_from == "default 256"
    ask_many(PROSE[:20], model="emu:emu-mini", stream=False, progress=False)
    estimate, each = estimates.estimate_batch(backend, fresh, store=store)
    assert estimate.requests == 10 and estimate.stored == 0
    assert estimate.output_from == "log average"
    reported = run_sync(_usages(PROSE[20:]))
    actual = sum(u["prompt_tokens"] for u in reported)
    assert abs(estimate.input_tokens - actual) <= 0.15 * actual, (estimate.input_tokens, actual)
    assert estimate.usd == pytest.approx(sum(each), rel=0.02)  # each request rounds up alone
    # Those now in the store cost nothing more; repeats are one request.
    again, each = estimates.estimate_batch(backend, fresh + fresh[:3], store=store)
    assert (again.prompts, again.distinct, again.stored, again.requests) == (13, 10, 10, 0)
    assert again.usd == 0 and each == [0.0] * 13


async def _usages(prompts):
    out = []
    for prompt in prompts:
        completion = await api.complete(prompt, model="emu:emu-mini", stream=False)
        out.append(completion.usage)
    return out


def test_estimate_on_each_sends_nothing(store_file, shell, endpoint, prices):
    shell.user_ns["items"] = PROSE[:6] + PROSE[:2]
    cell(shell, "%pizza --no-stream --max-tokens 40 -m emu:emu-mini " + PROSE[0])
    estimate = cell(
        shell, "%%pizza --each items --estimate -m emu:emu-mini --max-tokens 40\n{item}"
    )
    assert endpoint.requests == 1
    assert (estimate.prompts, estimate.distinct, estimate.stored) == (8, 6, 1)
    assert estimate.requests == 5 and estimate.output_tokens == 5 * 40
    assert estimate.usd == pytest.approx(
        (estimate.input_tokens * 0.15 + estimate.output_tokens * 0.6) / 1e6
    )
    assert "5 requests to send of 8 prompts" in repr(estimate)
    assert rows(store_file, "SELECT count(*) FROM log") == [(1,)]  # the estimate left no trace
    assert "--each" in failing(shell, "%pizza --estimate hello")


# -- limits ------------------------------------------------------------------------------------


def test_a_budget_refuses_what_could_pass_it_counting_those_in_flight():
    budget = estimates.Budget(1.0)
    assert budget.reserve(0.4) and budget.reserve(0.4)  # each in flight at 0.44 (a tenth more)
    assert not budget.reserve(0.2)  # 0.88 in flight + 0.22 > 1
    assert not budget.reserve(0.01)  # once stopped, nothing more starts
    budget.settle(0.4, 0.3)
    budget.settle(0.4, None)  # unknown: counted as reserved
    assert budget.spent == pytest.approx(0.74) and budget.in_flight == pytest.approx(0)
    message = str(budget.error(3, 10))
    assert "$0.7400 spent of $1.0000" in message and "3 of 10 answers kept" in message
    assert estimates.Budget(1.0).reserve(1 / 1.1) and not estimates.Budget(1.0).reserve(0.95)
    both = estimates.Limits([estimates.Budget(5.0, what="a"), estimates.Budget(1.0, 0.9, what="b")])
    assert both.reserve(0.05) and not both.reserve(0.1)
    assert "Stopped at b" in str(both.error())


def test_ask_many_stops_at_max_cost_and_a_rerun_sends_the_rest(store_file, endpoint, prices):
    prompts = [f"Item {i}: {PROSE[i % len(PROSE)]}" for i in range(40)]
    options = {"model": "emu:emu-mini", "stream": False, "progress": False, "max_tokens": 20}
    limit = 10 * (20 * 0.15 + 20 * 0.6) / 1e6  # about ten answers' worth
    with pytest.raises(BudgetExceededError) as info:
        ask_many(prompts, max_cost=limit, concurrency=4, **options)
    error = info.value
    assert error.spent <= limit and error.limit == limit
    kept = [r for r in error.results if r is not None]
    assert 4 <= len(kept) <= 12 and endpoint.requests == len(kept)
    assert "\n" not in str(error) and f"{len(kept)} of 40 answers kept" in str(error)
    logged = rows(store_file, "SELECT total(cost), count(*) FROM log")
    assert logged[0][0] <= limit and logged[0][1] == len(kept)
    left = estimate_many(prompts, **options)
    assert (left.requests, left.stored) == (40 - len(kept), len(kept))
    answers = ask_many(prompts, **options)
    assert endpoint.requests == 40  # only the rest was sent
    assert [a for a, r in zip(answers, error.results) if r is not None] == kept
    with pytest.raises(ConfigurationError, match="unknown"):
        ask_many(["x"], model="fake_provider.EchoProvider", max_cost=1.0, progress=False)


def test_max_cost_on_each_keeps_the_answers(store_file, shell, endpoint, prices):
    shell.user_ns["items"] = [f"Item {i}: {PROSE[i % len(PROSE)]}" for i in range(30)]
    source = "%%pizza --each items -m emu:emu-mini --max-tokens 20 --max-cost {} -o out\n{{item}}"
    message = failing(shell, source.format(5 * (20 * 0.15 + 20 * 0.6) / 1e6))
    assert message.startswith("Stopped at --max-cost") and "answers are in 'out'" in message
    kept = [a for a in shell.user_ns["out"] if a is not None]
    assert 1 <= len(kept) <= 6 and endpoint.requests == len(kept)
    summary = cell(shell, source.format(1.0))
    assert endpoint.requests == 30 and None not in shell.user_ns["out"]
    assert "0 failed, $0.000" in repr(summary) and " spent" in repr(summary)


def test_the_kernel_budget_holds_across_cells(shell, endpoint, prices):
    pizza = magics(shell)
    each = (5 * 0.15 + 30 * 0.6) / 1e6  # the estimate of one question here
    pizza.budget = 3.5 * each
    ask = "%pizza --no-stream --max-tokens 30 -m emu:emu-mini What is 6 times {}?"
    answers = [cell(shell, ask.format(n)) for n in range(3)]
    assert pizza.spent == pytest.approx(sum(a.completion.cost.usd for a in answers))
    message = failing(shell, ask.format(9))
    assert message.startswith("Stopped at PizzaMagics.budget") and endpoint.requests == 3
    assert "spent of $0.000066" in message
    # What is kept costs nothing: it is still answered.
    assert cell(shell, ask.format(1)).cached
    message = failing(shell, "%pizza -m fake_provider.EchoProvider hello")
    assert "unknown (unpriced)" in message
    pizza.budget = None
    cell(shell, ask.format(9))
    assert endpoint.requests == 4
    with pytest.raises(UsageError):
        cell(shell, "%pizza --max-cost 1 hello")


# -- the batch engine --------------------------------------------------------------------------

SPEC = "sentiment pos|neg|neu, score int: 1 to 5, reason"


def test_a_gate_on_the_pending_prompts_stops_the_sending():
    import asyncio

    from pizzagpt_magic.engine import Pending

    async def main():
        pending = Pending(["a", "b", "c", "d"], gate=lambda prompt: prompt != "c")
        handed = [await pending.next(), await pending.next()]
        waiting = asyncio.ensure_future(pending.next())  # "c" is refused, "d" dropped
        await asyncio.sleep(0)
        assert pending.stopped and not waiting.done()  # a and b are still in flight
        pending.settle()
        pending.settle()
        assert await waiting is None and len(pending) == 0
        pending.add("e")  # a repair after the stop is not sent either
        return handed, await pending.next(), pending.take(5)

    assert asyncio.run(main()) == (["a", "b"], None, [])


def test_the_engine_prices_answers_and_counts_repairs(endpoint, prices, tmp_path):
    pytest.importorskip("jsonschema")
    from pizzagpt_magic.engine import Batch, Single, make_prompt

    store = stores.Store(tmp_path / "s.sqlite3")
    texts = ["great, pos [[fault:badjson;times=1]]", "fine, neu", "bad, neg", "fine, neu"]
    prompts = [make_prompt(t, schema=SPEC, model="emu:emu-mini") for t in texts]
    batch = Batch(prompts, store=store)
    estimate = batch.estimate()
    assert (estimate.prompts, estimate.distinct, estimate.requests) == (4, 3, 3)
    plain = Batch([make_prompt(t, model="emu:emu-mini") for t in texts], store=store).estimate()
    assert estimate.input_tokens > plain.input_tokens  # the schema is sent too, and counted
    run_sync(batch.run(Single(2)))
    assert endpoint.requests == 4  # three prompts and one repair
    answered = [o.completion.cost for o in batch.outcomes]
    assert all(c.pricing == "priced" and c.usd > 0 for c in answered)
    final = sum(c.usd for c in {id(c): c for c in answered}.values())
    assert batch.spent > final  # the answer that did not fit was paid for too
    again = Batch(prompts, store=store)
    run_sync(again.run(Single(2)))
    assert endpoint.requests == 4 and again.spent == 0
    hits = [o.completion.cost for o in again.outcomes]
    assert all(c.usd == 0 and c.saved > 0 for c in hits)
    store.close()


def test_a_typed_batch_stops_at_its_limit(store_file, shell, endpoint, prices):
    pytest.importorskip("jsonschema")
    pytest.importorskip("pandas")
    shell.user_ns["reviews"] = [f"review {i}: fine, neu, 3 stars" for i in range(30)]
    source = (
        "%%pizza --each reviews -m emu:emu-mini --max-tokens 40 --schema '{}' --max-cost {} "
        "-o typed\n{{item}}"
    )
    message = failing(shell, source.format(SPEC, 0.0002))
    assert message.startswith("Stopped at --max-cost") and "'typed'" in message
    kept = int(shell.user_ns["typed"]["_error"].isna().sum())
    assert 1 <= kept < 30 and endpoint.requests == kept
    cell(shell, source.format(SPEC, 1))
    assert endpoint.requests == 30 and shell.user_ns["typed"]["_error"].isna().all()


def test_the_kernel_budget_stops_a_batch_too(shell, endpoint, prices):
    pizza = magics(shell)
    shell.user_ns["items"] = [f"Item {i}: {PROSE[i]}" for i in range(12)]
    each = "%%pizza --each items -m emu:emu-mini --max-tokens 20 -o out\n{item}"
    pizza.budget = 4 * (20 * 0.15 + 20 * 0.6) / 1e6
    message = failing(shell, each)
    assert message.startswith("Stopped at PizzaMagics.budget") and "'out'" in message
    kept = sum(a is not None for a in shell.user_ns["out"])
    assert 1 <= kept <= 4 and endpoint.requests == kept
    assert 0 < pizza.spent <= pizza.budget
    spent = pizza.spent
    failing(shell, each)  # the budget is spent: nothing more goes out
    assert endpoint.requests == kept and pizza.spent == spent
    pizza.budget = None
    cell(shell, each)
    assert endpoint.requests == 12 and pizza.spent > spent


# -- the DataFrame operations ------------------------------------------------------------------


def test_the_dataframe_operations_estimate_costs_and_stop_at_a_limit(store_file, endpoint, prices):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"text": [f"Item {i}: {PROSE[i % len(PROSE)]}" for i in range(30)]})
    options = {"model": "emu:emu-mini", "max_tokens": 20, "progress": False}
    found = frame.pizza.estimate("map", "Summarise: {text}", **options)
    assert (found.requests, found.output_tokens, found.pricing) == (30, 600, "priced")
    assert found.usd == pytest.approx((found.input_tokens * 0.15 + 600 * 0.6) / 1e6)
    assert "600 output tokens; cost $0.000" in str(found)
    limit = 5 * (25 * 0.15 + 20 * 0.6) / 1e6
    with pytest.raises(BudgetExceededError) as info:
        frame.pizza.map("Summarise: {text}", max_cost=limit, **options)
    assert info.value.spent <= limit and "\n" not in str(info.value)
    kept = sum(not isinstance(r, BaseException) and r is not None for r in info.value.results)
    assert 1 <= kept <= 5 and endpoint.requests == kept
    left = frame.pizza.estimate("map", "Summarise: {text}", **options)
    assert (left.cached, left.requests) == (kept, 30 - kept)
    answers = frame.pizza.map("Summarise: {text}", **options)
    assert endpoint.requests == 30 and answers.notna().all()
    # An agg tree's estimate prices its upper levels too; an unpriced model has no limit.
    tree = frame.pizza.estimate("agg", "Anything odd?", max_prompt_chars=900, **options)
    assert len(tree.levels) >= 2 and tree.usd > 0 and tree.output_tokens == 20 * tree.requests
    with pytest.raises(ConfigurationError, match="unknown"):
        frame.pizza.map("{text}", model="fake_provider.EchoProvider", max_cost=1, progress=False)
