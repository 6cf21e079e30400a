"""Rejected rows: dead letters for what cannot be sent, and the invalid-share guard.

Three sources: records that cannot become a profile (the SDK side), rows Userpilot refuses
at upload (400, or 413 for a row alone), and rows a completed job reports as rejected. Only
the main thread calls it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from target_userpilot.run.checkpoints import REFUSED_HOLD, Hold
from target_userpilot.run.deadletters import InvalidRecordError
from target_userpilot.run.jobs import MAX_REFUSED_ROWS, JobFailedError
from target_userpilot.run.summary import plural

if TYPE_CHECKING:
    import logging
    from collections.abc import Mapping

    from target_userpilot.run.batches import SealedBatch
    from target_userpilot.run.checkpoints import Checkpoints
    from target_userpilot.run.deadletters import DeadLetters
    from target_userpilot.run.jobs import JobOutcome

# Longest detail of a job's rejected rows quoted into the log.
DETAIL_LOG_CHARS = 2000
# The invalid share is judged once a stream has this many records (before that, and at the
# end, only a stream whose every record is invalid stops the run).
MIN_RECORDS_FOR_SHARE = 100


class TooManyInvalidError(InvalidRecordError):
    """A stream's share of invalid records is over `max_invalid_percent`."""


@dataclass
class _StreamTally:
    records: int = 0
    invalid: int = 0
    held: bool = False  # a checkpoint hold sits at its first invalid record not yet allowed


class InvalidShare:
    """Stops a run whose stream is mostly invalid (a wrong mapping, most often).

    The first invalid record of a stream holds STATE back until the stream's share is
    judged within the limit (at `MIN_RECORDS_FOR_SHARE` records, or at the end of input), so
    a run stopped by it never checkpointed past the records it would have to send again.
    """

    def __init__(self, max_share: float, checkpoints: Checkpoints, letters: DeadLetters) -> None:
        """`max_share` of 1 turns the guard off."""
        self._max = max_share
        self._checkpoints = checkpoints
        self._letters = letters
        self._streams: dict[str, _StreamTally] = {}

    def seen(self, stream: str, position: int, *, invalid: bool) -> None:
        """Count one record of a stream; raises TooManyInvalidError past the limit."""
        if self._max >= 1:
            return
        tally = self._streams.get(stream)
        if tally is None:
            tally = self._streams[stream] = _StreamTally()
        tally.records += 1
        if invalid:
            tally.invalid += 1
            if not tally.held:
                tally.held = True
                self._checkpoints.hold(Hold("invalid", stream), position)
        if tally.records >= MIN_RECORDS_FOR_SHARE and (tally.held or invalid):
            if tally.invalid > self._max * tally.records:
                self._fail(stream, tally)
            if tally.held:
                tally.held = False
                self._checkpoints.settle(Hold("invalid", stream))

    def finish(self) -> None:
        """End of input: a stream whose every record was invalid stops the run."""
        for stream, tally in self._streams.items():
            if tally.invalid and tally.invalid == tally.records:
                self._fail(stream, tally)
        for stream, tally in self._streams.items():
            if tally.held:
                tally.held = False
                self._checkpoints.settle(Hold("invalid", stream))

    def _fail(self, stream: str, tally: _StreamTally) -> None:
        where = (
            f"dead letters in {self._letters.path}"
            if self._letters.written
            else "they were skipped (`on_invalid_record: skip`)"
        )
        msg = (
            f"stream {stream!r}: {tally.invalid:,} of {plural(tally.records, 'record')} "
            f"invalid, over `max_invalid_percent` ({self._max:.0%}); {where}. This looks like a "
            "mapping problem, not a few bad rows: fix it (or raise `max_invalid_percent`) and "
            "rerun. No STATE past the first invalid record of the stream was emitted."
        )
        raise TooManyInvalidError(msg)


class AllRefused:
    """Stops a run whose every upload Userpilot refused, whatever the batch size.

    The job thread judges each batch ("over half of it"), which a one-row batch never is.
    Until Userpilot accepts a row of the run, the first refused row holds STATE back; the run
    stops once more than `MAX_REFUSED_ROWS` were refused, or at the end of input, with none
    accepted. One accepted row lifts the hold: a few bad rows among good ones go on.
    """

    def __init__(self, checkpoints: Checkpoints) -> None:
        """Nothing refused or accepted yet."""
        self._checkpoints = checkpoints
        self._rows = 0
        self._held_from: float = float("inf")
        self._accepted = False
        self._last = ""

    def refused(self, part: SealedBatch, reason: str) -> None:
        """Every row of `part` was refused; raises JobFailedError past the limit."""
        if self._accepted:
            return
        self._rows += part.rows
        self._last = reason
        if part.first_position < self._held_from:
            self._held_from = part.first_position
            self._checkpoints.hold(REFUSED_HOLD, part.first_position)
        if self._rows > MAX_REFUSED_ROWS:
            self._fail()

    def accepted(self) -> None:
        """Userpilot accepted a row of the run: refusals are bad rows, not a bad format."""
        if not self._accepted:
            self._accepted = True
            self._checkpoints.settle(REFUSED_HOLD)

    def finish(self) -> None:
        """End of input: a run with refused rows and none accepted stops."""
        if self._rows and not self._accepted:
            self._fail()

    def _fail(self) -> None:
        msg = (
            f"Userpilot refused every upload of this run ({plural(self._rows, 'row')}, none "
            f"accepted), last with: {self._last}. That is not a bad row but a systematic "
            "problem (the profiles' format, a mapping setting such as `arrays` or `nulls`): "
            "fix it and rerun. No STATE past these records was emitted."
        )
        raise JobFailedError(msg)


class Rejections:
    """Writes dead letters (through `DeadLetters.report`) for each kind of rejection."""

    def __init__(self, letters: DeadLetters, logger: logging.Logger) -> None:
        """Report to `letters`, log to `logger`."""
        self.letters = letters
        self._logger = logger

    def invalid_record(  # noqa: PLR0913 - the record's place, and what `fail` raises
        self,
        kind: str,
        stream: str,
        position: int,
        reason: str,
        record: Mapping[str, Any],
        *,
        error: type[InvalidRecordError],
    ) -> None:
        """A record that cannot become a profile."""
        self.letters.report(
            stream=stream, kind=kind, position=position, reason=reason, record=record, error=error
        )

    def refused(self, part: SealedBatch, reason: str) -> None:
        """Every row of `part` was refused at upload (400, or 413 for a row alone)."""
        for origin, line in zip(part.origins, part.lines(), strict=True):
            self.letters.report(
                stream=origin.stream,
                kind=part.kind,
                position=origin.position,
                reason=reason,
                profile=json.loads(line),
            )

    def rejected_by_job(
        self, part: SealedBatch, outcome: JobOutcome, lines: list[bytes]
    ) -> set[int] | None:
        """Dead-letter the rows a completed job rejected.

        Returns their line indexes; None when the job rejected rows without saying which.
        """
        errors = outcome.status.errors or 0
        if not errors:
            return set()
        detail = outcome.status.raw.get("errors")
        by_id = {origin.profile_id: index for index, origin in enumerate(part.origins)}
        rejected: dict[int, str] = {}
        for item in detail if isinstance(detail, list) else []:
            index = _rejected_index(item, by_id, len(lines))
            if index is not None:
                rejected[index] = str(item.get("error") or item.get("reason") or item)
        self._logger.warning(
            "Userpilot job %s completed but rejected %d of %s%s: %s",
            outcome.job_id,
            errors,
            plural(part.rows, f"{part.kind} row"),
            "" if rejected else " (no per-row detail given)",
            json.dumps(detail if detail is not None else dict(outcome.status.raw))[
                :DETAIL_LOG_CHARS
            ],
        )
        if not rejected:
            origin = part.origins[0]
            self.letters.report(
                stream=origin.stream,
                kind=part.kind,
                position=part.first_position,
                reason=f"Userpilot rejected {plural(errors, 'row')} of this job without saying "
                f"which; job object: {json.dumps(dict(outcome.status.raw))[:DETAIL_LOG_CHARS]}",
                job_id=outcome.job_id,
            )
            return None
        for index, reason in rejected.items():
            origin = part.origins[index]
            self.letters.report(
                stream=origin.stream,
                kind=part.kind,
                position=origin.position,
                reason=f"rejected by Userpilot: {reason}",
                profile=json.loads(lines[index]),
                job_id=outcome.job_id,
            )
        return set(rejected)


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
