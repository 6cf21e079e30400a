"""The fingerprint stores: what a user notices is which profiles get sent again.

Every behaviour is checked on both stores (the SQLite file and PostgreSQL); the file's own
concerns (corruption, foreign files, directories) are at the end.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pg_fixtures import (  # noqa: F401 - fixtures, found by name
    StoreLocation,
    pg_server_url_fixture,
    pg_url_fixture,
    store_location_fixture,
)
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from target_userpilot.fingerprints import (
    FingerprintStore,
    FingerprintStoreBusyError,
    FingerprintStoreError,
    StoreOptions,
    default_store_path,
    fingerprint,
    open_store,
    scope_for,
)

API = "https://api.userpilot.io/v1"
KEY = "up-secret-key-0123456789abcdef"
SCOPE = scope_for(API, KEY)
DAY = 86_400.0


def line(profile_id: str, **traits: object) -> bytes:
    body = ",".join(f'"{name}":"{value}"' for name, value in sorted(traits.items()))
    return f'{{"user_id":"{profile_id}","metadata":{{{body}}}}}'.encode()


class Clock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "fingerprints.sqlite"


@pytest.fixture
def at(store_location: StoreLocation) -> StoreLocation:
    """Where the store of this test lives: a SQLite file, or a PostgreSQL schema."""
    return store_location


def open_at(location: StoreLocation, scope: str = SCOPE, **kwargs: Any) -> FingerprintStore:
    return open_store(scope, **location, options=StoreOptions(**kwargs))  # type: ignore[arg-type]


def open_file(path: Path, scope: str = SCOPE, **kwargs: Any) -> FingerprintStore:
    return open_at({"path": path}, scope, **kwargs)


def stored(location: StoreLocation, columns: str = "scope, kind, id") -> list[tuple[Any, ...]]:
    """Every row of the store, read behind its back (ordered by id)."""
    if "path" in location:
        with sqlite3.connect(location["path"]) as conn:
            query = f"SELECT {columns} FROM fingerprints ORDER BY id"  # noqa: S608 - test constant
            return conn.execute(query).fetchall()
    engine = create_engine(str(location["url"]), poolclass=NullPool)
    with engine.connect() as conn:
        table = "target_userpilot_fingerprints"
        query = f"SELECT {columns} FROM {table} ORDER BY id"  # noqa: S608 - test constant
        rows = [tuple(row) for row in conn.execute(text(query))]
    engine.dispose()
    return rows


# --- unchanged, changed, new -----------------------------------------------------------


def test_only_changed_and_new_profiles_are_sent_again(at: StoreLocation) -> None:
    with open_at(at) as store:
        assert store.confirm("users", [("u1", fingerprint(line("u1", plan="free")))]) == 1
        store.confirm("users", [("u2", fingerprint(line("u2", plan="pro")))])

    with open_at(at) as store:  # the next night's run
        assert store.is_unchanged("users", "u1", fingerprint(line("u1", plan="free")))
        assert not store.is_unchanged("users", "u2", fingerprint(line("u2", plan="free")))
        assert not store.is_unchanged("users", "u3", fingerprint(line("u3", plan="free")))
        # Kinds are separate: a company with a user's id is new.
        assert not store.is_unchanged("companies", "u1", fingerprint(line("u1", plan="free")))


def test_fingerprint_is_stable_and_content_sensitive() -> None:
    assert fingerprint(line("u1", plan="free")) == fingerprint(line("u1", plan="free"))
    assert fingerprint(line("u1", plan="free")) != fingerprint(line("u1", plan="pro"))
    assert len(fingerprint(b"")) == 16


def test_a_profile_confirmed_later_in_the_run_compares_to_its_last_confirmed_line(
    at: StoreLocation,
) -> None:
    old, new = fingerprint(line("u1", plan="free")), fingerprint(line("u1", plan="pro"))
    with open_at(at) as store:
        store.confirm("users", [("u1", old)])
    with open_at(at) as store:
        assert store.is_unchanged("users", "u1", old)  # lookups loaded the kind
        store.confirm("users", [("u1", new)])  # a newer line went out and was confirmed
        # The old line again must be sent: Userpilot now holds the new one.
        assert not store.is_unchanged("users", "u1", old)
        assert store.is_unchanged("users", "u1", new)


def test_a_repeated_id_in_one_job_keeps_its_last_line(at: StoreLocation) -> None:
    first, last = fingerprint(b"first"), fingerprint(b"last")
    with open_at(at) as store:
        assert store.confirm("users", [("u1", first), ("u1", last)]) == 1
        assert store.is_unchanged("users", "u1", last)
        assert not store.is_unchanged("users", "u1", first)


def test_an_id_a_database_cannot_store_is_simply_sent_again(at: StoreLocation) -> None:
    def digest(pid: str) -> bytes:  # its line, escaped as the target writes a lone surrogate
        return fingerprint(json.dumps({"user_id": pid}).encode())

    ids = ["bad\ud800", "nul\x00", "ok"]
    with open_at(at) as store:
        assert store.confirm("users", [(pid, digest(pid)) for pid in ids]) == 1
        assert not store.is_unchanged("users", "bad\ud800", digest("bad\ud800"))
        assert not store.is_unchanged("users", "nul\x00", digest("nul\x00"))
        assert store.is_unchanged("users", "ok", digest("ok"))


# --- scopes ------------------------------------------------------------------------------


def test_another_account_or_host_sends_everything(at: StoreLocation) -> None:
    digest = fingerprint(line("u1", plan="free"))
    with open_at(at) as store:
        store.confirm("users", [("u1", digest)])
    for scope in (
        scope_for(API, "another-key"),
        scope_for("https://api.eu.userpilot.io", KEY),
        scope_for("http://127.0.0.1:8765", KEY),
    ):
        assert scope != SCOPE
        with open_at(at, scope) as store:
            assert not store.is_unchanged("users", "u1", digest)
    with open_at(at, scope_for("HTTPS://API.userpilot.io:443/other/path", KEY)) as store:
        assert store.is_unchanged("users", "u1", digest)


def test_scope_normalises_the_host_and_hides_the_key() -> None:
    assert scope_for("https://api.userpilot.io/v1/", KEY) == scope_for("api.userpilot.io", KEY)
    assert scope_for("http://localhost:8000", KEY) != scope_for("http://localhost:9000", KEY)
    assert KEY not in scope_for(API, KEY)
    assert scope_for(API, KEY).startswith("api.userpilot.io:")


def test_the_api_key_never_reaches_the_database_or_the_log(
    at: StoreLocation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with open_at(at, logger=logging.getLogger("test")) as store:
        store.confirm("users", [(f"u{i}", fingerprint(b"x")) for i in range(100)])
        store.is_unchanged("users", "u1", fingerprint(b"x"))
        store.forget_all()
        store.confirm("users", [("u1", fingerprint(b"y"))])
    assert stored(at, "scope, id") == [(SCOPE, "u1")]
    if "path" in at:  # the file and its journal, byte for byte
        files = Path(at["path"]).parent.iterdir()
        assert KEY.encode() not in b"".join(p.read_bytes() for p in files if p.is_file())
    assert KEY not in caplog.text


# --- age ---------------------------------------------------------------------------------


def test_max_age_days_resends_profiles_confirmed_too_long_ago(at: StoreLocation) -> None:
    clock = Clock()
    digest = fingerprint(line("u1", plan="free"))
    with open_at(at, now=clock) as store:
        store.confirm("users", [("u1", digest)])

    clock.value += 6.9 * DAY
    with open_at(at, max_age_days=7, now=clock) as store:
        assert store.is_unchanged("users", "u1", digest)
    clock.value += 0.2 * DAY
    with open_at(at, max_age_days=7, now=clock) as store:
        assert not store.is_unchanged("users", "u1", digest)
        store.confirm("users", [("u1", digest)])  # sent again and confirmed: fresh again
        assert store.is_unchanged("users", "u1", digest)
    with open_at(at, now=clock) as store:  # no max age: never expires
        clock.value += 365 * DAY
        assert store.is_unchanged("users", "u1", digest)


# --- transactions ------------------------------------------------------------------------


def test_a_job_whose_confirmation_fails_midway_stores_nothing(at: StoreLocation) -> None:
    def entries_then_failure() -> object:
        for i in range(5):
            yield f"u{i}", fingerprint(line(f"u{i}"))
        msg = "lost the batch file"
        raise OSError(msg)

    with open_at(at) as store:
        store.confirm("users", [("u0", fingerprint(b"old"))])
        assert store.is_unchanged("users", "u0", fingerprint(b"old"))
        with pytest.raises(OSError, match="lost the batch file"):
            store.confirm("users", entries_then_failure())  # type: ignore[arg-type]
        assert store.is_unchanged("users", "u0", fingerprint(b"old"))
        assert not store.is_unchanged("users", "u1", fingerprint(line("u1")))
    assert stored(at) == [(SCOPE, "users", "u0")]


def test_a_database_error_midway_rolls_the_whole_job_back(at: StoreLocation) -> None:
    entries: list[tuple[str, Any]] = [
        ("u1", fingerprint(b"1")),
        ("u2", fingerprint(b"2")),
        ("u3", None),
    ]
    with open_at(at) as store:
        with pytest.raises((sqlite3.IntegrityError, FingerprintStoreError)):
            store.confirm("users", entries)
        assert not store.is_unchanged("users", "u1", fingerprint(b"1"))
        # The store is still usable after the rollback.
        assert store.confirm("users", entries[:2]) == 2
    assert [row[2] for row in stored(at)] == ["u1", "u2"]


def test_forget_all_resends_everything_of_this_scope_only(at: StoreLocation) -> None:
    digest = fingerprint(b"profile")
    other = scope_for(API, "another-key")
    with open_at(at, other) as store:
        store.confirm("users", [("u1", digest)])
    with open_at(at) as store:
        store.confirm("users", [("u1", digest)])
        store.confirm("companies", [("c1", digest)])
        assert store.is_unchanged("users", "u1", digest)
        store.forget_all()
        assert not store.is_unchanged("users", "u1", digest)
        assert not store.is_unchanged("companies", "c1", digest)
    with open_at(at, other) as store:
        assert store.is_unchanged("users", "u1", digest)


def test_forget_resends_only_the_deleted_ids_of_that_kind_and_scope(at: StoreLocation) -> None:
    def digest(pid: str) -> bytes:  # the line of each id, as the target fingerprints it
        return fingerprint(line(pid))

    other = scope_for(API, "another-key")
    deleted = [f"u{i}" for i in range(1_200)]  # more than one `IN (...)` chunk
    with open_at(at, other) as store:
        store.confirm("users", [("u1", digest("u1"))])
    with open_at(at) as store:
        store.confirm("users", [(pid, digest(pid)) for pid in [*deleted, "kept"]])
        store.confirm("companies", [("u1", digest("u1"))])
        assert store.is_unchanged("users", "u1", digest("u1"))  # loaded before the forget
        assert store.forget("users", [*deleted, "u1", "never-stored"]) == len(deleted)
        assert not store.is_unchanged("users", "u1", digest("u1"))
        assert store.is_unchanged("users", "kept", digest("kept"))
    with open_at(at) as store:  # the next run: a re-created profile is sent again
        assert not store.is_unchanged("users", "u999", digest("u999"))
        assert store.is_unchanged("users", "kept", digest("kept"))
        assert store.is_unchanged("companies", "u1", digest("u1"))
    with open_at(at, other) as store:
        assert store.is_unchanged("users", "u1", digest("u1"))


# --- files -------------------------------------------------------------------------------


def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "fingerprints.sqlite"
    with open_file(path) as store:
        store.confirm("users", [("u1", fingerprint(b"x"))])
    assert path.is_file()
    with open_file(path) as store:
        assert store.is_unchanged("users", "u1", fingerprint(b"x"))


def test_a_corrupt_file_is_moved_aside_with_a_warning_and_the_run_goes_on(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = b"this is not an SQLite database\x00\xff" * 200
    db.write_bytes(garbage)
    with caplog.at_level(logging.WARNING), open_file(db) as store:
        assert not store.is_unchanged("users", "u1", fingerprint(b"x"))
        store.confirm("users", [("u1", fingerprint(b"x"))])
        assert store.is_unchanged("users", "u1", fingerprint(b"x"))
    asides = list(db.parent.glob("fingerprints.sqlite.corrupt-*"))
    assert len(asides) == 1
    assert asides[0].read_bytes() == garbage
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert str(asides[0]) in warning.getMessage()
    assert "full resend" in warning.getMessage()
    assert stored({"path": db}) == [(SCOPE, "users", "u1")]


def test_a_damaged_database_failing_its_integrity_check_is_moved_aside(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open_file(db) as store:
        store.confirm(
            "users", [(f"user-{i:06d}", fingerprint(str(i).encode())) for i in range(5000)]
        )
    data = bytearray(db.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    # Overwrite pages in the middle of the table's b-tree; the file header stays valid.
    data[page_size * 3 : page_size * 6] = b"\xa5" * (page_size * 3)
    db.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING), open_file(db) as store:
        assert not store.is_unchanged("users", "user-000001", fingerprint(b"1"))
    assert "full resend" in caplog.text
    assert len(list(db.parent.glob("fingerprints.sqlite.corrupt-*"))) == 1


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        ("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)", "other tables (orders)"),
        ("CREATE TABLE fingerprints (id TEXT, digest BLOB)", "other columns (id, digest)"),
        ("PRAGMA user_version = 7", "unknown schema version 7"),
    ],
)
def test_an_sqlite_database_that_is_not_a_store_is_set_aside_untouched(
    db: Path, caplog: pytest.LogCaptureFixture, schema: str, why: str
) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(schema)
    original = db.read_bytes()
    with caplog.at_level(logging.WARNING), open_file(db) as store:
        assert not store.is_unchanged("users", "u1", fingerprint(b"x"))
        store.confirm("users", [("u1", fingerprint(b"x"))])
    (aside,) = db.parent.glob("fingerprints.sqlite.not-ours-*")
    assert aside.read_bytes() == original
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "not a target-userpilot fingerprint store" in warning
    assert why in warning
    assert str(aside) in warning
    assert stored({"path": db}) == [(SCOPE, "users", "u1")]


def test_a_missing_database_starts_fresh_silently(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), open_file(db) as store:
        assert not store.is_unchanged("users", "u1", fingerprint(b"x"))
    assert not caplog.records
    assert not list(db.parent.glob("*.corrupt-*"))


# --- one run at a time -------------------------------------------------------------------


def test_a_second_run_on_the_same_store_is_refused_until_the_first_closes(
    at: StoreLocation,
) -> None:
    first = open_at(at)
    started = time.monotonic()
    with pytest.raises(FingerprintStoreBusyError) as busy:
        open_at(at)
    assert time.monotonic() - started < 1.0
    message = str(busy.value)
    assert first.where in message
    assert "another target-userpilot run" in message
    assert f"pid {os.getpid()}" in message
    assert f"`fingerprint_store_{next(iter(at))}`" in message
    first.close()
    with open_at(at) as second:
        assert not second.is_unchanged("users", "u1", fingerprint(b"x"))


def test_a_lock_timeout_waits_for_the_other_run(at: StoreLocation) -> None:
    first = open_at(at)
    started = time.monotonic()
    with pytest.raises(FingerprintStoreBusyError):
        open_at(at, lock_timeout=0.3)
    assert time.monotonic() - started >= 0.3

    threading.Timer(0.3, first.close).start()
    started = time.monotonic()
    with open_at(at, lock_timeout=10) as second:
        assert time.monotonic() - started >= 0.2
        second.confirm("users", [("u1", fingerprint(b"x"))])


def test_a_run_in_another_process_holds_the_store(at: StoreLocation) -> None:
    plain = {name: str(value) for name, value in at.items()}
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from target_userpilot.fingerprints import open_store
        location = {{k: Path(v) if k == "path" else v for k, v in {plain!r}.items()}}
        with open_store({SCOPE!r}, **location):
            print("open", flush=True)
            sys.stdin.readline()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "open"
        holder = rf"host {socket.gethostname()}, pid {child.pid}, started 20"
        with pytest.raises(FingerprintStoreBusyError, match=holder):
            open_at(at)
    finally:
        child.communicate("\n", timeout=30)
    with open_at(at):
        pass


def test_close_is_idempotent_and_confirm_from_another_thread_works(at: StoreLocation) -> None:
    store = open_at(at)
    store.is_unchanged("users", "u1", fingerprint(b"x"))
    worker = threading.Thread(target=store.confirm, args=("users", [("u1", fingerprint(b"x"))]))
    worker.start()
    worker.join()
    assert store.is_unchanged("users", "u1", fingerprint(b"x"))
    store.close()
    store.close()


# --- where the store lives ---------------------------------------------------------------


def test_default_store_path_under_meltano(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MELTANO_PROJECT_ROOT", str(tmp_path / "project"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store_path() == (
        tmp_path / "project" / ".meltano" / "target-userpilot" / "fingerprints.sqlite"
    )


def test_default_store_path_outside_meltano(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MELTANO_PROJECT_ROOT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store_path() == tmp_path / "xdg" / "target-userpilot" / "fingerprints.sqlite"

    for unset in ("", "relative/not/allowed"):
        monkeypatch.setenv("XDG_DATA_HOME", unset)
        assert default_store_path() == (
            tmp_path / "home" / ".local" / "share" / "target-userpilot" / "fingerprints.sqlite"
        )
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("MELTANO_PROJECT_ROOT", "")
    assert default_store_path().parent == (
        tmp_path / "home" / ".local" / "share" / "target-userpilot"
    )
