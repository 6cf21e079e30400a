"""Fixtures for the fingerprint stores: each test runs on SQLite and on PostgreSQL.

PostgreSQL comes from `TARGET_USERPILOT_TEST_PG_URL` (`.ci/run` starts a server with
`.ci/postgres` and sets it); each test gets a fresh schema on it. Without the variable the
PostgreSQL tests are skipped with the command that runs them, except under CI, where they fail.

Import the fixtures into a test module (`from pg_fixtures import ...  # noqa: F401`): only the
root conftest may declare `pytest_plugins`.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from collections.abc import Iterator

PG_URL_ENV = "TARGET_USERPILOT_TEST_PG_URL"
HOW_TO_RUN = (
    f"PostgreSQL store tests need a server: dir=$(mktemp -d); "
    f'export {PG_URL_ENV}="$(.ci/postgres start "$dir")"; run pytest; .ci/postgres stop "$dir"'
)

StoreLocation = dict[str, "Path | str"]


@pytest.fixture(name="pg_server_url", scope="session")
def pg_server_url_fixture() -> str:
    """The test server's URL (with its password), or a skip that says how to get one."""
    url = os.environ.get(PG_URL_ENV)
    if url:
        return url
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"{PG_URL_ENV} is not set under CI: .ci/run starts PostgreSQL with .ci/postgres"
        )
    pytest.skip(HOW_TO_RUN)


@pytest.fixture(name="pg_url")
def pg_url_fixture(pg_server_url: str) -> Iterator[str]:
    """A URL whose tables land in a fresh schema of the test server, dropped after the test."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(pg_server_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(pg_server_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(name="store_location", params=["sqlite", "postgresql"])
def store_location_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    """`{"path": file}` or `{"url": database}`: the keywords of `open_store`, for either store."""
    if request.param == "sqlite":
        return {"path": tmp_path / "fingerprints.sqlite"}
    return {"url": request.getfixturevalue("pg_url")}


def store_settings(location: StoreLocation) -> dict[str, str]:
    """The target's settings for a store location: `fingerprint_store_path` or `_url`."""
    return {f"fingerprint_store_{name}": str(value) for name, value in location.items()}
