"""The wire to Userpilot: the only module that speaks HTTP.

One `requests.Session` carries the API key; every call goes through one retry policy
(connection errors, timeouts, 5xx and 429 are retried with full-jitter exponential backoff until
`RetryPolicy.max_time`). Submitting handles the account's single job slot (409 is waited out)
and never blindly resubmits an upload whose outcome is unknown: the job list is searched for
the job that upload may have created first.

The API key never appears in a log line, an exception message or a repr.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, NoReturn
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import backoff
import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests_toolbelt import MultipartEncoder

from target_userpilot.loopback import is_loopback

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

Kind = Literal["users", "companies"]
State = Literal["running", "completed", "failed"]

BODY_LIMIT = 2048  # characters of a server answer quoted in an error message
CLOCK_SKEW = 60.0  # seconds a server's job timestamps may lag our clock (lost submissions)
SLOT_POLL_FIRST = 1.0  # first wait between job-list polls while another job holds the slot
SLOT_POLL_CAP = 15.0
NDJSON = "application/x-ndjson"
UPLOAD_BLOCK = 1 << 20  # bytes per socket write of an upload body

_FAILED = frozenset({"failed", "error"})
_END_KEYS = ("end_time", "completed_at", "finished_at")
_START_KEYS = ("start_time", "submitted_at", "created_at")


# --- errors ---------------------------------------------------------------------------------


class UserpilotError(Exception):
    """Base of every error the client raises; the message says what to fix."""


class AuthError(UserpilotError):
    """Userpilot rejected the API key (401/403). Never retried."""


class PayloadTooLargeError(UserpilotError):
    """Userpilot answered 413: the caller should split the batch."""


class RejectedUploadError(UserpilotError):
    """Userpilot refused an upload with a 4xx other than 401/403/409/413/429."""

    def __init__(self, message: str, *, status: int, body: str) -> None:
        """`status` is the HTTP status; `body` the server's answer (truncated)."""
        super().__init__(message)
        self.status = status
        self.body = body


class SlotWaitTimeoutError(UserpilotError):
    """Another job kept Userpilot's job slot busy (409) for longer than `slot_wait_timeout`."""


class TransientError(UserpilotError):
    """A call kept failing transiently until the retry policy's time ran out."""


# --- pure helpers ----------------------------------------------------------------------------


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


def _count(value: object) -> int | None:
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


def _job_id_of(obj: Mapping[str, Any]) -> str:
    for key in ("job_id", "id"):
        value = obj.get(key)
        if value is not None and value != "":
            return str(value)
    return ""


def _state_of(obj: Mapping[str, Any]) -> State:
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
    state = _state_of(obj) if status is not None else "running"
    completed_rows = _count(obj.get("completed_rows"))
    processed = _count(obj.get("processed_count"))
    if processed is None:
        processed = completed_rows
    total = _count(obj.get("total_rows"))
    errors = _count(obj.get("error_count"))
    if errors is None and state == "completed":
        detail = obj.get("errors")
        listed = len(detail) if isinstance(detail, list) else _count(detail)
        short = (
            max(total - completed_rows, 0)
            if total is not None and completed_rows is not None
            else None
        )
        candidates = [n for n in (listed, short) if n is not None]
        errors = max(candidates) if candidates else None
    return JobStatus(
        job_id=_job_id_of(obj),
        state=state,
        status="" if status is None else str(status),
        processed=processed,
        errors=errors,
        total=total,
        raw=obj,
    )


def check_api_url(url: str) -> str:
    """Validate `api_url` and return it normalized (lower-case scheme and host, no trailing slash).

    HTTPS only, except plain HTTP to a loopback host (a local emulator). A trailing `/v1` is
    dropped since the client adds it.
    """
    text = url.strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        msg = (
            f"`api_url` must be an https:// URL such as https://analytex.userpilot.io, got {text!r}"
        )
        raise ValueError(msg)
    try:
        host = parts.hostname or ""
        port = parts.port
    except ValueError as exc:
        msg = f"`api_url` {text!r} is not a valid URL: {exc}"
        raise ValueError(msg) from None
    if not host:
        msg = f"`api_url` {text!r} has no host name"
        raise ValueError(msg)
    if parts.username is not None or parts.password is not None:
        msg = "`api_url` must not carry credentials; put the key in the `api_key` setting"
        raise ValueError(msg)
    if parts.query or parts.fragment:
        msg = f"`api_url` {text!r} must not have a query or fragment"
        raise ValueError(msg)
    if scheme == "http" and not is_loopback(host):
        msg = (
            f"`api_url` {text!r} uses plain http://, which would send the API key unencrypted; "
            "use https:// (http:// is only accepted for localhost/127.0.0.1/::1)"
        )
        raise ValueError(msg)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    path = parts.path.rstrip("/")
    if path.lower().endswith("/v1"):
        path = path[:-3]
    return urlunsplit((scheme, netloc, path, "", ""))


def _parse_time(value: object) -> float | None:
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


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or HTTP-date)."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(moment.timestamp() - now, 0.0)


def _never_connected(exc: requests.RequestException) -> bool:
    """Whether the request failed before a connection existed (so nothing was sent)."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _jobs_of(payload: object) -> list[Mapping[str, Any]]:
    """The job entries of a job-list answer: a JSON array, or an object wrapping one."""
    if isinstance(payload, dict):
        for key in ("jobs", "data", "results", "items"):
            if isinstance(payload.get(key), list):
                payload = payload[key]
                break
    if not isinstance(payload, list):
        return []
    return [entry for entry in payload if isinstance(entry, dict)]


# --- the client -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how fast transient failures of one call are retried."""

    max_time: float = 600.0
    base: float = 0.5
    cap: float = 30.0


@dataclass
class ClientStats:
    """Counters for the run summary."""

    requests: int = 0
    retries: int = 0
    conflicts_waited: int = 0
    lost_submissions_recovered: int = 0


@dataclass(frozen=True)
class _Transient:
    """A failed exchange worth retrying."""

    reason: str  # "HTTP 503", "ConnectionError", ...
    maybe_sent: bool  # the server may have acted on the request
    retry_after: float | None = None


def _expo(first: float, cap: float) -> Iterator[float]:
    """first, 2 * first, 4 * first, ... capped at `cap` (backoff's generator, primed)."""
    delays: Iterator[float] = backoff.expo(base=2, factor=first, max_value=cap)
    next(delays)  # backoff's generators yield a throw-away 0 first, for its own .send()
    return delays


class _Retrier:
    """The retry budget of one logical call.

    A hand-rolled loop around backoff's `expo` and `full_jitter` generators rather than
    `backoff.on_exception`: a 429's Retry-After must replace the computed wait, and a submit
    interleaves job-list look-ups (lost submissions, 409 waits) between attempts.
    """

    def __init__(self, client: UserpilotClient, what: str) -> None:
        self._client = client
        self.what = what
        self.started = client._clock()  # noqa: SLF001 - a helper of the client
        self.failures = 0
        self._delays = _expo(client.retry.base, client.retry.cap)

    def wait(self, failure: _Transient, step: str = "") -> None:
        """Sleep before the next attempt, or raise TransientError if the time is up."""
        client = self._client
        self.failures += 1
        if step:
            failure = dataclasses.replace(failure, reason=f"{step}: {failure.reason}")
        elapsed = client._clock() - self.started  # noqa: SLF001
        remaining = client.retry.max_time - elapsed
        if remaining <= 0:
            self._give_up(failure, elapsed, "")
        if failure.retry_after is None:
            delay = min(backoff.full_jitter(next(self._delays)), remaining)
        else:
            delay = failure.retry_after
            if delay > remaining:
                self._give_up(failure, elapsed, f"; the server asked to wait {delay:.0f} s more")
        client.stats.retries += 1
        client.log.warning(
            "%s failed (attempt %d: %s); retrying in %.1f s.",
            self.what,
            self.failures,
            failure.reason,
            delay,
        )
        client._sleep(delay)  # noqa: SLF001

    def _give_up(self, failure: _Transient, elapsed: float, extra: str) -> NoReturn:
        msg = (
            f"{self.what} failed {self.failures} time(s) over {elapsed:.0f} s "
            f"(last: {failure.reason}{extra}); gave up after the retry limit of "
            f"{self._client.retry.max_time:g} s (setting `request_retry_max_time`). "
            f"Check `api_url` ({self._client.api_url}) and the network."
        )
        raise TransientError(msg)


@dataclass
class _SlotWait:
    """State of one submit's wait for the job slot, across repeated 409s."""

    deadline: float
    started: float
    delays: Iterator[float] = field(default_factory=lambda: _expo(SLOT_POLL_FIRST, SLOT_POLL_CAP))
    blockers: list[str] = field(default_factory=list)
    announced: bool = False


@dataclass(frozen=True)
class _Upload:
    """What identifies one upload in the job list, should its answer be lost."""

    name: str
    size: int
    rows: int
    not_before: float  # POSIX seconds


class _LargeBlockAdapter(HTTPAdapter):
    """Writes request bodies in 1 MiB blocks instead of urllib3's 16 KiB.

    Each block is a file read and a socket write, and each of those hands the GIL to the main
    thread (busy mapping records) and waits to get it back: fewer blocks, faster uploads, a
    shorter idle gap in Userpilot's job slot.
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - requests' own signature
        kwargs["blocksize"] = UPLOAD_BLOCK
        super().init_poolmanager(*args, **kwargs)


class UserpilotClient:
    """Submits NDJSON files to Userpilot's bulk identify API and reads job status."""

    def __init__(  # noqa: PLR0913 - the settings of the wire, all keyword-only
        self,
        api_url: str,
        api_key: str,
        *,
        retry: RetryPolicy = RetryPolicy(),
        timeout: tuple[float, float] = (10.0, 300.0),
        slot_wait_timeout: float = 3600.0,
        user_agent: str = "target-userpilot",
        logger: logging.Logger | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`api_url` is checked with `check_api_url`; `sleep`/`clock`/`wall_clock` are for tests."""
        self.api_url = check_api_url(api_url)
        self.retry = retry
        self.timeout = timeout
        self.slot_wait_timeout = slot_wait_timeout
        self.log = logger or logging.getLogger(__name__)
        self.stats = ClientStats()
        self._sleep = sleep
        self._clock = clock
        self._wall = wall_clock
        self._key = api_key
        self._submitted: set[str] = set()  # ids this client created (never "lost" twice)
        self._job_urls: dict[str, str] = {}  # ids whose job answers at another URL
        self._session = requests.Session()
        for prefix in ("https://", "http://"):
            self._session.mount(prefix, _LargeBlockAdapter())
        self._session.headers.update(
            {
                "Authorization": f"Token {api_key}",
                "Accept": "application/json, text/plain, */*",
                "User-Agent": user_agent,
            }
        )

    def __repr__(self) -> str:
        """Without the key."""
        return f"UserpilotClient(api_url={self.api_url!r})"

    def close(self) -> None:
        """Release the HTTP connections."""
        self._session.close()

    # --- public calls ----------------------------------------------------------------------

    def submit(self, kind: Kind, path: Path, *, rows: int) -> str:
        """Upload one NDJSON file as a bulk identify job and return the job id.

        Waits out a busy job slot (409) up to `slot_wait_timeout`. After an attempt whose
        outcome is unknown, looks for the job it may have created before uploading again.
        """
        url = f"{self.api_url}/v1/{kind}/bulk_identify"
        upload = _Upload(
            name=path.name,
            size=path.stat().st_size,
            rows=rows,
            not_before=self._wall() - CLOCK_SKEW,
        )
        retrier = _Retrier(self, f"Upload of {path.name} ({rows:,} {kind}) to {url}")
        slot: _SlotWait | None = None
        unsure = False  # an earlier attempt may have created a job
        while True:
            if unsure:
                found = self._find_upload(upload, self._list(retrier))
                if found is not None:
                    return self._recovered(found, upload)
            answer = self._exchange("POST", url, upload=path)
            if isinstance(answer, _Transient):
                unsure = unsure or answer.maybe_sent
                retrier.wait(answer)
                continue
            code = answer.status_code
            if 200 <= code < 300:  # noqa: PLR2004
                job_id = self._created_job_id(answer, path)
                self._submitted.add(job_id)
                return job_id
            self._raise_for_auth(answer)
            if code == 409:  # noqa: PLR2004
                self.stats.conflicts_waited += 1
                now = self._clock()
                if slot is None:
                    slot = _SlotWait(deadline=now + self.slot_wait_timeout, started=now)
                found = self._wait_for_slot(slot, upload if unsure else None)
                if found is not None:
                    return self._recovered(found, upload)
                retrier = _Retrier(self, retrier.what)  # the server answered: a fresh budget
                continue
            self._refuse(answer, upload, kind, url)

    def get_job(self, job_id: str) -> JobStatus:
        """Read one job's status (retried like every call)."""
        what = f"Reading Userpilot job {job_id}"
        url = self._job_urls.get(job_id) or self._job_url(quote(job_id, safe=""))
        answer = self._get(url, what)
        if answer.status_code == 404 and ":" in job_id and job_id not in self._job_urls:  # noqa: PLR2004
            # Servers differ on escaping ids like `bulk:jobs:<account>:<uuid>`: try the raw id,
            # then the `links` path of the job list's entry.
            for other in self._other_job_urls(job_id):
                retry = self._get(other, what)
                if 200 <= retry.status_code < 300:  # noqa: PLR2004
                    self.log.debug("Job %s answers at %s; using that from now on.", job_id, other)
                    self._job_urls[job_id] = other
                    answer = retry
                    break
        if not 200 <= answer.status_code < 300:  # noqa: PLR2004
            self._raise_for_auth(answer)
            msg = (
                f"Userpilot answered HTTP {answer.status_code} for job {job_id} at "
                f"{answer.url}: {self._body(answer)}"
            )
            raise UserpilotError(msg)
        payload = self._json(answer)
        if isinstance(payload, dict) and isinstance(payload.get("job"), dict):
            payload = payload["job"]
        if not isinstance(payload, dict):
            msg = f"Userpilot answered job {job_id} with no job object: {self._body(answer)}"
            raise UserpilotError(msg)
        status = parse_job(payload)
        if status.job_id != job_id:
            status = dataclasses.replace(status, job_id=job_id)
        return status

    def list_jobs(self) -> list[Mapping[str, Any]]:
        """The account's background jobs (the entries of `GET /v1/background_jobs/`)."""
        return self._list(_Retrier(self, "Listing Userpilot jobs"))

    # --- submit helpers ---------------------------------------------------------------------

    def _created_job_id(self, answer: requests.Response, path: Path) -> str:
        payload = self._json(answer)
        job_id = ""
        if isinstance(payload, dict):
            job_id = _job_id_of(payload)
            nested = payload.get("job") or payload.get("data")
            if not job_id and isinstance(nested, dict):
                job_id = _job_id_of(nested)
        if not job_id:
            msg = (
                f"Userpilot accepted {path.name} (HTTP {answer.status_code}) but its answer "
                f"names no job id, so the job cannot be followed: {self._body(answer)}"
            )
            raise UserpilotError(msg)
        return job_id

    def _refuse(self, answer: requests.Response, upload: _Upload, kind: Kind, url: str) -> NoReturn:
        """Raise the error for a submit answered with neither 2xx nor 409."""
        code = answer.status_code
        body = self._body(answer)
        what = f"{upload.name} ({upload.rows:,} {kind}, {upload.size:,} bytes)"
        if code == 413:  # noqa: PLR2004
            msg = f"Userpilot refused {what} as too large (HTTP 413): {body}"
            raise PayloadTooLargeError(msg)
        if 400 <= code < 500:  # noqa: PLR2004
            msg = f"Userpilot rejected the upload of {what} with HTTP {code}: {body}"
            if code in {404, 405}:
                msg += f" (is `api_url` {self.api_url} the API host of your environment?)"
            raise RejectedUploadError(msg, status=code, body=body)
        msg = f"Unexpected HTTP {code} from {url} for the upload of {what}: {body}"
        raise UserpilotError(msg)

    def _find_upload(self, upload: _Upload, jobs: list[Mapping[str, Any]]) -> str | None:
        """The id of a job our lost upload created, if the job list shows one."""
        by_name: list[tuple[float, str]] = []
        by_shape: list[tuple[float, str]] = []
        for job in jobs:
            job_id = _job_id_of(job)
            if not job_id or job_id in self._submitted:
                continue
            started = next(
                (t for t in map(_parse_time, (job.get(k) for k in _START_KEYS)) if t is not None),
                None,
            )
            if started is not None and started < upload.not_before:
                continue
            order = started if started is not None else float("inf")
            if upload.name in str(job.get("filename") or ""):
                by_name.append((order, job_id))
            elif (
                _count(job.get("file_size")) == upload.size
                and _count(job.get("total_rows")) == upload.rows
                and (started is not None or _state_of(job) == "running")
            ):
                by_shape.append((order, job_id))
        for matches in (by_name, by_shape):
            if matches:
                return max(matches)[1]
        return None

    def _recovered(self, job_id: str, upload: _Upload) -> str:
        self.stats.lost_submissions_recovered += 1
        self._submitted.add(job_id)
        self.log.warning(
            "The answer to the upload of %s was lost, but Userpilot created job %s for it; "
            "following that job instead of uploading again.",
            upload.name,
            job_id,
        )
        return job_id

    def _wait_for_slot(self, slot: _SlotWait, upload: _Upload | None) -> str | None:
        """After a 409: wait until no job in the list runs. Returns our lost job if seen."""
        looked = False
        while True:
            jobs = self._list(_Retrier(self, "Listing Userpilot jobs (waiting for the job slot)"))
            if upload is not None:
                found = self._find_upload(upload, jobs)
                if found is not None:
                    return found
            blocking = [_job_id_of(j) or "?" for j in jobs if _state_of(j) == "running"]
            if blocking:
                slot.blockers = blocking
                if not slot.announced:
                    slot.announced = True
                    self.log.info(
                        "Userpilot's job slot is busy with job(s) %s (HTTP 409); waiting for "
                        "it to free, up to %.0f s (setting `slot_wait_timeout`).",
                        ", ".join(blocking),
                        self.slot_wait_timeout,
                    )
            elif looked:
                if slot.announced:
                    slot.announced = False
                    self.log.info(
                        "Userpilot's job slot is free after %.0f s (job(s) %s ended); submitting.",
                        self._clock() - slot.started,
                        ", ".join(slot.blockers),
                    )
                return None
            remaining = slot.deadline - self._clock()
            if remaining <= 0:
                who = (
                    f"job(s) {', '.join(slot.blockers)}"
                    if slot.blockers
                    else "no job listed as running, yet every upload answered 409"
                )
                msg = (
                    f"Userpilot's job slot stayed busy for {self._clock() - slot.started:.0f} s, "
                    f"longer than `slot_wait_timeout` ({self.slot_wait_timeout:.0f} s); "
                    f"blocked by {who}. Another import is running in this Userpilot account: "
                    "let it finish, or raise `slot_wait_timeout`."
                )
                raise SlotWaitTimeoutError(msg)
            self._sleep(min(next(slot.delays), remaining))
            looked = True

    # --- get_job helpers ----------------------------------------------------------------------

    def _job_url(self, escaped_id: str) -> str:
        return f"{self.api_url}/v1/background_jobs/{escaped_id}"

    def _other_job_urls(self, job_id: str) -> Iterator[str]:
        """The raw id, then the `links` path the job list gives (same host only)."""
        raw = self._job_url(job_id)
        yield raw
        try:
            jobs = self.list_jobs()
        except TransientError:
            return
        base = urlsplit(self.api_url)
        for job in jobs:
            links = job.get("links")
            if _job_id_of(job) == job_id and isinstance(links, str) and links:
                url = urljoin(self.api_url + "/", links)
                if url != raw and urlsplit(url)[:2] == base[:2]:  # never send the key elsewhere
                    yield url
                return

    # --- the exchange -------------------------------------------------------------------------

    def _list(self, retrier: _Retrier) -> list[Mapping[str, Any]]:
        url = f"{self.api_url}/v1/background_jobs/"
        while True:
            answer = self._exchange("GET", url)
            if isinstance(answer, _Transient):
                retrier.wait(answer, "listing jobs")
                continue
            if not 200 <= answer.status_code < 300:  # noqa: PLR2004
                self._raise_for_auth(answer)
                code = answer.status_code
                msg = f"Listing jobs at {url} answered HTTP {code}: {self._body(answer)}"
                raise UserpilotError(msg)
            return _jobs_of(self._json(answer))

    def _get(self, url: str, what: str) -> requests.Response:
        """GET with retries; returns the first non-transient answer (401/403 raise)."""
        retrier = _Retrier(self, what)
        while True:
            answer = self._exchange("GET", url)
            if isinstance(answer, _Transient):
                retrier.wait(answer)
                continue
            self._raise_for_auth(answer)
            return answer

    def _exchange(
        self, method: str, url: str, *, upload: Path | None = None
    ) -> requests.Response | _Transient:
        """One HTTP request; transient failures come back as `_Transient`."""
        self.stats.requests += 1
        try:
            if upload is None:
                answer = self._session.request(method, url, timeout=self.timeout)
            else:
                with upload.open("rb") as stream:
                    # A fresh encoder per attempt: it streams the file and cannot be rewound.
                    encoder = MultipartEncoder(fields={"file": (upload.name, stream, NDJSON)})
                    answer = self._session.request(
                        method,
                        url,
                        data=encoder,
                        headers={"Content-Type": encoder.content_type},
                        timeout=self.timeout,
                    )
        except requests.exceptions.SSLError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                msg = (
                    f"The TLS certificate of {self.api_url} could not be verified; check `api_url`."
                )
                raise UserpilotError(msg) from None
            return _Transient(type(exc).__name__, maybe_sent=True)
        except requests.exceptions.ConnectTimeout as exc:
            return _Transient(type(exc).__name__, maybe_sent=False)
        except (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            return _Transient(type(exc).__name__, maybe_sent=not _never_connected(exc))
        code = answer.status_code
        if code == 429 or code >= 500:  # noqa: PLR2004
            wait = _retry_after(answer.headers.get("Retry-After"), self._wall())
            answer.close()
            return _Transient(f"HTTP {code}", maybe_sent=code >= 500, retry_after=wait)  # noqa: PLR2004
        return answer

    def _raise_for_auth(self, answer: requests.Response) -> None:
        if answer.status_code in {401, 403}:
            msg = (
                f"Userpilot rejected the API key (HTTP {answer.status_code}) for {self.api_url}: "
                "check the `api_key` setting (and that `api_url` is your account's environment "
                "host)"
            )
            raise AuthError(msg)

    def _body(self, answer: requests.Response) -> str:
        """The server's answer, truncated, with the key blotted out should it be echoed."""
        try:
            text = answer.text
        except (requests.RequestException, UnicodeError):
            text = "<unreadable body>"
        text = text[:BODY_LIMIT] + (" [...]" if len(text) > BODY_LIMIT else "")
        return text.replace(self._key, "***") if self._key else text

    def _json(self, answer: requests.Response) -> object:
        try:
            return answer.json()
        except (ValueError, json.JSONDecodeError):
            return None
