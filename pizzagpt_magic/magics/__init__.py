"""``%pizza`` and ``%%pizza``: option parsing and configuration over the core.

Everything the magics do is done by the core modules (``chat``, ``interpolate``, ``render``,
``batch``, ``loop``); this package parses options, turns expected failures into one-line
``UsageError``s and returns an object to display. ``PizzaMagics`` (in ``pizza``) holds the
settings and the dispatch; each mode of ``%pizza`` is a module of its own.
"""

from __future__ import annotations

from .loading import ConfigWarning, load, unload
from .names import ANSWER_TEXT, BATCH_ANSWERS, CELL_ERRORS, FIGURES
from .parsing import keep_question_marks, split_options
from .pizza import PizzaMagics

__all__ = [
    "ANSWER_TEXT",
    "BATCH_ANSWERS",
    "CELL_ERRORS",
    "FIGURES",
    "ConfigWarning",
    "PizzaMagics",
    "keep_question_marks",
    "load",
    "unload",
    "split_options",
]
