"""Generated events streams, with users, through the whole target: docs/events.md's rules hold.

Each case is a users stream and an events stream interleaved, with STATEs, odd user ids and
names, hostile metadata texts, keyed or not, with or without `send_only_changes` and a fixed
name, sometimes a dry run. Checked per run: every valid event arrives once (once per identity
with `send_only_changes`), each invalid one is a dead letter, no event precedes a user of the
same run that came before it, each STATE follows the events before it; and a rerun with
`send_only_changes` sends none again. Events are paced in real time (600 a minute at most), so
cases hold a few events and the profile runs a fiftieth as many examples as `test_fuzz.py`.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fuzz.runner import DRY_RUN_DIR, InProcessRunner
from fuzz.strategies import Case, active_switches, encode, texts
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fuzz import IN_PROCESS, TIMEOUT

from target_userpilot.emulator import EmulatorConfig, serve

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fuzz.runner import Outcome

    from target_userpilot.emulator import Emulator

EXAMPLES = settings(IN_PROCESS, max_examples=max(10, IN_PROCESS.max_examples // 50))
MISSING = object()
USERS = ("u1", "u2", "u3")
_USER_IDS = st.one_of(st.sampled_from((*USERS, "ghost", 7)), st.sampled_from((None, "", " ")))
_NAMES = st.one_of(
    st.sampled_from(("paid", "seat added", 42)), st.sampled_from((None, "", MISSING))
)


@st.composite
def event_cases(draw: st.DrawFn) -> Case:
    """A users stream and an events stream, interleaved, with STATEs and drawn settings."""
    keyed = draw(st.booleans())
    any_value: dict[str, Any] = {}
    events = {"event_id": {"type": "string"}, "user_id": any_value, "event_name": any_value}
    lines: list[Any] = [
        {
            "type": "SCHEMA",
            "stream": "users",
            "schema": {"type": "object", "properties": {"id": {"type": "string"}}},
            "key_properties": ["id"],
        },
        {
            "type": "SCHEMA",
            "stream": "events",
            "schema": {"type": "object", "properties": {**events, "note": any_value}},
            "key_properties": ["event_id"] if keyed else [],
        },
    ]
    for position in range(1, draw(st.integers(1, 8)) + 1):
        if draw(st.integers(0, 2)) == 0:
            lines.append(
                {
                    "type": "RECORD",
                    "stream": "users",
                    "record": {"id": draw(st.sampled_from(USERS))},
                }
            )
        else:
            record: dict[str, Any] = {"event_id": draw(st.sampled_from(("e1", "e2", "e3")))}
            user_id = draw(_USER_IDS)
            if user_id is not None or draw(st.booleans()):
                record["user_id"] = user_id
            name = draw(_NAMES)
            if name is not MISSING:
                record["event_name"] = name
            if draw(st.booleans()):
                record["note"] = draw(texts(active_switches()))
            lines.append({"type": "RECORD", "stream": "events", "record": record})
        if draw(st.booleans()):
            lines.append({"type": "STATE", "value": {"records": position}})
    chosen: dict[str, Any] = {
        "track_requests_per_minute": 600,
        "max_invalid_percent": 100,  # the main fuzz judges that rule; here all may be invalid
        "send_only_changes": draw(st.booleans()),
        "on_invalid_record": draw(st.sampled_from(("dead_letter", "skip"))),
        "dry_run": draw(st.integers(0, 9)) == 0,
    }
    if draw(st.booleans()):
        chosen["event_names"] = {"events": "fixed"}
    return Case(lines=[encode(m) for m in lines], settings=chosen)


def _valid_id(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value)
    return text if text.strip() else None


def expected_events(case: Case) -> tuple[list[tuple[int, str, str, bool]], int]:
    """(position, user id, name, user came earlier in the run) of each event sent; invalid count."""
    fixed = case.settings.get("event_names", {}).get("events")
    once = case.settings.get("send_only_changes") and not case.settings.get("dry_run")
    keyed = json.loads(case.lines[1])["key_properties"] == ["event_id"]
    sent: list[tuple[int, str, str, bool]] = []
    seen: set[str] = set()
    users: set[str] = set()
    invalid = position = 0
    for line in case.lines:
        message = json.loads(line)
        if message["type"] != "RECORD":
            continue
        position += 1
        record = message["record"]
        if message["stream"] == "users":
            users.add(record["id"])
            continue
        user_id = _valid_id(record.get("user_id"))
        name = fixed or _valid_id(record.get("event_name"))
        if user_id is None or name is None:
            invalid += 1
            continue
        identity = record["event_id"] if keyed else line
        if once and identity in seen:
            continue
        seen.add(identity)
        sent.append((position, user_id, name, user_id in users))
    return sent, invalid


@pytest.fixture(scope="module")
def runner() -> Iterator[InProcessRunner]:
    with serve(EmulatorConfig(rows_per_minute=float("inf")), port=0) as emu:
        yield InProcessRunner(emu)


def _arrived(emu: Emulator, before: int) -> list[dict[str, Any]]:
    return list(emu.events["events"][before:])


def _check(case: Case, outcome: Outcome, arrived: list[dict[str, Any]], work: Path) -> None:
    assert outcome.crash is None, outcome.crash
    assert outcome.exit_code == 0, outcome.log[-2000:]
    sent, invalid = expected_events(case)
    want = Counter((user_id, name) for _, user_id, name, _ in sent)
    if case.settings["dry_run"]:
        path = work / DRY_RUN_DIR / "track-events.ndjson"
        bodies = [json.loads(b) for b in path.read_text().splitlines()] if path.exists() else []
        got = Counter((b["user_id"], b["event_name"]) for b in bodies)
        assert not arrived, "a dry run sent events"
    else:
        got = Counter((e["user_id"], e["event_name"]) for e in arrived)
    assert got == want
    letters = [d for d in outcome.dead_letters if d.get("kind") == "events"]
    assert len(letters) == (invalid if case.settings["on_invalid_record"] == "dead_letter" else 0)
    if arrived:  # in record order: one thread sends them, one at a time
        assert [(e["user_id"], e["event_name"]) for e in arrived] == [(u, n) for _, u, n, _ in sent]
        for event, (_, _, _, earlier) in zip(arrived, sent, strict=True):
            assert event["user_existed"] or not earlier, "an event came before its user"


def _check_states(case: Case, seen_counts: list[tuple[int, int]]) -> None:
    sent, _ = expected_events(case)
    for records, arrived in seen_counts:
        due = sum(1 for position, *_ in sent if position <= records)
        assert arrived >= due, f"STATE after {records} records came before its events"


@TIMEOUT
@given(case=event_cases())
@EXAMPLES
def test_events_streams_arrive_once_after_their_users(runner: InProcessRunner, case: Case) -> None:
    emu = runner.emu
    counts: list[tuple[int, int]] = []
    with (
        tempfile.TemporaryDirectory(prefix="fuzz-events-") as work,
        tempfile.TemporaryDirectory(prefix="fuzz-events-again-") as again,
    ):
        before = emu.events["count"]
        outcome = runner.run(case, Path(work))
        arrived = _arrived(emu, before)
        _check(case, outcome, arrived, Path(work))
        for state in outcome.states:
            records = json.loads(state.line)["records"]
            assert state.events is not None
            counts.append((records, state.events - before))
        _check_states(case, counts)
        if case.settings["send_only_changes"] and not case.settings["dry_run"]:
            before = emu.events["count"]
            rerun = runner.run(case, Path(again), again_after=Path(work))
            assert rerun.exit_code == 0, rerun.log[-2000:]
            assert _arrived(emu, before) == [], "a rerun sent an event again"
