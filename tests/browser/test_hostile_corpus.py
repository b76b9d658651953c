"""The hostile corpus through %pizza in a real JupyterLab: Run All, then the page is searched.

Every answer of ``tests/hostile.py`` is echoed back by the emulator as the model's answer. After
Run All no flag is set and no output holds a script, frame, plugin, base, meta or form element,
an ``on*`` attribute or a ``javascript:``/``data:``/``vbscript:`` URL; the same after the saved
notebook is reopened (JupyterLab signed it, so its outputs come back trusted). A control
notebook showing the same text with ``IPython.display.Markdown`` sets the flag: the harness
does see script that runs.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hostile import HOSTILE  # noqa: E402

# Every hostile case, made to report itself: alert(1) and friends set a page flag instead.
FLAGGED = [case.replace("alert(1)", "window.__pwned=1") for case in HOSTILE]

FIND_LIVE = """
() => {
  const bad = [];
  const urlAttrs = ["href", "src", "action", "formaction", "data", "xlink:href", "srcdoc"];
  for (const el of document.querySelectorAll(".jp-OutputArea-output *")) {
    const tag = el.tagName.toLowerCase();
    if (["script", "iframe", "object", "embed", "base", "meta", "form", "img", "style"]
        .includes(tag)) bad.push("<" + tag + ">");
    for (const attr of el.attributes) {
      const name = attr.name.toLowerCase();
      if (name.startsWith("on")) bad.push(tag + "[" + name + "]");
      if (urlAttrs.includes(name)) {
        const url = attr.value.replace(/[\\u0000-\\u0020\\u007f-\\u00a0\\u3000]/g, "")
          .toLowerCase();
        if (/^(javascript|data|vbscript):/.test(url)) bad.push(`${tag}[${name}=${url}]`);
      }
    }
  }
  return bad;
}
"""


def notebook(cells: list[str]) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in cells],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )


def open_and_run_all(page, url: str) -> None:
    from test_jupyterlab import open_notebook

    page.goto(url)
    open_notebook(page)
    page.evaluate("delete window.__pwned")
    page.locator("li.lm-MenuBar-item", has_text=re.compile(r"^\s*Run\s*$")).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def wait_all_done(page, count: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        prompts = page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt").all_text_contents()
        if len(prompts) >= count and all("[*]" not in p and "[ ]" not in p for p in prompts):
            if all(any(ch.isdigit() for ch in p) for p in prompts[:count]):
                return
        time.sleep(0.25)
    page.screenshot(path="/tmp/runall-debug.png")
    raise TimeoutError(f"the notebook did not finish running: {prompts}")


@pytest.fixture(scope="module")
def corpus_notebooks(lab):
    cells = ["%load_ext pizzagpt_magic"] + [
        f"%%pizza --no-interpolate\n[[echo]]{case}[[/echo]]" for case in FLAGGED
    ]
    nbformat.write(notebook(cells), Path(lab["root"]) / "corpus.ipynb")
    control = [
        "from IPython.display import Markdown, display\n"
        f"for case in {FLAGGED!r}:\n    display(Markdown(case))"
    ]
    nbformat.write(notebook(control), Path(lab["root"]) / "control.ipynb")
    return len(cells)


def test_corpus_live_then_reopened(lab, browser, screenshots, corpus_notebooks):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        # A workspace of its own: the other browser tests' default workspace stays as it was.
        open_and_run_all(
            page,
            f"{lab['url']}/lab/workspaces/corpus-live/tree/corpus.ipynb?reset&token={lab['token']}",
        )
        wait_all_done(page, corpus_notebooks, timeout=60)
        page.wait_for_timeout(2000)  # late renderers (MathJax) and image loads
        assert page.evaluate("window.__pwned") is None
        outputs = page.locator(".jp-OutputArea-output[data-mime-type='text/html']")
        assert outputs.count() == len(FLAGGED)
        assert page.evaluate(FIND_LIVE) == []
        page.screenshot(path=str(screenshots / "20-corpus-live.png"))
        page.keyboard.press("Control+s")
        page.wait_for_timeout(1500)
    finally:
        page.close()
    saved = nbformat.read(Path(lab["root"]) / "corpus.ipynb", as_version=4)
    shown = [o for c in saved.cells for o in c.get("outputs", []) if "data" in o]
    assert len(shown) == len(FLAGGED)
    assert all("text/markdown" not in o["data"] for o in shown)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        page.goto(
            f"{lab['url']}/lab/workspaces/corpus/tree/corpus.ipynb?reset&token={lab['token']}"
        )
        page.wait_for_selector(".jp-OutputArea-output[data-mime-type='text/html']")
        page.wait_for_timeout(3000)
        assert page.locator(".jp-OutputArea-output[data-mime-type='text/html']").count() == len(
            FLAGGED
        )
        assert page.evaluate("window.__pwned") is None
        assert page.evaluate(FIND_LIVE) == []
        page.screenshot(path=str(screenshots / "21-corpus-reopened.png"))
    finally:
        page.close()


def test_control_the_same_corpus_as_markdown_runs_script(
    lab, browser, screenshots, corpus_notebooks
):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        open_and_run_all(
            page,
            f"{lab['url']}/lab/workspaces/control/tree/control.ipynb?reset&token={lab['token']}",
        )
        wait_all_done(page, 1)
        deadline = time.monotonic() + 15
        while page.evaluate("window.__pwned") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        # Some case set the flag (which one runs first varies: any value shows execution).
        assert page.evaluate("window.__pwned") is not None
        assert page.evaluate(FIND_LIVE) != []
        page.screenshot(path=str(screenshots / "22-corpus-control.png"))
    finally:
        page.close()
