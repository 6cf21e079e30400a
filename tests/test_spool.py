"""Full batches wait on disk while Userpilot is busy: the tap is released, each id goes once.

In-process against a fake Userpilot whose jobs wait for a gate the test opens; the crash and
resume go through the real CLI against the emulator.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fake_userpilot import FakeClient, settings_for
from singer_io import USER_SCHEMA, StateSeen, record, run_target, schema, state, user
from test_reliability import config_for, resume_after

from target_userpilot.profiles import Profile
from target_userpilot.run.batches import BatchFile, BatchLimits
from target_userpilot.run.pipeline import Pipeline
from target_userpilot.run.spool import Spool

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable

    from target_userpilot.emulator import Emulator

TOKEN = "sk-live-5f2b8c1e-SECRET-KEY-9d7a"  # noqa: S105 - the emulator's
# The longest a gated job waits for the test to open the gate: a bound, never reached.
GATE_TIMEOUT = 10


@dataclass
class GatedClient(FakeClient):
    """A fake Userpilot whose uploads wait until `gate` is set; it keeps each upload's ids."""

    gate: threading.Event = field(default_factory=threading.Event)
    uploaded: list[list[str]] = field(default_factory=list)

    def submit(self, kind: str, path: Path, *, rows: int) -> str:
        assert self.gate.wait(GATE_TIMEOUT), "the test never opened the gate"
        job_id = super().submit(kind, path, rows=rows)
        self.uploaded.append([line["user_id"] for line in self._pending[job_id][1]])
        return job_id


class _OnPause(logging.Handler):
    """Calls `then` when the pipeline says it paused reading."""

    def __init__(self, then: Callable[[], None]) -> None:
        super().__init__()
        self.then = then

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Reading paused"):
            self.then()


def pipeline_for(
    tmp_path: Path, client: FakeClient, states: list[Any], logger: logging.Logger, **config: Any
) -> Pipeline:
    pipeline = Pipeline(
        settings_for(tmp_path, **config),
        client=client,  # type: ignore[arg-type]
        emit_state=states.append,
        logger=logger,
    )
    pipeline.start()
    return pipeline


def add(pipeline: Pipeline, pid: int, version: int = 0) -> None:
    pipeline.add(
        "users", "users", pipeline.next_position(), Profile(str(pid), None, {"v": version})
    )


def test_reading_runs_ahead_of_userpilot_until_the_spool_cap_then_resumes(tmp_path: Path) -> None:
    client = GatedClient()
    states: list[Any] = []
    logger = logging.getLogger("test-spool-cap")
    logger.setLevel(logging.INFO)
    paused: list[tuple[int, int, int]] = []
    read_while_paused: list[int] = []

    def on_pause() -> None:
        # Reading stops here: note how far it got while no job completed, then let jobs run
        # a moment later, noting that reading stayed where it paused meanwhile.
        paused.append(
            (pipeline.position, client.jobs, len(list(tmp_path.glob("batches/*/*.ndjson"))))
        )
        if len(paused) == 1:
            threading.Timer(0.2, open_gate).start()

    def open_gate() -> None:
        read_while_paused.append(pipeline.position)
        client.gate.set()

    handler = _OnPause(on_pause)
    logger.addHandler(handler)
    # Lines of `{"user_id":"12","metadata":{"v":0}}` and a newline: 370 bytes a batch of 10.
    pipeline = pipeline_for(
        tmp_path, client, states, logger, max_batch_rows=10, max_spool_bytes=1000
    )
    try:
        for pid in range(1, 101):
            add(pipeline, pid)
            pipeline.add_state({"at": pid})
        pipeline.finish()
    finally:
        pipeline.close()
        logger.removeHandler(handler)
    # One batch handed to the job thread, three waiting (1,110 bytes, over the 1,000 cap):
    # 40 records read while Userpilot had completed nothing; before the spool reading
    # stopped at 30.
    assert paused[0] == (40, 0, 4)
    assert read_while_paused == [40], "reading waited at the cap until jobs completed"
    assert len(client.profiles) == 100, "reading resumed and every record was loaded"
    assert states[-1] == {"at": 100}
    assert list((tmp_path / "batches").iterdir()) == []


def test_a_newer_record_of_a_waiting_id_merges_into_its_batch_and_state_waits_for_it(
    tmp_path: Path,
) -> None:
    client = GatedClient()
    emitted: list[tuple[Any, dict[str, Any] | None]] = []

    def emit(value: Any) -> None:
        # What Userpilot held for id 5 when this STATE came out.
        emitted.append((value, client.profiles.get(("users", "5"))))

    pipeline = Pipeline(
        settings_for(tmp_path, max_batch_rows=2),
        client=client,  # type: ignore[arg-type]
        emit_state=emit,
        logger=logging.getLogger("test-spool-merge"),
    )
    pipeline.start()
    try:
        for pid in range(1, 7):  # [1 2] goes to the job thread, [3 4] and [5 6] wait
            add(pipeline, pid)
        pipeline.add_state({"at": 6})
        add(pipeline, 5, version=1)  # record 7: merges into the waiting [5 6]
        pipeline.add_state({"at": 7})
        add(pipeline, 8)
        pipeline.add_state({"at": 8})
        client.gate.set()
        pipeline.finish()
    finally:
        pipeline.close()
    assert client.uploaded == [["1", "2"], ["3", "4"], ["5", "6"], ["8"]], "id 5 sent once"
    assert client.profiles["users", "5"] == {"v": 1}
    assert pipeline.counters.merged == 1
    # STATE 7 (not 6: it replaces it) came out only once the merged row was loaded.
    assert emitted == [({"at": 7}, {"v": 1}), ({"at": 8}, {"v": 1})]


def test_an_id_in_two_waiting_batches_after_a_merge_that_did_not_fit_loads_both(
    tmp_path: Path,
) -> None:
    client = GatedClient()
    pipeline = Pipeline(
        settings_for(tmp_path, max_batch_rows=2, max_batch_bytes=1024),
        client=client,  # type: ignore[arg-type]
        emit_state=lambda _: None,
        logger=logging.getLogger("test-spool-overflow"),
    )
    pipeline.start()
    try:
        for pid in range(1, 5):  # [1 2] goes to the job thread, [3 4] waits
            add(pipeline, pid)
        pipeline.add(
            "users", "users", pipeline.next_position(), Profile("5", None, {"a": "x" * 600})
        )
        add(pipeline, 6)  # [5 6] waits
        # Too large to merge into [5 6]: it starts [5 7], which waits too.
        pipeline.add(
            "users", "users", pipeline.next_position(), Profile("5", None, {"b": "y" * 600})
        )
        add(pipeline, 7)
        add(pipeline, 5, version=2)  # merges into [5 7], the later of the two
        client.gate.set()
        pipeline.finish()
    finally:
        pipeline.close()
    assert client.uploaded == [["1", "2"], ["3", "4"], ["5", "6"], ["5", "7"]]
    assert client.profiles["users", "5"] == {"a": "x" * 600, "b": "y" * 600, "v": 2}


def test_a_kill_with_batches_waiting_leaves_nothing_and_the_resume_loses_nothing(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=120_000)  # a 250-row job takes 0.125 s
    messages = [schema("users", USER_SCHEMA)]
    for i in range(1, 3_001):
        messages.append(record("users", user(i)))
        if i % 250 == 0:
            messages.append(state({"bookmarks": {"records": i}}))
    cfg = config_for(emu, tmp_path, max_batch_rows=250, max_checkpoint_lag_records=1_000)
    waiting: list[int] = []

    def kill_once_read(seen: StateSeen, proc: subprocess.Popen[bytes]) -> None:
        if waiting:
            return
        deadline = time.monotonic() + 30  # bounded: the input takes well under a second
        log = tmp_path / "stderr.log"
        while "Input read in full" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        waiting.append(len(list((tmp_path / "batches").glob("*/*.ndjson"))))
        proc.kill()

    first = run_target(cfg, messages, tmp_path, emulator=emu, on_state=kill_once_read)
    assert first.returncode == -signal.SIGKILL
    assert waiting[0] >= 3, "the input was read in full while batches waited for Userpilot"
    assert list((tmp_path / "batches").glob("*/*.ndjson")), "a kill -9 leaves them behind"

    second = run_target(cfg, resume_after(messages, first.states[-1]), tmp_path, emulator=emu)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Removed 1 batch folder of runs no longer alive" in second.stderr
    assert list((tmp_path / "batches").rglob("*")) == [], "nothing left on disk"
    assert len(emu.users) == 3_000, "nothing lost"
    assert second.states[-1].value == {"bookmarks": {"records": 3_000}}


def full_batch(tmp_path: Path, ids: range, version: int = 0) -> BatchFile:
    batch = BatchFile("users", tmp_path, BatchLimits(max_rows=len(ids)))
    for pid in ids:
        assert batch.add(Profile(f"user-{pid}", None, {"v": version}), pid, "users")
    return batch


def test_rows_waiting_behind_others_cost_a_fraction_of_a_dict_index(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        spool = Spool()
        for start in range(0, 40_000, 2_000):
            spool.put(full_batch(tmp_path, range(start, start + 2_000)))
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A dict of index entries per batch, and one of where each id waits: ~250 bytes a row.
    assert held / spool.rows < 100
    assert ("users", "user-123") in spool
    assert ("users", "user-39999") in spool
    assert ("users", "user-40000") not in spool
    spool.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_newer_record_merges_into_an_older_waiting_batch_and_is_sent_from_there(
    tmp_path: Path,
) -> None:
    spool = Spool()
    for start in (0, 10, 20):
        spool.put(full_batch(tmp_path, range(start, start + 10)))
    newer = Profile("user-5", None, {"v": 1, "plan": "pro"})
    assert spool.merge("users", newer, 31, "users", newer.line("users"))
    assert not spool.merge("users", Profile("user-30", None, {}), 32, "users", b"{}")
    first = spool.take().seal()
    assert [line for line in first.lines() if b'"user-5"' in line] == [newer.line("users")]
    assert [origin.position for origin in first.origins] == list(range(10)), "STATE: its first"
    assert ("users", "user-5") not in spool, "once taken, the id no longer waits"
    assert ("users", "user-15") in spool
    assert ("users", "user-25") in spool
    first.delete()
    spool.discard()
