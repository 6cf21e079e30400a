from pathlib import Path

from fake_userpilot import MemoryStore

from target_userpilot.fingerprints import fingerprint
from target_userpilot.profiles import Profile
from target_userpilot.run.batches import BatchFile, BatchLimits, SealedBatch
from target_userpilot.run.changes import ChangeFilter


def sealed(tmp_path: Path, *values: int) -> SealedBatch:
    batch = BatchFile("users", tmp_path, BatchLimits())
    for n, value in enumerate(values, 1):
        batch.add(Profile(str(n), None, {"v": value}), n, "users")
    return batch.seal()


def line(pid: str, value: int) -> bytes:
    return Profile(pid, None, {"v": value}).line("users")


def test_a_confirmed_profile_is_unchanged_until_it_changes(tmp_path: Path) -> None:
    changes = ChangeFilter(MemoryStore())
    batch = sealed(tmp_path, 1, 2)
    changes.confirm(batch, batch.lines(), skip={1})
    assert changes.unchanged("users", "1", line("1", 1), waiting=False)
    assert not changes.unchanged("users", "1", line("1", 5), waiting=False)
    assert not changes.unchanged("users", "2", line("2", 2), waiting=False), "skipped row"
    assert not changes.unchanged("companies", "1", line("1", 1), waiting=False)


def test_a_reverted_value_follows_a_newer_one_still_in_flight(tmp_path: Path) -> None:
    store = MemoryStore()
    store.digests["users", "1"] = fingerprint(line("1", 1))
    changes = ChangeFilter(store)
    newer = sealed(tmp_path, 9)  # id 1 changed to 9, on its way
    changes.shipped(newer)
    assert not changes.unchanged("users", "1", line("1", 1), waiting=False)
    assert not changes.unchanged("users", "1", line("1", 1), waiting=True)
    changes.settled(newer)
    assert changes.unchanged("users", "1", line("1", 1), waiting=False)
