"""The job thread: one sealed batch at a time through Userpilot's single job slot.

Threading model (one owner):
- The main thread reads input and owns every piece of run state: open batches, the ids in
  flight, counters, dead letters, fingerprints, checkpoints. It hands sealed batches to the
  job thread with `JobRunner.ship`.
- The job thread owns only its conversation with Userpilot about the batch it holds: submit,
  poll, resubmit a failed job, halve a batch refused as too large (413), isolate the rows an
  upload refuses (400); and, at the end of a `hard_delete` run, the delete requests of each
  deletion chunk it is given (`ship_deletion`), paced by its `Deleter`. It touches no pipeline
  state: it puts each outcome (`JobStarted`, `PartDone`, `RowsRefused`, `BatchDone`,
  `DeletionAccepted`, `RunnerFailed`) on `outcomes`, a queue the main thread drains between
  records, while it waits, and on a timer when input is slow.
- The two queues and the stop event are all the threads share; a sealed batch belongs to the
  job thread from `ship` until the main thread reads its `BatchDone`.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from target_userpilot.errors import UserFacingError
from target_userpilot.kinds import NOUN, count_of
from target_userpilot.run.deletions import DeletionChunk
from target_userpilot.run.signals import WaitStopped
from target_userpilot.run.summary import plural
from target_userpilot.wire import JobStatus, PayloadTooLargeError, RejectedUploadError

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Sequence

    from target_userpilot.kinds import Kind
    from target_userpilot.run.batches import SealedBatch
    from target_userpilot.wire import UserpilotClient
    from target_userpilot.wire.deletions import Accepted

# Before the first job reports progress nothing is known of the rate: poll soon, then back off.
FIRST_POLL = 0.05
# Around the expected end, poll at this share of the job's expected length (within bounds),
# so a finished job is noticed within a small fraction of its own duration.
DENSE_SHARE = 0.005
DENSE_MIN, DENSE_MAX = 0.02, 1.0
# A job running past its expected end is polled at most this far apart.
OVERDUE_MAX = 2.0
# Past the expected end, each poll waits this much longer than the one before. The server
# often holds a job a little past its last row (the API reference's `pending_refresh`): at
# 1.5 the end of a 5 s job was noticed 0.12 s late on average (2% of the slot), at 1.2 in
# 0.05 s, for a few more polls.
OVERDUE_GROWTH = 1.2
# A 413 for one row smaller than this is not Userpilot's 50 MB limit: a proxy or a wrong host.
SMALL_ROW_BYTES = 1_000_000
# Rows an upload may refuse (400) before the run stops: past this it is not a bad row but a
# systematic problem (the format, a setting), and isolating each row would cost many uploads.
MAX_REFUSED_ROWS = 10


class JobFailedError(UserFacingError):
    """A job ended `failed` more often than `job_retries` allows, or ran past its timeout."""


class JobStopped(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The main thread asked the job thread to stop while it waited for a job."""


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
        return min(self.max_interval, OVERDUE_MAX, dense * OVERDUE_GROWTH**overdue_polls)


class RateEstimate:
    """Rows per second the server processes, learnt from live progress and finished jobs."""

    def __init__(self) -> None:
        """No estimate until a job has reported something."""
        self.rows_per_second: float | None = None

    def learn(self, rows: int, seconds: float) -> None:
        """Take a measured rate (rows processed between two polls of a running job) as it is.

        The newest measurement is trusted at once: a stale prior blended in made the first
        jobs' polls late (gaps of 10.7 s, 5.4 s, 2.0 s between jobs of 5 s).
        """
        if rows > 0 and seconds > 0:
            self.rows_per_second = rows / seconds

    def at_least(self, rows: int, seconds: float) -> None:
        """A rate the server ran at least at: raises the estimate, never lowers it.

        Rows over the time since a poll that saw the job waiting, or since submission, is
        only a lower bound: processing started somewhere in between, and a finished job was
        noticed some time after it ended. Taken as the rate, it made the next job's first poll
        come 25 s after a 5 s job (measured), and each later job halve that error only.
        """
        if rows > 0 and seconds > 0:
            rate = rows / seconds
            if self.rows_per_second is None or rate > self.rows_per_second:
                self.rows_per_second = rate


# Statuses of a job that has not started processing its rows (its time there is queue time).
WAITING_STATUSES = frozenset({"queued", "validating", "pending", "created"})


class _Progress:
    """What the polls of one job said: when processing started, how far it got, how fast."""

    def __init__(self, submitted_at: float) -> None:
        self.submitted_at = submitted_at
        self.started = submitted_at  # the last poll that still saw the job waiting
        self.processed = 0
        self.seen_at = submitted_at
        self.measured = False  # a rate measured between two polls of this job, mid-way

    def saw(self, status: JobStatus, now: float, rows: int, rate: RateEstimate) -> None:
        """Take one poll's status; teach `rate` what it says of the server's pace."""
        processed = status.processed or 0
        if status.status.lower() in WAITING_STATUSES and not processed:
            self.started = now
        elif 0 < processed < rows:  # mid-way: a finished count says nothing of the pace
            if self.processed:
                rate.learn(processed - self.processed, now - self.seen_at)
                self.measured = True
            else:
                rate.at_least(processed, now - self.started)
        self.processed = processed
        self.seen_at = now

    def expected_seconds(self, rows: int, rate: float | None) -> float | None:
        """The job's expected length from submission, re-estimated from the latest poll."""
        if rate is None:
            return None
        if self.processed:
            return self.seen_at - self.submitted_at + max(0, rows - self.processed) / rate
        return self.started - self.submitted_at + rows / rate

    def longest_wait(self, now: float) -> float | None:
        """How long the next poll may wait while this job's pace is only bounded from below.

        Until two polls have measured it, poll again within the time processing has run so
        far: the second poll then measures the pace, however wrong the bound was.
        """
        if self.measured or not self.processed:
            return None
        return max(FIRST_POLL, now - self.started)


@dataclass(frozen=True)
class JobOutcome:
    """What one finished job did, for the per-job log line and the summary."""

    job_id: str
    status: JobStatus
    waited: float
    seconds: float
    polls: int
    attempts: int
    rate: float | None = None  # rows per second estimated once the job completed


# --- outcomes: the only things the job thread tells the main thread ----------------------------


@dataclass(frozen=True)
class JobStarted:
    """A job was created for (part of) a batch; the id to name if the run stops now."""

    job_id: str


@dataclass(frozen=True)
class PartDone:
    """A job completed for `part`, the batch itself or a piece of it cut after a 413/400."""

    batch: SealedBatch
    part: SealedBatch
    outcome: JobOutcome


@dataclass(frozen=True)
class RowsRefused:
    """Userpilot refused every row of `part` (one row, most often); `reason` is its word."""

    batch: SealedBatch
    part: SealedBatch
    reason: str


@dataclass(frozen=True)
class BatchDone:
    """Every row of `batch` is confirmed or refused: its records are settled."""

    batch: SealedBatch


@dataclass(frozen=True)
class DeletionAccepted:
    """Userpilot answered 202 to the delete request of `chunk`."""

    chunk: DeletionChunk
    accepted: Accepted


@dataclass(frozen=True)
class RunnerFailed:
    """The job thread stopped on an error; the main thread raises it."""

    error: BaseException


# What a batch's jobs report (InFlight applies them); with a deletion's answer, every outcome.
BatchOutcome = JobStarted | PartDone | RowsRefused | BatchDone | RunnerFailed
Outcome = BatchOutcome | DeletionAccepted


class Deleter(Protocol):
    """What the job thread needs to send deletions (`wire.deletions.DeleteSender`)."""

    def delete(self, kind: Kind, ids: Sequence[str]) -> Accepted:
        """One paced delete request; raises `UserpilotError` when it is not accepted."""
        ...


class _Refusals:
    """Counts what uploads of one batch refused (400), to tell bad rows from a bad format."""

    def __init__(self, batch: SealedBatch) -> None:
        self.batch = batch
        self.rows = 0
        # Halving finds one bad row in about 2*log2(rows) refused uploads.
        self.budget = (MAX_REFUSED_ROWS + 1) * (2 * math.ceil(math.log2(batch.rows + 1)) + 2)
        self.uploads = 0

    def upload_refused(self, error: RejectedUploadError) -> None:
        self.uploads += 1
        if self.uploads > self.budget:
            self._stop(error)

    def row_refused(self, error: RejectedUploadError) -> None:
        self.rows += 1
        if self.rows > MAX_REFUSED_ROWS or self.rows > max(1, self.batch.rows / 2):
            self._stop(error)

    def _stop(self, error: RejectedUploadError) -> None:
        batch = self.batch
        msg = (
            f"Userpilot refused {plural(self.rows, 'row')} of a batch of "
            f"{count_of(batch.kind, batch.rows)} "
            f"({plural(self.uploads, 'upload')} refused), last with: {error}. "
            "That many is not a bad row but a systematic problem (the profiles' format, a "
            "mapping setting such as `arrays` or `nulls`): fix it and rerun. No STATE past "
            "these records was emitted."
        )
        raise JobFailedError(msg) from error


class JobRunner:
    """The job thread: takes sealed batches in order and reports what became of them."""

    def __init__(  # noqa: PLR0913 - each is a distinct collaborator or setting
        self,
        client: UserpilotClient,
        *,
        job_timeout: float,
        job_retries: int,
        poll: PollPlan,
        logger: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
        deleter: Deleter | None = None,
        before_send: Callable[[], None] = lambda: None,
        outcomes: queue.SimpleQueue[Any] | None = None,
    ) -> None:
        """Start nothing yet; `start()` launches the thread. `deleter`: for `ship_deletion`.

        `before_send` runs before each upload and delete request (the fingerprint store's
        check that the run still holds its lock); what it raises stops the run.
        `outcomes`: the run's outcome queue, when another thread (events) reports on it too.
        """
        self._client = client
        self._deleter = deleter
        self._before_send = before_send
        self._job_timeout = job_timeout
        self._job_retries = job_retries
        self._poll = poll
        self._logger = logger
        self._clock = clock
        self._inbox: queue.SimpleQueue[SealedBatch | DeletionChunk | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._last = threading.Event()  # finish the batch in hand, take no other
        self._thread = threading.Thread(target=self._run, name="userpilot-jobs", daemon=True)
        self.outcomes: queue.SimpleQueue[Any] = (
            outcomes if outcomes is not None else queue.SimpleQueue()
        )
        self.rate = RateEstimate()  # the job thread's own: read it only there

    def start(self) -> None:
        """Launch the job thread."""
        self._thread.start()

    def ship(self, batch: SealedBatch) -> None:
        """Hand a sealed batch (and its file) to the job thread."""
        self._inbox.put(batch)

    def ship_deletion(self, chunk: DeletionChunk) -> None:
        """Hand one delete request's ids to the job thread (after the batches shipped before)."""
        if self._deleter is None:
            msg = "a JobRunner without a deleter cannot send deletions"
            raise ValueError(msg)
        self._inbox.put(chunk)

    def close(self) -> None:
        """No more batches: the thread ends once it has reported those it holds."""
        self._inbox.put(None)

    def close_after_current(self) -> None:
        """Finish the batch in hand (a termination's grace period), then end the thread."""
        self._last.set()
        self._inbox.put(None)

    def stop(self) -> None:
        """Stop waiting for Userpilot and end the thread as soon as it can."""
        self._stop.set()
        self._inbox.put(None)

    @property
    def alive(self) -> bool:
        """Whether the thread may still report something."""
        return self._thread.is_alive() or not self.outcomes.empty()

    def _run(self) -> None:
        try:
            while not (self._stop.is_set() or self._last.is_set()):
                item = self._inbox.get()
                if item is None or self._stop.is_set() or self._last.is_set():
                    return
                if isinstance(item, DeletionChunk):
                    self._delete(item)
                else:
                    self._send(item)
        except (JobStopped, WaitStopped):
            return
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread, which raises it
            self.outcomes.put(RunnerFailed(exc))

    def _send(self, batch: SealedBatch) -> None:
        """Send one batch: halve it on 413, isolate refused rows on 400, report each part."""
        pending = [batch]
        refusals = _Refusals(batch)
        while pending:
            part = pending.pop(0)
            try:
                outcome = self._run_job(part)
            except PayloadTooLargeError as exc:
                if part.rows <= 1:
                    self._too_large(batch, part, exc)
                    continue
                self._logger.warning(
                    "Userpilot answered 413 for %s (%s bytes); resubmitting as two halves. "
                    "Lower `max_batch_bytes`/`max_batch_rows`.",
                    count_of(part.kind, part.rows),
                    f"{part.size:,}",
                )
                pending[0:0] = part.split()
                continue
            except RejectedUploadError as exc:
                if part.rows <= 1:
                    refusals.row_refused(exc)
                    self.outcomes.put(RowsRefused(batch, part, f"refused by Userpilot: {exc}"))
                    continue
                refusals.upload_refused(exc)
                self._logger.warning(
                    "Userpilot refused an upload of %s: %s; halving it to find the rows it "
                    "refuses.",
                    plural(part.rows, "row"),
                    exc,
                )
                pending[0:0] = part.split()
                continue
            self.outcomes.put(PartDone(batch, part, outcome))
        self.outcomes.put(BatchDone(batch))

    def _delete(self, chunk: DeletionChunk) -> None:
        assert self._deleter is not None  # noqa: S101 - checked by ship_deletion
        self._before_send()
        accepted = self._deleter.delete(chunk.kind, chunk.ids)
        self.outcomes.put(DeletionAccepted(chunk, accepted))

    def _too_large(self, batch: SealedBatch, part: SealedBatch, exc: PayloadTooLargeError) -> None:
        if part.size < SMALL_ROW_BYTES:
            msg = (
                f"the upload of a single {NOUN[part.kind]} "
                f"of {part.size:,} bytes was refused as too large (HTTP 413), far below "
                "Userpilot's 50 MB: check that `api_url` points at Userpilot's API and that no "
                "proxy in between (HTTPS_PROXY) limits request bodies. No STATE past it was "
                "emitted."
            )
            raise JobFailedError(msg) from exc
        self.outcomes.put(
            RowsRefused(batch, part, f"Userpilot refused the upload as too large: {exc}")
        )

    def _run_job(self, batch: SealedBatch) -> JobOutcome:
        for attempt in range(1, self._job_retries + 2):
            queued_at = self._clock()
            self._before_send()
            job_id = self._client.submit(batch.kind, batch.path, rows=batch.rows)
            submitted_at = self._clock()
            self.outcomes.put(JobStarted(job_id))
            status, polls, started = self._wait(job_id, batch, submitted_at)
            finished_at = self._clock()
            if status.state == "completed":
                # Noticed at some poll after it ended: the pace was at least this.
                self.rate.at_least(batch.rows, finished_at - started)
                return JobOutcome(
                    job_id=job_id,
                    status=status,
                    waited=submitted_at - queued_at,
                    seconds=finished_at - submitted_at,
                    polls=polls,
                    attempts=attempt,
                    rate=self.rate.rows_per_second,
                )
            if attempt <= self._job_retries:
                self._logger.warning(
                    "Userpilot job %s (%s) ended '%s'; resubmitting (%d of %d).",
                    job_id,
                    count_of(batch.kind, batch.rows),
                    status.status,
                    attempt,
                    self._job_retries,
                )
                continue
            msg = (
                f"Userpilot job {job_id} ({count_of(batch.kind, batch.rows)}) ended "
                f"'{status.status}' after {plural(attempt, 'attempt')}: {dict(status.raw)}. "
                "No STATE past these records was emitted; rerun to resume, or raise `job_retries`."
            )
            raise JobFailedError(msg)
        raise AssertionError  # pragma: no cover - the loop always returns or raises

    def _wait(
        self, job_id: str, batch: SealedBatch, submitted_at: float
    ) -> tuple[JobStatus, int, float]:
        """Poll one job until it ends: its last status, the polls, when processing started."""
        polls = overdue = 0
        last_log = submitted_at
        progress = _Progress(submitted_at)
        while True:
            elapsed = self._clock() - submitted_at
            expected = progress.expected_seconds(batch.rows, self.rate.rows_per_second)
            if expected is None or elapsed >= expected:
                overdue += 1
            delay = self._poll.delay(elapsed, expected, overdue - 1)
            longest = progress.longest_wait(self._clock())
            if self._stop.wait(delay if longest is None else min(delay, longest)):
                raise JobStopped
            status = self._client.get_job(job_id)
            polls += 1
            now = self._clock()
            if status.state != "running":
                return status, polls, progress.started
            progress.saw(status, now, batch.rows, self.rate)
            if now - submitted_at > self._job_timeout:
                rows = count_of(batch.kind, batch.rows)
                msg = (
                    f"Userpilot job {job_id} ({rows}) is still "
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
