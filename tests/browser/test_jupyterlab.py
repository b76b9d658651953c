"""What an analyst sees: %pizza answers in a real JupyterLab, in headless Chromium.

The cells are run as a person runs them (a click in the cell, Shift+Enter) and the rendered
page is read back. Screenshots of every state go to the run's folder (see conftest).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import nbformat
import pytest

from pizzagpt_magic.demo import default_notebook

MARKDOWN = """%%pizza
[[echo]]# Pizza report

**Margherita** leads, *Marinara* follows.

- dough
- sauce

| pizza | sold |
|---|---|
| Margherita | 12 |

```python
def total(rows):
    return sum(r.sold for r in rows) if '<script>' else 0
```

Growth: $a < b$, and in total

$$\\sum_{i<n} x_i$$[[/echo]]"""

HOSTILE_ANSWER = """Summary <script>window.__pwned = 'script'</script>
<img src=x onerror="window.__pwned = 'img'">
<iframe src="javascript:parent.__pwned = 'iframe'"></iframe>
[click me](javascript:window.__pwned='link') and [also me](java&#115;cript:window.__pwned='entity')
<a href="#" onclick="window.__pwned = 'onclick'">handler</a>
<div onmouseover="window.__pwned = 'hover'">hover text</div>

```html
<script>alert("kept as code")</script>
```"""

CELLS = {
    "load": "%load_ext pizzagpt_magic",
    "markdown": MARKDOWN.replace("%%pizza", "%%pizza --no-interpolate"),
    "slow": "%pizza --no-cache [[fault:latency=4]] a slow question",
    "hostile": "%%pizza\n[[echo]]" + HOSTILE_ANSWER + "[[/echo]]",
    "control": "from IPython.display import Markdown\nMarkdown(" + repr(HOSTILE_ANSWER) + ")",
    "code": "%%pizza -f code\n[[echo]]Use this:\n\n```python\nimport pandas as pd\n"
    "frame = pd.read_csv('pizza.csv')\n```\n[[/echo]]",
    "json": "%pizza -f json Reply with JSON only: the sales of 3 pizzas",
    "text": "%pizza -f text [[echo]]**not bold** <b>nor this</b>[[/echo]]",
    "failing": "%pizza --no-cache [[fault:status=500]] this one fails",
    # Last: the cell it opens below shifts every cell after it.
    "insert": "%%pizza --insert\n[[echo]]Count them:\n\n```python\nsales.groupby('region').size()\n"
    "```\n[[/echo]]",
}
ORDER = list(CELLS)


@pytest.fixture(scope="module")
def page(lab, browser, screenshots):
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(CELLS[name]) for name in ORDER],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    nbformat.write(notebook, Path(lab["root"]) / "answers.ipynb")
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(f"{lab['url']}/lab/tree/answers.ipynb?token={lab['token']}")
    open_notebook(page)
    yield page
    page.close()


def open_notebook(page) -> None:
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    # On a first open JupyterLab may ask which kernel to use: accept its choice.
    dialog = page.locator(".jp-Dialog .jp-mod-accept")
    if dialog.count():
        dialog.first.click()
    # The status bar reads "Python 3 (ipykernel) | Idle" once the kernel is ready.
    page.get_by_text(re.compile(r"\(ipykernel\) \| Idle")).first.wait_for(timeout=90_000)


def cell(page, name: str):
    return page.locator(".jp-Notebook .jp-Cell").nth(ORDER.index(name))


def run(page, name: str, wait: bool = True):
    target = cell(page, name)
    target.scroll_into_view_if_needed()
    target.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    if wait:
        wait_done(target)
    return target


def wait_done(target, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        prompt = target.locator(".jp-InputPrompt").inner_text()
        if re.search(r"\[\d+\]", prompt):
            return
        time.sleep(0.1)
    raise TimeoutError(f"cell still running: {prompt!r}")


def expect(locator):
    """playwright's auto-waiting assertions, imported when used: the module must collect
    (and be deselected) where only the test extra is installed."""
    from playwright.sync_api import expect

    return expect(locator)


def eventually(check, timeout: float = 30) -> None:
    """Poll ``check`` until it holds: outputs and highlighting are drawn after the reply."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {check.__doc__ or check}")
        time.sleep(0.1)


def snap(page, screenshots: Path, name: str, target=None) -> None:
    if target is not None:
        target.scroll_into_view_if_needed()
    page.screenshot(path=str(screenshots / f"{name}.png"))


def test_markdown_answer_renders_as_markdown(page, screenshots):
    run(page, "load")
    output = run(page, "markdown").locator(".jp-OutputArea-output[data-mime-type='text/html']")
    expect(output.locator("h1")).to_be_visible(timeout=30_000)
    assert output.locator("h1").inner_text().startswith("Pizza report")
    assert output.locator("strong").inner_text() == "Margherita"
    assert output.locator("em").first.inner_text() == "Marinara"
    assert output.locator("em").last.inner_text() == "gpt-4o-mini"  # the footer names the model
    assert output.locator("li").all_inner_texts() == ["dough", "sauce"]
    assert output.locator("table td").first.inner_text() == "Margherita"
    code = output.locator("pre code")
    assert "def total(rows):" in code.inner_text()
    assert "'<script>'" in code.inner_text()  # shown verbatim
    assert code.locator("span[style]").count() >= 3  # highlighted tokens
    assert output.locator("math").count() == 2
    assert "<" in (output.locator("math").first.text_content() or "")
    assert "Misplaced" not in output.inner_text()
    snap(page, screenshots, "01-markdown", output)


def test_progress_placeholder_then_answer(page, screenshots):
    target = run(page, "slow", wait=False)
    placeholder = target.locator(".jp-OutputArea-output", has_text="is answering")
    placeholder.wait_for(timeout=10_000)
    first = placeholder.inner_text()
    assert "gpt-4o-mini is answering" in first
    snap(page, screenshots, "02-progress-waiting", target)
    time.sleep(1.2)
    assert placeholder.inner_text() != first  # the seconds move on, in place
    wait_done(target)
    outputs = target.locator(".jp-OutputArea-output")
    expect(outputs.last).to_contain_text("a slow question", timeout=30_000)
    assert "is answering" not in target.locator(".jp-OutputArea").inner_text()
    snap(page, screenshots, "03-progress-answered", target)


def test_hostile_answer_runs_nothing(page, screenshots):
    page.evaluate("delete window.__pwned")
    target = run(page, "hostile")
    output = target.locator(".jp-OutputArea-output[data-mime-type='text/html']")
    expect(output).to_contain_text("hover text", timeout=30_000)
    for selector in (
        "script",
        "iframe",
        "img",
        "[onclick]",
        "[onmouseover]",
        "[onerror]",
        "a[href^='javascript' i]",
    ):
        assert output.locator(selector).count() == 0, selector
    output.get_by_text("hover text").hover()
    output.get_by_text("click me").click()
    time.sleep(0.5)
    assert page.evaluate("window.__pwned") is None
    text = output.inner_text()
    assert "<script>window.__pwned = 'script'</script>" in text  # readable as text
    assert "<img src=x onerror=" in text
    assert 'alert("kept as code")' in output.locator("pre code").inner_text()
    snap(page, screenshots, "04-hostile-neutralised", target)


def test_control_the_same_markdown_unescaped_does_run(page, screenshots):
    """The check above can fail: the same answer shown as raw Markdown sets the flag."""
    page.evaluate("delete window.__pwned")
    target = run(page, "control")
    deadline = time.monotonic() + 15
    while page.evaluate("window.__pwned") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert page.evaluate("window.__pwned") is not None
    snap(page, screenshots, "05-control-unescaped", target)


def test_code_json_and_text_formats(page, screenshots):
    code = run(page, "code").locator(".jp-OutputArea-output").last
    expect(code).to_contain_text("import pandas as pd", timeout=30_000)
    assert "Use this" not in code.inner_text()
    eventually(lambda: code.locator("pre code span[style]").count() >= 2)
    snap(page, screenshots, "06-format-code", code)
    # JupyterLab loads its JSON viewer on first use: wait for it to draw the tree.
    data = run(page, "json").locator(".jp-OutputArea-output").last
    expect(data).to_contain_text("numbers", timeout=30_000)
    assert "```" not in data.inner_text()
    snap(page, screenshots, "07-format-json", data)
    text = run(page, "text").locator(".jp-OutputArea-output").last
    expect(text).to_contain_text("**not bold** <b>nor this</b>", timeout=30_000)
    assert text.locator("strong, b").count() == 0
    snap(page, screenshots, "08-format-text", text)


def test_failing_cell_shows_one_line(page, screenshots):
    target = run(page, "failing")
    error = target.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    expect(error).to_contain_text("UsageError", timeout=30_000)
    lines = error.inner_text().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("UsageError: HTTP 500")
    assert "Traceback" not in target.locator(".jp-OutputArea").inner_text()
    assert "is answering" not in target.locator(".jp-OutputArea").inner_text()
    snap(page, screenshots, "09-failure", target)


def test_insert_opens_a_cell_with_the_code(page, screenshots):
    target = run(page, "insert")
    expect(target.locator(".jp-OutputArea-output").last).to_contain_text("Count them:")
    inserted = page.locator(".jp-Notebook .jp-Cell").nth(ORDER.index("insert") + 1)
    expect(inserted.locator(".jp-InputArea-editor")).to_have_text(
        "sales.groupby('region').size()", timeout=30_000
    )
    assert inserted.locator(".jp-OutputArea-output").count() == 0  # not run: ready to run
    editors = page.locator(".jp-Notebook .jp-InputArea-editor")
    assert editors.all_inner_texts().count("sales.groupby('region').size()") == 1
    snap(page, screenshots, "10-insert-new-cell", inserted)


def test_executed_quickstart_reopened_from_disk(lab, browser, screenshots):
    from pizzagpt_magic.demo import run_demo

    run_demo(default_notebook(), lab["root"])
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        # A workspace of its own, reset: only the re-opened notebook is on the page.
        page.goto(
            f"{lab['url']}/lab/workspaces/reopened/tree/quickstart.ipynb?reset&token={lab['token']}"
        )
        page.wait_for_selector(".jp-OutputArea-output[data-mime-type='text/html']", timeout=90_000)
        answers = page.locator(
            ".jp-OutputArea-output[data-mime-type='text/html']", has_text="Emulated gpt-4o-mini"
        )
        first = answers.first
        expect(first).to_contain_text(
            "In one paragraph, how should I compare revenue across regions?", timeout=30_000
        )
        assert first.locator("strong").first.inner_text().startswith("Emulated gpt-4o-mini")
        table = page.locator(".jp-OutputArea-output", has_text="DataFrame: 8 rows × 5 columns")
        expect(table.first).to_be_visible(timeout=30_000)
        assert "is answering" not in page.locator(".jp-Notebook").inner_text()
        snap(page, screenshots, "11-quickstart-reopened", first)
    finally:
        page.close()
