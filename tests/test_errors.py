"""Every user-facing error ends a run with exit status 1 and one ERROR line, no traceback."""

from __future__ import annotations

import importlib
import json
import logging
import pkgutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from target_userpilot.errors import UserFacingError
from target_userpilot.fingerprints import FingerprintStoreBusyError, FingerprintStoreError
from target_userpilot.paths import PathSettingError
from target_userpilot.run.batches import BatchFileError
from target_userpilot.run.deadletters import DeadLetterFileError, InvalidRecordError
from target_userpilot.run.deletions import DeletionGuardError
from target_userpilot.run.jobs import JobFailedError
from target_userpilot.run.pipeline import Pipeline
from target_userpilot.run.rejections import TooManyInvalidError
from target_userpilot.settings import SettingsError
from target_userpilot.singer.mapguard import StreamMapSchemaError
from target_userpilot.singer.reader import InputError, RecordBeforeSchemaError
from target_userpilot.singer.sinks import MissingKeyError
from target_userpilot.target import StateOutputError, TargetUserpilot
from target_userpilot.wire import (
    AuthError,
    DeletionRefusedError,
    PayloadTooLargeError,
    RejectedUploadError,
    SlotWaitTimeoutError,
    TransientError,
    UnreachableError,
    UserpilotError,
)
from target_userpilot.wire.errors import EventRefusedError

# One of each: a new user-facing error class needs a row here (a test says so).
ONE_OF_EACH: list[UserFacingError] = [
    UserpilotError("`api_url` is not a URL"),
    AuthError("Userpilot refused the API key"),
    PayloadTooLargeError("the batch is too large"),
    RejectedUploadError("Userpilot refused the upload", status=422, body="bad line"),
    DeletionRefusedError("Userpilot refused the deletion", status=404),
    SlotWaitTimeoutError("the job slot stayed busy"),
    TransientError("Userpilot kept answering 503"),
    UnreachableError("the host could not be reached"),
    EventRefusedError(400, "no user_id"),
    JobFailedError("the job failed"),
    InvalidRecordError("record 1 cannot be loaded"),
    MissingKeyError("record 1 has no id"),
    TooManyInvalidError("too many invalid records"),
    DeadLetterFileError("the dead-letter file cannot be written"),
    FingerprintStoreError("the fingerprint store failed"),
    FingerprintStoreBusyError("the fingerprint store is busy"),
    BatchFileError("the batch file cannot be written"),
    InputError(1, "is not valid JSON"),
    RecordBeforeSchemaError(2, "is a RECORD before its stream's SCHEMA"),
    PathSettingError("batch_dir", Path("/batches"), "is not writable"),
    DeletionGuardError("this run would delete too much"),
    StateOutputError("cannot write STATE to standard output"),
    SettingsError("`stream_kinds` names no kind for stream 'audit_log'"),
    StreamMapSchemaError("the stream map for 'users' cannot apply to its SCHEMA"),
]


def subclasses(cls: type[UserFacingError]) -> set[type[UserFacingError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= subclasses(sub)
    return found


def test_every_user_facing_error_class_is_tried() -> None:
    # Every module imported first: a class counts whether or not another test loaded it.
    package = importlib.import_module("target_userpilot")
    for module in pkgutil.walk_packages(package.__path__, "target_userpilot."):
        if not module.name.endswith("__main__"):  # the emulator's starts a server
            importlib.import_module(module.name)
    assert {type(error) for error in ONE_OF_EACH} == subclasses(UserFacingError)


@pytest.mark.parametrize("error", ONE_OF_EACH, ids=lambda error: type(error).__name__)
def test_a_user_facing_error_ends_the_run_with_one_error_line_and_exit_1(
    error: UserFacingError,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "api_key": "k",
                "dry_run": True,
                "dry_run_dir": str(tmp_path / "dry"),
                "batch_dir": str(tmp_path / "batches"),
                "dead_letter_path": str(tmp_path / "dead.ndjson"),
            }
        )
    )
    (tmp_path / "input.jsonl").write_text("")

    def fail(pipeline: Pipeline) -> None:
        raise error

    monkeypatch.setattr(Pipeline, "start", fail)
    with caplog.at_level(logging.INFO):
        result = CliRunner().invoke(
            TargetUserpilot.cli,
            ["--config", str(config), "--input", str(tmp_path / "input.jsonl")],
        )

    # An error that escapes would be the exception itself here (its traceback, on a terminal).
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [f"target-userpilot failed: {error}"]
    assert not errors[0].exc_info
