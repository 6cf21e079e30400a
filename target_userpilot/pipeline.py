"""The owner of a run's state: routes profiles to batches, applies job outcomes, lag, stopping.

Threading model: this object lives on the main thread and is the only one to touch run state
(open batches, ids in flight, counters, dead letters, fingerprints, checkpoints). The job
thread (`jobs.py`) gets sealed batches and sends back outcomes on a queue, applied here
between records (`tick`), while waiting for room or for the last job, and on the input timer
(`ticking.py`) when records come slowly. A signal only sets a flag (`signals.py`), noticed at
the same points; stopping, the grace wait, the summary and the cleanup all run here, on the
main path, and `close` removes the run's batch folder whichever way the run ends.

Streams of the same kind share one batch (two tap streams mapped to `users` fill the same
upload).
"""

from __future__ import annotations

import queue
import time
from typing import TYPE_CHECKING, Any

from target_userpilot.batches import BatchFile, LineTooLargeError
from target_userpilot.changes import ChangeFilter
from target_userpilot.checkpoints import Checkpoints
from target_userpilot.deadletters import DeadLetters
from target_userpilot.inflight import InFlight
from target_userpilot.jobs import JobRunner, PollPlan
from target_userpilot.rejections import InvalidShare, Rejections
from target_userpilot.rundir import RunFolder
from target_userpilot.signals import StopRequest
from target_userpilot.summary import (
    KIND_NOUN,
    Counters,
    RunFacts,
    dead_letter_warning,
    plural,
    summary_line,
)

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from target_userpilot.changes import Store
    from target_userpilot.profiles import Kind, Profile
    from target_userpilot.settings import Settings
    from target_userpilot.wire import UserpilotClient

# The checkpoint lag is looked at after this many records, or this many seconds, if sooner.
LAG_CHECK_RECORDS = 256
LAG_CHECK_SECONDS = 1.0
# Longest the main thread waits for an outcome before it looks at signals and the clock.
WAIT_TICK = 0.25
# Batches of one kind handed to the job thread and not settled before the reader waits:
# one in flight and one ready keep the slot busy; more would only fill the disk.
MAX_UNSETTLED_PER_KIND = 2


class Pipeline:
    """Batches profiles per kind, hands full batches to the job thread, applies outcomes."""

    def __init__(  # noqa: PLR0913 - each is a distinct collaborator
        self,
        settings: Settings,
        *,
        client: UserpilotClient | None,
        emit_state: Callable[[dict[str, Any]], None],
        logger: logging.Logger,
        fingerprints: Store | None = None,
        stop: StopRequest | None = None,
    ) -> None:
        """`client` is None for a dry run (nothing is uploaded). Nothing starts until `start`."""
        self.settings = settings
        self.logger = logger
        self.position = 0
        self.counters = Counters()
        self.checkpoints = Checkpoints(emit_state)
        self.dead_letters = DeadLetters(settings.dead_letter_path, settings.on_invalid_record)
        self._rejections = Rejections(self.dead_letters, logger)
        self._invalid_share = InvalidShare(
            settings.max_invalid_share, self.checkpoints, self.dead_letters
        )
        self._changes = ChangeFilter(fingerprints) if fingerprints is not None else None
        self.stop_request = stop or StopRequest()
        self._folder = RunFolder(settings.batch_dir)
        self._batch_dir: Path | None = None
        self._open: dict[Kind, BatchFile] = {}
        self._opened_at: dict[Kind, float] = {}
        self._in_flight = InFlight(
            checkpoints=self.checkpoints,
            counters=self.counters,
            rejections=self._rejections,
            changes=self._changes,
            logger=logger,
        )
        self._started = time.monotonic()
        self._next_lag_check = self._started + LAG_CHECK_SECONDS
        self._lag_checked_at = 0
        self._client = client
        self.runner: JobRunner | None = None
        if client is not None and not settings.dry_run:
            self.runner = JobRunner(
                client,
                job_timeout=settings.job_timeout,
                job_retries=settings.job_retries,
                poll=PollPlan(max_interval=settings.poll_max_interval),
                logger=logger,
            )

    def start(self) -> None:
        """Create the run's batch folder (removing dead runs' ones) and start the job thread."""
        self._batch_dir = self._folder.open()
        if self._folder.removed_stale:
            self.logger.info(
                "Removed %s of runs no longer alive from %s.",
                plural(self._folder.removed_stale, "batch folder"),
                self.settings.batch_dir,
            )
        if self.settings.dry_run:
            self.settings.dry_run_dir.mkdir(parents=True, exist_ok=True)
        if self.runner is not None:
            self.runner.start()

    # --- the Singer side calls these, in the main thread -------------------------------

    def next_position(self) -> int:
        """Number the next RECORD; applies what the job thread reported meanwhile."""
        self.position += 1
        self.counters.records_in += 1
        self.tick()
        return self.position

    def tick(self) -> None:
        """Apply job outcomes, notice a signal, ship a batch holding STATE back too long."""
        self._apply_ready()
        self.stop_request.raise_if_requested()
        now = time.monotonic()
        if now >= self._next_lag_check or (
            self.position - self._lag_checked_at >= LAG_CHECK_RECORDS
        ):
            self._next_lag_check = now + LAG_CHECK_SECONDS
            self._lag_checked_at = self.position
            self._flush_lagging(now)

    def add_state(self, state: dict[str, Any]) -> None:
        """A STATE message arrived after the records numbered so far."""
        if self.settings.dry_run:
            return
        self.checkpoints.add_state(self.position, state)

    def add(self, kind: Kind, stream: str, position: int, profile: Profile) -> None:
        """Put a profile into its kind's open batch, cutting the batch when it is full."""
        line = None
        batch = self._open.get(kind)
        if self._changes is not None:
            line = profile.line(kind)  # encoded once: for the fingerprint and for the batch
            waiting = batch is not None and profile.id in batch
            if self._changes.unchanged(kind, profile.id, line, waiting=waiting):
                self.counters.unchanged += 1
                self._invalid_share.seen(stream, position, invalid=False)
                return
        if batch is None:
            batch = BatchFile(kind, self._folder_path(), self.settings.limits)
        try:
            fits = batch.add(profile, position, stream, line)
        except LineTooLargeError as exc:
            # The profile with its id, so the letter can be replayed.
            self.reject(kind, stream, position, str(exc), profile.fields(kind))
            return
        self._invalid_share.seen(stream, position, invalid=False)
        if not fits:
            # Full, or a merge that would not fit: ship it; the newer record starts the next.
            self._ship(kind)
            batch = BatchFile(kind, self._folder_path(), self.settings.limits)
            batch.add(profile, position, stream, line)
        if kind not in self._open:
            self._open[kind] = batch
            self._opened_at[kind] = time.monotonic()
            self.checkpoints.hold(batch.path, position)
        if batch.rows >= self.settings.limits.max_rows:
            self._ship(kind)

    def reject(
        self, kind: Kind, stream: str, position: int, reason: str, record: Mapping[str, Any]
    ) -> None:
        """A record that cannot become a profile: dead letter, skip or fail, per the policy."""
        self.counters.invalid += 1
        self._rejections.invalid_record(kind, stream, position, reason, record)
        self._invalid_share.seen(stream, position, invalid=True)

    def flush(self, kind: Kind) -> None:
        """Send the open batch of a kind now (end of input, or an SDK drain)."""
        if kind in self._open:
            self._ship(kind)

    def finish(self) -> None:
        """End of input: ship what is left, wait for every job, release the last STATE."""
        self._invalid_share.finish()
        for kind in list(self._open):
            self._ship(kind)
        if self.runner is not None:
            self.runner.close()
            self._wait_until(lambda: not self._in_flight)
        self.checkpoints.release()
        self._log_end()

    def stop(self, signum: int) -> None:
        """A termination signal: wait up to `termination_grace` for the job in flight, report."""
        grace = self.settings.termination_grace
        current = self._in_flight.current_job
        job = f"Userpilot job {current}" if current else "the job in flight"
        self.logger.warning(
            "Received signal %d: stopping; %s.",
            signum,
            f"waiting up to {grace:g} s (setting `termination_grace`) for {job} to complete"
            if self._in_flight
            else "no job in flight",
        )
        self._stop_early("Stopped before the end of input")

    def fail(self) -> None:
        """A fatal error on the main path: stop as `stop` does, then the caller re-raises."""
        self._stop_early("Failed before the end of input")

    def close(self) -> None:
        """Remove the run's batch folder, release files and connections. Always called."""
        if self.runner is not None:
            self.runner.stop()
        self._open.clear()
        self._folder.remove()
        self.dead_letters.close()
        if self._changes is not None:
            self._changes.close()
        if self._client is not None:
            self._client.close()

    # --- stopping ----------------------------------------------------------------------

    def _stop_early(self, headline: str) -> None:
        """Drop open batches, give the job in flight the grace period, say what was left."""
        for batch in self._open.values():
            batch.discard()
        self._open.clear()
        runner = self.runner
        if runner is not None and self._in_flight:
            runner.close_after_current()
            deadline = time.monotonic() + self.settings.termination_grace
            try:
                self._wait_until(
                    lambda: not runner.alive or self.stop_request.hurried,
                    deadline=deadline,
                    stoppable=False,
                )
            except Exception as exc:  # noqa: BLE001 - the first failure is the one to report
                self.logger.error("While stopping, a job's outcome failed too: %s", exc)  # noqa: TRY400 - one line, no traceback
            if self.stop_request.hurried and runner.alive:
                self.logger.warning("Second signal: not waiting any longer.")
        current = self._in_flight.current_job
        if current is not None and self.runner is not None and self.runner.alive:
            self.logger.error(
                "Stopped with Userpilot job %s still running; its records are not "
                "checkpointed and will be sent again by the next run from the last STATE.",
                current,
            )
        self.logger.warning(
            "%s: %s received, STATE released up to the last confirmed job; rerun from the "
            "last STATE to resume.",
            headline,
            plural(self.counters.records_in, "record"),
        )
        self._log_end()

    def _log_end(self) -> None:
        retries = self._client.stats.retries if self._client is not None else 0
        facts = RunFacts(
            dry_run_dir=self.settings.dry_run_dir if self.settings.dry_run else None,
            retries=retries,
            elapsed=time.monotonic() - self._started,
        )
        self.logger.info(summary_line(self.counters, self.dead_letters, facts))
        warning = dead_letter_warning(self.dead_letters)
        if warning is not None:
            self.logger.warning(warning)

    # --- batches -----------------------------------------------------------------------

    def _folder_path(self) -> Path:
        if self._batch_dir is None:  # a pipeline used without `start` (tests, SDK tools)
            self.start()
        assert self._batch_dir is not None  # noqa: S101 - set by start
        return self._batch_dir

    def _ship(self, kind: Kind) -> None:
        batch = self._open.pop(kind)
        del self._opened_at[kind]
        sealed = batch.seal()
        self.counters.merged += sealed.merged
        if self.runner is None:  # a dry run
            sealed.path.replace(self.settings.dry_run_dir / sealed.path.name)
            self.counters.files_written += 1
            self.counters.profiles_sent[kind] += sealed.rows
            self.checkpoints.settle(sealed.path)
            return
        # Back-pressure: stop reading input while two batches of this kind are on their way.
        self._wait_until(lambda: self._in_flight.of_kind(kind) < MAX_UNSETTLED_PER_KIND)
        self._in_flight.shipped(sealed)
        self.runner.ship(sealed)

    def _flush_lagging(self, now: float) -> None:
        """Ship a half-full batch early when it has held back the newest STATE too long."""
        newest = self.checkpoints.newest_state_position()
        if newest is None:
            return
        for kind, batch in list(self._open.items()):
            first = batch.first_position
            if first is None or first > newest:
                continue
            records = self.position - first
            minutes = (now - self._opened_at[kind]) / 60
            if (
                records >= self.settings.max_checkpoint_lag_records
                or minutes >= self.settings.max_checkpoint_lag_minutes
            ):
                self.logger.info(
                    "Uploading %s early: the batch has held back the newest STATE for %s "
                    "/ %.1f min (settings `max_checkpoint_lag_records`/`_minutes`).",
                    plural(batch.rows, KIND_NOUN[kind]),
                    plural(records, "record"),
                    minutes,
                )
                self.counters.early_flushes += 1
                self._ship(kind)

    # --- waiting for the job thread -----------------------------------------------------

    def _apply_ready(self) -> None:
        if self.runner is None:
            return
        outcomes = self.runner.outcomes
        while not outcomes.empty():
            self._in_flight.apply(outcomes.get_nowait())

    def _wait_until(
        self,
        done: Callable[[], bool],
        *,
        deadline: float | None = None,
        stoppable: bool = True,
    ) -> None:
        """Apply outcomes as they come until `done()`, the deadline, or (`stoppable`) a signal."""
        assert self.runner is not None  # noqa: S101 - only called when jobs run
        while not done():
            if stoppable:
                self.stop_request.raise_if_requested()
            if deadline is not None and time.monotonic() >= deadline:
                return
            try:
                outcome = self.runner.outcomes.get(timeout=WAIT_TICK)
            except queue.Empty:
                continue
            self._in_flight.apply(outcome)
