"""The wire to Userpilot: the only package that speaks HTTP.

`urls` (host policy), `transport` (session, auth header, uploads), `retry` (retry policy),
`jobs_api` (reading answers), `deletions` (the Deletion API), `client` (the facade the job
runner uses).
"""

from target_userpilot.wire.client import ClientStats, Kind, UserpilotClient
from target_userpilot.wire.errors import (
    AuthError,
    DeletionRefusedError,
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

__all__ = [
    "AuthError",
    "ClientStats",
    "DeletionRefusedError",
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
    "parse_job",
]
