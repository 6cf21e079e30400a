"""Settings reach the part of the run that uses them: a value read and then dropped is caught."""

from __future__ import annotations

import io
import itertools
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import pytest
from fake_userpilot import FakeClient, settings_for
from singer_io import record, schema
from test_target import TOKEN, config_for

from target_userpilot.profiles import Profile
from target_userpilot.run.pipeline import Pipeline
from target_userpilot.target import TargetUserpilot
from target_userpilot.wire import JobStatus, TransientError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from target_userpilot.emulator import Emulator


def test_request_timeout_bounds_the_wait_for_an_answer(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    # Every answer takes 2 s: a 1 s read gives up on it (the default, 300 s, would wait).
    emu = make_emulator(token=TOKEN, slow_seconds=2)
    config = config_for(emu, tmp_path, request_timeout=1, request_retry_max_time=0)
    with pytest.raises(TransientError):
        TargetUserpilot(config=config)  # the start-up check is the first request


def test_request_timeout_bounds_the_wait_for_an_events_answer(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = make_emulator(token=TOKEN)
    config = config_for(emu, tmp_path, request_timeout=1, request_retry_max_time=0)
    target = TargetUserpilot(config=config)
    emu.set_faults(slow_seconds=2)  # past the start-up check: the Track API answers slowly
    event = {"event_id": "e1", "user_id": "1", "event_name": "invoice_paid"}
    messages = [schema("events", {"properties": {}}, key="event_id"), record("events", event)]
    with pytest.raises(TransientError):
        target.listen(io.StringIO("".join(json.dumps(m) + "\n" for m in messages)))


def test_poll_max_interval_bounds_the_time_between_polls_of_a_long_job(tmp_path: Path) -> None:
    client = FakeClient()
    polled: list[float] = []
    complete = client.get_job

    def get_job(job_id: str) -> JobStatus:
        polled.append(time.monotonic())
        if len(polled) < 12:  # no progress: without the cap the polls back off to seconds
            return JobStatus(job_id, "running", "processing", 0, 0, 1, {"status": "processing"})
        return complete(job_id)

    client.get_job = get_job  # type: ignore[method-assign]
    states: list[dict[str, Any]] = []
    pipeline = Pipeline(
        settings_for(tmp_path, poll_max_interval=0.05),
        client=client,  # type: ignore[arg-type]
        emit_state=states.append,
        logger=logging.getLogger("test-settings"),
    )
    pipeline.start()
    try:
        pipeline.add("users", "users", pipeline.next_position(), Profile("1", None, {"v": 1}))
        pipeline.add_state({"n": 1})
        pipeline.finish()
    finally:
        pipeline.close()
    assert states == [{"n": 1}]
    gaps = [later - earlier for earlier, later in itertools.pairwise(polled)]
    assert max(gaps) < 1, gaps  # 0.05 s apart; 2.9 s by the 11th poll when backing off freely
