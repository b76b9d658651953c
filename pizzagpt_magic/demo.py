"""``pizzagpt demo``: run a notebook in a real Jupyter kernel against the offline emulator.

It starts the emulator on a free loopback port, points ``PIZZAGPT_URL`` at it, executes the
notebook with nbclient, prints each ``%pizza`` cell's prompt and answer as it runs, and writes
the executed notebook (and an HTML rendering when nbconvert is installed).
"""

from __future__ import annotations

import os
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["DemoError", "default_notebook", "run_demo"]


class DemoError(Exception):
    """The demo could not run, or a cell failed; the message says which."""


def default_notebook() -> Path:
    """The quickstart notebook of a source checkout (or an editable install)."""
    return Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def _text_of(outputs: list[dict[str, Any]]) -> str:
    parts = []
    for output in outputs:
        if output.get("output_type") in ("execute_result", "display_data"):
            data = output.get("data", {})
            text = data.get("text/plain") or data.get("text/markdown") or ""
            if text:
                parts.append(text)
        elif output.get("output_type") == "stream":
            parts.append(output.get("text", "").strip())
        elif output.get("output_type") == "error":
            parts.append(f"{output.get('ename')}: {output.get('evalue')}")
    return "\n".join(parts)


def _report(cell: Any, cell_index: int, **_: Any) -> None:
    source = cell.get("source", "")
    if cell.get("cell_type") != "code" or "%pizza" not in source:
        return
    answer = _text_of(cell.get("outputs", [])) or "(no output)"
    lines = answer.strip().splitlines()
    shown = "\n".join(lines[:8]) + (f"\n… ({len(lines) - 8} more lines)" if len(lines) > 8 else "")
    print(f"[cell {cell_index}] {source.strip()}", flush=True)
    print(textwrap.indent(shown, "    → ", lambda line: True), "\n", flush=True)


def run_demo(
    notebook: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] = "demo-output",
    *,
    timeout: float = 120,
    latency: float = 0.0,
) -> int:
    """Run ``notebook`` against the emulator; returns 0, or raises ``DemoError``."""
    try:
        import nbformat
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError
    except ImportError as exc:
        raise DemoError(
            f"the demo needs nbclient and ipykernel: pip install 'pizzagpt-magic[demo]' ({exc})"
        ) from None
    from .emulator import EmulatorThread

    path = Path(notebook) if notebook else default_notebook()
    if not path.is_file():
        raise DemoError(f"no notebook at {path}; pass the path of one")
    # Absolute: the kernel runs in the notebook's folder, and a relative path would be read
    # there, not where it is printed.
    out_dir = Path(output_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(path, as_version=4)
    previous = os.environ.get("PIZZAGPT_URL")
    previous_store = os.environ.get("PIZZAGPT_STORE")
    store_file = None
    if previous_store is None:
        # A store of the demo's own, new each run: the emulator's answers never mix with the
        # user's, and the log shows what this run asked.
        store_file = out_dir / "store.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{store_file}{suffix}").unlink(missing_ok=True)
        os.environ["PIZZAGPT_STORE"] = str(store_file)
    with EmulatorThread(latency=latency) as emu:
        os.environ["PIZZAGPT_URL"] = emu.url
        print(f"Emulator on {emu.url}; running {path} in a Jupyter kernel\n", flush=True)
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent.resolve())}},
            on_cell_executed=_report,
        )
        failure: CellExecutionError | None = None
        try:
            client.execute()
        except CellExecutionError as exc:
            failure = exc
        except Exception as exc:  # the kernel did not start, a cell timed out, ...
            raise DemoError(f"the notebook could not run: {type(exc).__name__}: {exc}") from None
        finally:
            for name, value in (("PIZZAGPT_URL", previous), ("PIZZAGPT_STORE", previous_store)):
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        requests = emu.requests
    executed = out_dir / path.name
    nbformat.write(nb, executed)
    if failure is not None:
        raise DemoError(
            f"a cell failed ({failure.ename}: {failure.evalue}); the notebook so "
            f"far is in {executed}"
        )
    written = [executed]
    try:
        from nbconvert import HTMLExporter
    except ImportError:
        pass
    else:
        body, _ = HTMLExporter().from_notebook_node(nb)
        html_path = executed.with_suffix(".html")
        html_path.write_text(body, encoding="utf-8")
        written.append(html_path)
    print(
        f"Done: {requests} questions answered by the emulator; wrote "
        f"{', '.join(str(p) for p in written)}",
        flush=True,
    )
    if store_file is not None:
        print(
            f"Every exchange is logged in {store_file}; to read it: "
            f"PIZZAGPT_STORE={shlex.quote(str(store_file))} pizzagpt logs -n 50",
            flush=True,
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo(*sys.argv[1:2]))
