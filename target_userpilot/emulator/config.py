"""The emulator's configuration: how the emulated Userpilot behaves, and which faults it injects."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Iterable

JobIdStyle = Literal["uuid", "bulk", "alternate"]
ProgressFields = Literal["counts", "rows"]

JOB_ID_STYLES: tuple[str, ...] = ("uuid", "bulk", "alternate")
PROGRESS_FIELDS: tuple[str, ...] = ("counts", "rows")
SUBMIT_STATUSES: tuple[int, ...] = (200, 202)
FAULT_KINDS: tuple[str, ...] = ("500", "502", "503", "429", "drop")

MAX_RECORDS = 10_000
"""At most this many records per bulk request (JSON array or NDJSON file); more answers 413."""
MAX_FILE_BYTES = 50 * 1024 * 1024
"""At most this many bytes of file content (or JSON body) per bulk request; more answers 413."""
MULTIPART_OVERHEAD_BYTES = 64 * 1024
"""Slack allowed over MAX_FILE_BYTES for multipart framing before a body is refused unread."""

_NOT_SETTABLE = frozenset({"seed"})


@dataclasses.dataclass(frozen=True)
class EmulatorConfig:
    """How the emulated Userpilot account behaves.

    Attributes:
        token: The API key the server accepts (`Authorization: Token <token>`).
        rows_per_minute: Processing rate of a job; `inf` or `0` mean unlimited, so a job
            completes as soon as its queued delay is over.
        queued_seconds: How long a job stays `queued` before `processing`.
        job_id_style: `uuid`, `bulk` (`bulk:jobs:<account>:<uuid>`) or `alternate` (one of
            each in turn, starting with `uuid`).
        progress_fields: `counts` (`processed_count`/`error_count`) or `rows`
            (`completed_rows`/`total_rows`) on the job object.
        submit_status: Status code of a successful submit, 200 or 202.
        account: The account id, used in `bulk` job ids and server-side file names.
        seed: Seed of the fault plan and of generated job ids.
        fail_rate: Share of requests answered with a fault from `fault_kinds`, decided by a
            `random.Random(seed)`; a faulted request changes no state.
        fault_kinds: Faults to draw from: `500`, `502`, `503`, `429`, `drop`.
        retry_after_seconds: `Retry-After` sent with a 429.
        slow_seconds: Latency added before every response.
        fail_jobs: The next N jobs end `failed`; their rows are not applied.
        drop_submit_responses: The next N successful submits create their job, then the
            connection is closed before the response is sent (a lost response).
        reject_ids: Ids rejected while processing: counted as errors, reported, not stored.
        foreign_job_seconds: A job that is not ours holds the slot for this long from server
            start, so submits get 409 until then.
    """

    token: str = "test-token"  # noqa: S105 - a test server's default key
    rows_per_minute: float = 1200.0
    queued_seconds: float = 0.0
    job_id_style: JobIdStyle = "uuid"
    progress_fields: ProgressFields = "counts"
    submit_status: int = 200
    account: str = "NX-51f4acf7"
    seed: int = 0
    fail_rate: float = 0.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    retry_after_seconds: int = 1
    slow_seconds: float = 0.0
    fail_jobs: int = 0
    drop_submit_responses: int = 0
    reject_ids: frozenset[str] = frozenset()
    foreign_job_seconds: float = 0.0

    def __post_init__(self) -> None:
        """Normalise collections and refuse values the emulator cannot honour."""
        object.__setattr__(self, "fault_kinds", _kinds(self.fault_kinds))
        object.__setattr__(self, "reject_ids", frozenset(str(i) for i in self.reject_ids))
        problems = _problems(self)
        if problems:
            raise ValueError("invalid EmulatorConfig: " + "; ".join(problems))

    @property
    def rows_per_second(self) -> float:
        """Processing rate per second; `inf` when unlimited."""
        if self.rows_per_minute == 0 or math.isinf(self.rows_per_minute):
            return math.inf
        return self.rows_per_minute / 60.0

    def replace(self, **changes: Any) -> EmulatorConfig:  # noqa: ANN401 - field values vary
        """A copy with `changes` applied; `seed` cannot change on a running server."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            msg = f"unknown EmulatorConfig fields: {', '.join(sorted(unknown))}"
            raise TypeError(msg)
        fixed = set(changes) & _NOT_SETTABLE
        if fixed:
            msg = f"cannot change at runtime: {', '.join(sorted(fixed))}"
            raise TypeError(msg)
        return dataclasses.replace(self, **changes)


def _kinds(kinds: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(kinds, str):
        kinds = kinds.split(",")
    return tuple(str(k).strip() for k in kinds if str(k).strip())


def _problems(cfg: EmulatorConfig) -> list[str]:  # noqa: C901 - one check per field
    problems: list[str] = []
    if not cfg.token:
        problems.append("token must not be empty")
    if math.isnan(cfg.rows_per_minute) or cfg.rows_per_minute < 0:
        problems.append("rows_per_minute must be >= 0 (0 or inf: unlimited)")
    if not cfg.queued_seconds >= 0:
        problems.append("queued_seconds must be >= 0")
    if cfg.job_id_style not in JOB_ID_STYLES:
        problems.append(f"job_id_style must be one of {', '.join(JOB_ID_STYLES)}")
    if cfg.progress_fields not in PROGRESS_FIELDS:
        problems.append(f"progress_fields must be one of {', '.join(PROGRESS_FIELDS)}")
    if cfg.submit_status not in SUBMIT_STATUSES:
        problems.append("submit_status must be 200 or 202")
    if not 0.0 <= cfg.fail_rate <= 1.0:
        problems.append("fail_rate must be between 0 and 1")
    bad = [k for k in cfg.fault_kinds if k not in FAULT_KINDS]
    if bad or (cfg.fail_rate > 0 and not cfg.fault_kinds):
        problems.append(f"fault_kinds must be a non-empty subset of {', '.join(FAULT_KINDS)}")
    if cfg.retry_after_seconds < 0:
        problems.append("retry_after_seconds must be >= 0")
    if not cfg.slow_seconds >= 0:
        problems.append("slow_seconds must be >= 0")
    if cfg.fail_jobs < 0 or cfg.drop_submit_responses < 0:
        problems.append("fail_jobs and drop_submit_responses must be >= 0")
    if not cfg.foreign_job_seconds >= 0:
        problems.append("foreign_job_seconds must be >= 0")
    return problems
