"""Showing answers: untrusted Markdown rendered to clean HTML in the kernel, and the formats.

A model's answer is untrusted text (a data set it read can steer it into writing HTML), and
JupyterLab shows a live cell's output as trusted HTML. So no answer reaches the frontend as
``text/markdown`` for its own Markdown pipeline to read a second time. Instead:

1. pulldown-cmark (a CommonMark parser in Rust, through pyromark) reads the answer, with
   tables, strikethrough, task lists and ``$``/``$$`` math; this module writes its events as
   HTML, with any raw ``<tag>`` as text and bare URLs linked (linkify-it, GitHub's autolinks);
2. code blocks are highlighted here with Pygments (a fence's info string only picks a lexer; it
   is never copied into the page), math (also ``\\begin{..}`` environments standing alone)
   becomes MathML here with math-core;
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
import threading
from typing import TYPE_CHECKING, Any

from .errors import AnswerFormatError
from .formats import FORMATS

if TYPE_CHECKING:
    from typing_extensions import Self

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

SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
#: The wrapper of every rendered answer: MathJax skips what is inside it.
WRAPPER_CLASSES = "pizzagpt-answer tex2jax_ignore mathjax_ignore"

_HTML_TAGS = frozenset(
    "a abbr b blockquote br code del div em h1 h2 h3 h4 h5 h6 hr i li ol p pre s small span strong "
    "sub sup table tbody td th thead tr ul".split()
)
#: What math-core writes (MathML Core, which browsers render natively).
_MATHML_TAGS = frozenset(
    "math mi mn mo ms mspace mtext mrow mfrac msqrt mroot msub msup msubsup munder mover "
    "munderover mmultiscripts mprescripts mtable mtr mtd mstyle mpadded mphantom menclose "
    "merror semantics annotation".split()
)
_ATTRIBUTES = {
    "a": {"href", "title"},
    "ol": {"start"},
    "td": {"style"},
    "th": {"style"},
    "span": {"style"},
    "code": {"style"},
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
    "mrow": {"style"},
    "mstyle": {"displaystyle", "scriptlevel", "mathvariant", "mathsize", "style"},
    "mspace": {"width", "height", "depth", "linebreak"},
    "mpadded": {"width", "height", "depth", "lspace", "voffset"},
    "mfrac": {"linethickness"},
    "mover": {"accent"},
    "munder": {"accentunder"},
    "munderover": {"accent", "accentunder"},
    "mtable": {"columnalign", "rowspacing", "columnspacing", "displaystyle", "scriptlevel"},
    "mtd": {"columnalign", "style"},
    "menclose": {"notation"},
    "annotation": {"encoding"},
}
#: CSS properties kept in ``style``: the code tokens' and TeX's colours, alignment in table
#: cells and math arrays, and ``display`` (a formula's MathML and its TeX source, one shown
#: live and the other in a notebook reopened untrusted).
_STYLE_PROPERTIES = {
    "color",
    "font-weight",
    "font-style",
    "text-align",
    "display",
    "--pizzagpt-live",
}
#: A code block's spacing, as JupyterLab's own rendered Markdown gives it (its rule reaches only
#: a ``pre`` that is a direct child of the output, and answers are wrapped).
_PRE = '<pre style="margin: 1.5em 2em">'
#: A formula is written twice: as MathML (shown live and in a trusted notebook) and as its TeX
#: source (shown in a notebook reopened untrusted, whose sanitiser drops MathML elements and
#: keeps their text, glyphs run together). That sanitiser keeps ``display: none``, drops
#: ``display: var(...)`` unless its text holds a display keyword, and drops every custom
#: property: so the MathML is hidden by ``display: none`` unless a ``var()`` (with a fallback
#: that holds no keyword) overrides it, and the TeX is hidden by a custom property of its own
#: element, which only a live or trusted output keeps. Each part shows in exactly one of the two.
_LIVE_ONLY = "display: none; display: var(--pizzagpt-live, contents)"
_UNTRUSTED_ONLY = "--pizzagpt-live: none; display: var(--pizzagpt-live)"
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
    # A <pre> the sanitiser lets through is a code block this module wrote (an answer's own
    # HTML is text by then): it gets Markdown's spacing.
    return str(_cleaner().clean(fragment)).replace("<pre>", _PRE)


def _wrap(inner: str) -> str:
    return f'<div class="{WRAPPER_CLASSES}">{inner}</div>'


@functools.lru_cache(maxsize=1)
def _tex() -> Any:
    from math_core import LatexToMathML

    # Each formula on its own: nothing one formula does changes another.
    return LatexToMathML(fancy_error=False)


#: math-core converts by recursion, and a formula nested a few thousand levels deep overflows
#: a thread's usual stack, which ends the process (a segmentation fault, not an exception): a
#: hostile answer would crash the kernel. So formulas are converted on a thread of their own
#: with this much stack (address space; only what is used is taken), longer ones are shown as
#: their source, and so are ones that define macros (a short macro can nest a formula any
#: depth). 40,000 characters of the deepest-nesting forms convert on such a stack.
_TEX_STACK = 256 * 1024 * 1024
_MAX_TEX = 10_000
#: A formula this short nests at most a few dozen levels, which any thread's stack holds.
_SHORT_TEX = 120
_TEX_MACRO = re.compile(
    r"\\(?:[gex]?def|let|(?:re)?newcommand|providecommand|(?:re)?newenvironment)(?![a-zA-Z])"
)
_stack_size_lock = threading.Lock()


def _source(tex: str, delimiter: str) -> str:
    """A formula that is not converted, shown as what the answer wrote: between its
    ``delimiter`` (``$``, ``$$``, or none for an environment standing alone)."""
    return f"<code>{html.escape(f'{delimiter}{tex}{delimiter}')}</code>"


@functools.lru_cache(maxsize=1024)
def _math(tex: str, delimiter: str) -> str:
    """TeX as MathML made here (math-core), displayed unless ``delimiter`` is ``$``; what
    cannot be converted is shown as its source. Called by ``_formulas`` only, which gives a
    long formula a large stack.

    Cached: a streamed answer is rendered again as it grows, with the same formulas."""
    if _EMPTY_MATH.match(tex) or len(tex) > _MAX_TEX or _TEX_MACRO.search(tex):
        return _source(tex, delimiter)
    from math_core import LatexError

    try:
        mathml = str(_tex().convert_with_local_state(tex, displaystyle=delimiter != "$"))
    except LatexError:
        return _source(tex, delimiter)
    source = html.escape(f"{delimiter}{tex}{delimiter}")
    return (
        f'<span style="{_LIVE_ONLY}">{mathml}</span><code style="{_UNTRUSTED_ONLY}">{source}</code>'
    )


def _formulas(formulas: list[tuple[str, str]]) -> list[str]:
    """``_math`` of each ``(tex, delimiter)``, converted on a thread with a large stack (here,
    when every formula is too short to nest deep: the most common case, and the quickest)."""
    if all(len(tex) <= _SHORT_TEX for tex, _ in formulas):
        return [_math(tex, delimiter) for tex, delimiter in formulas]
    converted: list[str] = []

    def convert() -> None:
        for tex, delimiter in formulas:
            try:
                converted.append(_math(tex, delimiter))
            except BaseException:  # noqa: BLE001 - a converter's panic too: shown as source
                converted.append(_source(tex, delimiter))

    with _stack_size_lock:
        previous = threading.stack_size(_TEX_STACK)
        try:
            worker = threading.Thread(target=convert, name="pizzagpt-magic-tex", daemon=True)
            worker.start()
        except RuntimeError:  # no new thread (the interpreter is shutting down)
            worker = None
        finally:
            threading.stack_size(previous)
    if worker is not None:
        worker.join()
    return converted + [_source(tex, delimiter) for tex, delimiter in formulas[len(converted) :]]


@functools.lru_cache(maxsize=256)
def _highlight(code: str, language: str) -> str:
    """``<pre><code>`` with each token coloured by the theme; the language (a fence's first
    word) only picks the lexer.

    Cached: a streamed answer is rendered again as it grows, with the same finished blocks."""
    lexer = _lexer(language.lower())
    if lexer is None:
        return f"<pre><code>{html.escape(code)}</code></pre>\n"
    out = []
    runs: list[tuple[str, str]] = []  # adjacent tokens of one style make one span
    for token, text in lexer.get_tokens(code):
        style = _token_style(token)
        if runs and runs[-1][0] == style:
            runs[-1] = (style, runs[-1][1] + text)
        else:
            runs.append((style, text))
    for style, text in runs:
        escaped = html.escape(text, quote=False)
        out.append(f'<span style="{style}">{escaped}</span>' if style else escaped)
    return f"<pre><code>{''.join(out)}</code></pre>\n"


#: How each kind of token is shown: JupyterLab's own colours for code (its CodeMirror theme's
#: ``--jp-mirror-editor-*`` variables, so both the light and the dark theme apply), bold and
#: italic as JupyterLab's highlighter gives them. Where the theme's own colour for a kind is
#: under 4.5:1 on the page in a theme (comments, decorators, HTML attributes, constants), a
#: colour of the same theme that reads is used. The fallback (``currentColor``) is the text's
#: colour: where JupyterLab's variables are not defined, code is plain.
_TOKEN_COLOURS = {
    "Comment": ("--jp-content-font-color2", "font-style: italic"),
    "Keyword": ("--jp-mirror-editor-keyword-color", "font-weight: bold"),
    "Operator.Word": ("--jp-mirror-editor-keyword-color", "font-weight: bold"),
    "Operator": ("--jp-mirror-editor-operator-color", "font-weight: bold"),
    "Punctuation": ("--jp-mirror-editor-punctuation-color", ""),
    "Literal.Number": ("--jp-mirror-editor-number-color", ""),
    "Literal.String.Escape": ("--jp-mirror-editor-string-2-color", ""),
    "Literal.String.Interpol": ("--jp-mirror-editor-string-2-color", ""),
    "Literal.String.Affix": ("--jp-mirror-editor-keyword-color", ""),
    "Literal.String": ("--jp-mirror-editor-string-color", ""),
    "Name.Builtin.Pseudo": ("--jp-mirror-editor-variable-2-color", ""),
    "Name.Builtin": ("--jp-mirror-editor-builtin-color", ""),
    "Name.Function.Magic": ("--jp-mirror-editor-builtin-color", ""),
    "Name.Function": ("--jp-mirror-editor-def-color", ""),
    "Name.Class": ("--jp-mirror-editor-def-color", "font-weight: bold"),
    "Name.Decorator": ("--jp-mirror-editor-variable-2-color", ""),
    "Name.Exception": ("--jp-mirror-editor-builtin-color", ""),
    "Name.Tag": ("--jp-mirror-editor-tag-color", ""),
    "Name.Attribute": ("--jp-mirror-editor-property-color", ""),
    "Name.Constant": ("--jp-mirror-editor-keyword-color", ""),
    "Generic.Heading": ("--jp-mirror-editor-header-color", "font-weight: bold"),
    "Generic.Subheading": ("--jp-mirror-editor-header-color", "font-weight: bold"),
    "Generic.Deleted": ("--jp-mirror-editor-string-color", ""),
    "Generic.Inserted": ("--jp-mirror-editor-keyword-color", ""),
    "Generic.Prompt": ("--jp-mirror-editor-variable-2-color", "font-weight: bold"),
    "Generic.Emph": ("", "font-style: italic"),
    "Generic.Strong": ("", "font-weight: bold"),
}


@functools.lru_cache(maxsize=256)
def _token_style(token: Any) -> str:
    """The inline style of a Pygments token type: its own entry, or its nearest parent's."""
    while token is not None and len(token):
        entry = _TOKEN_COLOURS.get(".".join(token))
        if entry is not None:
            variable, extra = entry
            colour = f"color: var({variable}, currentColor)" if variable else ""
            return "; ".join(part for part in (colour, extra) if part)
        token = token.parent
    return ""


@functools.lru_cache(maxsize=64)
def _lexer(name: str) -> Any:
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        return get_lexer_by_name(name) if name else None
    except ClassNotFound:
        return None


@functools.lru_cache(maxsize=1)
def _linkifier() -> Any:
    """linkify-it, keeping GitHub's autolinks: URLs with the ``http``, ``https`` or
    ``mailto`` scheme, ``www.`` and email addresses. A bare name with a dot (``setup.py``,
    ``frame.pop``) stays text, and so does a URL with any other scheme."""
    from linkify_it import LinkifyIt

    class Linkify(LinkifyIt):
        def match(self, text: str) -> Any:
            found = super().match(text)
            kept = [
                m
                for m in found or ()
                if m.schema.lower() in ("http:", "https:", "mailto:")
                or (not m.schema and m.raw[:4].lower() == "www.")
            ]
            return kept or None

    return Linkify()


#: A run of text with no space that holds an autolink's marker: a link never holds a space,
#: and its start is told by the character before it (a space, or the start, alike), so
#: linkify-it reads such runs alone with the same result as the whole text, and much sooner.
#: A match starts only where a run starts, so each run is scanned once (linear time, however
#: long a run without spaces is).
_LINK_RUN = re.compile(r"(?<!\S)\S*?(?:://|@|www\.)\S*", re.IGNORECASE)
#: A longer run stays text: linkify-it's time grows with the square of a run that holds many
#: addresses (65,000 characters of ``https://x.io/`` took 7 s), and no address is so long.
_MAX_LINK_RUN = 2048


def _may_link(text: str) -> bool:
    """Whether ``text`` holds the marker of any autolink (the fast way out for most text)."""
    return "://" in text or "@" in text or "www." in text.lower()


def _linked(text: str) -> str:
    """Plain text as HTML, its bare URLs, ``www.`` and email addresses made links (not in a
    run without spaces longer than ``_MAX_LINK_RUN``)."""
    if not _may_link(text):
        return html.escape(text, quote=False)
    out, position = [], 0
    for run in _LINK_RUN.finditer(text):
        if run.end() - run.start() > _MAX_LINK_RUN:
            continue
        for match in _linkifier().match(run.group()) or ():
            start = run.start() + match.index
            out.append(html.escape(text[position:start], quote=False))
            href = html.escape(match.url, quote=True)
            out.append(f'<a href="{href}">{html.escape(match.text, quote=False)}</a>')
            position = run.start() + match.last_index
    out.append(html.escape(text[position:], quote=False))
    return "".join(out)


#: The math environments that stand alone as a paragraph (as amsmath's), rendered as math
#: without ``$$`` around them.
_ENVIRONMENT = re.compile(
    rb"\\begin\{((?:equation|multline|gather|align|alignat|flalign|aligned|gathered|split|"
    rb"cases|[pbBvV]?matrix|eqnarray)\*?)\}.*\\end\{\1\}\s*",
    re.S,
)


@functools.lru_cache(maxsize=1)
def _pulldown() -> tuple[Any, Any]:
    """pulldown-cmark's event parser (through pyromark), and the options answers use."""
    import pyromark

    options = pyromark.Options
    enabled = (
        options.ENABLE_TABLES
        | options.ENABLE_STRIKETHROUGH
        | options.ENABLE_MATH
        | options.ENABLE_TASKLISTS
    )
    return pyromark, enabled


def _events(text: str, ranges: bool = False) -> Any:
    """The answer as pulldown-cmark's events; with ``ranges``, each as ``(event, range)``, the
    range a dict of ``start`` and ``end`` offsets into the UTF-8 bytes."""
    pyromark, options = _pulldown()
    if ranges:
        return pyromark.events_with_range(text, options=options)
    return pyromark.events(text, options=options)


#: Events with no detail: the HTML that opens and closes each (a link's start carries its
#: destination and is written by ``_Writer._start``; only its end is here).
_TAGS = {
    "Paragraph": ("<p>", "</p>\n"),
    "Emphasis": ("<em>", "</em>"),
    "Strong": ("<strong>", "</strong>"),
    "Strikethrough": ("<s>", "</s>"),
    "Item": ("<li>", "</li>\n"),
    "HtmlBlock": ("<p>", "</p>\n"),  # raw HTML, shown as text
    "TableRow": ("<tr>\n", "</tr>\n"),
    "Link": ("", "</a>"),
}
_BREAKS = {"HardBreak": "<br />\n", "Rule": "<hr />\n"}
#: Lists and block quotes nested deeper than this are shown without their own markup (their
#: text stays): the sanitiser's HTML parser takes time that grows with the square of the
#: depth (50,000 ``>`` took 13 s), and no answer means such depth.
_MAX_NESTING = 64
#: What is shown as text: raw HTML too (an answer's ``<script>`` is shown, never run).
_TEXT = frozenset({"Text", "Html", "InlineHtml"})


class _Writer:
    """One answer's pulldown-cmark events written as HTML (which is cleaned after).

    Raw HTML in the answer becomes text, code blocks are highlighted here (the fence's info
    string only picks the lexer), math becomes MathML here, images become links, and bare
    URLs, ``www.`` and email addresses become links.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.out: list[str] = []
        self.pending: list[str] = []  # adjacent text, linked as one
        self.links = 0  # inside a link, text is not linked again
        self.code: list[str] | None = None  # a code block's text, while in one
        self.language = ""
        self.alt: list[str] | None = None  # an image's text, while in one
        self.image = ""
        self.nested_images = 0
        self.aligns: tuple[str, ...] = ()
        self.cell = 0
        self.head = False
        self.containers = 0  # open lists and block quotes
        # Each formula's place in out, its TeX and its delimiter ($, $$, or none).
        self.math: list[tuple[int, str, str]] = []

    def html(self) -> str:
        # A paragraph that is one math environment is shown whole as math: its source is
        # found by the events' byte ranges, read only when an environment may be there.
        source = self.text.encode() if "\\begin{" in self.text else None
        stream = _events(self.text, ranges=True) if source else _events(self.text)
        skip_to = -1  # the end of a paragraph shown as math, whose events are skipped
        for event in stream:
            if source is not None:
                event, span = event
                if span["start"] < skip_to:
                    continue
            if type(event) is str:
                self._mark(event)
                continue
            ((kind, value),) = event.items()
            if kind in _TEXT:
                if self.code is not None:
                    self.code.append(value)
                elif self.alt is not None:
                    self.alt.append(value)
                else:
                    self.pending.append(value)
                continue
            if self.alt is not None:
                self._in_image(kind, value)
                continue
            self._flush()
            if kind == "Start":
                if (
                    value == "Paragraph"
                    and source is not None
                    and not self.containers
                    and _ENVIRONMENT.fullmatch(source, span["start"], span["end"])
                ):
                    tex = source[span["start"] : span["end"]].decode().strip()
                    self.out.append("<p>")
                    self._formula(tex, "")
                    self.out.append("</p>\n")
                    skip_to = span["end"]
                else:
                    self._start(value)
            elif kind == "End":
                self._end(value)
            elif kind == "Code":
                self.out.append(f"<code>{html.escape(value, quote=False)}</code>")
            elif kind in ("InlineMath", "DisplayMath"):
                self._formula(value, "$$" if kind == "DisplayMath" else "$")
            elif kind == "TaskListMarker":  # a box, as a character: no form control
                self.out.append("\u2611 " if value else "\u2610 ")
        self._flush()
        if self.math:  # every formula converted at once, then put in its place
            converted = _formulas([(tex, delimiter) for _, tex, delimiter in self.math])
            for (place, _, _), markup in zip(self.math, converted):
                self.out[place] = markup
        return "".join(self.out)

    def _formula(self, tex: str, delimiter: str) -> None:
        self.math.append((len(self.out), tex, delimiter))
        self.out.append("")  # its place

    def _flush(self) -> None:
        if self.pending:
            text = "".join(self.pending)
            self.out.append(html.escape(text, quote=False) if self.links else _linked(text))
            self.pending.clear()

    def _mark(self, event: str) -> None:
        if self.alt is not None:
            self.alt.append(" ")
        elif event == "SoftBreak":
            self.pending.append("\n")
        elif event in _BREAKS:
            self._flush()
            self.out.append(_BREAKS[event])

    def _in_image(self, kind: str, value: Any) -> None:
        assert self.alt is not None
        if kind in ("Code", "InlineMath", "DisplayMath"):
            self.alt.append(value)
        elif kind == "Start" and type(value) is dict and "Image" in value:
            self.nested_images += 1
        elif kind == "End" and value == "Image":
            if self.nested_images:
                self.nested_images -= 1
                return
            # Shown as a link: an answer never makes the page load a URL by itself. Inside a
            # link (a linked badge, say) it is that link's text: links do not nest.
            words = html.escape("".join(self.alt).strip() or "image", quote=False)
            if self.links:
                self.out.append(f"[image: {words}]")
            else:
                self.out.append(f'<a href="{self.image}">[image: {words}]</a>')
            self.alt = None

    def _start(self, value: Any) -> None:
        if type(value) is str:
            if value == "Item" and self.containers > _MAX_NESTING:
                return
            if value in _TAGS:
                self.out.append(_TAGS[value][0])
                if value == "TableRow":
                    self.cell = 0
            elif value == "TableHead":
                self.out.append("<thead>\n<tr>\n")
                self.head, self.cell = True, 0
            elif value == "TableCell":
                self._cell()
            return
        ((name, detail),) = value.items()
        if name == "Heading":
            self.out.append(f"<h{detail['level'][1]}>")
        elif name == "CodeBlock":
            self.code = []
            self.language = _fence_language(detail)
        elif name == "List":
            self.containers += 1
            if self.containers <= _MAX_NESTING:
                start = "" if detail in (None, 1) else f' start="{detail}"'
                self.out.append("<ul>\n" if detail is None else f"<ol{start}>\n")
        elif name == "BlockQuote":
            self.containers += 1
            if self.containers <= _MAX_NESTING:
                self.out.append("<blockquote>\n")
        elif name == "Link":
            url = detail["dest_url"]
            if detail["link_type"] == "Email":
                url = "mailto:" + url
            title = detail["title"]
            title = f' title="{html.escape(title, quote=True)}"' if title else ""
            self.out.append(f'<a href="{html.escape(url, quote=True)}"{title}>')
            self.links += 1
        elif name == "Image":
            self.alt, self.image = [], html.escape(detail["dest_url"], quote=True)
        elif name == "Table":
            self.aligns, self.head = tuple(detail), False
            self.out.append("<table>\n")

    def _cell(self) -> None:
        tag = "th" if self.head else "td"
        align = self.aligns[self.cell] if self.cell < len(self.aligns) else "None"
        style = "" if align == "None" else f' style="text-align:{align.lower()}"'
        self.out.append(f"<{tag}{style}>")

    def _end(self, value: Any) -> None:
        if type(value) is str:
            if value == "Item" and self.containers > _MAX_NESTING:
                self.out.append("<br />\n")  # items in lists nested too deep: one a line
                return
            if value in _TAGS:
                self.out.append(_TAGS[value][1])
                if value == "Link":
                    self.links -= 1
            elif value == "CodeBlock":
                self.out.append(_highlight("".join(self.code or ()), self.language))
                self.code = None
            elif value == "TableHead":
                self.out.append("</tr>\n</thead>\n<tbody>\n")
                self.head = False
            elif value == "TableCell":
                self.out.append("</th>\n" if self.head else "</td>\n")
                self.cell += 1
            elif value == "Table":
                self.out.append("</tbody>\n</table>\n")
            return
        ((name, detail),) = value.items()
        if name == "Heading":
            self.out.append(f"</h{detail[1]}>\n")
        elif name == "List":
            if self.containers <= _MAX_NESTING:
                self.out.append("</ol>\n" if detail else "</ul>\n")
            self.containers -= 1
        elif name == "BlockQuote":
            if self.containers <= _MAX_NESTING:
                self.out.append("</blockquote>\n")
            self.containers -= 1


def render_markdown(text: str, *, wrap: bool = True) -> str:
    """An untrusted Markdown answer as clean HTML, inert for JupyterLab and MathJax."""
    inner = clean_html(_Writer(text).html())
    return _wrap(inner) if wrap else inner


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})", re.M)


def _stable_end(text: str) -> int:
    """Where the finished blocks of a growing answer end: the last blank line outside a code
    fence and outside ``$$`` math (0 when there is none)."""
    end = 0
    fences = dollars = 0
    position = 0
    for match in re.finditer(r"\n[ \t]*\n", text):
        # Counted piece by piece (each starts at a newline, which no marker spans): one pass.
        fences += len(_FENCE.findall(text, position, match.start()))
        dollars += text.count("$$", position, match.start())
        position = match.start()
        if fences % 2 == 0 and dollars % 2 == 0:
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

    def render(self, text: str, note: str = "", arriving: str = "") -> dict[str, str]:
        """The bundle of ``text`` so far; ``note`` (a stop) goes under it, and ``arriving``
        (this package's marker HTML) ends the answer while more is to come."""
        end = _stable_end(text)
        if end and text[:end] != self._stable:
            if not text.startswith(self._stable):
                self._stable_html = ""
                self._stable = ""
            self._stable_html += render_markdown(text[len(self._stable) : end], wrap=False)
            self._stable = text[:end]
        tail = render_markdown(text[len(self._stable) :], wrap=False)
        html_ = _wrap(self._stable_html + tail + (note_html(note) if note else arriving))
        return {"text/html": html_, "text/plain": text}


def note_html(note: str) -> str:
    """A line under an answer (its model and tokens, why it stopped), in the theme's quieter
    text colour; put inside the answer's wrapper."""
    return f'<p style="color: var(--jp-ui-font-color2, #616161)"><em>{escape(note)}</em></p>'


def render_code(blocks: list[tuple[str, str]], *, default_language: str = "python") -> str:
    """Code blocks as highlighted, clean HTML."""
    inner = "".join(_highlight(code, language or default_language) for language, code in blocks)
    return _wrap(clean_html(inner))


def _fence_language(detail: Any) -> str:
    """A code block's language: the first word of its fence's info string (an indented block
    has none). The rest of the info string is never used."""
    words = detail["Fenced"].split(maxsplit=1) if type(detail) is dict else ()
    return words[0] if words else ""


def _code_blocks(text: str) -> list[tuple[str, str]]:
    """The answer's code blocks, as the renderer reads them: (language, code) pairs."""
    pyromark, options = _pulldown()
    blocks: list[tuple[str, str]] = []
    code: list[str] | None = None
    language = ""
    for event in pyromark.events(text, options=options):
        if type(event) is str:
            continue
        ((kind, value),) = event.items()
        if code is not None and kind == "Text":
            code.append(value)
        elif kind == "Start" and type(value) is dict and "CodeBlock" in value:
            language = _fence_language(value["CodeBlock"])
            code = []
        elif kind == "End" and value == "CodeBlock" and code is not None:
            blocks.append((language, "".join(code)))
            code = None
    return blocks


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


class Answer(str):
    """A model's answer: a ``str`` (its text as the service sent it) that shows itself in the
    chosen format and keeps where it came from.

    Every string method works on it (``x.upper()``, ``isinstance(x, str)``); ``value`` is what
    the format makes of it: the text (markdown, text), the code (code) or the parsed value
    (json). ``code`` is the answer's code whatever the format: its code blocks joined, or all of
    it when it has none.
    """

    #: The format it is shown in (``format`` itself stays ``str.format``).
    shown_as: str
    model: str
    cached: bool
    completion: Any
    data: Any

    def __new__(
        cls,
        text: str,
        *,
        format: str = "markdown",
        model: str = "",
        cached: bool = False,
        completion: Any = None,
    ) -> Self:
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
        self = super().__new__(cls, text)
        self.shown_as = format
        self.model = model
        self.cached = cached
        #: Where the answer came from (``api.Completion``): provider, model, parameters,
        #: seconds, token usage, finish reason; None for an answer made from text alone.
        self.completion = completion
        self.data = extract_json(text) if format == "json" else None
        return self

    @property
    def text(self) -> str:
        """The answer's text, as a plain ``str``."""
        return str.__str__(self)

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
    def has_code(self) -> bool:
        """Whether the answer holds code: a code block, or text that is all Python."""
        if _code_blocks(self.text):
            return True
        try:
            compile(self.text, "<answer>", "exec")
        except (SyntaxError, ValueError):
            return False
        return bool(self.text.strip())

    @property
    def cell_code(self) -> str:
        """The code for a new notebook cell: the Python blocks (labelled so, or unlabelled)
        when the answer mixes them with others (a shell line to install something, say), else
        all of its code."""
        python = [(lang, code) for lang, code in self.blocks if lang.lower() in _PYTHON]
        return _join(python or self.blocks)

    @property
    def value(self) -> Any:
        if self.shown_as == "code":
            return self.code
        if self.shown_as == "json":
            return self.data
        return self.text

    def bundle(self) -> dict[str, Any]:
        """The mimebundle the answer shows as."""
        note = self._note()
        if self.shown_as == "text":
            return {"text/plain": self.text + (f"\n\n[{note}]" if note else "")}
        if self.shown_as == "code":
            bundle: dict[str, Any] = {
                "text/html": render_code(self.blocks),
                "text/plain": self.code,
            }
        elif self.shown_as == "json":
            pretty = json.dumps(self.data, indent=2, ensure_ascii=False)
            bundle = {
                "text/html": render_code([("json", pretty + "\n")]),
                "text/plain": pretty,
            }
            if isinstance(self.data, (dict, list)):
                bundle["application/json"] = self.data
        else:
            bundle = {"text/html": render_markdown(self.text), "text/plain": self.text}
        if note:  # inside the wrapper, before its closing tag
            bundle["text/html"] = bundle["text/html"][: -len("</div>")] + note_html(note) + "</div>"
        looked = self.looked_at()
        if looked:
            bundle["text/html"] = self._looked_at_html() + bundle["text/html"]
            if self.shown_as == "markdown":
                bundle["text/plain"] = f"[{looked}]\n\n{bundle['text/plain']}"
        return bundle

    def looked_at(self) -> str:
        """``looked at: describe(sales), value_counts(sales, region)``: the tools the model
        called on the way to the answer ("" when it called none)."""
        calls = getattr(self.completion, "tool_calls", None)
        if not calls:
            return ""
        from .tools import ToolRecord

        labels = [ToolRecord(**call).label() for call in calls[:8]]
        more = f", and {len(calls) - 8} more" if len(calls) > 8 else ""
        return "looked at: " + ", ".join(labels) + more

    def _looked_at_html(self) -> str:
        """The calls as a collapsed line above the answer, each with its result's size."""
        from .tools import ToolRecord

        items = []
        for call in self.completion.tool_calls:
            record = ToolRecord(**call)
            outcome = f"failed: {record.error}" if record.error else f"{record.chars:,} characters"
            items.append(f"<li><code>{escape(record.label())}</code>: {escape(outcome)}</li>")
        summary = escape(self.looked_at())
        return (
            f"<details><summary><small>{summary}</small></summary>"
            f"<ul>{''.join(items)}</ul></details>"
        )

    def _note(self) -> str:
        """The line under the answer: its model, token counts when known, a cut at the token
        limit."""
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
        cost = getattr(self.completion, "cost", None)
        # The cost stands beside the token counts (and alone when it is a sum of money).
        if cost is not None and (usage or cost.usd or cost.saved):
            notes.append(cost.label)
        answer_file = getattr(self.completion, "answer_file", None)
        if answer_file:
            notes.append(f"answer file {answer_file}")
        # Every backend's answer names its model (Pizzagpt reports no tokens).
        return " · ".join([self.completion.model_id, *notes])

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        if self.completion is None:
            return self.bundle()
        return self.bundle(), {"pizzagpt_magic": self.metadata}

    def __repr__(self) -> str:
        return str(self.bundle()["text/plain"])

    def __reduce__(self) -> Any:
        # Pickled (multiprocessing, a cache) as the text with its format: the completion may
        # hold what does not pickle.
        return (_answer, (self.text, self.shown_as, self.model, self.cached))


def _answer(text: str, format: str, model: str, cached: bool) -> Answer:
    return Answer(text, format=format, model=model, cached=cached)


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

    def __init__(
        self,
        labels: list[Any],
        results: list[Any],
        elapsed: float,
        model: str,
        *,
        format: str = "markdown",
        cached: int = 0,
    ) -> None:
        self.labels = labels
        self.results = results
        self.elapsed = elapsed
        self.model = model
        #: The answers' format: json values and code are shown as code, not read as Markdown.
        self.format = format
        #: How many answers came from the cache.
        self.cached = cached
        self.failures = {
            label: r for label, r in zip(labels, results) if isinstance(r, BaseException)
        }
        self.answers: Any = None
        #: The answer file the batch read and wrote (its name), if any: then what the cell
        #: saves holds nothing that changes between runs, and the answers' keys.
        self.answer_file: str | None = None
        self.keys: list[str] = []
        #: What the batch's requests cost, as a label (``$0.0123``); None leaves it unsaid.
        self.cost: str | None = None

    def failure_line(self) -> str:
        listed = "; ".join(f"#{label}: {exc}" for label, exc in list(self.failures.items())[:3])
        more = f"; and {len(self.failures) - 3} more" if len(self.failures) > 3 else ""
        return f"{len(self.failures)} of {len(self.results)} prompts failed ({listed}{more})"

    def _headline(self) -> str:
        count = len(self.results)
        answers = f"{count} answer{'' if count == 1 else 's'}"
        took = f" in {self.elapsed:.1f} s" if self.answer_file is None else ""
        cost = f", {self.cost}" if self.cost else ""
        # With an answer file the line stays the same from run to run: no cache count.
        cached = self.cached if self.answer_file is None else 0
        if cached and cached == count:
            source = f"{answers} of {self.model}, all from the cache,"
        elif cached:
            source = f"{answers} from {self.model} ({cached} from the cache)"
        else:
            source = f"{answers} from {self.model}"
        line = f"{source}{took}, {len(self.failures)} failed{cost}"
        if self.answer_file is not None:
            line += f" · answer file {self.answer_file}"
        return line

    def display(self) -> SafeMarkdown:
        answered = [
            (label, value)
            for label, value in zip(self.labels, self.results)
            if not isinstance(value, BaseException)
        ]
        parts: list[Any] = [Markup(f"<p><strong>{escape(self._headline())}</strong></p><ul>")]
        plain = [self._headline()]
        as_code = self.format in ("json", "code")
        for label, value in answered[: self.SHOWN]:
            if self.format == "json":  # the value as JSON, escapes and all
                text = json.dumps(value, ensure_ascii=False)
            else:
                text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            first = text.strip().splitlines()[0] if text.strip() else ""
            first = first if len(first) <= 200 else first[:199] + "…"
            # Each answer's line is rendered on its own: it cannot open a block that swallows
            # what follows. JSON and code are shown as they are, in code style.
            shown = Markup(f"<code>{escape(first)}</code>") if as_code else first
            parts += [Markup(f"<li><code>{escape(label)}</code>: "), shown, Markup("</li>")]
            plain.append(f"[{label}] {first}")
        parts.append(Markup("</ul>"))
        if len(self.results) > self.SHOWN:
            parts.append(Markup(f"<p><em>… and {len(self.results) - self.SHOWN} more</em></p>"))
        return SafeMarkdown(parts, "\n".join(plain))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        bundle = self.display()._repr_mimebundle_()
        if self.answer_file is None:
            return bundle
        meta = {"answer_file": self.answer_file, "answer_keys": sorted(set(self.keys))}
        return bundle, {"pizzagpt_magic": meta}

    def __repr__(self) -> str:
        return self.display().plain
