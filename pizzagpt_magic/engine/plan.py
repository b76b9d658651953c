"""Planning: deduplicate prompts by key, answer what the store (or memory) already holds, and
say what is left to send. A dry run stops here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .check import Outcome, check

if TYPE_CHECKING:
    from ..api import Completion
    from .prompts import Prompt

__all__ = ["Plan", "make_plan"]


class Plan:
    """The prompts of a batch by key.

    ``keys`` is each position's key; ``first`` each key's first position and ``repeats`` the
    later ones of a key asked more than once (``positions`` gives them all); ``unique`` the
    first prompt of each key; ``answered`` the outcomes the store or memory gave; ``pending``
    the prompts to send, one a key.
    """

    __slots__ = ("answered", "first", "keys", "pending", "repeats", "unique")

    def __init__(self, prompts: Sequence[Prompt]) -> None:
        self.keys = [p.key for p in prompts]
        # Positions as ints, a list only for a key asked again: a batch of distinct prompts
        # holds no list a key (fewer objects for the garbage collector to walk).
        self.first: dict[str, int] = {}
        self.repeats: dict[str, list[int]] = {}
        self.unique: dict[str, Prompt] = {}
        for position, prompt in enumerate(prompts):
            key = prompt.key
            if key not in self.first:
                self.first[key] = position
                self.unique[key] = prompt
            else:
                self.repeats.setdefault(key, []).append(position)
        self.answered: dict[str, Outcome] = {}
        self.pending: list[Prompt] = []

    def positions(self, key: str) -> list[int]:
        """Every position of ``key``, in order."""
        return [self.first[key], *self.repeats.get(key, ())]

    @property
    def requests(self) -> int:
        """How many requests the batch will send at least (repairs may add some)."""
        return len(self.pending)

    def __repr__(self) -> str:
        return (
            f"<Plan: {len(self.keys)} prompts, {len(self.unique)} distinct, "
            f"{len(self.answered)} answered, {len(self.pending)} to send>"
        )


def make_plan(
    prompts: Sequence[Prompt],
    lookup: Callable[[Prompt], Completion | None] | None = None,
) -> Plan:
    """The plan of ``prompts``; ``lookup`` gives a kept answer of a prompt's key. A kept answer
    is checked like a new one (its value made again); one that no longer passes is sent
    again."""
    plan = Plan(prompts)
    for key, prompt in plan.unique.items():
        hit = lookup(prompt) if lookup is not None else None
        if hit is not None:
            outcome = check(prompt, hit, retries=0)
            if isinstance(outcome, Outcome) and outcome.ok:
                plan.answered[key] = outcome
                continue
        plan.pending.append(prompt)
    return plan
