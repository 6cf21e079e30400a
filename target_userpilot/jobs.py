"""The single Userpilot job slot: one background thread submits, polls and confirms batches.

Userpilot runs one bulk job at a time per account, users and companies together, so every
sealed batch of both kinds goes through this one queue. The thread keeps the slot busy while
the Singer side goes on reading input and filling the next batch; `ship` blocks once a batch of
the same kind is already waiting, which stops reading stdin and back-pressures the tap.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from target_userpilot.wire import JobStatus, PayloadTooLargeError

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable

    from target_userpilot.batches import SealedBatch
    from target_userpilot.wire import UserpilotClient

# Before the first job reports progress nothing is known of the rate: poll soon, then back off.
FIRST_POLL = 0.05
# Around the expected end, poll at this share of the job's expected length (within bounds),
# so a finished job is noticed within a small fraction of its own duration.
DENSE_SHARE = 0.005
DENSE_MIN, DENSE_MAX = 0.02, 1.0
# A job running past its expected end is polled at most this far apart.
OVERDUE_MAX = 2.0
# Seconds a thread may hold the GIL while the slot thread waits for it (Python's default: 5 ms).
SWITCH_INTERVAL = 0.0001


class JobFailedError(RuntimeError):
    """A job ended `failed` more often than `job_retries` allows, or ran past its timeout."""


@dataclass(frozen=True)
class PollPlan:
    """How often to ask about a running job."""

    max_interval: float = 30.0

    def delay(self, elapsed: float, expected: float | None, overdue_polls: int) -> float:
        """Seconds until the next poll of a job `elapsed` seconds old.

        `expected` is the job's estimated total length (None before any rate is known);
        `overdue_polls` counts polls already made past the expected end (or, with no
        estimate, all polls), each backing off a little more.
        """
        if expected is None:
            return min(self.max_interval, FIRST_POLL * 1.5**overdue_polls)
        dense = min(DENSE_MAX, max(DENSE_MIN, expected * DENSE_SHARE))
        remaining = expected - elapsed
        if remaining > dense:
            # Halve the distance to the expected end: few polls early, dense ones near it.
            return min(self.max_interval, max(dense, remaining / 2))
        return min(self.max_interval, OVERDUE_MAX, dense * 1.5**overdue_polls)


class RateEstimate:
    """Rows per second the server processes, learnt from finished jobs and live progress."""

    def __init__(self) -> None:
        """No estimate until a job has reported something."""
        self.rows_per_second: float | None = None

    def learn(self, rows: int, seconds: float) -> None:
        """Blend in an observation (rows processed over seconds)."""
        if rows <= 0 or seconds <= 0:
            return
        observed = rows / seconds
        current = self.rows_per_second
        self.rows_per_second = observed if current is None else 0.5 * current + 0.5 * observed

    def expected_seconds(self, rows: int) -> float | None:
        """Estimated length of a job of `rows` rows."""
        return None if self.rows_per_second is None else rows / self.rows_per_second


@dataclass(frozen=True)
class JobOutcome:
    """What one finished job did, for the per-job log line and the summary."""

    job_id: str
    status: JobStatus
    waited: float
    seconds: float
    polls: int
    attempts: int


class JobRunner:
    """Owns the slot: submits batches one at a time, FIFO across kinds."""

    def __init__(  # noqa: PLR0913 - each is a distinct collaborator or setting
        self,
        client: UserpilotClient,
        *,
        on_confirmed: Callable[[SealedBatch, JobOutcome], None],
        on_split: Callable[[SealedBatch, tuple[SealedBatch, SealedBatch]], None],
        on_unsendable: Callable[[SealedBatch, str], None],
        job_timeout: float,
        job_retries: int,
        poll: PollPlan,
        logger: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start nothing yet; `start()` launches the thread."""
        self._client = client
        self._on_confirmed = on_confirmed
        self._on_split = on_split
        self._on_unsendable = on_unsendable
        self._job_timeout = job_timeout
        self._job_retries = job_retries
        self._poll = poll
        self._logger = logger
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[SealedBatch] = deque()
        self._closing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="userpilot-jobs", daemon=True)
        self.error: BaseException | None = None
        self.current_job: str | None = None
        self._in_flight: SealedBatch | None = None  # taken off the queue, not yet confirmed
        self.rate = RateEstimate()
        self.jobs_resubmitted = 0

    def start(self) -> None:
        """Launch the slot thread."""
        # The main thread is CPU-bound while it maps records; every socket or file call of an
        # upload (hundreds per batch) hands the GIL back and waits up to the switch interval to
        # get it again. At the default 5 ms an upload took 1 to 3 s instead of 0.2 s, leaving
        # Userpilot's job slot idle meanwhile.
        if sys.getswitchinterval() > SWITCH_INTERVAL:
            sys.setswitchinterval(SWITCH_INTERVAL)
        self._thread.start()

    def raise_if_failed(self) -> None:
        """Re-raise, in the caller's thread, what stopped the slot thread."""
        if self.error is not None:
            raise self.error

    def ship(self, batch: SealedBatch) -> None:
        """Queue a sealed batch; blocks while one of the same kind is already waiting."""
        with self._cond:
            while (
                self.error is None
                and not self._closing
                and any(waiting.kind == batch.kind for waiting in self._queue)
            ):
                self._cond.wait()
            self.raise_if_failed()
            self._queue.append(batch)
            self._cond.notify_all()

    def finish(self) -> None:
        """Wait until every shipped batch is confirmed (or the thread failed)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        self.raise_if_failed()

    def abandon(self, grace: float) -> tuple[list[SealedBatch], str | None]:
        """Stop after the job in flight (waiting up to `grace` s for it); drop the queue.

        Returns the batches never confirmed (their files are the caller's to remove) and the
        id of a job left running, if any.
        """
        with self._cond:
            dropped = list(self._queue)
            self._queue.clear()
            self._closing = True
            self._cond.notify_all()
        self._thread.join(grace)
        if self._thread.is_alive():
            self._stop.set()
            return dropped, self.current_job
        if self._in_flight is not None:  # the thread ended on an error with it
            dropped.append(self._in_flight)
        return dropped, None

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closing:
                        self._cond.wait()
                    if not self._queue:
                        return
                    # Taken off the queue now, so the next batch of its kind may wait there
                    # while this one is in flight.
                    batch = self._in_flight = self._queue.popleft()
                    self._cond.notify_all()
                self._send(batch)
                self._in_flight = None
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            with self._cond:
                self.error = exc
                self._cond.notify_all()

    def _send(self, batch: SealedBatch) -> None:
        """Submit one batch (splitting it on 413) and wait for its job(s) to complete."""
        pending = [batch]
        while pending:
            part = pending.pop(0)
            try:
                outcome = self._run_job(part)
            except PayloadTooLargeError as exc:
                if part.rows <= 1:
                    self._on_unsendable(part, f"Userpilot refused the upload as too large: {exc}")
                    continue
                halves = part.split()
                self._logger.warning(
                    "Userpilot answered 413 for %s rows (%s bytes) of %s; "
                    "resubmitting as two halves. Lower `max_batch_bytes`/`max_batch_rows`.",
                    f"{part.rows:,}",
                    f"{part.size:,}",
                    part.kind,
                )
                self._on_split(part, halves)
                pending[0:0] = halves
                continue
            self._on_confirmed(part, outcome)

    def _run_job(self, batch: SealedBatch) -> JobOutcome:
        for attempt in range(1, self._job_retries + 2):
            queued_at = self._clock()
            job_id = self._client.submit(batch.kind, batch.path, rows=batch.rows)
            submitted_at = self._clock()
            self.current_job = job_id
            status, polls = self._wait(job_id, batch, submitted_at)
            finished_at = self._clock()
            if status.state == "completed":
                self.current_job = None
                self.rate.learn(batch.rows, finished_at - submitted_at)
                return JobOutcome(
                    job_id=job_id,
                    status=status,
                    waited=submitted_at - queued_at,
                    seconds=finished_at - submitted_at,
                    polls=polls,
                    attempts=attempt,
                )
            self.current_job = None
            if attempt <= self._job_retries:
                self.jobs_resubmitted += 1
                self._logger.warning(
                    "Userpilot job %s (%s, %s rows) ended '%s'; resubmitting (%d of %d).",
                    job_id,
                    batch.kind,
                    f"{batch.rows:,}",
                    status.status,
                    attempt,
                    self._job_retries,
                )
                continue
            msg = (
                f"Userpilot job {job_id} ({batch.kind}, {batch.rows:,} rows from {batch.path}) "
                f"ended '{status.status}' after {attempt} attempt(s): {dict(status.raw)}. "
                "No STATE past these records was emitted; rerun to resume, or raise `job_retries`."
            )
            raise JobFailedError(msg)
        raise AssertionError  # pragma: no cover - the loop always returns or raises

    def _wait(self, job_id: str, batch: SealedBatch, submitted_at: float) -> tuple[JobStatus, int]:
        """Poll one job until it ends; returns its last status and the number of polls."""
        polls = overdue = 0
        last_log = submitted_at
        while True:
            elapsed = self._clock() - submitted_at
            expected = self.rate.expected_seconds(batch.rows)
            if expected is None or elapsed >= expected:
                overdue += 1
            if self._stop.wait(self._poll.delay(elapsed, expected, overdue - 1)):
                msg = f"stopped while waiting for Userpilot job {job_id}"
                raise JobFailedError(msg)
            status = self._client.get_job(job_id)
            polls += 1
            now = self._clock()
            if status.state != "running":
                return status, polls
            if status.processed:
                # Live progress sharpens the estimate for this very job.
                self.rate.learn(status.processed, now - submitted_at)
            if now - submitted_at > self._job_timeout:
                msg = (
                    f"Userpilot job {job_id} ({batch.kind}, {batch.rows:,} rows) is still "
                    f"'{status.status}' after {self._job_timeout:.0f} s (setting `job_timeout`); "
                    "it may still finish on Userpilot's side. "
                    "No STATE past its records was emitted."
                )
                raise JobFailedError(msg)
            if now - last_log >= 30:  # noqa: PLR2004 - a progress line at most every 30 s
                last_log = now
                self._log_progress(job_id, batch, status, now - submitted_at)

    def _log_progress(
        self, job_id: str, batch: SealedBatch, status: JobStatus, elapsed: float
    ) -> None:
        done = status.processed or 0
        rate = self.rate.rows_per_second
        eta = f"{(batch.rows - done) / rate:.0f} s" if rate else "unknown"
        self._logger.info(
            "Job %s (%s) is '%s': %s/%s rows after %.0f s, ETA %s.",
            job_id,
            batch.kind,
            status.status,
            f"{done:,}",
            f"{batch.rows:,}",
            elapsed,
            eta,
        )
