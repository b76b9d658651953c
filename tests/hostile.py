"""Hostile answers: what a model steered by a poisoned data set may write.

Each family aims at a way raw HTML, a script URL or a TeX link could reach the page: plain XSS,
the gaps between CommonMark and JupyterLab's marked (fences closed by ``~`` or a backtick,
split code spans, autolinks swallowing backticks), fence info strings copied into attributes,
math swallowing code, odd bytes in link destinations, reference definitions in containers, and
MathJax's own ``\\href``, ``\\class``, ``\\style``, ``\\html...`` and ``\\unicode`` commands.
"""

from __future__ import annotations

XSS = [
    "<script>window.__pwned='script'</script>",
    "<img src=x onerror=\"window.__pwned='img'\">",
    "<iframe src='javascript:parent.__pwned=1'></iframe>",
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<object data='javascript:alert(1)'></object>",
    "<embed src='javascript:alert(1)'>",
    "<base href='javascript:alert(1)//'>",
    "<meta http-equiv='refresh' content='0;url=javascript:alert(1)'>",
    "<form action='javascript:alert(1)'><button>go</button></form>",
    "<a href='#' onclick='alert(1)'>x</a>",
    "<div\nonmouseover=alert(1)>block</div>",
    "<!-- comment --><svg onload=alert(1)>",
    "<details open ontoggle=alert(1)>",
    "<style>*{background:url(javascript:alert(1))}</style>",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    "\\\\<script>alert(1)</script>",
]
LINKS = [
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](java&#115;cript:alert(1))",
    "[click](&#x6A;avascript:alert(1))",
    "[click](<javascript:alert(1)>)",
    "[click](java\tscript:alert(1))",
    "[click](\u00a0javascript:alert(1))",
    "[click](\x0cjavascript:alert(1))",
    "[click](\rjavascript:alert(1))",
    "[click](\u3000javascript:alert(1))",
    "[click](\x0bjavascript:alert(1))",
    "[click](vbscript:msgbox(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![img](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    "![img](javascript:alert(1))",
    "<javascript:alert(1)>",
    "[ref]\n\n[ref]: javascript:alert(1)",
    "> [ref]\n>\n> [ref]: javascript:alert(1)",
    "- [ref]\n\n  [ref]: javascript:alert(1)",
    "[a\\]b]\n\n[a\\]b]: javascript:alert(1)",
    "[split\nlabel]\n\n[split\nlabel]: javascript:alert(1)",
    "[rel](/lab/api/kernels)",
    "[frag](#top)",
]
MARKED_GAPS = [
    "```\ncode\n```~\n<img src=x onerror=alert(1)>",
    "```\ncode\n```` \n<script>alert(1)</script>",
    "~~~\ncode\n~~~`\n<img src=x onerror=alert(1)>",
    "www.example.com/`x <img src=x onerror=alert(1)> `",
    "http://example.com/`a <img src=x onerror=alert(1)>`",
    "`a\n<meta http-equiv=refresh content=0;url=javascript:alert(1)>\n`",
    "  | h <img src=x onerror=alert(1)> |\n  |---|\n  | `c |",
    "`` ` `` <script>x</script>",
    "<```[ref]\n\n[ref]: javascript:alert(1)```",
    "<script>a()</script>\n    <img src=x onerror=alert(1)>",
]
FENCE_INFO = [
    '```x"><img src=x onerror=alert(1)>\nprint(1)\n```',
    '```x" onmouseover="alert(1)" autofocus onfocus="alert(1)" tabindex="1\nprint(1)\n```',
    "```python onload=alert(1)\nx = 1\n```",
]
MATH = [
    "$`$\n<img src=x onerror=alert(1)>\n$`$",
    "$$\n```\n$$\n<img src=x onerror=alert(1)>\n```",
    "\\begin{x}`\\end{x} <img src=x onerror=alert(1)> `",
    "$\\href{javascript:alert(1)}{click}$",
    "$\\href{java\tscript:alert(1)}{click}$",
    "$$\\href{java\nscript:alert(1)}{click}$$",
    "$\\href{\x01javascript:alert(1)}{x}$",
    "$$\\begin{aligned}\\href{javascript:alert(1)}{x}&=1\\end{aligned}$$",
    "`$\\href{javascript:alert(1)}{x}\n$`",
    "    $\\href{javascript:alert(1)}{x}$",
    "$\\url{javascript:alert(1)}$",
    "$\\class{mathjax_process}{x}$",
    "$\\cssId{x}{y}$ $\\style{position:fixed}{z}$",
    "$\\unicode{<img src=x onerror=alert(1)>}$",
    "$\\require{html}\\html{<img src=x onerror=alert(1)>}$",
    "$\\text{<img src=x onerror=alert(1)>}$",
    "\\(\\href{javascript:alert(1)}{x}\\)",
    "\\[\\href{javascript:alert(1)}{x}\\]",
]

#: Aimed at the writer of the parser's events: attributes it builds from an answer's link
#: titles, destinations and bare URLs, HTML blocks of every kind, TeX macros and environments.
EVENTS = [
    '[x](https://a.io "t\\" onmouseover=alert(1) x=\\"")',
    '![x](https://a.io/"onerror=alert(1)) ![y](javascript:alert(1))',
    'www.example.com/"onmouseover="alert(1)" and https://x.io/<img/src=x/onerror=alert(1)>',
    'mail me@x.io"onmouseover=alert(1)',
    "<![CDATA[<img src=x onerror=alert(1)>]]>",
    "<?php <img src=x onerror=alert(1)> ?>",
    "<!DOCTYPE html><img src=x onerror=alert(1)>",
    "| a <img src=x onerror=alert(1)> |\n|---|\n| <script>alert(1)</script> |",
    "# <svg onload=alert(1)> heading",
    "$\\def\\x{\\href{javascript:alert(1)}{y}}\\x$",
    "$</math><img src=x onerror=alert(1)>$",
    "\\begin{aligned}\\href{javascript:alert(1)}{x} &= 1\\end{aligned}",
    "\\begin{aligned}a\\end{aligned}</p><img src=x onerror=alert(1)>",
]

HOSTILE = XSS + LINKS + MARKED_GAPS + FENCE_INFO + MATH + EVENTS
