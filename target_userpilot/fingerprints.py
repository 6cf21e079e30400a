"""Send only what changed: fingerprints of the profile lines a completed Userpilot job confirmed.

An embedded SQLite database holds one row per (scope, kind, id): the digest of the NDJSON line
last confirmed for that profile and when. A nightly full-table sync then skips every profile whose
line has the same digest as the last confirmed one, and Userpilot (~1,200 rows a minute) only
receives what changed.

- The scope is the API host plus a hash of the API key, so another account or another Userpilot
  host never shares fingerprints. The key itself is never stored or logged.
- Rows are written only by `confirm`, once per completed job, in one transaction: nothing is
  remembered for a job Userpilot did not complete.
- Lookups are in memory: on the first lookup of a kind, that kind's rows are loaded into a set of
  128-bit keys (keyed blake2b of id and digest): ~80 MB and ~3 s for a million ids. A lookup is
  then one hash and one set probe (~1.5-4 us; a per-record SQL point query measured 8-22 us, and
  a dict of id -> (digest, confirmed_at) ~245 MB for a million ids).
- One run at a time: the store holds an exclusive OS lock on `<path>.lock` while it is open.
- A corrupt file is moved aside and a fresh store started (every profile is then resent once).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from hashlib import blake2b, sha256
from pathlib import Path
from typing import TYPE_CHECKING, final
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from types import TracebackType

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not serialised
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FingerprintStore",
    "FingerprintStoreBusyError",
    "default_store_path",
    "fingerprint",
    "scope_for",
]

_LOGGER = logging.getLogger(__name__)

APP_DIR = "target-userpilot"
DB_NAME = "fingerprints.sqlite"
SCHEMA_VERSION = 1
DIGEST_SIZE = 16
SECONDS_PER_DAY = 86_400.0
_LOCK_POLL_SECONDS = 0.05
_IN_CHUNK = 500  # ids per `IN (...)` query; well under SQLite's bound-parameter limit
# SQLite primary result codes that mean "this file is not a usable database".
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

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


class FingerprintStoreBusyError(Exception):
    """Another target-userpilot run holds the fingerprint store."""


class _CorruptStoreError(Exception):
    """The file is not a usable fingerprint store."""


def fingerprint(line: bytes) -> bytes:
    """A stable 16-byte digest of a profile's NDJSON line (blake2b)."""
    return blake2b(line, digest_size=DIGEST_SIZE).digest()


def scope_for(api_url: str, api_key: str) -> str:
    """`host[:port]:<sha256(api_key)[:16]>`: fingerprints are per Userpilot host and account.

    The host is lower-cased; the scheme, path, credentials and a default port are ignored.
    """
    parts = urlsplit(api_url.strip() if "//" in api_url else f"//{api_url.strip()}")
    host = (parts.hostname or "").rstrip(".")
    default_port = {"https": 443, "http": 80}.get(parts.scheme.lower())
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None and port != default_port:
        host = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    key_hash = sha256(api_key.encode("utf-8")).hexdigest()[:16]
    return f"{host}:{key_hash}"


def default_store_path() -> Path:
    """Where the store lives unless `fingerprint_store_path` says otherwise.

    `$MELTANO_PROJECT_ROOT/.meltano/target-userpilot/fingerprints.sqlite` under Meltano, else the
    per-user data directory: `$XDG_DATA_HOME` (when absolute) or `~/.local/share`.
    """
    project_root = os.environ.get("MELTANO_PROJECT_ROOT")
    if project_root:
        return Path(project_root) / ".meltano" / APP_DIR / DB_NAME
    xdg = os.environ.get("XDG_DATA_HOME")
    # The XDG spec: a relative path is invalid and must be ignored.
    data_home = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return data_home / APP_DIR / DB_NAME


def _key(profile_id: str, digest: bytes) -> int:
    """The in-memory key of a (id, digest) pair; keyed blake2b keeps the pair unambiguous."""
    data = profile_id.encode("utf-8", "surrogatepass")
    return int.from_bytes(blake2b(data, digest_size=16, key=digest).digest(), "big")


def _storable(profile_id: str) -> bool:
    """SQLite stores UTF-8: an id with a lone surrogate is not remembered (it is just resent)."""
    if profile_id.isascii():
        return True
    try:
        profile_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in {_SQLITE_CORRUPT, _SQLITE_NOTADB}
    message = str(exc).lower()
    return "not a database" in message or "malformed" in message


def _integrity_problem(conn: sqlite3.Connection) -> str | None:
    """Why this connection's file is not a usable store, or None."""
    check = conn.execute("PRAGMA quick_check").fetchone()
    if check is None or check[0] != "ok":
        return f"integrity check failed: {check[0] if check else 'no result'}"
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version not in {0, SCHEMA_VERSION}:
        return f"unknown schema version {version}"
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


def _flock_within(fd: int, timeout: float) -> bool:
    """Take the exclusive lock, waiting up to `timeout` seconds; False if it stayed taken."""
    deadline = time.monotonic() + max(timeout, 0.0)
    while not _try_flock(fd):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(_LOCK_POLL_SECONDS, remaining))
    return True


@final
class FingerprintStore:
    """Digests of the profile lines Userpilot confirmed, per scope; one run at a time.

    Thread safe: the main thread looks up, the job thread confirms.
    """

    def __init__(  # noqa: PLR0913 - the job runner's documented signature
        self,
        path: Path,
        scope: str,
        *,
        max_age_days: float | None = None,
        lock_timeout: float = 0.0,
        logger: logging.Logger | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        """Open (or create) the store at `path` and take its lock.

        Raises:
            FingerprintStoreBusyError: another run holds the store for more than `lock_timeout`
                seconds.
        """
        self.path = Path(path).expanduser()
        self.scope = scope
        self.max_age_days = max_age_days
        self._logger = logger or _LOGGER
        self._now = now
        self._lock = threading.Lock()
        # kind -> keys of the (id, digest) pairs that count as unchanged; loaded on first use.
        self._known: dict[str, set[int]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = self._acquire_os_lock(lock_timeout)
        try:
            self._conn = self._open()
        except BaseException:
            self._release_os_lock()
            raise

    # --- public API -------------------------------------------------------------------

    def is_unchanged(self, kind: str, profile_id: str, digest: bytes) -> bool:
        """True when `digest` is the last confirmed digest of this profile, and fresh enough.

        With `max_age_days`, a fingerprint confirmed longer ago than that counts as changed; the
        age is judged when the kind is first looked up in this store (once per run).
        """
        key = _key(profile_id, digest)
        with self._lock:
            known = self._known.get(kind)
            if known is None:
                known = self._load(kind)
            return key in known

    def confirm(self, kind: str, entries: Iterable[tuple[str, bytes]]) -> int:
        """Remember the (id, digest) pairs of one completed job, all or nothing.

        A repeated id keeps its last digest. Returns the number of profiles written.
        """
        # Read the entries before touching the database: if the iterable fails, nothing is written.
        latest = {pid: digest for pid, digest in entries if _storable(pid)}
        if not latest:
            return 0
        confirmed_at = self._now()
        rows = [(self.scope, kind, pid, digest, confirmed_at) for pid, digest in latest.items()]
        with self._lock:
            known = self._known.get(kind)
            with self._transaction() as conn:
                previous = self._stored_digests(kind, list(latest)) if known is not None else {}
                conn.executemany(_UPSERT, rows)
            if known is not None:
                # The set follows the database only once the transaction committed.
                for pid, old in previous.items():
                    known.discard(_key(pid, old))
                known.update(_key(pid, digest) for pid, digest in latest.items())
        return len(rows)

    def forget_all(self) -> None:
        """Forget every fingerprint of this scope (a forced full resend), in one transaction."""
        with self._lock:
            with self._transaction() as conn:
                conn.execute("DELETE FROM fingerprints WHERE scope = ?", (self.scope,))
            self._known.clear()

    def close(self) -> None:
        """Close the database and release the lock; safe to call twice."""
        with self._lock:
            if self._lock_fd is None:
                return
            self._known.clear()
            try:
                self._conn.close()
            finally:
                self._release_os_lock()

    def __enter__(self) -> FingerprintStore:
        """The store itself; `close()` on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store."""
        self.close()

    # --- internals --------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed at the end, rolled back on any error."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                conn.execute("ROLLBACK")
            raise

    def _load(self, kind: str) -> set[int]:
        query = "SELECT id, digest FROM fingerprints WHERE scope = ? AND kind = ?"
        params: tuple[object, ...] = (self.scope, kind)
        if self.max_age_days is not None:
            query += " AND confirmed_at > ?"
            params = (*params, self._now() - self.max_age_days * SECONDS_PER_DAY)
        started = time.monotonic()
        known = {_key(pid, digest) for pid, digest in self._conn.execute(query, params)}
        self._known[kind] = known
        self._logger.debug(
            "Loaded %s %s fingerprints from %s in %.1f s.",
            f"{len(known):,}",
            kind,
            self.path,
            time.monotonic() - started,
        )
        return known

    def _stored_digests(self, kind: str, ids: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            query = (
                "SELECT id, digest FROM fingerprints "  # noqa: S608 - only "?" placeholders
                f"WHERE scope = ? AND kind = ? AND id IN ({marks})"
            )
            found.update(self._conn.execute(query, (self.scope, kind, *chunk)))
        return found

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except _CorruptStoreError as exc:
            aside = self._move_aside()
            self._logger.warning(
                "The fingerprint store %s is unreadable (%s); it was moved aside to %s and a new "
                "one started. Every profile will be sent again (a full resend) on this run.",
                self.path,
                exc,
                aside,
            )
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            # Profile ids are nobody else's business: create the file private to the user.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        # Autocommit mode: transactions are explicit. The job thread confirms, hence
        # check_same_thread=False; self._lock serialises every use.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            problem = _integrity_problem(conn)
            if problem is None:
                _prepare(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if _is_corruption(exc):
                raise _CorruptStoreError(str(exc)) from exc
            raise
        except BaseException:
            conn.close()
            raise
        if problem is not None:
            conn.close()
            raise _CorruptStoreError(problem)
        return conn

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._now()))
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        counter = 1
        while aside.exists():
            counter += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{counter}")
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
            acquired = _flock_within(fd, timeout)
            holder = "" if acquired else os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except BaseException:
            os.close(fd)
            raise
        if not acquired:
            os.close(fd)
            by = f" (pid {holder})" if holder.isdigit() else ""
            msg = (
                f"The fingerprint store {self.path} is in use by another target-userpilot "
                f"run{by}; waited {timeout:g} s. Let that run finish, or set "
                "`fingerprint_store_path` to use a different store."
            )
            raise FingerprintStoreBusyError(msg)
        # Who holds it, for the next run's error message.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        return fd

    def _release_os_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock
