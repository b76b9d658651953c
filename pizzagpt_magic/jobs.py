"""Provider batch jobs from the user's side: the handle of a job not waited for, the list of
jobs the store keeps, and cancelling one by its id.

``ask_many(..., batch_api=True, wait=False)`` and ``%%pizza --each ... --batch-api --no-wait``
give a ``JobHandle``: ``id`` (and ``ids``, when the rows took several jobs), ``status()`` (asks
the provider), ``result()`` (waits, and gives what the same call gives when it waits) and
``cancel()``. ``list_jobs`` is what ``%pizza --jobs`` and ``pizzagpt jobs`` show; ``cancel_job``
what ``... jobs cancel ID`` does. A job's record holds the endpoint's name and URL, the model,
the ids and counts, never a key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from .errors import ConfigurationError, JobError

__all__ = ["JobHandle", "cancel_job", "format_jobs", "list_jobs"]

#: The columns of the job list, in order.
COLUMNS = ("id", "provider", "model", "status", "requests", "completed", "failed", "created")


def _book(store: Any) -> Any:
    from .engine.send.jobs import book_for

    return book_for(store)


def _client(record: dict[str, Any]) -> Any:
    from .backends import resolve
    from .providers.batches import client_for

    backend = resolve(f"{record['provider']}:{record['model']}")
    return client_for(backend, {})


def list_jobs(store: Any, n: int | None = 50) -> list[dict[str, Any]]:
    """The newest ``n`` jobs of ``store`` (or of this process, with the store off): id,
    backend, model, status, counts, created and finished times (seconds since the epoch)."""
    records = _book(store).jobs(n)
    return [
        {
            "id": r["id"],
            "provider": r["provider"],
            "model": r["model"],
            "status": r["status"],
            "requests": r["requests"],
            "completed": r["completed"],
            "failed": r["failed"],
            "created": r["created"],
            "finished": r["finished"],
            "collected": bool(r["collected"]),
        }
        for r in records
    ]


def _when(seconds: float | None) -> str:
    if not seconds:
        return ""
    return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")


def format_jobs(jobs: list[dict[str, Any]]) -> str:
    """The job list as a text table."""
    if not jobs:
        return "No batch jobs."
    header = ["id", "backend", "status", "requests", "completed", "failed", "created", "finished"]
    rows = [
        [
            j["id"],
            f"{j['provider']}:{j['model']}",
            j["status"] + ("" if j["collected"] else " (results not read)"),
            str(j["requests"]),
            str(j["completed"]),
            str(j["failed"]),
            _when(j["created"]),
            _when(j["finished"]),
        ]
        for j in jobs
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in [header, *rows]
    )


async def cancel_job_async(store: Any, job_id: str) -> dict[str, Any]:
    """Ask the provider to cancel the job ``job_id`` (the id the list shows); its record.
    The answers it finished stay readable: the same call run again reads them."""
    book = _book(store)
    record = book.job(job_id)
    if record is None:
        raise ConfigurationError(f"no batch job {job_id!r} in the store (see the job list)")
    state = await _client(record).cancel(job_id)
    book.update_job(job_id, status=state.status)
    record["status"] = state.status
    return record


def cancel_job(store: Any, job_id: str) -> dict[str, Any]:
    """``cancel_job_async`` from synchronous code."""
    from .loop import run_sync

    return run_sync(cancel_job_async(store, job_id))


class JobHandle:
    """Jobs submitted and not waited for (see the module's docstring)."""

    def __init__(self, ids: list[str], store: Any, rerun: Callable[[], Any]) -> None:
        self.ids = list(ids)
        self._store = store
        self._rerun = rerun

    @property
    def id(self) -> str:
        """The job's id (the first, when the rows took several)."""
        if not self.ids:
            raise JobError("no job was submitted: every row was answered already")
        return self.ids[0]

    def __repr__(self) -> str:
        return f"<JobHandle {', '.join(self.ids) or '(nothing submitted)'}>"

    async def status_async(self) -> list[dict[str, Any]]:
        book = _book(self._store)
        states = []
        for job_id in self.ids:
            record = book.job(job_id)
            if record is None:
                continue
            state = await _client(record).poll(job_id)
            book.update_job(
                job_id, status=state.status, completed=state.completed, failed=state.failed
            )
            states.append(
                {
                    "id": job_id,
                    "status": state.status,
                    "done": state.done,
                    "requests": record["requests"],
                    "completed": state.completed,
                    "failed": state.failed,
                }
            )
        return states

    def status(self) -> list[dict[str, Any]]:
        """What the provider says of each job now: status, done, counts."""
        from .loop import run_sync

        return run_sync(self.status_async())

    def result(self) -> Any:
        """Wait for the jobs, and give what the same call gives when it waits."""
        return self._rerun()

    def cancel(self) -> list[dict[str, Any]]:
        """Ask the provider to cancel every job; their records."""
        return [cancel_job(self._store, job_id) for job_id in self.ids]
