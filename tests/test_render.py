"""Safe rendering of untrusted answers, and the answer formats.

Every rendered output is read back with an HTML parser and audited against what may reach the
page: allowed tags and attributes by name, link schemes by name, no classes but the wrapper's
(which tells MathJax to read nothing inside), no TeX command MathJax could turn into a link.
"""

from __future__ import annotations

import json
import os
import re
from html import escape
from html.parser import HTMLParser

import pytest
from hostile import HOSTILE
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pizzagpt_magic.errors import AnswerFormatError
from pizzagpt_magic.render import (
    WRAPPER_CLASSES,
    Answer,
    BatchSummary,
    Markup,
    SafeMarkdown,
    _linked,
    _linkifier,
    render_code,
    render_markdown,
)

HTML_TAGS = set(
    "a abbr b blockquote br code del div em h1 h2 h3 h4 h5 h6 hr i li ol p pre s span strong "
    "sub sup table tbody td th thead tr ul".split()
)
MATHML_TAGS = set(
    "math mi mn mo ms mspace mtext mrow mfrac msqrt mroot msub msup msubsup munder mover "
    "munderover mmultiscripts mprescripts mtable mtr mtd mstyle mpadded mphantom menclose "
    "merror semantics annotation".split()
)
SAFE_SCHEMES = {"http", "https", "mailto"}
STYLE_PROPERTIES = {"color", "font-weight", "font-style", "text-align", "display"}
STYLE_PROPERTIES |= {"--pizzagpt-live"}  # a formula's TeX source, hidden while trusted
#: The one style this package writes besides those: a code block's spacing.
PRE_STYLE = "margin: 1.5em 2em"


class Auditor(HTMLParser):
    """Lists everything in an HTML fragment that is not on the allow-lists."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.classes: list[tuple[int, str]] = []
        self.depth = 0
        self.text: list[str] = []
        self.math_depth = 0

    def handle_starttag(self, tag, attrs):
        self.depth += 1
        if tag not in HTML_TAGS | MATHML_TAGS:
            self.problems.append(f"<{tag}>")
        if tag == "math":
            self.math_depth += 1
        for name, value in attrs:
            value = value or ""
            if name.startswith("on") or name in {"id", "name", "src", "srcdoc", "action", "data"}:
                self.problems.append(f"{tag}[{name}]")
            if name == "class":
                self.classes.append((self.depth, value))
            if name == "href":
                url = re.sub(r"[\x00-\x20\x7f-\xa0\u3000]", "", value).lower()
                scheme = re.match(r"([a-z][a-z0-9+.-]*):", url)
                if not scheme or scheme.group(1) not in SAFE_SCHEMES:
                    self.problems.append(f"{tag}[href={value!r}]")
            if name == "style" and not (tag == "pre" and value == PRE_STYLE):
                for declaration in filter(None, value.split(";")):
                    prop = declaration.split(":", 1)[0].strip().lower()
                    if prop not in STYLE_PROPERTIES or "url(" in declaration.lower():
                        self.problems.append(f"{tag}[style={value!r}]")

    def handle_endtag(self, tag):
        if tag == "math":
            self.math_depth -= 1
        self.depth -= 1

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        self.depth -= 1

    def handle_data(self, data):
        if not self.math_depth:
            self.text.append(data)

    def handle_comment(self, data):
        self.problems.append("<!--comment-->")

    def handle_pi(self, data):
        self.problems.append("<?pi>")

    def handle_decl(self, decl):
        self.problems.append("<!decl>")


def audit(output: str) -> list[str]:
    """What in a rendered output could run, link to a script, or be read by MathJax."""
    auditor = Auditor()
    auditor.feed(output)
    auditor.close()
    problems = list(auditor.problems)
    # The one class in the output is the wrapper's, on the outermost element: MathJax skips
    # it and everything inside, and nothing inside can switch processing back on.
    if auditor.classes != [(1, WRAPPER_CLASSES)]:
        problems.append(f"classes {auditor.classes}")
    if not output.startswith(f'<div class="{WRAPPER_CLASSES}">') or not output.endswith("</div>"):
        problems.append("not wrapped")
    return problems


def test_hostile_corpus_is_large_and_hostile():
    assert len(HOSTILE) >= 70
    # Each case holds HTML, a script URL or a TeX command a renderer could act on.
    pattern = (
        r"<|javascript|vbscript|data:|on\w+=|\\(href|url|class|cssId|style|unicode|html|require)"
    )
    assert all(re.search(pattern, case) or "](" in case for case in HOSTILE)


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_answer_renders_inert(text):
    assert audit(render_markdown(text)) == []


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_answer_inert_in_every_format(text):
    for format in ("markdown", "code"):
        bundle = Answer(text, format=format)._repr_mimebundle_()
        assert "text/markdown" not in bundle
        assert audit(bundle["text/html"]) == []
        assert bundle["text/plain"]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_answer_inert_in_summaries_and_history(text):
    summary = BatchSummary(["a", "b"], [text, "```\n" + text], 1.0, "m")
    assert audit(summary._repr_mimebundle_()["text/html"]) == []
    history = SafeMarkdown([Markup("<blockquote>"), text, Markup("</blockquote>"), text], "x")
    assert audit(history._repr_mimebundle_()["text/html"]) == []


def test_no_tex_command_survives_outside_mathml():
    # math-core makes no link: TeX it does not know is shown as its source, as code, inside
    # the wrapper that MathJax skips.
    html = render_markdown(r"$\href{javascript:alert(1)}{x}$ and $$\url{javascript:x}$$")
    assert "href=" not in html and "<math" not in html
    assert "<code>$\\href{javascript:alert(1)}{x}$</code>" in html
    assert "<code>$$\\url{javascript:x}$$</code>" in html
    assert audit(html) == []


PIECES = list("<>/ab=:()[]`'\"\n !&#;*-|\\$~{}\t") + [
    "script",
    "img ",
    "javascript:",
    " onerror=",
    "```",
    "~~~",
    "    ",
    "](",
    "]: ",
    "data:",
    "&#106;",
    "\x00",
    "\u00a0",
    "<!--",
    "-->",
    "http://x",
    "www.x.com",
    "\\href{",
    "\\begin{x}",
    "\\end{x}",
    "$$",
    "<math>",
    "<svg>",
]


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None)
@given(st.lists(st.sampled_from(PIECES + HOSTILE), max_size=30).map("".join) | st.text())
def test_nothing_live_survives_fuzzing(text):
    assert audit(render_markdown(text)) == []
    assert audit(Answer(text, format="code")._repr_mimebundle_()["text/html"]) == []


LINK_PIECES = [
    "http://x.com",
    "https://",
    "HTTPS://a.b/c?d=e",
    "www.a.org",
    "WWW.",
    "ｗｗｗ.",
    "a@b.io",
    "@",
    "mailto:",
    "ftp://",
    "//z.org",
    "setup.py",
    "-",
    "(",
    ")",
    ".",
    "/",
    "_",
    "|",
    "<",
    ">",
    '"',
    "'",
    "\u3000",
    "\u00a0",
]


def linked_whole(text: str) -> str:
    """What ``_linked`` makes, with linkify-it reading the whole text at once."""
    out, position = [], 0
    for match in _linkifier().match(text) or ():
        out.append(escape(text[position : match.index], quote=False))
        out.append(f'<a href="{escape(match.url)}">{escape(match.text, quote=False)}</a>')
        position = match.last_index
    out.append(escape(text[position:], quote=False))
    return "".join(out)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None)
@given(
    st.lists(
        st.sampled_from(LINK_PIECES + PIECES) | st.text(max_size=5) | st.sampled_from(" \n\t"),
        max_size=30,
    ).map("".join)
)
@example("-http://x www.y.com //z.org a@b.io")
@example("x.com/a@b.io www.y.com")
def test_linking_runs_alone_links_as_the_whole_text(text):
    # For speed, linkify-it reads only the runs without spaces that hold a marker (://, @,
    # www.); the links must be those it finds in the whole text.
    assert _linked(text) == linked_whole(text)


# -- legitimate answers render as users expect ----------------------------------------------


def test_markdown_renders():
    text = (
        "# Title\n\n**bold**, *em*, ~~gone~~, a [link](https://example.org), "
        "<https://auto.org> and www.example.com.\n\n"
        "- one\n- two\n\n1. first\n\n| a | b |\n|---|--:|\n| 1 | 2 |\n\n> quoted\n\n"
        "```python\nif a < b and '<script>' in s:\n    pass\n```\n\nInline `<b>code</b>` stays."
    )
    html = render_markdown(text)
    assert audit(html) == []
    for piece in (
        "<h1>Title</h1>",
        "<strong>bold</strong>",
        "<em>em</em>",
        "<s>gone</s>",
        '<a href="https://example.org"',
        '<a href="https://auto.org"',
        '<a href="http://www.example.com"',
        "<ul>",
        "<ol>",
        "<table>",
        '<td style="text-align:right">2</td>',
        "<blockquote>",
        "<code>&lt;b&gt;code&lt;/b&gt;</code>",
    ):
        assert piece in html, piece
    # Highlighted (Pygments' inline colours), and the <script> text shown verbatim.
    assert '<span style="color:' in html and "&lt;script&gt;" in html


def test_text_that_looks_like_html_stays_visible():
    html = render_markdown("if a<b then <tag> stays visible")
    assert "if a&lt;b then &lt;tag&gt; stays visible" in html


def test_math_renders_as_mathml_with_less_than():
    html = render_markdown("Inline $a < b$ and display:\n\n$$\\sum_{i<n} i$$\n")
    assert audit(html) == []
    assert "<math>" in html and '<math display="block">' in html
    assert "<mo>&lt;</mo>" in html and "∑" in html
    assert "Misplaced" not in html


def test_math_that_cannot_convert_is_shown_as_source():
    html = render_markdown("$\\frac{1}{$")
    assert audit(html) == []


def test_autolinks_are_githubs_whatever_else_the_answer_holds():
    # A bare name with a dot is a file or an attribute, not an address: it stays text, also
    # in an answer that holds a www. address (which once turned linking of every such name on).
    for rest in ("", " and www.example.com", " and mail me@example.com"):
        html = render_markdown(f"Run setup.py, then frame.pop and example.com{rest}.")
        assert html.count("<a ") == (1 if rest else 0), html
    html = render_markdown("Mail me@example.com, see https://x.org/a or WWW.Example.com/b.")
    assert 'href="mailto:me@example.com"' in html and 'href="https://x.org/a"' in html
    assert 'href="http://WWW.Example.com/b"' in html


def test_images_become_links():
    html = render_markdown("![chart](https://example.org/c.png)")
    assert "<img" not in html
    assert '<a href="https://example.org/c.png"' in html and "[image: chart]" in html


def test_relative_and_fragment_links_are_dropped():
    html = render_markdown("[a](/lab/api) [b](#x) [c](notebook.ipynb)")
    assert "href" not in html


def test_answer_markdown_bundle():
    answer = Answer("**hi** <script>x</script>", model="gpt-4o-mini")
    bundle = answer._repr_mimebundle_()
    assert set(bundle) == {"text/html", "text/plain"}
    assert bundle["text/plain"] == "**hi** <script>x</script>"
    assert "<strong>hi</strong> &lt;script&gt;x&lt;/script&gt;" in bundle["text/html"]
    assert str(answer) == answer.text and answer.value == answer.text


def test_answer_text_format_has_no_markup():
    assert Answer("**raw**", format="text")._repr_mimebundle_() == {"text/plain": "**raw**"}


def test_answer_code_format():
    answer = Answer("Try this:\n\n```sql\nSELECT 1;\n```\n\nor\n\n```\nx = 1\n```\n", format="code")
    assert answer.blocks == [("sql", "SELECT 1;\n"), ("", "x = 1\n")]
    bundle = answer._repr_mimebundle_()
    assert bundle["text/plain"] == answer.code == "SELECT 1;\nx = 1\n"
    assert bundle["text/html"].count("<pre ") == 2 and "SELECT" in bundle["text/html"]
    assert Answer("print(1)", format="code").code == "print(1)\n"


def test_code_format_info_string_only_picks_a_lexer():
    answer = Answer('```x"><img src=x onerror=alert(1)>\nprint(1)\n```', format="code")
    html = answer._repr_mimebundle_()["text/html"]
    assert audit(html) == [] and "onerror" not in html
    assert render_code([("python", "x = '<b>'\n")]).count("&lt;b&gt;") == 1


@pytest.mark.parametrize(
    "text",
    [
        '{"a": [1, 2]}',
        'Here:\n```json\n{"a": [1, 2]}\n```',
        'Result: {"a": [1, 2]} done',
        '```\n{"a": [1, 2]}\n```',
    ],
)
def test_answer_json_format(text):
    answer = Answer(text, format="json")
    assert answer.data == answer.value == {"a": [1, 2]}
    bundle = answer._repr_mimebundle_()
    assert bundle["application/json"] == {"a": [1, 2]}
    assert json.loads(bundle["text/plain"]) == {"a": [1, 2]}
    assert audit(bundle["text/html"]) == [] and "<pre " in bundle["text/html"]


def test_json_strings_with_html_stay_text():
    bundle = Answer('{"x": "<img src=x onerror=alert(1)>"}', format="json")._repr_mimebundle_()
    assert audit(bundle["text/html"]) == [] and "<img" not in bundle["text/html"]


def test_answer_not_json_is_a_clear_error():
    with pytest.raises(AnswerFormatError, match="not JSON") as info:
        Answer("no json here", format="json")
    assert info.value.text == "no json here"
    assert isinstance(info.value, ValueError)


def test_batch_summary_names_items_by_label():
    from pizzagpt_magic.errors import HTTPStatusError

    failure = HTTPStatusError(500, "Internal Server Error", "http://x")
    summary = BatchSummary(
        ["North", "South", "East", "West"],
        ["Fine <b>answer</b>\nmore", failure, "Two", "Three"],
        1.25,
        "m",
    )
    bundle = summary._repr_mimebundle_()
    assert bundle["text/plain"].splitlines() == [
        "4 answers from m in 1.2 s, 1 failed",
        "[North] Fine <b>answer</b>",
        "[East] Two",
        "[West] Three",
    ]
    assert "<code>North</code>: <p>Fine &lt;b&gt;answer&lt;/b&gt;</p>" in bundle["text/html"]
    assert "… and 1 more" in bundle["text/html"]
    assert (
        summary.failure_line()
        == "1 of 4 prompts failed (#South: HTTP 500 Internal Server Error from http://x)"
    )


def test_summary_line_opening_a_fence_does_not_swallow_the_rest():
    summary = BatchSummary([0, 1], ["```\nfirst", "second <img src=x onerror=y>"], 1.0, "m")
    html = summary._repr_mimebundle_()["text/html"]
    assert audit(html) == [] and "<code>1</code>" in html


@pytest.mark.parametrize(
    "html",
    [
        "<img src=x onerror=alert(1)>",
        '<a href="java\tscript:alert(1)">x</a>',
        '<span class="mathjax_process">$\\href{javascript:x}{y}$</span>',
        '<span style="position:fixed">x</span>',
        "<script>x</script>",
    ],
)
def test_the_audit_sees_live_markup(html):
    assert audit(f'<div class="{WRAPPER_CLASSES}">{html}</div>') != []


def test_math_environment_standing_alone_renders_as_math():
    # Found by the events' byte ranges: text with multi-byte characters before it must not
    # shift them.
    text = "Für die Größe gilt:\n\n\\begin{aligned}a &= b \\\\ c &< d\\end{aligned}\n\nDanach: é."
    html = render_markdown(text)
    assert audit(html) == []
    assert '<math display="block">' in html and "<mtable" in html and "<mo>&lt;</mo>" in html
    assert "<p>Danach: é.</p>" in html and "<p>Für die Größe gilt:</p>" in html
    # Not standing alone (inside a sentence) it is text, as written.
    assert "<math" not in render_markdown("See \\begin{aligned}a\\end{aligned} here.")


def test_a_formula_that_cannot_be_converted_shows_as_written():
    environment = "\\begin{aligned}a &= \\nosuchmacro{b}\\end{aligned}"
    for written in (environment, f"$${environment}$$", "$\\nosuchmacro{x}$"):
        html = render_markdown(f"Before.\n\n{written}\n\nAfter.")
        assert audit(html) == [] and "<math" not in html
        assert f"<code>{escape(written)}</code>" in html


def test_code_blocks_extracted_are_those_shown():
    text = "Run:\n\n```bash\npip install x\n```\n\n    indented = 1\n\n> ```py\n> quoted()\n> ```\n"
    assert Answer(text).blocks == [
        ("bash", "pip install x\n"),
        ("", "indented = 1\n"),
        ("py", "quoted()\n"),
    ]
    assert render_markdown(text).count("<pre ") == 3
    # A fence's language is its info string's first word, whatever space follows it, for the
    # code given and for the code shown alike.
    for info in ("Python title=x.py", "Python\ttitle", " Python "):
        fenced = f"```{info}\nprint(1)\n```\n"
        assert Answer(fenced).blocks == [("Python", "print(1)\n")]
        assert render_markdown(fenced) == render_markdown("```python\nprint(1)\n```\n")


def test_image_text_is_the_links_text():
    html = render_markdown("![a *chart* of `sales`](https://example.org/c.png) and ![](x.png)")
    assert "[image: a chart of sales]" in html and "[image: image]" in html and "<img" not in html
    # A linked image (a badge) is its link's text: one link, to where the badge points.
    html = render_markdown("[![build](https://ci.io/badge.svg)](https://ci.io/run)")
    assert html.count("<a ") == 1 and '<a href="https://ci.io/run"' in html
    assert "[image: build]</a>" in html


def test_task_lists_show_their_boxes_as_characters():
    html = render_markdown("- [ ] load the data\n- [x] check the <b>columns</b>\n")
    assert "<li>\u2610 load the data</li>" in html
    assert "<li>\u2611 check the &lt;b&gt;columns&lt;/b&gt;</li>" in html
    assert "<input" not in html and audit(html) == []


def run_alone(script: str) -> None:
    """``script`` in a Python process of its own, within a generous bound: what a crash or a
    stall of the renderer would end is that process, not the tests'."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])


def test_a_long_run_without_spaces_is_linked_in_linear_time():
    # An answer holding a long token (a base64 blob, say) and an address elsewhere: the search
    # for the runs that may hold links once went back over the token from every character in
    # it (200,000 characters: minutes). The bound is generous: it takes milliseconds.
    run_alone(
        "from pizzagpt_magic.render import render_markdown\n"
        "html = render_markdown('x' * 200_000 + ' mail a@b.io or see https://x.io')\n"
        "assert html.count('<a ') == 2, html[-300:]\n"
    )


def test_answers_nested_to_extremes_neither_crash_nor_stall_the_kernel():
    # In a process of its own: before the guards, math-core's recursion overflowed the stack
    # (a segmentation fault: the kernel gone) on formulas nested some thousands deep, by
    # braces, chains of commands or a short macro; 200,000 ">" took minutes in the
    # sanitiser's HTML parser, and 200,000 characters of addresses without a space about a
    # minute in linkify-it. Each now takes milliseconds; the bound is generous.
    run_alone(r"""
from pizzagpt_magic.render import render_markdown
cases = [
    "$" + "{" * 20000 + "x" + "}" * 20000 + "$",
    "$" + "\\sqrt" * 20000 + " x$",
    "$$" + "\\hat" * 20000 + " x$$",
    "$" + "\\frac1" * 20000 + " x$",
    "$\\def\\x#1{" + "{" * 99 + "#1" + "}" * 99 + "}" + "\\x{" * 98 + "y" + "}" * 98 + "$",
    "$\\newcommand{\\x}[1]{{#1}}\\x{y}$",
    ">" * 200000 + " deep",
    "".join("  " * i + "- deep\n" for i in range(3000)),
    "https://x.io/" * 16000,
]
for case in cases:
    html = render_markdown(case)
    assert "<math" not in html or len(case) < 200, case[:40]
""")


def test_short_formulas_and_macros_still_render():
    html = render_markdown("$\\sqrt{\\sqrt{x}}$ and $\\hat{\\hat{y}}$ and $\\def\\x{y}\\x$")
    assert html.count("<math") == 2 and "<code>$\\def\\x{y}\\x$</code>" in html
    long = "$" + " + ".join(f"x_{{{i}}}" for i in range(200)) + "$"  # long, shallow
    assert "<math" in render_markdown(long)


def test_containers_nested_too_deep_keep_their_text():
    html = render_markdown(">" * 100 + " deep")
    assert html.count("<blockquote>") == 64 and "deep" in html and audit(html) == []
    html = render_markdown("".join("  " * i + f"- item{i}\n" for i in range(80)))
    assert html.count("<ul>") == 64 and "item79" in html and audit(html) == []


def test_a_long_streamed_answer_finds_its_finished_blocks_in_one_pass():
    # Each update looks for where the finished blocks end; it once counted the $$ from the
    # start of the answer at every blank line (2.6 million characters: about two minutes an
    # update). The bound is generous: it takes milliseconds.
    run_alone(
        "from pizzagpt_magic.render import _stable_end\n"
        "text = 'a formula $$x$$ and text\\n\\n' * 100_000 + 'and the tail'\n"
        "assert _stable_end(text) == len(text) - len('and the tail')\n"
    )


def test_code_is_coloured_by_the_theme_and_spaced_as_markdown():
    html = render_markdown("```python\nimport pandas as pd  # note\nx = 'a' + 1\n```\n\nAfter.")
    assert '<pre style="margin: 1.5em 2em">' in html  # JupyterLab's Markdown spacing
    assert "#" not in re.sub(r"># note<", "", html).split("<pre", 1)[1].split("</pre>")[0].replace(
        "# note", ""
    )  # no fixed colour: every colour is the theme's variable
    assert (
        'color:var(--jp-mirror-editor-keyword-color, currentColor);font-weight:bold">import<'
        in html
    )
    assert 'color:var(--jp-mirror-editor-string-color, currentColor)">' in html
    assert 'color:var(--jp-content-font-color2, currentColor);font-style:italic"># note<' in html
    assert audit(html) == []


def test_a_formula_is_mathml_live_and_its_tex_untrusted():
    html = render_markdown(r"Growth: $\frac{x_t - x_{t-1}}{x_{t-1}}$.")
    assert '<span style="display:none;display:var(--pizzagpt-live, contents)"><math>' in html
    source = (
        '<code style="--pizzagpt-live:none;display:var(--pizzagpt-live)">'
        "$\\frac{x_t - x_{t-1}}{x_{t-1}}$</code>"
    )
    assert source in html
    assert audit(html) == []
