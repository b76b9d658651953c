"""Streamed answers in a real JupyterLab: the answer visibly grows, ends as rendered Markdown,
and a hostile streamed answer is inert at every intermediate update, not only at the end."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hostile import HOSTILE  # noqa: E402
from test_hostile_corpus import FIND_LIVE, notebook  # noqa: E402
from test_jupyterlab import MARKDOWN, open_notebook  # noqa: E402

SLOW = "[[fault:chunk-size=6;chunk-delay=0.02]]"
FLAGGED = "\n\n".join(case.replace("alert(1)", "window.__pwned=1") for case in HOSTILE)

# Records what every output area holds after each change the page sees, with the same scan as
# the corpus test: intermediate states included.
OBSERVE = (
    """
() => {
  window.__states = [];
  const scan = """
    + FIND_LIVE
    + """;
  const observer = new MutationObserver(() => {
    const outputs = document.querySelectorAll(".jp-Cell.jp-mod-active .jp-OutputArea-output");
    const text = Array.from(outputs).map((o) => o.textContent).join("");
    window.__states.push({length: text.length, bad: scan(), pwned: window.__pwned || null});
  });
  observer.observe(document.querySelector(".jp-Notebook"),
                   {subtree: true, childList: true, characterData: true, attributes: true});
  window.__observer = observer;
}
"""
)


@pytest.fixture(scope="module")
def page(lab, browser, emulator):
    cells = [
        "%load_ext pizzagpt_magic\n"
        f"%config PizzaMagics.endpoints = {{'emu': {{'base_url': '{emulator.url}/v1'}}}}",
        MARKDOWN.replace("%%pizza", "%%pizza --no-interpolate -m emu:emu-mini").replace(
            "[[/echo]]", f"[[/echo]] {SLOW}"
        ),
        f"%%pizza --no-interpolate -m emu:emu-mini\n[[echo]]{FLAGGED}[[/echo]] "
        "[[fault:chunk-size=40;chunk-delay=0.01]]",
    ]
    nbformat.write(notebook(cells), Path(lab["root"]) / "streaming.ipynb")
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(
        f"{lab['url']}/lab/workspaces/streaming/tree/streaming.ipynb?reset&token={lab['token']}"
    )
    open_notebook(page)
    yield page
    page.close()


def run_cell(page, index: int) -> None:
    target = page.locator(".jp-Notebook .jp-Cell").nth(index)
    target.scroll_into_view_if_needed()
    target.locator(".jp-InputArea-editor").click()
    page.evaluate(OBSERVE)
    page.keyboard.press("Control+Enter")  # run, and stay on the cell


def wait_done(page, index: int, timeout: float = 60) -> None:
    target = page.locator(".jp-Notebook .jp-Cell").nth(index)
    deadline = time.monotonic() + timeout
    while "[*]" in target.locator(".jp-InputPrompt").inner_text() or not any(
        ch.isdigit() for ch in target.locator(".jp-InputPrompt").inner_text()
    ):
        assert time.monotonic() < deadline, "cell still running"
        time.sleep(0.05)
    page.wait_for_timeout(500)


def test_a_slow_stream_grows_then_ends_as_rendered_markdown(page, screenshots):
    run_cell(page, 0)
    wait_done(page, 0)
    run_cell(page, 1)
    target = page.locator(".jp-Notebook .jp-Cell").nth(1)
    output = target.locator(".jp-OutputArea-output[data-mime-type='text/html']").first
    output.wait_for(timeout=20_000)
    first = len(output.inner_text())
    page.wait_for_timeout(600)
    page.screenshot(path=str(screenshots / "30-stream-growing.png"))
    second = len(target.locator(".jp-OutputArea").inner_text())
    assert second > first  # it grows while the cell runs
    wait_done(page, 1)
    states = page.evaluate("window.__states")
    lengths = sorted({s["length"] for s in states})
    assert len(lengths) >= 4
    # Once shown, the answer never leaves the screen: not even as the streamed display gives
    # way to the cell's result (emptied first, it vanished until the result was drawn).
    shown = [s["length"] for s in states]
    shown = shown[next(i for i, n in enumerate(shown) if n) :]
    assert 0 not in shown, shown
    html = target.locator(".jp-OutputArea-output[data-mime-type='text/html']").last
    assert html.locator("h1").inner_text() == "Pizza report"
    assert html.locator("table td").first.inner_text() == "Margherita"
    assert html.locator("math").count() == 2
    assert "'<script>'" in html.locator("pre code").inner_text()
    # One answer on the page at the end: the streamed display is empty, the result holds it.
    assert target.locator(".jp-OutputArea").inner_text().count("Pizza report") == 1
    page.screenshot(path=str(screenshots / "31-stream-finished.png"))


def test_a_hostile_stream_is_inert_at_every_update(page, screenshots):
    page.evaluate("delete window.__pwned")
    run_cell(page, 2)
    wait_done(page, 2)
    page.wait_for_timeout(1000)
    states = page.evaluate("window.__states")
    assert len({s["length"] for s in states}) >= 4  # it was seen growing...
    assert [s for s in states if s["bad"] or s["pwned"]] == []  # ...and never live
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate(FIND_LIVE) == []
    page.screenshot(path=str(screenshots / "32-hostile-stream.png"))
