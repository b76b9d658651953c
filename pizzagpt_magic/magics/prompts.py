"""Saved prompts in ``%pizza``: ``--save NAME`` keeps a question and its settings, ``-t NAME``
asks it, ``--prompts`` lists them. The files themselves are ``pizzagpt_magic.prompts``'."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from ..errors import PizzagptError
from ..options import parse_options, sampling_layer
from ..render import Markup, SafeMarkdown, escape

if TYPE_CHECKING:
    from .pizza import PizzaMagics

__all__ = ["apply_template", "list_saved", "question_layer", "save_question"]

#: What is given at each run of a saved prompt, never saved with it.
_PER_RUN = (
    ("each", "--each"),
    ("output", "-o"),
    ("chat", "-c"),
    ("no_cache", "--no-cache"),
    ("insert", "--insert"),
    ("reset", "--reset"),
    ("fix", "--fix"),
    ("template", "-t"),
    ("no_log", "--no-log"),
    ("timeout", "--timeout"),
    ("proxy", "--proxy"),
    ("tools", "--tools"),
)


def question_layer(args: Any) -> dict[str, Any]:
    """The options given with this question: ``-O`` ones, then ``--temperature`` and
    ``--max-tokens`` (which win over ``-O`` ones of the same name)."""
    try:
        layer = parse_options(args.options) if args.options else {}
    except PizzagptError as exc:
        raise UsageError(str(exc)) from None
    layer.update(sampling_layer(args.temperature, args.max_tokens))
    return layer


def save_question(magics: PizzaMagics, args: Any, prompt: str) -> None:
    """``--save NAME``: keep the question, its placeholders unexpanded, with the settings
    given; nothing is asked. The settings are checked against the model they will go to."""
    from ..backends import resolve
    from ..options import canonical, settle
    from ..prompts import SavedPrompt, save_prompt

    for attribute, flag in _PER_RUN:
        if getattr(args, attribute):
            raise UsageError(f"{flag} is given with each run of a saved prompt, not saved with it")
    if not prompt:
        raise UsageError(
            "Nothing to save: give the question (%%pizza --save NAME, then the question in the "
            "cell body)"
        )
    layer = question_layer(args)
    schema = _saved_schema(magics, args.schema)
    try:
        settle(
            resolve(args.model or magics.model, magics.endpoints),
            layer,
            settings=magics._settings_layer(),
        )
        saved = SavedPrompt(
            args.save,
            prompt,
            model=args.model,
            system=args.system,
            format=args.format,
            concurrency=args.concurrency,
            options=canonical({k: v for k, v in layer.items() if v is not None}),
            schema=schema,
        )
        path = save_prompt(saved)
    except PizzagptError as exc:
        raise UsageError(str(exc)) from None
    print(f"Saved the prompt {args.save!r} in {path}; ask it with -t {args.save}")


def _saved_schema(magics: PizzaMagics, given: str | None) -> Any:
    """What ``--schema`` saves: a spec as it was given, or the JSON Schema that ``{name}``
    names (a Pydantic model's, for a model class). Checked first."""
    if given is None:
        return None
    schema = magics._schema(given)
    return schema.json_schema if _REFERENCE.fullmatch(given) else given


_REFERENCE = re.compile(r"\s*\{\s*([A-Za-z_][\w.]*)\s*\}\s*")


def apply_template(args: Any, prompt: str) -> str:
    """``-t NAME``: the saved prompt's question with this run's question as its ``{input}``;
    its settings fill the options not given with the run."""
    from ..prompts import load_prompt

    try:
        saved = load_prompt(args.template)
        text = saved.with_input(prompt)
    except PizzagptError as exc:
        raise UsageError(str(exc)) from None
    if not args.model:
        args.model = saved.model
    if args.system is None:
        args.system = saved.system
    if not args.format:
        args.format = saved.format
    if not args.concurrency:
        args.concurrency = saved.concurrency
    if args.schema is None:
        args.schema = saved.schema
    args.saved_options = saved.options
    return text


def list_saved(magics: PizzaMagics) -> SafeMarkdown:
    """``--prompts``: each saved prompt's name, model and first line."""
    from ..prompts import config_dir, list_prompts

    try:
        prompts = list_prompts()
    except PizzagptError as exc:
        raise UsageError(str(exc)) from None
    folder = config_dir() / "prompts"
    if not prompts:
        text = f"No saved prompts in {folder}; save one with %%pizza --save NAME"
        return SafeMarkdown([Markup(f"<p><em>{escape(text)}</em></p>")], text)
    rows = []
    plain = []
    for saved in prompts:
        model = saved.model or f"({magics.model})"
        first = saved.prompt.strip().splitlines()[0]
        if len(first) > 80:
            first = first[:79] + "…"
        rows.append(
            f"<tr><td><code>{escape(saved.name)}</code></td><td><code>{escape(model)}</code>"
            f"</td><td>{escape(first)}</td></tr>"
        )
        plain.append(f"{saved.name}  {model}  {first}")
    table = (
        "<table><thead><tr><th>name</th><th>model</th><th>question</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    where = f"<p><em>in {escape(str(folder))}</em></p>"
    return SafeMarkdown([Markup(table), Markup(where)], "\n".join(plain))
