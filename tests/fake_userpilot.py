"""An in-process Userpilot for unit tests: jobs complete at once, faults on demand."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from target_userpilot.settings import CONFIG_SCHEMA, Settings
from target_userpilot.wire import JobStatus, PayloadTooLargeError, RejectedUploadError
from target_userpilot.wire.deletions import Accepted
from target_userpilot.wire.errors import DeletionRefusedError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from target_userpilot.kinds import Kind

LOGGER = logging.getLogger("fake-userpilot")


def settings_for(tmp_path: Path, **config: Any) -> Settings:
    """Settings from the schema's defaults, polls 1 ms apart, files under `tmp_path`."""
    defaults = {
        key: spec["default"]
        for key, spec in CONFIG_SCHEMA["properties"].items()
        if "default" in spec
    }
    return Settings.from_config(
        {
            **defaults,
            "api_url": "http://127.0.0.1:1",
            "batch_dir": str(tmp_path / "batches"),
            "dead_letter_path": str(tmp_path / "dead-letters.ndjson"),
            "poll_max_interval": 0.001,
            **config,
        }
    )


@dataclass
class _Stats:
    retries: int = 0


@dataclass
class FakeClient:
    """`max_rows`: uploads above it get 413; `refuse(line)`: a reason to answer 400;
    `fail_every`: every Nth job ends `failed`; `errors(rows)`: rows a completed job rejects."""

    max_rows: int | None = None
    refuse: Callable[[dict[str, Any]], str | None] = lambda _: None
    fail_every: int = 0
    unnamed_errors: int = 0
    stats: _Stats = field(default_factory=_Stats)
    profiles: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    uploads: int = 0
    refused_uploads: int = 0
    jobs: int = 0
    _pending: dict[str, tuple[str, list[dict[str, Any]]]] = field(default_factory=dict)

    def submit(self, kind: str, path: Path, *, rows: int) -> str:
        self.uploads += 1
        lines = [json.loads(line) for line in path.read_bytes().splitlines()]
        assert lines, "an empty batch is never uploaded"
        assert len(lines) == rows
        if self.max_rows is not None and rows > self.max_rows:
            msg = f"413 for {rows} rows"
            raise PayloadTooLargeError(msg)
        for number, line in enumerate(lines, 1):
            reason = self.refuse(line)
            if reason is not None:
                self.refused_uploads += 1
                msg = f"line {number}: {reason}"
                raise RejectedUploadError(msg, status=400, body=msg)
        self.jobs += 1
        job_id = f"job-{self.jobs}"
        self._pending[job_id] = (kind, lines)
        return job_id

    def get_job(self, job_id: str) -> JobStatus:
        kind, lines = self._pending.pop(job_id)
        if self.fail_every and int(job_id.split("-")[1]) % self.fail_every == 0:
            return JobStatus(job_id, "failed", "failed", 0, 0, len(lines), {"status": "failed"})
        id_key = "user_id" if kind == "users" else "company_id"
        for line in lines:
            self.profiles.setdefault((kind, line[id_key]), {}).update(line["metadata"])
        errors = self.unnamed_errors
        raw = {"status": "completed", "error_count": errors}
        return JobStatus(job_id, "completed", "completed", len(lines), errors, len(lines), raw)

    def close(self) -> None:
        """Nothing to release."""


class MemoryStore:
    """A fingerprint store in a dict."""

    def __init__(self) -> None:
        self.digests: dict[tuple[str, str], bytes] = {}

    def is_unchanged(self, kind: str, profile_id: str, digest: bytes) -> bool:
        return self.digests.get((kind, profile_id)) == digest

    def confirm(self, kind: str, entries: Iterable[tuple[str, bytes]]) -> int:
        count = 0
        for profile_id, digest in entries:
            self.digests[kind, profile_id] = digest
            count += 1
        return count

    def forget(self, kind: str, ids: Iterable[str]) -> int:
        return sum(self.digests.pop((kind, pid), None) is not None for pid in ids)

    def check_session(self) -> None:
        """A dict never loses its lock."""

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class FakeDeleter:
    """Accepts every delete request (`refuse_after`: the requests after that many get a 400);
    `on_delete` runs on the job thread before each answer."""

    refuse_after: int | None = None
    on_delete: Callable[[], None] = lambda: None
    requests: list[tuple[str, list[str]]] = field(default_factory=list)

    def delete(self, kind: Kind, ids: Sequence[str]) -> Accepted:
        self.on_delete()
        if self.refuse_after is not None and len(self.requests) >= self.refuse_after:
            msg = "Deletion refused: HTTP 400"
            raise DeletionRefusedError(msg, status=400)
        self.requests.append((kind, list(ids)))
        return Accepted(kind, len(ids), len(ids), f"{len(ids)} {kind} scheduled for deletion")
