"""The quickstart notebook, executed in a real kernel, and the demo command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from pizzagpt_magic.demo import default_notebook

pytestmark = pytest.mark.kernel

QUICKSTART = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def outputs_text(cell) -> str:
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.extend(str(v) for v in output.data.values())
    return "\n".join(parts)


def test_committed_without_outputs():
    nb = nbformat.read(QUICKSTART, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert default_notebook() == QUICKSTART


@pytest.fixture(scope="module")
def executed(emulator):
    nb = nbformat.read(QUICKSTART, as_version=4)
    previous = os.environ.get("PIZZAGPT_URL")
    os.environ["PIZZAGPT_URL"] = emulator.url
    try:
        NotebookClient(
            nb,
            timeout=120,
            kernel_name="python3",
            resources={"metadata": {"path": str(QUICKSTART.parent)}},
        ).execute()
    finally:
        if previous is None:
            os.environ.pop("PIZZAGPT_URL")
        else:
            os.environ["PIZZAGPT_URL"] = previous
    return {cell.source.strip(): cell for cell in nb.cells if cell.cell_type == "code"}


def find(executed, start):
    """The one code cell whose source starts with ``start``."""
    (cell,) = [cell for source, cell in executed.items() if source.startswith(start)]
    return cell


def test_line_question_answered_as_markdown(executed):
    cell = find(executed, "%pizza In one paragraph")
    (result,) = [o for o in cell.outputs if o.output_type == "execute_result"]
    assert "In one paragraph, how should I compare revenue" in result.data["text/plain"]
    assert "<blockquote>" in result.data["text/html"]


def test_table_travelled_as_a_summary(executed):
    text = outputs_text(find(executed, "%%pizza\nHere is our quarterly sales table"))
    assert "DataFrame: 8 rows × 5 columns" in text
    assert "| index | region | quarter | units | price | revenue |" in text
    assert "> East leads with 2637.0 in revenue." in text


def test_output_variable_and_chat(executed):
    assert "Emulated gpt-4o-mini answer" in outputs_text(find(executed, "%pizza -o advice"))
    assert "Conversation cleared" in outputs_text(find(executed, "%pizza --reset"))
    assert "{'East': 293, 'North': 251, 'South': 196, 'West': 167}" in outputs_text(
        find(executed, "units = sales")
    )
    assert "conversation so far has 3 messages" in outputs_text(find(executed, "%pizza -c Which"))
    history = outputs_text(find(executed, "%pizza --history"))
    assert "[1] You: We sell umbrellas" in history and "[2] You: Which region" in history


def test_each_over_a_column(executed):
    each = outputs_text(find(executed, "%%pizza --each q2_units"))
    assert "4 answers from gpt-4o-mini" in each and "0 failed" in each
    lengths = outputs_text(find(executed, "notes.str.len()"))
    assert all(region in lengths for region in ("North", "South", "East", "West"))


def test_typed_extraction(executed):
    pytest.importorskip("jsonschema")
    each = outputs_text(find(executed, "%%pizza --each sales --schema"))
    assert "8 answers from gpt-4o-mini" in each and "0 failed" in each and "busy" in each
    dtypes = outputs_text(find(executed, "facts.dtypes"))
    for line in ("region       category", "units           Int64", "busy          boolean"):
        assert " ".join(line.split()) in " ".join(dtypes.split())
    checks = outputs_text(find(executed, 'bool((facts["units"] == sales["units"]).all())'))
    assert "(True, ['North', 'South', 'East', 'West'])" in checks


def test_dataframe_accessor(executed):
    estimate = outputs_text(find(executed, "reviews = pd.DataFrame("))
    assert "map: 6 rows, 4 distinct prompts" in estimate
    kept = outputs_text(find(executed, 'reviews["reply"] = reviews.pizza.map('))
    assert "Sturdy umbrella" in kept and "Broke in the first storm" not in kept  # "not": no
    counts = outputs_text(find(executed, "mood = reviews.pizza.classify("))
    assert all(label in counts for label in ("great", "broke", "late"))
    summary = outputs_text(find(executed, "reviews.pizza.agg("))
    assert "Read 6 rows in one prompt; 1 request sent." in summary


def test_failure_cell_and_recovery(executed):
    failed = find(executed, "%pizza How did {regoin} do?")
    assert "UsageError: Name 'regoin' in {regoin} is not defined" in outputs_text(failed)
    after = find(executed, "%pizza -f text One more question")
    (result,) = [o for o in after.outputs if o.output_type == "execute_result"]
    assert set(result.data) == {"text/plain"} and "6 x 7" in result.data["text/plain"]


def test_no_cell_keeps_an_empty_output(executed):
    """What a streamed or slow answer showed while arriving became its answer: no output of
    the saved notebook is an emptied display."""
    for source, cell in executed.items():
        for output in cell.outputs:
            if output.output_type in ("display_data", "execute_result"):
                assert any(str(v).strip() for v in output.data.values()), source


def test_question_about_an_error(executed):
    failed = find(executed, 'sales["revnue"].sum()')
    assert any(o.output_type == "error" and o.ename == "KeyError" for o in failed.outputs)
    text = outputs_text(find(executed, "%%pizza\nThis line:"))
    assert '> sales["revnue"].sum()\n> fails with:\n> Traceback (most recent call last):' in text
    assert "> KeyError: 'revnue'\n> In one sentence, what is wrong?" in text


def test_other_backends(executed):
    listing = outputs_text(find(executed, "from pizzagpt_magic import register_endpoint"))
    assert "local:emu-mini" in listing
    streamed = find(executed, "%pizza -m local:emu-mini --temperature 0.2")
    # A streamed answer is one output: the display it grew in became the finished answer.
    (result,) = streamed.outputs
    assert result.output_type == "display_data"
    assert "why does East lead in revenue?" in result.data["text/plain"]
    meta = result.metadata["pizzagpt_magic"]
    assert meta["provider"] == "local" and meta["model"] == "emu-mini"
    assert meta["parameters"] == {"temperature": 0.2} and meta["usage"]["total_tokens"] > 0
    assert "answer tokens" in result.data["text/html"]
    cut = find(executed, "%pizza -m local:emu-mini --max-tokens 8")
    (result,) = cut.outputs
    assert "cut at the token limit" in result.data["text/html"]
    assert result.metadata["pizzagpt_magic"]["finish_reason"] == "length"


def test_a_chart_and_a_fix(executed):
    chart = find(executed, "%pizza -m local:emu-mini What does this chart show?")
    (result,) = chart.outputs
    assert "The question holds 1 image(s): PNG" in result.data["text/plain"]
    failed = find(executed, 'sales.groupby("regoin")')
    assert any(o.output_type == "error" and o.ename == "KeyError" for o in failed.outputs)
    fixed = find(executed, "%pizza -m local:emu-mini --fix")
    (result,) = fixed.outputs
    text = result.data["text/plain"]
    assert 'sales.groupby("regoin")["units"].sum()' in text and "KeyError" in text
    assert "> keep the column names" in text


def test_no_placeholder_left_behind(executed):
    for cell in executed.values():
        for output in cell.outputs:
            if output.output_type == "display_data":
                assert "is answering" not in str(output.data)


def test_demo_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pizzagpt_magic", "demo", "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "[cell 5] %pizza In one paragraph" in result.stdout
    assert "    → > In one paragraph, how should I compare revenue" in result.stdout
    assert "Done: 36 questions answered by the emulator" in result.stdout
    executed = nbformat.read(tmp_path / "quickstart.ipynb", as_version=4)
    assert any(cell.get("outputs") for cell in executed.cells)


def test_demo_reports_a_failing_notebook(tmp_path):
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("%load_ext pizzagpt_magic"),
            nbformat.v4.new_code_cell("%pizza [[fault:status=500]] fails"),
            nbformat.v4.new_code_cell("%pizza never reached"),
        ]
    )
    path = tmp_path / "broken.ipynb"
    nbformat.write(nb, path)
    result = subprocess.run(
        [sys.executable, "-m", "pizzagpt_magic", "demo", str(path), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pizzagpt demo: a cell failed (UsageError: HTTP 500")
    assert "never reached" not in result.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "pizzagpt_magic", "demo", "nope.ipynb"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "no notebook at nope.ipynb" in missing.stderr


def test_the_demo_prints_a_command_that_reads_its_log(tmp_path):
    """The kernel runs in the notebook's folder: a relative store path crossing into it was
    resolved there, and the printed command read an empty store."""
    notebooks, work = tmp_path / "notebooks", tmp_path / "work"
    notebooks.mkdir()
    work.mkdir()
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("%load_ext pizzagpt_magic"),
            nbformat.v4.new_code_cell("%pizza Name one pizza topping"),
        ]
    )
    nbformat.write(nb, notebooks / "small.ipynb")
    env = {k: v for k, v in os.environ.items() if k != "PIZZAGPT_STORE"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [sys.executable, "-m", "pizzagpt_magic", "demo", str(notebooks / "small.ipynb")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=work,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert not (notebooks / "demo-output").exists()
    line = next(x for x in result.stdout.splitlines() if x.startswith("Every exchange"))
    assert str(work / "demo-output" / "store.sqlite3") in line
    command = line.split("to read it: ", 1)[1]
    logs = subprocess.run(
        command, shell=True, capture_output=True, text=True, timeout=60, cwd=work, env=env
    )
    assert logs.returncode == 0, logs.stderr
    assert "> Name one pizza topping" in logs.stdout
