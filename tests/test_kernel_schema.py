"""Typed batches in a real kernel: 200 rows with a schema, faults repaired or kept as rows of
<NA>, response_format in the requests, an endpoint that refuses it."""

from __future__ import annotations

import ast
import json

import pytest
from kernel_helpers import Kernel, error_of, result_text

from pizzagpt_magic.emulator import EmulatorThread

pytestmark = pytest.mark.kernel
pytest.importorskip("jsonschema")
pytest.importorskip("pandas")

SPEC = "sentiment pos|neg|neu, score int: 1 to 5, day date, ok bool, reason"
DTYPES = {
    "sentiment": "category",
    "score": "Int64",
    "day": "datetime64",
    "ok": "boolean",
    "reason": "string",
    "_error": "string",
}


@pytest.fixture(scope="module")
def servers():
    with EmulatorThread() as emu, EmulatorThread(response_format=False) as old:
        yield emu, old


@pytest.fixture(scope="module")
def kernel(servers, tmp_path_factory):
    emu, old = servers
    store = tmp_path_factory.mktemp("store") / "answers.sqlite3"
    kernel = Kernel({"PIZZAGPT_URL": emu.url, "PIZZAGPT_STORE": str(store)})
    setup = (
        "%load_ext pizzagpt_magic\n"
        "import pandas as pd\n"
        "from pizzagpt_magic import register_endpoint\n"
        f"register_endpoint('emu', '{emu.url}/v1')\n"
        f"register_endpoint('old', '{old.url}/v1')\n"
        "%config PizzaMagics.progress = False\n"
    )
    assert error_of(kernel.execute(setup)) is None
    yield kernel
    kernel.shutdown()


def rows(fault: str) -> str:
    """A cell making a 200-row frame, every 20th row (5%) carrying ``fault``."""
    return (
        "words = ['pos', 'neg', 'neu']\n"
        "reviews = pd.DataFrame({'text': [\n"
        "    f'{words[i % 3]}, {i % 5 + 1} stars: review {i} on 2024-05-{i % 28 + 1:02d}'\n"
        # a latency of its own gives each faulted row its own fault (and ``times`` count)
        f"    + (f' [[fault:{fault};latency=0.0001{{i}}]]' if i % 20 == 7 else '')\n"
        "    for i in range(200)]}, index=[f'r{i}' for i in range(200)])\n"
    )


def frame_facts(name: str) -> str:
    failed = f"{name}['_error'].notna()"
    return (
        "import json\n"
        f"json.dumps({{'rows': len({name}),"
        f" 'dtypes': {{k: str(v) for k, v in {name}.dtypes.items()}},"
        f" 'errors': int({failed}.sum()),"
        f" 'failed': {name}.loc[{failed}, '_error'].tolist(),"
        f" 'na': bool({name}.loc[{failed}].drop(columns='_error').isna().all().all()),"
        f" 'scores': {name}['score'].dropna().astype(int).tolist()[:6],"
        f" 'index': list({name}.index[:2])}})"
    )


def facts(kernel, name):
    return json.loads(ast.literal_eval(result_text(kernel.execute(frame_facts(name)))))


def check_dtypes(found):
    for column, dtype in DTYPES.items():
        assert found["dtypes"][column].startswith(dtype), (column, found["dtypes"])


def test_two_hundred_rows_faulted_once_are_repaired(kernel, servers):
    emu, _ = servers
    emu.reset_stats()
    assert error_of(kernel.execute(rows("badjson;times=1"))) is None
    messages = kernel.execute(
        f'%%pizza --each reviews --schema "{SPEC}" -m emu:emu-mini -o out --concurrency 16\n'
        "{item.text}"
    )
    assert error_of(messages) is None, error_of(messages)
    assert "200 answers from emu:emu-mini" in result_text(messages)
    found = facts(kernel, "out")
    assert found["rows"] == 200 and found["errors"] == 0 and found["index"] == ["r0", "r1"]
    check_dtypes(found)
    assert found["scores"] == [1, 2, 3, 4, 5, 1]
    # 200 questions and one repair each for the 10 faulted rows
    assert emu.requests == 210
    bodies = [r["body"] for r in emu.chat_requests]
    assert all(b["response_format"]["type"] == "json_schema" for b in bodies)


def test_rows_that_stay_bad_are_na_with_their_reason(kernel, servers):
    emu, _ = servers
    emu.reset_stats()
    assert error_of(kernel.execute(rows("badjson"))) is None
    messages = kernel.execute(
        f'%%pizza --each reviews --schema "{SPEC}" -m emu:emu-mini -o bad\n{{item.text}}'
    )
    error = error_of(messages)
    assert error is not None and "10 of 200 prompts failed" in error["evalue"]
    found = facts(kernel, "bad")
    assert found["rows"] == 200 and found["errors"] == 10 and found["na"]
    check_dtypes(found)
    assert all(
        reason.startswith("SchemaError: The answer does not fit the schema: field 'sentiment'")
        for reason in found["failed"]
    )
    # A rerun asks only for the rows that failed (their question and one repair each).
    emu.reset_stats()
    kernel.execute(
        f'%%pizza --each reviews --schema "{SPEC}" -m emu:emu-mini -o bad\n{{item.text}}'
    )
    assert emu.requests == 20


def test_an_endpoint_that_refuses_response_format(kernel, servers):
    _, old = servers
    old.reset_stats()
    assert error_of(kernel.execute(rows("status=200;times=0"))) is None
    messages = kernel.execute(
        f'%%pizza --each reviews --schema "{SPEC}" -m old:emu-mini -o via_prompt\n{{item.text}}'
    )
    assert error_of(messages) is None, error_of(messages)
    found = facts(kernel, "via_prompt")
    assert found["errors"] == 0 and found["scores"] == [1, 2, 3, 4, 5, 1]
    refused = [r for r in old.chat_requests if "response_format" in r["body"]]
    # refused at most once a request in flight when the first refusal came; never after
    assert 1 <= len(refused) <= 8
    assert old.requests == 200 + len(refused)
