"""The settings the run reads: a view the top-level `Settings` satisfies.

The run sits below the settings module (which builds its limits from `batches` and
`deletions`), so it names the settings it reads here rather than importing them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    from target_userpilot.run.batches import BatchLimits
    from target_userpilot.run.deadletters import Policy
    from target_userpilot.run.deletions import DeleteLimit


class RunSettings(Protocol):
    """The settings `Pipeline` reads (read-only)."""

    @property
    def api_url(self) -> str:
        """The Userpilot host the guard's note names when no account is given."""

    @property
    def batch_dir(self) -> Path:
        """Where each run's batch folder goes."""

    @property
    def dead_letter_path(self) -> Path:
        """The dead-letter file of a real run."""

    @property
    def dry_run(self) -> bool:
        """Write the batch files to `dry_run_dir`; upload nothing, emit no STATE."""

    @property
    def dry_run_dir(self) -> Path:
        """Where a dry run's folder goes."""

    @property
    def hard_delete(self) -> bool:
        """Deletion records delete profiles."""

    @property
    def job_retries(self) -> int:
        """Times a job that ends `failed` is resubmitted."""

    @property
    def job_timeout(self) -> float:
        """Longest wait for one job before the run fails."""

    @property
    def limits(self) -> BatchLimits:
        """Rows and bytes per batch."""

    @property
    def max_checkpoint_lag_minutes(self) -> float:
        """Minutes (since its first record) a half-full batch may hold STATE back."""

    @property
    def max_checkpoint_lag_records(self) -> int:
        """Records a half-full batch may hold STATE back before it is sent early."""

    @property
    def max_deletes_per_run(self) -> DeleteLimit:
        """The deletion guard."""

    @property
    def max_invalid_share(self) -> float:
        """The share of invalid records that fails the run."""

    @property
    def max_spool_bytes(self) -> int:
        """Bytes of full batches that may wait in `batch_dir`; past this, reading pauses."""

    @property
    def on_invalid_record(self) -> Policy:
        """What an invalid record does."""

    @property
    def poll_max_interval(self) -> float:
        """Longest wait between two polls of a job."""

    @property
    def termination_grace(self) -> float:
        """On SIGTERM/SIGINT, how long to wait for the job in flight."""
