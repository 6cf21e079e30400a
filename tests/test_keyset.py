"""The flat lookup table of confirmed fingerprints: what it holds, in how little memory."""

from __future__ import annotations

from target_userpilot.fingerprints import fingerprint
from target_userpilot.fingerprints.keyset import KeySet, slot_key


def pairs(count: int, version: int = 0) -> list[tuple[int, int]]:
    return [slot_key(fingerprint(f"u{i}:{version}".encode())) for i in range(count)]


def test_a_filled_set_finds_exactly_its_pairs_in_16_bytes_an_id() -> None:
    known = KeySet(10_000)
    known.fill(pairs(10_000))
    assert all(pair in known for pair in pairs(10_000))
    assert not any(pair in known for pair in pairs(10_000, version=1)), "a changed line is new"
    assert len(known) == 10_000
    assert known.nbytes <= 16 * 10_000 + 1_000


def test_it_grows_past_its_size_and_forgets_what_is_discarded() -> None:
    known = KeySet()
    for pair in pairs(5_000):
        known.add(pair)
    for pair in pairs(5_000)[::2]:
        known.discard(pair)
    for pair in pairs(5_000, version=1)[::2]:  # the discarded ids, confirmed anew
        known.add(pair)
    assert [pair in known for pair in pairs(6)] == [False, True] * 3
    assert [pair in known for pair in pairs(6, version=1)] == [True, False] * 3
    assert len(known) == 5_000


def test_keys_on_one_slot_are_all_found_past_a_discarded_one() -> None:
    known = KeySet()  # 64 slots: keys 64 apart start their probes on the same slot
    crowd = [(64 * n + 5, n) for n in range(1, 20)]
    for pair in crowd:
        known.add(pair)
    known.discard(crowd[3])
    assert [pair in known for pair in crowd] == [n != 3 for n in range(19)]
    assert (64 * 2 + 5, 99) not in known, "the check tells apart two pairs with one key"


def test_rows_past_the_count_it_was_sized_for_are_kept() -> None:
    digests = [fingerprint(f"u{i}".encode()) for i in range(1_000)]
    known = KeySet(10)  # a store that gained rows between its count and its read
    known.load(digests)
    assert all(known.has(digest) for digest in digests)
    assert len(known) == 1_000


def test_used_as_a_map_a_key_takes_its_newest_value_and_keeps_it() -> None:
    where = KeySet()  # the spool's: id key -> the number of the batch it waits in
    where.put([10, 11, 12], 1)
    where.put([11, 13], 2)  # 11 waits in batch 2 now
    assert [where.value(key) for key in (10, 11, 12, 13, 14)] == [1, 2, 1, 2, None]
    where.discard_paired([10, 11, 12], 1)  # batch 1 leaves
    assert [where.value(key) for key in (10, 11, 12, 13)] == [None, 2, None, 2]
    assert len(where) == 2
