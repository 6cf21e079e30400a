"""The fast per-record path gives exactly what the SDK's full path gives, and steps aside for
stream maps, flattening and record metadata.

Each run is the real target in-process over Singer lines, in a dry run: the profile lines it
would send and the dead letters it writes are what a user sees.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

import pytest
from singer_io import dead_letters, dry_run_output

from target_userpilot.run.deadletters import DRY_RUN_LETTERS
from target_userpilot.singer.fastpath import RecordFastPath
from target_userpilot.singer.sinks import ProfileSink
from target_userpilot.target import TargetUserpilot

if TYPE_CHECKING:
    from pathlib import Path

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": ["string", "null"]},
        "seen_at": {"type": ["string", "null"], "format": "date-time"},
        "score": {"type": ["number", "null"]},
        "address": {
            "type": ["object", "null"],
            "properties": {"city": {"type": "string"}, "geo": {"type": "object"}},
        },
    },
}
RECORDS = [
    '{"id": 1, "email": "a@example.com", "seen_at": "2025-02-01T10:20:30Z", "score": 1.10}',
    '{"id": 2, "seen_at": "2025-02-01T10:20:30+02:00", "score": 0.1000000000000000055511151231}',
    '{"id": 3, "address": {"city": "Lyon", "geo": {"lat": 45.76}}}',
    '{"id": 4, "_sdc_extracted_at": "2025-01-01T00:00:00Z", "_sdc_sequence": 7}',
    '{"id": 5, "extra": "not in the schema"}',
    '{"id": "six"}',
    '{"id": 7, "seen_at": "not a date"}',
    '{"email": "no-id@example.com"}',
    '{"id": 9, "score": NaN}',
    '{"id": 1, "email": "a-later@example.com"}',
]


def singer_lines(stream: str = "users") -> str:
    lines = [
        json.dumps({"type": "SCHEMA", "stream": stream, "schema": SCHEMA, "key_properties": ["id"]})
    ]
    lines += [f'{{"type": "RECORD", "stream": "{stream}", "record": {raw}}}' for raw in RECORDS]
    lines.append(json.dumps({"type": "STATE", "value": {"done": True}}))
    return "\n".join(lines) + "\n"


def dry_run(tmp_path: Path, name: str, text: str, **settings: Any) -> tuple[list[str], list[Any]]:
    """The profile lines a dry run writes, and its dead letters without their timestamps."""
    out = tmp_path / name
    config = {
        "api_key": "k",
        "dry_run": True,
        "dry_run_dir": str(out / "dry"),
        "batch_dir": str(out / "batches"),
        "dead_letter_path": str(out / "dead.ndjson"),
        **settings,
    }
    TargetUserpilot(config=config).listen(io.StringIO(text))
    lines = [
        line
        for path in sorted(dry_run_output(out / "dry").glob("userpilot-*"))
        for line in path.read_text().splitlines()
    ]
    dead_path = dry_run_output(out / "dry") / DRY_RUN_LETTERS  # beside the dry run's files
    letters = dead_letters(dead_path) if dead_path.exists() else []
    for letter in letters:
        del letter["at"]
    return lines, letters


def without_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RecordFastPath, "handle", lambda _self, _message: False)


def test_plain_streams_load_exactly_as_through_the_sdk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = dry_run(tmp_path, "fast", singer_lines())
    without_fast_path(monkeypatch)
    full = dry_run(tmp_path, "full", singer_lines())

    assert fast == full
    lines, letters = fast
    by_id = {json.loads(line)["user_id"]: line for line in lines}
    assert by_id["1"] == (
        '{"user_id":"1","metadata":{"email":"a-later@example.com",'
        '"seen_at":"2025-02-01T10:20:30Z","score":1.1}}'
    )
    assert '"score":0.1000000000000000055511151231}' in by_id["2"]
    assert '"address__geo__lat":45.76' in by_id["3"]
    assert by_id["4"] == '{"user_id":"4","metadata":{}}', "the SDK's `_sdc_` keys are stripped"
    assert '"extra":"not in the schema"' in by_id["5"]
    assert [letter["position"] for letter in letters] == [6, 7, 8, 9]


@pytest.mark.parametrize(
    ("settings", "sign"),
    [
        ({"flattening_enabled": True, "flattening_max_depth": 1}, '"address__geo":"{'),
        ({"stream_maps": {"users": {"source": "'tap'"}}}, '"source":"tap"'),
    ],
    ids=["flattening", "a stream map"],
)
def test_maps_and_flattening_take_the_sdk_path(
    tmp_path: Path, settings: dict[str, Any], sign: str
) -> None:
    lines, _ = dry_run(tmp_path, "run", singer_lines(), default_kind="users", **settings)

    assert any(sign in line for line in lines)


def test_record_metadata_takes_the_sdk_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With `add_record_metadata` the SDK adds `_sdc_` properties to each record (what becomes of
    # them is the sink's business): every record goes the SDK's way for that.
    taken: list[bool] = []
    handle = RecordFastPath.handle

    def spy(path: RecordFastPath, message: dict[str, Any]) -> bool:
        taken.append(handle(path, message))
        return taken[-1]

    monkeypatch.setattr(RecordFastPath, "handle", spy)
    dry_run(tmp_path, "plain", singer_lines())
    assert taken == [True] * len(RECORDS)
    taken.clear()
    dry_run(tmp_path, "metadata", singer_lines(), add_record_metadata=True)
    assert taken == [False] * len(RECORDS)


def test_a_sink_hook_on_each_record_runs_on_the_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK's `preprocess_record` hook, if the sink defines one, sees every record.
    def tag(_sink: ProfileSink, record: dict[str, Any], _context: dict[str, Any]) -> dict[str, Any]:
        return {**record, "seen": True}

    monkeypatch.setattr(ProfileSink, "preprocess_record", tag)
    lines, _ = dry_run(tmp_path, "fast", singer_lines())

    assert lines
    assert all('"seen":true' in line for line in lines)


def test_a_full_sink_is_drained_after_the_record_as_the_sdk_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sink that says it is full after every record: each record is its own drain, so a dry
    # run writes one file per profile, on either path.
    monkeypatch.setattr(ProfileSink, "is_full", property(lambda sink: sink.current_size >= 1))
    fast_lines, _ = dry_run(tmp_path, "fast", singer_lines())
    files = len(list(dry_run_output(tmp_path / "fast" / "dry").glob("userpilot-*")))
    without_fast_path(monkeypatch)
    full_lines, _ = dry_run(tmp_path, "full", singer_lines())

    assert files == len(list(dry_run_output(tmp_path / "full" / "dry").glob("userpilot-*"))) == 6
    assert sorted(fast_lines) == sorted(full_lines)
