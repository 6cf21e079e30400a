"""`fingerprint_store_url` checked as text before anything uses it.

A password holding `@`, `:`, `/`, `?` or `#` that is not percent-encoded does not stay in the
password: SQLAlchemy's parser then reads part of it as the host or port, and the driver's
"failed to resolve host '...'" quotes it. So a URL that does not split cleanly into
`scheme://user:password@host:port/database?query` is refused here, with the password shown
as `***` whatever the parser would have made of it.
"""

from __future__ import annotations

import re

SETTING = "fingerprint_store_url"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
# Characters that end a URL's password early unless percent-encoded.
_DELIMITERS = ("@", ":", "/", "?", "#")
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&]*")
_ENCODE_HINT = (
    "percent-encode the password ('@' as %40, ':' as %3A, '/' as %2F, '?' as %3F, '#' as %23)"
)


def check_store_url(raw: str) -> None:
    """Raise ValueError, showing the URL with its password as ***, unless it splits cleanly."""
    text = raw.strip()
    scheme = _SCHEME.match(text)
    if scheme is None:
        msg = (
            f"`{SETTING}` is not a database URL; expected e.g. "
            "postgresql://user:password@host:5432/database."
        )
        raise ValueError(msg)
    rest = text[scheme.end() :]
    userinfo, at, host_rest = rest.rpartition("@")
    if not at:
        host_rest = rest
    problem = _userinfo_problem(userinfo) if at else None
    port = _port(host_rest)
    if problem is None and port and not port.isdigit():
        problem = "a port that is not a number"
    if problem is not None:
        msg = (
            f"`{SETTING}` ({masked(text)}) does not parse as a database URL: {problem}; "
            f"{_ENCODE_HINT}."
        )
        raise ValueError(msg)


def masked(raw: str) -> str:
    """The URL as a message may show it: everything between the user name and the host as ***."""
    text = raw.strip()
    scheme = _SCHEME.match(text)
    if scheme is None:
        return "***"
    rest = text[scheme.end() :]
    userinfo, at, host_rest = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        shown = f"{scheme.group()}{user}{':***' if colon else ''}@{host_rest}"
    elif _port(rest).isdigit() or not _port(rest):
        shown = text
    else:  # `user:pass` with no `@`: the "port" may be a password
        shown = f"{scheme.group()}***"
    return _QUERY_PASSWORD.sub(r"\1***", shown)


def _userinfo_problem(userinfo: str) -> str | None:
    user, _, password = userinfo.partition(":")
    for char in _DELIMITERS:
        if char in password:
            return f"the password holds {char!r}"
        if char in user:
            return f"the user name holds {char!r}"
    return None


def _port(host_rest: str) -> str:
    """The port of `host:port/database?query` ('' when none); an IPv6 host is bracketed."""
    authority = re.split(r"[/?#]", host_rest, maxsplit=1)[0]
    host_end = authority.rfind("]") + 1  # 0 without brackets
    _, colon, port = authority[host_end:].partition(":")
    return port if colon else ""
