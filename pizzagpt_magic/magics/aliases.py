"""Model aliases in ``%pizza``: ``--alias NAME=MODEL`` (with ``-O``, ``--temperature`` and
``--max-tokens``) saves one, ``--alias NAME=`` removes it, ``--aliases`` lists them. The file
itself is ``pizzagpt_magic.prompts``'."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from ..errors import PizzagptError
from ..render import Markup, SafeMarkdown, escape
from .prompts import question_layer

if TYPE_CHECKING:
    from .pizza import PizzaMagics

__all__ = ["list_aliases", "set_or_remove_alias"]


def _described(options: Any) -> str:
    from ..options import dumps

    return ", ".join(f"{key}={dumps(value)}" for key, value in options.items())


def set_or_remove_alias(magics: PizzaMagics, args: Any, prompt: str) -> None:
    from ..backends import resolve
    from ..options import settle
    from ..prompts import aliases_path, remove_alias, set_alias

    if prompt:
        raise UsageError("--alias takes no question")
    name, sep, model = args.alias.partition("=")
    name, model = name.strip(), model.strip()
    if not sep or not name:
        raise UsageError("--alias NAME=MODEL saves an alias; --alias NAME= removes it")
    layer = question_layer(args)
    try:
        if not model:
            if layer or args.model:
                raise UsageError(f"--alias {name}= removes the alias; it takes no options")
            if not remove_alias(name):
                raise UsageError(f"No alias named {name!r} (see %pizza --aliases)")
            print(f"Removed the alias {name!r} from {aliases_path()}")
            return
        if args.model:
            raise UsageError(f"The alias's model goes after '=': --alias {name}={args.model}")
        backend = resolve(model, magics.endpoints)
        if backend.alias is not None:
            raise UsageError(f"{model!r} is an alias itself; an alias names a model id")
        settle(backend, layer)
        alias = set_alias(name, model, layer)
    except PizzagptError as exc:
        raise UsageError(str(exc)) from None
    options = _described(alias.options)
    shown = f"{alias.model} ({options})" if options else alias.model
    print(f"Alias {name!r}: {shown}; use it with -m {name}")


def list_aliases(magics: PizzaMagics) -> SafeMarkdown:
    """``--aliases``: each alias, its model and its options."""
    from ..prompts import aliases, aliases_path

    try:
        table = aliases()
    except PizzagptError as exc:
        raise UsageError(str(exc)) from None
    if not table:
        text = f"No model aliases in {aliases_path()}; save one with %pizza --alias NAME=MODEL"
        return SafeMarkdown([Markup(f"<p><em>{escape(text)}</em></p>")], text)
    rows = []
    plain = []
    for alias in table.values():
        options = _described(alias.options)
        rows.append(
            f"<tr><td><code>{escape(alias.name)}</code></td><td><code>{escape(alias.model)}"
            f"</code></td><td><code>{escape(options)}</code></td></tr>"
        )
        plain.append(f"{alias.name} = {alias.model}{f'  {options}' if options else ''}")
    html = (
        "<table><thead><tr><th>alias</th><th>model</th><th>options</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return SafeMarkdown([Markup(html)], "\n".join(plain))
