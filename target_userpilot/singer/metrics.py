"""The run's counters as Singer `METRIC` lines, through the SDK's metric logger.

The SDK's own `record_count` counts records read, whatever became of them; these say what
reached Userpilot. Meltano reads `METRIC:` lines from a plugin's log, so each is one counter
point as the SDK writes them (`{"type": "counter", "metric": ..., "value": ..., "tags": ...}`),
logged once at the end of a run however it ends: a counter's points add up to its total.
"""

from __future__ import annotations

import enum
import os
from typing import TYPE_CHECKING, cast

from singer_sdk.metrics import Point, get_metrics_logger, log

if TYPE_CHECKING:
    from singer_sdk.metrics import Metric

    from target_userpilot.run.summary import Counters


class RunMetric(str, enum.Enum):
    """This target's counters (the SDK's `Metric` names only its own, and cannot be extended)."""

    PROFILES_SENT = "profiles_sent"
    UNCHANGED_SKIPPED = "unchanged_skipped"
    INVALID_RECORDS = "invalid_records"
    REJECTED_BY_USERPILOT = "rejected_by_userpilot"
    JOBS_COMPLETED = "jobs_completed"
    DELETIONS_ACCEPTED = "deletions_accepted"
    EVENTS_SENT = "events_sent"
    EVENTS_REFUSED = "events_refused"


def counter_points(counters: Counters, *, dry_run: bool) -> list[Point[int]]:
    """One counter point per metric (per kind where the summary counts by kind)."""
    tags: dict[str, object] = {"pid": os.getpid()}
    if dry_run:  # nothing reached Userpilot: the counts are what a real run would send
        tags["dry_run"] = True
    by_kind: list[tuple[RunMetric, dict[str, int]]] = [
        (RunMetric.PROFILES_SENT, counters.profiles_sent),
        (RunMetric.DELETIONS_ACCEPTED, counters.deleted),
    ]
    values: list[tuple[RunMetric, int, dict[str, object]]] = [
        (metric, count, {"kind": kind})
        for metric, counts in by_kind
        for kind, count in counts.items()
    ]
    values += [
        (RunMetric.UNCHANGED_SKIPPED, counters.unchanged, {}),
        (RunMetric.INVALID_RECORDS, counters.invalid, {}),
        (RunMetric.REJECTED_BY_USERPILOT, counters.rejected_by_userpilot, {}),
        (RunMetric.JOBS_COMPLETED, counters.jobs, {}),
        (RunMetric.EVENTS_SENT, counters.events_accepted, {}),
        (RunMetric.EVENTS_REFUSED, counters.events_refused, {}),
    ]
    # The SDK's `Point` reads only the metric's `.value`; its type names the SDK's own enum.
    return [
        Point("counter", cast("Metric", metric), value, {**extra, **tags})
        for metric, value, extra in values
    ]


def log_counters(counters: Counters, *, dry_run: bool) -> None:
    """Write the run's counters as `METRIC` lines to the SDK's metrics logger."""
    logger = get_metrics_logger()
    for point in counter_points(counters, dry_run=dry_run):
        log(logger, point)
