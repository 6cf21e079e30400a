from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import re
import time
from typing import TYPE_CHECKING

from target_userpilot.batches import BatchFile, BatchLimits
from target_userpilot.client import UserpilotClient
from target_userpilot.jobs import (
    OVERDUE_MAX,
    BatchDone,
    JobRunner,
    JobStarted,
    Outcome,
    PartDone,
    PollPlan,
    RateEstimate,
)
from target_userpilot.profiles import Profile

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import pytest

    from target_userpilot.emulator import Emulator

TOKEN = "jobs-test-token"  # noqa: S105 - the emulator's


def drain(runner: JobRunner, timeout: float = 60) -> list[Outcome]:
    """Every outcome the job thread reports until it ends."""
    deadline = time.monotonic() + timeout
    seen: list[Outcome] = []
    while runner.alive and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            seen.append(runner.outcomes.get(timeout=0.1))
    return seen


def test_first_job_polls_soon_then_backs_off() -> None:
    plan = PollPlan(max_interval=30)
    delays = [plan.delay(0, None, n) for n in range(20)]
    assert delays[0] <= 0.1
    assert delays == sorted(delays)
    assert delays[-1] == 30


def test_known_rate_polls_sparsely_then_densely_near_the_end() -> None:
    plan = PollPlan(max_interval=30)
    expected = 500.0  # a 10,000-row job at 1,200 rows/min
    assert plan.delay(0, expected, 0) == 30  # far from the end: capped sparse polls
    assert plan.delay(480, expected, 0) == 10  # halving the distance
    near = plan.delay(499.5, expected, 0)
    assert near <= 1.0  # noticed within a second
    assert plan.delay(600, expected, 20) == OVERDUE_MAX


def test_short_jobs_get_short_dense_polls() -> None:
    plan = PollPlan()
    assert plan.delay(4.99, 5.0, 0) <= 0.025


def test_rate_estimate_learns() -> None:
    rate = RateEstimate()
    assert rate.expected_seconds(100) is None
    rate.learn(1000, 50)
    assert rate.expected_seconds(100) == 5
    rate.learn(0, 10)
    assert rate.expected_seconds(100) == 5


def test_a_long_job_logs_progress_and_an_eta_at_most_every_30_s(
    make_emulator: Callable[..., Emulator], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emu = make_emulator(token=TOKEN, rows_per_minute=30_000)  # 1,000 rows: a 2 s job
    batch = BatchFile("users", tmp_path, BatchLimits())
    for n in range(1, 1_001):
        batch.add(Profile(id=str(n), company_id=None, metadata={"n": n}), n, "users")
    started = time.monotonic()
    runner = JobRunner(
        UserpilotClient(emu.url, TOKEN),
        job_timeout=3_600,
        job_retries=0,
        poll=PollPlan(max_interval=0.1),
        logger=logging.getLogger("test-jobs"),
        # Time runs 20x faster for the runner: the 2 s job looks like 40 s.
        clock=lambda: started + (time.monotonic() - started) * 20,
    )
    with caplog.at_level(logging.INFO, logger="test-jobs"):
        runner.start()
        runner.ship(batch.seal())
        runner.close()
        outcomes = drain(runner)
    assert [type(o) for o in outcomes] == [JobStarted, PartDone, BatchDone]
    progress = [r.getMessage() for r in caplog.records if "ETA" in r.getMessage()]
    assert progress, "a job running past 30 s says how far it is"
    pattern = r"is '(\w+)': ([\d,]+)/1,000 rows after (\d+) s, ETA (\d+) s"
    seen = [re.search(pattern, line) for line in progress]
    assert all(seen), progress
    elapsed = [int(m.group(3)) for m in seen if m]
    # The first after 30 s, then at most one a 30 s (polls came every 2 s of runner time).
    assert elapsed[0] >= 30
    assert all(later - earlier >= 30 for earlier, later in itertools.pairwise(elapsed))
    first = seen[0]
    assert first is not None
    assert first.group(1) == "processing"
    assert 0 < int(first.group(2).replace(",", "")) < 1_000
