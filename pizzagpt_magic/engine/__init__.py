"""The batch engine: every path that asks many questions goes through the same steps.

1. **prompts** (``Prompt``, ``make_prompt``): what is asked, with what changes its answer;
2. **keys** (``prompt_key``): the one cache key, of what changes the answer and nothing else;
3. **plan** (``make_plan``, ``Plan``): deduplicate by key, answer from the store, what is left;
4. **send** (``Single``, ``Jobs``, the ``Strategy`` interface, ``Pending``): results as they
   arrive;
5. **check** (``check``, ``Outcome``): parse and validate; a repair is a new pending prompt;
6. **record** (``Recorder``): each answer in the store the moment it is checked;
7. **assemble** (``answers_frame``, ``values_of``): back to the caller's order and types.

``Batch`` runs them. Callers build prompts and assemble results; none sends anything itself.
Nothing here imports IPython, and only ``assemble`` knows pandas (imported when used).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Prompt": "prompts",
    "make_prompt": "prompts",
    "prompt_key": "keys",
    "origin_of": "keys",
    "parameters_of": "keys",
    "Plan": "plan",
    "make_plan": "plan",
    "Pending": "send",
    "Strategy": "send",
    "fetch": "send",
    "Single": "send.single",
    "Jobs": "send.jobs",
    "Outcome": "check",
    "check": "check",
    "Recorder": "record",
    "Batch": "batch",
    "complete_prompt": "batch",
    "answers_frame": "assemble",
    "values_of": "assemble",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .assemble import answers_frame, values_of
    from .batch import Batch, complete_prompt
    from .check import Outcome, check
    from .keys import origin_of, parameters_of, prompt_key
    from .plan import Plan, make_plan
    from .prompts import Prompt, make_prompt
    from .record import Recorder
    from .send import Pending, Strategy, fetch
    from .send.jobs import Jobs
    from .send.single import Single


def __getattr__(name: str) -> Any:
    # Lazily, so that ``api`` can use ``keys`` while the steps that use ``api`` load later.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
