"""The emulator's configuration: how the emulated Userpilot behaves, and which faults it injects."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Iterable

JobIdStyle = Literal["uuid", "bulk", "alternate"]
ProgressFields = Literal["counts", "rows"]
Profile = Literal["reference", "legacy"]
ExportJob = Literal["none", "completed", "stuck"]

JOB_ID_STYLES: tuple[str, ...] = ("uuid", "bulk", "alternate")
PROGRESS_FIELDS: tuple[str, ...] = ("counts", "rows")
SUBMIT_STATUSES: tuple[int, ...] = (200, 202)
PROFILES: tuple[str, ...] = ("reference", "legacy")
EXPORT_JOBS: tuple[str, ...] = ("none", "completed", "stuck")
REFUSALS: tuple[int, ...] = (0, 400, 415)
FAULT_KINDS: tuple[str, ...] = ("500", "502", "503", "429", "drop")
"""The faults drawn unless `fault_kinds` says otherwise."""
DELETE_ANSWER_FAULTS: tuple[str, ...] = ("html200", "empty200", "302")
"""Answers to a delete request that are no acceptance (only delete requests draw them): a
maintenance page with 200, a 200 without a body, a redirect to the job list."""
KNOWN_FAULT_KINDS: tuple[str, ...] = (*FAULT_KINDS, "429date", *DELETE_ANSWER_FAULTS)

MAX_RECORDS = 10_000
"""At most this many records per bulk request (JSON array or NDJSON file); more answers 413."""
MAX_FILE_BYTES = 50_000_000
"""At most this many bytes of file content (or JSON body) per bulk request; more answers 413.

Userpilot says "50 MB": read as the smaller, decimal megabytes."""
MULTIPART_OVERHEAD_BYTES = 64 * 1024
"""Slack allowed over MAX_FILE_BYTES for multipart framing before a body is refused unread."""

_NOT_SETTABLE = frozenset({"seed"})


@dataclasses.dataclass(frozen=True)
class Shapes:
    """What a profile decides, after explicit settings have overridden it."""

    job_id_style: JobIdStyle
    progress_fields: ProgressFields
    submit_status: int
    validating_seconds: float
    pending_refresh_seconds: float
    job_list_page_size: int  # 0: every job
    export_job: ExportJob
    retry_after_share: float
    reference: bool  # the API reference's bodies (submit, job view, errors) vs the bulk pages'


_PROFILE_SHAPES: dict[str, Shapes] = {
    "reference": Shapes(
        job_id_style="bulk",
        progress_fields="rows",
        submit_status=202,
        validating_seconds=0.25,
        pending_refresh_seconds=0.25,
        job_list_page_size=20,
        export_job="completed",
        retry_after_share=0.5,
        reference=True,
    ),
    "legacy": Shapes(
        job_id_style="uuid",
        progress_fields="counts",
        submit_status=200,
        validating_seconds=0.0,
        pending_refresh_seconds=0.0,
        job_list_page_size=0,
        export_job="none",
        retry_after_share=1.0,
        reference=False,
    ),
}


@dataclasses.dataclass(frozen=True)
class EmulatorConfig:
    """How the emulated Userpilot account behaves.

    `profile` sets the shapes: `reference` (default) answers like Userpilot's API reference
    (202 with a list-entry job, `bulk:jobs:` ids, `completed_rows`/`total_rows`, `validating` and
    `pending_refresh` phases, `{"errors": [...]}` bodies, a job list of the newest page with an
    export job in it, 429s sometimes without Retry-After); `legacy` like the bulk pages (200,
    UUIDs, `processed_count`/`error_count`, `{"error": ...}`, every job listed). Fields left at
    None take the profile's value; `shapes` holds the result.

    Attributes:
        token: The API key the server accepts (`Authorization: Token <token>`).
        profile: `reference` or `legacy`.
        rows_per_minute: Processing rate of a job; `inf` or `0` mean unlimited, so a job
            completes as soon as its queued delay is over.
        queued_seconds: How long a job stays `queued` before `processing`.
        job_id_style: `uuid`, `bulk` (`bulk:jobs:<account>:<uuid>`) or `alternate` (one of
            each in turn, starting with `uuid`).
        progress_fields: `counts` (`processed_count`/`error_count`) or `rows`
            (`completed_rows`/`total_rows`) on the job object.
        submit_status: Status code of a successful submit, 200 or 202.
        validating_seconds: How long a job is `validating` after `queued`.
        pending_refresh_seconds: How long a processed job is `pending_refresh` (holding the
            slot) before `completed`.
        job_list_page_size: Jobs in the job list (the newest, newest first); 0: every job,
            oldest first.
        export_job: An export job in the job list: `none`, `completed`, or `stuck` in
            `processing` for ever (exports never hold the import slot).
        retry_after_share: Share of 429 answers that carry Retry-After.
        account: The account id, used in `bulk` job ids and server-side file names.
        seed: Seed of the fault plan and of generated job ids.
        fail_rate: Share of requests answered with a fault from `fault_kinds`, decided by a
            `random.Random(seed)`; a faulted request changes no state.
        fault_kinds: Faults to draw from: `500`, `502`, `503`, `429`, `drop`; also `429date`
            (Retry-After as an HTTP date) and, for delete requests only, `html200`,
            `empty200`, `302`.
        retry_after_seconds: `Retry-After` sent with a 429.
        slow_seconds: Latency added before every response.
        fail_jobs: The next N jobs end `failed`; their rows are not applied.
        drop_submit_responses: The next N successful submits create their job, then the
            connection is closed before the response is sent (a lost response).
        reject_ids: Ids rejected while processing: counted as errors, reported, not stored.
        foreign_job_seconds: A job that is not ours holds the slot for this long from server
            start, so submits get 409 until then.
        max_value_chars: Rejection rule: an upload with a metadata string longer than this
            answers 400 naming the line (0: no limit).
        string_values_only: Rejection rule: an upload with a metadata value that is not a
            string (null allowed) answers 400 naming the line.
        reject_keys: Rejection rule: an upload with one of these metadata keys answers 400
            naming the line.
        refuse_uploads: Rejection rule: every upload answers 400 naming its first line (an
            account or format the server refuses outright).
        refuse_multipart: 415 or 400: a multipart upload is refused with that status (a
            server taking JSON bodies only); 0: multipart is accepted.
        proxy_body_limit: A proxy in front of the API answers 413 (an HTML page) to any upload
            body over this many bytes, however few rows it holds (0: no proxy).
        track_per_minute: Track API requests a token may make in any 60 seconds; more answer
            429 (0: no limit). Userpilot's documented limit is 600.
        keep_profiles: False: a completed job's rows are counted, not upserted (nothing to
            inspect), so a benchmark of ten million profiles does not hold them all in memory.
    """

    token: str = "test-token"  # noqa: S105 - a test server's default key
    profile: Profile = "reference"
    rows_per_minute: float = 1200.0
    queued_seconds: float = 0.0
    job_id_style: JobIdStyle | None = None
    progress_fields: ProgressFields | None = None
    submit_status: int | None = None
    validating_seconds: float | None = None
    pending_refresh_seconds: float | None = None
    job_list_page_size: int | None = None
    export_job: ExportJob | None = None
    retry_after_share: float | None = None
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
    max_value_chars: int = 0
    string_values_only: bool = False
    reject_keys: frozenset[str] = frozenset()
    refuse_uploads: bool = False
    refuse_multipart: int = 0
    proxy_body_limit: int = 0
    track_per_minute: int = 600
    keep_profiles: bool = True
    shapes: Shapes = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Normalise collections, resolve the profile, refuse values it cannot honour."""
        object.__setattr__(self, "fault_kinds", _kinds(self.fault_kinds))
        object.__setattr__(self, "reject_ids", frozenset(str(i) for i in self.reject_ids))
        object.__setattr__(self, "reject_keys", frozenset(str(k) for k in self.reject_keys))
        if self.profile not in PROFILES:
            msg = f"invalid EmulatorConfig: profile must be one of {', '.join(PROFILES)}"
            raise ValueError(msg)
        base = _PROFILE_SHAPES[self.profile]
        chosen = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(Shapes)
            if f.name != "reference" and getattr(self, f.name) is not None
        }
        object.__setattr__(self, "shapes", dataclasses.replace(base, **chosen))
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
        unknown = set(changes) - {f.name for f in dataclasses.fields(self) if f.init}
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


def _problems(cfg: EmulatorConfig) -> list[str]:  # noqa: C901, PLR0912 - one check per field
    problems: list[str] = []
    shapes = cfg.shapes
    if not cfg.token:
        problems.append("token must not be empty")
    if math.isnan(cfg.rows_per_minute) or cfg.rows_per_minute < 0:
        problems.append("rows_per_minute must be >= 0 (0 or inf: unlimited)")
    if not cfg.queued_seconds >= 0:
        problems.append("queued_seconds must be >= 0")
    if shapes.job_id_style not in JOB_ID_STYLES:
        problems.append(f"job_id_style must be one of {', '.join(JOB_ID_STYLES)}")
    if shapes.progress_fields not in PROGRESS_FIELDS:
        problems.append(f"progress_fields must be one of {', '.join(PROGRESS_FIELDS)}")
    if shapes.submit_status not in SUBMIT_STATUSES:
        problems.append("submit_status must be 200 or 202")
    if not (shapes.validating_seconds >= 0 and shapes.pending_refresh_seconds >= 0):
        problems.append("validating_seconds and pending_refresh_seconds must be >= 0")
    if shapes.job_list_page_size < 0:
        problems.append("job_list_page_size must be >= 0 (0: every job)")
    if shapes.export_job not in EXPORT_JOBS:
        problems.append(f"export_job must be one of {', '.join(EXPORT_JOBS)}")
    if not 0.0 <= shapes.retry_after_share <= 1.0:
        problems.append("retry_after_share must be between 0 and 1")
    if cfg.proxy_body_limit < 0:
        problems.append("proxy_body_limit must be >= 0 (0: no proxy)")
    if cfg.track_per_minute < 0:
        problems.append("track_per_minute must be >= 0 (0: no limit)")
    if cfg.max_value_chars < 0:
        problems.append("max_value_chars must be >= 0 (0: no limit)")
    if cfg.refuse_multipart not in REFUSALS:
        problems.append("refuse_multipart must be 0, 400 or 415")
    if not 0.0 <= cfg.fail_rate <= 1.0:
        problems.append("fail_rate must be between 0 and 1")
    bad = [k for k in cfg.fault_kinds if k not in KNOWN_FAULT_KINDS]
    if bad or (cfg.fail_rate > 0 and not cfg.fault_kinds):
        problems.append(f"fault_kinds must be a non-empty subset of {', '.join(KNOWN_FAULT_KINDS)}")
    if cfg.retry_after_seconds < 0:
        problems.append("retry_after_seconds must be >= 0")
    if not cfg.slow_seconds >= 0:
        problems.append("slow_seconds must be >= 0")
    if cfg.fail_jobs < 0 or cfg.drop_submit_responses < 0:
        problems.append("fail_jobs and drop_submit_responses must be >= 0")
    if not cfg.foreign_job_seconds >= 0:
        problems.append("foreign_job_seconds must be >= 0")
    return problems
