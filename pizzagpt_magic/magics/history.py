"""``%pizza --history``: the conversation so far."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..render import Markup, SafeMarkdown, escape

if TYPE_CHECKING:
    from .pizza import PizzaMagics

__all__ = ["show_history"]


def show_history(magics: PizzaMagics) -> SafeMarkdown:
    exchanges = list(magics.conversation.exchanges)
    if not exchanges:
        empty = "The conversation is empty."
        return SafeMarkdown([Markup(f"<p><em>{empty}</em></p>")], empty)
    # Each prompt and answer is rendered on its own, never pasted into new Markdown: an
    # answer's unclosed fence cannot swallow the rest of the history.
    parts: list[Any] = []
    plain = []
    for number, exchange in enumerate(exchanges, 1):
        if number > 1:
            parts.append(Markup("<hr>"))
        parts += [
            Markup(f"<p><strong>{number}. You</strong></p><blockquote>"),
            exchange.prompt_text,
            Markup(f"</blockquote><p><strong>{escape(exchange.model)}</strong></p><div>"),
            exchange.answer,
            Markup("</div>"),
        ]
        plain.append(
            f"[{number}] You: {exchange.prompt_text}\n"
            f"[{number}] {exchange.model}: {exchange.answer}"
        )
    return SafeMarkdown(parts, "\n\n".join(plain))


# Whole option names only: the prompt splitter must know exactly which words are options.
