"""Host policy: which `api_url` is acceptable, and which URLs the key may be sent to."""

from __future__ import annotations

from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from target_userpilot.loopback import is_loopback


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


def host_of(api_url: str) -> str:
    """`scheme://host[:port]` of a checked `api_url`: what a log line may show."""
    parts = urlsplit(api_url)
    return f"{parts.scheme}://{parts.netloc}"


def submit_url(api_url: str, kind: str) -> str:
    """`POST` target of a bulk identify upload."""
    return f"{api_url}/v1/{kind}/bulk_identify"


def jobs_url(api_url: str) -> str:
    """The job list."""
    return f"{api_url}/v1/background_jobs/"


def job_url(api_url: str, job_id: str, *, escape: bool = True) -> str:
    """One job, built from its id (escaped by default: ids may hold colons)."""
    return f"{api_url}/v1/background_jobs/{quote(job_id, safe='') if escape else job_id}"


def link_url(api_url: str, link: object) -> str | None:
    """The absolute URL of a job's `links` path, if it stays on `api_url`'s host.

    The key is only ever sent to `api_url`'s scheme and host: a link elsewhere is ignored.
    """
    if not isinstance(link, str) or not link.strip():
        return None
    url = urljoin(api_url + "/", link.strip())
    if urlsplit(url)[:2] != urlsplit(api_url)[:2]:
        return None
    return url
