"""The errors the wire raises: each message says what to fix and never carries the API key."""

from __future__ import annotations

from target_userpilot.errors import UserFacingError


class UserpilotError(UserFacingError):
    """Base of every error the client raises; the message says what to fix."""


# A 401 is most often the App Token (the one Userpilot's JavaScript snippet holds) pasted
# where the API key belongs.
KEY_HINT = "the API key of Userpilot > Settings > Environment, not the App Token"


class AuthError(UserpilotError):
    """Userpilot rejected the API key (401/403). Never retried."""


class PayloadTooLargeError(UserpilotError):
    """Userpilot answered 413: the caller should split the batch."""


class RejectedUploadError(UserpilotError):
    """Userpilot refused an upload with a 4xx other than 401/403/409/413/429.

    The message carries the server's own words (and the line or id it names, if any).
    """

    def __init__(self, message: str, *, status: int, body: str) -> None:
        """`status` is the HTTP status; `body` the server's answer (truncated, key redacted)."""
        super().__init__(message)
        self.status = status
        self.body = body


class DeletionRefusedError(UserpilotError):
    """Userpilot refused a delete request with a 4xx other than 401/403/429. Never retried."""

    def __init__(self, message: str, *, status: int) -> None:
        """`status` is the HTTP status."""
        super().__init__(message)
        self.status = status


class EventRefusedError(UserpilotError):
    """Userpilot refused one event (400): `reason` is its word; the run goes on."""

    def __init__(self, status: int, reason: str) -> None:
        """`reason` is the server's explanation (truncated, key redacted)."""
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


class SlotWaitTimeoutError(UserpilotError):
    """Another job kept Userpilot's job slot busy (409) for longer than `slot_wait_timeout`."""


class TransientError(UserpilotError):
    """A call kept failing transiently until the retry policy's time ran out."""


class UnreachableError(UserpilotError):
    """`api_url`'s host could not be reached at all (DNS failure, connection refused)."""
