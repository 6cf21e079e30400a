"""singer-sdk's standard target tests, run against the emulator."""

from __future__ import annotations

import atexit
import contextlib
import tempfile
from pathlib import Path

from singer_io import dead_letters
from singer_sdk.testing import get_target_test_class, target_test_streams
from singer_sdk.testing.runners import TargetTestRunner

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
STANDARD_STREAMS = Path(str(target_test_streams.__path__[0]))

SAMPLE_CONFIG: dict[str, object] = {
    "api_key": "core-token",
    "api_url": _emulator.url,
    # The standard suite's streams have other names (test_array_data, TestCamelcase, ...).
    "default_kind": "users",
    "dead_letter_path": str(_workdir / "dead-letters.ndjson"),
    "batch_dir": str(_workdir),
    # Several standard streams have no usable id at all: every record is a dead letter, which
    # `max_invalid_percent` would rightly stop; the suite checks the SDK side, so it is off here.
    "max_invalid_percent": 100,
}

_StandardTests = get_target_test_class(TargetUserpilot, config=SAMPLE_CONFIG)


class TestTargetUserpilot(_StandardTests):  # type: ignore[misc,valid-type]
    """The standard suite, with one test changed to what this target promises instead."""

    def test_target_record_missing_key_property(self, runner: TargetTestRunner) -> None:
        # The SDK stops the run here (MissingKeyPropertiesError); this target dead-letters the
        # record and goes on, so one odd record never stops a long sync.
        runner.input_filepath = STANDARD_STREAMS / "record_missing_key_property.singer"
        runner.sync_all()
        letters = dead_letters(Path(str(SAMPLE_CONFIG["dead_letter_path"])))
        mine = [x for x in letters if x["stream"] == "test_record_missing_key_property"]
        assert mine
        assert mine[-1]["record"] == {"metric": 8214}
        assert "key properties" in mine[-1]["reason"]


# `on_invalid_record: fail` with the suite unmodified: a record lacking its key property stops
# the run with a subclass of the SDK's own `MissingKeyPropertiesError`. Two streams of the suite
# have no top-level id at all (the SDK would load them; Userpilot cannot): a stream map gives
# them one, as a user would.
FAIL_CONFIG: dict[str, object] = {
    **SAMPLE_CONFIG,
    "on_invalid_record": "fail",
    "stream_maps": {
        stream: {"id": "str(object_store['id'])"}
        for stream in ("test_object_schema_with_properties", "test_object_schema_no_properties")
    },
}


class TestTargetUserpilotFailPolicy(get_target_test_class(TargetUserpilot, config=FAIL_CONFIG)):  # type: ignore[misc]
    """The standard suite as the SDK ships it, under `on_invalid_record: fail`."""
