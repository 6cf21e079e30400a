"""Counters of a run and the lines that report them: per job, on stopping, at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from target_userpilot.run.deadletters import DeadLetters


def plural(count: int, noun: str) -> str:
    """`1 user`, `2 users`, `1,000 companies`: a count with its noun agreeing."""
    if count == 1:
        return f"1 {noun}"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return f"{count:,} {noun[:-1]}ies"
    if noun.endswith(("s", "x", "ch", "sh")):
        return f"{count:,} {noun}es"
    return f"{count:,} {noun}s"


def duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3 h 05 min`: a wait as a person reads it."""
    if seconds < 60:  # noqa: PLR2004
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:  # noqa: PLR2004
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


@dataclass
class Counters:
    """What the end-of-run summary reports; the main thread's alone."""

    records_in: int = 0
    invalid: int = 0
    unchanged: int = 0
    merged: int = 0
    profiles_sent: dict[str, int] = field(default_factory=lambda: {"users": 0, "companies": 0})
    rejected_by_userpilot: int = 0
    jobs: int = 0
    jobs_resubmitted: int = 0
    files_written: int = 0
    # `hard_delete`: ids Userpilot accepted to delete (a dry run: would delete), and requests.
    deleted: dict[str, int] = field(default_factory=lambda: {"users": 0, "companies": 0})
    delete_requests: int = 0
    deletions_cancelled: int = 0  # deletions a later record of the same id cancelled
    # Events: accepted by the Track API (a dry run: written), sent before, refused (400).
    events_accepted: int = 0
    events_skipped: int = 0
    events_refused: int = 0


@dataclass(frozen=True)
class RunFacts:
    """What the summary says besides the counters."""

    dry_run_dir: Path | None  # set for a dry run
    retries: int
    elapsed: float


def summary_line(c: Counters, letters: DeadLetters, facts: RunFacts) -> str:
    """The end-of-run summary, one line."""
    if letters.written:
        where = f"{letters.written:,} written to {letters.path}"
    else:
        where = f"{letters.skipped:,} skipped" if letters.skipped else "none"
    sent = (
        f"would send {plural(c.profiles_sent['users'], 'user')} and "
        f"{plural(c.profiles_sent['companies'], 'company')} in "
        f"{plural(c.files_written, 'file')} in {facts.dry_run_dir}"
        if facts.dry_run_dir is not None
        else f"sent {plural(c.profiles_sent['users'], 'user')} and "
        f"{plural(c.profiles_sent['companies'], 'company')} in {plural(c.jobs, 'job')}"
    )
    return (
        f"Summary: {plural(c.records_in, 'record')} in; {sent}; {_events(c, facts)}"
        f"{_deleted(c, facts)}"
        f"{plural(c.merged, 'duplicate')} merged; {c.unchanged:,} unchanged skipped; "
        f"{c.invalid:,} invalid and {c.rejected_by_userpilot:,} rejected by Userpilot "
        f"(dead letters: {where}); {plural(facts.retries, 'request')} retried; "
        f"{plural(c.jobs_resubmitted, 'job')} resubmitted; {facts.elapsed:.1f} s elapsed."
    )


def _events(c: Counters, facts: RunFacts) -> str:
    """The events part of the summary (with its `; `), empty for a run without any."""
    if not (c.events_accepted or c.events_skipped or c.events_refused):
        return ""
    done = "would track" if facts.dry_run_dir is not None else "tracked"
    return (
        f"{done} {plural(c.events_accepted, 'event')} ({c.events_skipped:,} sent before "
        f"skipped, {c.events_refused:,} refused by Userpilot); "
    )


def _deleted(c: Counters, facts: RunFacts) -> str:
    """The deletions part of the summary (with its `; `), empty for a run without any."""
    if not (sum(c.deleted.values()) or c.deletions_cancelled):
        return ""
    users = plural(c.deleted["users"], "user")
    companies = plural(c.deleted["companies"], "company")
    requests = plural(c.delete_requests, "request")
    done = (
        f"would delete {users} and {companies} in {plural(c.delete_requests, 'file')}"
        if facts.dry_run_dir is not None
        else f"deletion of {users} and {companies} scheduled for 02:00 UTC in {requests}"
    )
    return f"{done}, {c.deletions_cancelled:,} cancelled by a later record; "


def dead_letter_warning(letters: DeadLetters) -> str | None:
    """The closing WARNING of a run that wrote dead letters, or None."""
    if not letters.written:
        return None
    return (
        f"{plural(letters.written, 'dead letter')} written to {letters.path} "
        f'(after the marker line "run": "{letters.run["run"]}"): '
        "those records are not in Userpilot."
    )
