"""The UserpilotClient facade: submit a batch file, follow its job, check the host first.

Uploads go out as multipart (one NDJSON `file` part) or as a JSON body; a 415 (or a 400 saying
there is no file) to the first multipart upload switches the run to JSON. A 409 is the judge of
the job slot: the upload is repeated with backoff until `slot_wait_timeout`, and the job list
only names the blocking job in the log. An upload whose answer was lost is looked for in the
job list for about 10 s before it is sent again.

The API key never appears in a log line, an exception message or a repr.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from target_userpilot.wire.deletions import DeleteSender, deletion_policy
from target_userpilot.wire.errors import (
    KEY_HINT,
    AuthError,
    PayloadTooLargeError,
    RejectedUploadError,
    SlotWaitTimeoutError,
    UnreachableError,
    UserpilotError,
)
from target_userpilot.wire.jobs_api import (
    JobStatus,
    Upload,
    blocking_jobs,
    find_upload,
    is_job_view,
    job_id_of,
    job_object,
    jobs_of,
    parse_job,
    server_words,
)
from target_userpilot.wire.retry import Failure, Pace, Retrier, RetryPolicy, expo
from target_userpilot.wire.transport import Transport, UploadFormat, clean_api_key
from target_userpilot.wire.urls import (
    check_api_url,
    host_of,
    job_url,
    jobs_url,
    link_url,
    submit_url,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

    import requests

    from target_userpilot.kinds import Kind

CLOCK_SKEW = 60.0  # seconds a server's job timestamps may lag our clock (lost submissions)
SLOT_RETRY_FIRST = 1.0  # first wait before resubmitting after a 409
SLOT_RETRY_CAP = 30.0
# Waits between job-list look-ups for an upload whose answer was lost (about 10 s in all):
# the server may list the job a moment after it was created.
LOST_LOOKUPS = (0.0, 2.0, 3.0, 5.0)
DEFAULT_RETRY = RetryPolicy()
PREFLIGHT_CONNECT_SECONDS = 3.0  # how long an unreachable host is tried before the run stops
# "No file uploaded", "file is required", "expected one part named 'file'", "missing file";
# not "the file holds no records" (an empty upload), which JSON would not fix.
_NO_FILE = re.compile(
    r"\bno file\b|\bfile\b[^.;]*\b(?:missing|required|not (?:found|provided|uploaded))\b"
    r"|\b(?:missing|expected)\b[^.;]*\bfile\b",
    re.IGNORECASE,
)


@dataclass
class ClientStats:
    """Counters for the run summary."""

    retries: int = 0


@dataclass
class _SlotWait:
    """One submit's wait for the job slot, across repeated 409s."""

    deadline: float
    started: float
    delays: Iterator[float] = field(default_factory=lambda: expo(SLOT_RETRY_FIRST, SLOT_RETRY_CAP))
    blockers: list[str] = field(default_factory=list)


def says_no_file(status: int, body: str) -> bool:
    """Whether a refused multipart upload reads as "this endpoint takes no file" (415, or 400)."""
    return status == 415 or (status == 400 and bool(_NO_FILE.search(body)))  # noqa: PLR2004


class UserpilotClient:
    """Submits NDJSON files to Userpilot's bulk identify API and reads job status."""

    def __init__(  # noqa: PLR0913 - the settings of the wire, all keyword-only
        self,
        api_url: str,
        api_key: object,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: tuple[float, float] = (10.0, 300.0),
        slot_wait_timeout: float = 3600.0,
        upload_format: UploadFormat = "multipart",
        user_agent: str = "target-userpilot",
        logger: logging.Logger | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`api_url` is checked with `check_api_url`, `api_key` stripped and checked.

        Raises UserpilotError naming the setting when either is unusable (the key not shown).
        `sleep`/`clock`/`wall_clock` are for tests.
        """
        try:
            self.api_url = check_api_url(api_url)
            key = clean_api_key(api_key)
        except ValueError as exc:
            raise UserpilotError(str(exc)) from None
        self.retry = retry
        self.slot_wait_timeout = slot_wait_timeout
        self.upload_format: UploadFormat = upload_format
        self.log = logger or logging.getLogger(__name__)
        self.stats = ClientStats()
        self._pace = Pace(sleep=sleep, clock=clock, log=self.log)
        self._wall = wall_clock
        self._format_settled = upload_format != "multipart"
        self._submitted: set[str] = set()  # ids this client created (never "lost" twice)
        self._job_urls: dict[str, str] = {}  # job id -> the URL to poll (its `links`)
        self._transport = Transport(
            key,
            api_url=self.api_url,
            timeout=timeout,
            user_agent=user_agent,
            wall_clock=wall_clock,
        )

    def __repr__(self) -> str:
        """Without the key."""
        return f"UserpilotClient(api_url={self.api_url!r})"

    @property
    def requests_sent(self) -> int:
        """HTTP requests made so far (every attempt counts)."""
        return self._transport.requests

    def close(self) -> None:
        """Release the HTTP connections."""
        self._transport.close()

    def deleter(self) -> DeleteSender:
        """The Deletion API's sender, on this client's transport, retry time and counters."""
        policy = deletion_policy(self.retry)

        def retrier(what: str) -> Retrier:
            return self._retrier(what, policy)

        return DeleteSender(self._transport, pace=self._pace, retrier=retrier)

    # --- public calls ----------------------------------------------------------------------

    def preflight(self) -> None:
        """One authenticated GET of the job list: is the host reachable and the key accepted?

        An unreachable host (DNS failure, connection refused) fails within
        PREFLIGHT_CONNECT_SECONDS, not after `request_retry_max_time`; 401/403 fails at once.
        Logs the host (never the key) on success.
        """
        url = jobs_url(self.api_url)
        retrier = self._retrier("Checking Userpilot (listing jobs)")
        started = self._pace.clock()
        while True:
            answer = self._transport.exchange("GET", url)
            if isinstance(answer, Failure):
                if not answer.maybe_sent:
                    if self._pace.clock() - started >= PREFLIGHT_CONNECT_SECONDS:
                        self._unreachable(answer)
                    self._pace.sleep(1.0)
                    continue
                retrier.wait(answer)
                continue
            self._raise_for_auth(answer)
            if not 200 <= answer.status_code < 300:  # noqa: PLR2004
                msg = (
                    f"`api_url` {self.api_url} does not answer like Userpilot's API: GET {url} "
                    f"answered HTTP {answer.status_code}: {self._transport.body(answer)}"
                )
                raise UserpilotError(msg)
            self.log.info(
                "Sending to Userpilot at %s (API key accepted, uploads as %s).",
                host_of(self.api_url),
                self.upload_format,
            )
            return

    def submit(self, kind: Kind, path: Path, *, rows: int) -> str:
        """Upload one NDJSON file as a bulk identify job and return the job id.

        A 409 is retried with backoff up to `slot_wait_timeout`. After an attempt whose
        outcome is unknown, looks for the job it may have created before uploading again.
        """
        url = submit_url(self.api_url, kind)
        upload = Upload(
            name=path.name,
            size=path.stat().st_size,
            rows=rows,
            not_before=self._wall() - CLOCK_SKEW,
        )
        what = f"Upload of {path.name} ({rows:,} {kind}) to {url}"
        retrier = self._retrier(what)
        slot: _SlotWait | None = None
        unsure = False  # an earlier attempt may have created a job
        patient = False  # ...and its answer was lost: give the job list time to show it
        while True:
            if unsure:
                found = self._look_for(upload, retrier, LOST_LOOKUPS if patient else (0.0,))
                if found is not None:
                    return self._recovered(found, upload)
            answer = self._transport.exchange("POST", url, upload=(path, kind, self.upload_format))
            if isinstance(answer, Failure):
                unsure = unsure or answer.maybe_sent
                patient = answer.answer_lost
                retrier.wait(answer)
                continue
            code = answer.status_code
            if 200 <= code < 300:  # noqa: PLR2004
                job_id = self._created(answer, path)
                if slot is not None:
                    self.log.info(
                        "Userpilot's job slot took an upload after %.0f s of 409s.",
                        self._pace.clock() - slot.started,
                    )
                return job_id
            self._raise_for_auth(answer)
            if code == 409:  # noqa: PLR2004
                # Our own lost upload may be the job holding the slot.
                holder = find_upload(upload, self._peek_list(), self._submitted) if unsure else None
                if holder is not None:
                    return self._recovered(holder, upload)
                slot = slot or self._first_conflict()
                self._wait_for_slot(slot)
                retrier = self._retrier(what)  # the server answered: a fresh budget
                continue
            body = self._transport.body(answer)
            if not self._format_settled and says_no_file(code, body):
                self._switch_to_json(code, body)
                continue
            self._refuse(answer, body, upload, kind)

    def get_job(self, job_id: str) -> JobStatus:
        """Read one job's status; transient failures and non-job 2xx answers are retried."""
        what = f"Reading Userpilot job {job_id}"
        retrier = self._retrier(what)
        while True:
            answer = self._get(self._job_urls.get(job_id) or job_url(self.api_url, job_id), what)
            if answer.status_code == 404 and job_id not in self._job_urls:  # noqa: PLR2004
                answer = self._find_job_url(job_id, what) or answer
            if not 200 <= answer.status_code < 300:  # noqa: PLR2004
                msg = (
                    f"Userpilot answered HTTP {answer.status_code} for job {job_id} at "
                    f"{answer.url}: {self._transport.body(answer)}"
                )
                raise UserpilotError(msg)
            obj = job_object(self._transport.json(answer))
            if obj is None or not is_job_view(obj):
                # An HTML error page or `{}` with a 2xx (a proxy, a deploy): as good as a 5xx.
                body = self._transport.body(answer)[:80]
                failure = f"HTTP {answer.status_code} without a job ({body!r})"
                retrier.wait(Failure(failure, maybe_sent=False))
                continue
            status = parse_job(obj)
            if status.job_id != job_id:
                status = dataclasses.replace(status, job_id=job_id)
            return status

    # --- submit helpers ---------------------------------------------------------------------

    def _created(self, answer: requests.Response, path: Path) -> str:
        """The new job's id; its `links` URL is kept to poll it by."""
        obj = job_object(self._transport.json(answer))
        job_id = job_id_of(obj) if obj is not None else ""
        if not job_id:
            msg = (
                f"Userpilot accepted {path.name} (HTTP {answer.status_code}) but its answer "
                f"names no job id, so the job cannot be followed: {self._transport.body(answer)}"
            )
            raise UserpilotError(msg)
        self._remember(job_id, obj)
        self._format_settled = True
        return job_id

    def _remember(self, job_id: str, obj: Mapping[str, Any] | None) -> None:
        self._submitted.add(job_id)
        link = link_url(self.api_url, obj.get("links")) if obj is not None else None
        if link is not None:
            self._job_urls[job_id] = link

    def _switch_to_json(self, code: int, body: str) -> None:
        self.upload_format = "json"
        self._format_settled = True
        self.log.warning(
            "Userpilot refused the multipart upload (HTTP %d: %s); sending JSON bodies for the "
            'rest of the run (set `upload_format` to "json" to skip this first attempt).',
            code,
            body[:200],
        )

    def _refuse(self, answer: requests.Response, body: str, upload: Upload, kind: Kind) -> NoReturn:
        """Raise the error for a submit answered with neither 2xx nor 409."""
        code = answer.status_code
        what = f"{upload.name} ({upload.rows:,} {kind}, {upload.size:,} bytes)"
        said = server_words(self._transport.json(answer)) or body
        if code == 413:  # noqa: PLR2004
            msg = f"Userpilot refused {what} as too large (HTTP 413): {said}"
            raise PayloadTooLargeError(msg)
        if 400 <= code < 500:  # noqa: PLR2004
            msg = f"Userpilot rejected the upload of {what} with HTTP {code}: {said}"
            if code in {404, 405}:
                msg += f" (is `api_url` {self.api_url} the API host of your environment?)"
            raise RejectedUploadError(msg, status=code, body=body)
        msg = f"Unexpected HTTP {code} from {answer.url} for the upload of {what}: {body}"
        raise UserpilotError(msg)

    def _look_for(
        self, upload: Upload, retrier: Retrier, delays: tuple[float, ...]
    ) -> Mapping[str, Any] | None:
        """Our upload's job in the job list, looked for after each of `delays`."""
        for delay in delays:
            if delay:
                self._pace.sleep(delay)
            found = find_upload(upload, self._list(retrier), self._submitted)
            if found is not None:
                return found
        return None

    def _recovered(self, job: Mapping[str, Any], upload: Upload) -> str:
        job_id = job_id_of(job)
        self._remember(job_id, job)
        self.log.warning(
            "The answer to the upload of %s was lost, but Userpilot created job %s for it; "
            "following that job instead of uploading again.",
            upload.name,
            job_id,
        )
        return job_id

    def _first_conflict(self) -> _SlotWait:
        """Start waiting for the slot; the job list only names who holds it, in the log."""
        now = self._pace.clock()
        slot = _SlotWait(deadline=now + self.slot_wait_timeout, started=now)
        slot.blockers = blocking_jobs(self._peek_list())
        self.log.info(
            "Userpilot's job slot is busy (HTTP 409%s); uploading again with backoff for up to "
            "%.0f s (setting `slot_wait_timeout`).",
            f", import job(s) running: {', '.join(slot.blockers)}" if slot.blockers else "",
            self.slot_wait_timeout,
        )
        return slot

    def _wait_for_slot(self, slot: _SlotWait) -> None:
        """After a 409: sleep before the next upload, or raise once `slot_wait_timeout` passed."""
        remaining = slot.deadline - self._pace.clock()
        if remaining <= 0:
            slot.blockers = blocking_jobs(self._peek_list()) or slot.blockers
            who = (
                f"import job(s) {', '.join(slot.blockers)}"
                if slot.blockers
                else "a job the job list does not show as a running import"
            )
            msg = (
                f"Userpilot's job slot stayed busy (HTTP 409) for "
                f"{self._pace.clock() - slot.started:.0f} s, longer than `slot_wait_timeout` "
                f"({self.slot_wait_timeout:.0f} s); blocked by {who}. Another import is running "
                "in this Userpilot account: let it finish, or raise `slot_wait_timeout`."
            )
            raise SlotWaitTimeoutError(msg)
        self._pace.sleep(min(next(slot.delays), remaining))

    # --- get_job helpers ----------------------------------------------------------------------

    def _find_job_url(self, job_id: str, what: str) -> requests.Response | None:
        """A 404 for a job we were given: try the raw id, then the job list's `links`."""
        for url in self._other_job_urls(job_id):
            answer = self._get(url, what)
            if 200 <= answer.status_code < 300:  # noqa: PLR2004
                self.log.debug("Job %s answers at %s; using that from now on.", job_id, url)
                self._job_urls[job_id] = url
                return answer
        return None

    def _other_job_urls(self, job_id: str) -> Iterator[str]:
        raw = job_url(self.api_url, job_id, escape=False)
        yield raw
        link = link_url(self.api_url, (self._listed(job_id) or {}).get("links"))
        if link is not None and link != raw:
            yield link

    def _listed(self, job_id: str) -> Mapping[str, Any] | None:
        """The job list's entry for `job_id`, if the list (its newest page) shows it."""
        return next((j for j in self._peek_list() if job_id_of(j) == job_id), None)

    # --- the exchange -------------------------------------------------------------------------

    def _retrier(self, what: str, policy: RetryPolicy | None = None) -> Retrier:
        def count_retry() -> None:
            self.stats.retries += 1

        return Retrier(
            policy or self.retry, self._pace, what, where=self.api_url, on_retry=count_retry
        )

    def _list(self, retrier: Retrier) -> list[Mapping[str, Any]]:
        url = jobs_url(self.api_url)
        while True:
            answer = self._transport.exchange("GET", url)
            if isinstance(answer, Failure):
                retrier.wait(answer, "listing jobs")
                continue
            if not 200 <= answer.status_code < 300:  # noqa: PLR2004
                self._raise_for_auth(answer)
                code = answer.status_code
                msg = f"Listing jobs at {url} answered HTTP {code}: {self._transport.body(answer)}"
                raise UserpilotError(msg)
            return jobs_of(self._transport.json(answer))

    def _peek_list(self) -> list[Mapping[str, Any]]:
        """The job list from one attempt, or [] (for log lines and hints, never decisions)."""
        try:
            answer = self._transport.exchange("GET", jobs_url(self.api_url))
        except UserpilotError:
            return []
        if isinstance(answer, Failure) or not 200 <= answer.status_code < 300:  # noqa: PLR2004
            return []
        return jobs_of(self._transport.json(answer))

    def _get(self, url: str, what: str) -> requests.Response:
        """GET with retries; returns the first non-transient answer (401/403 raise)."""
        retrier = self._retrier(what)
        while True:
            answer = self._transport.exchange("GET", url)
            if isinstance(answer, Failure):
                retrier.wait(answer)
                continue
            self._raise_for_auth(answer)
            return answer

    def _raise_for_auth(self, answer: requests.Response) -> None:
        if answer.status_code in {401, 403}:
            msg = (
                f"Userpilot rejected the API key (HTTP {answer.status_code}) for {self.api_url}: "
                f"check the `api_key` setting ({KEY_HINT}) and that `api_url` is your account's "
                "environment host"
            )
            raise AuthError(msg)

    def _unreachable(self, failure: Failure) -> NoReturn:
        msg = (
            f"Cannot reach Userpilot at {self.api_url} ({failure.reason}): check the `api_url` "
            "setting (host name, port) and the network, DNS or proxy."
        )
        raise UnreachableError(msg)
