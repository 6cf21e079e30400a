"""The default fingerprint store: an embedded SQLite file on the runner's disk.

- One run at a time: the store holds an exclusive OS lock on `<path>.lock` while it is open; the
  lock file names the holder (host, pid, start) for the next run's message.
- A file that is not a usable store (corrupt, or a valid SQLite database with another schema) is
  moved aside with a warning and a fresh store started (every profile is then resent once).
- Rows are written in one transaction per job (WAL; a power cut may only lose the last
  confirmations, which means those profiles are sent again).
- A database that fails once open (its disk or share gone) is one `FingerprintStoreError` line
  naming the file and the setting, as the SQL store's are.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, final

from target_userpilot.fingerprints.common import (
    FingerprintStore,
    FingerprintStoreBusyError,
    FingerprintStoreError,
    RunHolder,
    StoreOptions,
    busy_message,
    poll_until,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not serialised
    fcntl = None  # type: ignore[assignment]

_LOGGER = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_IN_CHUNK = 500  # ids per `IN (...)` query; well under SQLite's bound-parameter limit
# SQLite primary result codes that mean "this file is not a usable database".
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_COLUMNS = ("scope", "kind", "id", "digest", "confirmed_at")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fingerprints (
    scope TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    digest BLOB NOT NULL,
    confirmed_at REAL NOT NULL,
    PRIMARY KEY (scope, kind, id)
) WITHOUT ROWID
"""
_UPSERT = (
    "INSERT INTO fingerprints (scope, kind, id, digest, confirmed_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (scope, kind, id) DO UPDATE "
    "SET digest = excluded.digest, confirmed_at = excluded.confirmed_at"
)


class _UnusableStoreError(Exception):
    """The file is not a usable fingerprint store; the message says why."""

    def __init__(self, reason: str, *, foreign: bool = False) -> None:
        super().__init__(reason)
        self.foreign = foreign


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in {_SQLITE_CORRUPT, _SQLITE_NOTADB}
    message = str(exc).lower()
    return "not a database" in message or "malformed" in message


def _problem(conn: sqlite3.Connection) -> _UnusableStoreError | None:
    """Why this connection's file is not a usable store, or None."""
    check = conn.execute("PRAGMA quick_check").fetchone()
    if check is None or check[0] != "ok":
        return _UnusableStoreError(f"integrity check failed: {check[0] if check else 'no result'}")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version not in {0, SCHEMA_VERSION}:
        return _UnusableStoreError(f"unknown schema version {version}", foreign=True)
    tables = sorted(
        name
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not name.startswith("sqlite_")
    )
    if tables and tables != ["fingerprints"]:
        return _UnusableStoreError(
            f"it is an SQLite database with other tables ({', '.join(tables)})", foreign=True
        )
    if tables:
        columns = tuple(row[1] for row in conn.execute("PRAGMA table_info(fingerprints)"))
        if columns != _COLUMNS:
            return _UnusableStoreError(
                f"its table `fingerprints` has other columns ({', '.join(columns)})", foreign=True
            )
    return None


def _prepare(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode = WAL")
    # WAL + NORMAL cannot corrupt; a power cut may lose the last confirmations, which only means
    # those profiles are sent again.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(_SCHEMA)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _try_flock(fd: int) -> bool:
    """Take the exclusive lock without waiting; False when another open file holds it."""
    assert fcntl is not None  # noqa: S101 - the caller checked
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@final
class SqliteFingerprintStore(FingerprintStore):
    """Fingerprints in an SQLite file; the file is locked for the run."""

    def __init__(self, path: Path, scope: str, options: StoreOptions | None = None) -> None:
        """Open (or create) the store at `path` and take its lock.

        Raises:
            FingerprintStoreBusyError: another run holds the store for more than `lock_timeout`
                seconds.
        """
        options = options or StoreOptions()
        super().__init__(scope, options, _LOGGER)
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = self._acquire_os_lock(options.lock_timeout)
        try:
            self._conn = self._open()
        except BaseException:
            self._release_os_lock()
            raise
        self._logger.info("Fingerprints are kept in the SQLite file %s.", self.path)

    @property
    def where(self) -> str:
        """The file."""
        return str(self.path)

    # --- backend ----------------------------------------------------------------------

    def _count(self, kind: str, since: float | None) -> int:
        query, params = self._select("COUNT(*)", kind, since)
        with self._errors("reading fingerprints"):
            return int(self._conn.execute(query, params).fetchone()[0])

    def _digests(self, kind: str, since: float | None) -> Iterator[bytes]:
        with self._errors("reading fingerprints"):
            yield from map(itemgetter(0), self._conn.execute(*self._select("digest", kind, since)))

    def _select(self, what: str, kind: str, since: float | None) -> tuple[str, tuple[object, ...]]:
        query = f"SELECT {what} FROM fingerprints WHERE scope = ? AND kind = ?"  # noqa: S608 - `what` is ours
        params: tuple[object, ...] = (self.scope, kind)
        if since is not None:
            query += " AND confirmed_at > ?"
            params = (*params, since)
        return query, params

    def _write(
        self, kind: str, latest: dict[str, bytes], confirmed_at: float, *, previous: bool
    ) -> dict[str, bytes]:
        rows = [(self.scope, kind, pid, digest, confirmed_at) for pid, digest in latest.items()]
        with self._transaction() as conn:
            replaced = self._stored_digests(kind, list(latest)) if previous else {}
            conn.executemany(_UPSERT, rows)
        return replaced

    def _remove(self, kind: str, ids: list[str]) -> dict[str, bytes]:
        with self._transaction() as conn:
            removed = self._stored_digests(kind, ids)
            for query, params in self._per_chunk("DELETE FROM fingerprints", kind, ids):
                conn.execute(query, params)
        return removed

    def _delete_scope(self) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM fingerprints WHERE scope = ?", (self.scope,))

    def _close(self) -> None:
        try:
            self._conn.close()
        finally:
            self._release_os_lock()

    # --- internals --------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed at the end, rolled back on any error."""
        conn = self._conn
        with self._errors("writing fingerprints"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                    # A database gone fails the rollback too: the first error is the one to say.
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """An SQLite error once the store is open: one line naming the file and the setting."""
        try:
            yield
        except sqlite3.Error as exc:
            self._fail(doing, exc)

    def _fail(self, doing: str, exc: sqlite3.Error) -> NoReturn:
        msg = (
            f"The fingerprint store (SQLite file {self.path}) failed while {doing} ({exc}). "
            "Check `fingerprint_store_path` and that its disk is reachable and writable."
        )
        raise FingerprintStoreError(msg) from None

    def _stored_digests(self, kind: str, ids: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for query, params in self._per_chunk("SELECT id, digest FROM fingerprints", kind, ids):
            found.update(self._conn.execute(query, params))
        return found

    def _per_chunk(
        self, head: str, kind: str, ids: list[str]
    ) -> Iterator[tuple[str, tuple[object, ...]]]:
        """`head` restricted to these ids of this scope and kind: a query per chunk of ids."""
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            where = f"WHERE scope = ? AND kind = ? AND id IN ({marks})"
            yield f"{head} {where}", (self.scope, kind, *chunk)

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except _UnusableStoreError as exc:
            aside = self._move_aside("not-ours" if exc.foreign else "corrupt")
            what = "not a target-userpilot fingerprint store" if exc.foreign else "unreadable"
            self._logger.warning(
                "The fingerprint store %s is %s (%s); it was moved aside to %s and a new one "
                "started. Every profile will be sent again (a full resend) on this run.",
                self.path,
                what,
                exc,
                aside,
            )
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            # Profile ids are nobody else's business: create the file private to the user.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        # Autocommit mode: transactions are explicit. The job thread confirms, hence
        # check_same_thread=False; the store's lock serialises every use.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            problem = _problem(conn)
            if problem is None:
                _prepare(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if _is_corruption(exc):
                raise _UnusableStoreError(str(exc)) from exc
            raise
        except BaseException:
            conn.close()
            raise
        if problem is not None:
            conn.close()
            raise problem
        return conn

    def _move_aside(self, why: str) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._now()))
        aside = self.path.with_name(f"{self.path.name}.{why}-{stamp}")
        counter = 1
        while aside.exists():
            counter += 1
            aside = self.path.with_name(f"{self.path.name}.{why}-{stamp}-{counter}")
        self.path.replace(aside)
        # Keep the journal files with the file they belong to; a stale WAL must not meet a new DB.
        for suffix in ("-wal", "-shm", "-journal"):
            companion = self.path.with_name(self.path.name + suffix)
            if companion.exists():
                companion.replace(aside.with_name(aside.name + suffix))
        return aside

    def _acquire_os_lock(self, timeout: float) -> int:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        if fcntl is None:  # pragma: no cover - not POSIX
            return fd
        try:
            acquired = poll_until(lambda: _try_flock(fd), timeout)
            holder = None if acquired else os.pread(fd, 4096, 0).decode("utf-8", "replace")
        except BaseException:
            os.close(fd)
            raise
        if holder is not None:
            os.close(fd)
            msg = busy_message(
                str(self.path), RunHolder.loads(holder), timeout, "fingerprint_store_path"
            )
            raise FingerprintStoreBusyError(msg)
        # Who holds it, for the next run's error message.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, RunHolder.this_run().dumps().encode("utf-8"), 0)
        return fd

    def _release_os_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock
