"""The seeded fault plan: which request fails, which job fails, which response is lost."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from target_userpilot.emulator.config import DELETE_ANSWER_FAULTS

if TYPE_CHECKING:
    from target_userpilot.emulator.config import EmulatorConfig

RETRYABLE_STATUSES: dict[str, int] = {
    "500": 500,
    "502": 502,
    "503": 503,
    "429": 429,
    "429date": 429,
    "html200": 200,
    "empty200": 200,
    "302": 302,
}


class FaultPlan:
    """Decides faults from a `random.Random(seed)`; not thread-safe, the store's lock guards it.

    Request faults are drawn in the order requests arrive, so a given seed and a given request
    sequence always fault the same requests. Job failures and lost submit responses are
    counters: the next N jobs (or successful submits) get them.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        """Start the plan from the configured seed and counters."""
        self._rng = random.Random(config.seed)  # noqa: S311 - test faults, not crypto
        self.fail_jobs_left = config.fail_jobs
        self.drop_submits_left = config.drop_submit_responses

    def reset_counters(self, config: EmulatorConfig, changed: set[str]) -> None:
        """Restart the counters that `set_faults` changed."""
        if "fail_jobs" in changed:
            self.fail_jobs_left = config.fail_jobs
        if "drop_submit_responses" in changed:
            self.drop_submits_left = config.drop_submit_responses

    def request_fault(self, config: EmulatorConfig, *, deletion: bool = False) -> str | None:
        """The fault for the next request (one of `fault_kinds`), or None.

        Only a delete request (`deletion`) draws the answers that are no acceptance.
        """
        if config.fail_rate <= 0 or not config.fault_kinds:
            return None
        if self._rng.random() >= config.fail_rate:
            return None
        kinds = [k for k in config.fault_kinds if deletion or k not in DELETE_ANSWER_FAULTS]
        return self._rng.choice(kinds) if kinds else None

    def retry_after_sent(self, config: EmulatorConfig) -> bool:
        """Whether the 429 being answered carries Retry-After (the real-time API documents none)."""
        share = config.shapes.retry_after_share
        return share >= 1.0 or self._rng.random() < share

    def take_job_failure(self) -> bool:
        """Whether the job being created ends `failed`."""
        if self.fail_jobs_left > 0:
            self.fail_jobs_left -= 1
            return True
        return False

    def take_lost_response(self) -> bool:
        """Whether the response of the submit being answered is dropped."""
        if self.drop_submits_left > 0:
            self.drop_submits_left -= 1
            return True
        return False
