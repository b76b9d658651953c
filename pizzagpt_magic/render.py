"""Showing answers: untrusted Markdown rendered to clean HTML in the kernel, and the formats.

A model's answer is untrusted text (a data set it read can steer it into writing HTML), and
JupyterLab shows a live cell's output as trusted HTML. So no answer reaches the frontend as
``text/markdown`` for its own Markdown pipeline to read a second time. Instead:

1. markdown-it-py parses the answer with raw HTML off (any ``<tag>`` stays text), with tables,
   strikethrough, bare-URL links (linkify) and ``$``/``$$``/``\\begin{..}`` math;
2. code blocks are highlighted here with Pygments (a fence's info string only picks a lexer; it
   is never copied into the page), math becomes MathML here with latex2mathml;
3. nh3 (the Rust ammonia sanitiser) cleans the HTML against allow-lists: tags and attributes by
   name, URLs only with the schemes http, https and mailto, no relative URLs, no ids, no
   classes, and in ``style`` only colour and font weight or slant (Pygments' inline styles);
4. the result is wrapped in an element with MathJax's ignore classes, so MathJax (which
   JupyterLab also runs over HTML outputs) reads no TeX from it: every ``\\href`` and friend in
   an answer stays text.

Images in answers are shown as links, not loaded: an answer cannot make the page fetch a URL
(a known way of leaking notebook data through a prompt-injected model).
"""

from __future__ import annotations

import functools
import html
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
    "SafeMarkdown",
    "StreamRenderer",
    "clean_html",
    "extract_code",
    "extract_json",
    "render_code",
    "render_markdown",
]

FORMATS = ("markdown", "text", "code", "json")
SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
#: The wrapper of every rendered answer: MathJax skips what is inside it.
WRAPPER_CLASSES = "pizzagpt-answer tex2jax_ignore mathjax_ignore"

_HTML_TAGS = frozenset(
    "a abbr b blockquote br code del div em h1 h2 h3 h4 h5 h6 hr i li ol p pre s small span strong "
    "sub sup table tbody td th thead tr ul".split()
)
#: What latex2mathml writes (MathML Core, which browsers render natively).
_MATHML_TAGS = frozenset(
    "math mi mn mo ms mspace mtext mrow mfrac msqrt mroot msub msup msubsup munder mover "
    "munderover mtable mtr mtd mstyle mpadded mphantom menclose semantics annotation".split()
)
_ATTRIBUTES = {
    "a": {"href", "title"},
    "ol": {"start"},
    "td": {"style"},
    "th": {"style"},
    "span": {"style"},
    "math": {"display"},
    "mo": {
        "stretchy",
        "fence",
        "separator",
        "lspace",
        "rspace",
        "form",
        "largeop",
        "movablelimits",
        "accent",
        "minsize",
        "maxsize",
        "symmetric",
    },
    "mi": {"mathvariant"},
    "mn": {"mathvariant"},
    "mtext": {"mathvariant"},
    "mstyle": {"displaystyle", "scriptlevel", "mathvariant", "mathsize"},
    "mspace": {"width", "height", "depth", "linebreak"},
    "mpadded": {"width", "height", "depth", "lspace", "voffset"},
    "mfrac": {"linethickness"},
    "mover": {"accent"},
    "munder": {"accentunder"},
    "munderover": {"accent", "accentunder"},
    "mtable": {"columnalign", "rowspacing", "columnspacing", "displaystyle"},
    "mtd": {"columnalign"},
    "menclose": {"notation"},
    "annotation": {"encoding"},
}
#: CSS properties kept in ``style``: Pygments' colours, and table cell alignment.
_STYLE_PROPERTIES = {"color", "font-weight", "font-style", "text-align"}
_EMPTY_MATH = re.compile(r"^\s*$")


@functools.lru_cache(maxsize=1)
def _cleaner() -> Any:
    import nh3

    return nh3.Cleaner(
        tags=set(_HTML_TAGS | _MATHML_TAGS),
        clean_content_tags={"script", "style"},
        attributes={tag: set(names) for tag, names in _ATTRIBUTES.items()},
        url_schemes=set(SAFE_SCHEMES),
        url_relative="deny",
        filter_style_properties=set(_STYLE_PROPERTIES),
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def clean_html(fragment: str) -> str:
    """``fragment`` through the allow-list sanitiser: what any answer HTML passes last."""
    return str(_cleaner().clean(fragment))


def _wrap(inner: str) -> str:
    return f'<div class="{WRAPPER_CLASSES}">{inner}</div>'


@functools.lru_cache(maxsize=1024)
def _math(tex: str, display: bool) -> str:
    """TeX as MathML made here; what cannot be converted is shown as its source.

    Cached: a streamed answer is rendered again as it grows, with the same formulas."""
    if not _EMPTY_MATH.match(tex):
        from latex2mathml.converter import convert

        try:
            return convert(tex, display="block" if display else "inline")
        except Exception:  # noqa: BLE001 - any TeX latex2mathml chokes on is shown as text
            pass
    source = html.escape(f"$${tex}$$" if display else f"${tex}$")
    return f"<p><code>{source}</code></p>" if display else f"<code>{source}</code>"


@functools.lru_cache(maxsize=256)
def _highlight(code: str, language: str) -> str:
    """``<pre><code>`` with Pygments' inline colours; the language only picks the lexer.

    Cached: a streamed answer is rendered again as it grows, with the same finished blocks."""
    from pygments import highlight

    lexer = _lexer(language.strip().split(maxsplit=1)[0].lower() if language.strip() else "")
    if lexer is None:
        return f"<pre><code>{html.escape(code)}</code></pre>\n"
    body = highlight(code, lexer, _formatter())
    return f"<pre><code>{body}</code></pre>\n"


@functools.lru_cache(maxsize=64)
def _lexer(name: str) -> Any:
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        return get_lexer_by_name(name) if name else None
    except ClassNotFound:
        return None


@functools.lru_cache(maxsize=1)
def _formatter() -> Any:
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(nowrap=True, noclasses=True, style="default")


def _linkifier() -> Any:
    """linkify-it for the links markdown-it's inline rule leaves: ``www.`` and email
    addresses. A bare name with a dot (``setup.py``, ``frame.pop``) stays text, and a URL
    with a scheme is the inline rule's alone (so ``-http://x``, which it refuses, stays text
    here too)."""
    from linkify_it import LinkifyIt

    class Linkify(LinkifyIt):
        def match(self, text: str) -> Any:
            found = super().match(text)
            kept = [
                m
                for m in found or ()
                if m.schema == "mailto:" or (not m.schema and m.raw[:4].lower() == "www.")
            ]
            return kept or None

    return Linkify()


@functools.lru_cache(maxsize=16)
def _parser(
    bare_links: bool = True,
    environments: bool = True,
    scheme_links: bool = True,
    strikethrough: bool = True,
) -> MarkdownIt:
    """The Markdown parser that renders answers (raw HTML off).

    ``bare_links`` turns on linking ``www.`` and email addresses, ``scheme_links``
    linking ``http://`` ones, ``environments`` the ``\\begin{..}`` math blocks and
    ``strikethrough`` the ``~~`` rule: each costs time on every text token or block, so each
    is on only for answers that hold what it looks for (``_parser_for``).
    """
    from markdown_it import MarkdownIt
    from mdit_py_plugins.amsmath import amsmath_plugin
    from mdit_py_plugins.dollarmath import dollarmath_plugin

    md = MarkdownIt("commonmark", {"html": False, "linkify": True, "typographer": False})
    md.linkify = _linkifier()
    md.enable(["table", "strikethrough", "linkify"])
    if not bare_links:
        md.core.ruler.disable("linkify")
    if not scheme_links:
        md.inline.ruler.disable("linkify")
    if not strikethrough:
        md.disable("strikethrough")
    md.use(
        dollarmath_plugin,
        allow_labels=False,
        allow_space=False,
        allow_digits=False,
        double_inline=True,
        renderer=lambda tex, options: _math(tex, options.get("display_mode", False)),
    )
    if environments:
        md.use(amsmath_plugin, renderer=lambda tex: _math(tex, True))

    def fence(renderer: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        token = tokens[idx]
        return _highlight(token.content, token.info)

    def code_block(renderer: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        return _highlight(tokens[idx].content, "")

    def image(renderer: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        # Shown as a link: an answer never makes the page load a URL by itself.
        token = tokens[idx]
        alt = renderer.renderInlineAsText(token.children or [], options, env) or "image"
        src = html.escape(str(token.attrGet("src") or ""), quote=True)
        return f'<a href="{src}">[image: {html.escape(alt)}]</a>'

    md.add_render_rule("fence", fence)
    md.add_render_rule("code_block", code_block)
    md.add_render_rule("image", image)
    return md


def _parser_for(text: str) -> MarkdownIt:
    """The parser with only the optional rules that can match in ``text``: a rule whose
    marker is absent would find nothing, so leaving it out changes no output."""
    bare = "www." in text.lower() or "@" in text
    return _parser(bare, "\\begin{" in text, "://" in text, "~" in text)


def render_markdown(text: str, *, wrap: bool = True) -> str:
    """An untrusted Markdown answer as clean HTML, inert for JupyterLab and MathJax."""
    parser = _parser_for(text)
    inner = clean_html(parser.render(text))
    return _wrap(inner) if wrap else inner


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})", re.M)


def _stable_end(text: str) -> int:
    """Where the finished blocks of a growing answer end: the last blank line outside a code
    fence and outside ``$$`` math (0 when there is none)."""
    end = 0
    fences = 0
    position = 0
    for match in re.finditer(r"\n[ \t]*\n", text):
        fences += len(_FENCE.findall(text, position, match.start()))
        position = match.start()
        if fences % 2 == 0 and text.count("$$", 0, match.start()) % 2 == 0:
            end = match.end()
    return end


class StreamRenderer:
    """Renders a growing answer for display as it arrives, through ``render_markdown``.

    The finished blocks (up to the last blank line outside code and math) are rendered once
    and kept; each update renders only the unfinished tail. Every piece is cleaned like any
    answer, so a hostile answer is inert at every update, and the finished answer is rendered
    whole, exactly as a non-streamed one.
    """

    def __init__(self) -> None:
        self._stable = ""
        self._stable_html = ""

    def render(self, text: str, note: str = "") -> dict[str, str]:
        end = _stable_end(text)
        if end and text[:end] != self._stable:
            if not text.startswith(self._stable):
                self._stable_html = ""
                self._stable = ""
            self._stable_html += render_markdown(text[len(self._stable) : end], wrap=False)
            self._stable = text[:end]
        tail = render_markdown(text[len(self._stable) :], wrap=False)
        extra = f"<p><small><em>{escape(note)}</em></small></p>" if note else ""
        return {"text/html": _wrap(self._stable_html + tail) + extra, "text/plain": text}


def render_code(blocks: list[tuple[str, str]], *, default_language: str = "python") -> str:
    """Code blocks as highlighted, clean HTML."""
    inner = "".join(_highlight(code, language or default_language) for language, code in blocks)
    return _wrap(clean_html(inner))


def _code_blocks(text: str) -> list[tuple[str, str]]:
    return [
        (token.info.strip().split(" ")[0] if token.type == "fence" else "", token.content)
        for token in _block_parser().parse(text)
        if token.type in ("fence", "code_block")
    ]


@functools.lru_cache(maxsize=1)
def _block_parser() -> MarkdownIt:
    # Plain CommonMark finds the code blocks: what a reader of the answer sees as code.
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table")


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


class SafeMarkdown:
    """A display made of untrusted Markdown pieces and fixed markup, rendered safely.

    ``parts`` are Markdown strings (rendered one by one, never joined into new Markdown, so no
    piece can change how another is read) or ``Markup`` (HTML written by this package, still
    cleaned); ``plain`` is the terminal's text.
    """

    def __init__(self, parts: str | list[Any], plain: str) -> None:
        self.parts = [parts] if isinstance(parts, str) else list(parts)
        self.plain = plain

    def _repr_html_(self) -> str:
        rendered = [
            part.html if isinstance(part, Markup) else render_markdown(part, wrap=False)
            for part in self.parts
        ]
        return _wrap(clean_html("".join(rendered)))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {"text/html": self._repr_html_(), "text/plain": self.plain}

    def __str__(self) -> str:
        return self.plain

    def __repr__(self) -> str:
        return self.plain


class Markup:
    """HTML written by this package (not by a model) for a ``SafeMarkdown`` display."""

    __slots__ = ("html",)

    def __init__(self, html: str) -> None:
        self.html = html


def escape(text: str) -> str:
    """Plain text for a ``Markup`` piece."""
    return html.escape(str(text), quote=True)


class Answer:
    """A model's answer, shown in the chosen format.

    ``text`` is the answer as the service sent it; ``value`` is what the format makes of it: the
    text (markdown, text), the code (code) or the parsed value (json). ``code`` is the answer's
    code whatever the format: its code blocks joined, or all of it when it has none.
    """

    def __init__(
        self,
        text: str,
        *,
        format: str = "markdown",
        model: str = "",
        cached: bool = False,
        completion: Any = None,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
        self.text = text
        self.format = format
        self.model = model
        self.cached = cached
        #: Where the answer came from (``api.Completion``): provider, model, parameters,
        #: seconds, token usage, finish reason; None for an answer made from text alone.
        self.completion = completion
        self.data = extract_json(text) if format == "json" else None

    @property
    def metadata(self) -> dict[str, Any]:
        """What the notebook output records about the answer (empty without a completion)."""
        return self.completion.metadata() if self.completion is not None else {}

    @property
    def usage(self) -> dict[str, int] | None:
        return self.completion.usage if self.completion is not None else None

    @property
    def truncated(self) -> bool:
        """Whether the backend cut the answer at its token limit."""
        return bool(self.completion is not None and self.completion.truncated)

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

    def bundle(self) -> dict[str, Any]:
        """The mimebundle the answer shows as."""
        note = self._note()
        if self.format == "text":
            return {"text/plain": self.text + (f"\n\n[{note}]" if note else "")}
        if self.format == "code":
            bundle: dict[str, Any] = {
                "text/html": render_code(self.blocks),
                "text/plain": self.code,
            }
        elif self.format == "json":
            pretty = json.dumps(self.data, indent=2, ensure_ascii=False)
            bundle = {
                "text/html": render_code([("json", pretty + "\n")]),
                "text/plain": pretty,
            }
            if isinstance(self.data, (dict, list)):
                bundle["application/json"] = self.data
        else:
            bundle = {"text/html": render_markdown(self.text), "text/plain": self.text}
        if note:
            bundle["text/html"] += f"<p><small><em>{escape(note)}</em></small></p>"
        return bundle

    def _note(self) -> str:
        """The line under the answer: token counts when known, a cut at the token limit."""
        if self.completion is None:
            return ""
        notes = []
        if self.truncated:
            notes.append("cut at the token limit (finish reason: length)")
        usage = self.usage or {}
        if "prompt_tokens" in usage and "completion_tokens" in usage:
            notes.append(
                f"{usage['prompt_tokens']:,} prompt + {usage['completion_tokens']:,} answer tokens"
            )
        elif "total_tokens" in usage:
            notes.append(f"{usage['total_tokens']:,} tokens")
        if not notes:
            return ""
        return " · ".join([self.completion.model_id, *notes])

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        if self.completion is None:
            return self.bundle()
        return self.bundle(), {"pizzagpt_magic": self.metadata}

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return str(self.bundle()["text/plain"])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Answer):
            return (self.text, self.format) == (other.text, other.format)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


class PrintedAnswer(Answer):
    """An answer a terminal has already printed as it arrived: as a cell's result it shows
    nothing more (it is still ``Out[n]``, ``_`` and the value of ``x = %pizza ...``)."""

    def _ipython_display_(self) -> None:
        pass


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

    def display(self) -> SafeMarkdown:
        answered = [
            (label, value)
            for label, value in zip(self.labels, self.results)
            if not isinstance(value, BaseException)
        ]
        parts: list[Any] = [Markup(f"<p><strong>{escape(self._headline())}</strong></p><ul>")]
        plain = [self._headline()]
        for label, value in answered[: self.SHOWN]:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            first = text.strip().splitlines()[0] if text.strip() else ""
            first = first if len(first) <= 200 else first[:199] + "…"
            # Each answer's line is rendered on its own: it cannot open a block that swallows
            # what follows.
            parts += [Markup(f"<li><code>{escape(label)}</code>: "), first, Markup("</li>")]
            plain.append(f"[{label}] {first}")
        parts.append(Markup("</ul>"))
        if len(self.results) > self.SHOWN:
            parts.append(Markup(f"<p><em>… and {len(self.results) - self.SHOWN} more</em></p>"))
        return SafeMarkdown(parts, "\n".join(plain))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return self.display()._repr_mimebundle_()

    def __repr__(self) -> str:
        return self.display().plain
