"""Images in questions ({fig}, {Fig[-1]}, {Out[n]}, bytes) and %pizza --fix, in a shell."""

from __future__ import annotations

import base64
import io
import json
import sqlite3
from contextlib import closing

import pytest
from test_magics import cell, failing, magics
from traitlets import TraitError

matplotlib = pytest.importorskip("matplotlib")  # in the test extra
matplotlib.use("Agg")
from PIL import Image  # noqa: E402  (matplotlib brings Pillow)


@pytest.fixture
def ishell(shell, endpoint):
    """A shell whose endpoint ``emu`` takes images, and a 1600×800 figure in ``fig``."""
    cell(shell, "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(16, 8), dpi=100)")
    cell(shell, "ax.plot([1, 3, 2]); ax.set_title('Sales')")
    yield shell
    cell(shell, "plt.close('all')")


def sent_images(request) -> list[Image.Image]:
    content = request["body"]["messages"][-1]["content"]
    images = []
    for part in content:
        if part["type"] == "image_url":
            url = part["image_url"]["url"]
            assert url.startswith("data:image/png;base64,")
            images.append(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    return images


def test_a_figure_becomes_an_image_part_where_it_stood(ishell, endpoint):
    answer = cell(ishell, "%pizza --no-stream -m emu:emu-mini What does {fig} show, in short?")
    content = endpoint.chat_requests[-1]["body"]["messages"][-1]["content"]
    assert [p["type"] for p in content] == ["text", "image_url", "text"]
    assert content[0]["text"] == "What does " and content[2]["text"] == " show, in short?"
    (image,) = sent_images(endpoint.chat_requests[-1])
    assert image.format == "PNG" and max(image.size) == 1024  # scaled down from 1600
    assert image.size[0] == 2 * image.size[1] or abs(image.size[0] / image.size[1] - 2) < 0.1
    assert "The question holds 1 image(s): PNG" in answer.text


@pytest.mark.parametrize("kind", ["pil", "ipython", "png-bytes", "jpeg-bytes"])
def test_other_kinds_of_images(ishell, endpoint, kind):
    source = {
        "pil": "from PIL import Image as P\nvalue = P.new('RGB', (300, 200), 'red')",
        "ipython": "import io\nfrom IPython.display import Image as I\n"
        "buf = io.BytesIO(); fig.savefig(buf, format='png', dpi=20); value = I(buf.getvalue())",
        "png-bytes": "import io\nbuf = io.BytesIO(); fig.savefig(buf, format='png', dpi=20)\n"
        "value = buf.getvalue()",
        "jpeg-bytes": "import io\nfrom PIL import Image as P\nbuf = io.BytesIO()\n"
        "P.new('RGB', (2000, 100), 'blue').save(buf, format='JPEG'); value = buf.getvalue()",
    }[kind]
    cell(ishell, source)
    cell(ishell, "%pizza --no-stream -m emu:emu-mini Describe {value}")
    (image,) = sent_images(endpoint.chat_requests[-1])
    assert image.format == "PNG" and max(image.size) <= 1024
    if kind == "jpeg-bytes":
        assert image.size == (1024, 51)


def test_out_n_of_an_image(ishell, endpoint):
    result = ishell.run_cell(
        "from PIL import Image as P\nP.new('RGB', (64, 32), 'green')", store_history=True
    )
    count = result.execution_count
    cell(ishell, f"%pizza --no-stream -m emu:emu-mini What colour is {{Out[{count}]}}?")
    (image,) = sent_images(endpoint.chat_requests[-1])
    assert image.size == (64, 32)


def test_a_text_only_backend_refuses_images_and_sends_nothing(ishell, emu, endpoint):
    message = failing(ishell, "%pizza What does {fig} show?")
    assert message.startswith("{fig} is an image, and Pizzagpt takes text only")
    assert "-m openai:gpt-4o-mini" in message and "nothing was sent" in message
    message = failing(ishell, "%pizza -m fake_provider.EchoProvider What is {fig}?")
    assert "fake_provider.EchoProvider takes text only" in message
    assert emu.requests == 0 and endpoint.requests == 0
    assert "not in the system message" in failing(
        ishell, "%pizza -m emu:emu-mini -s {fig} What is it?"
    )


def test_limits(ishell, endpoint):
    magics(ishell).image_max_side = 100
    cell(ishell, "%pizza --no-stream -m emu:emu-mini Small {fig}")
    (image,) = sent_images(endpoint.chat_requests[-1])
    assert max(image.size) == 100
    magics(ishell).image_max_bytes = 100
    message = failing(ishell, "%pizza -m emu:emu-mini Too big {fig}")
    assert "{fig} is" in message and "over the limit of 100" in message
    assert endpoint.requests == 1
    with pytest.raises(TraitError):
        magics(ishell).image_max_side = 0
    ishell.user_ns["junk"] = b"\x89PNG\r\n\x1a\n" + b"not really an image"
    magics(ishell).image_max_bytes = 4_000_000
    message = failing(ishell, "%pizza -m emu:emu-mini What is {junk}?")
    assert message.startswith("Cannot read {junk} as an image")
    assert endpoint.requests == 1


def test_each_over_figures_sends_one_image_each(ishell, endpoint):
    cell(
        ishell,
        "figs = []\nfor n in (2, 3, 4):\n    f, a = plt.subplots(figsize=(n, 2), dpi=50)\n"
        "    a.bar(range(n), range(n)); figs.append(f)",
    )
    cell(ishell, "%%pizza --each figs -o notes -m emu:emu-mini\nSummarise chart {index}: {item}")
    assert len(endpoint.chat_requests) == 3
    sizes = [sent_images(r)[0].size for r in endpoint.chat_requests]
    assert len(set(sizes)) == 3  # three different images
    assert all(n is not None and "1 image(s)" in n for n in ishell.user_ns["notes"])


def test_the_cache_knows_the_image_and_the_log_keeps_only_its_hash(
    ishell, endpoint, tmp_path, monkeypatch
):
    from pizzagpt_magic import store

    path = tmp_path / "store.sqlite3"
    monkeypatch.setenv("PIZZAGPT_STORE", str(path))
    try:
        cell(ishell, "%pizza --no-stream -m emu:emu-mini What is {fig}?")
        cell(ishell, "%pizza --no-stream -m emu:emu-mini What is {fig}?")
        assert endpoint.requests == 1  # the same image: a cache hit
        cell(ishell, "ax.plot([3, 1, 3])")
        cell(ishell, "%pizza --no-stream -m emu:emu-mini What is {fig}?")
        assert endpoint.requests == 2  # the figure changed: a new request
        store.forget_stores()
        with closing(sqlite3.connect(path)) as connection:
            logged = [json.loads(m) for (m,) in connection.execute("SELECT messages FROM log")]
        parts = logged[0][-1]["content"]
        assert parts[1]["type"] == "image" and len(parts[1]["sha256"]) == 64
        assert parts[1]["bytes"] > 1000
        on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("store.sqlite3*"))
        assert b"base64" not in on_disk and b"iVBORw0KGgo" not in on_disk  # no PNG, encoded
    finally:
        store.forget_stores()


# -- %pizza --fix ------------------------------------------------------------------------------


def test_fix_asks_about_the_newest_error_and_offers_the_corrected_cell(shell, emu):
    assert "No error recorded yet" in failing(shell, "%pizza --fix")
    shell.run_cell("import pandas as pd\nframe = pd.DataFrame({'a': [1]})", store_history=True)
    failed = shell.run_cell("frame['b'].sum()", store_history=True)
    count = failed.execution_count
    cell(shell, "%pizza --fix")
    question = emu.questions[-1]
    assert "The cell:\n```python\nframe['b'].sum()\n```" in question
    assert "KeyError: 'b'" in question and "Explain the cause" in question
    assert shell.rl_next_input is not None  # the corrected code, offered in a new cell
    # --fix N picks cell N; text after it is added, with its {references}.
    shell.run_cell("1/0", store_history=True)
    shell.user_ns["names"] = "a, b"
    cell(shell, f"%pizza --fix {count} keep the columns {{names}}")
    assert "frame['b'].sum()" in emu.questions[-1] and "ZeroDivision" not in emu.questions[-1]
    assert emu.questions[-1].endswith("keep the columns a, b")
    assert "ZeroDivisionError" in cell(shell, "%pizza -f text --fix").text
    assert "cell 999 raised no error" in failing(shell, "%pizza --fix 999")
    assert "does not go with --each" in failing(shell, "%%pizza --fix --each x\nq")


def test_fix_works_with_other_backends_chat_and_output(shell, endpoint):
    shell.run_cell("undefined_name + 1", store_history=True)
    cell(shell, "%pizza --no-stream -c -o fixed -m emu:emu-mini --fix")
    assert "NameError" in endpoint.chat_requests[-1]["body"]["messages"][-1]["content"]
    assert "NameError" in shell.user_ns["fixed"]
    assert len(magics(shell).conversation.exchanges) == 1


def test_fix_prompt_is_a_checked_trait(shell, emu):
    with pytest.raises(Exception, match="needs both"):
        magics(shell).fix_prompt = "Fix {source}"
    with pytest.raises(Exception, match="only {source} and {error}"):
        magics(shell).fix_prompt = "Fix {source} {error} {other}"
    magics(shell).fix_prompt = "Why?\n{source}\n{error}\nIn one line, with {{braces}}."
    shell.run_cell("{}['k']", store_history=True)
    cell(shell, "%pizza --fix")
    assert emu.questions[-1].startswith("Why?\n{}['k']\nTraceback")
    assert emu.questions[-1].endswith("In one line, with {braces}.")


def test_fig_keeps_the_newest_five_and_leaves_a_users_fig_alone():
    import base64

    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from pizzagpt_magic.images import DisplayedImages

    figures = DisplayedImages()
    hook = figures.hook(lambda: 7)
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n...").decode()
    for n in range(7):
        message = {"msg_type": "display_data", "content": {"data": {"image/png": png + str(n)}}}
        assert hook(message) is message  # the display itself goes on unchanged
    assert hook({"msg_type": "stream", "content": {"text": "x"}})["msg_type"] == "stream"
    assert len(figures) == 5 and figures[-1].cell == 7 and figures[0].mime == "image/png"
    with pytest.raises(IndexError, match="the newest 5 are kept"):
        figures[-6]
    # A user's own Fig is not replaced on load, nor removed on unload; ours is removed.
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell(config=config)
    try:
        shell.user_ns["Fig"] = "mine"
        shell.run_line_magic("load_ext", "pizzagpt_magic")
        assert shell.user_ns["Fig"] == "mine"
        shell.run_line_magic("unload_ext", "pizzagpt_magic")
        assert shell.user_ns["Fig"] == "mine"
        del shell.user_ns["Fig"]
        shell.run_line_magic("load_ext", "pizzagpt_magic")
        assert type(shell.user_ns["Fig"]).__name__ == "DisplayedImages"
        shell.run_line_magic("unload_ext", "pizzagpt_magic")
        assert "Fig" not in shell.user_ns
    finally:
        shell.cleanup()
        InteractiveShell.clear_instance()


# -- sizes checked before anything is drawn or decoded ---------------------------------------


def _drawn(figure) -> list[dict]:
    """Record every savefig call of ``figure`` (and still draw)."""
    calls: list[dict] = []
    save = figure.savefig

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return save(*args, **kwargs)

    figure.savefig = recording
    return calls


def test_a_huge_figure_is_refused_before_it_is_drawn():
    import matplotlib.pyplot as plt

    from pizzagpt_magic.errors import PromptError
    from pizzagpt_magic.images import prepare

    figure = plt.figure(figsize=(150, 150), dpi=100)
    try:
        calls = _drawn(figure)
        with pytest.raises(PromptError, match=r"15,000×15,000 pixels, over the limit of 50,000"):
            prepare(figure, "{fig}", 1024, 5_000_000)
        assert calls == []
    finally:
        plt.close(figure)


def test_a_large_figure_is_drawn_small_not_drawn_whole_and_scaled():
    import matplotlib.pyplot as plt

    from pizzagpt_magic.images import prepare

    figure = plt.figure(figsize=(60, 40), dpi=100)  # 6000×4000 at its own dpi
    try:
        calls = _drawn(figure)
        part = prepare(figure, "{fig}", 1024, 5_000_000)
        assert calls[0]["dpi"] <= 2 * 1024 / 60 + 0.01
        assert max(part.width, part.height) <= 1024
    finally:
        plt.close(figure)


def test_a_huge_picture_is_refused_from_its_header():
    import warnings

    from pizzagpt_magic.errors import PromptError
    from pizzagpt_magic.images import prepare

    buffer = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buffer, format="PNG")  # 144 megapixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even Pillow's decompression-bomb warning
        with pytest.raises(PromptError, match="12,000×12,000 pixels, over the limit"):
            prepare(buffer.getvalue(), "{big}", 1024, 5_000_000)


def test_an_unreadable_image_says_so_without_an_address():
    from pizzagpt_magic.errors import PromptError
    from pizzagpt_magic.images import prepare

    with pytest.raises(PromptError) as info:
        prepare(b"\x89PNG\r\n\x1a\n but then nothing", "{blob}", 1024, 5_000_000)
    assert str(info.value) == "Cannot read {blob} as an image: not an image format Pillow can read"
    assert "0x" not in str(info.value)


def test_gif_bytes_are_an_image_converted_to_png():
    from pizzagpt_magic.images import is_image, prepare

    buffer = io.BytesIO()
    Image.new("P", (40, 30)).save(buffer, format="GIF")
    gif = buffer.getvalue()
    assert is_image(gif)
    part = prepare(gif, "{gif}", 1024, 5_000_000)
    assert part.png.startswith(b"\x89PNG") and (part.width, part.height) == (40, 30)


def test_each_refuses_a_huge_figure_before_drawing_or_sending_anything(ishell, endpoint):
    cell(
        ishell,
        "big, _ = plt.subplots(figsize=(150, 150), dpi=100)\nsmall, _ = plt.subplots()\n"
        "pair = [small, big]",
    )
    message = failing(ishell, "%%pizza --each pair -m emu:emu-mini\nDescribe {item}")
    assert "{item} is 15,000×15,000 pixels, over the limit of 50,000,000" in message
    assert endpoint.chat_requests == []


def test_each_draws_images_as_their_items_are_sent_not_all_first(ishell, endpoint, monkeypatch):
    from pizzagpt_magic import images

    seen: list[int] = []  # requests the endpoint had when each image was drawn
    prepare = images.prepare

    def counting(*args, **kwargs):
        seen.append(len(endpoint.chat_requests))
        return prepare(*args, **kwargs)

    monkeypatch.setattr(images, "prepare", counting)
    magics(ishell).image_window = 4
    cell(
        ishell,
        "from matplotlib.figure import Figure\nfigs = []\nfor n in range(24):\n"
        "    f = Figure(figsize=(2, 1), dpi=30); f.add_subplot().bar(range(3), [n, 1, 2])\n"
        "    figs.append(f)",
    )
    cell(ishell, "%%pizza --each figs -o notes -m emu:emu-mini --concurrency 2\nChart: {item}")
    assert len(seen) == 24 and len(endpoint.chat_requests) == 24
    # The third window is drawn while the second is sent, after the first was answered.
    assert seen[8] >= 4 and seen[-1] >= 16
    assert all(n is not None and "1 image(s)" in n for n in ishell.user_ns["notes"])


def test_each_with_images_asks_a_repeated_item_once_across_windows(ishell, endpoint):
    magics(ishell).image_window = 2
    cell(
        ishell,
        "from PIL import Image as P\nreds = [P.new('RGB', (8, 8), c) for c in ('red', 'blue')] * 6",
    )
    cell(ishell, "%%pizza --each reds -o notes -m emu:emu-mini --concurrency 1\nColour: {item}")
    assert len(endpoint.chat_requests) == 2
    notes = ishell.user_ns["notes"]
    assert len(notes) == 12 and notes[0] == notes[10] and notes[1] == notes[11]


def test_each_an_unreadable_image_fails_its_item_alone(ishell, endpoint):
    magics(ishell).image_window = 2
    cell(
        ishell,
        "import io\nfrom PIL import Image as P\nbuf = io.BytesIO()\n"
        "P.new('RGB', (8, 8), 'red').save(buf, format='PNG')\n"
        "items = [buf.getvalue(), b'\\x89PNG\\r\\n\\x1a\\n' + b'junk', buf.getvalue()[:-9] + b'!']",
    )
    message = failing(ishell, "%%pizza --each items -o notes -m emu:emu-mini\nWhat is {item}?")
    assert "\n" not in message and "0x" not in message
    notes = ishell.user_ns["notes"]
    assert notes[0] is not None and notes[1] is None
    assert len(endpoint.chat_requests) in (1, 2)  # the third: read or refused, alone
