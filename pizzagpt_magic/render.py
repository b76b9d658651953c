"""Showing answers: untrusted Markdown made safe, the answer object and its formats.

JupyterLab renders ``text/markdown`` from a live cell as trusted HTML, so raw HTML in a model's
answer would run. ``safe_markdown`` keeps the Markdown and neutralises the HTML:

- outside code blocks and code spans, every ``<`` becomes ``&lt;`` (it still reads as ``<``),
  so no tag, comment or raw HTML block survives; autolinks to http(s) and mailto stay links;
- link and image destinations, inline or in reference definitions, with a scheme other than
  http, https or mailto (``javascript:``, ``data:``, ``vbscript:``, ...; entity-encoded or not)
  are replaced by ``#blocked``;
- TeX ``\\href`` and ``\\url``, which MathJax would turn into links, are broken up;
- code blocks and code spans are left exactly as they are: renderers never parse HTML there.
"""

from __future__ import annotations

import functools
import json
import re
from typing import TYPE_CHECKING, Any

from .errors import AnswerFormatError

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

__all__ = [
    "FORMATS",
    "Answer",
    "BatchSummary",
    "MarkdownText",
    "extract_code",
    "extract_json",
    "live_markup",
    "safe_markdown",
]

FORMATS = ("markdown", "text", "code", "json")
SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
BLOCKED = "#blocked"

_AUTOLINK = re.compile(r"<([A-Za-z][A-Za-z0-9+.-]{1,31}):[^\s<>]*>")
# A destination never holds "[" or "]" here, so one match cannot swallow the next link's "](".
_INLINE_DEST = re.compile(r"(\]\([ \t]*(?:\n[ \t]*)?)((?:[^\s()\[\]]|\([^\s()\[\]]*\))*)")
_REF_DEF = re.compile(r"^([ ]{0,3}\[[^\]\n]+\]:[ \t]*(?:\n[ \t]*)?)(\S+)", re.M)
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*):")
_CONTROL = re.compile(r"[\x00-\x20\x7f]+")
_TEX_LINK = re.compile(r"(?<!\\)\\(href|url)(?![A-Za-z])")
_BACKTICKS = re.compile(r"`+")


@functools.lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table")


def _unsafe_destination(destination: str) -> bool:
    import html

    decoded = html.unescape(re.sub(r"\\(.)", r"\1", destination))
    decoded = _CONTROL.sub("", decoded).lower()
    match = _SCHEME.match(decoded)
    return match is not None and match.group(1) not in SAFE_SCHEMES


def _neutralise_text(text: str) -> str:
    """Make a stretch of Markdown that holds no code safe."""
    kept: list[str] = []

    def keep_autolink(match: re.Match[str]) -> str:
        if match.group(1).lower() in SAFE_SCHEMES:
            kept.append(match.group(0))
            return f"\x00{len(kept) - 1}\x00"
        return match.group(0)

    text = _AUTOLINK.sub(keep_autolink, text.replace("\x00", "\ufffd"))
    text = text.replace("<", "&lt;")
    text = re.sub("\x00(\\d+)\x00", lambda m: kept[int(m.group(1))], text)

    def check(match: re.Match[str]) -> str:
        if _unsafe_destination(match.group(2)):
            return match.group(1) + BLOCKED
        return match.group(0)

    text = _INLINE_DEST.sub(check, text)
    text = _REF_DEF.sub(check, text)
    return _TEX_LINK.sub(r"\\\\\1", text)


def _split_code_spans(text: str) -> list[tuple[bool, str]]:
    """``text`` as (is_code, piece) pairs, finding code spans as CommonMark does."""
    pieces: list[tuple[bool, str]] = []
    start = pos = 0
    while True:
        opening = _BACKTICKS.search(text, pos)
        if opening is None:
            break
        # A backslash-escaped backtick opens nothing.
        backslashes = len(text[: opening.start()]) - len(text[: opening.start()].rstrip("\\"))
        if backslashes % 2:
            pos = opening.start() + 1
            continue
        run = len(opening.group(0))
        closing = None
        for candidate in _BACKTICKS.finditer(text, opening.end()):
            if len(candidate.group(0)) == run:
                closing = candidate
                break
        if closing is None:
            pos = opening.end()
            continue
        pieces.append((False, text[start : opening.start()]))
        pieces.append((True, text[opening.start() : closing.end()]))
        start = pos = closing.end()
    pieces.append((False, text[start:]))
    return pieces


def _code_block_lines(text: str) -> set[int]:
    lines: set[int] = set()
    for token in _parser().parse(text):
        if token.type in ("fence", "code_block") and token.map:
            lines.update(range(*token.map))
    return lines


def _neutralise(text: str) -> str:
    code_lines = _code_block_lines(text)
    out: list[str] = []
    segment: list[str] = []

    def flush() -> None:
        if segment:
            for is_code, piece in _split_code_spans("".join(segment)):
                out.append(piece if is_code else _neutralise_text(piece))
            segment.clear()

    for number, line in enumerate(text.splitlines(keepends=True)):
        if number in code_lines:
            flush()
            out.append(line)
        elif not line.strip():
            # A blank line ends the paragraph: no code span reaches across it.
            flush()
            out.append(line)
        else:
            segment.append(line)
    flush()
    return "".join(out)


def live_markup(markdown: str) -> list[str]:
    """What a renderer that passes raw HTML through would make live: HTML and unsafe URLs."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True}).enable("table")
    # See every link, not only those markdown-it itself would keep.
    md.validateLink = lambda url: True  # type: ignore[method-assign]
    found: list[str] = []
    stack = list(md.parse(markdown))
    while stack:
        token = stack.pop()
        if token.type in ("html_inline", "html_block"):
            found.append(token.content)
        for name in ("href", "src"):
            url = token.attrGet(name)
            if isinstance(url, str) and _unsafe_destination(url):
                found.append(url)
        stack.extend(token.children or [])
    return found


def safe_markdown(text: str) -> str:
    """``text`` with its Markdown intact and no live HTML, unsafe links or script URLs."""
    if "<" not in text and "](" not in text and "]:" not in text and "\\" not in text:
        return text
    # Removing HTML can change the block structure around it (a line that followed an HTML
    # block may join a paragraph), so the result is parsed again until it is stable and clean.
    for _ in range(4):
        result = _neutralise(text)
        if result == text and not live_markup(result):
            return result
        text = result
    if not live_markup(text):
        return text
    # Structure that would not settle: give up code fidelity for certainty.
    return _neutralise_text(text.replace("\x00", "\ufffd")).replace("<", "&lt;")


def _code_blocks(text: str) -> list[tuple[str, str]]:
    return [
        (token.info.strip().split(" ")[0] if token.type == "fence" else "", token.content)
        for token in _parser().parse(text)
        if token.type in ("fence", "code_block")
    ]


def extract_code(text: str) -> list[tuple[str, str]]:
    """The answer's code blocks as (language, code) pairs; all of it when it has none."""
    return _code_blocks(text) or [("", text.strip("\n") + "\n")]


def extract_json(text: str) -> Any:
    """The JSON value in the answer: a fenced block (``json`` ones first) or the bare text."""
    fences = _code_blocks(text)
    candidates = [code for lang, code in fences if lang.lower() in ("json", "jsonc")]
    candidates += [code for lang, code in fences if lang.lower() not in ("json", "jsonc")]
    candidates += re.findall(r"```[\w+-]*[ \t]*\n?(.*?)```", text, re.S)
    candidates.append(text)
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if starts:
        candidates.append(text[min(starts) : max(text.rfind("}"), text.rfind("]")) + 1])
    error: ValueError | None = None
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError as exc:
            error = error or exc
    raise AnswerFormatError(f"The answer is not JSON ({error})", text)


_PYTHON = frozenset({"", "python", "python3", "py", "ipython", "ipython3"})


def _join(blocks: list[tuple[str, str]]) -> str:
    return "\n".join(code.rstrip("\n") for _, code in blocks) + "\n"


def _fence(code: str, language: str = "") -> str:
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    ticks = "`" * max(3, longest + 1)
    body = code if code.endswith("\n") else code + "\n"
    return f"{ticks}{language}\n{body}{ticks}"


class MarkdownText:
    """Untrusted Markdown for display: shown safely as Markdown, as itself in terminals."""

    def __init__(self, text: str, plain: str | None = None) -> None:
        self.text = text
        self.plain = text if plain is None else plain

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {"text/markdown": safe_markdown(self.text), "text/plain": self.plain}

    def __str__(self) -> str:
        return self.plain

    def __repr__(self) -> str:
        return self.plain


class Answer:
    """A model's answer, shown in the chosen format.

    ``text`` is the answer as the service sent it; ``value`` is what the format makes of it: the
    text (markdown, text), the code (code) or the parsed value (json). ``code`` is the answer's
    code whatever the format: its code blocks joined, or all of it when it has none.
    """

    def __init__(
        self, text: str, *, format: str = "markdown", model: str = "", cached: bool = False
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
        self.text = text
        self.format = format
        self.model = model
        self.cached = cached
        self.data = extract_json(text) if format == "json" else None

    @functools.cached_property
    def blocks(self) -> list[tuple[str, str]]:
        return extract_code(self.text)

    @property
    def code(self) -> str:
        return _join(self.blocks)

    @property
    def cell_code(self) -> str:
        """The code for a new notebook cell: the Python blocks (labelled so, or unlabelled)
        when the answer mixes them with others (a shell line to install something, say), else
        all of its code."""
        python = [(lang, code) for lang, code in self.blocks if lang.lower() in _PYTHON]
        return _join(python or self.blocks)

    @property
    def value(self) -> Any:
        if self.format == "code":
            return self.code
        if self.format == "json":
            return self.data
        return self.text

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        if self.format == "text":
            return {"text/plain": self.text}
        if self.format == "code":
            markdown = "\n\n".join(_fence(code, lang or "python") for lang, code in self.blocks)
            return {"text/markdown": markdown, "text/plain": self.code}
        if self.format == "json":
            pretty = json.dumps(self.data, indent=2, ensure_ascii=False)
            bundle: dict[str, Any] = {"text/markdown": _fence(pretty, "json"), "text/plain": pretty}
            if isinstance(self.data, (dict, list)):
                bundle["application/json"] = self.data
            return bundle
        return {"text/markdown": safe_markdown(self.text), "text/plain": self.text}

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self._repr_mimebundle_()["text/plain"]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Answer):
            return (self.text, self.format) == (other.text, other.format)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


class BatchSummary:
    """What a ``--each`` cell shows: count, failures, time and the first few answers.

    ``labels`` name the items (positions for a list, the index for pandas objects); ``results``
    hold, per item, the answer (its text, or with ``-f code``/``-f json`` its value) or the
    exception that item ended with.
    """

    SHOWN = 3

    def __init__(self, labels: list[Any], results: list[Any], elapsed: float, model: str) -> None:
        self.labels = labels
        self.results = results
        self.elapsed = elapsed
        self.model = model
        self.failures = {
            label: r for label, r in zip(labels, results) if isinstance(r, BaseException)
        }
        self.answers: Any = None

    def failure_line(self) -> str:
        listed = "; ".join(f"#{label}: {exc}" for label, exc in list(self.failures.items())[:3])
        more = f"; and {len(self.failures) - 3} more" if len(self.failures) > 3 else ""
        return f"{len(self.failures)} of {len(self.results)} prompts failed ({listed}{more})"

    def _headline(self) -> str:
        return (
            f"{len(self.results)} answers from {self.model} in {self.elapsed:.1f} s, "
            f"{len(self.failures)} failed"
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        answered = [
            (label, value)
            for label, value in zip(self.labels, self.results)
            if not isinstance(value, BaseException)
        ]
        markdown, plain = [f"**{self._headline()}**", ""], [self._headline()]
        for label, value in answered[: self.SHOWN]:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            first = text.strip().splitlines()[0] if text.strip() else ""
            first = first if len(first) <= 200 else first[:199] + "…"
            markdown.append(f"- `{label}`: {safe_markdown(first)}")
            plain.append(f"[{label}] {first}")
        if len(self.results) > self.SHOWN:
            markdown.append(f"\n*… and {len(self.results) - self.SHOWN} more*")
        return {"text/markdown": "\n".join(markdown), "text/plain": "\n".join(plain)}

    def __repr__(self) -> str:
        return self._repr_mimebundle_()["text/plain"]
