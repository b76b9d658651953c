"""``%pizza --models [PROVIDER]``: the models of every provider, or of one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from ..errors import PizzagptError
from ..render import Markup, SafeMarkdown, escape

if TYPE_CHECKING:
    from .pizza import PizzaMagics


__all__ = ["list_models"]


def list_models(magics: PizzaMagics, args: Any) -> SafeMarkdown:
    """Every provider's models (each endpoint asked in parallel), or one provider's."""
    from ..backends import PIZZAGPT, endpoints, list_providers
    from ..loop import run_sync

    try:
        table = endpoints(magics.endpoints)
        listed = run_sync(
            list_providers(args.models or None, magics.endpoints, args.proxy or magics.proxy)
        )
    except PizzagptError as exc:
        raise UsageError(f"--models: {exc}") from None
    parts: list[Any] = []
    plain = []
    for name, models in listed.items():
        where = "" if name == PIZZAGPT else f" ({escape(table[name].url)})"
        parts.append(Markup(f"<p><strong>{escape(name)}</strong>{where}</p>"))
        if isinstance(models, str):
            parts.append(Markup(f"<p><em>unreachable: {escape(models)}</em></p>"))
            plain.append(f"{name}: unreachable: {models}")
            continue
        ids = models
        items = "".join(
            f"<li><code>{escape(i)}</code>{' (default)' if i == magics.model else ''}</li>"
            for i in ids
        )
        parts.append(Markup(f"<ul>{items}</ul>" if ids else "<p><em>no models</em></p>"))
        plain.append(f"{name}: " + (", ".join(ids) or "no models"))
    return SafeMarkdown(parts, "\n".join(plain))
