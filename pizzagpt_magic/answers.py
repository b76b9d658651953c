"""The answer file: a notebook's answers as a JSON Lines file that travels with it.

With an answer file in effect (``%pizza --answers PATH``, ``PizzaMagics.answers``,
``$PIZZAGPT_ANSWERS``, ``answers=`` in the Python API), every lookup reads the file first, then
the store, then the network, and every answer a question gets is written to the file. A colleague
or CI who reruns the notebook with the file gets the same answers with no key and no network
(``answers_only``).

The file is made for review in diffs:

- one line per answer, sorted by its key, fields in a fixed order, nothing that changes from one
  run to the next (no time, no seconds, no request id) and nothing secret (no key, header, proxy
  or server URL: a line is found by provider name, model, parameters and messages, so it is found
  whatever server answered it);
- an unchanged rerun leaves it byte for byte as it was (nothing is written when nothing changed);
- it is replaced atomically (a crash leaves the old file or the new one), under a file lock, and
  merged with what another kernel wrote meanwhile, so two kernels writing it lose nothing.

Lookups read the file once, into memory; later lookups never read it again unless another
process changed it (its size and modification time tell).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AnswerMissingError, ConfigurationError
from .transport import _getenv

__all__ = [
    "FIELDS",
    "AnswerFile",
    "AnswerSettings",
    "answer_key",
    "current",
    "diff",
    "open_answers",
    "prune",
    "using",
]

logger = logging.getLogger(__name__)

#: The fields of a line, in the order they are written.
FIELDS = (
    "key",
    "provider",
    "model",
    "parameters",
    "messages",
    "text",
    "value",
    "tool_calls",
    "finish_reason",
    "usage",
    "cost",
)
#: Seconds between two writes of the file during a batch.
WRITE_INTERVAL = 0.5


def answer_key(
    provider: str, model: str, parameters: dict[str, Any], messages: Iterable[dict[str, Any]]
) -> str:
    """The key of an answer in the file: a hash of the provider's name, the model, the
    parameters that change the answer and the messages (images by their hash); never the
    server's URL, so a line is found whatever server answered it."""
    from .store import request_key

    return request_key(provider, model, parameters, messages)


def _line(record: dict[str, Any]) -> str:
    ordered = {name: record[name] for name in FIELDS if record.get(name) is not None}
    return json.dumps(ordered, ensure_ascii=False, separators=(", ", ": "), default=str)


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


class AnswerFile:
    """One answer file: its lines in memory, written back when they changed."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().absolute()
        self._records: dict[str, dict[str, Any]] = {}
        #: Keys this process added or replaced since the last write: they win over the file's.
        self._changed: set[str] = set()
        self._identity: tuple[int, int, int] | None = None
        self._loaded = False
        self._written_at = 0.0
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"AnswerFile({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # -- reading --------------------------------------------------------------------------------

    def _read(self) -> dict[str, dict[str, Any]]:
        """The file's lines by key (empty when it does not exist)."""
        records: dict[str, dict[str, Any]] = {}
        try:
            handle = self.path.open(encoding="utf-8")
        except FileNotFoundError:
            return records
        with handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    key = record["key"]
                except (ValueError, KeyError, TypeError) as exc:
                    raise ConfigurationError(
                        f"The answer file {self.path} is not valid at line {number} ({exc}); "
                        "fix or remove that line"
                    ) from None
                records[key] = record
        return records

    def _refresh(self) -> None:
        identity = _identity(self.path)
        if self._loaded and identity == self._identity:
            return
        records = self._read()
        # Lines this process has not written yet stay as they are.
        for key in self._changed:
            records[key] = self._records[key]
        self._records = records
        self._identity = identity
        self._loaded = True

    def get(self, key: str) -> dict[str, Any] | None:
        """The line of ``key``, or None."""
        with self._lock:
            if not self._loaded:
                self._refresh()
            return self._records.get(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __len__(self) -> int:
        with self._lock:
            if not self._loaded:
                self._refresh()
            return len(self._records)

    def records(self) -> list[dict[str, Any]]:
        """Every line, sorted by key."""
        with self._lock:
            self._refresh()
            return [self._records[k] for k in sorted(self._records)]

    # -- writing --------------------------------------------------------------------------------

    def add(self, record: dict[str, Any]) -> None:
        """Put ``record`` (a line with its ``key``) in the file: at once when the last write
        was more than ``WRITE_INTERVAL`` ago, else at the next ``flush``."""
        with self._lock:
            if not self._loaded:
                self._refresh()
            key = record["key"]
            if _line(self._records.get(key) or {}) == _line(record):
                return
            self._records[key] = record
            self._changed.add(key)
            if time.monotonic() - self._written_at >= WRITE_INTERVAL:
                self.flush()

    def flush(self) -> bool:
        """Write the lines this process added, merged with the file as it is now; True when
        the file was written."""
        with self._lock:
            if not self._changed:
                return False
            from filelock import FileLock

            self.path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(lock_path(self.path), timeout=30):
                on_disk = self._read()
                for key in self._changed:
                    on_disk[key] = self._records[key]
                text = "".join(_line(on_disk[k]) + "\n" for k in sorted(on_disk))
                self._replace(text)
                self._records = on_disk
                self._identity = _identity(self.path)
            self._changed.clear()
            self._written_at = time.monotonic()
            return True

    def _replace(self, text: str) -> None:
        """Write ``text`` as the file's content atomically: the old file or the new one."""
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            if self.path.exists():
                os.chmod(temporary, self.path.stat().st_mode & 0o777)
            else:
                os.chmod(temporary, 0o644)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def remove(self, keys: Iterable[str]) -> int:
        """Drop the lines of ``keys``; how many were dropped."""
        from filelock import FileLock

        with self._lock, FileLock(lock_path(self.path), timeout=30):
            on_disk = self._read()
            gone = [k for k in keys if k in on_disk]
            for key in gone:
                del on_disk[key]
                self._changed.discard(key)
            if gone:
                self._replace("".join(_line(on_disk[k]) + "\n" for k in sorted(on_disk)))
            self._records = on_disk
            self._identity = _identity(self.path)
            self._loaded = True
            return len(gone)


# -- the answer file in effect ------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerSettings:
    """The answer file in effect for a question, and how it is used."""

    file: AnswerFile
    #: Answers come only from the file: a question not in it fails, nothing is sent.
    only: bool = False
    #: Ask again, and replace the file's line.
    refresh: bool = False

    def missing(self, messages: list[dict[str, Any]]) -> AnswerMissingError:
        from .images import content_text

        users = [m for m in messages if m.get("role") == "user"]
        question = " ".join(content_text(users[-1]["content"]).split()) if users else ""
        if len(question) > 80:
            question = question[:79] + "…"
        return AnswerMissingError(
            f"No answer to {question!r} in the answer file {self.file.path.name} (answers only: "
            "nothing is sent); run it once without --answers-only to add it"
        )


_FILES: dict[Path, AnswerFile] = {}


def lock_path(path: Path) -> str:
    """The lock of the answer file at ``path``: in the system's temporary folder, named by the
    file's resolved path, so that the writers of one machine share it and no ``.lock`` file
    lies beside the notebook to be committed with it."""
    import hashlib

    name = hashlib.sha256(str(path.resolve()).encode("utf-8", "surrogatepass")).hexdigest()
    user = f"-{os.getuid()}" if hasattr(os, "getuid") else ""
    folder = Path(tempfile.gettempdir()) / f"pizzagpt-answer-locks{user}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return str(folder / f"{name[:32]}.lock")


_FILES_LOCK = threading.Lock()
_CURRENT: contextvars.ContextVar[AnswerSettings | None] = contextvars.ContextVar(
    "pizzagpt_answers", default=None
)


def open_answers(path: str | os.PathLike[str]) -> AnswerFile:
    """The process's ``AnswerFile`` for ``path`` (one per file, so lookups share its lines)."""
    resolved = Path(path).expanduser().absolute()
    with _FILES_LOCK:
        answers = _FILES.get(resolved)
        if answers is None:
            answers = _FILES[resolved] = AnswerFile(resolved)
        return answers


def _env_only() -> bool:
    return os.environ.get("PIZZAGPT_ANSWERS_ONLY", "").strip().lower() in ("1", "true", "yes")


def settings_for(
    path: str | os.PathLike[str] | AnswerFile | None,
    *,
    only: bool | None = None,
    refresh: bool = False,
) -> AnswerSettings | None:
    """The settings for ``path`` (None: ``$PIZZAGPT_ANSWERS``, or no file), ``only`` (None:
    ``$PIZZAGPT_ANSWERS_ONLY``) and ``refresh``."""
    if path is None:
        path = os.environ.get("PIZZAGPT_ANSWERS") or None
    if only is None:
        only = _env_only()
    if path is None or path == "":
        if only:
            raise ConfigurationError(
                "--answers-only needs an answer file (--answers PATH or $PIZZAGPT_ANSWERS)"
            )
        return None
    file = path if isinstance(path, AnswerFile) else open_answers(path)
    return AnswerSettings(file, only=only, refresh=refresh)


def current() -> AnswerSettings | None:
    """The answer file in effect here (``using``), else the one ``$PIZZAGPT_ANSWERS`` names."""
    settings = _CURRENT.get()
    if settings is not None:
        return settings
    if _getenv("PIZZAGPT_ANSWERS"):  # read for every answer of a batch: no KeyError inside
        return settings_for(None)
    return None


@contextlib.contextmanager
def using(settings: AnswerSettings | None) -> Iterator[AnswerSettings | None]:
    """Put ``settings`` in effect for the code inside (and the tasks it starts); the file is
    written when it ends, whatever happened."""
    token = _CURRENT.set(settings)
    try:
        yield settings
    finally:
        _CURRENT.reset(token)
        if settings is not None:
            try:
                settings.file.flush()
            except Exception as exc:  # noqa: BLE001 - an answer must not be lost for the file
                logger.warning("could not write the answer file %s: %s", settings.file.path, exc)


# -- review -------------------------------------------------------------------------------------


def notebook_keys(notebook: str | os.PathLike[str]) -> set[str] | None:
    """The answer keys a notebook's saved outputs record, or None when it has no outputs."""
    data = json.loads(Path(notebook).read_text(encoding="utf-8"))
    keys: set[str] = set()
    outputs = 0
    for cell in data.get("cells", []):
        for output in cell.get("outputs", []) or []:
            outputs += 1
            meta = (output.get("metadata") or {}).get("pizzagpt_magic") or {}
            if isinstance(meta.get("answer_key"), str):
                keys.add(meta["answer_key"])
            keys.update(k for k in meta.get("answer_keys") or [] if isinstance(k, str))
    if not outputs:
        return None
    return keys


def prune(path: str | os.PathLike[str], notebook: str | os.PathLike[str]) -> int:
    """Drop the lines of ``path`` that no cell of ``notebook`` asks any more; how many."""
    keys = notebook_keys(notebook)
    if keys is None:
        raise ConfigurationError(
            f"{Path(notebook).name} has no saved outputs, so which answers it uses is not known; "
            "run it with the answer file first"
        )
    answers = AnswerFile(path)
    unused = [r["key"] for r in answers.records() if r["key"] not in keys]
    return answers.remove(unused)


def diff(old: str | os.PathLike[str], new: str | os.PathLike[str]) -> list[tuple[str, str, str]]:
    """Which questions changed between two answer files: ``(change, key, question)`` with
    change ``added``, ``removed`` or ``changed`` (same question, another answer)."""
    from .images import content_text

    def question(record: dict[str, Any]) -> str:
        users = [m for m in record.get("messages") or [] if m.get("role") == "user"]
        text = content_text(users[-1]["content"]) if users else ""
        return " ".join(text.split())

    before = {r["key"]: r for r in AnswerFile(old).records()}
    after = {r["key"]: r for r in AnswerFile(new).records()}
    changes = []
    for key in sorted(before.keys() | after.keys()):
        if key not in after:
            changes.append(("removed", key, question(before[key])))
        elif key not in before:
            changes.append(("added", key, question(after[key])))
        elif _line(before[key]) != _line(after[key]):
            changes.append(("changed", key, question(after[key])))
    return changes
