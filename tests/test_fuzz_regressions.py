"""Failures the fuzzer found, each as its shrunk example, checked against the same invariant.

An example marked `xfail(strict=True)` fails on today's code for a bug another change is
fixing; once the fix lands it passes, strict xfail turns that into a failure, and the lead
removes the mark (and turns the matching switch in `fuzz.strategies.KNOWN_BUGS_OFF` back on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from fuzz.oracle import check
from fuzz.runner import InProcessRunner
from fuzz.strategies import Case

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from target_userpilot.emulator import Emulator

USERS = (
    '{"type":"SCHEMA","stream":"users","schema":{"type":"object","properties":'
    '{"id":{"type":"integer"},"email":{"type":["string","null"]},'
    '"plan":{"type":["number","null"]}}},"key_properties":["id"]}'
)


def _record(body: str) -> str:
    return '{"type":"RECORD","stream":"users","record":' + body + "}"


SHRUNK: list[Any] = [
    pytest.param(
        # The email property is declared integer, so the record is invalid and dead-lettered
        # with its string value "\ud800".
        [
            USERS.replace('"email":{"type":["string","null"]}', '"email":{"type":"integer"}'),
            _record('{"id":0,"email":"\\ud800"}'),
        ],
        {},
        {},
        id="lone-surrogate-in-a-dead-letter",
    ),
    pytest.param(
        [USERS, _record('{"id":0,"plan":1E+5000}')],
        {},
        {},
        id="number-beyond-float-range",
    ),
    pytest.param(
        [USERS, _record('{"email":null}')],
        {"on_invalid_record": "fail"},
        {},
        id="missing-key-property-under-fail",
    ),
    pytest.param(
        [USERS, _record('{"id":0,"email":"' + "x" * 2000 + '"}')],
        # `max_invalid_percent: 100`: a one-record stream must not stop for being all invalid.
        {"max_batch_bytes": 1024, "max_invalid_percent": 100},
        {},
        id="oversized-first-profile",
    ),
    pytest.param(
        [
            USERS.replace(
                '"email":{"type":["string","null"]}',
                '"seen_at":{"type":"string","format":"date-time"}',
            ),
            _record('{"id":0,"seen_at":7}'),
        ],
        {},
        {},
        id="number-in-a-date-time",
    ),
    pytest.param(
        # The schema changes before any record (a new sink), three one-row batches of one id;
        # the first job fails and may not be retried.
        [
            USERS.replace('"email"', '"user_id":{"type":"integer"},"email"'),
            USERS,
            _record('{"id":0}'),
            _record('{"id":0,"email":null}'),
            _record('{"id":0}'),
        ],
        {"max_batch_rows": 1, "job_retries": 0},
        {"fail_jobs": 1},
        id="failed-job-leaves-a-batch-file",
    ),
    pytest.param(
        # Shrunk from a nightly find: one-row batches; Userpilot rejects user "1" in the first
        # completed job, which stops the run under `fail`.
        [USERS, _record('{"id":1}'), _record('{"id":2}'), _record('{"id":3}')],
        {"on_invalid_record": "fail", "max_batch_rows": 1},
        {"reject_ids": frozenset({"1"})},
        id="rejected-row-under-fail-leaves-a-batch-file",
    ),
    pytest.param(
        # Found by CI's profile on a clean clone: a lone surrogate in a nested key that is sent.
        [
            USERS.replace(
                '"email":{"type":["string","null"]}', '"email":{"type":["object","null"]}'
            ),
            _record('{"id":0,"email":{"email":[{"\\ud800":null}]}}'),
        ],
        {},
        {},
        id="lone-surrogate-in-a-sent-nested-key",
    ),
]


def test_a_fingerprint_store_gone_mid_run_is_one_error_line(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    # Found by the suite's store road: the SQLite database failing while a completed job's
    # fingerprints were written escaped as a traceback (`sqlite3.OperationalError`).
    lines = [USERS, _record('{"id":1}'), '{"type":"STATE","value":{"n":1}}', _record('{"id":2}')]
    settings = {"send_only_changes": True, "max_batch_rows": 1}
    case = Case(lines=lines, settings=settings, road="store gone mid-run", store_gone_after=2)
    outcome = InProcessRunner(make_emulator()).run(case, tmp_path)
    assert check(case, outcome) == []
    assert outcome.exit_code == 1
    assert "fingerprint_store_path" in outcome.errors[0]


@pytest.mark.parametrize(("lines", "settings", "faults"), SHRUNK)
def test_a_shrunk_fuzz_find_keeps_every_record_accounted_for(
    make_emulator: Callable[..., Emulator],
    tmp_path: Path,
    lines: list[str],
    settings: dict[str, Any],
    faults: dict[str, Any],
) -> None:
    case = Case(lines=lines, settings=settings, faults=faults)
    outcome = InProcessRunner(make_emulator()).run(case, tmp_path)
    assert check(case, outcome) == []
