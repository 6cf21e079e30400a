"""The owner of a run's state, in-process against a fake Userpilot.

The changes-only suite through the real CLI, on both stores, is test_send_only_changes.py.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from typing import TYPE_CHECKING, Any, get_args
from unittest import mock

import pytest
from fake_userpilot import FakeClient, FakeDeleter, MemoryStore, settings_for

from target_userpilot.fingerprints import FingerprintStoreError
from target_userpilot.profiles import Profile
from target_userpilot.run.deadletters import DeadLetterFileError, InvalidRecordError
from target_userpilot.run.deletions import DeletionGuardError
from target_userpilot.run.event_worker import EventOutcome
from target_userpilot.run.jobs import JobFailedError, Outcome
from target_userpilot.run.pipeline import Pipeline
from target_userpilot.run.rejections import TooManyInvalidError
from target_userpilot.wire.errors import DeletionRefusedError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path


def pipeline_for(
    tmp_path: Path,
    client: FakeClient,
    states: list[dict[str, Any]],
    store: MemoryStore | None = None,
    deleter: FakeDeleter | None = None,
    **config: Any,
) -> Pipeline:
    pipeline = Pipeline(
        settings_for(tmp_path, **config),
        client=client,  # type: ignore[arg-type]
        emit_state=states.append,
        logger=logging.getLogger("test-pipeline"),
        fingerprints=store,
        deleter=deleter,
    )
    pipeline.start()
    return pipeline


def feed(pipeline: Pipeline, rng: random.Random, count: int) -> dict[str, int]:
    """`count` records of a few ids with values that change and revert; the last value of each."""
    last: dict[str, int] = {}
    for _ in range(count):
        position = pipeline.next_position()
        pid, value = str(rng.randint(1, 8)), rng.randint(0, 2)
        pipeline.add("users", "users", position, Profile(pid, None, {"v": value}))
        last[pid] = value
        if rng.random() < 0.2:
            pipeline.add_state({"at": position})
    return last


@pytest.mark.parametrize("seed", range(200))
def test_stress_changes_only_413_splits_failing_jobs_tiny_batches(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)  # noqa: S311 - a test's choices, not a secret
    client = FakeClient(max_rows=rng.choice([1, 2, 3]), fail_every=rng.choice([0, 3, 5]))
    store = MemoryStore()
    for run in range(2):  # the second run finds most profiles unchanged
        states: list[dict[str, Any]] = []
        pipeline = pipeline_for(
            tmp_path, client, states, store, max_batch_rows=rng.randint(1, 6), job_retries=2
        )
        try:
            last = feed(pipeline, rng, 40)
            pipeline.add_state({"at": "end", "run": run})
            pipeline.finish()
        finally:
            pipeline.close()
        assert states[-1] == {"at": "end", "run": run}
        for pid, value in last.items():
            assert client.profiles["users", pid]["v"] == value, f"id {pid} holds a stale value"
        assert list((tmp_path / "batches").iterdir()) == []


def test_a_profile_too_large_for_any_batch_is_dead_lettered_and_state_goes_out(
    tmp_path: Path,
) -> None:
    client = FakeClient()
    states: list[dict[str, Any]] = []
    pipeline = pipeline_for(tmp_path, client, states, max_batch_bytes=1024)
    huge = Profile("1", None, {"blob": "x" * 2000})
    pipeline.add("users", "users", pipeline.next_position(), huge)
    pipeline.add_state({"n": 1})
    assert list((tmp_path / "batches").glob("*/*.ndjson")) == [], "no batch opened for it"
    for n in (2, 3):
        pipeline.add("users", "users", pipeline.next_position(), Profile(str(n), None, {}))
    pipeline.add_state({"n": 3})
    pipeline.finish()
    pipeline.close()
    assert client.uploads == 1, "one batch, never an empty one"
    assert states == [{"n": 1}, {"n": 3}]
    assert pipeline.counters.invalid == 1


def test_a_merge_that_would_overflow_ships_the_batch_and_starts_the_next(tmp_path: Path) -> None:
    client = FakeClient()
    states: list[dict[str, Any]] = []
    pipeline = pipeline_for(tmp_path, client, states, max_batch_bytes=1024)
    pipeline.add("users", "users", pipeline.next_position(), Profile("1", None, {"a": "x" * 600}))
    pipeline.add("users", "users", pipeline.next_position(), Profile("1", None, {"b": "y" * 600}))
    pipeline.add_state({"n": 2})
    pipeline.finish()
    pipeline.close()
    assert pipeline.counters.invalid == 0
    assert client.jobs == 2
    assert client.profiles["users", "1"] == {"a": "x" * 600, "b": "y" * 600}
    assert states == [{"n": 2}]


def test_rows_rejected_without_detail_are_not_fingerprinted(tmp_path: Path) -> None:
    client, store = FakeClient(unnamed_errors=1), MemoryStore()
    states: list[dict[str, Any]] = []
    pipeline = pipeline_for(tmp_path, client, states, store)
    for n in range(3):
        pipeline.add("users", "users", pipeline.next_position(), Profile(str(n), None, {}))
    pipeline.finish()
    pipeline.close()
    assert client.jobs == 1
    assert store.digests == {}, "the rejected rows are sent again next run"


def test_the_lag_flush_runs_on_the_input_timer(tmp_path: Path) -> None:
    client = FakeClient()
    states: list[dict[str, Any]] = []
    pipeline = pipeline_for(tmp_path, client, states, max_checkpoint_lag_minutes=0.001)
    pipeline.add("users", "users", pipeline.next_position(), Profile("1", None, {}))
    pipeline.add_state({"n": 1})
    deadline = time.monotonic() + 10
    while not states and time.monotonic() < deadline:
        time.sleep(0.05)
        pipeline.tick()  # what the input timer does while the tap is silent
    pipeline.close()
    assert states == [{"n": 1}]
    assert client.jobs == 1, "the half-full batch was shipped early"


def test_invalid_records_past_the_share_stop_before_state_passes_them(tmp_path: Path) -> None:
    client = FakeClient()
    states: list[dict[str, Any]] = []
    pipeline = pipeline_for(tmp_path, client, states)
    for n in range(99):
        position = pipeline.next_position()
        pipeline.add_state({"n": n})
        pipeline.reject("users", "users", position, "no id", {"n": n})
    position = pipeline.next_position()
    with pytest.raises(TooManyInvalidError, match=r"stream 'users'.*`max_invalid_percent`"):
        pipeline.reject("users", "users", position, "no id", {"n": 100})
    pipeline.close()
    assert states == [{"n": 0}], "nothing past the first invalid record"


# --- deletions (`hard_delete`) ------------------------------------------------------------


def delete_then_state(pipeline: Pipeline, ids: range) -> None:
    """A deletion record per id, each followed by a STATE naming it."""
    for n in ids:
        pipeline.delete("users", "users", pipeline.next_position(), f"d{n}")
        pipeline.add_state({"n": n})


def test_state_passes_each_deletion_chunk_only_after_its_202(tmp_path: Path) -> None:
    store = MemoryStore()
    states: list[dict[str, Any]] = []
    store.digests.update({("users", "d1"): b"x", ("users", "d2500"): b"y", ("users", "u"): b"z"})
    seen_at_request: list[int] = []
    deleter = FakeDeleter(
        on_delete=lambda: seen_at_request.append(states[-1]["n"] if states else 0)
    )
    pipeline = pipeline_for(
        tmp_path, FakeClient(), states, store, deleter, hard_delete=True, max_deletes_per_run=5000
    )
    pipeline.add("users", "users", pipeline.next_position(), Profile("u", None, {"v": 1}))
    pipeline.add_state({"n": 0})
    delete_then_state(pipeline, range(1, 2501))
    assert states == [], "a pending deletion holds STATE back until the end of input"
    pipeline.finish()
    pipeline.close()

    # Three requests in record order; none went out before the STATE below it could.
    assert [len(ids) for _, ids in deleter.requests] == [1000, 1000, 500]
    assert deleter.requests[0][1][:2] == ["d1", "d2"]
    assert seen_at_request[0] == 0
    assert all(n < 1000 * k + 1 for k, n in enumerate(seen_at_request))
    assert states[-1] == {"n": 2500}
    assert [s["n"] for s in states] == sorted(s["n"] for s in states)
    assert set(store.digests) == {("users", "u")}, "deleted ids are sent again if re-created"
    assert pipeline.counters.deleted == {"users": 2500, "companies": 0}
    assert pipeline.counters.delete_requests == 3


def test_a_refused_deletion_stops_the_run_with_state_short_of_it(tmp_path: Path) -> None:
    states: list[dict[str, Any]] = []
    deleter = FakeDeleter(refuse_after=1)
    pipeline = pipeline_for(
        tmp_path, FakeClient(), states, None, deleter, hard_delete=True, max_deletes_per_run=5000
    )
    delete_then_state(pipeline, range(1, 1501))
    with pytest.raises(DeletionRefusedError, match="HTTP 400"):
        pipeline.finish()
    pipeline.fail()
    pipeline.close()
    assert len(deleter.requests) == 1
    assert states[-1] == {"n": 1000}, "the accepted chunk's STATE, and no later one"


def test_the_guard_stops_before_any_deletion_is_sent(tmp_path: Path) -> None:
    states: list[dict[str, Any]] = []
    deleter = FakeDeleter()
    pipeline = pipeline_for(tmp_path, FakeClient(), states, None, deleter, hard_delete=True)
    pipeline.add("users", "users", pipeline.next_position(), Profile("u", None, {}))
    pipeline.add_state({"n": 0})
    delete_then_state(pipeline, range(1, 201))  # 200 of 201 records: past 10%
    with pytest.raises(DeletionGuardError, match="would delete 200 profiles"):
        pipeline.finish()
    pipeline.fail()
    pipeline.close()
    assert deleter.requests == []
    assert states == [{"n": 0}], "the job before the deletions still releases its STATE"


def test_a_later_record_cancels_a_pending_deletion_and_frees_state(tmp_path: Path) -> None:
    client = FakeClient()
    states: list[dict[str, Any]] = []
    deleter = FakeDeleter()
    pipeline = pipeline_for(tmp_path, client, states, None, deleter, hard_delete=True)
    pipeline.delete("users", "users", pipeline.next_position(), "x")
    pipeline.add_state({"n": 1})
    assert states == []
    pipeline.add("users", "users", pipeline.next_position(), Profile("x", None, {"back": True}))
    assert states == [{"n": 1}], "the deletion no longer holds STATE: the last word is x's"
    pipeline.finish()
    pipeline.close()
    assert deleter.requests == []
    assert client.profiles["users", "x"] == {"back": True}
    assert pipeline.counters.deletions_cancelled == 1


def records_with_states(pipeline: Pipeline, count: int) -> None:
    for n in range(1, count + 1):
        pipeline.add("users", "users", pipeline.next_position(), Profile(str(n), None, {}))
        pipeline.add_state({"n": n})


@pytest.mark.parametrize(
    ("client", "config"),
    [
        # A 400 for record 3, isolated by halving the batch.
        (FakeClient(refuse=lambda line: "bad" if line["user_id"] == "3" else None), {}),
        # A completed job that rejects a row: the batch's first record is the one held.
        (FakeClient(unnamed_errors=1), {}),
    ],
    ids=["refused-by-bisection", "rejected-in-completed-job"],
)
def test_under_fail_no_state_passes_the_record_that_stopped_the_run(
    tmp_path: Path, client: FakeClient, config: dict[str, Any]
) -> None:
    states: list[dict[str, Any]] = []
    pipeline = pipeline_for(tmp_path, client, states, on_invalid_record="fail", **config)
    records_with_states(pipeline, 5)
    with pytest.raises(InvalidRecordError, match="cannot be loaded"):
        pipeline.finish()
    pipeline.fail()
    pipeline.close()
    failing = 3 if client.refused_uploads else 1
    assert all(state["n"] < failing for state in states), states


def test_a_dead_letter_that_cannot_be_written_holds_state_before_its_record(
    tmp_path: Path,
) -> None:
    states: list[dict[str, Any]] = []
    client = FakeClient(refuse=lambda line: "bad" if line["user_id"] == "2" else None)
    # A folder where the file should be: the write fails as on a full disk.
    pipeline = pipeline_for(tmp_path, client, states, dead_letter_path=str(tmp_path))
    records_with_states(pipeline, 4)
    with pytest.raises(DeadLetterFileError, match="cannot write the dead-letter file"):
        pipeline.finish()
    pipeline.fail()
    pipeline.close()
    assert all(state["n"] < 2 for state in states), states
    assert list((tmp_path / "batches").iterdir()) == []


@pytest.mark.parametrize(("records", "rows"), [(1, 100), (20, 1), (30, 3)])
def test_a_run_whose_every_upload_is_refused_stops_without_state(
    tmp_path: Path, records: int, rows: int
) -> None:
    states: list[dict[str, Any]] = []
    client = FakeClient(refuse=lambda _: "wrong format")
    pipeline = pipeline_for(tmp_path, client, states, max_batch_rows=rows)

    def run() -> None:
        records_with_states(pipeline, records)
        pipeline.finish()

    # Batches of 3 are judged each ("over half of it"); one-row batches over the run.
    with pytest.raises(JobFailedError, match=r"Userpilot refused .* systematic problem"):
        run()
    pipeline.fail()
    pipeline.close()
    assert states == []


def test_one_refused_row_among_good_ones_in_one_row_batches_goes_on(tmp_path: Path) -> None:
    states: list[dict[str, Any]] = []
    client = FakeClient(refuse=lambda line: "bad" if line["user_id"] == "1" else None)
    pipeline = pipeline_for(tmp_path, client, states, max_batch_rows=1)
    records_with_states(pipeline, 20)
    pipeline.finish()
    pipeline.close()
    assert states[-1] == {"n": 20}
    assert pipeline.dead_letters.written == 1


class LosingStore(MemoryStore):
    """A store whose run lock is gone (taken by another run) after `held` checks."""

    def __init__(self, held: int) -> None:
        super().__init__()
        self.held = held

    def check_session(self) -> None:
        if self.held == 0:
            msg = "another run took the run lock meanwhile"
            raise FingerprintStoreError(msg)
        self.held -= 1


def test_a_run_that_lost_its_store_lock_sends_nothing_more(tmp_path: Path) -> None:
    client = FakeClient()
    states: list[dict[str, Any]] = []
    pipeline = pipeline_for(tmp_path, client, states, LosingStore(held=2), max_batch_rows=2)

    def run() -> None:
        records_with_states(pipeline, 10)
        pipeline.finish()

    with pytest.raises(FingerprintStoreError, match="another run took the run lock"):
        run()
    pipeline.fail()
    pipeline.close()
    assert client.uploads == 2
    assert states[-1] == {"n": 4}


class VanishingStore(MemoryStore):
    """A store whose database went away: every write fails."""

    def confirm(self, kind: str, entries: Iterable[tuple[str, bytes]]) -> int:
        msg = "The fingerprint store failed while saving a job's fingerprints"
        raise FingerprintStoreError(msg)


def test_a_job_confirmed_before_a_store_failure_is_counted_as_sent(tmp_path: Path) -> None:
    client = FakeClient()
    states: list[dict[str, Any]] = []
    pipeline = pipeline_for(tmp_path, client, states, VanishingStore())
    records_with_states(pipeline, 3)
    with pytest.raises(FingerprintStoreError):
        pipeline.finish()
    pipeline.fail()
    pipeline.close()
    assert pipeline.counters.jobs == 1
    assert pipeline.counters.profiles_sent["users"] == 3
    assert states == [], "not fingerprinted: no STATE past them"


@pytest.mark.parametrize(
    "kind", [*get_args(Outcome), *get_args(EventOutcome)], ids=lambda kind: kind.__name__
)
def test_every_outcome_the_threads_report_reaches_the_part_of_the_run_it_concerns(
    kind: type[Any],
) -> None:
    # One dropped silently would leave its batch, deletion or event unsettled: STATE held back
    # for good, or released past data never confirmed. mypy checks the same (`assert_never`).
    outcome = kind(**{field.name: mock.MagicMock() for field in dataclasses.fields(kind)})
    owner = mock.MagicMock()
    Pipeline._apply(owner, outcome)
    handlers = [owner._deletion_accepted, owner._events.apply, owner._in_flight.apply]
    reached = [h for h in handlers if h.called]
    assert len(reached) == 1, (kind, owner.mock_calls)
