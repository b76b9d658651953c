"""``%pizza --tools``: the model looks at the kernel's variables through read-only tools.

This module decides which variables a question lets the model see (those it names, or all
with ``--tools all``, never IPython's own or names starting with ``_``) and checks that the
backend takes tools before anything is sent; the tools themselves and their loop are the
core's (``pizzagpt_magic.tools``, ``api.complete_with_tools``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from ..errors import PizzagptError

if TYPE_CHECKING:
    from ..tools import Toolbox
    from .pizza import PizzaMagics

__all__ = ["tool_scope", "toolbox_of"]


def tool_scope(magics: PizzaMagics, args: Any) -> str | None:
    """``"question"``, ``"all"`` or None (no tools) for these options and settings."""
    if getattr(args, "no_tools", False):
        return None
    if args.tools is not None:
        return str(args.tools)
    setting = magics.tools
    if setting is True:
        return "question"
    return str(setting).lower() if setting else None


def toolbox_of(magics: PizzaMagics, args: Any, template: str) -> Toolbox | None:
    """The toolbox of one question (None without tools); a ``UsageError`` when the backend
    takes none, before anything is sent."""
    scope = tool_scope(magics, args)
    if scope is None:
        return None
    from ..api import check_tools
    from ..tools import Toolbox, referenced_names

    try:
        check_tools(args.backend)
    except PizzagptError as exc:
        raise UsageError(f"--tools: {exc}") from None
    hidden = set(getattr(magics.ipython, "user_ns_hidden", ()))
    visible = None if scope == "all" else referenced_names(template)
    return Toolbox(magics.user_ns, visible, budget=magics.value_budget, hidden=hidden)
