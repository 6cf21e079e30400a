"""What `pip install target-userpilot` gets: the licence, and no emulator dependencies.

The `package` tests read the sdist and wheel that `uv build` wrote to dist/ (.ci/run and the
`package` CI job build them first); elsewhere they are skipped, except in CI, where that fails.
"""

from __future__ import annotations

import email.parser
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from singer_io import USER_SCHEMA, record, schema, user

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
LICENSE = ROOT / "LICENSE"


def built(pattern: str) -> Path:
    found = sorted(DIST.glob(pattern), key=lambda path: path.stat().st_mtime)
    if not found:
        reason = f"no {pattern} in dist/: run `uv build` first"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found[-1]


def wheel_metadata(wheel: Path) -> tuple[email.message.Message, list[str]]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(metadata).decode()), names


def test_license_is_the_full_apache_2_text() -> None:
    text = LICENSE.read_text(encoding="utf-8")
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "9. Accepting Warranty or Additional Liability." in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "APPENDIX: How to apply the Apache License to your work." in text


@pytest.mark.package
def test_the_wheel_carries_the_license_and_needs_werkzeug_only_for_the_emulator() -> None:
    metadata, names = wheel_metadata(built("target_userpilot-*.whl"))
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    (license_name,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    with zipfile.ZipFile(built("target_userpilot-*.whl")) as archive:
        assert archive.read(license_name).decode() == LICENSE.read_text(encoding="utf-8")
    requires = [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]
    plain = {r.name for r in requires if r.marker is None or r.marker.evaluate({"extra": ""})}
    emulator = {r.name for r in requires if r.marker and r.marker.evaluate({"extra": "emulator"})}
    assert "werkzeug" not in plain
    assert emulator - plain == {"werkzeug"}
    assert {"singer-sdk", "requests"} <= plain
    assert "emulator" in (metadata.get_all("Provides-Extra") or [])


@pytest.mark.package
def test_the_sdist_carries_the_license() -> None:
    sdist = built("target_userpilot-*.tar.gz")
    with tarfile.open(sdist) as archive:
        top_level = [m for m in archive.getmembers() if m.name.count("/") == 1]
        (member,) = [m for m in top_level if m.name.endswith("/LICENSE")]
        extracted = archive.extractfile(member)
        assert extracted is not None
        assert extracted.read().decode() == LICENSE.read_text(encoding="utf-8")


# Runs the target in a Python where `import werkzeug` fails, as in a production install.
WITHOUT_WERKZEUG = """
import runpy, sys
sys.modules["werkzeug"] = None
sys.argv = ["target-userpilot", *sys.argv[1:]]
runpy.run_module("target_userpilot.target", run_name="__main__")
"""


def test_the_target_runs_without_the_emulator_extra(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"api_key": "k", "dry_run": True, "dry_run_dir": "dry"}))
    messages = [schema("users", USER_SCHEMA), record("users", user(1))]
    run = subprocess.run(
        [sys.executable, "-c", WITHOUT_WERKZEUG, "--config", str(config)],
        input="".join(json.dumps(m) + "\n" for m in messages),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "would send 1 user" in run.stderr
    assert len(list((tmp_path / "dry").iterdir())) == 1


def test_the_emulator_without_its_extra_names_the_extra() -> None:
    code = 'import sys; sys.modules["werkzeug"] = None; import target_userpilot.emulator'
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 1
    assert "pip install 'target-userpilot[emulator]'" in run.stderr.splitlines()[-1]


@pytest.mark.parametrize("command", ["emulator", "demo"])
def test_the_extras_commands_without_it_say_so_in_one_line(command: str) -> None:
    code = (
        'import sys; sys.modules["werkzeug"] = None; from target_userpilot import extras; '
        f"sys.exit(extras.{command}())"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1, run.stderr
    assert "pip install 'target-userpilot[emulator]'" in run.stderr
