"""From profiles to confirmed jobs: one open batch per kind, the job slot, STATE, the summary.

Streams of the same kind share one batch (two tap streams mapped to `users` fill the same
upload). The SDK side hands over profiles and rejections; everything after that lives here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from target_userpilot.batches import BatchFile, LineTooLargeError, SealedBatch
from target_userpilot.checkpoints import Checkpoints
from target_userpilot.deadletters import DeadLetters
from target_userpilot.fingerprints import fingerprint
from target_userpilot.jobs import JobOutcome, JobRunner, PollPlan

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Mapping

    from target_userpilot.fingerprints import FingerprintStore
    from target_userpilot.profiles import Kind, Profile
    from target_userpilot.settings import Settings
    from target_userpilot.wire import UserpilotClient

# How often (in records) the per-record path looks at checkpoint lag; keeps the hot path cheap.
LAG_CHECK_EVERY = 256
# Longest detail of a job's rejected rows quoted into the log.
DETAIL_LOG_CHARS = 2000


@dataclass
class Counters:
    """What the end-of-run summary reports."""

    records_in: int = 0
    invalid: int = 0
    unchanged: int = 0
    merged: int = 0
    profiles_sent: dict[str, int] = field(default_factory=lambda: {"users": 0, "companies": 0})
    rejected_by_userpilot: int = 0
    jobs: int = 0
    files_written: int = 0
    early_flushes: int = 0


class Pipeline:
    """Batches profiles per kind and hands full batches to the job slot."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: UserpilotClient | None,
        emit_state: Callable[[dict[str, Any]], None],
        logger: logging.Logger,
        fingerprints: FingerprintStore | None = None,
    ) -> None:
        """`client` is None for a dry run (nothing is uploaded)."""
        self.settings = settings
        self.logger = logger
        self.position = 0
        self.counters = Counters()
        self.checkpoints = Checkpoints(emit_state)
        self.dead_letters = DeadLetters(settings.dead_letter_path, settings.on_invalid_record)
        self._fingerprints = fingerprints
        self._open: dict[Kind, BatchFile] = {}
        self._opened_at: dict[Kind, float] = {}
        self._in_flight_ids: dict[str, set[str]] = {}
        self._started = time.monotonic()
        self._stopped = False  # finished, terminated or aborted: nothing more to do
        self._client = client
        self.runner: JobRunner | None = None
        settings.batch_dir.mkdir(parents=True, exist_ok=True)
        if settings.dry_run:
            settings.dry_run_dir.mkdir(parents=True, exist_ok=True)
        elif client is not None:
            self.runner = JobRunner(
                client,
                on_confirmed=self._confirmed,
                on_split=self._split,
                on_unsendable=self._unsendable,
                job_timeout=settings.job_timeout,
                job_retries=settings.job_retries,
                poll=PollPlan(max_interval=settings.poll_max_interval),
                logger=logger,
            )
            self.runner.start()

    # --- the Singer side calls these, in the main thread -------------------------------

    def next_position(self) -> int:
        """Number the next RECORD; also surfaces a failure of the job thread."""
        self.position += 1
        self.counters.records_in += 1
        if self.runner is not None and self.runner.error is not None:
            self.runner.raise_if_failed()
        if not self.position % LAG_CHECK_EVERY:
            self._flush_lagging()
        return self.position

    def add_state(self, state: dict[str, Any]) -> None:
        """A STATE message arrived after the records numbered so far."""
        if self.settings.dry_run:
            return
        self.checkpoints.add_state(self.position, state)

    def add(self, kind: Kind, stream: str, position: int, profile: Profile) -> None:
        """Put a profile into its kind's open batch, cutting the batch when it is full."""
        line = None
        if self._fingerprints is not None:
            line = profile.line(kind)  # encoded once: for the fingerprint and for the batch
            if self._unchanged(kind, profile, line):
                self.counters.unchanged += 1
                return
        batch = self._open.get(kind) or self._new_batch(kind, position)
        try:
            if not batch.add(profile, position, stream, line):
                self._ship(kind)
                batch = self._new_batch(kind, position)
                batch.add(profile, position, stream, line)
        except LineTooLargeError as exc:
            self.reject(kind, stream, position, str(exc), profile.metadata)
            return
        if batch.rows >= self.settings.limits.max_rows:
            self._ship(kind)

    def reject(
        self, kind: Kind, stream: str, position: int, reason: str, record: Mapping[str, Any]
    ) -> None:
        """A record that cannot become a profile: dead letter, skip or fail, per the policy."""
        self.counters.invalid += 1
        self.dead_letters.report(
            stream=stream, kind=kind, position=position, reason=reason, record=record
        )

    def flush(self, kind: Kind) -> None:
        """Send the open batch of a kind now (end of input, or an SDK drain)."""
        if kind in self._open:
            self._ship(kind)

    def finish(self) -> None:
        """End of input: ship what is left, wait for every job, release the last STATE."""
        for kind in list(self._open):
            self._ship(kind)
        if self.runner is not None:
            self.runner.finish()
        self.checkpoints.release()
        self._log_summary()
        self.close()
        self._stopped = True

    def terminate(self) -> None:
        """SIGTERM/SIGINT: stop, wait briefly for the job in flight, say what was left."""
        self._stop_early("Stopped before the end of input")

    def abort(self) -> None:
        """A fatal error: stop as `terminate` does, leaving no batch file behind."""
        self._stop_early("Failed before the end of input")

    def _stop_early(self, headline: str) -> None:
        if self._stopped:
            return
        self._stopped = True
        dropped: list[SealedBatch] = []
        left_running = None
        if self.runner is not None:
            dropped, left_running = self.runner.abandon(self.settings.termination_grace)
        for batch in self._open.values():
            batch.discard()
        for sealed in dropped:
            sealed.delete()
        self._open.clear()
        if left_running:
            self.logger.error(
                "Stopped with Userpilot job %s still running; its records are not "
                "checkpointed and will be sent again by the next run from the last STATE.",
                left_running,
            )
        self.logger.warning(
            "%s: %s records received, STATE released up to the last confirmed job; rerun "
            "from the last STATE to resume.",
            headline,
            f"{self.counters.records_in:,}",
        )
        self._log_summary()
        self.close()

    def close(self) -> None:
        """Release files and connections."""
        self.dead_letters.close()
        if self._fingerprints is not None:
            self._fingerprints.close()
        if self._client is not None:
            self._client.close()

    # --- batches ---------------------------------------------------------------------

    def _new_batch(self, kind: Kind, position: int) -> BatchFile:
        batch = BatchFile(kind, self.settings.batch_dir, self.settings.limits)
        self._open[kind] = batch
        self._opened_at[kind] = time.monotonic()
        self.checkpoints.hold(batch.path, position)
        return batch

    def _ship(self, kind: Kind) -> None:
        sealed = self._open.pop(kind).seal()
        self.counters.merged += sealed.merged
        if self.settings.dry_run:
            target = self.settings.dry_run_dir / sealed.path.name
            sealed.path.replace(target)
            self.counters.files_written += 1
            self.counters.profiles_sent[kind] += sealed.rows
            self.checkpoints.settle(sealed.path)
            return
        if self._fingerprints is not None:
            self._in_flight_ids[str(sealed.path)] = set(sealed.ids)
        assert self.runner is not None  # noqa: S101 - set whenever not a dry run
        self.runner.ship(sealed)

    def _flush_lagging(self) -> None:
        """Ship a half-full batch early when it has held back the newest STATE too long."""
        newest = self.checkpoints.newest_state_position()
        if newest is None:
            return
        for kind, batch in list(self._open.items()):
            first = batch.first_position
            if first is None or first > newest:
                continue
            records = self.position - first
            minutes = (time.monotonic() - self._opened_at[kind]) / 60
            if (
                records >= self.settings.max_checkpoint_lag_records
                or minutes >= self.settings.max_checkpoint_lag_minutes
            ):
                self.logger.info(
                    "Uploading %s %s early: the batch has held back the newest STATE for %s "
                    "records / %.1f min (settings `max_checkpoint_lag_records`/`_minutes`).",
                    f"{batch.rows:,}",
                    kind,
                    f"{records:,}",
                    minutes,
                )
                self.counters.early_flushes += 1
                self._ship(kind)

    def _unchanged(self, kind: Kind, profile: Profile, line: bytes) -> bool:
        assert self._fingerprints is not None  # noqa: S101 - checked by the caller
        open_batch = self._open.get(kind)
        if (open_batch is not None and profile.id in open_batch) or any(
            profile.id in ids for ids in self._in_flight_ids.values()
        ):
            # A newer value for this id is still on its way: this one must follow it.
            return False
        return self._fingerprints.is_unchanged(kind, profile.id, fingerprint(line))

    # --- the job thread calls these --------------------------------------------------

    def _split(self, batch: SealedBatch, halves: tuple[SealedBatch, SealedBatch]) -> None:
        ids = self._in_flight_ids.pop(str(batch.path), None)
        for half in halves:
            self.checkpoints.hold(half.path, half.first_position)
            if ids is not None:
                self._in_flight_ids[str(half.path)] = set(half.ids)
        self.checkpoints.settle(batch.path)

    def _unsendable(self, batch: SealedBatch, reason: str) -> None:
        for origin, line in zip(batch.origins, batch.lines(), strict=True):
            self.dead_letters.report(
                stream=origin.stream,
                kind=batch.kind,
                position=origin.position,
                reason=reason,
                profile=json.loads(line),
            )
        self.counters.invalid += batch.rows
        self._done(batch)

    def _confirmed(self, batch: SealedBatch, outcome: JobOutcome) -> None:
        lines = batch.lines()
        rejected = self._report_rejected(batch, outcome, lines)
        if self._fingerprints is not None:
            self._fingerprints.confirm(
                batch.kind,
                (
                    (origin.profile_id, fingerprint(line))
                    for index, (origin, line) in enumerate(zip(batch.origins, lines, strict=True))
                    if index not in rejected
                ),
            )
        errors = outcome.status.errors or 0
        self.counters.jobs += 1
        self.counters.profiles_sent[batch.kind] += batch.rows - errors
        self.counters.rejected_by_userpilot += errors
        rate = self.runner.rate.rows_per_second if self.runner else None
        self.logger.info(
            "Job %s completed: %s, %s rows, %s bytes, waited %.1f s for the slot, "
            "ran %.1f s, %d polls, %d rejected%s.",
            outcome.job_id,
            batch.kind,
            f"{batch.rows:,}",
            f"{batch.size:,}",
            outcome.waited,
            outcome.seconds,
            outcome.polls,
            errors,
            f", rate ~{rate * 60:,.0f} rows/min" if rate else "",
        )
        self._done(batch)

    def _done(self, batch: SealedBatch) -> None:
        batch.delete()
        self._in_flight_ids.pop(str(batch.path), None)
        self.checkpoints.settle(batch.path)

    def _report_rejected(
        self, batch: SealedBatch, outcome: JobOutcome, lines: list[bytes]
    ) -> set[int]:
        """Dead-letter the rows a completed job rejected; returns their line indexes."""
        errors = outcome.status.errors or 0
        if not errors:
            return set()
        detail = outcome.status.raw.get("errors")
        by_id = {origin.profile_id: index for index, origin in enumerate(batch.origins)}
        rejected: dict[int, str] = {}
        for item in detail if isinstance(detail, list) else []:
            index = _rejected_index(item, by_id, len(lines))
            if index is not None:
                rejected[index] = str(item.get("error") or item.get("reason") or item)
        self.logger.warning(
            "Userpilot job %s completed but rejected %d of %s %s rows%s: %s",
            outcome.job_id,
            errors,
            f"{batch.rows:,}",
            batch.kind,
            "" if rejected else " (no per-row detail given)",
            json.dumps(detail if detail is not None else dict(outcome.status.raw))[
                :DETAIL_LOG_CHARS
            ],
        )
        if not rejected:
            origin = batch.origins[0]
            self.dead_letters.report(
                stream=origin.stream,
                kind=batch.kind,
                position=batch.first_position,
                reason=f"Userpilot rejected {errors} row(s) of this job without saying which; "
                f"job object: {json.dumps(dict(outcome.status.raw))[:DETAIL_LOG_CHARS]}",
                job_id=outcome.job_id,
            )
        for index, reason in rejected.items():
            origin = batch.origins[index]
            self.dead_letters.report(
                stream=origin.stream,
                kind=batch.kind,
                position=origin.position,
                reason=f"rejected by Userpilot: {reason}",
                profile=json.loads(lines[index]),
                job_id=outcome.job_id,
            )
        return set(rejected)

    def _log_summary(self) -> None:
        c = self.counters
        elapsed = time.monotonic() - self._started
        verb = "would send" if self.settings.dry_run else "sent"
        letters = self.dead_letters
        if letters.written:
            where = f"{letters.written:,} written to {letters.path}"
        else:
            where = f"{letters.skipped:,} skipped" if letters.skipped else "none"
        retried = self._client.stats.retries if self._client is not None else 0
        self.logger.info(
            "Summary: %s records in; %s %s users and %s companies in %s; %s duplicates merged; "
            "%s unchanged skipped; %s invalid and %s rejected by Userpilot (dead letters: %s); "
            "%s requests retried; %s jobs resubmitted; %.1f s elapsed.",
            f"{c.records_in:,}",
            verb,
            f"{c.profiles_sent['users']:,}",
            f"{c.profiles_sent['companies']:,}",
            (
                f"{c.files_written} files in {self.settings.dry_run_dir}"
                if self.settings.dry_run
                else f"{c.jobs} jobs"
            ),
            f"{c.merged:,}",
            f"{c.unchanged:,}",
            f"{c.invalid:,}",
            f"{c.rejected_by_userpilot:,}",
            where,
            f"{retried:,}",
            f"{self.runner.jobs_resubmitted if self.runner else 0:,}",
            elapsed,
        )


def _rejected_index(item: object, by_id: Mapping[str, int], rows: int) -> int | None:
    """Which line of the batch a per-row error item names (by 1-based line, or by id)."""
    if not isinstance(item, dict):
        return None
    line = item.get("line")
    if isinstance(line, int) and 1 <= line <= rows:
        return line - 1
    for key in ("user_id", "company_id", "id"):
        if isinstance(item.get(key), str) and item[key] in by_id:
            return by_id[item[key]]
    return None
