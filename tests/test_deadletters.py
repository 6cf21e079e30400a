"""Dead letters: what a user finds in the file, exactly as the tap sent it, or a clear failure."""

from __future__ import annotations

import datetime as dt
import json
import resource
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

from target_userpilot.profiles import Profile
from target_userpilot.run.deadletters import DeadLetterFileError, DeadLetters, InvalidRecordError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The file as the Singer reader would read it (Decimals for fractions)."""
    return [json.loads(line, parse_float=Decimal) for line in path.read_bytes().splitlines()]


def read_letters(path: Path) -> list[dict[str, Any]]:
    """The letters, without the runs' marker lines."""
    return [line for line in read_lines(path) if "stream" in line]


@pytest.mark.parametrize(
    ("record", "line_holds"),
    [
        pytest.param({"v": "k\ud800"}, b'"v":"k\\ud800"', id="lone-surrogate"),
        pytest.param({"v": Decimal("1e5000")}, b'"v":1E+5000', id="beyond-any-float"),
        pytest.param({"v": Decimal("1e999999999")}, b'"v":1E+999999999', id="huge-exponent"),
        pytest.param({"v": Decimal("0.1")}, b'"v":0.1', id="decimal-exact"),
        pytest.param(
            {"v": Decimal("12345678901234567890.123456789")},
            b'"v":12345678901234567890.123456789',
            id="decimal-beyond-float-precision",
        ),
        pytest.param({"v": float("nan")}, b'"v":NaN', id="nan-as-read"),
        pytest.param(
            {"v": dt.datetime(2025, 2, 1, 10, 20, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))},
            b'"v":"2025-02-01T10:20:30+02:00"',
            id="parsed-date-time-keeps-its-offset",
        ),
        pytest.param({"v": "ünï 🎉"}, '"v":"ünï 🎉"'.encode(), id="utf8-kept"),
    ],
)
def test_a_letter_holds_anything_the_reader_accepted(
    tmp_path: Path, record: dict[str, Any], line_holds: bytes
) -> None:
    path = tmp_path / "dl" / "letters.ndjson"
    letters = DeadLetters(path, "dead_letter")
    letters.report(stream="users", kind="users", position=3, reason="bad", record=record)
    letters.close()
    raw = path.read_bytes()
    assert line_holds in raw
    assert raw.endswith(b"\n")
    assert raw.count(b"\n") == 2, "the run's marker, then the letter"
    (letter,) = read_letters(path)
    assert letter["stream"] == "users"
    assert letter["position"] == 3
    assert letter["reason"] == "bad"
    assert letters.written == 1


def test_an_oversized_profile_letter_carries_its_id(tmp_path: Path) -> None:
    path = tmp_path / "letters.ndjson"
    letters = DeadLetters(path, "dead_letter")
    profile = Profile("u7", "c1", {"bio": "x" * 100, "score": Decimal("0.30000000000000000001")})
    letters.report(
        stream="users",
        kind="users",
        position=9,
        reason="too large",
        profile=profile.fields("users"),
    )
    letters.close()
    (letter,) = read_letters(path)
    assert letter["profile"] == {
        "user_id": "u7",
        "company_id": "c1",
        "metadata": {"bio": "x" * 100, "score": Decimal("0.30000000000000000001")},
    }


def test_letters_are_appended_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "letters.ndjson"
    path.write_text('{"earlier": true}\n')
    letters = DeadLetters(path, "dead_letter")
    letters.report(stream="s", kind="users", position=1, reason="r", record={"a": 1}, job_id="j")
    letters.close()
    first, marker, second = read_lines(path)
    assert first == {"earlier": True}
    assert marker == letters.run
    assert second["job_id"] == "j"
    assert second["record"] == {"a": 1}


def test_each_run_marks_its_letters_and_the_file_is_its_owners_alone(tmp_path: Path) -> None:
    path = tmp_path / "letters.ndjson"
    path.write_text("")
    path.chmod(0o644)  # as versions before 0600 left it
    runs = []
    for n in (1, 2):
        letters = DeadLetters(path, "dead_letter")
        for position in (n * 10, n * 10 + 1):
            letters.report(stream="s", kind="users", position=position, reason="r", record={})
        letters.close()
        runs.append(letters.run)
    assert runs[0]["run"] != runs[1]["run"]
    lines = read_lines(path)
    assert [line.get("run") or line["position"] for line in lines] == [
        runs[0]["run"],
        10,
        11,
        runs[1]["run"],
        20,
        21,
    ]
    assert set(runs[0]) == {"run", "started_at", "target_version"}
    assert runs[0]["target_version"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_new_file_is_its_owners_alone(tmp_path: Path) -> None:
    path = tmp_path / "new" / "letters.ndjson"
    letters = DeadLetters(path, "dead_letter")
    letters.report(stream="s", kind="users", position=1, reason="r", record={"email": "a@b.c"})
    letters.close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_no_file_without_a_letter(tmp_path: Path) -> None:
    letters = DeadLetters(tmp_path / "letters.ndjson", "dead_letter")
    letters.close()
    assert not (tmp_path / "letters.ndjson").exists()


def test_skip_counts_and_fail_raises(tmp_path: Path) -> None:
    skip = DeadLetters(tmp_path / "skip.ndjson", "skip")
    skip.report(stream="s", kind="users", position=1, reason="r", record={})
    assert (skip.skipped, skip.total, skip.path.exists()) == (1, 1, False)
    fail = DeadLetters(tmp_path / "fail.ndjson", "fail")
    with pytest.raises(InvalidRecordError, match="record 1,234 of stream 's' cannot be loaded: r"):
        fail.report(stream="s", kind="users", position=1234, reason="r", record={})


@pytest.fixture
def file_size_limit() -> Iterator[int]:
    """Writes past 4 KiB fail as on a full disk (EFBIG), for this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        yield 4096
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_full_disk_is_one_error_naming_the_setting(tmp_path: Path, file_size_limit: int) -> None:
    path = tmp_path / "letters.ndjson"
    letters = DeadLetters(path, "dead_letter")
    letters.report(stream="s", kind="users", position=1, reason="r", record={"x": "fits"})
    big = {"x": "y" * file_size_limit}
    with pytest.raises(DeadLetterFileError) as caught:
        letters.report(stream="s", kind="users", position=2, reason="r", record=big)
    assert str(caught.value) == (
        f"cannot write the dead-letter file {path} (setting `dead_letter_path`): File too large"
    )
    letters.close()


def test_a_dry_runs_letters_that_cannot_be_written_name_the_dry_run_setting(
    tmp_path: Path,
) -> None:
    (tmp_path / "taken").write_text("")
    path = tmp_path / "taken" / "dead-letters.ndjson"  # under a regular file
    letters = DeadLetters(path, "dead_letter", setting="dry_run_dir")
    with pytest.raises(DeadLetterFileError, match=r"\(setting `dry_run_dir`\)"):
        letters.report(stream="s", kind="users", position=1, reason="r", record={})
