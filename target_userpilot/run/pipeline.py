"""The owner of a run's state: routes profiles to batches, applies job outcomes, lag, stopping.

Threading model: this object lives on the main thread and is the only one to touch run state
(open batches, ids in flight, counters, dead letters, fingerprints, checkpoints). The job
thread (`jobs.py`) gets sealed batches and sends back outcomes on a queue, applied here
between records (`tick`), while waiting for room or for the last job, and on the input timer
(`ticking.py`) when records come slowly. A signal only sets a flag (`signals.py`), noticed at
the same points; stopping, the grace wait, the summary and the cleanup all run here, on the
main path, and `close` removes the run's batch folder whichever way the run ends.

Streams of the same kind share one batch (two tap streams mapped to `users` fill the same
upload). A full batch waits in the spool (`spool.py`) until the job thread needs it, so input
is read at the target's speed, not Userpilot's; reading pauses only past `max_spool_bytes`.

Events (`event_flow.py`) go to a thread of their own (`event_worker.py`), which reports on the
same outcome queue as the job thread; an event waits for the batch holding its user.

With `hard_delete`, deletion records go to a `DeletionLedger` (see `deletions.py` for the rule
and the design): a pending deletion holds STATE back like a record in an open batch; at the end
of input, once the guard allows it and every job before has completed, its chunks go to the
job thread in record order, and each 202 lets STATE pass that chunk.
"""

from __future__ import annotations

import json
import math
import os
import queue
import time
from typing import TYPE_CHECKING, Any

from typing_extensions import assert_never

from target_userpilot.kinds import count_of
from target_userpilot.run.batches import BatchFile, LineTooLargeError
from target_userpilot.run.changes import ChangeFilter
from target_userpilot.run.checkpoints import DELETIONS_HOLD, Checkpoints, Hold
from target_userpilot.run.deadletters import DRY_RUN_LETTERS, DeadLetters, InvalidRecordError
from target_userpilot.run.deletions import DeletionLedger, Upsert
from target_userpilot.run.event_flow import MAX_PENDING, EventFlow
from target_userpilot.run.event_worker import EventRefused, EventSent, EventWorker
from target_userpilot.run.guardnote import GuardNote
from target_userpilot.run.inflight import InFlight
from target_userpilot.run.jobs import (
    BatchDone,
    DeletionAccepted,
    JobRunner,
    JobStarted,
    PartDone,
    PollPlan,
    RowsRefused,
    RunnerFailed,
)
from target_userpilot.run.rejections import InvalidShare, Rejections
from target_userpilot.run.rundir import RunFolder, dry_run_folder
from target_userpilot.run.signals import StopRequest
from target_userpilot.run.spool import Spool
from target_userpilot.run.summary import (
    Counters,
    RunFacts,
    dead_letter_warning,
    duration,
    plural,
    summary_line,
)

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from target_userpilot.events import Event
    from target_userpilot.kinds import Kind
    from target_userpilot.profiles import Profile
    from target_userpilot.run.changes import Store
    from target_userpilot.run.deletions import DeletionChunk
    from target_userpilot.run.event_worker import EventOutcome
    from target_userpilot.run.jobs import Deleter, Outcome
    from target_userpilot.run.runsettings import RunSettings
    from target_userpilot.wire import UserpilotClient
    from target_userpilot.wire.track import TrackSender

# The checkpoint lag is looked at after this many records, or this many seconds, if sooner.
LAG_CHECK_RECORDS = 256
LAG_CHECK_SECONDS = 1.0
# Longest the main thread waits for an outcome before it looks at signals and the clock.
WAIT_TICK = 0.25
# Batches handed to the job thread and not settled. While input comes, only the one in flight:
# the others wait in the spool, where newer records of their ids still merge into them (a
# second, sealed batch took 0.823 rows a record at 20% duplicates; one, 0.809). Once input
# ended nothing can merge: one more, sealed ahead, spares each gap between jobs the seal
# (0.08 s a gap measured, against 0.004 s with the next batch ready).
MAX_HANDED_READING = 1
MAX_HANDED_ENDED = 2


class Pipeline:
    """Batches profiles per kind, hands full batches to the job thread, applies outcomes."""

    def __init__(  # noqa: PLR0913 - each is a distinct collaborator
        self,
        settings: RunSettings,
        *,
        client: UserpilotClient | None,
        emit_state: Callable[[dict[str, Any]], None],
        logger: logging.Logger,
        fingerprints: Store | None = None,
        stop: StopRequest | None = None,
        deleter: Deleter | None = None,
        track: Callable[[Callable[[float], None]], TrackSender] | None = None,
        account: str = "",
        log_metrics: Callable[[Counters], None] | None = None,
    ) -> None:
        """`client` is None for a dry run (nothing is uploaded). Nothing starts until `start`.

        `deleter` sends a `hard_delete` run's deletions (None: a dry run, or no `hard_delete`).
        `track` opens the event thread's Track API sender around its sleep (None: a dry run).
        `account` names the Userpilot account (host and key hash) the deletion guard's note
        belongs to. `log_metrics` writes the end-of-run counters as Singer metrics (the SDK's
        logger, so the run stays free of the SDK).
        """
        self.settings = settings
        self.logger = logger
        self._log_metrics = log_metrics
        self.position = 0
        self.counters = Counters()
        self.checkpoints = Checkpoints(emit_state)
        # A fresh folder per dry run: no earlier run's files beside this one's, none overwritten.
        self._dry_dir = dry_run_folder(settings.dry_run_dir, time.time(), os.getpid())
        # A dry run's letters go beside its files: the real file holds only real runs' letters.
        letters_path = (
            self._dry_dir / DRY_RUN_LETTERS if settings.dry_run else settings.dead_letter_path
        )
        self.dead_letters = DeadLetters(
            letters_path,
            settings.on_invalid_record,
            setting="dry_run_dir" if settings.dry_run else "dead_letter_path",
        )
        self._rejections = Rejections(self.dead_letters, logger)
        self._invalid_share = InvalidShare(
            settings.max_invalid_share, self.checkpoints, self.dead_letters
        )
        self._changes = ChangeFilter(fingerprints) if fingerprints is not None else None
        self.stop_request = stop or StopRequest()
        self._folder = RunFolder(settings.batch_dir)
        self._batch_dir: Path | None = None
        self._open: dict[Kind, BatchFile] = {}
        self._spool = Spool()
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
        self._deletions = DeletionLedger() if settings.hard_delete else None
        self._guard_note = GuardNote(settings.batch_dir, account or settings.api_url)
        self._deletions_hold = math.inf  # the position DELETIONS_HOLD holds from
        self._ended = False  # `finish` began: every record was read
        self.runner: JobRunner | None = None
        self._events_worker: EventWorker | None = None
        outcomes: queue.SimpleQueue[Outcome | EventOutcome] = queue.SimpleQueue()
        if client is not None and not settings.dry_run:
            # Before each upload, delete request and event: does this run still hold the lock?
            before_send = fingerprints.check_session if fingerprints is not None else _nothing
            if track is not None:
                self._events_worker = EventWorker(track, outcomes, before_send=before_send)
            self.runner = JobRunner(
                client,
                job_timeout=settings.job_timeout,
                job_retries=settings.job_retries,
                poll=PollPlan(max_interval=settings.poll_max_interval),
                logger=logger,
                deleter=deleter,
                before_send=before_send,
                outcomes=outcomes,
            )
        self._events = EventFlow(
            checkpoints=self.checkpoints,
            counters=self.counters,
            letters=self.dead_letters,
            changes=self._changes,
            worker=self._events_worker,
            dry_run_dir=self._dry_dir if settings.dry_run else None,
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
            self._dry_dir.mkdir(parents=True)
        if self.runner is not None:
            self.runner.start()
        if self._events_worker is not None:
            self._events_worker.start()

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
        if (
            self._deletions is not None
            and self._deletions.upsert(kind, profile.id) is Upsert.CANCELLED
        ):
            # The last word for an id wins: this record re-creates what an earlier one deleted.
            self.counters.deletions_cancelled += 1
            self._hold_deletions()
        line = None
        batch = self._open.get(kind)
        in_open = batch is not None and profile.id in batch
        in_spool = not in_open and (kind, profile.id) in self._spool
        if self._changes is not None:
            line = profile.line(kind)  # encoded once: for the fingerprint and for the batch
            waiting = in_open or in_spool
            if self._changes.unchanged(kind, profile.id, line, waiting=waiting):
                self.counters.unchanged += 1
                self._invalid_share.seen(stream, position, invalid=False)
                return
        if batch is None:
            batch = BatchFile(kind, self._folder_path(), self.settings.limits)
        try:
            # An id waiting in a full batch takes the newer values there: one row, not two.
            if in_spool and self._spool.merge(
                kind, profile, position, stream, line or profile.line(kind)
            ):
                self._invalid_share.seen(stream, position, invalid=False)
                return
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
            self.checkpoints.hold(Hold("batch", str(batch.path)), position)
        self._events.gates.added(kind, profile.id, batch.path)
        if batch.rows >= self.settings.limits.max_rows:
            self._ship(kind)

    def add_event(self, stream: str, position: int, event: Event, identity: str) -> None:
        """An event: sent once its user's batch (if any) completed; the reader may wait."""
        self._invalid_share.seen(stream, position, invalid=False)
        if self.runner is not None and self._events.pending >= MAX_PENDING:
            blocking = self._events.blocking_batch()
            for kind, batch in list(self._open.items()):
                if batch.path == blocking:  # the events wait for it: it must go now
                    self._ship(kind)
            self._wait_until(lambda: self._events.pending < MAX_PENDING)
        self._events.add(stream, position, event, identity)

    def delete(self, kind: Kind, stream: str, position: int, profile_id: str) -> None:
        """A record (`hard_delete`) deletes this profile, at the end of input (see `finish`)."""
        if self._deletions is None:
            msg = "deletion records need `hard_delete`"
            raise ValueError(msg)
        self._deletions.delete(kind, profile_id, position)
        self.checkpoints.mark(position)  # the deletions' hold moves here once those before go
        self._invalid_share.seen(stream, position, invalid=False)
        if position < self._deletions_hold:
            self._hold_deletions()

    def reject(  # noqa: PLR0913 - the record's place, and what `fail` raises
        self,
        kind: str,
        stream: str,
        position: int,
        reason: str,
        record: Mapping[str, Any],
        *,
        error: type[InvalidRecordError] = InvalidRecordError,
    ) -> None:
        """A record that cannot become a profile: dead letter, skip or `error`, per the policy."""
        self.counters.invalid += 1
        self._rejections.invalid_record(kind, stream, position, reason, record, error=error)
        self._invalid_share.seen(stream, position, invalid=True)

    def flush(self, kind: Kind) -> None:
        """Send the open batch of a kind now (end of input, or an SDK drain)."""
        if kind in self._open:
            self._ship(kind)

    def finish(self) -> None:
        """End of input: ship what is left, wait for every job, release the last STATE."""
        self._ended = True
        self._invalid_share.finish()
        for kind in list(self._open):
            self._ship(kind)
        if self.runner is not None:
            self._feed()  # nothing merges any more: the next batch may be sealed ahead
            self._log_waiting(f"Input read in full ({plural(self.position, 'record')})")
        if self._deletions is not None:
            self._send_deletions(self._deletions)
        if self.runner is not None:
            # Every waiting batch goes to the job thread before it is told no more will come.
            self._wait_until(lambda: not self._spool)
            self.runner.close()
            self._wait_until(lambda: not self._busy())
        self._in_flight.all_refused.finish()
        if self._events_worker is not None:
            self._events_worker.close()
        self.checkpoints.release()
        if self._deletions is not None and self.runner is not None:
            self._guard_note.clear()  # every deletion this run was allowed is accepted
        self._log_end()

    def stop(self, signum: int) -> None:
        """A termination signal: wait up to `termination_grace` for the job in flight, report."""
        grace = self.settings.termination_grace
        self.logger.warning(
            "Received signal %d: stopping; %s.",
            signum,
            f"waiting up to {grace:g} s (setting `termination_grace`) for {self._in_hand()}"
            if self._busy()
            else "nothing in flight",
        )
        self._stop_early(
            "Stopped after reading the whole input"
            if self._ended
            else "Stopped before the end of input"
        )

    def _in_hand(self) -> str:
        """What the job thread is busy with, as the stop report names it."""
        if self._in_flight or self._spool:
            current = self._in_flight.current_job
            return f"Userpilot job {current}" if current else "the job in flight"
        if self._deletions is not None and self._deletions.unanswered:
            return "the delete request in flight"
        return "the events waiting to be sent"

    def fail(self) -> None:
        """A fatal error on the main path: stop as `stop` does, then the caller re-raises."""
        self._stop_early(
            "Failed at the end of input" if self._ended else "Failed before the end of input"
        )

    def close(self) -> None:
        """Remove the run's batch folder, release files and connections. Always called."""
        self.stop_request.abandon()
        if self.runner is not None:
            self.runner.stop()
        if self._events_worker is not None:
            self._events_worker.stop()
        self._events.close()
        self._open.clear()
        self._folder.remove()
        self.dead_letters.close()
        if self._changes is not None:
            self._changes.close()
        if self._client is not None:
            self._client.close()

    # --- stopping ----------------------------------------------------------------------

    def _stop_early(self, headline: str) -> None:
        """Drop open and waiting batches, give the job in flight the grace, say what was left."""
        for batch in self._open.values():
            batch.discard()
        self._open.clear()
        self._spool.discard()
        runner = self.runner
        if runner is not None and self._busy():
            runner.close_after_current()
            deadline = time.monotonic() + self.settings.termination_grace
            try:
                self._wait_until(
                    lambda: not runner.alive or self.stop_request.hurried,
                    deadline=deadline,
                    stoppable=False,
                )
            except Exception as exc:  # noqa: BLE001 - the first failure is the one to report
                # The first failure is the one ERROR line; this one only adds to it.
                self.logger.warning("While stopping, a job's outcome failed too: %s", exc)
            if self.stop_request.hurried and runner.alive:
                self.logger.warning("Second signal: not waiting any longer.")
        current = self._in_flight.current_job
        if current is not None and self.runner is not None and self.runner.alive:
            # A warning: the stop's cause (a signal, or the failure) has the one ERROR line.
            self.logger.warning(
                "Stopped with Userpilot job %s still running; its records are not "
                "checkpointed and will be sent again by the next run from the last STATE.",
                current,
            )
        self._report_unsent_deletions()
        self.logger.warning(
            "%s: %s received, STATE released up to what Userpilot confirmed; rerun from the "
            "last STATE to resume.",
            headline,
            plural(self.counters.records_in, "record"),
        )
        self._log_end()

    def _report_unsent_deletions(self) -> None:
        """Deletions read but never accepted: no STATE covers them, the next run sends them."""
        if self._deletions is None or self.settings.dry_run:
            return
        kinds: tuple[Kind, ...] = ("users", "companies")
        counts = {kind: self._deletions.counts(kind) for kind in kinds}
        unsent = {kind: c.pending + c.sent - c.accepted for kind, c in counts.items()}
        if any(unsent.values()):
            self.logger.warning(
                "The deletion of %s was not accepted by Userpilot (never sent, or no acceptance "
                "came back): no STATE covers it, so the next run from the last STATE sends it "
                "again.",
                " and ".join(count_of(kind, n) for kind, n in unsent.items() if n),
            )

    def _log_end(self) -> None:
        retries = self._client.stats.retries if self._client is not None else 0
        if self._events_worker is not None:  # a count its thread only adds to
            retries += self._events_worker.sender.stats.retries
        facts = RunFacts(
            dry_run_dir=self._dry_dir if self.settings.dry_run else None,
            retries=retries,
            elapsed=time.monotonic() - self._started,
        )
        self.logger.info(summary_line(self.counters, self.dead_letters, facts))
        if self._log_metrics is not None:
            self._log_metrics(self.counters)
        warning = dead_letter_warning(self.dead_letters)
        if warning is not None:
            self.logger.warning(warning)

    # --- deletions ---------------------------------------------------------------------

    def _send_deletions(self, ledger: DeletionLedger) -> None:
        """End of input: the guard, then every job before, then the deletions in record order."""
        limit = self.settings.max_deletes_per_run
        carried = self._guard_note.carried(ledger.pending())
        if carried:
            self.logger.info(
                "%s of this run were allowed to an earlier run (stopped or killed) that did not "
                "see them all accepted: they count as allowed (`max_deletes_per_run`).",
                plural(carried, "deletion"),
            )
        if self.runner is None:
            self._write_deletions(ledger.seal(limit, carried=carried))
            return
        # The jobs first: an upsert before a deletion of its id must not land after it, and a
        # run the guard stops still releases the STATE of every record before its deletions.
        self._wait_until(lambda: not (self._in_flight or self._spool))
        chunks = ledger.seal(limit, carried=carried)
        if chunks:
            # Before the first request: a resume of this run must be allowed them again.
            allowed: dict[str, list[str]] = {}
            for chunk in chunks:
                allowed.setdefault(chunk.kind, []).extend(chunk.ids)
            self._guard_note.allow(allowed)
        for chunk in chunks:
            self.runner.ship_deletion(chunk)
        self._hold_deletions()

    def _write_deletions(self, chunks: list[DeletionChunk]) -> None:
        """A dry run: each delete request's body as a file in its folder, nothing sent."""
        for number, chunk in enumerate(chunks, 1):
            path = self._dry_dir / f"delete-{chunk.kind}-{number:04d}.json"
            path.write_text(json.dumps(chunk.body()) + "\n")
            self.logger.debug(
                "Would delete %s: %s", count_of(chunk.kind, len(chunk.ids)), chunk.ids
            )
            self.counters.deleted[chunk.kind] += len(chunk.ids)
            self.counters.delete_requests += 1

    def _deletion_accepted(self, chunk: DeletionChunk) -> None:
        """A 202: forget the ids' fingerprints, then let STATE pass the chunk."""
        assert self._deletions is not None  # noqa: S101 - chunks only come from the ledger
        self._deletions.accepted(chunk)
        if self._changes is not None:
            # Before STATE moves: a kill in between only resends the (harmless) deletion.
            self._changes.forget(chunk.kind, chunk.ids)
        self.counters.deleted[chunk.kind] += len(chunk.ids)
        self.counters.delete_requests += 1
        self._hold_deletions()

    def _hold_deletions(self) -> None:
        """Hold STATE from the first deletion not accepted yet; release what may go."""
        assert self._deletions is not None  # noqa: S101 - only with `hard_delete`
        self._deletions_hold = self._deletions.watermark()
        if math.isinf(self._deletions_hold):
            self.checkpoints.settle(DELETIONS_HOLD)
        else:
            self.checkpoints.hold(DELETIONS_HOLD, int(self._deletions_hold))
            self.checkpoints.release()

    def _busy(self) -> bool:
        """Whether a batch waits, the job thread holds a batch or deletion, or an event waits."""
        if self._in_flight or self._spool:
            return True
        if self._events_worker is not None and self._events.pending:
            return True
        # A dry run seals its chunks too, but writes them to files: nothing is held.
        ledger = self._deletions
        return self.runner is not None and ledger is not None and ledger.unanswered > 0

    # --- batches -----------------------------------------------------------------------

    def _folder_path(self) -> Path:
        if self._batch_dir is None:  # a pipeline used without `start` (tests, SDK tools)
            self.start()
        assert self._batch_dir is not None  # noqa: S101 - set by start
        return self._batch_dir

    def _ship(self, kind: Kind) -> None:
        """A full batch waits in the spool; reading pauses while the spool is over its cap."""
        batch = self._open.pop(kind)
        del self._opened_at[kind]
        if self.runner is None:  # a dry run
            sealed = batch.seal()
            self.counters.merged += sealed.merged
            sealed.path.replace(self._dry_dir / sealed.path.name)
            self.counters.files_written += 1
            self.counters.profiles_sent[kind] += sealed.rows
            self.checkpoints.settle(Hold("batch", str(sealed.path)))
            self._events.batch_settled(sealed.path)
            return
        self._spool.put(batch)
        self._feed()
        cap = self.settings.max_spool_bytes
        if self._spool.bytes > cap:
            self.logger.info(
                "Reading paused: %s (%s bytes) wait for Userpilot in %s, over `max_spool_bytes`"
                " (%s); reading resumes as jobs complete.",
                plural(len(self._spool), "batch"),
                f"{self._spool.bytes:,}",
                self.settings.batch_dir,
                f"{cap:,}",
            )
            self._wait_until(lambda: self._spool.bytes <= cap)

    def _feed(self) -> None:
        """Seal the oldest waiting batches and hand them over, keeping the slot busy."""
        runner = self.runner
        assert runner is not None  # noqa: S101 - only called when jobs run
        handed = MAX_HANDED_ENDED if self._ended else MAX_HANDED_READING
        while self._spool and len(self._in_flight) < handed:
            sealed = self._spool.take().seal()
            self.counters.merged += sealed.merged
            self._in_flight.shipped(sealed)
            runner.ship(sealed)

    def _flush_lagging(self, now: float) -> None:
        """Ship a half-full batch early when it has held back the newest STATE too long."""
        newest = self.checkpoints.newest_state_position()
        if newest is None:
            return
        for kind, batch in list(self._open.items()):
            first = batch.first_position
            # A pending deletion before the batch holds STATE back anyway: shipping early
            # would only cut small batches.
            if first is None or first > newest or first > self._deletions_hold:
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
                    count_of(kind, batch.rows),
                    plural(records, "record"),
                    minutes,
                )
                self._ship(kind)

    def _log_waiting(self, headline: str) -> None:
        """What waits for Userpilot, and when it should be done at the pace measured so far."""
        rows = self._spool.rows + self._in_flight.rows
        rate = self._in_flight.rate
        self.logger.info(
            "%s: %s (%s bytes) wait in %s, %s in all; %s.",
            headline,
            plural(len(self._spool), "batch"),
            f"{self._spool.bytes:,}",
            self.settings.batch_dir,
            plural(rows, "row"),
            f"done in ~{duration(rows / rate)} at ~{rate * 60:,.0f} rows/min"
            if rate
            else "the time to load them is known once a job completes",
        )

    # --- waiting for the job thread -----------------------------------------------------

    def _apply_ready(self) -> None:
        if self.runner is None:
            return
        outcomes = self.runner.outcomes
        while not outcomes.empty():
            self._apply(outcomes.get_nowait())

    def _apply(self, outcome: Outcome | EventOutcome) -> None:
        match outcome:
            case DeletionAccepted():
                self._deletion_accepted(outcome.chunk)
            case EventSent() | EventRefused():
                self._events.apply(outcome)
            case BatchDone():
                self._in_flight.apply(outcome)
                self._feed()
                if self._ended and self._spool:
                    self._log_waiting("Still to load")
                self._events.batch_settled(outcome.batch.path)
            case JobStarted() | PartDone() | RowsRefused() | RunnerFailed():
                self._in_flight.apply(outcome)
                self._feed()
            case _:
                assert_never(outcome)

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
            self._apply(outcome)


def _nothing() -> None:
    """No fingerprint store: nothing to check before sending."""
