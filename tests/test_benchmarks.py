"""The benchmark script runs and reports every figure (its targets are checked by reading it,
not asserted here: timings on shared machines are not test material)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


def test_quick_run_prints_the_table():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    figures = (
        "%load_ext",
        "overhead",
        "keep-alive",
        "rendering",
        "OpenAI-compatible",
        "Messages API",
        "streaming",
        "SSE decoder",
        "batch",
        "cache hit",
        "the store's cost",
        "a cache hit from the store",
        "batch with the store on",
        "whole processes",
        "usage report",
        "one tool round",
        "typed batch",
        "checking and typing a row",
        "df.pizza.map",
        "answer file: ",
    )
    assert len(rows) >= 1 + len(figures)  # the header, and a row for each figure at least
    for words in figures:
        assert any(words in row for row in rows), words
    assert "0 requests sent" in result.stdout


def test_only_runs_the_figures_named():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--only", "load_ext", "render"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and "%load_ext" in rows[1] and "rendering" in rows[2]
    refused = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", "nothing"], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "no figure named nothing" in refused.stderr
