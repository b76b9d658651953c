"""A day in JupyterLab, in a real browser: code coloured by the theme and readable in both the
light and the dark theme (each token's contrast measured on the page), code blocks spaced as
JupyterLab's own Markdown, and formulas readable in a notebook reopened untrusted."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_hostile_corpus import notebook  # noqa: E402
from test_jupyterlab import open_notebook, wait_done  # noqa: E402

CODE = """```python
import pandas as pd  # the data
from math import sqrt

@cache
def growth(frame: pd.DataFrame, column="sales") -> float:
    \"\"\"Growth of a column.\"\"\"
    values = frame[column].to_numpy()
    if len(values) < 2 or values[0] == 0:
        return None
    print(f"{len(values)} rows\\n", True, 0x1F, 3.5e-2)
    return (values[-1] - values[0]) / values[0] * 100
```"""
ANSWER = (
    "Compute it so:\n\n"
    + CODE
    + "\n\nThe next paragraph.\n\nGrowth is $\\frac{x_t - x_{t-1}}{x_{t-1}}$, and in total\n\n"
    "$$\\sum_{i<n} x_i$$\n"
)
#: The same Markdown as a Markdown cell: JupyterLab's own rendering, to compare with.
MARKDOWN_CELL = "Compute it so:\n\n" + CODE + "\n\nThe next paragraph."

# Each token's text colour against the background it is drawn on (the nearest ancestor with an
# opaque background), as WCAG's contrast ratio; colours with alpha are blended first.
CONTRASTS = """
(output) => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    const p = m[1].split(',').map((x) => parseFloat(x));
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c.a > 0.99) return c;
    }
    return {r: 255, g: 255, b: 255, a: 1};
  };
  const blend = (fg, bg) => ({
    r: fg.r * fg.a + bg.r * (1 - fg.a),
    g: fg.g * fg.a + bg.g * (1 - fg.a),
    b: fg.b * fg.a + bg.b * (1 - fg.a),
  });
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const out = [];
  for (const span of output.querySelectorAll('pre code span, pre code')) {
    const text = Array.from(span.childNodes)
      .filter((n) => n.nodeType === 3).map((n) => n.textContent).join('').trim();
    if (!text) continue;
    const bg = background(span);
    const fg = blend(parse(getComputedStyle(span).color), bg);
    const [a, b] = [lum(fg), lum(bg)];
    out.push({text, color: getComputedStyle(span).color,
              ratio: (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)});
  }
  return out;
}
"""

BLOCK_STYLE = """
(pre) => {
  const s = getComputedStyle(pre);
  const next = pre.nextElementSibling;
  return {
    marginTop: s.marginTop, marginBottom: s.marginBottom, marginLeft: s.marginLeft,
    paddingTop: s.paddingTop, background: s.backgroundColor, font: s.fontFamily,
    gap: next ? next.getBoundingClientRect().top - pre.getBoundingClientRect().bottom : null,
  };
}
"""

THEMES = {"light": "JupyterLab Light", "dark": "JupyterLab Dark"}


def set_theme(lab, name: str) -> None:
    """JupyterLab's theme setting, through its settings API (as the Settings menu sets it)."""
    request = urllib.request.Request(
        f"{lab['url']}/lab/api/settings/@jupyterlab/apputils-extension:themes",
        data=json.dumps({"raw": json.dumps({"theme": name})}).encode(),
        method="PUT",
        headers={"Authorization": f"token {lab['token']}", "Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=30).close()


@pytest.fixture(scope="module")
def day(lab):
    cells = [
        "%load_ext pizzagpt_magic",
        f"%%pizza --no-interpolate\n[[echo]]{ANSWER}[[/echo]]",
    ]
    nb = notebook(cells)
    nb.cells.append(nbformat.v4.new_markdown_cell(MARKDOWN_CELL))
    nbformat.write(nb, Path(lab["root"]) / "day.ipynb")
    yield
    set_theme(lab, THEMES["light"])


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_code_reads_in_both_themes_and_is_spaced_as_markdown(lab, browser, screenshots, day, theme):
    set_theme(lab, THEMES[theme])
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    try:
        page.goto(
            f"{lab['url']}/lab/workspaces/day-{theme}/tree/day.ipynb?reset&token={lab['token']}"
        )
        open_notebook(page)
        assert page.evaluate("document.body.dataset.jpThemeLight") == str(theme == "light").lower()
        cells = page.locator(".jp-Notebook .jp-Cell")
        for index in (0, 1):
            target = cells.nth(index)
            target.locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            wait_done(target)
        output = cells.nth(1).locator(".jp-OutputArea-output[data-mime-type='text/html']")
        output.locator("pre code span").first.wait_for(timeout=30_000)
        # Every token: at least 4.5:1 on the background it is drawn on.
        tokens = output.evaluate(CONTRASTS)
        assert len(tokens) >= 20
        weak = [t for t in tokens if t["ratio"] < 4.5]
        assert weak == [], weak
        # Coloured by the theme: keywords, strings and numbers differ from plain text.
        colours = {t["text"]: t["color"] for t in tokens}
        plain = page.evaluate(
            "getComputedStyle(document.querySelector('.jp-RenderedHTMLCommon')).color"
        )
        assert colours["import"] != plain and colours["def"] != plain
        ratios = sorted(t["ratio"] for t in tokens)
        print(f"\n{theme}: {len(tokens)} tokens, contrast {ratios[0]:.2f} to {ratios[-1]:.2f}")
        # Spaced, set and backed as JupyterLab's own Markdown shows the same block.
        ours = output.locator("pre").first.evaluate(BLOCK_STYLE)
        markdown = cells.nth(2).locator(".jp-RenderedMarkdown pre").first
        markdown.wait_for(timeout=30_000)
        theirs = markdown.evaluate(BLOCK_STYLE)
        for key in ("marginTop", "marginBottom", "marginLeft", "paddingTop", "background", "font"):
            assert ours[key] == theirs[key], (key, ours, theirs)
        assert ours["gap"] >= 10  # the next paragraph does not touch the code
        # Live, formulas are MathML and their TeX source is not shown.
        assert output.locator("math").count() == 2
        assert "\\frac" not in output.inner_text()
        cells.nth(1).scroll_into_view_if_needed()
        page.screenshot(path=str(screenshots / f"30-code-{theme}.png"))
        output.screenshot(path=str(screenshots / f"31-answer-{theme}.png"))
    finally:
        page.close()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_a_notebook_reopened_untrusted_shows_each_formula_readably(
    lab, browser, screenshots, day, theme
):
    from pizzagpt_magic.render import Answer

    # A colleague's copy: outputs saved, no signature, so JupyterLab opens it untrusted.
    formula = "$\\frac{x_t - x_{t-1}}{x_{t-1}}$"
    answer = Answer(f"Growth is {formula}, and in total\n\n$$\\sum_{{i<n}} x_i$$\n\n" + CODE)
    data = answer._repr_mimebundle_()
    cell = nbformat.v4.new_code_cell(
        "%%pizza\nhow is growth computed?",
        outputs=[nbformat.v4.new_output("display_data", data=data)],
        execution_count=1,
    )
    copy = notebook([])
    copy.cells.append(cell)
    nbformat.write(copy, Path(lab["root"]) / f"copy-{theme}.ipynb")
    set_theme(lab, THEMES[theme])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(
            f"{lab['url']}/lab/workspaces/copy-{theme}/tree/copy-{theme}.ipynb?reset"
            f"&token={lab['token']}"
        )
        output = page.locator(".jp-OutputArea-output[data-mime-type='text/html']")
        output.wait_for(timeout=90_000)
        time.sleep(1.5)  # late renderers (MathJax)
        assert output.locator("math").count() == 0  # the sanitiser dropped the MathML...
        shown = output.inner_text()
        assert formula in shown and "$$\\sum_{i<n} x_i$$" in shown  # ...and the TeX shows
        assert "xt−xt−1xt−1" not in shown.replace("\n", "").replace(" ", "")
        assert "def growth" in shown
        page.screenshot(path=str(screenshots / f"32-untrusted-{theme}.png"))
    finally:
        page.close()
