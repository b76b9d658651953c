"""Figures in questions and --fix in a real kernel, with matplotlib's inline backend."""

from __future__ import annotations

import base64
import io

import pytest
from kernel_helpers import Kernel, error_of, of_type, result_text

pytest.importorskip("matplotlib")  # in the test extra
from PIL import Image  # noqa: E402

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def kernel(emulator):
    kernel = Kernel({"PIZZAGPT_URL": emulator.url})
    messages = kernel.execute(
        "%load_ext pizzagpt_magic\n"
        f"%config PizzaMagics.endpoints = {{'emu': {{'base_url': '{emulator.url}/v1'}}}}\n"
        "import matplotlib.pyplot as plt"
    )
    assert error_of(messages) is None
    yield kernel
    kernel.shutdown()


def images_of(request) -> list[Image.Image]:
    content = request["body"]["messages"][-1]["content"]
    return [
        Image.open(io.BytesIO(base64.b64decode(p["image_url"]["url"].split(",", 1)[1])))
        for p in content
        if isinstance(p, dict) and p["type"] == "image_url"
    ]


def test_fig_holds_the_figure_a_cell_just_drew(kernel, emulator):
    emulator.reset_stats()
    drawn = kernel.execute("plt.figure(figsize=(6, 3), dpi=100); plt.plot([3, 1, 2]); plt.show()")
    assert of_type(drawn, "display_data")[0]["content"]["data"].get("image/png")
    messages = kernel.execute(
        "%pizza --no-stream -m emu:emu-mini What does this chart show? {Fig[-1]}"
    )
    assert error_of(messages) is None
    (image,) = images_of(emulator.chat_requests[-1])
    assert image.format == "PNG" and 300 < image.size[0] <= 1024
    assert "1 image(s): PNG" in result_text(messages)
    assert "image/png" in result_text(kernel.execute("repr(Fig)"))


def test_out_n_of_an_image(kernel, emulator):
    emulator.reset_stats()
    shown = kernel.execute(
        "import io\nfrom IPython.display import Image\nbuf = io.BytesIO()\n"
        "plt.figure(figsize=(2, 2), dpi=40).savefig(buf, format='png')\nplt.close('all')\n"
        "Image(buf.getvalue())"
    )
    count = of_type(shown, "execute_result")[0]["content"]["execution_count"]
    messages = kernel.execute(f"%pizza --no-stream -m emu:emu-mini Describe {{Out[{count}]}}")
    assert error_of(messages) is None
    (image,) = images_of(emulator.chat_requests[-1])
    assert image.size == (80, 80)


def test_a_pizzagpt_model_with_an_image_sends_nothing(kernel, emulator):
    emulator.reset_stats()
    messages = kernel.execute("%pizza What does this show? {Fig[-1]}")
    error = error_of(messages)
    assert error["ename"] == "UsageError"
    assert "{Fig[-1]} is an image, and Pizzagpt takes text only" in error["evalue"]
    assert emulator.requests == 0


def test_each_over_three_figures_sends_three_images(kernel, emulator):
    emulator.reset_stats()
    kernel.execute(
        "figs = []\nfor n in (2, 3, 4):\n    f = plt.figure(figsize=(n, 2), dpi=50)\n"
        "    plt.bar(range(n), range(n)); figs.append(f)\nplt.close('all')"
    )
    messages = kernel.execute("%%pizza --each figs -o notes -m emu:emu-mini\nChart {index}: {item}")
    assert error_of(messages) is None
    assert len(emulator.chat_requests) == 3
    widths = sorted(images_of(r)[0].size[0] for r in emulator.chat_requests)
    assert len(set(widths)) == 3  # one image each, of each figure


def test_fix_after_a_failing_pandas_cell(kernel, emulator):
    emulator.reset_stats()
    kernel.execute("import pandas as pd\nsales = pd.DataFrame({'region': ['North'], 'units': [3]})")
    failed = kernel.execute("sales.groupby('regoin')['units'].sum()")
    assert error_of(failed)["ename"] == "KeyError"
    messages = kernel.execute("%pizza --fix keep the column names")
    assert error_of(messages) is None
    question = emulator.questions[-1]
    assert "sales.groupby('regoin')['units'].sum()" in question
    assert "KeyError: 'regoin'" in question and question.endswith("keep the column names")
    reply = messages[-1]["content"]
    payloads = [p for p in reply.get("payload", []) if p.get("source") == "set_next_input"]
    assert len(payloads) == 1 and payloads[0]["replace"] is False
