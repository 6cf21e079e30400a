"""The in-memory lookup of confirmed fingerprints: a flat open-addressing table of fixed-size keys.

A Python set of one int per id cost ~70 bytes an id (142 MB for a million with SQLite): ten
million ids would not fit the memory a loader is given. Here each digest is a 64-bit key and a
32-bit check in two typed arrays, 12 bytes a slot at most 75% full: ~16 bytes an id, whatever the
store holds. Lookups probe a slot or two in Python (measured against batched indexed lookups in
the store: see docs/performance.md).

The digest alone stands for the (id, digest) pair: it is the digest of a line that names its
id, so two ids never share one, and a row's id need not be read, hashed or folded in. Two
digests are confused with a chance of about 2**-96 a lookup (2**-32 when they share the 64-bit
key): a changed profile is skipped as unchanged once in ~10**15 runs of ten million records.
"""

from __future__ import annotations

import struct
from array import array
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Iterable

EMPTY = 0  # a slot never used: a probe stops here
GONE = 1  # a removed key: a probe goes on past it
MAX_LOAD = 0.75
GROWTH = 1.5  # a full table is rebuilt for this many times its live keys
MIN_SLOTS = 64
_SPLIT = struct.Struct("<QI").unpack_from  # a digest's first 64 bits and next 32, in one call

# The keys, the checks and the slot count: replaced as one when the table grows, so a lookup
# that takes no lock never sees the arrays of one table with the size of another.
_Table: TypeAlias = "tuple[array[int], array[int], int]"


def slot_key(digest: bytes) -> tuple[int, int]:
    """The (key, check) of a digest: its first 64 bits (never a marker) and its next 32."""
    key, check = _SPLIT(digest)
    if key <= GONE:  # the two markers; moving these keys costs nothing measurable
        key += 2
    return key, check


def _table(expected: int) -> _Table:
    """Empty arrays with room for `expected` keys at most `MAX_LOAD` full."""
    slots = max(MIN_SLOTS, int(expected / MAX_LOAD) + 1)
    return array("Q", [EMPTY]) * slots, array("I", [0]) * slots, slots


class KeySet:
    """A set of `slot_key` pairs in two flat arrays, sized for the keys it is built for.

    Lookups (`has`, `in`) take no lock and may run beside one thread that adds or discards:
    a pair being added or discarded meanwhile is found or not, never a wrong table.
    """

    def __init__(self, expected: int = 0) -> None:
        """An empty set with room for `expected` keys before it grows."""
        self._table = _table(expected)
        self._live = 0
        self._used = 0  # slots holding a key or GONE: what makes probes long

    def __len__(self) -> int:
        """Keys in the set."""
        return self._live

    @property
    def nbytes(self) -> int:
        """Memory the two arrays take."""
        keys, checks, slots = self._table
        return slots * (keys.itemsize + checks.itemsize)

    def _find(self, key: int, check: int) -> int:
        """The slot holding the pair, or -1."""
        keys, checks, slots = self._table
        slot = key % slots
        while True:
            found = keys[slot]
            if found == key and checks[slot] == check:
                return slot
            if found == EMPTY:
                return -1
            slot += 1
            if slot == slots:
                slot = 0

    def __contains__(self, pair: tuple[int, int]) -> bool:
        """Whether the pair is in the set."""
        return self._find(*pair) >= 0

    def has(self, digest: bytes) -> bool:
        """`slot_key(digest) in self`, inlined: once per record of a rerun."""
        key, check = _SPLIT(digest)
        if key <= GONE:
            key += 2
        keys, checks, slots = self._table
        slot = key % slots
        while True:
            found = keys[slot]
            if found == key and checks[slot] == check:
                return True
            if found == EMPTY:
                return False
            slot += 1
            if slot == slots:
                slot = 0

    def value(self, key: int) -> int | None:
        """The check paired with `key`, or None: the set as a map, one pair a key (`put`)."""
        keys, checks, slots = self._table
        slot = key % slots
        while True:
            found = keys[slot]
            if found == key:
                return checks[slot]
            if found == EMPTY:
                return None
            slot += 1
            if slot == slots:
                slot = 0

    def put(self, keys: Iterable[int], value: int) -> None:
        """Pair each key with `value`, in place of the pair it had: the set as a map."""
        fresh = []
        for key in keys:
            old = self.value(key)
            if old is None:
                fresh.append((key, value))
            else:
                self._table[1][self._find(key, old)] = value  # the check is its value
        self.fill(fresh)

    def discard_paired(self, keys: Iterable[int], value: int) -> None:
        """Take out each key still paired with `value` (`put` may have paired it since)."""
        for key in keys:
            slot = self._find(key, value)
            if slot >= 0:
                self._remove(slot)

    def add(self, pair: tuple[int, int]) -> None:
        """Put the pair in the set (nothing if it is there already)."""
        if self._find(*pair) < 0:
            self.fill((pair,))

    def load(self, digests: Iterable[bytes]) -> None:
        """`fill` with the digests of a store's rows (distinct: so are their ids)."""
        self.fill(map(_SPLIT, digests))

    def fill(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Add pairs known to be distinct and absent (a store's rows): no lookup first.

        The one insertion path, a loop with no call a pair; a digest's own (key, check) may
        come in, its key moved off the markers here.
        """
        keys, checks, slots = self._table
        room = int(slots * MAX_LOAD) - self._used
        live = used = 0  # counted here, not in attributes: a third of the time a pair
        try:
            for key, check in pairs:
                if key <= GONE:
                    key += 2  # noqa: PLW2901 - as slot_key moves it
                if room <= 0:
                    self._live, self._used, live, used = self._live + live, self._used + used, 0, 0
                    self._rebuild(int(self._live * GROWTH) + 1)
                    keys, checks, slots = self._table
                    room = int(slots * MAX_LOAD) - self._used
                slot = key % slots
                while keys[slot] > GONE:
                    slot += 1
                    if slot == slots:
                        slot = 0
                if keys[slot] == EMPTY:
                    used += 1
                    room -= 1
                # The check before the key: a lookup beside this finds the pair whole or not.
                checks[slot] = check
                keys[slot] = key
                live += 1
        finally:
            self._live += live
            self._used += used

    def discard(self, pair: tuple[int, int]) -> None:
        """Take the pair out of the set, if it is there."""
        slot = self._find(*pair)
        if slot >= 0:
            self._remove(slot)

    def _remove(self, slot: int) -> None:
        keys, checks, _ = self._table
        keys[slot] = GONE
        checks[slot] = 0
        self._live -= 1

    def _rebuild(self, expected: int) -> None:
        """Move the live keys to a table sized for `expected`; removed ones are left behind."""
        fresh = KeySet(expected)
        keys, checks, _ = self._table
        fresh.fill((key, check) for key, check in zip(keys, checks, strict=True) if key > GONE)
        self._table, self._live, self._used = fresh._table, fresh._live, fresh._used
