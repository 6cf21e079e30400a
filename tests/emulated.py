"""The emulator as the tests run it: its profile comes from USERPILOT_EMULATOR_PROFILE.

`reference` (default) is Userpilot's API reference; `legacy` the bulk pages' shapes. CI runs
the wire, target and end-to-end tests under both.
"""

from __future__ import annotations

import os
from typing import Any

from target_userpilot.emulator import EmulatorConfig

EMULATOR_TOKEN = "test-token"  # noqa: S105 - the emulator's
PROFILE = os.environ.get("USERPILOT_EMULATOR_PROFILE", "reference")
TEST_PHASE_SECONDS = 0.05  # `validating` and `pending_refresh` under the reference profile


def emulator_config(**kwargs: Any) -> EmulatorConfig:
    """An EmulatorConfig in the profile under test; `kwargs` override any field."""
    kwargs.setdefault("token", EMULATOR_TOKEN)
    kwargs.setdefault("profile", PROFILE)
    if kwargs["profile"] == "reference":
        # Real time, but short: every job of every test pays it twice.
        kwargs.setdefault("validating_seconds", TEST_PHASE_SECONDS)
        kwargs.setdefault("pending_refresh_seconds", TEST_PHASE_SECONDS)
    return EmulatorConfig(**kwargs)
