"""Deletions that follow the source: which record is one, the rule per id, chunks, the guard.

Pure: no I/O, no SDK, no HTTP, no logging (ids may be personal data; the caller logs counts).

With `hard_delete` on, a record deletes its user or company when its `_sdc_deleted_at` (the
SDK's mark for a row deleted at the source, e.g. tap-postgres' log-based replication) or the
property `deleted_property` names says so by the one mark table (`mark_says_deleted`), read
from the record as the tap sent it, before any stream map.

The rule for an id that is deleted and re-created in one run: **the last word for an id in a
run wins**. A deletion not sent yet is cancelled by a later record of the same id. A deletion
already sent cannot be recalled (the Deletion API has no undo): Userpilot deletes that
profile at its next daily run (02:00 UTC) even though a later record re-created it, so such
ids are counted and reported loudly, and their fingerprints must not be kept (the next run
then sends them again, after 02:00 has removed them).

`max_deletes_per_run` guards against a misconfigured run (a wrong `deleted_property`, a tap
marking every row deleted) wiping an account: deletions are only sealed into requests once
the whole run's count is known, and a run over the limit stops before any is sent.

## How the pipeline gates STATE on deletions (as `pipeline.py` wires it)
- Number records as today (`seq`). A deletion record goes to `DeletionLedger.delete(kind, id,
  seq)` instead of a batch; every other record of a kind with `hard_delete` on goes through
  `DeletionLedger.upsert(kind, id)` (which cancels a pending deletion of that id, or reports
  that its deletion was already sent) before its batch. `DeletionLedger.watermark()` joins
  the batches' and jobs' smallest unconfirmed `seq` in the watermark: a pending deletion
  holds STATE back like a record in an open batch.
- At the end of input (the guard needs the run's total), once every job holding an earlier
  record has completed, `DeletionLedger.seal(limit)` checks the guard (raising
  `DeletionGuardError`, nothing sent) and cuts the pending ids into `DeletionChunk`s. Each
  chunk is a pending unit like a batch: its `min_seq` holds the watermark until its 202.
  Chunks go through the same single owner as jobs (the job thread sends them with a
  `DeleteSender`, one at a time, paced at one request per 2 s, and reports each outcome as a
  message); jobs first, so an upsert earlier in the input is applied before the deletion of
  that id is scheduled, and 02:00 removes it.
- On a chunk's outcome "accepted" the main thread calls `DeletionLedger.accepted(chunk)`,
  forgets the chunk's ids in the fingerprint store (`send_only_changes`: a re-created profile
  is sent again), counts them for the summary, and releases the newest STATE below the new
  watermark. A failed chunk fails the run like a failed job: no STATE past its `min_seq`.
- kill -9 between a chunk's 202 and the STATE that covers it: chunks are sent in record order
  and STATE is released after each 202, so the resume replays from the STATE written after
  the previous chunk and sends again at most the chunks no STATE covered yet. Deleting an id
  twice is harmless (Userpilot schedules it again); the guard allows the replay what it
  allowed the killed run (`guardnote.py`).
- The cost of the guard: a run whose input holds a deletion releases no STATE past that
  record until the end of input. A count-only guard could send full chunks early, but a run
  stopped by the guard would then have sent some deletions; the guard promises none.
- `Upsert.TOO_LATE` cannot happen in the pipeline: it seals only at the end of input, so every
  record of the run has been read before any deletion is sent, and a later record of an id
  always cancels its deletion.
- A deletion record's id is read like a profile's (same id property, same string form); a
  `DeletionMarkError` is an invalid record (`on_invalid_record`); `deleted_property` is left
  out of metadata. Summary: `DeletionLedger.counts(kind)`. Ids go to logs at DEBUG only.
- Dry run: `seal(limit)` still checks the guard; `DeletionChunk.body()` is what would be sent,
  written to the run's own folder in `dry_run_dir` as `delete-<kind>-NNNN.json`.
- `hard_delete` is the SDK's built-in setting (`TARGET_HARD_DELETE_CONFIG`), but singer-sdk
  0.54.9 merges it only into SQL targets' schemas, so settings.py declares it; add
  `TargetCapabilities.HARD_DELETE` to the target's capabilities to advertise `hard-delete`.
- The marks are read from the raw RECORD before stream maps (`premap.py`): a map that drops
  or renames `_sdc_deleted_at` cannot turn a deletion into an update, and a key-only
  deletion record never reaches the mapping code.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
from typing import TYPE_CHECKING, Any

from target_userpilot.errors import UserFacingError
from target_userpilot.kinds import KINDS, count_of

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from target_userpilot.kinds import Kind

DELETED_AT = "_sdc_deleted_at"
DELETE_CHUNK_IDS = 1000
"""Ids per delete request. None documented: 10,000 deletions are 10 requests (about 20 s)."""
DELETE_CHUNK_BYTES = 256 * 1024
"""Bytes per delete request body, so long ids cannot make a request unbounded."""
SHARE_FLOOR = 100
"""A share limit (`"10%"`) only stops a run deleting more than this many profiles: a small
incremental run made mostly of deletions is normal."""
DEFAULT_MAX_DELETES = "10%"


class DeletionMarkError(ValueError):
    """A record's deletion mark holds something that is neither a yes nor a no."""


class DeletionGuardError(UserFacingError):
    """The run would delete more than `max_deletes_per_run` allows; nothing was sent."""


# The mark table: one rule for `_sdc_deleted_at` and `deleted_property` alike. Words are
# compared stripped and in any case; a number only as 0 or 1.
NOT_DELETED_WORDS = frozenset({"", "false", "0", "no"})
DELETED_WORDS = frozenset({"true", "1", "yes"})


def is_deletion(record: Mapping[str, Any], deleted_property: str | None) -> bool:
    """Whether `record` (as the tap sent it, before any stream map) deletes its profile.

    Either mark may say so (`mark_says_deleted`); a mark that is neither a yes nor a no makes
    the record invalid, even when the other mark says deleted.

    Raises:
        DeletionMarkError: a mark holds something else; the message names the property.
    """
    deleted = mark_says_deleted(DELETED_AT, record.get(DELETED_AT))
    if deleted_property:
        deleted = mark_says_deleted(deleted_property, record.get(deleted_property)) or deleted
    return deleted


def mark_says_deleted(name: str, value: object) -> bool:
    """The mark table: whether this value of property `name` marks its record deleted.

    Not deleted: null (or absent), false, 0, "false", "0", "no", "" (any case, spaces
    stripped). Deleted: true, 1, "true", "1", "yes", a date or a timestamp (an object or an
    ISO 8601 string).

    Raises:
        DeletionMarkError: anything else ("None", "maybe", 2, a list, ...), naming `name`.
    """
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, (int, float, decimal.Decimal)) and value in (0, 1):
        return bool(value)
    if isinstance(value, dt.date):  # datetime included
        return True
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in NOT_DELETED_WORDS:
            return False
        if text.lower() in DELETED_WORDS or _is_timestamp(text):
            return True
    what = f"`{DELETED_AT}`" if name == DELETED_AT else f"`deleted_property` {name!r}"
    msg = (
        f"{what} holds {repr(value)[:40]}, which marks a record neither deleted nor kept: "
        "expected null, true/false, yes/no, 0/1 or a timestamp. The record is not deleted."
    )
    raise DeletionMarkError(msg)


def _is_timestamp(text: str) -> bool:
    try:
        dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class DeleteLimit:
    """`max_deletes_per_run`: a count of profiles, or a share of the run's records."""

    count: int | None = None
    share: float | None = None  # 0..1

    def __post_init__(self) -> None:
        """Exactly one of the two."""
        if (self.count is None) == (self.share is None):
            msg = "a DeleteLimit is a count or a share"
            raise ValueError(msg)

    @classmethod
    def parse(cls, value: object) -> DeleteLimit:
        """`1000`, `"1000"` (a count) or `"10%"` (a share); ValueError naming the setting."""
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return cls(count=value)
        text = value.strip() if isinstance(value, str) else ""
        if text.isdigit():
            return cls(count=int(text))
        if text.endswith("%"):
            try:
                percent = float(text[:-1])
            except ValueError:
                percent = math.nan
            if 0 <= percent <= 100:  # noqa: PLR2004 - a percentage
                return cls(share=percent / 100)
        msg = (
            f"`max_deletes_per_run` must be a count of profiles (e.g. 1000) or a share of the "
            f"run's records (e.g. '10%'), got {value!r}."
        )
        raise ValueError(msg)

    def allows(self, deletions: int, records: int) -> bool:
        """Whether a run of `records` records may delete `deletions` profiles."""
        if self.count is not None:
            return deletions <= self.count
        return deletions <= SHARE_FLOOR or deletions <= (self.share or 0.0) * records

    def __str__(self) -> str:
        """As the user would write it."""
        if self.count is not None:
            return f"{self.count:,}"
        return f"{(self.share or 0.0) * 100:g}%"


@dataclasses.dataclass(frozen=True)
class DeletionChunk:
    """One delete request: ids of one kind, and the smallest record `seq` among them."""

    kind: Kind
    ids: tuple[str, ...]
    min_seq: int

    def body(self) -> dict[str, list[str]]:
        """The request body, `{"users": [...]}` or `{"companies": [...]}`."""
        return {self.kind: list(self.ids)}


def chunk_ids(
    kind: Kind,
    ids: Iterable[str],
    *,
    max_ids: int = DELETE_CHUNK_IDS,
    max_bytes: int = DELETE_CHUNK_BYTES,
) -> list[list[str]]:
    """`ids` cut in order into request bodies of at most `max_ids` ids and `max_bytes` bytes.

    An id too long to fit `max_bytes` on its own still gets a request of its own.
    """
    envelope = len(json.dumps({kind: []}))
    chunks: list[list[str]] = []
    current: list[str] = []
    size = envelope
    for profile_id in ids:
        cost = len(json.dumps(profile_id).encode()) + 2  # ", " between ids
        if current and (len(current) >= max_ids or size + cost > max_bytes):
            chunks.append(current)
            current, size = [], envelope
        current.append(profile_id)
        size += cost
    if current:
        chunks.append(current)
    return chunks


class Upsert(enum.Enum):
    """What a record that re-creates (or updates) a profile means for its deletions."""

    PLAIN = "plain"
    """No deletion of this id in this run."""
    CANCELLED = "cancelled"
    """A deletion of this id not sent yet was cancelled: the last word wins."""
    TOO_LATE = "too_late"
    """This id's deletion was already sent: Userpilot deletes it at 02:00 UTC regardless."""


@dataclasses.dataclass(frozen=True)
class DeletionCounts:
    """One kind's deletions in this run."""

    records: int  # records of this kind seen, deletions included
    pending: int  # deletions not sent yet
    sent: int  # ids sent in chunks (in flight or accepted)
    accepted: int  # ids in chunks answered 202
    cancelled: int  # pending deletions a later record cancelled


class DeletionLedger:
    """The run's deletions per kind: the last word per id, what is pending, sent and accepted.

    Owned by the pipeline's main thread, like batches.
    """

    def __init__(self) -> None:
        """Start a run with nothing deleted."""
        self._records = dict.fromkeys(KINDS, 0)
        self._pending: dict[Kind, dict[str, int]] = {k: {} for k in KINDS}  # id -> first seq
        self._sent: dict[Kind, set[str]] = {k: set() for k in KINDS}
        self._in_flight: list[DeletionChunk] = []
        self._accepted = dict.fromkeys(KINDS, 0)
        self._cancelled = dict.fromkeys(KINDS, 0)

    def delete(self, kind: Kind, profile_id: str, seq: int) -> None:
        """A record (number `seq`) deletes this profile."""
        self._records[kind] += 1
        if profile_id in self._sent[kind]:
            return  # already scheduled by Userpilot this run
        self._pending[kind].setdefault(profile_id, seq)

    def upsert(self, kind: Kind, profile_id: str) -> Upsert:
        """A record creates or updates this profile; what it does to this id's deletions."""
        self._records[kind] += 1
        cancelled = self._pending[kind].pop(profile_id, None) is not None
        if profile_id in self._sent[kind]:
            return Upsert.TOO_LATE
        if cancelled:
            self._cancelled[kind] += 1
            return Upsert.CANCELLED
        return Upsert.PLAIN

    def seal(
        self,
        limit: DeleteLimit,
        *,
        carried: int = 0,
        max_ids: int = DELETE_CHUNK_IDS,
        max_bytes: int = DELETE_CHUNK_BYTES,
    ) -> list[DeletionChunk]:
        """Every pending deletion cut into chunks, now in flight, smallest `min_seq` first.

        Sent in this order, each 202 lets STATE advance up to the next chunk's first record,
        so a kill -9 resends at most the chunks no STATE covered yet.

        Raises:
            DeletionGuardError: the run's deletions (sent before included) exceed `limit`;
                nothing is sealed then. `carried`: see `check`.
        """
        self.check(limit, carried=carried)
        chunks: list[DeletionChunk] = []
        for kind in KINDS:
            pending, self._pending[kind] = self._pending[kind], {}
            for ids in chunk_ids(kind, pending, max_ids=max_ids, max_bytes=max_bytes):
                chunks.append(DeletionChunk(kind, tuple(ids), min(pending[i] for i in ids)))
                self._sent[kind].update(ids)
        chunks.sort(key=lambda c: c.min_seq)
        self._in_flight.extend(chunks)
        return chunks

    def check(self, limit: DeleteLimit, *, carried: int = 0) -> None:
        """Raise DeletionGuardError, naming the settings to check, if the run deletes too much.

        `carried`: how many of this run's deletions the guard allowed an earlier run that did
        not see them all accepted (`guardnote.py`); they count as allowed already.
        """
        per_kind = {k: len(self._pending[k]) + len(self._sent[k]) for k in KINDS}
        total, records = sum(per_kind.values()), sum(self._records.values())
        if limit.allows(max(total - carried, 0), records):
            return
        msg = (
            f"This run would delete {total:,} profiles ({count_of('users', per_kind['users'])}, "
            f"{count_of('companies', per_kind['companies'])}) out of {records:,} records, more "
            f"than `max_deletes_per_run` ({limit}) allows"
            + (f" beside the {carried:,} an unfinished earlier run was allowed" if carried else "")
            + ". No deletion was sent. If the source "
            "really deleted them, raise `max_deletes_per_run`; if not, check `deleted_property` "
            "and the tap's `_sdc_deleted_at`."
        )
        raise DeletionGuardError(msg)

    def pending(self) -> dict[str, list[str]]:
        """The ids to delete that are not sealed yet, per kind."""
        return {kind: list(self._pending[kind]) for kind in KINDS}

    def accepted(self, chunk: DeletionChunk) -> None:
        """Userpilot answered 202 for `chunk`: it no longer holds STATE back."""
        self._in_flight.remove(chunk)
        self._accepted[chunk.kind] += len(chunk.ids)

    @property
    def unanswered(self) -> int:
        """Chunks sealed (handed out to be sent) and not accepted yet."""
        return len(self._in_flight)

    def watermark(self) -> float:
        """The smallest `seq` of a deletion not accepted yet; infinity when there is none."""
        seqs = [c.min_seq for c in self._in_flight]
        seqs.extend(min(p.values()) for p in self._pending.values() if p)
        return min(seqs, default=math.inf)

    def counts(self, kind: Kind) -> DeletionCounts:
        """This run's deletions of one kind, for the summary."""
        return DeletionCounts(
            records=self._records[kind],
            pending=len(self._pending[kind]),
            sent=len(self._sent[kind]),
            accepted=self._accepted[kind],
            cancelled=self._cancelled[kind],
        )
