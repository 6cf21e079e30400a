"""singer-sdk's standard target tests, run against the emulator."""

from __future__ import annotations

import atexit
import contextlib
import tempfile
from pathlib import Path

from singer_sdk.testing import get_target_test_class

from target_userpilot.emulator import EmulatorConfig, serve
from target_userpilot.target import TargetUserpilot

# The SDK builds the test class from a fixed config at import time, so the emulator has to be
# up before any fixture could start it; it is stopped when the test process exits.
_stack = contextlib.ExitStack()
_emulator = _stack.enter_context(
    serve(EmulatorConfig(token="core-token", rows_per_minute=float("inf")), port=0)  # noqa: S106
)
_workdir = Path(_stack.enter_context(tempfile.TemporaryDirectory(prefix="target-core-")))
atexit.register(_stack.close)

SAMPLE_CONFIG = {
    "api_key": "core-token",
    "api_url": _emulator.url,
    # The standard suite's streams have other names (test_array_data, TestCamelcase, ...).
    "default_kind": "users",
    "dead_letter_path": str(_workdir / "dead-letters.ndjson"),
    "batch_dir": str(_workdir),
}

TestTargetUserpilot = get_target_test_class(TargetUserpilot, config=SAMPLE_CONFIG)
