"""What every fingerprint store shares: digests, scopes, the in-memory lookup set, the errors.

A store keeps one row per (scope, kind, id): the digest of the NDJSON line last confirmed for that
profile and when. The backends (a SQLite file, a SQL database through SQLAlchemy) only read and
write rows; the lookup logic lives here, once:

- Lookups are in memory: on the first lookup of a kind, that kind's rows are loaded in bulk into a
  flat table of fixed-size keys (`keyset.py`: the digests alone, each naming its id), ~16
  bytes an id. A lookup is then one hash and a probe or two, never a round trip to the database.
- Rows are written only by `confirm`, once per completed job, in one transaction: nothing is
  remembered for a job Userpilot did not complete. `forget` removes the rows of ids whose
  deletion Userpilot accepted, in one transaction, so a re-created profile is sent again.
"""

from __future__ import annotations

import abc
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from hashlib import blake2b, sha256
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from target_userpilot.errors import UserFacingError
from target_userpilot.fingerprints.keyset import KeySet, slot_key
from target_userpilot.places import PLUGIN_DIR, default_path

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Iterable
    from types import TracebackType

    from typing_extensions import Self

APP_DIR = PLUGIN_DIR
DB_NAME = "fingerprints.sqlite"
DIGEST_SIZE = 16
SECONDS_PER_DAY = 86_400.0
LOCK_POLL_SECONDS = 0.05
# Kinds whose fingerprints say "already sent", not "last sent as": never resent because old.
NEVER_AGING = frozenset({"events"})


class FingerprintStoreError(UserFacingError):
    """The fingerprint store cannot be used; the message says what to fix (and holds no secret)."""


class FingerprintStoreBusyError(FingerprintStoreError):
    """Another target-userpilot run holds the fingerprint store."""


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
    """Where the SQLite store lives unless `fingerprint_store_path` says otherwise.

    `$MELTANO_PROJECT_ROOT/.meltano/target-userpilot/fingerprints.sqlite` under Meltano, else the
    per-user data directory: `$XDG_DATA_HOME` (when absolute) or `~/.local/share`.
    """
    xdg = os.environ.get("XDG_DATA_HOME")
    # The XDG spec: a relative path is invalid and must be ignored.
    data_home = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return default_path(DB_NAME, elsewhere=data_home / APP_DIR / DB_NAME)


def storable(profile_id: str) -> bool:
    """Databases store text as UTF-8 (PostgreSQL also refuses NUL): other ids are just resent."""
    if profile_id.isascii():
        return "\x00" not in profile_id
    try:
        profile_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in profile_id


@dataclass(frozen=True)
class RunHolder:
    """Who holds a store: kept where the next run can read it, so its message names the holder."""

    host: str
    pid: int
    started_at: float

    @classmethod
    def this_run(cls) -> RunHolder:
        """This process."""
        return cls(socket.gethostname(), os.getpid(), time.time())

    def dumps(self) -> str:
        """One line of JSON."""
        return json.dumps({"host": self.host, "pid": self.pid, "started_at": self.started_at})

    @classmethod
    def loads(cls, text: str) -> RunHolder | None:
        """The holder written by `dumps`, or None when the text is something else."""
        try:
            data = json.loads(text)
            return cls(str(data["host"]), int(data["pid"]), float(data["started_at"]))
        except (ValueError, TypeError, KeyError):
            return None

    def __str__(self) -> str:
        """`host H, pid N, started YYYY-mm-dd HH:MM:SS UTC`."""
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started_at))
        return f"host {self.host}, pid {self.pid}, started {started}"


def busy_message(where: str, holder: RunHolder | None, waited: float, setting: str) -> str:
    """The one line a second run on the same account prints."""
    by = f" ({holder})" if holder is not None else ""
    return (
        f"The fingerprint store {where} is in use by another target-userpilot run{by} on this "
        f"account; waited {waited:g} s. Let that run finish, or set `{setting}` to use a "
        "different store."
    )


@dataclass(frozen=True)
class StoreOptions:
    """How a store behaves, whichever database holds it."""

    # A fingerprint confirmed longer ago than this counts as changed (None: never).
    max_age_days: float | None = None
    # How long to wait for another run to release the store before giving up.
    lock_timeout: float = 0.0
    logger: logging.Logger | None = None
    now: Callable[[], float] = time.time
    # How a database store waits for its connection: the run's stop-aware sleep.
    sleep: Callable[[float], None] = time.sleep


class FingerprintStore(abc.ABC):
    """Digests of the profile lines Userpilot confirmed, per scope; one run at a time.

    Thread safe: the main thread looks up, the job thread may confirm.
    """

    def __init__(self, scope: str, options: StoreOptions, default_logger: logging.Logger) -> None:
        """Lookup state only; the backend opens its database and takes the run lock."""
        self.scope = scope
        self.max_age_days = options.max_age_days
        self._logger = options.logger or default_logger
        self._now = options.now
        self._lock = threading.Lock()
        self._closed = False
        # kind -> keys of the (id, digest) pairs that count as unchanged; loaded on first use.
        self._known: dict[str, KeySet] = {}

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """The store, for messages: a file path, or host and database (never a password)."""

    # --- public API -------------------------------------------------------------------

    def is_unchanged(self, kind: str, profile_id: str, digest: bytes) -> bool:  # noqa: ARG002 - the digest names the id
        """True when `digest` is the last confirmed digest of this profile, and fresh enough.

        With `max_age_days`, a fingerprint confirmed longer ago than that counts as changed; the
        age is judged when the kind is first looked up in this store (once per run). The
        digest alone is looked up: it is of a line naming `profile_id`. Only the first lookup
        of a kind takes the lock (to load it); the table is safe to read beside a `confirm`.
        """
        known = self._known.get(kind)
        if known is None:
            with self._lock:
                known = self._known.get(kind)
                if known is None:
                    known = self._load(kind)
        return known.has(digest)

    def confirm(self, kind: str, entries: Iterable[tuple[str, bytes]]) -> int:
        """Remember the (id, digest) pairs of one completed job, all or nothing.

        A repeated id keeps its last digest. Returns the number of profiles written.
        """
        # Read the entries before touching the database: if the iterable fails, nothing is written.
        latest = {pid: digest for pid, digest in entries if storable(pid)}
        if not latest:
            return 0
        confirmed_at = self._now()
        with self._lock:
            known = self._known.get(kind)
            previous = self._write(kind, latest, confirmed_at, previous=known is not None)
            if known is not None:
                # The set follows the database only once the transaction committed.
                for old in previous.values():
                    known.discard(slot_key(old))
                for digest in latest.values():
                    known.add(slot_key(digest))
        return len(latest)

    def forget(self, kind: str, ids: Iterable[str]) -> int:
        """Forget the fingerprints of these ids (their deletion was accepted), in one transaction.

        A profile re-created later is then sent again. Returns the number of rows removed.
        """
        wanted = [pid for pid in dict.fromkeys(ids) if storable(pid)]
        if not wanted:
            return 0
        with self._lock:
            known = self._known.get(kind)
            removed = self._remove(kind, wanted)
            if known is not None:
                # The set follows the database only once the transaction committed.
                for digest in removed.values():
                    known.discard(slot_key(digest))
        return len(removed)

    def forget_all(self) -> None:
        """Forget every fingerprint of this scope (a forced full resend), in one transaction."""
        with self._lock:
            self._delete_scope()
            self._known.clear()

    def check_session(self) -> None:
        """Before Userpilot is sent anything more: is the run lock still held?

        Raises FingerprintStoreError when it is lost and cannot be taken again.
        """
        with self._lock:
            if not self._closed and self._session_lost():
                # Another run may have confirmed fingerprints meanwhile: read them again.
                self._known.clear()
                self._retake()

    def close(self) -> None:
        """Close the database and release the run lock; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._known.clear()
            self._close()

    def __enter__(self) -> Self:
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

    # --- what a backend provides ------------------------------------------------------

    @abc.abstractmethod
    def _count(self, kind: str, since: float | None) -> int:
        """How many digests `_digests` would give."""

    @abc.abstractmethod
    def _digests(self, kind: str, since: float | None) -> Iterable[bytes]:
        """The digests of this scope and kind, confirmed after `since` when given."""

    @abc.abstractmethod
    def _write(
        self, kind: str, latest: dict[str, bytes], confirmed_at: float, *, previous: bool
    ) -> dict[str, bytes]:
        """Upsert `latest` in one transaction; with `previous`, return the digests it replaced."""

    @abc.abstractmethod
    def _remove(self, kind: str, ids: list[str]) -> dict[str, bytes]:
        """Delete these ids' rows in one transaction; the digests they held."""

    @abc.abstractmethod
    def _delete_scope(self) -> None:
        """Delete every row of this scope in one transaction."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Close the database and release the run lock."""

    def _session_lost(self) -> bool:
        """Whether the run lock went with a lost session (a file lock never does)."""
        return False

    def _retake(self) -> None:
        """Take the run lock again after `_session_lost`, or raise FingerprintStoreError."""
        msg = f"The run lock on the fingerprint store ({self.where}) was lost; rerun."
        raise FingerprintStoreError(msg)

    # --- internals --------------------------------------------------------------------

    def _load(self, kind: str) -> KeySet:
        since = None
        # An event's fingerprint never ages: `resend_after_days` resends profiles, never events.
        if self.max_age_days is not None and kind not in NEVER_AGING:
            since = self._now() - self.max_age_days * SECONDS_PER_DAY
        started = time.monotonic()
        # Counted first: the table is sized once, never grown (and copied) while it loads.
        known = KeySet(self._count(kind, since))
        known.load(self._digests(kind, since))
        self._known[kind] = known
        self._logger.debug(
            "Loaded %s %s fingerprints from %s in %.1f s.",
            f"{len(known):,}",
            kind,
            self.where,
            time.monotonic() - started,
        )
        return known


def poll_until(attempt: Callable[[], bool], timeout: float) -> bool:
    """Call `attempt` until it returns True or `timeout` seconds passed; its last result."""
    deadline = time.monotonic() + max(timeout, 0.0)
    while not attempt():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(LOCK_POLL_SECONDS, remaining))
    return True
