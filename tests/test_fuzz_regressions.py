"""Failures the fuzzer found, each as its shrunk example, checked against the same invariant.

A test marked `xfail(strict=True)` fails on today's code for a known bug another change is
fixing; when that fix lands it passes, strict xfail turns that into a failure, and the lead
removes the mark (and turns the matching switch in `fuzz.strategies.KNOWN_BUGS_OFF` back on).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fuzz.oracle import check
from fuzz.runner import InProcessRunner
from fuzz.strategies import Case

if TYPE_CHECKING:
    from collections.abc import Callable

    from target_userpilot.emulator import Emulator

USERS = (
    '{"type":"SCHEMA","stream":"users","schema":{"type":"object","properties":'
    '{"id":{"type":"integer"},"email":{"type":["string","null"]},'
    '"plan":{"type":["number","null"]}}},"key_properties":["id"]}'
)


def _record(body: str) -> str:
    return '{"type":"RECORD","stream":"users","record":' + body + "}"


def _problems(emulator: Emulator, tmp_path: Path, lines: list[str], **settings: Any) -> list[str]:
    case = Case(lines=lines, settings=settings)
    return check(case, InProcessRunner(emulator).run(case, tmp_path))


@pytest.mark.xfail(
    strict=True,
    reason="a lone surrogate in an invalid record crashes the dead-letter writer "
    "(UnicodeEncodeError, a traceback, exit 1)",
)
def test_a_lone_surrogate_in_an_invalid_record_is_dead_lettered(
    emulator: Emulator, tmp_path: Path
) -> None:
    # Shrunk: the email property is declared integer, so the record is invalid and is
    # dead-lettered with its string value "\ud800".
    lines = [USERS.replace('"email":{"type":["string","null"]}', '"email":{"type":"integer"}')]
    lines.append(_record('{"id":0,"email":"\\ud800"}'))
    assert _problems(emulator, tmp_path, lines) == []


@pytest.mark.xfail(
    strict=True,
    reason="1e5000 (a number beyond float range) crashes the dead-letter writer "
    "(int too large to write, a traceback, exit 1)",
)
def test_a_number_beyond_float_range_is_accounted_for(emulator: Emulator, tmp_path: Path) -> None:
    lines = [USERS, _record('{"id":0,"plan":1E+5000}')]
    assert _problems(emulator, tmp_path, lines) == []


@pytest.mark.xfail(
    strict=True,
    reason="with on_invalid_record: fail, a record lacking a key property raises the SDK's "
    "MissingKeyPropertiesError: a traceback and no ERROR line naming the setting",
)
def test_a_record_lacking_its_key_property_stops_a_fail_run_with_one_error_line(
    emulator: Emulator, tmp_path: Path
) -> None:
    lines = [USERS, _record('{"email":null}')]
    assert _problems(emulator, tmp_path, lines, on_invalid_record="fail") == []


@pytest.mark.xfail(
    strict=True,
    reason="a profile over max_batch_bytes first in its batch is dead-lettered but leaves an "
    "empty batch, which is uploaded: HTTP 400 'the file holds no records', exit 1",
)
def test_an_oversized_first_profile_leaves_no_empty_upload(
    emulator: Emulator, tmp_path: Path
) -> None:
    lines = [USERS, _record('{"id":0,"email":"' + "x" * 2000 + '"}')]
    assert _problems(emulator, tmp_path, lines, max_batch_bytes=1024) == []


@pytest.mark.xfail(
    strict=True,
    reason="an integer in a date-time property raises TypeError in the sink's date parser "
    "(only ValueError is caught): a traceback, exit 1, even with validate_records on",
)
def test_a_number_in_a_date_time_property_is_dead_lettered(
    emulator: Emulator, tmp_path: Path
) -> None:
    schema = USERS.replace(
        '"email":{"type":["string","null"]}', '"seen_at":{"type":"string","format":"date-time"}'
    )
    lines = [schema, _record('{"id":0,"seen_at":7}')]
    assert _problems(emulator, tmp_path, lines) == []


@pytest.mark.xfail(
    strict=True,
    reason="a job that fails past job_retries stops the run but leaves the next batch's file "
    "in batch_dir",
)
def test_a_run_stopped_by_a_failed_job_leaves_no_batch_file(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    # Shrunk: the schema changes before any record (a new sink), three one-row batches of
    # one id, the first job fails and may not be retried.
    lines = [
        USERS.replace('"email"', '"user_id":{"type":"integer"},"email"'),
        USERS,
        _record('{"id":0}'),
        _record('{"id":0,"email":null}'),
        _record('{"id":0}'),
    ]
    emulator = make_emulator(rows_per_minute=float("inf"))
    case = Case(
        lines=lines, settings={"max_batch_rows": 1, "job_retries": 0}, faults={"fail_jobs": 1}
    )
    assert check(case, InProcessRunner(emulator).run(case, tmp_path)) == []
