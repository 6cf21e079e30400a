"""Send only what changed: fingerprints of the profile lines a completed Userpilot job confirmed.

A nightly full-table sync skips every profile whose line has the same digest as the last one
Userpilot confirmed, so Userpilot (~1,200 rows a minute) only receives what changed. Fingerprints
are kept per API host and account (the scope: the host plus a hash of the API key; the key itself
is never stored or logged), in one of two stores:

- `SqliteFingerprintStore`: a local SQLite file (`fingerprint_store_path`), the default;
- `sql_store.SqlFingerprintStore`: the team's own database (`fingerprint_store_url`,
  PostgreSQL), for runners that start with an empty disk.

`open_store` picks one from the settings; both have the interface of `FingerprintStore`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from target_userpilot.fingerprints.common import (
    FingerprintStore,
    FingerprintStoreBusyError,
    FingerprintStoreError,
    StoreOptions,
    default_store_path,
    fingerprint,
    scope_for,
)
from target_userpilot.fingerprints.sqlite_store import SqliteFingerprintStore

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "FingerprintStore",
    "FingerprintStoreBusyError",
    "FingerprintStoreError",
    "SqliteFingerprintStore",
    "StoreOptions",
    "default_store_path",
    "fingerprint",
    "open_store",
    "scope_for",
]


def open_store(
    scope: str,
    *,
    url: str | None = None,
    path: Path | None = None,
    options: StoreOptions | None = None,
) -> FingerprintStore:
    """The database at `url` when given, else the SQLite file at `path` (or the default path).

    Raises:
        FingerprintStoreBusyError: another run holds the store for more than `lock_timeout` s.
        FingerprintStoreError: the store cannot be used; the message says what to fix.
    """
    if url:
        # SQLAlchemy only when asked for: it adds ~0.1 s to every start.
        from target_userpilot.fingerprints.sql_store import SqlFingerprintStore  # noqa: PLC0415

        return SqlFingerprintStore(url, scope, options)
    return SqliteFingerprintStore(path or default_store_path(), scope, options)
