"""The two kinds of profile Userpilot holds, and the nouns a count of them reads in."""

from __future__ import annotations

from typing import Literal

Kind = Literal["users", "companies"]
KINDS: tuple[Kind, ...] = ("users", "companies")
NOUN: dict[Kind, str] = {"users": "user", "companies": "company"}  # one profile of the kind


def count_of(kind: Kind, count: int) -> str:
    """`1 user`, `1,000 users`, `1 company`."""
    return f"{count:,} {NOUN[kind] if count == 1 else kind}"
