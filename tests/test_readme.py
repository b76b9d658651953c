"""Every code example in README.md runs: IPython cells in a shell, Python blocks as scripts,
command lines in a shell, all against the emulator."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from traitlets.config import Config

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)

# Commands run by other tests (installing, long-running servers, the demo, the benchmarks).
ELSEWHERE = {
    'pip install -e ".[demo]" && python -m pizzagpt_magic demo': "test_notebook.test_demo_command",
    'pip install -e ".[test]" && pytest': ".ci/run",
    'pip install -e ".[test,browser]" && pytest -m browser': ".ci/run (the browser suite)",
    "python -m pizzagpt_magic.emulator --port 0 --latency 0.2": (
        "test_emulator.test_command_line_prints_its_url_first"
    ),
    "PIZZAGPT_ANSWERS_ONLY=1 jupyter nbconvert --to notebook --execute analysis.ipynb": (
        "test_kernel_answers.test_a_rerun_offline_sends_nothing_and_saves_the_same_outputs"
    ),
    "pizzagpt answers diff old.answers.jsonl analysis.answers.jsonl   "
    "# + added, - removed, ~ changed": "test_answers.test_prune_and_diff_on_the_command_line",
    "pizzagpt answers prune analysis.answers.jsonl --notebook analysis.ipynb": (
        "test_kernel_answers.test_a_changed_question_changes_one_line_and_prune_drops_the_old"
    ),
}


@pytest.fixture(scope="module")
def readme_store(tmp_path_factory):
    """One store for the README's examples, in order: what the cells ask, the commands read."""
    return str(tmp_path_factory.mktemp("readme") / "store.sqlite3")


@pytest.fixture(scope="module")
def readme_config_folder(tmp_path_factory):
    return str(tmp_path_factory.mktemp("readme-config"))


@pytest.fixture(autouse=True)
def readme_config(readme_config_folder, monkeypatch):
    """One config folder for the README's examples, in order: the prompts and aliases the
    cells save, the Python examples and the commands use."""
    monkeypatch.setenv("PIZZAGPT_CONFIG", readme_config_folder)


@pytest.fixture
def with_store(readme_store, monkeypatch):
    from pizzagpt_magic import store

    monkeypatch.setenv("PIZZAGPT_STORE", readme_store)
    yield readme_store
    store.forget_stores()


def blocks(language: str) -> list[str]:
    return [code for lang, code in BLOCKS if lang == language]


def test_readme_has_examples_of_each_kind():
    assert {lang for lang, _ in BLOCKS} <= {"ipython", "python", "bash", "text"}
    assert len(blocks("ipython")) >= 10 and len(blocks("python")) >= 3 and blocks("bash")


def test_ipython_examples(shell, emu, with_store, tmp_path, monkeypatch):
    # In a folder of its own: an example names an answer file relative to the working folder.
    monkeypatch.chdir(tmp_path)
    for code in blocks("ipython"):
        # Numbered cells, as in a notebook: In, Out and Err refer to them.
        result = shell.run_cell(code, store_history=True)
        error = result.error_in_exec or result.error_before_exec
        expected = re.search(r"# raises (\w+)$", code, re.M)
        if expected:  # an example of a failing cell
            assert type(error).__name__ == expected[1], f"{code!r}: {error!r}"
        else:
            assert result.success, f"{code!r} failed: {error}"
    # The question about the failing cell carried its source and its error.
    assert any(
        'totals["East"]' in q
        and q.rstrip().endswith("Why, and how do I fix it?")
        and "KeyError: 'East'" in q
        for q in emu.questions
    )
    assert isinstance(shell.user_ns["plan"], dict)  # -f json -o plan
    assert len(shell.user_ns["notes"]) == 4  # --each over the table
    facts = shell.user_ns["facts"]  # --each -f json: parsed values on the table's index
    assert list(facts.index) == list(shell.user_ns["sales"].index)
    assert all(isinstance(value, dict) for value in facts)
    typed = shell.user_ns["typed"]  # --each --schema: a typed frame, one request a review
    assert str(typed["stars"].dtype) == "Int64" and list(typed["stars"]) == [5, 2, 5]
    assert shell.user_ns["place"] == {"city": "Rome has about 2800000 people.", "people": 2800000}
    assert shell.magics_manager.registry["PizzaMagics"].timeout == 30
    # Claude's tools example went as tool_use and came back as tool_result blocks.
    results = [
        block
        for request in emu.message_requests
        for message in request["body"]["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]
    assert [r["content"].split(":")[0] for r in results] == ["sales['region']"]


#: Python examples that need a cluster, with the test that runs each on a real local one.
CLUSTER_EXAMPLES = {
    "import dask.dataframe as dd": "test_distributed.test_a_dask_job_asks_each_distinct_prompt_"
    "once_within_the_global_limit",
    "from pizzagpt_magic.distributed import spark_function, spark_schema": (
        "test_distributed.test_spark_local_mode_gives_the_same_answers"
    ),
    "from pizzagpt_magic.distributed import apply_batch": (
        "test_distributed.test_ray_data_map_batches_gives_the_same_answers"
    ),
}


def test_cluster_examples_are_the_ones_tested_elsewhere():
    firsts = {code.splitlines()[0] for code in blocks("python")}
    assert set(CLUSTER_EXAMPLES) <= firsts


@pytest.mark.parametrize(
    "code",
    [c for c in blocks("python") if c.splitlines()[0] not in CLUSTER_EXAMPLES],
    ids=lambda c: c.splitlines()[0][:40],
)
def test_python_examples(emu, code):
    namespace = {"get_config": Config, "__name__": "__main__"}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        # as a script of its own: without this module's ``from __future__`` imports
        exec(compile(code, "README.md", "exec", dont_inherit=True), namespace)
    if "get_config" in code:
        assert namespace["c"].PizzaMagics.cache_size == 256
    else:
        assert out.getvalue().strip()


def test_command_line_examples(emu, with_store):
    bin_dir = os.path.dirname(sys.executable)
    env = {
        **os.environ,
        "PIZZAGPT_URL": emu.url,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    ran = 0
    for code in blocks("bash"):
        for line in code.strip().splitlines():
            if line in ELSEWHERE:
                continue
            if line.startswith("python "):
                line = f"{sys.executable} {line[len('python ') :]}"
            result = subprocess.run(
                ["bash", "-c", line], capture_output=True, text=True, env=env, timeout=60
            )
            assert result.returncode == 0, f"{line}: {result.stderr}"
            assert result.stdout.strip(), line
            ran += 1
    assert ran >= 3


def test_suite_collects_with_the_test_extra_alone(tmp_path):
    """`pip install -e ".[test]" && pytest` must not need the browser extra: its tests are
    deselected, and their module still imports without playwright."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\nsys.modules['playwright'] = None\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/browser"],
        cwd=README.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 5, done.stdout + done.stderr  # 5: nothing left after deselection
    assert "deselected" in done.stdout, done.stdout
    assert "error" not in done.stdout.lower(), done.stdout
