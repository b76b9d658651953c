"""The store: answers that outlast the kernel, in one SQLite database.

It holds a cache (identical requests answered again without asking) and a log (every exchange,
answered or failed), shared by the magics, the Python API and the command line, across kernels,
processes and restarts. Where it is: ``$PIZZAGPT_STORE``, else ``PizzaMagics.store``, else
``store.sqlite3`` in the platform's user data directory (``platformdirs``); an empty value turns
it off (memory only).

- SQLite in WAL mode with a busy timeout, so several kernels and the command line read and
  write at once; the schema is versioned (``PRAGMA user_version``) and migrated forward.
- Reads (a cache lookup) happen where they are asked for; writes go to one writer thread per
  store, in order, committed as they come, so the event loop never waits on the disk or on
  another process's lock, and an answer is on disk moments after it arrived. Writes that queue
  up (a batch's answers) share a transaction, and consecutive rows of one statement go to
  SQLite in one ``executemany``.
- Keys, tokens and proxy credentials are never written: requests hold only the messages and
  parameters, errors are the package's one-line messages, which mask secrets.
- Any failure of the store (unwritable, corrupt, locked too long, disk full) gives one warning
  per process, and from then on the package works from memory only: a question never fails
  because of the store.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .transport import _getenv

__all__ = [
    "Store",
    "StoreWarning",
    "default_path",
    "get_store",
    "logs",
    "request_key",
    "store_path",
]

logger = logging.getLogger(__name__)

#: Seconds a write waits for another process's lock before the store gives up.
BUSY_TIMEOUT = 10.0
#: Most writes committed in one transaction by the writer thread.
WRITE_GROUP = 4000
#: A group of at least ``LINGER_FROM`` writes waits up to ``LINGER`` seconds for more, so
#: that a batch's answers go to disk in few large transactions.
LINGER = 0.05
LINGER_FROM = 256
#: Writes between two checks of the cache's size (see ``Store._trim``).
TRIM_EVERY = 1000
_NOTHING = object()
#: The cache's size limit when none is set, in MB.
DEFAULT_CACHE_MAX_MB = 200.0

#: The table of opened cells (schema 3). Made again, if missing, at every open: a store that
#: went past version 3 before version 3 held it gets it all the same.
INSERTED_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS inserted (
        notebook TEXT NOT NULL,
        cell TEXT NOT NULL,
        code TEXT NOT NULL,
        time REAL NOT NULL,
        PRIMARY KEY (notebook, cell, code)
    )""",
]
SCHEMA_VERSION = 8
#: Each schema version's statements. A number may be missing (another line of work adds it):
#: the migration skips it.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE cache (
            key TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            answer TEXT NOT NULL,
            meta TEXT NOT NULL,
            size INTEGER NOT NULL,
            created REAL NOT NULL,
            used REAL NOT NULL
        )""",
        "CREATE INDEX cache_used ON cache (used)",
        """CREATE TABLE log (
            id INTEGER PRIMARY KEY,
            time REAL NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            parameters TEXT NOT NULL,
            system TEXT,
            messages TEXT NOT NULL,
            prompt TEXT NOT NULL,
            answer TEXT,
            error TEXT,
            seconds REAL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            total_tokens INTEGER,
            cached INTEGER NOT NULL DEFAULT 0,
            source TEXT NOT NULL,
            session TEXT,
            cell INTEGER
        )""",
        "CREATE INDEX log_time ON log (time)",
    ],
    # The prompt cache's share of the prompt tokens, where the backend reports it (Anthropic).
    2: [
        "ALTER TABLE log ADD COLUMN cache_read_input_tokens INTEGER",
        "ALTER TABLE log ADD COLUMN cache_creation_input_tokens INTEGER",
    ],
    # 3: the code cells --insert and --fix opened, so that a cell run again (Restart and Run
    # All) does not open the same code again below itself. The code is kept as its hash.
    3: INSERTED_SCHEMA,
    4: [],
    # The tool calls made on the way to an answer: name, arguments, result size (JSON).
    5: ["ALTER TABLE log ADD COLUMN tool_calls TEXT"],
    6: [],
    # Provider batch jobs: one row a job (never a key), the cache keys of its rows, and whether
    # an answer came through a batch job (its price is the batch price).
    7: [
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            api TEXT NOT NULL,
            provider TEXT NOT NULL,
            origin TEXT NOT NULL,
            model TEXT NOT NULL,
            input_file TEXT,
            status TEXT NOT NULL,
            requests INTEGER NOT NULL,
            completed INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL,
            finished REAL,
            collected INTEGER NOT NULL DEFAULT 0,
            error TEXT
        )""",
        "CREATE INDEX jobs_live ON jobs (collected, origin)",
        """CREATE TABLE job_rows (
            job TEXT NOT NULL,
            key TEXT NOT NULL,
            PRIMARY KEY (job, key)
        ) WITHOUT ROWID""",
        "ALTER TABLE log ADD COLUMN batch INTEGER",
    ],
    # Usage reports count what a Batch API answered apart: the usage index gets the batch
    # column (made again below, from LOG_INDEXES).
    8: ["DROP INDEX IF EXISTS log_usage"],
}
#: Columns of the log added after its first schema, whatever the schema version says: added
#: when missing each time a store is opened, so the order in which changes that number their
#: migrations land cannot skip them. What an exchange cost (USD; NULL when unknown), what a
#: cache hit saved, how the model is priced, and the characters sent (to learn characters a
#: token).
LOG_COLUMNS = {
    "cost": "REAL",
    "cost_saved": "REAL",
    "pricing": "TEXT",
    "input_chars": "INTEGER",
}
LOG_INDEXES = [
    "CREATE INDEX IF NOT EXISTS log_model ON log (provider, model, id)",
    # Usage reports read this index alone, in its order (see Store.usage).
    """CREATE INDEX IF NOT EXISTS log_usage ON log (provider, model, cached, batch, pricing, error,
        time, session, source, prompt_tokens, completion_tokens, cache_read_input_tokens, cost,
        cost_saved)""",
]
FTS_SCHEMA = [
    """CREATE VIRTUAL TABLE IF NOT EXISTS log_fts USING fts5(
        prompt, answer, content='log', content_rowid='id')""",
    """CREATE TRIGGER IF NOT EXISTS log_fts_insert AFTER INSERT ON log BEGIN
        INSERT INTO log_fts (rowid, prompt, answer) VALUES (new.id, new.prompt, new.answer);
    END""",
    """CREATE TRIGGER IF NOT EXISTS log_fts_delete AFTER DELETE ON log BEGIN
        INSERT INTO log_fts (log_fts, rowid, prompt, answer)
        VALUES ('delete', old.id, old.prompt, old.answer);
    END""",
]

#: The columns ``Store.usage`` groups by, for each ``by``.
_USAGE_GROUPS = {
    "model": ["provider", "model"],
    "day": ["date(time, 'unixepoch', 'localtime') AS day"],
    "source": ["source"],
    "session": ["session"],
}

#: What ``Store.usage`` counts for each group.
_USAGE_COUNTS = (
    "exchanges",
    "requests",
    "cache_hits",
    "failures",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "unpriced",
    "local",
    "free",
)


#: JSON as the store writes it, with encoders made once (``json.dumps`` with options makes one a
#: call, a good part of the cost of a short record).
_json = json.JSONEncoder(ensure_ascii=False, default=str).encode
_json_sorted = json.JSONEncoder(sort_keys=True).encode
#: A cache key's JSON: this exact text is hashed, so it never changes.
_json_key = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


#: The log's columns that ``Store.log`` writes, and the statement.
_LOGGED = (
    "time",
    "provider",
    "model",
    "parameters",
    "system",
    "messages",
    "prompt",
    "answer",
    "error",
    "seconds",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cached",
    "source",
    "session",
    "cell",
    "tool_calls",
    "batch",
    "cost",
    "cost_saved",
    "pricing",
    "input_chars",
)


#: What the writer binds for None: binding None costs the sqlite3 module a look for an
#: adapter, ten times the cost of binding an int, and a log row holds several. An empty blob
#: binds at once, and an ``_Insert`` turns it back into NULL (``nullif``); no value the store
#: writes is an empty blob.
_NULL = bytearray()


class _Insert:
    """An INSERT of many rows a statement, in a few shapes: as many rows as the variables
    allow (at most 512), and that halved down to ``SMALL``; a chunk short of its shape is
    padded with empty rows, which the statement leaves out (the first column of a row is
    never NULL). None is bound as ``_NULL``.

    Why: SQLite runs each statement with the GIL released and binds its values with it held,
    so after each statement the writer thread waits for the GIL, up to the interpreter's
    switch interval (5 ms) while the event loop's thread is busy reading a job's results.
    One row a statement (``executemany``) would wait once a row, and rows in exact counts
    would take as many statements of their own (and compiled programs) as counts; these
    shapes take a statement for each 512 rows, and six compiled programs. The full-text index,
    too, writes what it holds at the end of each statement."""

    SMALL = 16

    def __init__(self, head: str, width: int) -> None:
        self.head = head
        self.width = width
        self._statements: dict[int, str] = {}

    def statement(self, count: int) -> str:
        """The statement for ``count`` rows (NULL rows left out)."""
        found = self._statements.get(count)
        if found is None:
            row = f"({', '.join('?' * self.width)})"
            columns = ", ".join(f"nullif(column{i}, x'')" for i in range(1, self.width + 1))
            found = self._statements[count] = (
                f"{self.head} SELECT {columns} FROM (VALUES {', '.join([row] * count)}) "
                "WHERE column1 IS NOT x''"
            )
        return found

    def run(self, connection: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows``, in order."""
        per = _rows_per_statement(connection, self.width)
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            shape = per
            while shape > self.SMALL and shape // 2 >= len(chunk):
                shape //= 2
            values = [_NULL if v is None else v for row in chunk for v in row]
            if len(chunk) < shape:
                values += [_NULL] * (self.width * (shape - len(chunk)))
            connection.execute(self.statement(shape), values)


#: The INSERTs of many rows a statement, by the name a write gives.
_INSERTS = {
    "log": _Insert(f"INSERT INTO log ({', '.join(_LOGGED)})", len(_LOGGED)),
    "cache": _Insert(
        "INSERT OR REPLACE INTO cache (key, provider, model, answer, meta, size, created, used)",
        8,
    ),
    "job_rows": _Insert("INSERT OR IGNORE INTO job_rows (job, key)", 2),
}
_MARK_USED = "UPDATE cache SET used = ? WHERE key = ?"

#: One write for the writer thread: a statement (or the name of one of ``_INSERTS``), its
#: values, and the cache key it writes (read from ``Store._pending`` until it is on disk). A
#: plain tuple of plain values: the garbage collector stops tracking it, however long it
#: waits in the queue. Consecutive writes of one statement go to SQLite together.
_Write = tuple[str, Sequence[Any], "str | None"]


def _sort_key(group: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple("" if value is None else str(value) for value in group)


class StoreWarning(UserWarning):
    """The store failed; the package goes on from memory only."""


#: The variables the platform's user data directory is found from (platformdirs reads these).
_DIRECTORY_VARIABLES = ("XDG_DATA_HOME", "HOME", "APPDATA", "LOCALAPPDATA", "USERPROFILE")


def default_path() -> Path:
    """``store.sqlite3`` in the platform's user data directory."""
    # Found once per value of the variables it depends on: platformdirs takes some 15 µs, and
    # the store is looked up for every question.
    return _default_path(*map(_getenv, _DIRECTORY_VARIABLES))


@functools.lru_cache(maxsize=8)
def _default_path(*environment: str | None) -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("pizzagpt-magic", appauthor=False)) / "store.sqlite3"


def store_path(configured: str | None = None) -> Path | None:
    """Where the store is: ``$PIZZAGPT_STORE``, else ``configured`` (``PizzaMagics.store``),
    else the default; None when the one that applies is empty (the store is off)."""
    value = _getenv("PIZZAGPT_STORE")
    if value is None:
        value = configured
    if value is None:
        return default_path()
    return _path_of(value, _getenv("HOME") if "~" in value else None)


@functools.lru_cache(maxsize=16)
def _path_of(value: str, home: str | None) -> Path | None:
    value = value.strip()
    return Path(value).expanduser() if value else None


def logging_enabled() -> bool:
    """Whether ``$PIZZAGPT_LOG`` allows the log (unset, or anything but 0/false/no/off)."""
    value = _getenv("PIZZAGPT_LOG")  # read on every question: no KeyError when unset
    return value is None or value.strip().lower() not in ("0", "false", "no", "off")


def request_key(
    provider: str, model: str, parameters: dict[str, Any], messages: Iterable[dict[str, Any]]
) -> str:
    """The cache key of a request: a hash of everything that decides its answer (images by
    their own hash)."""
    from .images import loggable

    sent = [[m["role"], loggable(m["content"])] for m in messages]
    blob = _json_key([provider, model, sorted(parameters.items()), sent])
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


class Store:
    """One SQLite store: cache lookups here, writes on the writer thread."""

    def __init__(self, path: str | os.PathLike[str], *, cache_max_mb: float | None = None) -> None:
        self.path = Path(path)
        self.cache_max_bytes = int((cache_max_mb or DEFAULT_CACHE_MAX_MB) * 1024 * 1024)
        self.failed: str | None = None
        self.fts = False
        self._lock = threading.Lock()
        self._local = threading.local()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        #: Answers given to the writer and not yet committed: read from here meanwhile.
        self._pending: dict[str, tuple[str, str]] = {}
        self._writer: threading.Thread | None = None
        self._readers: list[sqlite3.Connection] = []
        self._writes = 0
        self._identity: tuple[int, int] | None = None
        #: The cache's newest rowid and its size in bytes then, when ``_trim`` last summed it.
        self._trim_mark: tuple[int, int] | None = None
        #: Whether the writer thread is in a transaction (``engine.send.jobs`` lets it have
        #: the GIL then).
        self.writing = False
        self._open()

    # -- connections ----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            connection.execute("PRAGMA synchronous = NORMAL")
        except BaseException:  # a file that is no database: nothing may stay open
            connection.close()
            raise
        return connection

    def _reader(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
            with self._lock:
                self._readers.append(connection)
        return connection

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = self._connect()
            try:
                self._identity = _identity(self.path)
                mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    logger.debug("the store is in %s mode, not WAL", mode)
                self._migrate(connection)
                connection.execute("PRAGMA quick_check").fetchone()
            finally:
                connection.close()
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)

    def _migrate(self, connection: sqlite3.Connection) -> None:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"the store's schema is version {version}, newer than this package's "
                f"{SCHEMA_VERSION}"
            )
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS.get(target, ()):
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {target}")
            for statement in INSERTED_SCHEMA:
                connection.execute(statement)
            have = {row[1] for row in connection.execute("PRAGMA table_info(log)")}
            for name, kind in LOG_COLUMNS.items():
                if name not in have:
                    connection.execute(f"ALTER TABLE log ADD COLUMN {name} {kind}")
            for statement in LOG_INDEXES:
                connection.execute(statement)
            try:
                for statement in FTS_SCHEMA:
                    connection.execute(statement)
                self.fts = True
            except sqlite3.OperationalError:  # an SQLite built without FTS5
                self.fts = False
            connection.execute("COMMIT")
        except BaseException:
            _rollback(connection)
            raise

    def _check_identity(self) -> None:
        """An ``OSError`` when the file at the path is no longer the one opened (deleted, or
        replaced): writes would go on into the old file, lost with it."""
        identity = _identity(self.path)
        if identity != self._identity:
            what = "deleted" if identity is None else "replaced"
            raise FileNotFoundError(f"the file was {what} while in use")

    def _fail(self, exc: BaseException) -> None:
        """Turn the store off, with one warning per process."""
        if self.failed is not None:
            return
        self.failed = f"{type(exc).__name__}: {exc}"
        _warn_once(
            f"The answer store at {self.path} cannot be used ({self.failed}); "
            "answers are kept in memory only"
        )

    @property
    def usable(self) -> bool:
        return self.failed is None

    # -- the writer thread ----------------------------------------------------------------

    def _submit(self, job: _Write | Callable[[sqlite3.Connection], Any]) -> None:
        if self.failed is not None:
            return
        if self._writer is None:  # checked again under the lock; a writer that ends unsets it
            with self._lock:
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_loop, name="pizzagpt-store", daemon=True
                    )
                    self._writer.start()
                    _stores_to_flush.add(self)
        self._queue.put(job)

    def _write_loop(self) -> None:
        try:
            self._write_all()
        finally:
            with self._lock:
                self._writer = None

    def _write_all(self) -> None:
        try:
            connection = self._connect()
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return
        held: Any = _NOTHING
        while True:
            job = self._queue.get() if held is _NOTHING else held
            held = _NOTHING
            if job is None:
                connection.close()
                return
            if isinstance(job, threading.Event):
                if self.failed is None:
                    try:
                        self._check_identity()
                    except OSError as exc:
                        self._fail(exc)
                job.set()
                continue
            if self.failed is not None:
                continue
            # The writes queued behind this one share its transaction (a batch's answers
            # arrive faster than one commit each could keep up with), in order.
            group = [job]
            gathered = time.monotonic() + LINGER
            while len(group) < WRITE_GROUP:
                try:
                    following = self._queue.get_nowait()
                except queue.Empty:
                    # A batch's answers keep coming: wait for more (fewer, larger
                    # transactions); a single answer is written at once.
                    wait = gathered - time.monotonic()
                    if len(group) < LINGER_FROM or wait <= 0:
                        break
                    try:
                        following = self._queue.get(timeout=wait)
                    except queue.Empty:
                        break
                if following is None or isinstance(following, threading.Event):
                    held = following
                    break
                group.append(following)
            try:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                self._check_identity()
                connection.execute("BEGIN IMMEDIATE")
                self.writing = True
                try:
                    _write_group(connection, group)
                    before = self._writes
                    self._writes += len(group)
                    if self._writes // TRIM_EVERY != before // TRIM_EVERY:
                        self._trim(connection)  # in the same transaction: one commit less
                    connection.execute("COMMIT")
                except BaseException:
                    _rollback(connection)
                    raise
                finally:
                    self.writing = False
                    for write in group:
                        key = write[2] if type(write) is tuple else None
                        if key is not None:
                            self._pending.pop(key, None)
            except (sqlite3.Error, OSError) as exc:
                self._fail(exc)
            except Exception:  # a bug in the writer must not stop it
                logger.exception("a write to the store failed")

    @property
    def backlog(self) -> int:
        """How many writes wait for the writer thread."""
        return self._queue.qsize()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every write submitted so far is on disk (or the store failed)."""
        writer = self._writer
        if writer is None or not writer.is_alive():
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self) -> None:
        self.flush()
        writer = self._writer
        if writer is not None and writer.is_alive():
            self._queue.put(None)
            writer.join(10)
        with self._lock:
            readers, self._readers = self._readers, []
        for connection in readers:  # every thread's: sqlite3 allows closing from any thread
            connection.close()
        self._local = threading.local()

    # -- the cache ------------------------------------------------------------------------

    def has(self, key: str) -> bool:
        """Whether ``key`` has a cached answer (without marking it used)."""
        if self.failed is not None:
            return False
        if key in self._pending:
            return True
        try:
            row = self._reader().execute("SELECT 1 FROM cache WHERE key = ?", (key,)).fetchone()
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return False
        return row is not None

    def present(self, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` have a cached answer: one query for many keys (a batch's plan),
        where ``has`` would make one each."""
        keys = list(keys)
        if self.failed is not None:
            return set()
        found = {k for k in keys if k in self._pending}
        try:
            connection = self._reader()
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                rows = connection.execute(f"SELECT key FROM cache WHERE key IN ({marks})", chunk)
                found.update(row[0] for row in rows)
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return set()
        return found

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached answer of ``key`` (``{"text", "meta"}``), or None."""
        if self.failed is not None:
            return None
        pending = self._pending.get(key)
        if pending is not None:
            return {"text": pending[0], "meta": json.loads(pending[1])}
        try:
            row = (
                self._reader()
                .execute("SELECT answer, meta FROM cache WHERE key = ?", (key,))
                .fetchone()
            )
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return None
        if row is None:
            return None
        self._submit((_MARK_USED, (time.time(), key), None))
        return {"text": row[0], "meta": json.loads(row[1])}

    def put(self, key: str, provider: str, model: str, text: str, meta: dict[str, Any]) -> None:
        """Keep the answer of ``key`` (written on the writer thread)."""
        if self.failed is not None:
            return
        now = time.time()
        blob = json.dumps(meta, default=str)  # read back by json.loads only: ASCII is faster
        size = len(text.encode("utf-8", "surrogatepass")) + len(blob) + len(key)
        self._pending[key] = (text, blob)
        self._submit(("cache", (key, provider, model, text, blob, size, now, now), key))

    def _trim(self, connection: sqlite3.Connection) -> None:
        """Drop the least recently used answers while the cache is over its limit.

        The cache's size is summed in full only when an upper bound of it is over the limit:
        the size last summed, plus the rows added since (a row written, or written again, takes
        a rowid above every other). A cache that lost its newest rows (cleared by another
        process) is summed again."""
        mark = self._trim_mark
        top, added = connection.execute(
            "SELECT (SELECT coalesce(max(rowid), 0) FROM cache), total(size) FROM cache "
            "WHERE rowid > ?",
            (mark[0] if mark is not None else 0,),
        ).fetchone()
        if mark is None:
            total = int(added)  # every row: rowids start at 1
        elif top >= mark[0] and mark[1] + added <= self.cache_max_bytes:
            self._trim_mark = (top, mark[1] + int(added))
            return
        else:
            total = connection.execute("SELECT coalesce(sum(size), 0) FROM cache").fetchone()[0]
        self._trim_mark = (top, total)
        if total <= self.cache_max_bytes:
            return
        excess = total - int(self.cache_max_bytes * 0.9)
        dropped = 0
        for key, size in connection.execute("SELECT key, size FROM cache ORDER BY used").fetchall():
            connection.execute("DELETE FROM cache WHERE key = ?", (key,))
            dropped += size
            if dropped >= excess:
                break
        self._trim_mark = (top, total - dropped)

    # -- inserted cells ---------------------------------------------------------------------

    def was_inserted(self, notebook: str, cell: str, code: str) -> bool:
        """Whether ``code`` (its hash) was opened as a new cell below ``cell`` of
        ``notebook`` before."""
        if self.failed is not None:
            return False
        try:
            row = (
                self._reader()
                .execute(
                    "SELECT 1 FROM inserted WHERE notebook = ? AND cell = ? AND code = ?",
                    (notebook, cell, code),
                )
                .fetchone()
            )
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return False
        return row is not None

    def mark_inserted(self, notebook: str, cell: str, code: str) -> None:
        """Remember that ``code`` (its hash) was opened below ``cell`` of ``notebook``."""
        self._submit(
            (
                "INSERT OR REPLACE INTO inserted (notebook, cell, code, time) VALUES (?, ?, ?, ?)",
                (notebook, cell, code, time.time()),
                None,
            )
        )

    def clear_cache(self) -> int:
        """Forget every cached answer; returns how many there were."""
        self.flush()
        connection = self._reader()
        count = connection.execute("SELECT count(*) FROM cache").fetchone()[0]
        connection.execute("DELETE FROM cache")
        connection.execute("VACUUM")
        return int(count)

    def info(self) -> dict[str, Any]:
        """What the store holds: cache entries and bytes, log entries, file size, path."""
        self.flush()
        connection = self._reader()
        entries, size = connection.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM cache"
        ).fetchone()
        logged = connection.execute("SELECT count(*) FROM log").fetchone()[0]
        on_disk = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        return {
            "path": str(self.path),
            "cache_entries": int(entries),
            "cache_bytes": int(size),
            "cache_limit_bytes": self.cache_max_bytes,
            "log_entries": int(logged),
            "file_bytes": on_disk,
            "full_text_search": self.fts,
        }

    # -- the log --------------------------------------------------------------------------

    def log(self, record: dict[str, Any]) -> None:
        """Append one exchange to the log (written on the writer thread)."""
        usage = record.get("usage") or {}
        calls = record.get("tool_calls")
        cost = record.get("cost")
        when = record.get("time")
        values = (
            time.time() if when is None else when,  # never NULL: see _Insert
            record["provider"],
            record["model"],
            _json_sorted(parameters) if (parameters := record.get("parameters")) else "{}",
            record.get("system"),
            _json(record.get("messages") or []),
            record.get("prompt", ""),
            record.get("answer"),
            record.get("error"),
            record.get("seconds"),
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            usage.get("total_tokens"),
            usage.get("cache_read_input_tokens"),
            usage.get("cache_creation_input_tokens"),
            int(bool(record.get("cached"))),
            record.get("source", "api"),
            record.get("session"),
            record.get("cell"),
            None if calls is None else _json(calls),
            1 if record.get("batch") else None,
            cost.usd if cost is not None else None,
            cost.saved if cost is not None else None,
            cost.pricing if cost is not None else None,
            record.get("input_chars"),
        )
        self._submit(("log", values, None))

    def records(
        self,
        n: int | None = 20,
        *,
        query: str | None = None,
        model: str | None = None,
        since: float | None = None,
    ) -> list[dict[str, Any]]:
        """The newest ``n`` exchanges (all with None), newest first, that match ``query``
        (full-text where SQLite has FTS5, else a substring), ``model`` (a model id or a
        provider) and ``since`` (a Unix time)."""
        check_count(n, "n")
        self.flush()
        where: list[str] = []
        params: list[Any] = []
        if query:
            if self.fts:
                where.append("log.id IN (SELECT rowid FROM log_fts WHERE log_fts MATCH ?)")
                params.append(_fts_query(query))
            else:
                where.append("(log.prompt LIKE ? OR log.answer LIKE ?)")
                params += [f"%{query}%"] * 2
        if model:
            provider, _, name = model.partition(":")
            if name:
                where.append("log.provider = ? AND log.model = ?")
                params += [provider, name]
            else:
                where.append("(log.model = ? OR log.provider = ?)")
                params += [model, model]
        if since is not None:
            where.append("log.time >= ?")
            params.append(since)
        sql = "SELECT * FROM log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY log.id DESC"
        if n is not None:
            sql += f" LIMIT {int(n)}"
        connection = self._reader()
        cursor = connection.execute(sql, params)
        names = [d[0] for d in cursor.description]
        out = []
        for row in cursor.fetchall():
            record = dict(zip(names, row))
            record["parameters"] = json.loads(record["parameters"])
            record["messages"] = json.loads(record["messages"])
            record["cached"] = bool(record["cached"])
            if record.get("tool_calls") is not None:
                record["tool_calls"] = json.loads(record["tool_calls"])
            out.append(record)
        return out

    # -- batch jobs -----------------------------------------------------------------------

    _JOB_FIELDS = frozenset(
        {"status", "completed", "failed", "finished", "collected", "error", "input_file"}
    )

    def add_job(self, job: dict[str, Any], keys: Iterable[str]) -> bool:
        """Keep a submitted job (``id``, ``api``, ``provider``, ``origin``, ``model``,
        ``status``, ``requests``, ``created``; never a key) and the cache keys of its rows;
        on disk when this returns True."""
        row = (
            job["id"],
            job["api"],
            job["provider"],
            job["origin"],
            job["model"],
            job.get("input_file"),
            job["status"],
            int(job["requests"]),
            float(job.get("created") or time.time()),
        )
        rows = [(job["id"], key) for key in keys]

        def write(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT OR REPLACE INTO jobs (id, api, provider, origin, model, input_file, "
                "status, requests, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            _INSERTS["job_rows"].run(connection, rows)

        self._submit(write)
        return self.failed is None and self.flush() and self.failed is None

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Change a job's ``status``, counts, ``finished``, ``collected`` or ``error``."""
        unknown = fields.keys() - self._JOB_FIELDS
        if unknown:
            raise ValueError(f"unknown job fields: {', '.join(sorted(unknown))}")
        if not fields:
            return
        names = sorted(fields)
        sql = f"UPDATE jobs SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ?"
        values = [fields[n] for n in names] + [job_id]
        self._submit(lambda c: c.execute(sql, values))

    def jobs(
        self, n: int | None = None, *, live: bool = False, origin: str | None = None
    ) -> list[dict[str, Any]]:
        """The jobs kept, newest first; ``live``: those whose results are not read yet;
        ``origin``: of that endpoint only."""
        if self.failed is not None:
            return []
        self.flush()
        where, params = [], []
        if live:
            where.append("collected = 0")
        if origin is not None:
            where.append("origin = ?")
            params.append(origin)
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, rowid DESC"
        if n is not None:
            sql += f" LIMIT {int(n)}"
        try:
            cursor = self._reader().execute(sql, params)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return []

    def job(self, job_id: str) -> dict[str, Any] | None:
        """One job's record, or None."""
        found = [j for j in self.jobs() if j["id"] == job_id]
        return found[0] if found else None

    def job_keys(self, job_id: str) -> list[str]:
        """The cache keys of a job's rows."""
        if self.failed is not None:
            return []
        try:
            rows = self._reader().execute("SELECT key FROM job_rows WHERE job = ?", (job_id,))
            return [r[0] for r in rows.fetchall()]
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return []

    def prune(self, older_than_days: float) -> int:
        """Delete the log's exchanges older than that many days; returns how many."""
        check_count(older_than_days, "the age in days")
        self.flush()
        cutoff = time.time() - older_than_days * 86400
        connection = self._reader()
        cursor = connection.execute("DELETE FROM log WHERE time < ?", (cutoff,))
        return int(cursor.rowcount)

    # -- usage and cost -------------------------------------------------------------------

    def usage(
        self,
        *,
        since: float | None = None,
        by: Iterable[str] = ("model",),
        session: str | None = None,
    ) -> list[dict[str, Any]]:
        """The log's totals since ``since`` (a Unix time), one row per group of ``by``
        (``model``, ``day``, ``source``), of ``session`` only when given.

        Each group is split by how it was asked: ``via`` is ``"batch"`` for the requests a
        provider's Batch API answered (or failed), at the batch price, and ``"online"`` for
        the others (cache hits are always online: nothing was asked).

        ``requests`` were sent (``failures`` among them); ``cache_hits`` were answered from the
        cache and cost 0; tokens are those of the requests sent; ``cost`` adds the known costs,
        ``unpriced`` counts the answers whose cost is unknown, ``local`` and ``free`` those of
        models that cost nothing; ``cost_saved`` is what the cache hits would have cost."""
        self.flush()
        by = list(by)
        keys: list[str] = []
        for name in by:
            keys += _USAGE_GROUPS[name]
        names = [k.split(" AS ")[-1] for k in keys]
        where: list[str] = ["1"]
        params: list[Any] = []
        if since is not None:
            where.append("time >= ?")
            params.append(since)
        if session is not None:
            where.append("session = ?")
            params.append(session)
        # Grouped by the columns the counts depend on too, in the order of the covering index
        # log_usage, and with plain sums only: SQLite then reads the index alone, sorts nothing
        # (by model), and does the least work a row; the groups are merged here.
        source = "log INDEXED BY log_usage" if by == ["model"] else "log"
        sql = (
            f"SELECT {''.join(k + ', ' for k in keys)}cached, batch, pricing, error, count(*), "
            "total(prompt_tokens), total(completion_tokens), total(cache_read_input_tokens), "
            "total(cost), "
            f"total(cost_saved), count(cost) FROM {source} WHERE {' AND '.join(where)} "
            f"GROUP BY {''.join(n + ', ' for n in names)}cached, batch, pricing, error"
        )
        try:
            rows = self._reader().execute(sql, params)
        except sqlite3.OperationalError:  # a store made without the index: the same, slower
            rows = self._reader().execute(sql.replace(" INDEXED BY log_usage", ""), params)
        totals: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in rows:
            (
                cached,
                batch,
                pricing,
                error,
                count,
                inputs,
                outputs,
                in_cache,
                cost,
                saved,
                priced,
            ) = row[len(names) :]
            via = "batch" if batch and not cached else "online"
            group = (*row[: len(names)], via)
            record = totals.get(group)
            if record is None:
                record = totals[group] = dict(zip(names, group))
                record["via"] = via
                record.update(dict.fromkeys(_USAGE_COUNTS, 0))
                record.update(cost=0.0, cost_saved=0.0)
            record["exchanges"] += count
            record["cost"] += cost
            record["cost_saved"] += saved
            if pricing == "local" or pricing == "free":
                record[pricing] += count
            if cached:
                record["cache_hits"] += count
                continue
            record["requests"] += count
            record["input_tokens"] += int(inputs)
            record["output_tokens"] += int(outputs)
            record["cache_read_input_tokens"] += int(in_cache)
            if error is not None:
                record["failures"] += count
            else:
                record["unpriced"] += count - priced
        # Online before batch within a group.
        order = sorted(totals, key=lambda g: (*_sort_key(g[:-1]), g[-1] != "online"))
        return [totals[group] for group in order]

    def token_stats(
        self, provider: str, model: str, *, last: int = 200
    ) -> tuple[float | None, float | None]:
        """``(characters a token, average answer tokens)`` of the newest ``last`` answers of
        ``provider:model`` in the log that were sent and counted (None where there are none)."""
        self.flush()
        row = (
            self._reader()
            .execute(
                "SELECT total(input_chars), total(prompt_tokens), avg(completion_tokens) FROM "
                "(SELECT input_chars, prompt_tokens, completion_tokens FROM log "
                "WHERE provider = ? AND model = ? AND cached = 0 AND error IS NULL "
                "AND prompt_tokens > 0 AND input_chars > 0 ORDER BY id DESC LIMIT ?)",
                (provider, model, int(last)),
            )
            .fetchone()
        )
        chars, tokens, answer = row
        ratio = chars / tokens if tokens else None
        return ratio, (float(answer) if answer is not None else None)


def _write_group(connection: sqlite3.Connection, group: list[Any]) -> None:
    """Run a transaction's writes in order: each run of ``_Write``s of one statement together
    (one of ``_INSERTS`` as few statements as it can, another as one ``executemany``), other
    writes (callables) one by one. The log's rows, which only ever append, go last and all
    together (a batch's writes alternate between the cache and the log, which would make runs
    of one)."""
    run: list[Sequence[Any]] = []
    sql = ""
    logged: list[Sequence[Any]] = []

    def flush() -> None:
        if not run:
            return
        insert = _INSERTS.get(sql)
        if insert is not None:
            insert.run(connection, run)
        else:
            connection.executemany(sql, run)
        run.clear()

    for write in group:
        if type(write) is tuple:
            statement, values, _ = write
            if statement == "log":
                logged.append(values)
                continue
            if run and statement != sql:
                flush()
            sql = statement
            run.append(values)
            continue
        flush()
        try:
            write(connection)
        except (sqlite3.Error, OSError):
            raise
        except Exception:  # a bug in one write must not stop the others
            logger.exception("a write to the store failed")
    flush()
    if logged:
        _INSERTS["log"].run(connection, logged)


def _rows_per_statement(connection: sqlite3.Connection, width: int) -> int:
    """The most rows of ``width`` values a statement takes: as many as SQLite's limit of
    variables allows (999 before SQLite 3.32), at most 512."""
    getlimit = getattr(connection, "getlimit", None)  # Python 3.11
    limit = getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if getlimit is not None else 999
    return max(1, min(512, limit // width))


def _rollback(connection: sqlite3.Connection) -> None:
    """End a failed transaction, keeping the error that failed it: SQLite has often rolled
    back already (a full disk), and a second error would hide the first."""
    if connection.in_transaction:
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            logger.debug("the rollback after a failed write failed too", exc_info=True)


def _identity(path: Path) -> tuple[int, int] | None:
    """The file's device and inode, or None when there is no file."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def check_count(value: float | None, what: str) -> None:
    """A ``ValueError`` for a negative or non-finite count or age (``-1`` would mean "all")."""
    import math

    if value is not None and (not math.isfinite(value) or value < 0):
        raise ValueError(f"{what} must be a number of at least 0, not {value}")


def _fts_query(text: str) -> str:
    """Words of ``text`` as an FTS5 query that matches them all, each quoted."""
    words = [w.replace('"', '""') for w in text.split()]
    return " ".join(f'"{w}"' for w in words) or '""'


_warned = False
_warn_lock = threading.Lock()


def _warn_once(message: str) -> None:
    global _warned
    with _warn_lock:
        if _warned:
            logger.debug("%s", message)
            return
        _warned = True
    warnings.warn(message, StoreWarning, stacklevel=3)


_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()
_stores_to_flush: set[Store] = set()


def get_store(configured: str | None = None, *, cache_max_mb: float | None = None) -> Store | None:
    """The store in effect (see ``store_path``), opened once per path; None when it is off
    or has failed."""
    path = store_path(configured)
    if path is None:
        return None
    key = str(path)
    store = _stores.get(key)
    if store is None:
        with _stores_lock:
            store = _stores.get(key)
            if store is None:
                store = _stores[key] = Store(path, cache_max_mb=cache_max_mb)
    if cache_max_mb is not None:
        store.cache_max_bytes = int(cache_max_mb * 1024 * 1024)
    return store if store.usable else None


def forget_stores() -> None:
    """Close every open store (tests, and a change of location)."""
    with _stores_lock:
        for store in _stores.values():
            store.close()
        _stores.clear()


@atexit.register
def _flush_at_exit() -> None:
    for store in list(_stores_to_flush):
        try:
            store.flush(timeout=10)
        except Exception:  # noqa: BLE001 - at exit, one store must not stop the others
            pass


def parse_since(value: str) -> float:
    """A Unix time from ``WHEN``: an ISO date or time, or an age such as ``30m``, ``12h``,
    ``7d``."""
    import datetime as dt
    import re

    text = value.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text)
    if match:
        seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match[2]]
        return time.time() - float(match[1]) * seconds
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since takes a date (2026-11-28), a time (2026-11-28T09:30) or an age "
            f"(30m, 12h, 7d), not {value!r}"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()
    return when.timestamp()


def logs(
    n: int | None = 20,
    *,
    query: str | None = None,
    model: str | None = None,
    since: str | float | None = None,
    path: str | None = None,
) -> Any:
    """The newest logged exchanges (a pandas DataFrame when pandas is installed, else a list
    of dicts), newest first. ``query`` searches prompts and answers, ``model`` is a model id or
    a provider, ``since`` a Unix time, a date or an age (``"7d"``). A store that does not
    exist yet is not made: nothing has been logged there."""
    where = Path(path) if path else store_path()
    if where is None or not where.exists():
        return []
    own = Store(where) if path else None
    store = own or get_store()
    if store is None:
        return []
    if isinstance(since, str):
        since = parse_since(since)
    try:
        records = store.records(n, query=query, model=model, since=since)
    finally:
        if own is not None:
            own.close()
    try:
        import pandas as pd
    except ImportError:
        return records
    frame = pd.DataFrame.from_records(records)
    if not frame.empty:
        frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True)
    return frame


# -- other processes' stores: shards of a distributed job -------------------------------------


class ReadOnlyStore:
    """Another store read without writing to it (a worker's shard, the notebook's store seen
    from a cluster): cache lookups only, never a migration, a lock held or a write."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self.failed: str | None = None

    def _reader(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            uri = f"{self.path.absolute().as_uri()}?mode=ro"
            connection = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT)
            self._local.connection = connection
        return connection

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached answer of ``key`` (``{"text", "meta"}``), or None."""
        if self.failed is not None:
            return None
        try:
            row = (
                self._reader()
                .execute("SELECT answer, meta FROM cache WHERE key = ?", (key,))
                .fetchone()
            )
        except (sqlite3.Error, OSError) as exc:
            self.failed = f"{type(exc).__name__}: {exc}"  # not there yet, or not a store
            self._local = threading.local()
            return None
        return None if row is None else {"text": row[0], "meta": json.loads(row[1])}

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        self._local = threading.local()


def merge_stores(target: str | os.PathLike[str], sources: Iterable[str | os.PathLike[str]]) -> int:
    """Copy the cached answers and the log of each store in ``sources`` (the shards of a
    distributed job) into the store at ``target``; how many cached answers were added.

    Idempotent: an answer already in ``target`` is kept as it is, and a log record already
    there (same time, provider, model and prompt) is not copied again. Safe while nothing
    writes to the sources."""
    store = Store(target)  # made (and migrated) if it does not exist yet
    if store.failed is not None:
        raise OSError(f"the store at {target} cannot be used ({store.failed})")
    store.close()
    added = 0
    connection = sqlite3.connect(
        Path(target).absolute().as_uri(), uri=True, timeout=BUSY_TIMEOUT, isolation_level=None
    )
    try:
        for source in sources:
            shard = f"{Path(source).absolute().as_uri()}?mode=ro"
            connection.execute("ATTACH DATABASE ? AS shard", (shard,))
            try:
                connection.execute("BEGIN IMMEDIATE")
                before = connection.total_changes
                columns = _shared_columns(connection, "cache")
                connection.execute(
                    f"INSERT OR IGNORE INTO main.cache ({columns}) "
                    f"SELECT {columns} FROM shard.cache"
                )
                added += connection.total_changes - before
                columns = _shared_columns(connection, "log", skip=frozenset({"id"}))
                connection.execute(
                    f"INSERT INTO main.log ({columns}) SELECT {columns} FROM shard.log AS s "
                    "WHERE NOT EXISTS (SELECT 1 FROM main.log AS m WHERE m.time = s.time AND "
                    "m.provider = s.provider AND m.model = s.model AND m.prompt = s.prompt)"
                )
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            finally:
                connection.execute("DETACH DATABASE shard")
    finally:
        connection.close()
    return added


def _shared_columns(
    connection: sqlite3.Connection, table: str, skip: frozenset[str] = frozenset()
) -> str:
    """The columns ``table`` has both in the store and in the attached shard, as SQL."""
    mine = [row[1] for row in connection.execute(f"PRAGMA main.table_info({table})")]
    theirs = {row[1] for row in connection.execute(f"PRAGMA shard.table_info({table})")}
    return ", ".join(f'"{c}"' for c in mine if c in theirs and c not in skip)
