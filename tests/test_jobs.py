from __future__ import annotations

import contextlib
import itertools
import logging
import math
import queue
import re
import time
from typing import TYPE_CHECKING

from fake_userpilot import FakeClient

from target_userpilot.profiles import Profile
from target_userpilot.run.batches import BatchFile, BatchLimits, SealedBatch
from target_userpilot.run.jobs import (
    MAX_REFUSED_ROWS,
    OVERDUE_MAX,
    BatchDone,
    JobFailedError,
    JobRunner,
    JobStarted,
    Outcome,
    PartDone,
    PollPlan,
    RateEstimate,
    RowsRefused,
    RunnerFailed,
    _Progress,
)
from target_userpilot.wire import JobStatus, UserpilotClient

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


def test_the_rate_is_the_newest_measurement_trusted_at_once() -> None:
    rate = RateEstimate()
    assert rate.rows_per_second is None
    rate.learn(1000, 50)
    assert rate.rows_per_second == 20
    rate.learn(1000, 10)
    assert rate.rows_per_second == 100, "no blending with a stale prior"
    rate.learn(0, 10)
    assert rate.rows_per_second == 100


def test_a_lower_bound_only_ever_raises_the_rate() -> None:
    rate = RateEstimate()
    rate.at_least(1000, 50)
    assert rate.rows_per_second == 20
    rate.at_least(1000, 100)  # a job noticed late: slower on paper, not in fact
    assert rate.rows_per_second == 20
    rate.at_least(1000, 5)
    assert rate.rows_per_second == 200


def test_queue_time_does_not_count_and_the_end_is_re_estimated_at_each_poll() -> None:
    rate = RateEstimate()
    progress = _Progress(submitted_at=100.0)
    progress.saw(status("queued", 0), now=104.0, rows=1_000, rate=rate)  # 4 s in the queue
    assert progress.started == 104.0
    assert progress.expected_seconds(1_000, rate=100.0) == 14.0
    progress.saw(status("processing", 500), now=107.0, rows=1_000, rate=rate)
    assert progress.started == 104.0
    # 500 rows in at most the 3 s since the job was last seen waiting: at least that pace.
    assert rate.rows_per_second == 500 / 3
    assert progress.expected_seconds(1_000, rate=500 / 3) == 7.0 + 3.0


def test_two_polls_mid_job_measure_the_pace_whatever_the_first_bound_said() -> None:
    # Measured: 23 rows seen 0.118 s after the last "validating" poll gave 194 rows/s for a
    # server doing 2,000; the next poll then waited 25 s for a job that ended 5 s later.
    rate = RateEstimate()
    progress = _Progress(submitted_at=0.0)
    progress.saw(status("validating", 0), now=0.138, rows=10_000, rate=rate)
    progress.saw(status("processing", 23), now=0.256, rows=10_000, rate=rate)
    assert rate.rows_per_second is not None
    assert rate.rows_per_second < 200
    wait = progress.longest_wait(now=0.256)
    assert wait is not None
    assert wait < 0.2, "the next poll comes soon, to measure"
    progress.saw(status("processing", 23 + 400), now=0.456, rows=10_000, rate=rate)
    assert rate.rows_per_second == 2_000
    assert progress.longest_wait(now=0.456) is None
    assert progress.expected_seconds(10_000, rate.rows_per_second) == 0.456 + (10_000 - 423) / 2_000


def status(name: str, processed: int) -> JobStatus:
    return JobStatus("j", "running", name, processed, 0, 1_000, {})


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


def runner_for(client: FakeClient, *, job_retries: int = 0) -> JobRunner:
    return JobRunner(
        client,  # type: ignore[arg-type]
        job_timeout=60,
        job_retries=job_retries,
        poll=PollPlan(max_interval=0.001),
        logger=logging.getLogger("test-jobs"),
    )


def sealed_batch(tmp_path: Path, rows: int) -> SealedBatch:
    batch = BatchFile("users", tmp_path, BatchLimits())
    for n in range(1, rows + 1):
        batch.add(Profile(id=str(n), company_id=None, metadata={"n": n}), n, "users")
    return batch.seal()


def send(client: FakeClient, batch: SealedBatch, *, job_retries: int = 0) -> list[Outcome]:
    runner = runner_for(client, job_retries=job_retries)
    runner.start()
    runner.ship(batch)
    runner.close()
    return drain(runner)


def test_an_upload_refused_over_three_rows_sends_the_rest_and_names_each_row(
    tmp_path: Path,
) -> None:
    bad = {"7", "30", "31"}
    client = FakeClient(refuse=lambda line: "too long" if line["user_id"] in bad else None)
    outcomes = send(client, sealed_batch(tmp_path, 64))
    refused = [o for o in outcomes if isinstance(o, RowsRefused)]
    assert sorted(o.part.origins[0].profile_id for o in refused) == sorted(bad)
    assert all(o.reason == "refused by Userpilot: line 1: too long" for o in refused)
    assert {pid for (_, pid) in client.profiles} == {str(n) for n in range(1, 65)} - bad
    assert isinstance(outcomes[-1], BatchDone)
    # Halving isolates each bad row in about 2*log2(rows) refused uploads.
    assert client.refused_uploads <= len(bad) * (2 * math.log2(64) + 2)


def test_a_batch_mostly_refused_stops_the_run_as_a_systematic_problem(tmp_path: Path) -> None:
    client = FakeClient(refuse=lambda _: "metadata must be strings")
    outcomes = send(client, sealed_batch(tmp_path, 1_000))
    failed = [o for o in outcomes if isinstance(o, RunnerFailed)]
    assert len(failed) == 1
    assert isinstance(failed[0].error, JobFailedError)
    assert "systematic problem" in str(failed[0].error)
    assert "metadata must be strings" in str(failed[0].error)
    assert client.profiles == {}
    assert client.refused_uploads <= (MAX_REFUSED_ROWS + 1) * (2 * math.log2(1_000) + 2)


def test_413_halves_a_batch_until_each_part_is_accepted(tmp_path: Path) -> None:
    client = FakeClient(max_rows=10)
    outcomes = send(client, sealed_batch(tmp_path, 40))
    parts = [o.part for o in outcomes if isinstance(o, PartDone)]
    assert sum(p.rows for p in parts) == 40
    assert all(p.rows <= 10 for p in parts)
    assert len(client.profiles) == 40


def test_413_for_one_small_row_stops_the_run_naming_api_url_and_proxies(tmp_path: Path) -> None:
    client = FakeClient(max_rows=0)
    outcomes = send(client, sealed_batch(tmp_path, 4))
    failed = [o for o in outcomes if isinstance(o, RunnerFailed)]
    assert len(failed) == 1
    message = str(failed[0].error)
    assert "`api_url`" in message
    assert "proxy" in message
    assert not [o for o in outcomes if isinstance(o, RowsRefused)], "nothing dead-lettered"


def test_a_failed_job_is_resubmitted_then_reported_completed(tmp_path: Path) -> None:
    client = FakeClient(fail_every=1_000)
    client.jobs = 999  # the next job fails, the one after completes
    outcomes = send(client, sealed_batch(tmp_path, 5), job_retries=1)
    done = [o for o in outcomes if isinstance(o, PartDone)]
    assert len(done) == 1
    assert done[0].outcome.attempts == 2
    assert len(client.profiles) == 5
