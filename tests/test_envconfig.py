"""Settings from TARGET_USERPILOT_* variables (`--config ENV`), as containers set them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from singer_io import USER_SCHEMA, dry_run_output, record, run_cli, schema, state, user
from singer_sdk.exceptions import ConfigValidationError

from target_userpilot.singer.envconfig import env_config, parse_scalar, scalar_type
from target_userpilot.target import TargetUserpilot

PREFIX = "TARGET_USERPILOT_"
# Every integer setting of the target, as a whole number a container would set.
INTEGER_SETTINGS = {
    "max_checkpoint_lag_minutes": "5",
    "job_timeout": "100",
    "poll_max_interval": "2",
    "slot_wait_timeout": "30",
    "request_retry_max_time": "20",
    "request_timeout": "15",
    "termination_grace": "3",
    "resend_after_days": "7",
    "max_batch_rows": "500",
    "job_retries": "1",
}


def full_schema() -> dict[str, Any]:
    schema = copy.deepcopy(TargetUserpilot.config_jsonschema)
    TargetUserpilot.append_builtin_config(schema)
    return schema


def set_env(monkeypatch: pytest.MonkeyPatch, **settings: str) -> None:
    for name, value in settings.items():
        monkeypatch.setenv(PREFIX + name.upper(), value)


def test_scalar_types_come_from_the_schema() -> None:
    assert scalar_type({"type": ["integer", "null"]}) == "integer"
    assert scalar_type({"type": "number"}) == "number"
    assert scalar_type({"type": ["boolean", "null"]}) == "boolean"
    assert scalar_type({"type": ["string", "null"]}) is None
    assert scalar_type({"type": ["integer", "string"]}) is None


@pytest.mark.parametrize(
    ("text", "json_type", "value"),
    [
        ("12", "integer", 12),
        (" 12 ", "integer", 12),
        ("-3", "integer", -3),
        ("5.0", "integer", 5),
        ("-5.", "integer", -5),
        ("12", "number", 12),
        ("2.5", "number", 2.5),
        ("TRUE", "boolean", True),
        ("yes", "boolean", True),
        ("0", "boolean", False),
        ("off", "boolean", False),
    ],
)
def test_parse_scalar(text: str, json_type: str, value: object) -> None:
    parsed = parse_scalar(text, json_type)
    assert parsed == value
    assert type(parsed) is type(value)


@pytest.mark.parametrize(
    ("text", "json_type"),
    [
        ("12.5", "integer"),
        ("5.01", "integer"),
        ("1e3", "integer"),
        ("", "integer"),
        ("ten", "number"),
        ("nan", "number"),
        ("inf", "number"),
        ("maybe", "boolean"),
        ("", "boolean"),
    ],
)
def test_parse_scalar_refuses(text: str, json_type: str) -> None:
    with pytest.raises(ValueError, match=r".*"):
        parse_scalar(text, json_type)


def test_env_config_types_every_setting_by_its_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        **INTEGER_SETTINGS,
        api_key="k",
        dry_run="true",
        send_only_changes="1",
        validate_records="false",
        exclude_properties='["email"]',
        stream_kinds='{"contacts": "users"}',
    )
    config = env_config(full_schema(), PREFIX)
    for name, text in INTEGER_SETTINGS.items():
        assert config[name] == int(text), name
    assert config["dry_run"] is True
    assert config["send_only_changes"] is True
    assert config["validate_records"] is False
    assert config["api_key"] == "k"
    assert config["exclude_properties"] == ["email"]
    assert config["stream_kinds"] == {"contacts": "users"}


def test_env_config_names_every_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, job_timeout="12.5", dry_run="ture")
    with pytest.raises(ConfigValidationError) as err:
        env_config(full_schema(), PREFIX)
    assert sorted(err.value.errors) == [
        "TARGET_USERPILOT_DRY_RUN='ture': `dry_run` takes true or false.",
        "TARGET_USERPILOT_JOB_TIMEOUT='12.5': `job_timeout` takes a whole number, e.g. 60.",
    ]


def test_the_cli_takes_every_setting_from_env_vars(tmp_path: Path) -> None:
    env = {PREFIX + name.upper(): value for name, value in INTEGER_SETTINGS.items()}
    env |= {
        "TARGET_USERPILOT_API_KEY": "k",
        "TARGET_USERPILOT_DRY_RUN": "true",
        "TARGET_USERPILOT_DRY_RUN_DIR": str(tmp_path / "dry"),
        "TARGET_USERPILOT_BATCH_DIR": str(tmp_path / "batches"),
    }
    messages = [schema("users", USER_SCHEMA), record("users", user(1)), state({"n": 1})]
    run = run_cli(["--config", "ENV"], messages, tmp_path, env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "would send 1 user" in run.stderr
    (batch,) = dry_run_output(tmp_path / "dry").iterdir()
    assert json.loads(batch.read_text())["user_id"] == "1"


def test_a_bad_env_value_is_one_clear_error(tmp_path: Path) -> None:
    env = {"TARGET_USERPILOT_API_KEY": "k", "TARGET_USERPILOT_REQUEST_TIMEOUT": "soon"}
    run = run_cli(["--config", "ENV"], [], tmp_path, env)
    assert run.returncode == 1
    assert "TARGET_USERPILOT_REQUEST_TIMEOUT='soon': `request_timeout` takes a whole number" in (
        run.stderr
    )
    assert "Traceback" not in run.stderr
