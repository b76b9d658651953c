"""Safe rendering of untrusted Markdown, and the answer formats."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from pizzagpt_magic.errors import AnswerFormatError
from pizzagpt_magic.render import Answer, MarkdownText, live_markup, safe_markdown

MARKDOWN_TAGS = {
    "p",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "strong",
    "em",
    "a",
    "img",
    "code",
    "pre",
    "ul",
    "ol",
    "li",
    "blockquote",
    "hr",
    "br",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
}


class _Auditor(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in MARKDOWN_TAGS:
            self.problems.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name not in {
                "href",
                "src",
                "alt",
                "title",
                "class",
                "style",
                "start",
            }:
                self.problems.append(f"{tag}[{name}]")
            if name in ("href", "src") and value:
                url = re.sub(r"[\x00-\x20]", "", value.lower())
                scheme = re.match(r"([a-z][a-z0-9+.-]*):", url)
                if scheme and scheme.group(1) not in {"http", "https", "mailto"}:
                    self.problems.append(f"{tag}[{name}={value}]")

    def handle_comment(self, data):
        self.problems.append("<!--comment-->")


def audit(markdown: str) -> list[str]:
    """Render as a browser-side renderer that trusts raw HTML would, and list what is live."""
    md = MarkdownIt("commonmark", {"html": True}).enable("table")
    md.validateLink = lambda url: True
    auditor = _Auditor()
    auditor.feed(md.render(markdown))
    return auditor.problems


HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<iframe src='javascript:alert(1)'></iframe>",
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](java&#115;cript:alert(1))",
    "[click](&#x6A;avascript:alert(1))",
    "[click](<javascript:alert(1)>)",
    "![img](data:text/html;base64,PHNjcmlwdD4=)",
    "[ref]\n\n[ref]: javascript:alert(1)",
    "<a href='x' onclick='alert(1)'>x</a>",
    "<div\nonmouseover=alert(1)>block</div>",
    "<!-- comment --><svg onload=alert(1)>",
    "<javascript:alert(1)>",
    "| a | b |\n|---|---|\n| <b onmouseover=alert(1)>x</b> | 2 |",
    "> quote <script>x</script>",
    "- item <img src=x onerror=y>",
    "\\\\<script>alert(1)</script>",
    "`` ` `` <script>x</script>",
    "<```[ref]\n\n[ref]: javascript:alert(1)```",
    "<script>a()</script>\n    <img src=x onerror=alert(1)>",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_html_is_neutralised(text):
    assert audit(text), "the case should be hostile to begin with"
    assert audit(safe_markdown(text)) == []
    assert live_markup(safe_markdown(text)) == []


def test_markdown_survives():
    text = (
        "# Title\n\n**bold** and *em*, a [link](https://example.org) and <https://auto.org>.\n\n"
        "- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "```python\nif a < b and '<script>' in s:\n    pass\n```\n\nInline `<b>code</b>` stays."
    )
    safe = safe_markdown(text)
    assert safe == text.replace("<https://auto.org>", "<https://auto.org>")
    html = MarkdownIt("commonmark").enable("table").render(safe)
    for tag in (
        "<h1>",
        "<strong>",
        "<em>",
        "<ul>",
        "<table>",
        'href="https://example.org"',
        'href="https://auto.org"',
        'class="language-python"',
    ):
        assert tag in html
    assert "&lt;script&gt;" in html and "&lt;b&gt;code&lt;/b&gt;" in html


def test_text_keeps_reading_the_same():
    safe = safe_markdown("if a<b then <tag> stays visible")
    html = MarkdownIt("commonmark").render(safe)
    assert "if a&lt;b then &lt;tag&gt; stays visible" in html


def test_code_blocks_are_untouched():
    text = "text <i>\n\n```html\n<script>alert(1)</script>\n```\n\n    <indented>\n"
    safe = safe_markdown(text)
    assert "```html\n<script>alert(1)</script>\n```" in safe
    assert "    <indented>" in safe
    assert "text &lt;i>" in safe


def test_tex_links_are_broken():
    assert "\\href" not in safe_markdown(r"$\href{javascript:alert(1)}{x}$").replace("\\\\href", "")


PIECES = list("<>/ab=:()[]`'\"\n !&#;*-|\\") + [
    "script",
    "img ",
    "javascript:",
    " onerror=",
    "```",
    "    ",
    "](",
    "]: ",
    "data:",
    "&#106;",
    "\t",
    "\x00",
    "<!--",
    "-->",
    "http://x",
]


@settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "400")))
@given(st.lists(st.sampled_from(PIECES + HOSTILE)).map("".join) | st.text())
def test_nothing_live_survives(text):
    assert audit(safe_markdown(text)) == []


def test_answer_markdown_bundle():
    answer = Answer("**hi** <script>x</script>", model="gpt-4o-mini")
    bundle = answer._repr_mimebundle_()
    assert bundle["text/plain"] == "**hi** <script>x</script>"
    assert bundle["text/markdown"] == "**hi** &lt;script>x&lt;/script>"
    assert str(answer) == answer.text and answer.value == answer.text


def test_answer_text_format_has_no_markdown():
    assert Answer("**raw**", format="text")._repr_mimebundle_() == {"text/plain": "**raw**"}


def test_answer_code_format():
    answer = Answer("Try this:\n\n```sql\nSELECT 1;\n```\n\nor\n\n```\nx = 1\n```\n", format="code")
    assert answer.blocks == [("sql", "SELECT 1;\n"), ("", "x = 1\n")]
    bundle = answer._repr_mimebundle_()
    assert bundle["text/markdown"] == "```sql\nSELECT 1;\n```\n\n```python\nx = 1\n```"
    assert bundle["text/plain"] == answer.code == "SELECT 1;\nx = 1\n"
    assert Answer("print(1)", format="code").code == "print(1)\n"


def test_code_with_backticks_gets_a_longer_fence():
    answer = Answer("````md\n```inner```\n````\n", format="code")
    assert answer._repr_mimebundle_()["text/markdown"].startswith("````md\n")


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
    assert bundle["text/markdown"].startswith("```json\n")


def test_answer_not_json_is_a_clear_error():
    with pytest.raises(AnswerFormatError, match="not JSON") as info:
        Answer("no json here", format="json")
    assert info.value.text == "no json here"
    assert isinstance(info.value, ValueError)


def test_markdown_text_is_safe_too():
    bundle = MarkdownText("<img src=x onerror=y>")._repr_mimebundle_()
    assert audit(bundle["text/markdown"]) == []


def test_batch_summary_names_items_by_label():
    from pizzagpt_magic.errors import HTTPStatusError
    from pizzagpt_magic.render import BatchSummary

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
    assert "- `North`: Fine &lt;b>answer&lt;/b>" in bundle["text/markdown"]
    assert "*… and 1 more*" in bundle["text/markdown"]
    assert (
        summary.failure_line()
        == "1 of 4 prompts failed (#South: HTTP 500 Internal Server Error from http://x)"
    )
