"""``df.pizza.agg(question)``: one answer about all the rows, as a tree of questions.

The rows, each shown with the template (``{row}`` by default), are packed in order into chunks
that fit in one prompt (``max_prompt_chars`` less the system message and the question's frame).
Each chunk is asked the question about its rows. While more than one answer remains, the answers
are grouped ``fan_in`` at a time and each group asked to combine them; each level is one batch
through the engine, at the batch's concurrency, so it is deduplicated, cached and resumable like
any other. A partial answer is asked to stay under ``slot`` characters, and is cut to that size in
the combining prompt, so the whole tree (levels, chunks, requests) is known before anything is
sent: ``plan_tree`` gives it, and ``estimate`` reports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import PromptError
from ..interpolate import _cut

__all__ = ["Aggregate", "TreePlan", "aggregate", "chunk_prompt", "combine_prompt", "plan_tree"]

#: The fewest partial answers a combining question takes.
MIN_FAN_IN = 2
#: The most: more would make each partial answer too short to say anything.
MAX_FAN_IN = 16
#: The longest a partial answer may be, in characters.
MAX_SLOT = 4000

CHUNK_FRAME = (
    "{question}\n\n"
    "Answer from these {count} rows (rows {first} to {last} of {total}); they are part of a "
    "larger table whose other parts are read separately. Keep the answer under {slot} "
    "characters.\n\n{rows}"
)
COMBINE_FRAME = (
    "{question}\n\n"
    "The {total} rows were read in parts; below are the answers for {count} of those parts "
    "(rows {first} to {last}). Combine them into one answer to the question about all of "
    "these rows{limit}.\n\n{answers}"
)


@dataclass
class TreePlan:
    """The shape of an ``agg`` tree: the rows of each first-level chunk (``(start, stop)``
    ranges), the combining fan-in, and the number of questions at each level."""

    chunks: list[tuple[int, int]]
    fan_in: int
    slot: int
    levels: list[int] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """Questions asked in all (before the cache and deduplication)."""
        return sum(self.levels)


def plan_tree(sizes: list[int], room: int, frame: int) -> TreePlan:
    """The tree for rows of ``sizes`` characters (each with its newline) when a prompt has
    ``room`` characters, ``frame`` of them taken by the question and its wording."""
    available = room - frame
    longest = max(sizes, default=0)
    if available < max(longest, 1):
        raise PromptError(
            f"agg: a prompt has {max(available, 0):,} characters for rows after the question "
            f"and the system message (max_prompt_chars={room:,}), and the longest row takes "
            f"{longest:,}; raise max_prompt_chars or show less of each row (template=)"
        )
    chunks: list[tuple[int, int]] = []
    start, used = 0, 0
    for number, size in enumerate(sizes):
        if number > start and used + size > available:
            chunks.append((start, number))
            start, used = number, 0
        used += size
    if sizes:
        chunks.append((start, len(sizes)))
    # A partial answer gets a slot such that fan_in of them fit in a combining prompt.
    slot = min(MAX_SLOT, max(1, available // MAX_FAN_IN), max(1, available // MIN_FAN_IN))
    slot = max(slot, min(MAX_SLOT, available // MIN_FAN_IN))
    fan_in = max(MIN_FAN_IN, min(MAX_FAN_IN, available // (slot + 8)))
    levels = [len(chunks)]
    while levels[-1] > 1:
        levels.append(math.ceil(levels[-1] / fan_in))
    return TreePlan(chunks, fan_in, slot, levels)
