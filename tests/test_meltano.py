"""Meltano integration files stay in step with the config schema.

Fails when the Hub definition, meltano.yml's loader settings or README's settings table drift
from what `target-userpilot --about` reports.
Fix with `uv run python scripts/generate_hub_definition.py`.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from target_userpilot.target import TargetUserpilot

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import generate_hub_definition as gen  # noqa: E402

REGENERATE = "run `uv run python scripts/generate_hub_definition.py`"

# The Meltano kind each JSON schema type must be described as (independent of the generator).
KIND_OF_TYPE = {
    "string": "string",
    "integer": "integer",
    "boolean": "boolean",
    "object": "object",
    "array": "array",
}
HUB_SCHEMAS = ROOT / "tests/data/meltano-hub-schemas"


def config_schema() -> dict[str, Any]:
    """The target's config schema, with the SDK's built-in settings as `--about` shows them."""
    schema = copy.deepcopy(TargetUserpilot.config_jsonschema)
    TargetUserpilot.append_builtin_config(schema)
    return schema


def expected_kind(prop: dict[str, Any]) -> str:
    if prop.get("secret"):
        return "password"
    if prop.get("enum"):
        return "options"
    types = [t for t in prop["type"] if t != "null"]
    if sorted(types) == ["integer", "string"]:
        return "string"  # a count or a text such as `10%`: Meltano hands both over as text
    assert len(types) == 1, prop
    return KIND_OF_TYPE[types[0]]


def check_settings(settings: list[dict[str, Any]], *, where: str) -> None:
    """Every config setting, described as the schema describes it, and nothing else."""
    schema = config_schema()
    properties: dict[str, dict[str, Any]] = schema["properties"]
    by_name = {setting["name"]: setting for setting in settings}
    assert len(by_name) == len(settings), f"{where}: a setting is listed twice"
    assert sorted(by_name) == sorted(properties), f"{where}: settings differ; {REGENERATE}"
    for name, prop in properties.items():
        setting = by_name[name]
        assert setting["kind"] == expected_kind(prop), f"{where}: kind of {name}; {REGENERATE}"
        assert setting["description"] == prop.get("description", ""), (
            f"{where}: description of {name}; {REGENERATE}"
        )
        if "title" in prop:
            assert setting["label"] == prop["title"], f"{where}: label of {name}; {REGENERATE}"
        assert bool(setting.get("sensitive")) == bool(prop.get("secret")), (
            f"{where}: {name} must be sensitive exactly when the schema marks it secret"
        )
        if "enum" in prop:
            assert [option["value"] for option in setting["options"]] == prop["enum"], name
        if prop.get("default") is not None:
            assert setting["value"] == prop["default"], f"{where}: default of {name}"
        else:
            assert "value" not in setting, f"{where}: {name} has no default"
    api_key = by_name["api_key"]
    assert api_key["kind"] == "password"
    assert api_key["sensitive"] is True


@pytest.fixture(scope="module")
def about() -> dict[str, Any]:
    return gen.about_json()


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --- (a) the Hub definition --------------------------------------------------------------------


def test_hub_definition_file_is_generated(about: dict[str, Any]) -> None:
    assert gen.HUB_PATH.read_text(encoding="utf-8") == gen.render_hub(about), REGENERATE


def test_hub_settings_match_config_schema() -> None:
    hub = load_yaml(gen.HUB_PATH)
    check_settings(hub["settings"], where=str(gen.HUB_PATH.relative_to(ROOT)))


def test_hub_definition_fields(about: dict[str, Any]) -> None:
    hub = load_yaml(gen.HUB_PATH)
    assert gen.HUB_PATH.parent.name == hub["name"] == "target-userpilot"
    assert gen.HUB_PATH.stem == hub["variant"]
    assert hub["namespace"] == "target_userpilot"
    assert hub["executable"] == "target-userpilot"
    assert hub["pip_url"] == "target-userpilot"
    assert hub["domain_url"] == "https://userpilot.com"
    assert hub["repo"].startswith("https://github.com/")
    assert hub["keywords"] == ["api", "meltano_sdk"]
    assert hub["maintenance_status"] == "active"
    assert hub["quality"] == "unknown"
    assert hub["supported_python_versions"] == about["supported_python_versions"]
    assert "3.10" in hub["supported_python_versions"]
    assert hub["settings_group_validation"] == [["api_key"]]
    assert sorted(hub["capabilities"]) == sorted(about["capabilities"])
    assert {"about", "stream-maps", "schema-flattening"} <= set(hub["capabilities"])
    for key in ("label", "description", "logo_url"):
        assert hub[key], key


def hub_validator() -> jsonschema.Draft7Validator:
    """The Hub CI's check: Draft 7, references resolved by each schema file's `$id`."""
    resources = []
    for path in sorted(HUB_SCHEMAS.glob("*/*.schema.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        resource = Resource.from_contents(contents, default_specification=DRAFT7)
        resources.append((contents["$id"], resource))
    registry: Registry[Any] = Registry().with_resources(resources)
    schema = json.loads((HUB_SCHEMAS / "plugin_definitions/loaders.schema.json").read_text())
    return jsonschema.Draft7Validator(schema, registry=registry)


def test_hub_definition_is_valid_against_the_hubs_loaders_schema() -> None:
    errors = [error.message for error in hub_validator().iter_errors(load_yaml(gen.HUB_PATH))]
    assert errors == []


def test_hub_schema_check_catches_what_the_hub_rejects() -> None:
    validator = hub_validator()
    hub = load_yaml(gen.HUB_PATH)
    without_quality = {key: value for key, value in hub.items() if key != "quality"}
    messages = [error.message for error in validator.iter_errors(without_quality)]
    assert messages == ["'quality' is a required property"]
    decimal = copy.deepcopy(hub)
    decimal["settings"][0]["kind"] = "float"
    assert not validator.is_valid(decimal)
    assert not validator.is_valid({**hub, "unknown_key": 1})


def test_hub_logo_and_submission_files() -> None:
    hub = load_yaml(gen.HUB_PATH)
    assert hub["logo_url"] == "/assets/logos/loaders/userpilot.svg"
    logo = ET.parse(gen.LOGO).getroot()  # noqa: S314 - our own file
    assert logo.tag == "{http://www.w3.org/2000/svg}svg"
    hub_dir = ROOT / "hub"
    assert gen.LOGO.relative_to(hub_dir).as_posix() == "static" + hub["logo_url"]
    maintainers = load_yaml(hub_dir / "_data/maintainers.yml")
    entry = maintainers[hub["variant"]]
    assert entry["name"] == hub["variant"]
    assert hub["repo"].startswith(entry["url"] + "/")
    defaults = load_yaml(hub_dir / "_data/default_variants.yml")
    assert defaults == {"loaders": {hub["name"]: hub["variant"]}}


def test_generator_maps_json_types_to_meltano_kinds() -> None:
    assert gen.setting_kind({"type": ["string"], "secret": True}) == "password"
    assert gen.setting_kind({"type": ["string", "null"], "enum": ["a", "b"]}) == "options"
    with pytest.raises(ValueError, match="integer"):
        gen.setting_kind({"type": ["number", "null"]})
    assert gen.setting_kind({"type": ["integer", "null"]}) == "integer"
    assert gen.setting_kind({"type": ["boolean", "null"]}) == "boolean"
    assert gen.setting_kind({"type": ["array", "null"], "items": {}}) == "array"
    assert gen.setting_kind({"type": ["object", "null"]}) == "object"
    assert gen.setting_kind({"type": ["string"], "format": "date-time"}) == "date_iso8601"
    assert gen.setting_kind({"oneOf": [{"type": ["string"]}, {"type": "array"}]}) == "array"


def test_check_mode_passes_on_the_committed_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert gen.main(["--check"]) == 0, capsys.readouterr().err


def test_check_mode_fails_on_drift(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stale = tmp_path / "target-userpilot.yml"
    stale.write_text(gen.HUB_PATH.read_text(encoding="utf-8").replace("kind: integer", "kind: x"))
    monkeypatch.setattr(gen, "HUB_PATH", stale)
    assert gen.main(["--check"]) == 1


def test_a_number_setting_stops_the_generator_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    about = gen.about_json()
    about["settings"]["properties"]["job_timeout"]["type"] = ["number", "null"]
    monkeypatch.setattr(gen, "about_json", lambda: about)
    assert gen.main(["--check"]) == 1
    assert "setting `job_timeout`" in capsys.readouterr().err


def test_no_setting_is_a_meltano_decimal(about: dict[str, Any]) -> None:
    # Meltano's `decimal` kind fails on values from environment variables (issue 14).
    kinds = {setting["name"]: setting["kind"] for setting in gen.meltano_settings(about)}
    assert "decimal" not in kinds.values()
    for name in ("job_timeout", "termination_grace", "max_checkpoint_lag_minutes"):
        assert kinds[name] == "integer", name


def test_sdk_builtins_that_mean_nothing_here_are_not_offered(about: dict[str, Any]) -> None:
    hidden = {"add_record_metadata", "load_method", "batch_size_rows"}
    assert not hidden & set(about["settings"]["properties"])
    assert not hidden & {s["name"] for s in load_yaml(gen.HUB_PATH)["settings"]}
    assert not [name for name in hidden if name in readme_table()]
    # The SDK's useful built-ins stay.
    assert {"validate_records", "stream_maps", "flattening_enabled"} <= set(
        about["settings"]["properties"]
    )


def test_an_unsupported_builtin_set_anyway_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = {
        "api_key": "k",
        "dry_run": True,
        "dry_run_dir": str(tmp_path / "dry"),
        "batch_dir": str(tmp_path / "batches"),
        "batch_size_rows": 100,
        "load_method": "overwrite",
    }
    TargetUserpilot(config=config)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "Setting `batch_size_rows` does nothing in target-userpilot." in warnings
    assert "Setting `load_method` does nothing in target-userpilot." in warnings
    assert not [w for w in warnings if "add_record_metadata" in w]


# --- (b) the README settings table -------------------------------------------------------------


def readme_table() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = text.index(gen.README_START), text.index(gen.README_END)
    return text[start + len(gen.README_START) : end].strip("\n") + "\n"


def test_readme_settings_table_matches_about_markdown() -> None:
    assert readme_table() == gen.settings_table(gen.about_output("markdown")), REGENERATE


def test_readme_settings_table_lists_every_setting() -> None:
    rows = [line for line in readme_table().splitlines() if line.startswith("| ")][1:]
    names = {row.split("|")[1].strip() for row in rows}
    assert set(config_schema()["properties"]) <= names


# --- (c) meltano.yml ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def meltano_yml() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(gen.MELTANO_YML)
    return data


def plugin(meltano_yml: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    matches = [p for p in meltano_yml["plugins"][kind] if p["name"] == name]
    assert len(matches) == 1, f"{kind} {name} in meltano.yml"
    found: dict[str, Any] = matches[0]
    return found


def environment(meltano_yml: dict[str, Any], name: str) -> dict[str, Any]:
    env = next(e for e in meltano_yml["environments"] if e["name"] == name)
    loader = next(p for p in env["config"]["plugins"]["loaders"] if p["name"] == "target-userpilot")
    config: dict[str, Any] = loader["config"]
    return config


def test_meltano_yml_loader_lists_every_setting(meltano_yml: dict[str, Any]) -> None:
    loader = plugin(meltano_yml, "loaders", "target-userpilot")
    check_settings(loader["settings"], where="meltano.yml")


def test_meltano_yml_settings_block_is_generated(about: dict[str, Any]) -> None:
    text = gen.MELTANO_YML.read_text(encoding="utf-8")
    assert gen.render_meltano_yml(text, about) == text, REGENERATE


def test_meltano_yml_loader_definition(meltano_yml: dict[str, Any], about: dict[str, Any]) -> None:
    loader = plugin(meltano_yml, "loaders", "target-userpilot")
    assert loader["namespace"] == "target_userpilot"
    assert loader["pip_url"] == "-e ."
    assert loader["executable"] == "target-userpilot"
    assert sorted(loader["capabilities"]) == sorted(about["capabilities"])
    assert loader["settings_group_validation"] == [["api_key"]]
    assert "api_key" not in loader.get("config", {}), "the key belongs in the environment"


def test_meltano_yml_environments(meltano_yml: dict[str, Any]) -> None:
    assert meltano_yml["default_environment"] == "dev"
    assert meltano_yml["send_anonymous_usage_stats"] is False
    dev = environment(meltano_yml, "dev")
    assert dev["api_url"] == "http://127.0.0.1:8080"
    assert dev["api_key"] == "dev-token"
    prod = environment(meltano_yml, "prod")
    assert prod["api_url"] == "$TARGET_USERPILOT_API_URL"
    assert prod["api_key"] == "$TARGET_USERPILOT_API_KEY"


def test_meltano_yml_tap_streams_load_as_users_and_companies(meltano_yml: dict[str, Any]) -> None:
    tap = plugin(meltano_yml, "extractors", "tap-jsonl")
    assert tap["pip_url"].startswith("tap-jsonl==")
    assert tap["config"]["path"] == "examples/*.jsonl"
    loader = plugin(meltano_yml, "loaders", "target-userpilot")
    stream_kinds = loader["config"].get("stream_kinds", {})
    maps = tap["config"]["stream_maps"]
    aliases = {name for name, rule in maps.items() if isinstance(rule, dict)}
    kinds = {stream_kinds.get(alias, alias) for alias in aliases}
    assert kinds == {"users", "companies"}
    assert maps[tap["config"]["stream_name"]] == "__NULL__", "the unsplit stream must not load"
    for alias in aliases:
        assert (ROOT / "examples" / f"{alias}.jsonl").is_file()
