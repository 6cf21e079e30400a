import tracemalloc
from typing import Any

from target_userpilot.run.checkpoints import DELETIONS_HOLD, Checkpoints, Hold


def make() -> tuple[Checkpoints, list[dict[str, Any]]]:
    out: list[dict[str, Any]] = []
    return Checkpoints(out.append), out


def test_state_waits_for_every_record_before_it() -> None:
    gate, out = make()
    gate.hold(Hold("batch", "users-1"), 1)
    gate.add_state(10, {"bookmark": 10})
    assert out == []
    gate.settle(Hold("batch", "users-1"))
    assert out == [{"bookmark": 10}]


def test_newest_releasable_state_only() -> None:
    gate, out = make()
    gate.hold(Hold("batch", "companies-1"), 5)
    gate.add_state(3, {"b": 3})
    assert out == [{"b": 3}]  # nothing before it is pending
    gate.add_state(8, {"b": 8})
    gate.hold(Hold("batch", "users-1"), 9)
    gate.add_state(12, {"b": 12})
    gate.settle(Hold("batch", "users-1"))
    assert out == [{"b": 3}]  # companies-1 (from record 5) still holds 8 and 12
    gate.settle(Hold("batch", "companies-1"))
    assert out == [{"b": 3}, {"b": 12}]


def test_empty_and_repeated_states_are_not_emitted() -> None:
    gate, out = make()
    gate.add_state(0, {})
    gate.add_state(1, {"b": 1})
    gate.add_state(2, {"b": 1})
    assert out == [{"b": 1}]


def test_the_newest_waiting_state_and_the_watermark_are_known() -> None:
    gate, _ = make()
    gate.hold(Hold("batch", "companies-1"), 4)
    assert gate.newest_state_position() is None
    gate.add_state(9, {"b": 9})
    assert gate.newest_state_position() == 9
    assert gate.watermark() == 4


def test_a_state_after_every_record_keeps_one_per_hold_and_releases_as_before() -> None:
    gate, out = make()
    tracemalloc.start()
    try:
        for position in range(1, 10_001):
            if position % 1_000 == 1:  # a batch of 1,000 records opens here
                gate.hold(Hold("batch", f"batch-{position}"), position)
            gate.add_state(position, {"at": position, "pad": f"{position:x>2000}"})
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Only these could ever go out: the newest before each later batch's first record, and
    # the newest of all; 10 kept (20 KB of pads), not 10,000 (20 MB).
    assert kept < 1_000_000
    gate.settle(Hold("batch", "batch-1"))
    assert [s["at"] for s in out] == [1_000]
    for position in range(1_001, 10_001, 1_000):
        gate.settle(Hold("batch", f"batch-{position}"))
    assert [s["at"] for s in out] == [*range(1_000, 10_001, 1_000)]


def test_a_marked_position_keeps_the_state_before_it() -> None:
    gate, out = make()
    gate.hold(Hold("batch", "batch"), 1)
    gate.add_state(2, {"at": 2})
    gate.mark(3)  # a deletion at record 3 may hold STATE from there once the batch settles
    gate.add_state(4, {"at": 4})
    gate.hold(DELETIONS_HOLD, 3)
    gate.settle(Hold("batch", "batch"))
    assert out == [{"at": 2}]
