"""The in-memory lookup of confirmed fingerprints: a flat open-addressing table of fixed-size keys.

A Python set of one int per id cost ~70 bytes an id (142 MB for a million with SQLite): ten
million ids would not fit the memory a loader is given. Here each (id, digest) pair is a 64-bit
key and a 32-bit check in two typed arrays, 12 bytes a slot at most 75% full: ~16 bytes an
id, whatever the store holds. Lookups probe a slot or two in Python (measured against batched
indexed lookups in the store: see docs/performance.md).

Two pairs are confused with a chance of about 2**-96 a lookup (2**-32 when they share the
64-bit key, which lines of different ids almost never do): a changed profile is skipped
as unchanged once in ~10**15 runs of ten million records.
"""

from __future__ import annotations

import struct
from array import array
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

EMPTY = 0  # a slot never used: a probe stops here
GONE = 1  # a removed key: a probe goes on past it
MAX_LOAD = 0.75
GROWTH = 1.5  # a full table is rebuilt for this many times its live keys
MIN_SLOTS = 64
_LOW_64 = (1 << 64) - 1
_SPLIT = struct.Struct("<QI").unpack_from  # a digest's first 64 bits and next 32, in one call


def slot_key(profile_id: str, digest: bytes) -> tuple[int, int]:
    """The (key, check) of a pair, for this process only: the id's string hash is per process.

    The key is the digest's first 64 bits with the id's hash folded in; the check, the next 32.
    """
    bits, check = _SPLIT(digest)
    key = bits ^ (hash(profile_id) & _LOW_64)
    if key <= GONE:  # the two markers; moving these keys costs nothing measurable
        key += 2
    return key, check


class KeySet:
    """A set of `slot_key` pairs in two flat arrays, sized for the keys it is built for."""

    def __init__(self, expected: int = 0) -> None:
        """An empty set with room for `expected` keys before it grows."""
        self._slots = max(MIN_SLOTS, int(expected / MAX_LOAD) + 1)
        self._keys = array("Q", [EMPTY]) * self._slots
        self._checks = array("I", [0]) * self._slots
        self._live = 0
        self._used = 0  # slots holding a key or GONE: what makes probes long

    def __len__(self) -> int:
        """Keys in the set."""
        return self._live

    @property
    def nbytes(self) -> int:
        """Memory the two arrays take."""
        return self._slots * (self._keys.itemsize + self._checks.itemsize)

    def _find(self, key: int, check: int) -> int:
        """The slot holding the pair, or -1."""
        keys, checks, slots = self._keys, self._checks, self._slots
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

    def has(self, profile_id: str, digest: bytes) -> bool:
        """`slot_key(profile_id, digest) in self`, inlined: once per record of a rerun."""
        bits, check = _SPLIT(digest)
        key = bits ^ (hash(profile_id) & _LOW_64)
        if key <= GONE:
            key += 2
        keys, slots = self._keys, self._slots
        slot = key % slots
        while True:
            found = keys[slot]
            if found == key and self._checks[slot] == check:
                return True
            if found == EMPTY:
                return False
            slot += 1
            if slot == slots:
                slot = 0

    def add(self, pair: tuple[int, int]) -> None:
        """Put the pair in the set (nothing if it is there already)."""
        if self._find(*pair) < 0:
            self._put(*pair)

    def fill(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Add pairs known to be distinct and absent (a store's rows): no lookup first."""
        for key, check in pairs:
            self._put(key, check)

    def load(self, rows: Iterable[tuple[str, bytes]]) -> None:
        """`fill` with the (id, digest) rows of a store, all distinct ids."""
        self.fill(slot_key(profile_id, digest) for profile_id, digest in rows)

    def discard(self, pair: tuple[int, int]) -> None:
        """Take the pair out of the set, if it is there."""
        slot = self._find(*pair)
        if slot >= 0:
            self._keys[slot] = GONE
            self._checks[slot] = 0
            self._live -= 1

    def _put(self, key: int, check: int) -> None:
        if self._used + 1 > self._slots * MAX_LOAD:
            self._rebuild(int(self._live * GROWTH) + 1)
        keys, slots = self._keys, self._slots
        slot = key % slots
        while keys[slot] > GONE:
            slot += 1
            if slot == slots:
                slot = 0
        if keys[slot] == EMPTY:
            self._used += 1
        keys[slot] = key
        self._checks[slot] = check
        self._live += 1

    def _rebuild(self, expected: int) -> None:
        """Move the live keys to a table sized for `expected`; removed ones are left behind."""
        fresh = KeySet(expected)
        fresh.fill(
            (key, check) for key, check in zip(self._keys, self._checks, strict=True) if key > GONE
        )
        self._slots, self._keys, self._checks = fresh._slots, fresh._keys, fresh._checks
        self._live, self._used = fresh._live, fresh._used
