"""The HTTP session: the auth header, one exchange at a time, uploads as multipart or JSON.

Failures worth retrying come back as a `Failure` value; nothing here retries or sleeps. No
exception or message leaves this module with the API key in it: requests' own exception
texts (which may quote a header) are reduced to their type name.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Literal

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests_toolbelt import MultipartEncoder

from target_userpilot.wire.errors import UserpilotError
from target_userpilot.wire.retry import Failure, retry_after

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Mapping
    from pathlib import Path

UploadFormat = Literal["multipart", "json"]

BODY_LIMIT = 2048  # characters of a server answer quoted in an error message
HTML_TEXT_LIMIT = 200  # characters of an HTML page without a title (a proxy's, a wrong host's)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
NDJSON = "application/x-ndjson"
UPLOAD_BLOCK = 1 << 20  # bytes per socket write of an upload body


def clean_api_key(value: object) -> str:
    """The key without surrounding whitespace; ValueError (never quoting it) if unusable.

    Keys read from files and environment variables often end in a newline, which requests
    refuses in a header (quoting the header, key included, in its error).
    """
    if not isinstance(value, str):
        msg = f"`api_key` must be a string, not {type(value).__name__} (value not shown)"
        raise ValueError(msg)  # noqa: TRY004 - a settings error, reported as one line
    key = value.strip()
    if not key:
        msg = "`api_key` is empty: set it to your Userpilot API key"
        raise ValueError(msg)
    if not key.isprintable():
        msg = "`api_key` holds control characters or line breaks inside it (value not shown)"
        raise ValueError(msg)
    return key


class JsonBody:
    """An NDJSON file sent as `{"<kind>": [line, line, ...]}`, streamed, with a known length.

    Lines are already JSON objects: only commas and the wrapper are added, so the body is the
    file's size plus a few bytes, within the same limits as the file.
    """

    def __init__(self, path: Path, kind: str) -> None:
        """Measure the body (one pass over the file) without holding it in memory."""
        self._path = path
        self._head = ('{"' + kind + '":[').encode()
        self._tail = b"]}"
        lines = 0
        content = 0
        with path.open("rb") as stream:
            for line in stream:
                stripped = line.strip()
                if stripped:
                    lines += 1
                    content += len(stripped)
        self.length = len(self._head) + content + max(lines - 1, 0) + len(self._tail)
        self._pieces: Generator[bytes, None, None] | None = None
        self._buffer = bytearray()

    def __len__(self) -> int:
        """Content-Length."""
        return self.length

    def _generate(self) -> Generator[bytes, None, None]:
        with self._path.open("rb") as stream:
            yield self._head
            first = True
            for line in stream:
                stripped = line.strip()
                if stripped:
                    yield stripped if first else b"," + stripped
                    first = False
            yield self._tail

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes of the body (everything when negative)."""
        if self._pieces is None:
            self._pieces = self._generate()
        want = self.length if size is None or size < 0 else size
        while len(self._buffer) < want:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._buffer += piece  # a bytearray: amortized, not a copy per line
        out = bytes(self._buffer[:want])
        del self._buffer[:want]
        return out

    def close(self) -> None:
        """Release the file if reading stopped early."""
        if self._pieces is not None:
            self._pieces.close()


class _LargeBlockAdapter(HTTPAdapter):
    """Writes request bodies in 1 MiB blocks instead of urllib3's 16 KiB.

    Each block is a file read and a socket write, and each of those hands the GIL to the main
    thread (busy mapping records) and waits to get it back: fewer blocks, faster uploads, a
    shorter idle gap in Userpilot's job slot.
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - requests' own signature
        kwargs["blocksize"] = UPLOAD_BLOCK
        super().init_poolmanager(*args, **kwargs)


def never_connected(exc: requests.RequestException) -> bool:
    """Whether the request failed before a connection existed (so nothing was sent)."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def connect_cause(exc: requests.RequestException) -> str:
    """Why no connection was made, from the exception's type alone (its text may hold a URL)."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(reason, urllib3.exceptions.NameResolutionError):
        return "the host name could not be resolved"
    chain: BaseException | None = reason
    while chain is not None:
        if isinstance(chain, ConnectionRefusedError):
            return "connection refused"
        chain = chain.__cause__ or chain.__context__
    return f"no connection ({type(reason or exc).__name__})"


class Transport:
    """One `requests.Session` carrying the key; `exchange` is the only way out."""

    def __init__(
        self,
        api_key: str,
        *,
        api_url: str,
        timeout: tuple[float, float],
        user_agent: str,
        wall_clock: Callable[[], float],
    ) -> None:
        """`api_key` must have been through `clean_api_key`."""
        self.api_url = api_url
        self.timeout = timeout
        self.requests = 0
        self._wall = wall_clock
        self._key = api_key
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
        return f"Transport(api_url={self.api_url!r})"

    def close(self) -> None:
        """Release the HTTP connections."""
        self._session.close()

    def exchange(
        self,
        method: str,
        url: str,
        *,
        upload: tuple[Path, str, UploadFormat] | None = None,
        json_body: tuple[bytes, Mapping[str, str]] | None = None,
        timeout: tuple[float, float] | None = None,
    ) -> requests.Response | Failure:
        """One HTTP request; transient failures come back as a `Failure`.

        `upload` is (NDJSON file, kind, format): a multipart part named `file`, or a JSON body.
        `json_body` is (encoded JSON, extra headers): a small request such as one event or a
        delete request. A redirect is only followed for a GET: requests would re-send a write
        as a GET to wherever it points, and the 2xx of that GET would pass for the write's
        answer.
        """
        self.requests += 1
        try:
            answer = self._send(method, url, upload, json_body, timeout or self.timeout)
        except requests.exceptions.SSLError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                msg = (
                    f"The TLS certificate of {self.api_url} could not be verified; check `api_url`."
                )
                raise UserpilotError(msg) from None
            return Failure(type(exc).__name__, maybe_sent=True, answer_lost=True)
        except requests.exceptions.ConnectTimeout as exc:
            return Failure(type(exc).__name__, maybe_sent=False)
        except (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            if never_connected(exc):
                return Failure(connect_cause(exc), maybe_sent=False)
            return Failure(type(exc).__name__, maybe_sent=True, answer_lost=True)
        except (requests.exceptions.InvalidHeader, ValueError) as exc:
            # requests quotes the header (key included) in these: say only what kind it was.
            msg = f"The request to {self.api_url} could not be built ({type(exc).__name__})"
            raise UserpilotError(msg) from None
        code = answer.status_code
        if code == 429 or code >= 500:  # noqa: PLR2004
            wait = retry_after(answer.headers.get("Retry-After"), self._wall())
            answer.close()
            return Failure(f"HTTP {code}", maybe_sent=code >= 500, retry_after=wait)  # noqa: PLR2004
        return answer

    def _send(
        self,
        method: str,
        url: str,
        upload: tuple[Path, str, UploadFormat] | None,
        json_body: tuple[bytes, Mapping[str, str]] | None,
        timeout: tuple[float, float],
    ) -> requests.Response:
        if json_body is not None:
            data, headers = json_body
            return self._session.request(
                method,
                url,
                data=data,
                headers={"Content-Type": "application/json", **headers},
                timeout=timeout,
                allow_redirects=False,
            )
        if upload is None:
            return self._session.request(method, url, timeout=timeout)
        path, kind, fmt = upload
        if fmt == "json":
            body = JsonBody(path, kind)
            try:
                return self._session.request(
                    method,
                    url,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=timeout,
                    allow_redirects=False,
                )
            finally:
                body.close()
        with path.open("rb") as stream:
            # A fresh encoder per attempt: it streams the file and cannot be rewound.
            encoder = MultipartEncoder(fields={"file": (path.name, stream, NDJSON)})
            return self._session.request(
                method,
                url,
                data=encoder,
                headers={"Content-Type": encoder.content_type},
                timeout=timeout,
                allow_redirects=False,
            )

    def body(self, answer: requests.Response) -> str:
        """The server's answer on one line, truncated, with the key blotted out if echoed."""
        try:
            text = one_line(answer.text)
        except (requests.RequestException, UnicodeError):
            text = "(unreadable body)"
        return self.scrub(text[:BODY_LIMIT] + (" [...]" if len(text) > BODY_LIMIT else ""))

    def scrub(self, text: str) -> str:
        """`text` with the key blotted out, should a server have echoed it."""
        return text.replace(self._key, "***")

    @staticmethod
    def json(answer: requests.Response) -> object:
        """The answer's JSON, or None when it is not JSON."""
        try:
            return answer.json()
        except (ValueError, json.JSONDecodeError):
            return None


def one_line(text: str) -> str:
    """A server's answer for a one-line message.

    An HTML page (a wrong `api_url`, a proxy) becomes its title or the start of its text;
    anything else has its whitespace collapsed.
    """
    if not text.lstrip().startswith("<"):
        return " ".join(text.split())
    title = _TITLE.search(text)
    words = " ".join((title.group(1) if title else _TAG.sub(" ", text)).split())
    return f"an HTML page ({words[:HTML_TEXT_LIMIT]})" if words else "an HTML page"
