"""``%pizza --jobs [cancel ID]``: the provider batch jobs the store keeps, or cancelling one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from ..errors import PizzagptError

if TYPE_CHECKING:
    from .pizza import PizzaMagics


__all__ = ["show_jobs"]


class JobList:
    """The job list as a displayable object (text, and the records in ``jobs``)."""

    def __init__(self, jobs: list[dict[str, Any]], text: str) -> None:
        self.jobs = jobs
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        from ..render import escape

        return {"text/plain": self.text, "text/html": f"<pre>{escape(self.text)}</pre>"}


def show_jobs(magics: PizzaMagics, rest: str) -> JobList:
    """The job list (``rest`` empty), or ``cancel ID``."""
    from ..jobs import cancel_job, format_jobs, list_jobs

    words = rest.split()
    store = magics._store()
    if not words:
        jobs = list_jobs(store)
        return JobList(jobs, format_jobs(jobs))
    if words[0] != "cancel" or len(words) != 2:
        raise UsageError("--jobs takes nothing, or cancel ID (an id the list shows)")
    try:
        record = cancel_job(store, words[1])
    except PizzagptError as exc:
        raise UsageError(f"--jobs cancel: {exc}") from None
    text = (
        f"Job {record['id']} ({record['provider']}:{record['model']}) is {record['status']}; "
        "the answers it finished are read when its cell runs again."
    )
    return JobList([record], text)
