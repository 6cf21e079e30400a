"""The change filter: skip a profile whose confirmed fingerprint matches, track ids in flight.

It sits over any fingerprint store with `is_unchanged`, `confirm`, `forget` and `close` (SQLite or
PostgreSQL). Only the main thread calls it.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Protocol

from target_userpilot.fingerprints import fingerprint

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from target_userpilot.run.batches import SealedBatch


class Store(Protocol):
    """What the change filter needs of a fingerprint store."""

    def is_unchanged(self, kind: str, profile_id: str, digest: bytes) -> bool:
        """Whether this digest is the one last confirmed for the id."""
        ...

    def confirm(self, kind: str, entries: Iterable[tuple[str, bytes]]) -> object:
        """Record the digests a completed job confirmed."""
        ...

    def forget(self, kind: str, ids: Iterable[str]) -> object:
        """Forget the digests of ids whose deletion was accepted."""
        ...

    def check_session(self) -> None:
        """Before anything more is sent: the run lock is held, or this raises."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class ChangeFilter:
    """Decides which profiles are unchanged, and records what completed jobs confirmed."""

    def __init__(self, store: Store) -> None:
        """Filter over `store`."""
        self._store = store
        # kind -> ids of every profile in a batch handed to the job thread and not settled,
        # counted: the same id may be in two such batches (per kind: no tuple a lookup).
        self._in_flight: dict[str, Counter[str]] = {}

    def unchanged(self, kind: str, profile_id: str, line: bytes, *, waiting: bool) -> bool:
        """Whether the profile can be skipped; `waiting`: its id is in an open or waiting batch."""
        in_flight = self._in_flight.get(kind)
        if waiting or (in_flight and profile_id in in_flight):
            # A newer value for this id is still on its way: this one must follow it, even
            # if it reverts to what was confirmed before.
            return False
        return self._store.is_unchanged(kind, profile_id, fingerprint(line))

    def shipped(self, batch: SealedBatch) -> None:
        """The batch went to the job thread: its ids are in flight until `settled`."""
        in_flight = self._in_flight.setdefault(batch.kind, Counter())
        in_flight.update(origin.profile_id for origin in batch.origins)

    def settled(self, batch: SealedBatch) -> None:
        """Every row of the batch is confirmed or refused."""
        in_flight = self._in_flight[batch.kind]
        for origin in batch.origins:
            in_flight[origin.profile_id] -= 1
            if not in_flight[origin.profile_id]:
                del in_flight[origin.profile_id]

    def confirm(self, part: SealedBatch, lines: list[bytes], skip: Collection[int]) -> None:
        """Fingerprint the lines a completed job took, but those at the indexes in `skip`."""
        self._store.confirm(
            part.kind,
            (
                (origin.profile_id, fingerprint(line))
                for index, (origin, line) in enumerate(zip(part.origins, lines, strict=True))
                if index not in skip
            ),
        )

    def seen(self, kind: str, key: str) -> bool:
        """Whether Userpilot accepted the thing named `key` (an event) in an earlier run."""
        return self._store.is_unchanged(kind, key, fingerprint(key.encode()))

    def remember(self, kind: str, key: str) -> None:
        """Userpilot accepted the thing named `key` (an event): a later run skips it."""
        self._store.confirm(kind, [(key, fingerprint(key.encode()))])

    def forget(self, kind: str, ids: Iterable[str]) -> None:
        """Userpilot accepted these ids' deletion: a re-created profile must be sent again."""
        self._store.forget(kind, ids)

    def close(self) -> None:
        """Close the store."""
        self._store.close()
