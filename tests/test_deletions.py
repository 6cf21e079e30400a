"""Which records delete, the last word per id, chunks, the guard, the watermark deletions hold."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pytest
from singer_sdk.helpers.capabilities import TARGET_HARD_DELETE_CONFIG

from target_userpilot.run.deletions import (
    DEFAULT_MAX_DELETES,
    DELETE_CHUNK_IDS,
    DeleteLimit,
    DeletionChunk,
    DeletionGuardError,
    DeletionLedger,
    DeletionMarkError,
    Upsert,
    chunk_ids,
    is_deletion,
)
from target_userpilot.run.guardnote import GuardNote
from target_userpilot.settings import CONFIG_SCHEMA, Settings

STAMP = "2026-03-04T10:20:30Z"


# The mark table, the same for `_sdc_deleted_at` and `deleted_property`.
NOT_DELETED = [None, False, 0, 0.0, "false", "FALSE", " false ", "0", "no", "No", "", " "]
DELETED = [
    True,
    1,
    "true",
    "TRUE",
    "1",
    "yes",
    "Yes",
    STAMP,
    "2026-03-04",
    "2026-03-04T10:20:30.123456+02:00",
    dt.datetime(2026, 3, 4, tzinfo=dt.timezone.utc),
    dt.date(2026, 3, 4),
]
NEITHER = ["None", "null", "maybe", "deleted", 2, -1, 2.5, ["x"], {"at": STAMP}]
MARKS = ["_sdc_deleted_at", "is_deleted"]


@pytest.mark.parametrize("mark", MARKS)
@pytest.mark.parametrize(
    ("value", "deleted"), [(v, False) for v in NOT_DELETED] + [(v, True) for v in DELETED]
)
def test_one_mark_table_for_both_marks(
    mark: str,
    value: object,
    deleted: bool,  # noqa: FBT001 - a parameter of the table
) -> None:
    assert is_deletion({"id": "1", mark: value}, "is_deleted") is deleted


def test_an_absent_mark_is_not_a_deletion_and_either_mark_deletes() -> None:
    assert is_deletion({"id": "1"}, "is_deleted") is False
    assert is_deletion({"is_deleted": False, "_sdc_deleted_at": STAMP}, "is_deleted") is True
    assert is_deletion({"is_deleted": "yes", "_sdc_deleted_at": None}, "is_deleted") is True


def test_without_deleted_property_only_sdc_deleted_at_counts() -> None:
    assert is_deletion({"is_deleted": True}, None) is False
    assert is_deletion({"_sdc_deleted_at": STAMP}, None) is True


@pytest.mark.parametrize(
    ("mark", "named"),
    [("is_deleted", r"`deleted_property` 'is_deleted'"), ("_sdc_deleted_at", "`_sdc_deleted_at`")],
)
@pytest.mark.parametrize("value", NEITHER)
def test_a_mark_neither_yes_nor_no_is_an_error_naming_the_property(
    mark: str, named: str, value: object
) -> None:
    with pytest.raises(DeletionMarkError, match=named):
        is_deletion({mark: value}, "is_deleted")


def test_an_unreadable_mark_wins_over_a_deleting_one() -> None:
    with pytest.raises(DeletionMarkError):
        is_deletion({"is_deleted": "None", "_sdc_deleted_at": STAMP}, "is_deleted")


@pytest.mark.parametrize(
    ("value", "limit"),
    [
        (1000, DeleteLimit(count=1000)),
        ("1000", DeleteLimit(count=1000)),
        (0, DeleteLimit(count=0)),
        ("10%", DeleteLimit(share=0.1)),
        (" 100% ", DeleteLimit(share=1.0)),
        ("0.5%", DeleteLimit(share=0.005)),
    ],
)
def test_the_limit_is_a_count_or_a_share(value: object, limit: DeleteLimit) -> None:
    assert DeleteLimit.parse(value) == limit


@pytest.mark.parametrize("value", [-1, "ten", "150%", "%", True, 1.5, None, "-5%"])
def test_a_bad_limit_names_the_setting(value: object) -> None:
    with pytest.raises(ValueError, match="max_deletes_per_run"):
        DeleteLimit.parse(value)


def test_a_share_stops_only_runs_deleting_more_than_the_floor() -> None:
    default = DeleteLimit.parse(DEFAULT_MAX_DELETES)
    assert default.allows(deletions=1, records=1)  # a small CDC run with one delete
    assert default.allows(deletions=100, records=100)
    assert not default.allows(deletions=101, records=101)  # every record a deletion
    assert default.allows(deletions=500, records=5000)
    assert not default.allows(deletions=501, records=5000)
    assert DeleteLimit(count=3).allows(3, 3)
    assert not DeleteLimit(count=3).allows(4, 1_000_000)
    assert str(default) == "10%"
    assert str(DeleteLimit(count=25_000)) == "25,000"


def test_ids_are_cut_into_bounded_requests_in_order() -> None:
    ids = [f"user-{i}" for i in range(2 * DELETE_CHUNK_IDS + 500)]
    chunks = chunk_ids("users", ids)
    assert [len(c) for c in chunks] == [DELETE_CHUNK_IDS, DELETE_CHUNK_IDS, 500]
    assert [i for c in chunks for i in c] == ids


def test_chunks_stay_under_the_byte_bound_and_a_huge_id_goes_alone() -> None:
    ids = ["é" * 50 + str(i) for i in range(100)]
    chunks = chunk_ids("companies", ids, max_bytes=1000)
    assert len(chunks) > 1
    for chunk in chunks:
        assert len(json.dumps({"companies": chunk}).encode()) <= 1000
    assert chunk_ids("users", ["a", "x" * 5000, "b"], max_bytes=1000) == [
        ["a"],
        ["x" * 5000],
        ["b"],
    ]


def test_a_later_record_cancels_a_deletion_not_sent_yet() -> None:
    ledger = DeletionLedger()
    ledger.delete("users", "u1", seq=1)
    assert ledger.upsert("users", "u1") is Upsert.CANCELLED
    assert ledger.seal(DeleteLimit(count=10)) == []
    assert ledger.counts("users").cancelled == 1


def test_a_deletion_after_an_upsert_wins_and_keeps_its_first_seq() -> None:
    ledger = DeletionLedger()
    assert ledger.upsert("users", "u1") is Upsert.PLAIN
    ledger.delete("users", "u1", seq=2)
    ledger.delete("users", "u1", seq=5)  # repeated: one id, the smallest seq holds STATE
    ledger.delete("companies", "c1", seq=3)
    chunks = ledger.seal(DeleteLimit(count=10))
    assert chunks == [DeletionChunk("users", ("u1",), 2), DeletionChunk("companies", ("c1",), 3)]
    assert chunks[0].body() == {"users": ["u1"]}


def test_delete_recreate_delete_ends_deleted_from_the_last_deletion() -> None:
    ledger = DeletionLedger()
    ledger.delete("users", "u1", seq=1)
    ledger.upsert("users", "u1")
    ledger.delete("users", "u1", seq=3)
    assert ledger.seal(DeleteLimit(count=10)) == [DeletionChunk("users", ("u1",), 3)]


def test_a_re_create_after_the_deletion_was_sent_is_too_late() -> None:
    ledger = DeletionLedger()
    ledger.delete("users", "u1", seq=1)
    (chunk,) = ledger.seal(DeleteLimit(count=10))
    ledger.accepted(chunk)
    assert ledger.upsert("users", "u1") is Upsert.TOO_LATE
    assert ledger.counts("users").cancelled == 0
    ledger.delete("users", "u1", seq=9)  # deleted again: the last word is delete, as sent
    assert ledger.seal(DeleteLimit(count=10)) == []  # already scheduled in Userpilot


def test_deletions_hold_the_watermark_until_accepted() -> None:
    ledger = DeletionLedger()
    assert ledger.watermark() == math.inf
    ledger.delete("companies", "c1", seq=7)
    ledger.delete("users", "u1", seq=4)
    assert ledger.watermark() == 4
    users, companies = ledger.seal(DeleteLimit(count=10))
    assert ledger.watermark() == 4
    ledger.accepted(users)
    assert ledger.watermark() == 7
    ledger.accepted(companies)
    assert ledger.watermark() == math.inf
    assert ledger.counts("users").accepted == 1
    assert ledger.counts("companies").sent == 1


def test_the_guard_stops_a_run_deleting_too_much_and_seals_nothing() -> None:
    ledger = DeletionLedger()
    for seq in range(150):
        ledger.delete("users", f"person-{seq}@example.com", seq)
    for seq in range(150, 160):
        ledger.upsert("users", f"other-{seq}")
    with pytest.raises(DeletionGuardError) as caught:
        ledger.seal(DeleteLimit.parse(DEFAULT_MAX_DELETES))
    message = str(caught.value)
    assert "150 profiles (150 users, 0 companies) out of 160 records," in message
    assert "`max_deletes_per_run` (10%)" in message
    assert "No deletion was sent" in message
    assert "example.com" not in message
    assert ledger.counts("users").pending == 150
    assert ledger.watermark() == 0
    assert len(ledger.seal(DeleteLimit(count=150))) == 1


def test_the_guard_counts_deletions_already_sent_in_the_run() -> None:
    ledger = DeletionLedger()
    ledger.delete("users", "u1", seq=1)
    ledger.seal(DeleteLimit(count=2))
    ledger.delete("users", "u2", seq=2)
    ledger.delete("companies", "c1", seq=3)
    with pytest.raises(DeletionGuardError, match="3 profiles"):
        ledger.check(DeleteLimit(count=2))


def _config(**overrides: object) -> dict[str, object]:
    defaults = {k: v["default"] for k, v in CONFIG_SCHEMA["properties"].items() if "default" in v}
    return {**defaults, "api_key": "k", **overrides}


def test_deletion_settings_default_to_off_and_a_ten_percent_guard() -> None:
    settings = Settings.from_config(_config())
    assert settings.hard_delete is False
    assert settings.deleted_property is None
    assert settings.max_deletes_per_run == DeleteLimit(share=0.1)


def test_deletion_settings_read_env_strings_and_name_a_bad_value() -> None:
    settings = Settings.from_config(
        _config(hard_delete=True, deleted_property="is_deleted", max_deletes_per_run="2500")
    )
    assert (settings.hard_delete, settings.deleted_property) == (True, "is_deleted")
    assert settings.max_deletes_per_run == DeleteLimit(count=2500)
    with pytest.raises(ValueError, match="`max_deletes_per_run` must be"):
        Settings.from_config(_config(max_deletes_per_run="lots"))


def test_hard_delete_is_declared_as_the_sdk_declares_its_built_in() -> None:
    ours = CONFIG_SCHEMA["properties"]["hard_delete"]
    sdks = TARGET_HARD_DELETE_CONFIG["properties"]["hard_delete"]
    assert (ours["type"], ours["default"]) == (sdks["type"], sdks["default"])


def test_chunks_go_in_record_order_across_kinds() -> None:
    ledger = DeletionLedger()
    ledger.delete("companies", "c1", seq=1)
    ledger.delete("users", "u1", seq=2)
    ledger.delete("companies", "c2", seq=3)
    chunks = ledger.seal(DeleteLimit(count=10), max_ids=1)
    assert [(c.kind, c.ids, c.min_seq) for c in chunks] == [
        ("companies", ("c1",), 1),
        ("users", ("u1",), 2),
        ("companies", ("c2",), 3),
    ]
    ledger.accepted(chunks[0])
    assert ledger.watermark() == 2  # STATE may now cover record 1


def test_the_guard_counts_an_unfinished_runs_allowance_as_allowed() -> None:
    ledger = DeletionLedger()
    for seq in range(500):
        ledger.delete("users", f"u{seq}", seq)
    with pytest.raises(DeletionGuardError, match="beside the 300 an unfinished earlier run"):
        ledger.check(DeleteLimit(share=0.1), carried=300)
    ledger.check(DeleteLimit(share=0.1), carried=1_500)


def test_the_guard_note_carries_the_allowed_ids_until_cleared(tmp_path: Path) -> None:
    note = GuardNote(tmp_path / "batches", "analytex.userpilot.io:abc")
    resume = {"users": [f"u{i}" for i in range(1_000, 2_000)], "companies": ["c1"]}
    assert note.carried(resume) == 0
    note.allow({"users": [f"u{i}" for i in range(1_500)], "companies": ["c1", "c2"]})
    # The resume's deletions that the killed run was allowed: u1000..u1499 and c1.
    assert GuardNote(tmp_path / "batches", "analytex.userpilot.io:abc").carried(resume) == 501
    note.clear()
    assert note.carried(resume) == 0
    note.path.write_text("{not json")
    assert note.carried(resume) == 0  # unreadable: the run is judged alone


def test_the_guard_note_lends_nothing_to_other_profiles_or_another_account(
    tmp_path: Path,
) -> None:
    GuardNote(tmp_path, "analytex.userpilot.io:abc").allow({"users": ["u1", "u2", "u3"]})
    other_ids = {"users": ["x1", "x2", "x3"], "companies": ["u1"]}
    assert GuardNote(tmp_path, "analytex.userpilot.io:abc").carried(other_ids) == 0
    same_ids = {"users": ["u1", "u2", "u3"]}
    assert GuardNote(tmp_path, "analytex.userpilot.io:def").carried(same_ids) == 0
    assert GuardNote(tmp_path, "analytex.userpilot.io:abc").carried(same_ids) == 3


def test_the_guard_note_holds_no_id_in_clear(tmp_path: Path) -> None:
    note = GuardNote(tmp_path, "analytex.userpilot.io:abc")
    note.allow({"users": ["grace@example.com"]})
    assert "grace" not in note.path.read_text()
