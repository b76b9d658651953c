"""``%pizza --fix [N]``: the question about a cell's error, whose corrected cell opens below."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

if TYPE_CHECKING:
    from .pizza import PizzaMagics


__all__ = ["fix_question"]


def fix_question(magics: PizzaMagics, extra: str, args: Any) -> str:
    """The --fix question: the failing cell's code, its error, the instruction, and
    ``extra``; ``args.fix`` is the cell number (-1: the newest error)."""
    number: int | None = None if args.fix == -1 else args.fix
    errors = magics.cell_errors
    if not len(errors):
        raise UsageError("No error recorded yet: --fix asks about the newest error of a cell (Err)")
    try:
        error = errors[number if number is not None else -1]
    except KeyError as exc:
        raise UsageError(f"--fix {number}: {exc.args[0]}") from None
    count = number if number is not None and number > 0 else list(errors)[number or -1]
    inputs = magics.user_ns.get("In") or []
    source = inputs[count] if 0 < count < len(inputs) else ""
    if not source:
        raise UsageError(f"--fix: the source of cell {count} is not in In")
    question = magics.fix_prompt.format(source=source.rstrip("\n"), error=error)
    if extra:
        # The added text may use {references}; the cell and the error are sent as they are.
        question += "\n\n" + magics._render(extra, args)
    args.no_interpolate = True
    args.insert = True
    return question
