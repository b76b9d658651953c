"""Reading a ``%pizza`` line: where its options end and the question starts, and the input
transformer that keeps a question's final ``?`` from being taken for a help request."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["keep_question_marks", "split_options"]

_TOKEN = re.compile(r"""(?:"(?:\\.|[^"\\])*"?|'[^']*'?|\S)+""")
_NUMBER = re.compile(r"-\d|-\.\d")


def split_options(line: str, option_actions: dict[str, Any]) -> tuple[str, str]:
    """Split ``line`` into its leading options and the prompt after them, kept verbatim.

    Options end at the first word that is not an option (or at ``--``), so quotes and
    apostrophes in the prompt need no escaping.
    """
    end = 0
    expect_value = False
    for match in _TOKEN.finditer(line):
        token = match.group(0)
        if expect_value:
            expect_value = False
            end = match.end()
            continue
        if token == "--":
            return line[: match.start()], line[match.end() :].strip()
        if not token.startswith("-") or token == "-" or _NUMBER.match(token):
            break
        name, has_value = token.split("=", 1)[0], "=" in token
        action = option_actions.get(name)
        if action is None and not token.startswith("--"):
            action = option_actions.get(token[:2])
            has_value = has_value or len(token) > 2
        if action is not None and action.nargs != 0 and not has_value:
            # An optional value takes the next word only when it is one: a number for an
            # optional number (--fix [N], --log [N]), one of the choices for set choices
            # (--tools [all]); otherwise that word starts the question.
            expect_value = True
            if action.nargs == "?" and action.choices is not None:
                following = _TOKEN.search(line, match.end())
                expect_value = following is not None and following.group(0) in action.choices
            elif action.nargs == "?" and action.type is int:
                expect_value = _next_is_int(line, match.end())
        end = match.end()
    return line[:end], line[end:].strip()


def _next_is_int(line: str, position: int) -> bool:
    following = _TOKEN.search(line, position)
    return following is not None and re.fullmatch(r"-?\d+", following.group(0)) is not None


_QUESTION_LINE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<target>[A-Za-z_]\w*[ \t]*=[ \t]*)?%pizza[ \t]+(?P<rest>\S.*\?)[ \t]*$"
)


def keep_question_marks(lines: list[str]) -> list[str]:
    """Input transformer: ``%pizza is this right?`` asks, instead of asking for help on ``right``.

    IPython reads a line ending in ``?`` as a help request before magics are looked at; a
    question usually ends so. This rewrites such ``%pizza`` lines into the call IPython itself
    would make for them.
    """
    out = []
    for line in lines:
        match = _QUESTION_LINE.match(line.rstrip("\n"))
        if match is None:
            out.append(line)
            continue
        call = f"get_ipython().run_line_magic('pizza', {match['rest']!r})"
        newline = "\n" if line.endswith("\n") else ""
        out.append(f"{match['indent']}{match['target'] or ''}{call}{newline}")
    return out
