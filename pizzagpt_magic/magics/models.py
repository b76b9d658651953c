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
    """Every provider's models (each endpoint asked in parallel), or one provider's.

    The providers that answered come first, then endpoints configured here that did not; the
    presets with no server running or no key set are summed up in one line at the end."""
    from ..backends import PIZZAGPT, PRESETS, endpoints, list_providers
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
    absent: dict[str, list[str]] = {}
    reachable = [(n, m) for n, m in listed.items() if not isinstance(m, str)]
    failed = [(n, m) for n, m in listed.items() if isinstance(m, str)]
    for name, models in reachable + failed:
        if isinstance(models, str) and not args.models and table[name] is PRESETS.get(name):
            why = _absence(name, models)
            if why is not None:
                absent.setdefault(why[0], []).append(why[1])
                continue
        where = "" if name == PIZZAGPT else f" ({escape(table[name].url)})"
        parts.append(Markup(f"<p><strong>{escape(name)}</strong>{where}</p>"))
        if isinstance(models, str):
            parts.append(Markup(f"<p><em>unreachable: {escape(models)}</em></p>"))
            plain.append(f"{name}: unreachable: {models}")
            continue
        items = "".join(
            f"<li><code>{escape(i)}</code>{' (default)' if i == magics.model else ''}</li>"
            for i in models
        )
        parts.append(Markup(f"<ul>{items}</ul>" if models else "<p><em>no models</em></p>"))
        plain.append(f"{name}: " + (", ".join(models) or "no models"))
    if absent:
        summary = "Not available: " + "; ".join(
            f"{why}: {', '.join(names)}" for why, names in sorted(absent.items())
        )
        parts.append(Markup(f"<p><em>{escape(summary)}</em></p>"))
        plain.append(summary)
    return SafeMarkdown(parts, "\n".join(plain))


def _absence(name: str, reason: str) -> tuple[str, str] | None:
    """A preset's reason for not answering, when it is the usual one (no key set, no server
    running), and how it is listed under it; else None."""
    import re

    key = re.search(r"environment variable (\w+)", reason)
    if "needs an API key" in reason and key:
        return "no API key set", f"{name} ({key.group(1)})"
    if "Nothing is listening" in reason:
        return "no server running", name
    return None
