"""Full batches waiting on disk for the job slot, in the order they were cut.

Userpilot runs one job at a time at 1,200 to 1,800 rows a minute, far slower than the target
reads: holding the tap until the last job completes kept its database snapshot open for hours.
So full batches wait here, still open to merges, and the reader pauses only when the bytes
waiting pass `max_spool_bytes`. A batch leaves the spool, sealed, only when the job thread is
about to need it; from then on it is never touched again.

Each id is in at most one waiting batch of its kind: a newer record of an id that waits merges
into that batch (as within a batch), instead of becoming a second row in a later one. The merged
record's STATE needs nothing more: the waiting batch holds STATE from its first record on, which
is before the newer one, until its job completes.

What a waiting row costs in memory: the newest waiting batch of a kind keeps its dict index
(while Userpilot keeps up it is the only one, taken soon after it came); once a newer one comes
behind it, its index goes into flat arrays (`BatchFile.freeze`: 28 bytes a row and the id) and
its ids into one table of id hashes per kind (`KeySet` used as a map: ~16 bytes an id), where
a dict cost ~250 bytes a row: a spool of ten million rows holds ~0.5 GB less.

Only the main thread (the pipeline) touches it.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from target_userpilot.fingerprints.keyset import KeySet

if TYPE_CHECKING:
    from target_userpilot.kinds import Kind
    from target_userpilot.profiles import Profile
    from target_userpilot.run.batches import BatchFile


_ID_BITS = (1 << 64) - 2  # a key never 0 or 1, the table's markers


def _key(profile_id: str) -> int:
    """An id's key in the table: its string hash (per process, as the table is)."""
    return (hash(profile_id) & _ID_BITS) | 2


class Spool:
    """Batches cut and not yet handed to the job thread, oldest first."""

    def __init__(self) -> None:
        """Nothing waits yet."""
        self._batches: deque[tuple[int, BatchFile]] = deque()  # numbered as they come
        self._frozen: dict[int, BatchFile] = {}
        self._newest: dict[Kind, tuple[int, BatchFile]] = {}  # not frozen yet
        self._next = 0
        # kind -> the key of each id of a frozen batch -> the number of its latest such batch.
        # Two ids with one key (once in ~2**63 pairs) both count as waiting: a record then is
        # not skipped as unchanged, and a merge finds its id in the batch or goes to the open one.
        self._where: dict[Kind, KeySet] = {}
        self.bytes = 0

    def __len__(self) -> int:
        """Batches waiting."""
        return len(self._batches)

    @property
    def rows(self) -> int:
        """Rows waiting, over every batch."""
        return sum(batch.rows for _, batch in self._batches)

    def __contains__(self, key: tuple[Kind, str]) -> bool:
        """Whether a line for this (kind, id) may wait in a batch (see `_where`)."""
        return self._holder(*key) is not None

    def _holder(self, kind: Kind, profile_id: str) -> BatchFile | None:
        """The latest waiting batch that may hold the id."""
        newest = self._newest.get(kind)
        if newest is not None and profile_id in newest[1]:
            return newest[1]
        where = self._where.get(kind)
        number = where.value(_key(profile_id)) if where is not None else None
        return None if number is None else self._frozen[number]

    def put(self, batch: BatchFile) -> None:
        """A full batch joins the end of the line; its ids are now found here."""
        number = self._next
        self._next += 1
        self._batches.append((number, batch))
        older = self._newest.get(batch.kind)
        self._newest[batch.kind] = (number, batch)
        if older is not None:  # it waits behind another now: into the compact index
            older_number, older_batch = older
            keys = map(_key, older_batch.ids())  # before `freeze`: each id's hash is cached
            self._where.setdefault(batch.kind, KeySet()).put(keys, older_number)
            older_batch.freeze()
            self._frozen[older_number] = older_batch
        self.bytes += batch.size

    def merge(self, kind: Kind, profile: Profile, position: int, stream: str, line: bytes) -> bool:
        """Merge a newer record into the waiting batch holding its id; False if none can take it.

        A merge that would push that batch past its byte limit is not made: the record then
        goes to the open batch, and Userpilot applies the two rows in order.
        """
        batch = self._holder(kind, profile.id)
        if batch is None or profile.id not in batch:
            return False
        before = batch.size
        if not batch.add(profile, position, stream, line):
            return False
        self.bytes += batch.size - before
        return True

    def take(self) -> BatchFile:
        """The oldest waiting batch, leaving the spool (to be sealed and shipped)."""
        number, batch = self._batches.popleft()
        if self._newest.get(batch.kind, (None,))[0] == number:
            del self._newest[batch.kind]
        else:
            del self._frozen[number]
            # A later batch may hold an id too (a merge that did not fit): it stays found there.
            self._where[batch.kind].discard_paired(map(_key, batch.ids()), number)
        self.bytes -= batch.size
        return batch

    def discard(self) -> None:
        """A stop before the end: remove every waiting batch's file."""
        while self._batches:
            self.take().discard()
