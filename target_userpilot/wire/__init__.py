"""The wire to Userpilot: the only package that speaks HTTP.

`urls` (host policy), `transport` (session, auth header, uploads), `retry` (retry policy),
`jobs_api` (reading answers), `deletions` (the Deletion API), `client` (the facade the job
runner uses), `track` (the Track API).

The client and the transport load `requests`; they load on first use, so the run (`run/`) can
name the wire's errors and job statuses without the HTTP stack (tests/test_layers.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from target_userpilot.kinds import Kind
from target_userpilot.wire.errors import (
    AuthError,
    DeletionRefusedError,
    EventRefusedError,
    PayloadTooLargeError,
    RejectedUploadError,
    SlotWaitTimeoutError,
    TransientError,
    UnreachableError,
    UserpilotError,
)
from target_userpilot.wire.jobs_api import JobStatus, parse_job
from target_userpilot.wire.retry import RetryPolicy
from target_userpilot.wire.urls import check_api_url

if TYPE_CHECKING:
    from target_userpilot.wire.client import ClientStats, UserpilotClient
    from target_userpilot.wire.transport import clean_api_key

_LAZY = {
    "ClientStats": "target_userpilot.wire.client",
    "UserpilotClient": "target_userpilot.wire.client",
    "clean_api_key": "target_userpilot.wire.transport",
}


def __getattr__(name: str) -> object:
    """The names whose modules load `requests`, imported when first asked for."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "AuthError",
    "ClientStats",
    "DeletionRefusedError",
    "EventRefusedError",
    "JobStatus",
    "Kind",
    "PayloadTooLargeError",
    "RejectedUploadError",
    "RetryPolicy",
    "SlotWaitTimeoutError",
    "TransientError",
    "UnreachableError",
    "UserpilotClient",
    "UserpilotError",
    "check_api_url",
    "clean_api_key",
    "parse_job",
]
