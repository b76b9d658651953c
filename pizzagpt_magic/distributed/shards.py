"""The store of a worker process: its own shard to write, the others to read.

A distributed job's workers each write a store file of their own in one directory (SQLite on a
network filesystem is not safe to share for writing), named by host and process. A worker looks
an answer up in its own shard, then in the other shards of the directory (so a rerun after a
killed worker finds what that worker was given), then in the notebook's store, all read-only;
it writes only its own shard. ``merge_shards`` brings the shards into the user's store.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

__all__ = ["LayeredStore", "merge_shards", "shard_store"]

#: The variable naming the directory of shards when no ``store_dir`` is given.
STORE_DIR_VARIABLE = "PIZZAGPT_STORE_DIR"

_stores: dict[tuple[str, str | None], LayeredStore] = {}
_lock = threading.Lock()


class LayeredStore:
    """A shard to write and stores to read: what ``engine.Recorder`` needs of a store."""

    def __init__(self, directory: Path, shared: str | None = None) -> None:
        from ..store import ReadOnlyStore, Store

        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.own = Store(directory / f"shard-{socket.gethostname()}-{os.getpid()}.sqlite3")
        self.path = self.own.path
        self.shared = ReadOnlyStore(shared) if shared else None
        self._others: dict[Path, Any] = {}
        self._ReadOnlyStore = ReadOnlyStore

    @property
    def failed(self) -> str | None:
        return self.own.failed

    @property
    def usable(self) -> bool:
        return self.own.usable

    def refresh(self) -> None:
        """Open the shards that appeared in the directory since the last look."""
        for path in sorted(self.directory.glob("shard-*.sqlite3")):
            if path != self.own.path and path not in self._others:
                self._others[path] = self._ReadOnlyStore(path)

    def get(self, key: str) -> dict[str, Any] | None:
        found = self.own.get(key)
        if found is not None:
            return found
        for other in self._others.values():
            found = other.get(key)
            if found is not None:
                return found
        return self.shared.get(key) if self.shared is not None else None

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    def put(self, key: str, provider: str, model: str, text: str, meta: dict[str, Any]) -> None:
        self.own.put(key, provider, model, text, meta)

    def log(self, record: dict[str, Any]) -> None:
        self.own.log(record)

    def flush(self, timeout: float = 30.0) -> bool:
        return self.own.flush(timeout)

    def close(self) -> None:
        self.own.close()
        for other in self._others.values():
            other.close()
        if self.shared is not None:
            self.shared.close()


def shard_store(
    store_dir: str | os.PathLike[str] | None, shared: str | None
) -> LayeredStore | None:
    """This process's ``LayeredStore`` for ``store_dir`` (default ``$PIZZAGPT_STORE_DIR``), made
    once per process; None when no directory is set."""
    directory = store_dir if store_dir is not None else os.environ.get(STORE_DIR_VARIABLE)
    if not directory:
        return None
    resolved = Path(directory).expanduser().absolute()
    key = (str(resolved), str(Path(shared).expanduser().absolute()) if shared else None)
    with _lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = LayeredStore(resolved, key[1])
    store.refresh()
    return store


def merge_shards(
    directory: str | os.PathLike[str], target: str | os.PathLike[str] | None = None
) -> int:
    """Bring every shard in ``directory`` into the store at ``target`` (default: the user's
    store); how many cached answers were added. Idempotent; run it while nothing writes."""
    from ..store import merge_stores, store_path

    if target is None:
        target = store_path()
        if target is None:
            raise ValueError("the store is off ($PIZZAGPT_STORE is empty): name a target")
    shards = sorted(Path(directory).expanduser().glob("shard-*.sqlite3"))
    return merge_stores(target, shards)
