"""Fingerprints in the team's own database (`fingerprint_store_url`), for runners with no disk.

PostgreSQL through psycopg 3 is supported and tested; the SQL is plain SQLAlchemy Core, so other
databases may work (untested, and without the one-run-at-a-time lock).

- Two tables, created when missing: `target_userpilot_fingerprints` (one row per scope, kind and
  id) and `target_userpilot_runs` (who holds each scope, for the busy message). Each carries
  `target-userpilot ..., schema version N` as its table comment; a table of that name that is not
  ours (other columns, another comment) is never touched: the run stops with a clear error.
- One run per scope at a time: a session-level PostgreSQL advisory lock on the connection held
  for the run. It dies with the connection, so any exit (kill -9 included) releases it.
- The URL holds a password: it is never logged or put in a message. Messages name the host and
  database only, and driver errors are scrubbed of the URL and password before they are shown.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
from hashlib import blake2b
from typing import TYPE_CHECKING, Any, NoReturn, final
from urllib.parse import quote, quote_plus

from sqlalchemy import (
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    create_engine,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from target_userpilot.fingerprints.common import (
    FingerprintStore,
    FingerprintStoreBusyError,
    FingerprintStoreError,
    RunHolder,
    StoreOptions,
    busy_message,
    poll_until,
)
from target_userpilot.fingerprints.store_url import SETTING, check_store_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy import ColumnElement, Select
    from sqlalchemy.engine import Connection, Engine

_LOGGER = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_COMMENT_PREFIX = "target-userpilot "
_IN_CHUNK = 1_000  # ids per `IN (...)`: far below any database's bound-parameter limit
_YIELD_PER = 10_000  # rows per fetch when loading a kind (a server-side cursor on PostgreSQL)
# libpq options we set unless the URL does: name the connection, fail fast, notice dead peers.
_PG_CONNECT_ARGS: dict[str, Any] = {
    "application_name": "target-userpilot",
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 60,
}

_METADATA = MetaData()
FINGERPRINTS = Table(
    "target_userpilot_fingerprints",
    _METADATA,
    Column("scope", Text, primary_key=True),
    Column("kind", Text, primary_key=True),
    Column("id", Text, primary_key=True),
    Column("digest", LargeBinary, nullable=False),
    Column("confirmed_at", Float, nullable=False),
    comment=f"{_COMMENT_PREFIX}fingerprints, schema version {SCHEMA_VERSION}",
)
RUNS = Table(
    "target_userpilot_runs",
    _METADATA,
    Column("scope", Text, primary_key=True),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    comment=f"{_COMMENT_PREFIX}runs, schema version {SCHEMA_VERSION}",
)
_VERSION = re.compile(r"schema version (\d+)$")
# A job's rows as two arrays: one statement and one round trip (an executemany is one statement
# per row, about 1 s per 10,000).
_PG_UPSERT = text(
    f"INSERT INTO {FINGERPRINTS.name} (scope, kind, id, digest, confirmed_at) "  # noqa: S608
    "SELECT :scope, :kind, x.id, x.digest, :confirmed_at "
    "FROM unnest(CAST(:ids AS text[]), CAST(:digests AS bytea[])) AS x(id, digest) "
    "ON CONFLICT (scope, kind, id) DO UPDATE "
    "SET digest = excluded.digest, confirmed_at = excluded.confirmed_at"
)
# A join with the ids, not `id IN (...)`: PostgreSQL then probes the key once per id, where an
# IN list may be applied as a filter over every row of the kind (seconds per job at 1,000,000).
_PG_STORED = text(
    f"SELECT f.id, f.digest FROM {FINGERPRINTS.name} AS f "  # noqa: S608 - our table's name
    "JOIN unnest(CAST(:ids AS text[])) AS x(id) ON f.id = x.id "
    "WHERE f.scope = :scope AND f.kind = :kind"
)


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), _IN_CHUNK):
        yield ids[start : start + _IN_CHUNK]


def _lock_key(label: str) -> int:
    """A signed 64-bit advisory-lock key for `label`."""
    digest = blake2b(f"target-userpilot:{label}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


_DDL_LOCK = _lock_key("schema")
# How often a connection attempt looks at the run's stop request.
CONNECT_POLL_SECONDS = 0.1


def _connect(engine: Engine, sleep: Callable[[float], None]) -> Connection:
    """A connection, waited for through `sleep` (the run's stop-aware wait).

    The driver's connect blocks in C for up to `connect_timeout` (10 s by default) and a
    signal cannot end it; on a helper thread, the run notices a stop while it waits. An
    attempt abandoned that way ends with the process.
    """
    made: queue.SimpleQueue[Connection | BaseException] = queue.SimpleQueue()

    def attempt() -> None:
        try:
            made.put(engine.connect())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            made.put(exc)

    threading.Thread(target=attempt, name="fingerprint-store-connect", daemon=True).start()
    while True:
        try:
            result = made.get_nowait()
        except queue.Empty:
            sleep(CONNECT_POLL_SECONDS)
            continue
        if isinstance(result, BaseException):
            raise result
        return result  # serialises table creation between first runs


def parse_url(raw: str) -> URL:
    """The SQLAlchemy URL; `postgresql://` means psycopg 3, the driver that comes with us.

    Raises:
        FingerprintStoreError: not a URL (the message does not repeat it: it may hold a password).
    """
    try:
        check_store_url(raw)
    except ValueError as exc:
        raise FingerprintStoreError(str(exc)) from None
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError):
        msg = (
            f"`{SETTING}` is not a database URL; expected e.g. "
            "postgresql+psycopg://user:password@host:5432/database."
        )
        raise FingerprintStoreError(msg) from None
    if url.drivername in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+psycopg")
    return url


def describe(url: URL) -> str:
    """`PostgreSQL database 'db' on host:port`: what messages and logs may say about the URL."""
    backend = {"postgresql": "PostgreSQL"}.get(url.get_backend_name(), url.get_backend_name())
    host = url.host or "localhost"
    where = f"{host}:{url.port}" if url.port else host
    return f"{backend} database {url.database or ''!r} on {where}"


def scrub(message: str, url: URL) -> str:
    """`message` on one line, without the URL or its password in any spelling."""
    secrets = {url.render_as_string(hide_password=False)}
    # libpq also takes the password as a query parameter (`?password=...`).
    in_query = url.query.get("password") or ()
    passwords = [url.password, *((in_query,) if isinstance(in_query, str) else in_query)]
    for password in filter(None, passwords):
        value = str(password)
        secrets |= {value, quote(value, safe=""), quote_plus(value)}
    flat = " ".join(message.split())
    for secret in sorted(secrets, key=len, reverse=True):
        flat = flat.replace(secret, "***")
    return flat


def _foreign_table_problem(conn: Connection, table: Table) -> str | None:
    """Why an existing table of our name is not ours, or None (ours, or missing)."""
    inspector = inspect(conn)
    if not inspector.has_table(table.name):
        return None
    columns = tuple(column["name"] for column in inspector.get_columns(table.name))
    if columns != tuple(table.columns.keys()):
        return f"its columns are {', '.join(columns)}"
    try:
        comment = inspector.get_table_comment(table.name).get("text") or ""
    except NotImplementedError:  # a database without table comments: the columns must do
        return None
    version = _VERSION.search(comment)
    if not comment.startswith(_COMMENT_PREFIX) or version is None:
        return "it has no target-userpilot schema version"
    if int(version.group(1)) != SCHEMA_VERSION:
        return (
            f"it has schema version {version.group(1)} and this target-userpilot knows "
            f"{SCHEMA_VERSION}; upgrade target-userpilot"
        )
    return None


@final
class SqlFingerprintStore(FingerprintStore):
    """Fingerprints in a SQL database; PostgreSQL holds an advisory lock per scope for the run."""

    def __init__(self, url: str, scope: str, options: StoreOptions | None = None) -> None:
        """Connect, create the tables when missing, and take the scope's lock.

        Raises:
            FingerprintStoreBusyError: another run holds this scope for more than `lock_timeout`.
            FingerprintStoreError: no connection, or a table of our name that is not ours.
        """
        options = options or StoreOptions()
        self._sleep = options.sleep
        super().__init__(scope, options, _LOGGER)
        self._url = parse_url(url)
        self._where = describe(self._url)
        self._postgres = self._url.get_backend_name() == "postgresql"
        connect_args = (
            {k: v for k, v in _PG_CONNECT_ARGS.items() if k not in self._url.query}
            if self._postgres
            else {}
        )
        with self._errors("connecting"):
            # One connection for the whole run: it holds the session-level advisory lock.
            self._engine = create_engine(self._url, poolclass=NullPool, connect_args=connect_args)
            self._conn = _connect(self._engine, options.sleep)
        try:
            self._prepare(options.lock_timeout)
        except BaseException:
            self._disconnect()
            raise
        self._logger.info("Fingerprints are kept in the %s.", self._where)
        if not self._postgres:
            self._logger.warning(
                "Fingerprint store on %s (untested): runs on one account are not serialised; "
                "make sure two runs never overlap.",
                self._url.get_backend_name(),
            )

    @property
    def where(self) -> str:
        """Host and database, never the password."""
        return self._where

    # --- backend ----------------------------------------------------------------------

    def _of_kind(self, query: Select[Any], kind: str, since: float | None) -> Select[Any]:
        table = FINGERPRINTS
        query = query.where(table.c.scope == self.scope, table.c.kind == kind)
        return query.where(table.c.confirmed_at > since) if since is not None else query

    def _count(self, kind: str, since: float | None) -> int:
        query = self._of_kind(select(func.count()).select_from(FINGERPRINTS), kind, since)
        with self._errors("counting fingerprints"), self._conn.begin():
            return int(self._conn.execute(query).scalar_one())

    def _digests(self, kind: str, since: float | None) -> Iterator[bytes]:
        query = self._of_kind(select(FINGERPRINTS.c.digest), kind, since)
        with self._errors("loading fingerprints"), self._conn.begin():
            # yield_per on the statement (on the connection it would stick to every later one).
            result = self._conn.execute(query.execution_options(yield_per=_YIELD_PER))
            for (digest,) in result:
                yield bytes(digest)

    def _write(
        self, kind: str, latest: dict[str, bytes], confirmed_at: float, *, previous: bool
    ) -> dict[str, bytes]:
        ids = list(latest)
        with self._errors("saving a job's fingerprints"), self._conn.begin():
            replaced = self._stored_digests(kind, ids) if previous else {}
            if self._postgres:  # PostgreSQL: a native upsert in one statement
                arrays = {"ids": ids, "digests": list(latest.values())}
                params = {"scope": self.scope, "kind": kind, "confirmed_at": confirmed_at}
                self._conn.execute(_PG_UPSERT, params | arrays)
            else:  # elsewhere, delete then insert: portable, in the same transaction
                for chunk in _chunks(ids):
                    self._conn.execute(delete(FINGERPRINTS).where(self._ids_in(kind, chunk)))
                rows = [
                    {
                        "scope": self.scope,
                        "kind": kind,
                        "id": pid,
                        "digest": digest,
                        "confirmed_at": confirmed_at,
                    }
                    for pid, digest in latest.items()
                ]
                self._conn.execute(insert(FINGERPRINTS), rows)
        return replaced

    def _remove(self, kind: str, ids: list[str]) -> dict[str, bytes]:
        with self._errors("forgetting deleted profiles' fingerprints"), self._conn.begin():
            removed = self._stored_digests(kind, ids)
            for chunk in _chunks(ids):
                self._conn.execute(delete(FINGERPRINTS).where(self._ids_in(kind, chunk)))
        return removed

    def _delete_scope(self) -> None:
        with self._errors("forgetting fingerprints"), self._conn.begin():
            self._conn.execute(delete(FINGERPRINTS).where(FINGERPRINTS.c.scope == self.scope))

    def _close(self) -> None:
        try:
            if self._postgres:
                with self._conn.begin():
                    holder = RunHolder.this_run()
                    self._conn.execute(
                        delete(RUNS).where(RUNS.c.scope == self.scope, RUNS.c.pid == holder.pid)
                    )
        except SQLAlchemyError as exc:  # closing the connection releases the lock anyway
            self._logger.warning(
                "Closing the fingerprint store %s: %s", self._where, self._message(exc)
            )
        finally:
            self._disconnect()

    def _session_lost(self) -> bool:
        # The advisory lock dies with the session (a database restart, a dropped connection):
        # a cheap query on the locked connection tells.
        if not self._postgres:
            return False
        try:
            with self._conn.begin():
                self._conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return True
        return False

    def _retake(self) -> None:
        self._logger.warning(
            "The fingerprint store's session was lost (a database restart?): taking the run "
            "lock again before sending anything more."
        )
        with contextlib.suppress(SQLAlchemyError):
            self._conn.close()
        with self._errors("connecting again after losing its session"):
            self._conn = _connect(self._engine, self._sleep)
        try:
            self._take_lock(0.0)
        except FingerprintStoreBusyError as busy:
            msg = (
                "The fingerprint store's session was lost (a database restart?) and another run "
                f"took the run lock meanwhile; stopped before sending anything more. {busy}"
            )
            raise FingerprintStoreError(msg) from None

    # --- internals --------------------------------------------------------------------

    def _ids_in(self, kind: str, ids: list[str]) -> ColumnElement[bool]:
        table = FINGERPRINTS
        return (table.c.scope == self.scope) & (table.c.kind == kind) & table.c.id.in_(ids)

    def _stored_digests(self, kind: str, ids: list[str]) -> dict[str, bytes]:
        """The stored digests of these ids (the caller holds a transaction)."""
        if self._postgres:
            params = {"scope": self.scope, "kind": kind, "ids": ids}
            return {pid: bytes(digest) for pid, digest in self._conn.execute(_PG_STORED, params)}
        table = FINGERPRINTS
        replaced: dict[str, bytes] = {}
        for chunk in _chunks(ids):
            query = select(table.c.id, table.c.digest).where(self._ids_in(kind, chunk))
            replaced.update((pid, bytes(digest)) for pid, digest in self._conn.execute(query))
        return replaced

    def _prepare(self, lock_timeout: float) -> None:
        conn = self._conn
        with self._errors("creating its tables"), conn.begin():
            if self._postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK})
            for table in (FINGERPRINTS, RUNS):
                problem = _foreign_table_problem(conn, table)
                if problem is not None:
                    msg = (
                        f"The table {table.name} in the {self._where} is not a target-userpilot "
                        f"fingerprint table ({problem}); it was left untouched. Rename or drop "
                        f"it, or point `{SETTING}` at another database or schema."
                    )
                    raise FingerprintStoreError(msg)
            _METADATA.create_all(conn, checkfirst=True)
        if self._postgres:
            self._take_lock(lock_timeout)

    def _take_lock(self, lock_timeout: float) -> None:
        """The scope's advisory lock on this run's connection, with the run named as holder."""
        conn = self._conn
        key = _lock_key(self.scope)
        with self._errors("taking the run lock"):
            if not poll_until(lambda: self._try_lock(key), lock_timeout):
                raise FingerprintStoreBusyError(
                    busy_message(self._where, self._holder(), lock_timeout, SETTING)
                )
            holder = RunHolder.this_run()
            with conn.begin():
                conn.execute(delete(RUNS).where(RUNS.c.scope == self.scope))
                conn.execute(
                    insert(RUNS).values(
                        scope=self.scope,
                        host=holder.host,
                        pid=holder.pid,
                        started_at=holder.started_at,
                    )
                )

    def _try_lock(self, key: int) -> bool:
        with self._conn.begin():
            query = text("SELECT pg_try_advisory_lock(:key)")
            return bool(self._conn.execute(query, {"key": key}).scalar())

    def _holder(self) -> RunHolder | None:
        with self._conn.begin():
            row = self._conn.execute(
                select(RUNS.c.host, RUNS.c.pid, RUNS.c.started_at).where(RUNS.c.scope == self.scope)
            ).first()
        return RunHolder(row.host, row.pid, row.started_at) if row is not None else None

    def _disconnect(self) -> None:
        with contextlib.suppress(SQLAlchemyError):
            self._conn.close()
        self._engine.dispose()

    def _message(self, exc: BaseException) -> str:
        """The driver's own words (not SQLAlchemy's wrapper with SQL and parameters), scrubbed."""
        original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        return scrub(str(original) or type(original).__name__, self._url)

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Database errors become one line naming the store and the setting, with no secret."""
        try:
            yield
        except (SQLAlchemyError, ImportError) as exc:
            self._fail(doing, exc)

    def _fail(self, doing: str, exc: BaseException) -> NoReturn:
        msg = (
            f"The fingerprint store ({self._where}) failed while {doing} ({self._message(exc)}). "
            f"Check `{SETTING}` and that the database is reachable."
        )
        raise FingerprintStoreError(msg) from None
