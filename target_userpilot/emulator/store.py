"""The emulated account's state: profiles, jobs and their clock-driven progress, request log.

Nothing here runs in the background. Every request and every inspection first advances the
state to "now": a job is `queued`, `validating`, `processing`, `pending_refresh` (each as long
as the configuration says), then done, and its rows are upserted at `finished_at`, so what the
store shows at time T is exactly the effect of the jobs finished by T. One lock guards
everything.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import logging
import math
import threading
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from target_userpilot.emulator.faults import FaultPlan
from target_userpilot.emulator.validation import ID_KEY, Kind, Row

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from target_userpilot.emulator.config import EmulatorConfig

logger = logging.getLogger("target_userpilot.emulator")

QUEUED, PROCESSING, DONE = 0, 1, 2
REJECTED_REASON = "rejected by the server while processing"
FAILED_REASON = "the job failed while processing; no rows were applied"
_TYPE = {"users": "identify_user", "companies": "identify_company"}


@dataclasses.dataclass(frozen=True)
class JobRecord:
    """A job as it stands at the moment of inspection.

    `started_at` and `finished_at` (epoch seconds) are None until those moments have passed.
    """

    job_id: str
    kind: str
    foreign: bool
    rows: int
    bytes: int
    filename: str
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    status: str
    error_count: int
    errors: list[dict[str, Any]]
    processed_count: int = 0
    uploaded_filename: str = ""
    source: str = ""


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """One HTTP request as the server handled it.

    `status` is 0 when no response was sent (a dropped connection); `fault` names the injected
    fault (`"500"`, `"502"`, `"503"`, `"429"`, `"drop"`, `"lost_response"`) or is None.
    """

    method: str
    path: str
    status: int
    bytes_in: int
    at: float
    fault: str | None = None
    job_id: str | None = None
    received_at: float | None = None  # when an upload's body was all in, before it was parsed


class SlotBusyError(Exception):
    """Another job is queued or processing: the submit answers 409."""

    def __init__(self, job_id: str) -> None:
        """Name the job holding the slot."""
        super().__init__(job_id)
        self.job_id = job_id


@dataclasses.dataclass
class _Job:
    job_id: str
    kind: Kind
    foreign: bool
    rows: list[Row]
    bytes: int
    filename: str
    uploaded_filename: str
    source: str
    submitted_at: float
    started_at: float  # queued until then, then validating
    processing_at: float  # validating until then, then processing
    processed_at: float  # processing until then, then pending_refresh
    finished_at: float  # pending_refresh until then, then completed/failed (the slot is free)
    rate: float  # rows per second, inf when unlimited
    fail: bool
    rejected: list[int]  # indexes into rows, ascending
    phase: int = QUEUED
    total: int = 0
    details: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.total = len(self.rows)
        id_key = ID_KEY[self.kind]
        self.details = [
            {"line": self.rows[i].line, id_key: self.rows[i].id, "error": REJECTED_REASON}
            for i in self.rejected
        ]

    def progress(self, now: float) -> tuple[str, int, int]:
        """Status, rows processed so far (rejected ones included), rows rejected so far."""
        total = self.total
        if now < self.started_at:
            return "queued", 0, 0
        if now < self.processing_at:
            return "validating", 0, 0
        if now < self.processed_at:
            elapsed = now - self.processing_at
            done = total if math.isinf(self.rate) else min(total, int(elapsed * self.rate))
            return "processing", done, bisect.bisect_left(self.rejected, done)
        if now < self.finished_at:
            return "pending_refresh", total, len(self.rejected)
        if self.fail:
            return "failed", total, total
        return "completed", total, len(self.rejected)

    def error_details(self, upto: int) -> list[dict[str, Any]]:
        """Detail of the rows rejected among the first `upto` (copies)."""
        count = bisect.bisect_left(self.rejected, upto)
        return [dict(detail) for detail in self.details[:count]]


def iso_z(epoch: float) -> str:
    """`2025-02-02T12:34:56.123456Z`, the job object's timestamp form."""
    moment = dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_naive(epoch: float) -> str:
    """`2025-03-08T18:50:14.150722` (UTC, no zone), the job list's timestamp form."""
    moment = dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds")


class Store:
    """Profiles, jobs, request log and fault plan of one emulated account, behind one lock."""

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.time) -> None:
        """Start empty at `clock()`; a configured foreign job starts now."""
        self.lock = threading.RLock()
        self._config = config
        self._clock = clock
        self._faults = FaultPlan(config)
        self._users: dict[str, dict[str, Any]] = {}
        self._companies: dict[str, dict[str, Any]] = {}
        self._jobs: list[_Job] = []
        self._unapplied: deque[tuple[Kind, list[Row], set[int]]] = deque()
        self._by_id: dict[str, _Job] = {}
        self._unsettled = 0  # index of the first job not yet done
        self._our_jobs = 0
        self._requests: list[RequestRecord] = []
        self.started_at = clock()
        if config.foreign_job_seconds > 0:
            self.add_foreign_job(config.foreign_job_seconds)

    # -- configuration -------------------------------------------------------------------

    @property
    def config(self) -> EmulatorConfig:
        """The configuration in force."""
        with self.lock:
            return self._config

    def set_faults(self, **changes: Any) -> EmulatorConfig:  # noqa: ANN401 - field values vary
        """Change configuration at runtime; `fail_jobs`/`drop_submit_responses` restart counting."""
        with self.lock:
            self._config = self._config.replace(**changes)
            self._faults.reset_counters(self._config, set(changes))
            return self._config

    def now(self) -> float:
        """The store's clock."""
        return self._clock()

    # -- clock-driven progress -----------------------------------------------------------

    def advance(self, now: float | None = None) -> float:
        """Bring every job up to `now` (default: the clock), applying finished jobs in order."""
        with self.lock:
            now = self._clock() if now is None else now
            while self._unsettled < len(self._jobs):
                job = self._jobs[self._unsettled]
                if job.phase == QUEUED and now >= job.started_at:
                    job.phase = PROCESSING
                    logger.info("job %s (%s) started", job.job_id, self._describe(job))
                if now < job.finished_at:
                    break
                self._finish(job)
                self._unsettled += 1
            if self._unsettled < len(self._jobs):
                # A job holds the slot, so no client waits on this answer to upload its next
                # batch: the moment to upsert what earlier jobs completed.
                self._apply_completed()
            return now

    def _finish(self, job: _Job) -> None:
        job.phase = DONE
        rows, job.rows = job.rows, []  # applied rows are not kept: long runs stay small
        if job.fail:
            logger.info("job %s (%s) failed", job.job_id, self._describe(job))
            return
        rejected = set(job.rejected)
        if self._config.keep_profiles:
            # Upserted later, in job order (`_apply_completed`): the status answer that tells a
            # client its job is done, and the upload that follows, do not pay for it.
            self._unapplied.append((job.kind, rows, rejected))
        logger.info(
            "job %s (%s) completed, %d rows applied, %d rejected",
            job.job_id,
            self._describe(job),
            job.total - len(rejected),
            len(rejected),
        )

    def _settle(self) -> None:
        """Bring jobs up to now with every completed job's rows upserted."""
        self.advance()
        self._apply_completed()

    def _apply_completed(self) -> None:
        """Upsert the rows of completed jobs not applied yet, oldest job first."""
        while self._unapplied:
            kind, rows, rejected = self._unapplied.popleft()
            for index, row in enumerate(rows):
                if index not in rejected:
                    self._upsert(kind, row.record)

    @staticmethod
    def _describe(job: _Job) -> str:
        return "foreign" if job.foreign else f"{job.kind}, {job.total} rows"

    def _upsert(self, kind: Kind, record: dict[str, Any]) -> None:
        id_key = ID_KEY[kind]
        profiles = self._users if kind == "users" else self._companies
        profile = profiles.setdefault(record[id_key], {id_key: record[id_key], "metadata": {}})
        if kind == "users" and "company_id" in record:
            profile["company_id"] = record["company_id"]
        profile["metadata"].update(record.get("metadata") or {})

    # -- jobs ----------------------------------------------------------------------------

    def _new_job_id(self) -> str:
        style = self._config.shapes.job_id_style
        if style == "alternate":
            style = "uuid" if self._our_jobs % 2 == 0 else "bulk"
        if style == "bulk":
            return f"bulk:jobs:{self._config.account}:{uuid.uuid4()}"
        return str(uuid.uuid4())

    def _active(self, now: float) -> _Job | None:
        self.advance(now)
        if self._unsettled < len(self._jobs):
            return self._jobs[self._unsettled]
        return None

    def submit(
        self,
        kind: Kind,
        rows: Sequence[Row],
        *,
        size: int,
        uploaded_filename: str | None,
        source: str,
    ) -> tuple[JobRecord, bool]:
        """Create a job for `rows` if the slot is free.

        Returns:
            The new job, and whether its submit response is to be lost (dropped).

        Raises:
            SlotBusyError: a job (ours or foreign) is queued or processing.
        """
        with self.lock:
            now = self._clock()
            active = self._active(now)
            if active is not None:
                raise SlotBusyError(active.job_id)
            cfg = self._config
            job_id = self._new_job_id()
            self._our_jobs += 1
            bare = job_id.rsplit(":", 1)[-1]
            ext = "ndjson" if source == "multipart" else "json"
            uploaded = uploaded_filename or f"{bare}.{ext}"
            started = now + cfg.queued_seconds
            processing = started + cfg.shapes.validating_seconds
            rate = cfg.rows_per_second
            processed = processing + (0.0 if math.isinf(rate) else len(rows) / rate)
            fail = self._faults.take_job_failure()
            job = _Job(
                job_id=job_id,
                kind=kind,
                foreign=False,
                rows=list(rows),
                bytes=size,
                filename=f"{cfg.account}_{_TYPE[kind]}_{uploaded}",
                uploaded_filename=uploaded,
                source=source,
                submitted_at=now,
                started_at=started,
                processing_at=processing,
                processed_at=processed,
                # A failed job fails at once; a good one is refreshed before it completes.
                finished_at=processed + (0.0 if fail else cfg.shapes.pending_refresh_seconds),
                rate=rate,
                fail=fail,
                rejected=[i for i, row in enumerate(rows) if row.id in cfg.reject_ids],
            )
            self._add(job)
            logger.info("job %s (%s) queued", job_id, self._describe(job))
            lost = self._faults.take_lost_response()
            self.advance(now)
            return self._record(job, now), lost

    def add_foreign_job(self, seconds: float) -> str:
        """A job that is not ours holds the slot for `seconds`, from now or after the last job."""
        with self.lock:
            now = self._clock()
            start = max([now] + [j.finished_at for j in self._jobs[self._unsettled :]])
            job_id = f"bulk:jobs:{self._config.account}:{uuid.uuid4()}"
            uploaded = f"other-integration-{job_id.rsplit(':', 1)[-1]}.ndjson"
            job = _Job(
                job_id=job_id,
                kind="users",
                foreign=True,
                rows=[],
                bytes=0,
                filename=f"{self._config.account}_identify_user_{uploaded}",
                uploaded_filename=uploaded,
                source="foreign",
                submitted_at=now,
                started_at=start,
                processing_at=start,
                processed_at=start + seconds,
                finished_at=start + seconds,
                rate=math.inf,
                fail=False,
                rejected=[],
            )
            self._add(job)
            logger.info("job %s (foreign) holds the slot for %.1f s", job_id, seconds)
            self.advance(now)
            return job_id

    def _add(self, job: _Job) -> None:
        self._jobs.append(job)
        self._by_id[job.job_id] = job

    def _record(self, job: _Job, now: float) -> JobRecord:
        status, done, errors = job.progress(now)
        return JobRecord(
            job_id=job.job_id,
            kind=job.kind,
            foreign=job.foreign,
            rows=job.total,
            bytes=job.bytes,
            filename=job.filename,
            submitted_at=job.submitted_at,
            started_at=job.started_at if now >= job.started_at else None,
            finished_at=job.finished_at if now >= job.finished_at else None,
            status=status,
            error_count=errors,
            errors=[] if job.fail else job.error_details(done),
            processed_count=0 if job.fail else done - errors,
            uploaded_filename=job.uploaded_filename,
            source=job.source,
        )

    def job_view(self, job_id: str) -> dict[str, Any] | None:
        """`GET /v1/background_jobs/{job_id}` in the profile's shape; None if unknown."""
        with self.lock:
            job = self._by_id.get(job_id)
            if job is None:
                return None
            now = self.advance()
            shapes = self._config.shapes
            status, done, errors = job.progress(now)
            good = 0 if job.fail else done - errors
            view: dict[str, Any] = {"job_id": job.job_id, "status": status}
            if shapes.progress_fields == "rows":
                view["total_rows"] = job.total
                view["completed_rows"] = good
            else:
                view["processed_count"] = good
                view["error_count"] = errors
            if shapes.reference:
                # The API reference's job view: an entry of the list, no per-row detail.
                return {**self._entry(job, now), **view}
            view["submitted_at"] = iso_z(job.submitted_at)
            view["completed_at"] = iso_z(job.finished_at) if now >= job.finished_at else None
            if job.fail and status == "failed":
                view["error"] = FAILED_REASON
            elif errors:
                view["errors"] = job.error_details(done)
            return view

    def submit_view(self, job: JobRecord) -> dict[str, Any]:
        """The answer to a successful submit, in the profile's shape."""
        with self.lock:
            if not self._config.shapes.reference:
                return {
                    "job_id": job.job_id,
                    "status": "queued",
                    "submitted_at": iso_z(job.submitted_at),
                }
            return self._entry(self._by_id[job.job_id], job.submitted_at)

    def _entry(self, job: _Job, now: float) -> dict[str, Any]:
        """A job as the job list shows it."""
        status, _, _ = job.progress(now)
        started = now >= job.started_at
        finished = now >= job.finished_at
        if finished:
            elapsed = job.finished_at - job.started_at
        else:
            elapsed = now - job.started_at if started else 0.0
        return {
            "job_id": job.job_id,
            "links": f"/v1/background_jobs/{job.job_id}",
            "status": status,
            "type": _TYPE[job.kind],
            "total_rows": job.total,
            "file_size": job.bytes,
            "filename": job.filename,
            "start_time": iso_naive(job.started_at) if started else None,
            "end_time": iso_naive(job.finished_at) if finished else None,
            "elapsed_time": round(elapsed),
        }

    def job_list(self) -> list[dict[str, Any]]:
        """`GET /v1/background_jobs/`: every job oldest first, or the newest page newest first.

        The page also holds the configured export job, which never holds the import slot.
        """
        with self.lock:
            now = self.advance()
            shapes = self._config.shapes
            entries = [self._entry(job, now) for job in self._jobs]
            if shapes.export_job != "none":
                entries.append(self._export_entry(now, stuck=shapes.export_job == "stuck"))
            if not shapes.job_list_page_size:
                return entries
            return entries[::-1][: shapes.job_list_page_size]

    def _export_entry(self, now: float, *, stuck: bool) -> dict[str, Any]:
        job_id = f"bulk:jobs:{self._config.account}:export-{int(self.started_at)}"
        return {
            "job_id": job_id,
            "links": f"/v1/background_jobs/{job_id}",
            "status": "processing" if stuck else "completed",
            "type": "export_users",
            "total_rows": None,
            "file_size": None,
            "filename": f"{self._config.account}_export_users.csv",
            "start_time": iso_naive(self.started_at),
            "end_time": None if stuck else iso_naive(self.started_at),
            "elapsed_time": round(now - self.started_at) if stuck else 0,
        }

    # -- real-time identify ----------------------------------------------------------------

    def identify(
        self, user_id: str, metadata: dict[str, Any], company: dict[str, Any] | None
    ) -> None:
        """`POST /v1/identify`: applied at once, no job."""
        with self.lock:
            self._settle()
            record: dict[str, Any] = {"user_id": user_id, "metadata": metadata}
            if company is not None:
                company_id = company["id"]
                record["company_id"] = company_id
                extra = {k: v for k, v in company.items() if k != "id"}
                self._upsert("companies", {"company_id": company_id, "metadata": extra})
            self._upsert("users", record)

    def delete_profiles(self, kind: Kind, ids: Sequence[str]) -> list[str]:
        """Delete these profiles after every job completed by now is applied; the ids found."""
        with self.lock:
            self._settle()
            profiles = self._users if kind == "users" else self._companies
            return [i for i in ids if profiles.pop(i, None) is not None]

    # -- faults and request log ------------------------------------------------------------

    def request_fault(self, *, deletion: bool = False) -> str | None:
        """The injected fault for the request now arriving (`deletion`: a delete), if any."""
        with self.lock:
            return self._faults.request_fault(self._config, deletion=deletion)

    def retry_after_sent(self) -> bool:
        """Whether the 429 now being answered carries Retry-After."""
        with self.lock:
            return self._faults.retry_after_sent(self._config)

    def log_request(self, record: RequestRecord) -> None:
        """Add a handled request to the log."""
        with self.lock:
            self._requests.append(record)

    # -- inspection ------------------------------------------------------------------------

    def has_user(self, user_id: str) -> bool:
        """Whether the user exists now (no copy: the Track API asks at every event)."""
        with self.lock:
            self._settle()
            return user_id in self._users

    def users(self) -> dict[str, dict[str, Any]]:
        """A copy of the user profiles, as of now."""
        with self.lock:
            self._settle()
            return _copy(self._users)

    def companies(self) -> dict[str, dict[str, Any]]:
        """A copy of the company profiles, as of now."""
        with self.lock:
            self._settle()
            return _copy(self._companies)

    def jobs(self) -> list[JobRecord]:
        """Every job, oldest first, as of now."""
        with self.lock:
            now = self.advance()
            return [self._record(job, now) for job in self._jobs]

    def requests(self) -> list[RequestRecord]:
        """Every handled request, in the order answered."""
        with self.lock:
            return list(self._requests)


def _copy(profiles: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {key: {**value, "metadata": dict(value["metadata"])} for key, value in profiles.items()}
