"""Reading Userpilot's answers: job objects, ids, links, status mapping, error bodies.

Pure functions over parsed JSON: every documented shape (the bulk pages' and the API
reference's) is read, and anything unexpected maps to "still running" or "no job".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

State = Literal["running", "completed", "failed"]

_FAILED = frozenset({"failed", "error"})
_END_KEYS = ("end_time", "completed_at", "finished_at")
_START_KEYS = ("start_time", "submitted_at", "created_at")
_IMPORT_PREFIX = "identify_"
_ERROR_FIELDS = ("message", "details", "error", "reason")
_POSITION_FIELDS = ("line", "row", "user_id", "company_id", "id")


@dataclass(frozen=True)
class JobStatus:
    """One Userpilot job, read tolerantly from whichever fields the server sent."""

    job_id: str
    state: State
    status: str
    processed: int | None
    errors: int | None
    total: int | None
    raw: Mapping[str, Any]


def count(value: object) -> int | None:
    """An integer count from an int, an integral float or a numeric string; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value.strip()))
        except ValueError:
            return None
    return None


def job_id_of(obj: Mapping[str, Any]) -> str:
    """The job's id (`job_id`, else `id`), or ""."""
    for key in ("job_id", "id"):
        value = obj.get(key)
        if value is not None and value != "":
            return str(value)
    return ""


def state_of(obj: Mapping[str, Any]) -> State:
    """`completed` is done, `failed`/`error` ended badly; every other status is running."""
    status = obj.get("status")
    if status is None:
        # List entries without a status: finished only if they carry an end time.
        return "completed" if any(obj.get(key) for key in _END_KEYS) else "running"
    normalized = str(status).strip().lower()
    if normalized == "completed":
        return "completed"
    if normalized in _FAILED:
        return "failed"
    return "running"


def parse_job(obj: Mapping[str, Any]) -> JobStatus:
    """Read a job object of any documented shape.

    `completed` is done, `failed`/`error` finished badly, anything else (queued, validating,
    processing, pending_refresh, a status never seen) is still running. Progress comes from
    `processed_count`/`error_count` or `completed_rows`/`total_rows`, whichever is present; a
    completed job without `error_count` counts an `errors` list, or else the rows short of
    `total_rows`, as rejected.
    """
    status = obj.get("status")
    state = state_of(obj) if status is not None else "running"
    completed_rows = count(obj.get("completed_rows"))
    processed = count(obj.get("processed_count"))
    if processed is None:
        processed = completed_rows
    total = count(obj.get("total_rows"))
    errors = count(obj.get("error_count"))
    if errors is None and state == "completed":
        detail = obj.get("errors")
        listed = len(detail) if isinstance(detail, list) else count(detail)
        short = (
            max(total - completed_rows, 0)
            if total is not None and completed_rows is not None
            else None
        )
        candidates = [n for n in (listed, short) if n is not None]
        errors = max(candidates) if candidates else None
    return JobStatus(
        job_id=job_id_of(obj),
        state=state,
        status="" if status is None else str(status),
        processed=processed,
        errors=errors,
        total=total,
        raw=obj,
    )


def job_object(payload: object) -> Mapping[str, Any] | None:
    """The job object of an answer: the payload itself, or wrapped in `job`/`data`."""
    if not isinstance(payload, dict):
        return None
    for key in ("job", "data"):
        if isinstance(payload.get(key), dict):
            return payload[key]  # type: ignore[no-any-return]
    return payload


def is_job_view(obj: Mapping[str, Any] | None) -> bool:
    """Whether a poll answer is a job (it says its status or id), not an HTML page or `{}`."""
    return obj is not None and ("status" in obj or bool(job_id_of(obj)))


def jobs_of(payload: object) -> list[Mapping[str, Any]]:
    """The job entries of a job-list answer: a JSON array, or an object wrapping one."""
    if isinstance(payload, dict):
        for key in ("jobs", "data", "results", "items"):
            if isinstance(payload.get(key), list):
                payload = payload[key]
                break
    if not isinstance(payload, list):
        return []
    return [entry for entry in payload if isinstance(entry, dict)]


def is_import(job: Mapping[str, Any]) -> bool:
    """Whether a list entry is a bulk identify job (not an export); untyped entries count."""
    kind = job.get("type")
    return kind is None or str(kind).startswith(_IMPORT_PREFIX)


def blocking_jobs(jobs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Ids of the listed import jobs still running: what a 409 is most likely waiting on."""
    return [job_id_of(j) or "?" for j in jobs if is_import(j) and state_of(j) == "running"]


def parse_time(value: object) -> float | None:
    """POSIX seconds from an ISO 8601 timestamp with or without zone (naive = UTC)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        # Python 3.10 only reads 3 or 6 fraction digits: drop the fraction and retry.
        head, dot, rest = text.partition(".")
        if not dot:
            return None
        zone = next((i for i, ch in enumerate(rest) if ch in "+-"), len(rest))
        try:
            moment = datetime.fromisoformat(head + rest[zone:])
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


@dataclass(frozen=True)
class Upload:
    """What identifies one upload in the job list, should its answer be lost."""

    name: str
    size: int
    rows: int
    not_before: float  # POSIX seconds


def find_upload(
    upload: Upload, jobs: Iterable[Mapping[str, Any]], known: set[str] | frozenset[str]
) -> Mapping[str, Any] | None:
    """The listed job our lost upload created: by file name, else by size and rows.

    Jobs in `known` (ones already followed) and jobs started before the upload are skipped.
    """
    by_name: list[tuple[float, int, Mapping[str, Any]]] = []
    by_shape: list[tuple[float, int, Mapping[str, Any]]] = []
    for index, job in enumerate(jobs):
        job_id = job_id_of(job)
        if not job_id or job_id in known or not is_import(job):
            continue
        started = next(
            (t for t in map(parse_time, (job.get(k) for k in _START_KEYS)) if t is not None),
            None,
        )
        if started is not None and started < upload.not_before:
            continue
        order = started if started is not None else float("inf")
        if upload.name in str(job.get("filename") or ""):
            by_name.append((order, index, job))
        elif (
            count(job.get("file_size")) == upload.size
            and count(job.get("total_rows")) == upload.rows
            and (started is not None or state_of(job) == "running")
        ):
            by_shape.append((order, index, job))
    for matches in (by_name, by_shape):
        if matches:
            return max(matches, key=lambda match: match[:2])[2]
    return None


def server_words(payload: object) -> str | None:
    """The server's own explanation in an error body, with the line or id it names.

    Reads `{"errors": [{"message"|"details"|"error": ..., "line"?: ...}]}` (the API
    reference) and `{"error": ..., "line"?: ...}` (the bulk pages); None for anything else.
    """
    if not isinstance(payload, dict):
        return None
    entries = payload.get("errors")
    items: list[Any] = entries if isinstance(entries, list) else [payload]
    said: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            if isinstance(item, str) and item.strip():
                said.append(item.strip())
            continue
        words: list[str] = []
        for key in _ERROR_FIELDS:
            word = str(item.get(key) or "").strip()
            if word and not any(word in kept for kept in words):  # "reason" repeats "error"
                words.append(word)
        text = "; ".join(words)
        where = [f"{k} {item[k]}" for k in _POSITION_FIELDS if item.get(k) not in (None, "")]
        if where and not any(w in text for w in where):
            text = f"{', '.join(where)}: {text}" if text else ", ".join(where)
        if text:
            said.append(text)
    return " | ".join(said) if said else None
