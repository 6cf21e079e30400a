"""Files the target writes on its own land in the Meltano project's `.meltano/target-userpilot/`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from singer_io import USER_SCHEMA, dead_letters, dry_run_output, record, run_cli, schema, user

from target_userpilot.places import default_path, meltano_plugin_dir
from target_userpilot.settings import CONFIG_SCHEMA, Settings

# Every setting at its schema default, as the SDK hands the config to the target.
BASE_CONFIG: dict[str, Any] = {
    name: prop["default"] for name, prop in CONFIG_SCHEMA["properties"].items() if "default" in prop
}


def test_outside_meltano_the_fallback_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MELTANO_PROJECT_ROOT", raising=False)
    assert meltano_plugin_dir() is None
    assert default_path("x.db", elsewhere=Path("/data/x.db")) == Path("/data/x.db")
    settings = Settings.from_config(BASE_CONFIG)
    assert settings.dead_letter_path == Path("userpilot-dead-letters.ndjson")
    assert settings.dry_run_dir == Path("userpilot-dry-run")


def test_in_a_meltano_project_the_plugin_folder_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MELTANO_PROJECT_ROOT", str(tmp_path))
    plugin_dir = tmp_path / ".meltano" / "target-userpilot"
    assert meltano_plugin_dir() == plugin_dir
    assert default_path("x.db", elsewhere=Path("/data/x.db")) == plugin_dir / "x.db"
    settings = Settings.from_config(BASE_CONFIG)
    assert settings.dead_letter_path == plugin_dir / "dead-letters.ndjson"
    assert settings.dry_run_dir == plugin_dir / "dry-run"


def test_a_configured_path_wins_under_meltano(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MELTANO_PROJECT_ROOT", str(tmp_path))
    config = {**BASE_CONFIG, "dead_letter_path": "dl.ndjson", "dry_run_dir": "out"}
    settings = Settings.from_config(config)
    assert settings.dead_letter_path == Path("dl.ndjson")
    assert settings.dry_run_dir == Path("out")


def test_a_dry_run_under_meltano_keeps_records_out_of_the_project_root(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"api_key": "k", "dry_run": True}))
    messages = [
        schema("users", USER_SCHEMA),
        record("users", user(1)),
        record("users", {"email": "no-id@example.com"}),
    ]
    run = run_cli(
        ["--config", str(config)], messages, tmp_path, {"MELTANO_PROJECT_ROOT": str(tmp_path)}
    )
    assert run.returncode == 0, run.stderr[-3000:]
    plugin_dir = tmp_path / ".meltano" / "target-userpilot"
    # A dry run's letters are beside its files, not in the real dead-letter file.
    (letter,) = dead_letters(dry_run_output(plugin_dir / "dry-run") / "dead-letters.ndjson")
    assert letter["record"] == {"email": "no-id@example.com"}
    assert not (plugin_dir / "dead-letters.ndjson").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".meltano", "config.json"]
