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


def emulator_config(**kwargs: Any) -> EmulatorConfig:
    """An EmulatorConfig in the profile under test; `kwargs` override any field."""
    kwargs.setdefault("token", EMULATOR_TOKEN)
    kwargs.setdefault("profile", PROFILE)
    return EmulatorConfig(**kwargs)
