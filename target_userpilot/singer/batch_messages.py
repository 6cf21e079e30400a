"""Singer BATCH messages: which manifests this target reads, and the lines of their files.

Only local `jsonl` files are read (a `file://` URL or an absolute path, plain or gzip): the
SDK's readers for other places need extras (`s3fs`, ...) that are not installed, and fail with
an ImportError deep in the SDK. Everything else is refused as one `BatchMessageError`, which
the reader turns into a sentence naming the input line.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit
from urllib.request import url2pathname

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

COMPRESSIONS = ("none", "gzip")


class BatchMessageError(Exception):
    """A BATCH message this target cannot read; continues "input line N ..."."""


def manifest_files(message: Mapping[str, Any]) -> tuple[list[Path], bool]:
    """The local files a BATCH message names, and whether they are gzip-compressed.

    Raises BatchMessageError for an encoding or an entry this target does not read.
    """
    missing = [key for key in ("stream", "encoding", "manifest") if key not in message]
    if missing:
        msg = f"is a BATCH message without {' or '.join(map(repr, missing))}"
        raise BatchMessageError(msg)
    encoding = message["encoding"]
    form, compression = encoding.get("format"), encoding.get("compression") or "none"
    if form != "jsonl":
        msg = f"is a BATCH message in format {form!r}: only 'jsonl' is read"
        raise BatchMessageError(msg)
    if compression not in COMPRESSIONS:
        msg = (
            f"is a BATCH message compressed as {compression!r}: only "
            f"{' or '.join(map(repr, COMPRESSIONS))} is read"
        )
        raise BatchMessageError(msg)
    return [local_file(entry) for entry in message["manifest"]], compression == "gzip"


def local_file(entry: object) -> Path:
    """The local file a manifest entry names: a `file://` URL or an absolute path."""
    if not isinstance(entry, str):
        msg = f"has a BATCH manifest entry that is not a string ({type(entry).__name__})"
        raise BatchMessageError(msg)
    parts = urlsplit(entry)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return Path(url2pathname(unquote(parts.path)))
    if not parts.scheme and Path(entry).is_absolute():
        return Path(entry)
    why = (
        "a relative path (the tap's folder is not known here)"
        if not parts.scheme
        else "only local files (file:// or an absolute path) are read"
    )
    msg = f"has a BATCH manifest {_shown(entry)} that is not supported: {why}"
    raise BatchMessageError(msg)


def file_lines(path: Path, *, gzipped: bool) -> Iterator[bytes]:
    """The non-blank lines of one batch file."""
    with path.open("rb") as raw, gzip.open(raw) if gzipped else raw as lines:
        for line in lines:
            if line.strip():
                yield line


def _shown(entry: str) -> str:
    """The entry as it may be logged: any password in it replaced by ***."""
    try:
        parts = urlsplit(entry)
        if parts.password is None:
            return repr(entry)
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{parts.username or ''}:***@{host}"
        return repr(urlunsplit(parts._replace(netloc=netloc)))
    except ValueError:
        return "(a URL that does not parse)"
