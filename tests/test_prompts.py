"""Saved prompts and model aliases: their TOML files (written, read, edited into something
invalid), the Python API taking them, and the command line."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pizzagpt_magic import ask, ask_many, prompts, saved
from pizzagpt_magic.backends import resolve
from pizzagpt_magic.cli import main
from pizzagpt_magic.errors import ConfigurationError, InterpolationError, ModelNotFoundError
from pizzagpt_magic.prompts import SavedPrompt, load_prompt, save_prompt, set_alias


@pytest.fixture
def config(tmp_path, monkeypatch):
    folder = tmp_path / "config"
    monkeypatch.setenv("PIZZAGPT_CONFIG", str(folder))
    return folder


@pytest.fixture
def store(tmp_path, monkeypatch):
    from pizzagpt_magic import store

    monkeypatch.setenv("PIZZAGPT_STORE", str(tmp_path / "store.sqlite3"))
    yield
    store.forget_stores()


def test_a_saved_prompt_is_a_readable_toml_file(config):
    prompt = SavedPrompt(
        "tsum",
        "Summarise {text} in {n} words.\n\n{input}\n",
        model="emu:emu-mini",
        system="Be brief.",
        format="json",
        concurrency=4,
        options={"temperature": 0.2, "max_tokens": 30, "seed": 7, "stop": ["\n\n"]},
    )
    path = save_prompt(prompt)
    assert path == config / "prompts" / "tsum.toml"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# The saved prompt 'tsum'")
    assert 'prompt = """\nSummarise {text} in {n} words.\n\n{input}\n"""' in text
    assert "temperature = 0.2\nmax_tokens = 30\n" in text and "[options]\nseed = 7\n" in text
    assert load_prompt("tsum") == prompt


text_values = st.text(st.characters(exclude_categories=("Cs",)), min_size=1).filter(str.strip)


@settings(max_examples=60, deadline=None)
@given(prompt=text_values, system=st.none() | st.text(st.characters(exclude_categories=("Cs",))))
def test_any_question_reads_back_as_it_was_saved(tmp_path_factory, prompt, system):
    folder = tmp_path_factory.mktemp("c")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIZZAGPT_CONFIG", str(folder))
        saved_prompt = SavedPrompt("p", prompt, system=system)
        save_prompt(saved_prompt)
        assert load_prompt("p") == saved_prompt  # "\r\n" included: byte for byte


def test_a_null_option_is_not_saved(config):
    save_prompt(SavedPrompt("p", "hi", options={"seed": None, "x": {"y": None, "z": 1}}))
    assert load_prompt("p").options == {"x": {"z": 1}}


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ('prompt = "hi"\nformat = "yaml"\n', "format: must be one of"),
        ('prompt = "hi"\nconcurrency = 0\n', "concurrency: must be a whole number"),
        ('prompt = "hi"\ntemperature = "hot"\n', "temperature: must be a number"),
        ('prompt = "hi"\nmodle = "x"\n', "modle: unknown field"),
        ('system = "x"\n', "prompt: missing"),
        ("prompt = 3\n", "prompt: must be text, not a number"),
        ('prompt = "hi"\n[options]\napi_key = "sk-x"\n', "options: The option 'api_key' names"),
        ('prompt = "hi"\n[options]\nmodel = "x"\n', "options: The option 'model' is set by"),
        ('prompt = "hi"\n[options]\nmax_tokens = 3\n', "options.max_tokens: goes outside"),
        ('prompt = "hi"\n[options]\nwhen = 2024-01-01\n', "options: The option.when is a date"),
        ('prompt = "hi\n', "not valid TOML"),
    ],
)
def test_an_invalid_file_is_one_line_naming_file_and_field(config, content, field):
    path = config / "prompts" / "bad.toml"
    path.parent.mkdir(parents=True)
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        load_prompt("bad")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and field in message


def test_an_invalid_alias_file(config):
    config.mkdir()
    (config / "aliases.toml").write_text('[fast]\nmodel = "openai:m"\ntop_p = 1\n')
    with pytest.raises(ConfigurationError, match=r"aliases\.toml: fast\.top_p: unknown field"):
        resolve("fast")
    (config / "aliases.toml").write_text('fast = "openai:m"\n')
    with pytest.raises(ConfigurationError, match=r"aliases\.toml: fast: must be a table"):
        resolve("fast")
    # A model id never reads the alias file: PROVIDER:MODEL still works.
    assert resolve("openai:m").model == "m"


def test_names_and_credentials_are_checked_when_saving(config):
    with pytest.raises(ConfigurationError, match="cannot name a saved prompt"):
        save_prompt(SavedPrompt("../x", "hi"))
    with pytest.raises(ConfigurationError, match="names a credential"):
        save_prompt(SavedPrompt("p", "hi", options={"headers": {"Authorization": "Bearer x"}}))
    with pytest.raises(ConfigurationError, match="names a credential"):
        set_alias("fast", "openai:m", {"api_key": "sk-123"})
    with pytest.raises(ConfigurationError, match="cannot name an alias"):
        set_alias("a:b", "openai:m")
    set_alias("fast", "openai:m")
    with pytest.raises(ConfigurationError, match="is an alias itself"):
        set_alias("faster", "fast")
    assert not list((config / "prompts").glob("*")) if (config / "prompts").exists() else True
    assert "sk-123" not in (config / "aliases.toml").read_text()


def test_an_alias_file_edited_by_hand_is_read_again(config, monkeypatch):
    # The file is looked at again once a second at most: here, at every question.
    monkeypatch.setattr(prompts, "RECHECK_SECONDS", 0.0)
    set_alias("fast", "openai:a", {"seed": 1})
    assert resolve("fast").model == "a"
    path = config / "aliases.toml"
    path.write_text(path.read_text().replace('"openai:a"', '"openai:bb"'))
    assert resolve("fast").model == "bb" and resolve("fast").options == {"seed": 1}
    assert prompts.remove_alias("fast") and not prompts.remove_alias("fast")
    with pytest.raises(ModelNotFoundError):
        resolve("fast")  # a Pizzagpt model name again, and not one it serves


def test_input_and_placeholders():
    prompt = SavedPrompt("p", "Translate to {lang}:\n{input}")
    assert prompt.with_input("{x} hello") == "Translate to {lang}:\n{x} hello"
    with pytest.raises(InterpolationError, match="needs \\{input\\}") as info:
        prompt.with_input("")
    assert info.value.name == "input"
    assert SavedPrompt("p", "Be brief.").with_input("hi") == "Be brief.\n\nhi"
    assert SavedPrompt("p", "Literal {{input}}").with_input(None) == "Literal {{input}}"
    assert prompt.render({"lang": "French", "input": "{x} hello"}) == (
        "Translate to French:\n{x} hello"  # a value is never read again for references
    )
    with pytest.raises(InterpolationError, match="'lang'"):
        prompt.render({"input": "hi"})
    assert SavedPrompt("p", "Be brief.").fill(input="hi").render() == "Be brief.\n\nhi"


def test_the_api_takes_saved_prompts_and_aliases(config, endpoint, store):
    set_alias("emu-fast", "emu:emu-mini", {"temperature": 0.2, "seed": 1, "n": 1})
    save_prompt(
        SavedPrompt(
            "tsum",
            "Summarise {text}.",
            model="emu-fast",
            system="Be {tone}.",
            options={"seed": 2, "top_p": 0.5},
        )
    )
    answer = ask(
        saved("tsum").fill(tone="brief"),
        variables={"text": "the report"},
        options={"n": None},
        stream=False,
    )
    assert "Summarise the report." in answer
    body = endpoint.chat_requests[-1]["body"]
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["model"] == "emu-mini" and body["temperature"] == 0.2
    assert body["seed"] == 2 and body["top_p"] == 0.5 and "n" not in body
    # Same request again: the cache answers it, whether the options come from the saved prompt
    # or are given in another order.
    again = ask(
        "Summarise the report.",
        model="emu:emu-mini",
        system="Be brief.",
        temperature=0.2,
        options={"top_p": 0.5, "seed": 2},
        stream=False,
    )
    assert again == answer and endpoint.requests == 1
    ask("Summarise the report.", model="emu:emu-mini", options={"seed": 2.0}, stream=False)
    assert endpoint.requests == 2 and endpoint.chat_requests[-1]["raw"].count(b'"seed": 2.0')
    with pytest.raises(InterpolationError, match="'text'"):
        ask(saved("tsum"))
    assert endpoint.requests == 2  # nothing was sent
    from pizzagpt_magic.store import get_store

    record = get_store().records(1)[0]
    assert record["parameters"] == {"options": {"seed": 2.0}}


def test_ask_many_takes_saved_prompts(config, endpoint):
    save_prompt(SavedPrompt("rate", "Rate {review}.", model="emu:emu-mini", concurrency=2))
    answers = ask_many(
        [saved("rate").fill(review=r) for r in ("good", "bad", "fine")],
        progress=False,
        stream=False,
        cache=False,
    )
    assert [a.split("Rate ")[1][:4] for a in answers] == ["good", "bad.", "fine"]
    assert endpoint.max_in_flight <= 2  # the saved concurrency


def test_options_reach_the_body_and_pizzagpt_refuses_them(endpoint, emu):
    ask("hi", model="emu:emu-mini", options={"seed": 7, "stop": ["x"]}, stream=True, cache=False)
    body = endpoint.chat_requests[-1]["body"]
    assert body["seed"] == 7 and body["stop"] == ["x"] and body["stream"] is True
    with pytest.raises(ConfigurationError, match="Pizzagpt takes no model options"):
        ask("hi", options={"seed": 7})
    assert emu.requests == 0


def test_command_line_prompts_and_ask_t(config, endpoint, capsys):
    assert main(["prompts", "list"]) == 0
    assert "No saved prompts" in capsys.readouterr().out
    save_prompt(SavedPrompt("tsum", "Summarise {text}:\n{input}", model="emu:emu-mini"))
    assert main(["prompts", "list"]) == 0
    assert capsys.readouterr().out.split() == ["tsum", "emu:emu-mini", "Summarise", "{text}:"]
    assert main(["prompts", "path", "tsum"]) == 0
    assert capsys.readouterr().out.strip() == str(config / "prompts" / "tsum.toml")
    assert main(["prompts", "show", "tsum"]) == 0
    assert 'model = "emu:emu-mini"' in capsys.readouterr().out
    code = main(
        ["ask", "-t", "tsum", "--var", "text=the memo", "-O", "seed=7", "--no-stream", "go", "on"]
    )
    assert code == 0
    assert "> Summarise the memo:\n> go on" in capsys.readouterr().out
    body = endpoint.chat_requests[-1]["body"]
    assert body["seed"] == 7 and body["messages"][-1]["content"] == "Summarise the memo:\ngo on"
    assert main(["ask", "-t", "tsum", "x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'text'" in err
    assert main(["ask", "-t", "nope"]) == 1
    assert "No saved prompt named 'nope' (saved: tsum)" in capsys.readouterr().err
    assert main(["ask", "-O", "seed=7", "hi"]) == 1
    assert "Pizzagpt takes no model options" in capsys.readouterr().err
    assert main(["prompts", "rm", "tsum"]) == 0
    assert not (config / "prompts" / "tsum.toml").exists()
    assert main(["prompts", "rm", "tsum"]) == 1
    capsys.readouterr()


def test_the_command_line_takes_aliases(config, endpoint, capsys):
    set_alias("emu-fast", "emu:emu-mini", {"max_tokens": 3})
    assert main(["ask", "-m", "emu-fast", "--no-stream", "one two three four five"]) == 0
    assert endpoint.chat_requests[-1]["body"]["max_tokens"] == 3
    assert json.loads(endpoint.chat_requests[-1]["raw"])["model"] == "emu-mini"
    capsys.readouterr()


json_without_null = st.recursive(
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",))),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True).filter(
            lambda k: (
                k not in ("model", "messages", "stream", "tools", "temperature")
                and k != "max_tokens"
            )
        ),
        json_without_null,
        max_size=4,
    )
)
def test_options_without_nulls_read_back_from_the_file(tmp_path_factory, options):
    from pizzagpt_magic.errors import OptionError
    from pizzagpt_magic.options import dumps, merge

    try:
        canonical = merge(options)
    except OptionError:  # a key that names a credential, at some depth
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIZZAGPT_CONFIG", str(tmp_path_factory.mktemp("o")))
        save_prompt(SavedPrompt("p", "hi", options=canonical))
        # As JSON text: 1 and 1.0, true and 1 stay apart.
        assert dumps(load_prompt("p").options) == dumps(canonical)
