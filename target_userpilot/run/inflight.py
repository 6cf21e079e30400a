"""Batches handed to the job thread, and what each outcome it reports does to the run's state.

Only the main thread calls this (the pipeline, when it drains the outcome queue): a confirmed
part is fingerprinted and counted, refused rows become dead letters, a settled batch releases
its hold on STATE and its ids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing_extensions import assert_never

from target_userpilot.kinds import count_of
from target_userpilot.run.checkpoints import Hold
from target_userpilot.run.jobs import BatchDone, JobStarted, PartDone, RowsRefused, RunnerFailed
from target_userpilot.run.rejections import AllRefused
from target_userpilot.run.summary import plural

if TYPE_CHECKING:
    import logging
    from pathlib import Path

    from target_userpilot.run.batches import SealedBatch
    from target_userpilot.run.changes import ChangeFilter
    from target_userpilot.run.checkpoints import Checkpoints
    from target_userpilot.run.jobs import BatchOutcome
    from target_userpilot.run.rejections import Rejections
    from target_userpilot.run.summary import Counters


class InFlight:
    """The batches shipped and not settled; applies the job thread's outcomes."""

    def __init__(
        self,
        *,
        checkpoints: Checkpoints,
        counters: Counters,
        rejections: Rejections,
        changes: ChangeFilter | None,
        logger: logging.Logger,
    ) -> None:
        """Nothing in flight yet."""
        self._checkpoints = checkpoints
        self._counters = counters
        self._rejections = rejections
        self._changes = changes
        self._logger = logger
        self._batches: dict[Path, SealedBatch] = {}
        self.all_refused = AllRefused(checkpoints)
        self.current_job: str | None = None  # created and not yet completed
        self.rate: float | None = None  # rows per second of the last completed job

    def __bool__(self) -> bool:
        """Whether any batch is on its way."""
        return bool(self._batches)

    def __len__(self) -> int:
        """Batches on their way."""
        return len(self._batches)

    @property
    def rows(self) -> int:
        """Rows of the batches on their way."""
        return sum(batch.rows for batch in self._batches.values())

    def shipped(self, batch: SealedBatch) -> None:
        """A sealed batch goes to the job thread (its hold on STATE is already in place)."""
        self._batches[batch.path] = batch
        if self._changes is not None:
            self._changes.shipped(batch)

    def apply(self, outcome: BatchOutcome) -> None:
        """Apply one outcome; a RunnerFailed raises its error here, on the main thread.

        A part whose outcome cannot be applied (the `fail` policy, a dead-letter file that
        cannot be written, a store error) holds STATE before its first record for the rest of
        the run: the stop path still applies the batch's completion, which must not release
        past records that are neither confirmed nor in a dead letter.
        """
        match outcome:
            case JobStarted():
                self.current_job = outcome.job_id
            case PartDone() | RowsRefused():
                try:
                    if isinstance(outcome, PartDone):
                        self._part_done(outcome)
                    else:
                        self._refused(outcome)
                except BaseException:
                    part = outcome.part
                    self._checkpoints.hold(Hold("undelivered", str(part.path)), part.first_position)
                    raise
            case BatchDone():
                self._settled(outcome.batch)
            case RunnerFailed():
                raise outcome.error
            case _:
                assert_never(outcome)

    def _settled(self, batch: SealedBatch) -> None:
        self.current_job = None
        del self._batches[batch.path]
        if self._changes is not None:
            self._changes.settled(batch)
        batch.delete()
        self._checkpoints.settle(Hold("batch", str(batch.path)))

    def _refused(self, refused: RowsRefused) -> None:
        self._rejections.refused(refused.part, refused.reason)
        self._counters.rejected_by_userpilot += refused.part.rows
        refused.part.delete()
        self.all_refused.refused(refused.part, refused.reason)

    def _part_done(self, done: PartDone) -> None:
        part, outcome = done.part, done.outcome
        self.current_job = None
        errors = outcome.status.errors or 0
        if part.rows > errors:
            self.all_refused.accepted()
        counters = self._counters
        counters.jobs += 1
        counters.jobs_resubmitted += outcome.attempts - 1
        counters.profiles_sent[part.kind] += part.rows - errors
        counters.rejected_by_userpilot += errors
        self.rate = outcome.rate or self.rate
        self._logger.info(
            "Job %s completed: %s, %s bytes, waited %.1f s for the slot, ran %.1f s, %s, "
            "%d rejected%s.",
            outcome.job_id,
            count_of(part.kind, part.rows),
            f"{part.size:,}",
            outcome.waited,
            outcome.seconds,
            plural(outcome.polls, "poll"),
            errors,
            f", rate ~{outcome.rate * 60:,.0f} rows/min" if outcome.rate else "",
        )
        # Counted above, before anything that may fail: the job completed in Userpilot.
        lines = part.lines() if errors or self._changes is not None else []
        rejected = self._rejections.rejected_by_job(part, outcome, lines)
        if self._changes is not None and rejected is not None:
            # A job that rejected rows without saying which confirms none of them.
            self._changes.confirm(part, lines, rejected)
        if part is not done.batch:
            part.delete()
