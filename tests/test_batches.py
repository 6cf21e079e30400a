import json
from decimal import Decimal
from pathlib import Path

import pytest

from target_userpilot.profiles import Profile
from target_userpilot.run.batches import BatchFile, BatchLimits, LineTooLargeError


def user(uid: str, **metadata: object) -> Profile:
    return Profile(id=uid, company_id=None, metadata=metadata)  # type: ignore[arg-type]


def read(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_lines_are_ndjson_in_arrival_order(tmp_path: Path) -> None:
    batch = BatchFile("users", tmp_path, BatchLimits())
    for i, uid in enumerate(["a", "b", "c"], start=1):
        assert batch.add(user(uid, n=i), i, "users")
    sealed = batch.seal()
    assert [row["user_id"] for row in read(sealed.path)] == ["a", "b", "c"]
    assert sealed.rows == 3
    assert sealed.size == sealed.path.stat().st_size
    assert sealed.first_position == 1


def test_duplicates_merge_key_by_key_and_keep_first_position(tmp_path: Path) -> None:
    batch = BatchFile("users", tmp_path, BatchLimits())
    batch.add(user("a", plan="free", seats=1), 5, "users")
    batch.add(user("b", plan="pro"), 6, "users")
    batch.add(user("a", plan="pro", price=Decimal("9.90")), 7, "contacts")
    sealed = batch.seal()
    rows = {row["user_id"]: row for row in read(sealed.path)}
    assert rows == {
        "a": {"user_id": "a", "metadata": {"plan": "pro", "seats": 1, "price": 9.9}},
        "b": {"user_id": "b", "metadata": {"plan": "pro"}},
    }
    assert sealed.merged == 1
    assert sealed.rows == 2
    assert sealed.size == sealed.path.stat().st_size
    # Line i of the file is origins[i]; a merged line keeps its first record's position.
    assert [(o.profile_id, o.position) for o in sealed.origins] == [
        (str(row["user_id"]), {"a": 5, "b": 6}[str(row["user_id"])]) for row in read(sealed.path)
    ]


def test_cut_at_row_limit(tmp_path: Path) -> None:
    batch = BatchFile("users", tmp_path, BatchLimits(max_rows=2))
    assert batch.add(user("a"), 1, "users")
    assert batch.add(user("b"), 2, "users")
    assert not batch.add(user("c"), 3, "users")
    # A duplicate of a waiting id still merges into a full batch.
    assert batch.add(user("a", x=1), 4, "users")
    assert batch.seal().rows == 2


def test_cut_before_byte_limit(tmp_path: Path) -> None:
    line_size = len(user("a", pad="x" * 50).line("users")) + 1
    batch = BatchFile("users", tmp_path, BatchLimits(max_bytes=line_size * 2 + 5))
    assert batch.add(user("a", pad="x" * 50), 1, "users")
    assert batch.add(user("b", pad="x" * 50), 2, "users")
    assert not batch.add(user("c", pad="x" * 50), 3, "users")
    sealed = batch.seal()
    assert sealed.size <= line_size * 2 + 5


def test_a_line_over_the_limit_alone_is_refused(tmp_path: Path) -> None:
    batch = BatchFile("users", tmp_path, BatchLimits(max_bytes=1024))
    with pytest.raises(LineTooLargeError, match="max_batch_bytes"):
        batch.add(user("a", big="x" * 2000), 1, "users")


def test_split_halves_keep_every_line_and_origin(tmp_path: Path) -> None:
    batch = BatchFile("companies", tmp_path, BatchLimits())
    for i in range(5):
        batch.add(Profile(id=f"c{i}", company_id=None, metadata={}), i + 10, "companies")
    sealed = batch.seal()
    first, second = sealed.split()
    assert not sealed.path.exists()
    assert [r["company_id"] for r in read(first.path) + read(second.path)] == [
        f"c{i}" for i in range(5)
    ]
    assert (first.rows, second.rows) == (2, 3)
    assert (first.first_position, second.first_position) == (10, 12)


def test_a_batch_that_took_nothing_leaves_no_file(tmp_path: Path) -> None:
    batch = BatchFile("users", tmp_path, BatchLimits(max_bytes=1024))
    with pytest.raises(LineTooLargeError):
        batch.add(user("a", big="x" * 2000), 1, "users")
    assert batch.rows == 0
    assert list(tmp_path.iterdir()) == []


def test_a_merge_that_would_overflow_leaves_the_batch_as_it_was(tmp_path: Path) -> None:
    batch = BatchFile("users", tmp_path, BatchLimits(max_bytes=1024))
    assert batch.add(user("a", x="1" * 600), 1, "users")
    # Alone it fits; merged it would not: the caller ships this batch and starts the next.
    assert not batch.add(user("a", y="2" * 600), 2, "users")
    sealed = batch.seal()
    assert read(sealed.path) == [{"user_id": "a", "metadata": {"x": "1" * 600}}]


@pytest.mark.parametrize(
    "values",
    [
        ["plain", 1, Decimal("2.50"), None, True],
        ["é", "日本", "🎉", '\n\t"\\'],
        ["ok", "k\ud800", "é", "🎉"],  # a lone surrogate: the whole line is ASCII-escaped
    ],
    ids=["ascii", "utf-8", "surrogate"],
)
def test_merged_sizes_are_exact_whatever_the_characters(
    tmp_path: Path, values: list[str | int | Decimal | None]
) -> None:
    batch = BatchFile("users", tmp_path, BatchLimits())
    batch.add(Profile("x", "c1", {"first": "é"}), 1, "users")
    for n, value in enumerate(values):
        batch.add(Profile("x", f"c{n % 2}", {f"k{n % 3}": value, f"new{n}": value}), n + 2, "users")
    batch.add(user("y", z=1), 99, "users")
    counted = batch.size
    sealed = batch.seal()
    assert counted == sealed.size == sealed.path.stat().st_size


def test_merging_many_records_of_one_id_keeps_the_file_small(tmp_path: Path) -> None:
    batch = BatchFile("users", tmp_path, BatchLimits())
    for n in range(5_000):
        assert batch.add(user("grows", **{f"attribute_{n}": n}), n + 1, "users")
        if n % 500 == 0:
            # Only the first line is on disk until the seal writes the merged one.
            assert batch.path.stat().st_size < 100
    sealed = batch.seal()
    assert sealed.rows == 1
    assert sealed.merged == 4_999
    assert len(read(sealed.path)[0]["metadata"]) == 5_000  # type: ignore[arg-type]
    assert sealed.size == sealed.path.stat().st_size
