"""The PostgreSQL fingerprint store's own concerns: its URL stays secret, its tables are its own."""

from __future__ import annotations

import json
import logging
import signal
import socket
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import pytest
from pg_fixtures import pg_server_url_fixture, pg_url_fixture  # noqa: F401 - fixtures
from singer_io import run_cli
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from target_userpilot.fingerprints import (
    FingerprintStoreBusyError,
    FingerprintStoreError,
    StoreOptions,
    fingerprint,
)
from target_userpilot.fingerprints.sql_store import (
    SqlFingerprintStore,
    describe,
    parse_url,
    scrub,
)
from target_userpilot.run.signals import RunStopped, StopRequest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from sqlalchemy.engine import Connection

SCOPE = "api.userpilot.io:0123456789abcdef"
SECRET = "s3cret/p@ss word"  # noqa: S105 - needs percent-encoding in a URL
URL = make_url("postgresql+psycopg://loader@db.internal:5433/warehouse").set(password=SECRET)

OURS = (
    "CREATE TABLE target_userpilot_fingerprints "
    "(scope text, kind text, id text, digest bytea, confirmed_at float)"
)
COMMENT = "COMMENT ON TABLE target_userpilot_fingerprints IS '{}'"


@pytest.fixture
def conn(pg_url: str) -> Iterator[Connection]:
    """A connection to the test's schema, behind the store's back."""
    engine = create_engine(pg_url, poolclass=NullPool)
    with engine.connect() as connection:
        yield connection
    engine.dispose()


def test_scrub_removes_the_url_and_password_in_every_spelling() -> None:
    raw = URL.render_as_string(hide_password=False)
    assert SECRET not in raw  # the URL holds the percent-encoded form
    message = f'could not connect to {raw}\nFATAL: password "{SECRET}" or s3cret%2Fp%40ss+word'
    scrubbed = scrub(message, URL)
    assert "\n" not in scrubbed
    assert "s3cret" not in scrubbed
    assert "FATAL" in scrubbed
    in_query = make_url(f"postgresql://loader@db/warehouse?password={quote_plus(SECRET)}")
    assert "s3cret" not in scrub(f"bad {SECRET} {in_query}", in_query)


def test_a_url_names_only_its_host_and_database() -> None:
    assert describe(URL) == "PostgreSQL database 'warehouse' on db.internal:5433"
    assert parse_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    with pytest.raises(FingerprintStoreError) as bad:
        parse_url(f"not a url {SECRET}")
    assert SECRET not in str(bad.value)
    assert "`fingerprint_store_url`" in str(bad.value)


def test_the_tables_are_created_with_their_schema_version(pg_url: str, conn: Connection) -> None:
    with SqlFingerprintStore(pg_url, SCOPE) as store:
        store.confirm("users", [("u1", fingerprint(b"x"))])
    comments = conn.execute(
        text(
            "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
            "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' ORDER BY 1"
        )
    ).all()
    assert comments == [
        ("target_userpilot_fingerprints", "target-userpilot fingerprints, schema version 1"),
        ("target_userpilot_runs", "target-userpilot runs, schema version 1"),
    ]


@pytest.mark.parametrize(
    ("ddl", "says"),
    [
        (
            "CREATE TABLE target_userpilot_fingerprints (id text, payload jsonb)",
            "its columns are id, payload",
        ),
        (
            f"{OURS};{COMMENT.format('something else')}",
            "no target-userpilot schema version",
        ),
        (
            f"{OURS};{COMMENT.format('target-userpilot fingerprints, schema version 2')}",
            "upgrade target-userpilot",
        ),
    ],
)
def test_a_table_that_is_not_ours_is_never_touched(
    pg_url: str, conn: Connection, ddl: str, says: str
) -> None:
    with conn.begin():
        for statement in ddl.split(";"):
            conn.execute(text(statement))
        conn.execute(text("INSERT INTO target_userpilot_fingerprints (id) VALUES ('theirs')"))
    with pytest.raises(FingerprintStoreError) as foreign:
        SqlFingerprintStore(pg_url, SCOPE)
    message = str(foreign.value)
    assert "target_userpilot_fingerprints" in message
    assert "left untouched" in message
    assert says in message
    assert str(make_url(pg_url).password) not in message
    ids = conn.execute(text("SELECT id FROM target_userpilot_fingerprints")).scalars().all()
    assert ids == ["theirs"]
    tables = conn.execute(
        text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    )
    assert tables.scalars().all() == ["target_userpilot_fingerprints"], "nothing created"


def test_a_lost_connection_is_one_clear_error_without_the_password(
    pg_url: str, conn: Connection
) -> None:
    store = SqlFingerprintStore(pg_url, SCOPE)
    try:
        with store._conn.begin():
            backend = store._conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with conn.begin():  # as a server restart or an idle-connection killer would
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        with pytest.raises(FingerprintStoreError) as lost:
            store.confirm("users", [("u1", fingerprint(b"x"))])
    finally:
        store.close()
    message = str(lost.value)
    assert "saving a job's fingerprints" in message
    assert "`fingerprint_store_url`" in message
    assert str(make_url(pg_url).password) not in message
    assert "\n" not in message


def test_lookups_load_a_kind_in_two_queries_not_one_per_record(pg_url: str) -> None:
    digests = [fingerprint(f"u{i}".encode()) for i in range(10_000)]  # one per id, as lines are
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    with SqlFingerprintStore(pg_url, SCOPE) as store:
        store.confirm("users", [(f"u{i}", digests[i]) for i in range(5_000)])
        event.listen(Engine, "before_cursor_execute", count)
        try:
            unchanged = [store.is_unchanged("users", f"u{i}", digests[i]) for i in range(10_000)]
        finally:
            event.remove(Engine, "before_cursor_execute", count)
    assert sum(unchanged) == 5_000
    # A count, to size the lookup table once, then the rows.
    assert len([s for s in statements if "SELECT" in s]) == 2


def test_another_sqlalchemy_database_works_without_the_run_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    u1, u2, u2_changed = fingerprint(b"u1"), fingerprint(b"u2"), fingerprint(b"u2 changed")
    with caplog.at_level(logging.WARNING), SqlFingerprintStore(url, SCOPE) as store:
        store.is_unchanged("users", "u1", u1)
        store.confirm("users", [("u1", u1), ("u2", u2)])
        store.confirm("users", [("u2", u2_changed)])
        assert not store.is_unchanged("users", "u2", u2)
        assert store.is_unchanged("users", "u1", u1)
    assert "not serialised" in caplog.text
    with SqlFingerprintStore(url, SCOPE) as store:
        assert store.is_unchanged("users", "u1", u1)
        assert store.is_unchanged("users", "u2", u2_changed)


# A password with each character that ends a URL's password early, not percent-encoded.
MALFORMED = [
    ("postgresql://loader:x9Q@v7Z-3xyz-TAIL@db.internal:5432/warehouse", "'@'"),
    ("postgresql://loader:x9Q:v7Z-3xyz-TAIL@db.internal/warehouse", "':'"),
    ("postgresql://loader:x9Q/v7Z-3xyz-TAIL@db.internal/warehouse", "'/'"),
    ("postgresql://loader:x9Q?v7Z-3xyz-TAIL@db.internal/warehouse", "'?'"),
    ("postgresql://loader:x9Q#v7Z-3xyz-TAIL@db.internal/warehouse", "'#'"),
    ("postgresql://loader:x9/Q@v7Z-3xyz-TAIL@db.internal/warehouse", "'@'"),
]
PASSWORD = "v7Z-3xyz-TAIL"  # noqa: S105 - the tail every URL above shares, after its delimiter


def fragments(secret: str, shortest: int = 4) -> set[str]:
    return {
        secret[start:end]
        for start in range(len(secret))
        for end in range(start + shortest, len(secret) + 1)
    }


@pytest.mark.parametrize(("url", "char"), MALFORMED)
def test_a_url_whose_password_is_not_percent_encoded_is_refused_with_it_masked(
    url: str, char: str
) -> None:
    with pytest.raises(FingerprintStoreError) as refused:
        parse_url(url)
    message = str(refused.value)
    assert f"holds {char}" in message
    assert "postgresql://loader:***@db.internal" in message
    assert "percent-encode" in message
    password = url.split("loader:", 1)[1].rsplit("@", 1)[0]
    assert not [part for part in fragments(password) if part in message]


def test_a_malformed_store_url_reaches_no_output_at_any_log_level(tmp_path: Path) -> None:
    for number, (url, _) in enumerate(MALFORMED[:3]):  # the CLI adds one path, not six
        password = url.split("loader:", 1)[1].rsplit("@", 1)[0]
        config = tmp_path / f"config-{number}.json"
        config.write_text(
            json.dumps(
                {
                    "api_key": "k",
                    "api_url": "http://127.0.0.1:1",
                    "batch_dir": str(tmp_path / "batches"),
                    "send_only_changes": True,
                    "fingerprint_store_url": url,
                }
            )
        )
        run = run_cli(["--config", str(config)], [], tmp_path, {"LOGLEVEL": "DEBUG"})
        assert run.returncode == 1, run.stderr[-2000:]
        assert "percent-encode" in run.stderr
        output = run.stdout + run.stderr
        assert not [part for part in fragments(password) if part in output], url


def lose_sessions(conn: Connection) -> None:
    """End the store's sessions, as a database restart does (their advisory locks go with them)."""
    with conn.begin():
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'target-userpilot' AND pid <> pg_backend_pid()"
            )
        )


def test_a_lost_session_takes_the_lock_again_when_no_other_run_holds_it(
    pg_url: str, conn: Connection
) -> None:
    with SqlFingerprintStore(pg_url, SCOPE) as store:
        store.confirm("users", [("u1", fingerprint(b"x"))])
        lose_sessions(conn)
        store.check_session()
        assert store.is_unchanged("users", "u1", fingerprint(b"x"))
        with pytest.raises(FingerprintStoreBusyError):
            SqlFingerprintStore(pg_url, SCOPE)


def test_a_lost_session_whose_lock_another_run_took_stops_the_run(
    pg_url: str, conn: Connection
) -> None:
    store = SqlFingerprintStore(pg_url, SCOPE)
    try:
        lose_sessions(conn)
        with (
            SqlFingerprintStore(pg_url, SCOPE),
            pytest.raises(FingerprintStoreError, match="another run took the run lock"),
        ):
            store.check_session()
    finally:
        store.close()


def test_a_stop_ends_a_connection_attempt_the_database_never_answers() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # takes the connection, says nothing
        port = silent.getsockname()[1]
        stop = StopRequest()
        stop.handle(signal.SIGTERM)
        started = time.monotonic()
        with pytest.raises(RunStopped):
            SqlFingerprintStore(
                f"postgresql://loader:pw@127.0.0.1:{port}/warehouse",
                SCOPE,
                StoreOptions(sleep=stop.sleep),
            )
        assert time.monotonic() - started < 5, "not after libpq's 10 s connect_timeout"
