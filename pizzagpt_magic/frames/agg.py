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

import dataclasses
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
WHOLE_FRAME = "{question}\n\nAnswer from these {count} rows:\n\n{rows}"
COMBINE_FRAME = (
    "{question}\n\n"
    "The {total} rows were read in parts; below are the answers for {count} of those parts "
    "(rows {first} to {last}). Combine them into one answer to the question about all of "
    "these rows{limit}.\n\n{answers}"
)


#: Characters each partial answer takes in a combining prompt besides its text.
PART_FRAME = len("Part 9999:\n\n\n")


@dataclass
class TreePlan:
    """The shape of an ``agg`` tree: the rows of each first-level chunk (``(start, stop)``
    ranges), how many partial answers a combining question takes (``fan_in``), the longest a
    partial answer may be (``slot``), and the number of questions at each level."""

    chunks: list[tuple[int, int]]
    fan_in: int
    slot: int
    levels: list[int] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """Questions in the whole tree (before the cache and deduplication)."""
        return sum(self.levels)


def plan_tree(sizes: list[int], available: int, room: int) -> TreePlan:
    """The tree for rows of ``sizes`` characters (each with its newline) when a prompt has
    ``available`` characters for rows or partial answers (``room`` in all)."""
    longest = max(sizes, default=0)
    if available < max(longest, 2 * (PART_FRAME + 1)):
        raise PromptError(
            f"agg: a prompt has room for {max(available, 0):,} characters of rows after the "
            f"question and the system message (max_prompt_chars={room:,}), and the longest row "
            f"takes {longest:,}; raise max_prompt_chars or show less of each row (template=)"
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
    # About eight partial answers a combining question, each in a slot of its own.
    slot = max(1, min(MAX_SLOT, available // 8 - PART_FRAME))
    fan_in = max(MIN_FAN_IN, min(MAX_FAN_IN, available // (slot + PART_FRAME)))
    levels = [len(chunks)]
    while levels[-1] > 1:
        levels.append(math.ceil(levels[-1] / fan_in))
    return TreePlan(chunks, fan_in, slot, levels)


def _frame_size(question: str, total: int, slot: int) -> int:
    """The characters a chunk or combining prompt takes besides its rows or answers (with
    the longest numbers it can hold)."""
    big = 10 ** len(str(max(total, 1))) - 1
    chunk = CHUNK_FRAME.format(
        question=question, count=big, first=big, last=big, total=big, slot=slot, rows=""
    )
    combine = COMBINE_FRAME.format(
        question=question,
        total=big,
        count=big,
        first=big,
        last=big,
        limit=f" in under {slot} characters",
        answers="",
    )
    return max(len(chunk), len(combine))


def chunk_prompt(question: str, lines: list[str], first: int, total: int, slot: int) -> str:
    """The question about the rows ``lines`` (rows ``first`` + 1 onwards of ``total``; when
    they are all the rows, the question about them, which is the whole answer)."""
    if len(lines) == total:
        return WHOLE_FRAME.format(question=question, count=total, rows="\n".join(lines))
    return CHUNK_FRAME.format(
        question=question,
        count=len(lines),
        first=first + 1,
        last=first + len(lines),
        total=total,
        slot=slot,
        rows="\n".join(lines),
    )


def combine_prompt(
    question: str, answers: list[str], rows: tuple[int, int], total: int, slot: int, last: bool
) -> str:
    """The question that combines partial ``answers`` about rows ``rows`` (a range)."""
    parts = "".join(
        f"Part {number}:\n{_cut(answer.strip(), slot)}\n\n"
        for number, answer in enumerate(answers, 1)
    )
    return COMBINE_FRAME.format(
        question=question,
        total=total,
        count=len(answers),
        first=rows[0] + 1,
        last=rows[1],
        limit="" if last else f" in under {slot} characters",
        answers=parts.rstrip("\n"),
    )


@dataclass
class Aggregate:
    """The one answer of ``agg``, and what it read: ``rows``, first-level ``chunks``, the
    tree's ``levels`` (questions at each) and the ``requests`` sent (the rest came from the
    store)."""

    text: str
    rows: int
    chunks: int
    levels: list[int]
    requests: int

    def __str__(self) -> str:
        return self.text

    @property
    def footer(self) -> str:
        tree = (
            f" in {self.chunks:,} chunks, combined over {len(self.levels) - 1} more "
            f"level{'s' if len(self.levels) > 2 else ''}"
            if self.chunks > 1
            else " in one prompt"
        )
        sent = f"{self.requests:,} request{'' if self.requests == 1 else 's'} sent"
        return f"Read {self.rows:,} rows{tree}; {sent}."

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        # Through the package's safe renderer, as every answer is shown.
        from ..render import escape, render_markdown

        footer = f"<p><small><em>{escape(self.footer)}</em></small></p>"
        return {
            "text/html": render_markdown(self.text) + footer,
            "text/plain": repr(self),
        }

    def __repr__(self) -> str:
        return f"{self.text}\n\n{self.footer}"


def aggregate(data: Any, question: str, template: str | None, given: dict[str, Any]) -> Any:
    """``agg``'s work (see ``DataFrame.pizza.agg``)."""
    from .map import texts_of
    from .options import options_of
    from .run import Estimate, estimate, rates, run

    # Its chunks are already as large as a prompt may be: they travel one a request.
    options = dataclasses.replace(options_of(given), pack=1)
    if not isinstance(question, str) or not question.strip():
        raise PromptError("agg: the question is empty")
    lines = texts_of(data, template or "{row}", options.value_budget)
    total = len(lines)
    if not total:
        raise PromptError("agg: there are no rows to read")
    history = sum(len(str(m["content"])) for m in options.history)
    room = options.max_prompt_chars - len(options.system or "") - history
    frame = _frame_size(question, total, MAX_SLOT)
    plan = plan_tree([len(line) + 1 for line in lines], room - frame, options.max_prompt_chars)
    slot = plan.slot
    prompts = [chunk_prompt(question, lines[a:b], a, total, slot) for a, b in plan.chunks]
    spans = list(plan.chunks)
    if options.dry_run:
        # Levels whose every question is already answered in the store are followed, so the
        # counts of what is cached are exact as far as they can be known.
        sent = cached = distinct = tokens = outputs = 0
        usd: float | None = 0.0
        pricing = ""
        level = 0
        while True:
            found = estimate("agg", prompts, options)
            distinct += found.distinct
            cached += found.cached
            sent += found.requests
            tokens += found.input_tokens
            outputs += found.output_tokens
            usd = None if usd is None or found.usd is None else usd + found.usd
            pricing = found.pricing
            level += 1
            if len(prompts) == 1 or found.requests:
                # The levels above are not known yet: each of their questions is counted.
                prices, ratio, output = rates(options)
                children = plan.levels[level - 1]
                for count in plan.levels[level:]:
                    distinct += count
                    sent += count
                    chars = count * frame + children * (slot + PART_FRAME)
                    more = math.ceil(chars / ratio)
                    tokens += more
                    outputs += count * output
                    dollars = prices.estimate(more, count * output)
                    usd = None if usd is None or dollars is None else usd + dollars
                    children = count
                break
            quiet = dataclasses.replace(options, progress=False, log=False)
            answers = run(prompts, quiet, desc="agg").values
            prompts, spans = _combined(question, answers, spans, total, plan)
        return Estimate(
            "agg", total, distinct, cached, sent, tokens, plan.levels, outputs, usd, pricing
        )
    requests = 0
    for level in range(1, len(plan.levels) + 1):
        outcomes = run(prompts, options, desc=f"agg {level}/{len(plan.levels)}")
        requests += outcomes.sent
        failed = next((v for v in outcomes.values if isinstance(v, BaseException)), None)
        if failed is not None:
            raise failed
        if len(prompts) == 1:
            return Aggregate(outcomes.values[0], total, len(plan.chunks), plan.levels, requests)
        prompts, spans = _combined(question, outcomes.values, spans, total, plan)
    raise AssertionError("the tree ends with one question")  # pragma: no cover


def _combined(
    question: str, answers: list[Any], spans: list[tuple[int, int]], total: int, plan: TreePlan
) -> tuple[list[str], list[tuple[int, int]]]:
    """The next level's questions: the answers ``fan_in`` at a time, with the rows each
    group covers."""
    fan_in = plan.fan_in
    groups = range(0, len(answers), fan_in)
    last = len(groups) == 1
    prompts, covered = [], []
    for start in groups:
        rows = (spans[start][0], spans[min(start + fan_in, len(spans)) - 1][1])
        prompts.append(
            combine_prompt(question, answers[start : start + fan_in], rows, total, plan.slot, last)
        )
        covered.append(rows)
    return prompts, covered
