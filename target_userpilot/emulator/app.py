"""HTTP handling: authentication, routing, upload parsing, faults, responses.

Built on the standard library's HTTP/1.1 server (keep-alive included), with werkzeug's
streaming multipart parser: an upload is spooled to a temporary file as it arrives, never held
whole in memory, and is never read past its size limit.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import json
import logging
import socket
import tempfile
import time
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import IO, TYPE_CHECKING, Any, ClassVar, cast
from urllib.parse import unquote

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import MultiPartParser
from werkzeug.http import parse_options_header
from werkzeug.serving import DechunkedInput

from target_userpilot.emulator.config import MAX_FILE_BYTES, MULTIPART_OVERHEAD_BYTES
from target_userpilot.emulator.faults import RETRYABLE_STATUSES
from target_userpilot.emulator.routes import ExtraRoutes, Request, is_emulator_path
from target_userpilot.emulator.store import RequestRecord, SlotBusyError, Store
from target_userpilot.emulator.validation import (
    Kind,
    PayloadError,
    Rules,
    check_rules,
    loads,
    metadata_problem,
    parse_json_body,
    parse_ndjson,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from werkzeug.datastructures import FileStorage

    from target_userpilot.emulator.config import EmulatorConfig
    from target_userpilot.emulator.deletions import Answer

logger = logging.getLogger("target_userpilot.emulator")

SUBMIT_PATHS: dict[str, Kind] = {
    "/v1/users/bulk_identify": "users",
    "/v1/companies/bulk_identify": "companies",
}
JOBS_PATH = "/v1/background_jobs"
IDENTIFY_PATH = "/v1/identify"
MAX_SMALL_BODY = 1024 * 1024
"""Largest body accepted by endpoints that do not take files."""
DRAIN_LIMIT = 1024 * 1024 * 1024
"""An unread request body up to this size is read and discarded so the client sees the answer."""
_CHUNK = 64 * 1024
PROXY_413 = (
    b"<html><head><title>413 Request Entity Too Large</title></head><body>"
    b"<center><h1>413 Request Entity Too Large</h1></center><hr><center>nginx</center>"
    b"</body></html>\n"
)


class _TooLargeError(Exception):
    """More bytes arrived than the limit in force."""


class _BodyError(Exception):
    """The request framing itself is broken (bad Content-Length or chunking)."""


class _Body:
    """The request body, read at most once, with a byte cap and a drain for what is left."""

    def __init__(self, rfile: Any, headers: Any) -> None:  # noqa: ANN401 - http.server's types
        self.declared: int | None = 0
        self.read_bytes = 0
        self.limit: int | None = None
        self._stream: IO[bytes] = io.BytesIO()
        self._left: int | None = 0
        if rfile is None:  # no body at all (a request http.server refused to parse)
            return
        if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
            self._stream = cast("IO[bytes]", DechunkedInput(rfile))
            self.declared = self._left = None
            return
        raw = headers.get("Content-Length")
        try:
            declared = int(raw) if raw is not None else 0
        except ValueError:
            raise _BodyError(raw) from None
        if declared < 0:
            raise _BodyError(raw)
        self._stream = rfile
        self.declared = self._left = declared

    @property
    def size(self) -> int:
        """What the client declared, or what was read of a chunked body."""
        return self.declared if self.declared is not None else self.read_bytes

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all when negative); raises _TooLargeError past the cap."""
        want = _CHUNK if size is None or size < 0 else size
        if self._left is not None:
            want = min(want, self._left)
        if want <= 0:
            return b""
        try:
            data = self._stream.read(want)
        except OSError as e:  # broken chunking
            raise _BodyError(str(e)) from e
        self.read_bytes += len(data)
        if self._left is not None:
            if not data:
                msg = "the client sent less than its Content-Length"
                raise _BodyError(msg)
            self._left -= len(data)
        if self.limit is not None and self.read_bytes > self.limit:
            raise _TooLargeError
        return data

    def read_all(self) -> bytes:
        """The whole rest of the body."""
        parts = []
        while chunk := self.read(_CHUNK):
            parts.append(chunk)
        return b"".join(parts)

    def drain(self) -> bool:
        """Read and discard what is left; False when that is too much or the framing breaks."""
        self.limit = None
        if self._left is not None and self._left > DRAIN_LIMIT:
            return False
        try:
            while self.read(1024 * 1024):
                if self.read_bytes > DRAIN_LIMIT:
                    return False
        except (_BodyError, OSError):
            return False
        return True


class _CappedSpool(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
    """An upload part, in memory up to 16 MB, on disk past that, refused past MAX_FILE_BYTES.

    A typical 10,000-row batch is a few MB: kept in memory, its time from upload to job does
    not depend on the disk (which the target, writing its next batch, keeps busy).
    """

    def __init__(self) -> None:
        super().__init__(max_size=16 * 1024 * 1024, mode="w+b")
        self.written = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.written += len(data)
        if self.written > MAX_FILE_BYTES:
            raise _TooLargeError
        return super().write(data)


def _spool_factory(
    total_content_length: int | None,
    content_type: str | None,
    filename: str | None,
    content_length: int | None = None,
) -> IO[bytes]:
    del total_content_length, content_type, filename, content_length
    return cast("IO[bytes]", _CappedSpool())


def too_large_file() -> PayloadError:
    """The 413 for a file (or JSON body) over 50 MB."""
    return PayloadError(
        413, f"Payload Too Large: the file exceeds 50 MB ({MAX_FILE_BYTES:,} bytes)"
    )


def _part_filename(storage: FileStorage) -> str | None:
    name = (storage.filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name or None


class Handler(BaseHTTPRequestHandler):
    """One connection to the emulated Userpilot; `store` is set on a per-server subclass."""

    store: ClassVar[Store]
    extras: ClassVar[ExtraRoutes]
    protocol_version = "HTTP/1.1"
    server_version = "userpilot-emulator"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed after this
    # Headers and body go out as two writes; with Nagle's algorithm on, the body waited for
    # the client's delayed ACK of the headers, adding ~40-100 ms to every answer.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        """Dispatch."""
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET  # noqa: N815

    # -- plumbing --------------------------------------------------------------------------

    def parse_request(self) -> bool:
        """Reset the per-request state (a keep-alive connection reuses this object)."""
        self._at = self.store.now()
        self._answered = False
        self._job_id: str | None = None
        self._filename: str | None = None
        self._content_size = 0
        self._received_at: float | None = None
        self._body = _Body(None, None)
        return super().parse_request()

    def _handle(self) -> None:
        try:
            self._body = _Body(self.rfile, self.headers)
        except _BodyError:
            self.send_error(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
            return
        try:
            self._dispatch()
        except (ConnectionError, TimeoutError, _BodyError) as e:
            logger.debug("connection lost during %s %s: %s", self.command, self.path, e)
            self.close_connection = True
        except Exception:
            logger.exception("emulator error on %s %s", self.command, self.path)
            if not self._answered:
                self._json(500, {"error": "emulator internal error"})
            self.close_connection = True

    def _dispatch(self) -> None:
        cfg = self.store.config
        path = self.path.split("?", 1)[0]
        fault = (
            None
            if is_emulator_path(path)
            else self.store.request_fault(deletion=self.command == "DELETE")
        )
        if fault == "drop":
            self._drop("drop")
            return
        if fault is not None:
            self._fault(fault, cfg.retry_after_seconds)
            return
        if not self._authorized(cfg.token):
            self._error(401, "Unauthorized: missing or invalid API key")
            return
        route = self._route(path)
        if route is None:
            self._error(404, f"Not Found: {self.command} {path}")
        elif self.command != route[0]:
            self._not_allowed(route[0])
        else:
            route[1]()

    def _route(self, path: str) -> tuple[str, Callable[[], None]] | None:
        """The method a path takes and what answers it; None for an unknown path."""
        bare = path.rstrip("/")
        if bare in SUBMIT_PATHS:
            kind = SUBMIT_PATHS[bare]
            return "POST", lambda: self._submit(kind)
        if bare == JOBS_PATH:
            return "GET", lambda: self._json(200, self.store.job_list())
        if path.startswith(JOBS_PATH + "/"):
            return "GET", lambda: self._job(path[len(JOBS_PATH) + 1 :])
        if bare == IDENTIFY_PATH:
            return "POST", self._identify
        extra = self.extras.route(path)
        if extra is not None:
            return extra[0], lambda: self._extra(extra[1])
        return None

    def _authorized(self, token: str) -> bool:
        presented = self.headers.get("Authorization") or ""
        scheme, _, key = presented.strip().partition(" ")
        if scheme.lower() != "token":
            return False
        return hmac.compare_digest(key.strip().encode(), token.encode())

    def _not_allowed(self, allowed: str) -> None:
        self._error(
            405, f"Method Not Allowed: {self.command}, use {allowed}", headers={"Allow": allowed}
        )

    def _error(
        self,
        status: int,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        fault: str | None = None,
    ) -> None:
        """An error answer in the profile's body shape."""
        reference = self.store.config.shapes.reference
        body = PayloadError(status, message).body(reference=reference)
        self._json(status, body, headers=headers, fault=fault)

    def _fault(self, fault: str, retry_after: int) -> None:
        status = RETRYABLE_STATUSES[fault]
        if fault == "429date":
            when = formatdate(self.store.now() + retry_after, usegmt=True)
            self._error(429, "Too Many Requests", headers={"Retry-After": when}, fault=fault)
        elif status == 429:  # noqa: PLR2004
            send = self.store.retry_after_sent()
            headers = {"Retry-After": str(retry_after)} if send else None
            self._error(429, "Too Many Requests", headers=headers, fault=fault)
        elif fault == "html200":
            page = b"<html><body><h1>Down for maintenance</h1></body></html>\n"
            self._send(200, page, "text/html", fault=fault)
        elif fault == "empty200":
            self._send(200, b"", "application/json", fault=fault)
        elif fault == "302":
            headers = {"Location": JOBS_PATH + "/"}
            self._send(302, b"", "text/html", headers=headers, fault=fault)
        elif status == 500:  # noqa: PLR2004
            self._error(500, "Internal Server Error", fault=fault)
        elif status == 502:  # noqa: PLR2004
            body = b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"
            self._send(502, body, "text/html", fault=fault)
        else:
            self._send(503, b"Service Unavailable\n", "text/plain; charset=utf-8", fault=fault)

    def _record(self, status: int, fault: str | None) -> None:
        record = RequestRecord(
            method=self.command or "",
            path=self.path or "",
            status=status,
            bytes_in=self._body.size if hasattr(self, "_body") else 0,
            at=getattr(self, "_at", self.store.now()),
            fault=fault,
            job_id=getattr(self, "_job_id", None),
            received_at=getattr(self, "_received_at", None),
        )
        self.store.log_request(record)
        logger.info(
            "%s %s -> %s%s (%d bytes in)",
            record.method,
            record.path,
            status or "dropped",
            f" [fault {fault}]" if fault else "",
            record.bytes_in,
        )

    def _pause(self) -> None:
        slow = self.store.config.slow_seconds
        if slow > 0:
            time.sleep(slow)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        *,
        headers: dict[str, str] | None = None,
        fault: str | None = None,
    ) -> None:
        close = not self._body.drain()
        self._pause()
        self._record(status, fault)
        self._answered = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(
        self,
        status: int,
        payload: Any,  # noqa: ANN401 - any JSON value
        *,
        headers: dict[str, str] | None = None,
        fault: str | None = None,
    ) -> None:
        body = json.dumps(payload).encode()
        self._send(status, body, "application/json", headers=headers, fault=fault)

    def _drop(self, fault: str) -> None:
        """Close the connection without any response."""
        self._pause()
        self._record(0, fault)
        self._answered = True
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # -- endpoints -------------------------------------------------------------------------

    def _job(self, raw_id: str) -> None:
        job_id = unquote(raw_id.rstrip("/"))
        view = self.store.job_view(job_id) if job_id else None
        if view is None:
            self._error(404, f"Not Found: no job {job_id!r}")
            return
        self._job_id = job_id
        self._json(200, view)

    def _submit(self, kind: Kind) -> None:
        cfg = self.store.config
        if cfg.proxy_body_limit and self._body.size > cfg.proxy_body_limit:
            self._send(413, PROXY_413, "text/html")
            return
        mimetype, options = parse_options_header(self.headers.get("Content-Type"))
        try:
            if mimetype == "multipart/form-data" and cfg.refuse_multipart:
                raise self._no_multipart(cfg.refuse_multipart)
            if mimetype == "multipart/form-data":
                rows, name = self._multipart(kind, options), self._filename
                source, where = "multipart", "line"
            elif mimetype == "application/json":
                rows, name, source, where = self._json_rows(kind), None, "json", "record"
            else:
                raise PayloadError(  # noqa: TRY301 - one place answers every payload error
                    400,
                    "Content-Type must be multipart/form-data (one part named 'file' holding "
                    f'NDJSON) or application/json ({{"{kind}": [...]}}), got {mimetype or "none"}',
                )
            check_rules(rows, _rules(cfg), where)
            job, lost = self.store.submit(
                kind, rows, size=self._content_size, uploaded_filename=name, source=source
            )
        except PayloadError as e:
            self._json(e.status, e.body(reference=cfg.shapes.reference))
            return
        except SlotBusyError as e:
            if cfg.shapes.reference:
                self._error(409, "Conflict - Import job already in progress")
            else:
                self._json(
                    409, {"error": f"Conflict: another bulk job is in progress ({e.job_id})"}
                )
            return
        self._job_id = job.job_id
        if lost:
            self._drop("lost_response")
            return
        self._json(cfg.shapes.submit_status, self.store.submit_view(job))

    @staticmethod
    def _no_multipart(status: int) -> PayloadError:
        """A server that takes JSON bodies only (the API reference's request body)."""
        if status == 415:  # noqa: PLR2004
            return PayloadError(415, "Unsupported Media Type: send application/json")
        return PayloadError(400, "No file uploaded: the request body must be JSON")

    def _multipart(self, kind: Kind, options: dict[str, str]) -> list[Any]:
        body = self._body
        if body.declared is not None and body.declared > MAX_FILE_BYTES + MULTIPART_OVERHEAD_BYTES:
            raise too_large_file()
        boundary = options.get("boundary", "")
        if not boundary:
            raise PayloadError(400, "multipart/form-data without a boundary")
        body.limit = MAX_FILE_BYTES + MULTIPART_OVERHEAD_BYTES
        parser = MultiPartParser(
            stream_factory=_spool_factory,
            max_form_memory_size=MAX_SMALL_BODY,
            max_form_parts=32,
        )
        try:
            form, files = parser.parse(cast("IO[bytes]", body), boundary.encode(), body.declared)
        except (_TooLargeError, RequestEntityTooLarge):
            raise too_large_file() from None
        except ValueError as e:
            raise PayloadError(400, f"malformed multipart/form-data body ({e})") from None
        try:
            parts = files.getlist("file")
            if len(parts) != 1:
                if "file" in form:
                    msg = "the part named 'file' must be a file upload (it has no filename)"
                elif parts:
                    msg = "expected exactly one part named 'file', got several"
                else:
                    names = sorted(set(files) | set(form))
                    msg = f"expected one part named 'file', got {names or 'no parts'}"
                raise PayloadError(400, msg)
            storage = parts[0]
            self._filename = _part_filename(storage)
            self._content_size = cast("_CappedSpool", storage.stream).written
            self._received_at = self.store.now()
            return parse_ndjson(storage.stream, kind)
        finally:
            for storage in files.values():
                storage.close()

    def _json_rows(self, kind: Kind) -> list[Any]:
        body = self._body
        if body.declared is not None and body.declared > MAX_FILE_BYTES:
            raise too_large_file()
        body.limit = MAX_FILE_BYTES
        try:
            data = body.read_all()
        except _TooLargeError:
            raise too_large_file() from None
        self._content_size = len(data)
        return parse_json_body(data, kind)

    def _identify(self) -> None:
        body = self._body
        body.limit = MAX_SMALL_BODY
        try:
            data = body.read_all()
        except _TooLargeError:
            self._json(413, {"error": "Payload Too Large"})
            return
        try:
            payload = loads(data)
        except ValueError as e:
            self._json(400, {"error": f"the body is not valid JSON ({e})"})
            return
        problem = _identify_problem(payload)
        if problem:
            self._json(400, {"error": problem})
            return
        self.store.identify(
            payload["user_id"], payload.get("metadata") or {}, payload.get("company")
        )
        self._json(202, {})

    def _extra(self, reply: Callable[[Request], Answer]) -> None:
        self._body.limit = MAX_SMALL_BODY
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            answer = reply(Request(headers, self._body.read_all))
        except _TooLargeError:
            self._json(413, {"error": "Payload Too Large"})
            return
        self._json(answer.status, answer.payload)

    # -- http.server hooks -------------------------------------------------------------------

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors raised by http.server itself (bad request line, unknown method) as JSON."""
        del explain
        if not hasattr(self, "_body"):  # refused before parse_request
            self._body = _Body(None, None)
        self.close_connection = True
        status = HTTPStatus(code)
        self._record(code, None)
        self._answered = True
        body = json.dumps({"error": message or status.phrase}).encode()
        self.send_response(code, status.phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):  # noqa: PLR2004
            self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Requests are logged by `_record`."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ANN401
        """http.server's own messages, at debug level."""
        logger.debug("http.server: " + format, *args)  # noqa: G003


def _rules(cfg: EmulatorConfig) -> Rules:
    return Rules(cfg.max_value_chars, cfg.string_values_only, cfg.reject_keys, cfg.refuse_uploads)


def _identify_problem(payload: object) -> str | None:  # noqa: PLR0911
    if not isinstance(payload, dict):
        return "the body must be a JSON object"
    user_id = payload.get("user_id")
    if not isinstance(user_id, str) or not user_id.strip():
        return "user_id must be a non-empty string"
    if "metadata" in payload:
        problem = metadata_problem(payload["metadata"])
        if problem:
            return problem
    if "company" in payload:
        company = payload["company"]
        if not isinstance(company, dict):
            return "company must be an object"
        if not isinstance(company.get("id"), str) or not company["id"].strip():
            return "company.id must be a non-empty string"
        return metadata_problem({k: v for k, v in company.items() if k != "id"}, "company")
    return None
