"""``--answers PATH``, ``--answers-only`` and ``--refresh``: the answer file a cell reads and
writes (see ``pizzagpt_magic.answers``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from ..errors import PizzagptError

if TYPE_CHECKING:
    from .pizza import PizzaMagics

__all__ = ["set_answer_file", "using_answer_file"]


def _path(value: str) -> str:
    """``value`` made absolute against the kernel's working directory (the notebook's folder
    when Jupyter starts the kernel), so that a later ``%cd`` does not move the file."""
    return str(Path(os.path.expanduser(value)).absolute())


def set_answer_file(magics: PizzaMagics, args: Any) -> None:
    """``%pizza --answers PATH`` alone: the answer file of every later question."""
    if not args.answers.strip():
        magics.answers = None
        print("No answer file: answers come from the store and the network.")
        return None
    magics.answers = _path(args.answers)
    if args.answers_only:
        magics.answers_only = True
    mode = "read only" if magics.answers_only else "read first and written with every answer"
    print(f"Answer file {Path(magics.answers).name}: {mode}.")
    return None


def using_answer_file(magics: PizzaMagics, args: Any) -> Any:
    """The answer file in effect while a cell asks (a context manager)."""
    from .. import answers

    path = _path(args.answers) if args.answers else magics.answers
    only = True if (args.answers_only or magics.answers_only) else None
    try:
        settings = answers.settings_for(path, only=only, refresh=args.refresh)
    except PizzagptError as exc:
        raise UsageError(str(exc)) from None
    if settings is None and args.refresh:
        args.no_cache = True  # without an answer file, --refresh asks again as --no-cache does
    return answers.using(settings)
