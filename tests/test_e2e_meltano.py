"""End to end through real Meltano: `meltano run tap-jsonl target-userpilot` into the emulator.

Needs Meltano installed apart from the project (`.ci/e2e-setup` does it and prints the path):

    MELTANO_BIN="$(bash .ci/e2e-setup)" uv run pytest -m e2e

Without MELTANO_BIN the test is skipped, except in CI (`CI=true`), where that is a failure.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.emulator import Emulator, EmulatorConfig, serve
from target_userpilot.singer.envconfig import scalar_type
from target_userpilot.target import TargetUserpilot

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "e2e-meltano-token"  # noqa: S105 - the emulator's throwaway token
STATE_ID = "dev:tap-jsonl-to-target-userpilot"
LOGGER = logging.getLogger(__name__)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def meltano_bin() -> Path:
    value = os.environ.get("MELTANO_BIN", "")
    if not value:
        reason = (
            "MELTANO_BIN is not set: the Meltano end-to-end test needs Meltano installed in its "
            'own venv; run `MELTANO_BIN="$(bash .ci/e2e-setup)" uv run pytest -m e2e`'
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    path = Path(value)
    assert path.is_file(), f"MELTANO_BIN={value} is not a file"
    return path


def work_copy(dest: Path) -> Path:
    """meltano.yml and examples/, with the loader installed from this checkout."""
    dest.mkdir()
    shutil.copytree(ROOT / "examples", dest / "examples")
    text = (ROOT / "meltano.yml").read_text(encoding="utf-8")
    local = "    pip_url: -e .\n"
    assert text.count(local) == 1
    text = text.replace(local, f"    pip_url: -e {shlex.quote(str(ROOT))}\n")
    (dest / "meltano.yml").write_text(text, encoding="utf-8")
    return dest


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


class Meltano:
    def __init__(self, executable: Path, project: Path, env: dict[str, str]) -> None:
        self.executable, self.project, self.env = executable, project, env

    def __call__(self, *args: str, timeout: float = 240) -> str:
        proc = self.run(*args, timeout=timeout)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"meltano {' '.join(args)} exited {proc.returncode}:\n{output}"
        return proc.stdout

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """`meltano args`, whatever its exit status."""
        return subprocess.run(
            [str(self.executable), *args],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


# Every integer and boolean setting, set the way containers and prod environments set them: an
# environment variable, which Meltano reads by the setting's kind and writes into the config.
ENV_SETTINGS = {
    "job_timeout": 600,
    "poll_max_interval": 2,
    "slot_wait_timeout": 60,
    "request_retry_max_time": 30,
    "request_timeout": 30,
    "termination_grace": 5,
    "max_checkpoint_lag_minutes": 10,
    "max_checkpoint_lag_records": 1_000,
    "resend_after_days": 7,
    "max_batch_rows": 5_000,
    "max_batch_bytes": 10_000_000,
    "job_retries": 1,
    "max_spool_bytes": 100_000_000,
    "track_requests_per_minute": 300,
    "send_only_changes": True,
    "dry_run": False,
    "resend_all": False,
    "hard_delete": False,
    "max_invalid_percent": 50,
    "validate_records": True,
    "flattening_enabled": False,
    "flattening_max_depth": 3,
    "flattening_max_key_length": 255,
}


def test_env_settings_cover_every_integer_and_boolean_setting() -> None:
    schema = copy.deepcopy(TargetUserpilot.config_jsonschema)
    TargetUserpilot.append_builtin_config(schema)
    scalars = {name for name, prop in schema["properties"].items() if scalar_type(prop)}
    assert scalars - set(ENV_SETTINGS) == set(), "add the new setting to ENV_SETTINGS"


def meltano_env(api_url: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # The project's own venv (uv run) must not leak into Meltano's plugin venvs.
        if key not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
        and not key.startswith(("MELTANO_", "TARGET_USERPILOT_", "TAP_JSONL_"))
    }
    env.update(
        {
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "MELTANO_CLI_DISABLE_VERSION_CHECK": "true",
            "UV_PYTHON_DOWNLOADS": "never",
            # Meltano's convention: <PLUGIN>_<SETTING>, overriding the `dev` environment's values.
            "TARGET_USERPILOT_API_URL": api_url,
            "TARGET_USERPILOT_API_KEY": TOKEN,
        }
    )
    env.update(
        {
            f"TARGET_USERPILOT_{name.upper()}": str(value).lower()
            for name, value in ENV_SETTINGS.items()
        }
    )
    return env


def test_meltano_run_loads_examples_keeps_state_and_skips_unchanged(tmp_path: Path) -> None:
    executable = meltano_bin()
    project = work_copy(tmp_path / "project")
    expected_users = {u["user_id"]: u for u in read_jsonl(project / "examples/users.jsonl")}
    expected_companies = {
        c["company_id"]: c for c in read_jsonl(project / "examples/companies.jsonl")
    }
    # A user with an empty id: dead-lettered, and the dead letter holds the whole record.
    invalid = {**next(iter(expected_users.values())), "user_id": "", "email": "no-id@example.com"}
    with (project / "examples/users.jsonl").open("a", encoding="utf-8") as users:
        users.write(json.dumps(invalid) + "\n")

    with serve(EmulatorConfig(token=TOKEN, rows_per_minute=60_000), port=0) as emu:
        meltano = Meltano(executable, project, meltano_env(emu.url))
        started = time.monotonic()
        meltano("install")
        installed = time.monotonic()
        # A production install: the loader's venv has no emulator dependencies.
        venv_python = project / ".meltano/loaders/target-userpilot/venv/bin/python"
        probe = subprocess.run(
            [str(venv_python), "-c", "import werkzeug"], capture_output=True, check=False
        )
        assert probe.returncode != 0, "werkzeug is installed without the `emulator` extra"

        # Meltano reads each setting from its environment variable by its kind.
        config = json.loads(meltano("--environment=dev", "config", "print", "target-userpilot"))
        for name, value in ENV_SETTINGS.items():
            assert config[name] == value, (name, config[name])
            assert type(config[name]) is type(value), name
        meltano("--environment=dev", "run", "tap-jsonl", "target-userpilot")
        ran = time.monotonic()
        LOGGER.info("meltano install %.1fs, run %.1fs", installed - started, ran - installed)

        assert sorted(emu.users) == sorted(expected_users)
        assert sorted(emu.companies) == sorted(expected_companies)
        for user_id, record in expected_users.items():
            assert_profile(emu.users[user_id], record, id_key="user_id")
        for company_id, record in expected_companies.items():
            assert_profile(emu.companies[company_id], record, id_key="company_id")
        jobs_after_first_run = len(emu.jobs)
        # Dead letters default to the project's .meltano/ (Meltano's .gitignore covers it), not
        # the project root.
        letters_file = project / ".meltano/target-userpilot/dead-letters.ndjson"
        marker, letter = read_jsonl(letters_file)
        assert letter["record"]["email"] == "no-id@example.com"
        assert set(marker) == {"run", "started_at", "target_version"}
        assert letters_file.stat().st_mode & 0o777 == 0o600, "letters hold personal data"
        assert not list(project.glob("*dead-letters*"))
        assert jobs_after_first_run >= 2, "users and companies are separate jobs"

        # Meltano stored the STATE the target released...
        assert STATE_ID in meltano("--environment=dev", "state", "list").split()
        state = json.loads(meltano("--environment=dev", "state", "get", STATE_ID))
        partitions = state["singer_state"]["bookmarks"]["profiles"]["partitions"]
        files = sorted(Path(p["context"]["_sdc_filename"]).name for p in partitions)
        assert files == ["companies.jsonl", "users.jsonl"]

        # A second run: tap-jsonl 0.3.1 reads every file again (its skip check looks for a
        # bookmark key the SDK does not write), and `send_only_changes`, with its store in the
        # default place inside the Meltano project, keeps the unchanged profiles at home.
        assert (project / ".meltano/target-userpilot/fingerprints.sqlite").is_file()
        meltano("--environment=dev", "run", "tap-jsonl", "target-userpilot")
        assert len(emu.jobs) == jobs_after_first_run
        # Each run's letters follow its own marker line (this tap sends the record twice now).
        lines = read_jsonl(letters_file)
        markers = [n for n, line in enumerate(lines) if "stream" not in line]
        assert markers == [0, 2], lines
        assert lines[0]["run"] != lines[2]["run"]

        dry_run_letters_stay_beside_the_dry_run(meltano, letters_file)
        config_test_checks_the_key_and_sends_nothing(meltano, emu)
        a_stream_dropped_by_a_stream_map_loads_nothing(meltano, emu)

        deletes_follow_the_source(meltano, emu, next(iter(expected_users)))


def dry_run_letters_stay_beside_the_dry_run(meltano: Meltano, letters_file: Path) -> None:
    """A dry run's dead letters go to its dry-run folder; the real file is left as it was."""
    before = letters_file.read_bytes()
    dry = Meltano(
        meltano.executable, meltano.project, {**meltano.env, "TARGET_USERPILOT_DRY_RUN": "true"}
    )
    dry("--environment=dev", "run", "tap-jsonl", "target-userpilot")
    assert letters_file.read_bytes() == before
    (dry_letters,) = (letters_file.parent / "dry-run").glob("*/dead-letters.ndjson")
    letters = [line for line in read_jsonl(dry_letters) if "stream" in line]
    assert letters
    assert {letter["record"]["email"] for letter in letters} == {"no-id@example.com"}
    assert dry_letters.stat().st_mode & 0o777 == 0o600


def config_test_checks_the_key_and_sends_nothing(meltano: Meltano, emu: Emulator) -> None:
    """`meltano config test`: Meltano's test stream is recognised, the key is what is tested.

    Meltano 4.4.1 ends every loader test with its own `ProcessLookupError` and exit status 1
    (README's Troubleshooting says so); its line "Test data was written" is the pass.
    """
    users, jobs = dict(emu.users), len(emu.jobs)
    passed = meltano.run("config", "test", "target-userpilot")
    assert "Test data was written to your target system" in passed.stdout + passed.stderr
    assert "neither" not in passed.stdout + passed.stderr
    assert (emu.users, len(emu.jobs)) == (users, jobs), "the test record is not sent"
    wrong = Meltano(
        meltano.executable, meltano.project, {**meltano.env, "TARGET_USERPILOT_API_KEY": "wrong"}
    )
    failed = wrong.run("--log-level=debug", "config", "test", "target-userpilot")
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "Test data was written" not in output
    assert "Userpilot rejected the API key" in output


def a_stream_dropped_by_a_stream_map_loads_nothing(meltano: Meltano, emu: Emulator) -> None:
    """A stream the target cannot load, dropped by the target's own stream map: the run passes."""
    yml = meltano.project / "meltano.yml"
    text = yml.read_text(encoding="utf-8")
    # The tap now also emits `audit_log`, a copy of the users file, as a tap one cannot
    # deselect streams of would.
    clone = "        profiles: __NULL__\n"
    assert text.count(clone) == 1
    yml.write_text(
        text.replace(
            clone,
            clone + "        audit_log:\n          __source__: profiles\n"
            "          __filter__: _sdc_filename.endswith('users.jsonl')\n",
        ),
        encoding="utf-8",
    )
    users, jobs = dict(emu.users), len(emu.jobs)
    refused = meltano.run("--environment=dev", "run", "tap-jsonl", "target-userpilot")
    assert refused.returncode != 0
    assert '"stream_maps": {"audit_log": "__NULL__"}' in refused.stdout + refused.stderr
    dropping = Meltano(
        meltano.executable,
        meltano.project,
        {**meltano.env, "TARGET_USERPILOT_STREAM_MAPS": '{"audit_log": "__NULL__"}'},
    )
    dropping("--environment=dev", "run", "tap-jsonl", "target-userpilot")
    assert len(emu.users) == len(users), "nothing of `audit_log` became a user"
    assert len(emu.jobs) == jobs, "unchanged profiles: nothing to send"
    yml.write_text(text, encoding="utf-8")


def deletes_follow_the_source(meltano: Meltano, emu: Emulator, gone: str) -> None:
    """A user row deleted at the source is deleted in Userpilot (`hard_delete`)."""
    # A row deleted at the source, as log-based taps (tap-postgres) say it: `_sdc_deleted_at`.
    # With `hard_delete`, the target schedules the user's deletion; Userpilot applies it at
    # 02:00 UTC (the emulator's daily run, triggered here).
    rows = read_jsonl(meltano.project / "examples/users.jsonl")
    for row in rows:
        row["_sdc_deleted_at"] = "2026-11-25T01:02:03Z" if row["user_id"] == gone else None
    (meltano.project / "examples/users.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8"
    )
    # The tap's stream map passes the column on, as a tap-postgres pipeline would.
    yml = meltano.project / "meltano.yml"
    keep = "          signed_up_at: signed_up_at\n"
    yml.write_text(
        yml.read_text(encoding="utf-8").replace(
            keep, keep + "          _sdc_deleted_at: _sdc_deleted_at\n"
        ),
        encoding="utf-8",
    )
    deleting = Meltano(
        meltano.executable, meltano.project, {**meltano.env, "TARGET_USERPILOT_HARD_DELETE": "true"}
    )
    deleting("--environment=dev", "run", "tap-jsonl", "target-userpilot")
    assert [(d.kind, d.id) for d in emu.deletions.pending] == [("users", gone)]
    emu.run_daily_deletions()
    assert gone not in emu.users
    assert emu.users, "only the deleted user is gone"


def assert_profile(profile: dict[str, Any], record: dict[str, Any], *, id_key: str) -> None:
    """A profile carries the record's id and every other property as a metadata value."""
    assert profile[id_key] == record[id_key]
    metadata = profile["metadata"]
    for key, value in record.items():
        if key == id_key:
            continue
        if key == "company_id" and id_key == "user_id":
            assert profile["company_id"] == value
            continue
        assert key in metadata, (key, profile)
        assert str(metadata[key]).lower() == str(value).lower(), (key, metadata[key], value)


def test_sigterm_to_meltano_run_lets_the_job_in_flight_complete(tmp_path: Path) -> None:
    """README "Stopping a run": Meltano forwards the signal and waits for the target."""
    executable = meltano_bin()
    project = work_copy(tmp_path / "project")
    # 600 rows a minute: the users' job runs about 5 s, long enough to stop the run inside it.
    with serve(EmulatorConfig(token=TOKEN, rows_per_minute=600), port=0) as emu:
        env = {**meltano_env(emu.url), "TARGET_USERPILOT_TERMINATION_GRACE": "120"}
        Meltano(executable, project, env)("install")
        with subprocess.Popen(
            [str(executable), "--environment=dev", "run", "tap-jsonl", "target-userpilot"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        ) as proc:
            deadline = time.monotonic() + 120
            while not emu.jobs and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert emu.jobs, "no job was submitted"
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=180)
        assert proc.returncode != 0
        assert "Terminating ExtractLoadBlocks" in output, output[-3000:]
        assert "Received signal 15" in output
        assert all(job.status == "completed" for job in emu.jobs), "the job in flight completed"
        assert "Summary:" in output, "Meltano waited for the target's last lines"


def test_readme_install_adds_the_hub_definition_to_a_fresh_project(tmp_path: Path) -> None:
    """README's Meltano 4 install: `meltano add --from-ref` the Hub file, pip_url replaced."""
    executable = meltano_bin()
    env = meltano_env("http://127.0.0.1:9")  # nothing is loaded here
    Meltano(executable, tmp_path, env)("init", "project", "--no-usage-stats")
    project = tmp_path / "project"
    hub = ROOT / "hub/_data/meltano/loaders/target-userpilot/target-userpilot.yml"
    definition = hub.read_text(encoding="utf-8").replace(
        "\npip_url: target-userpilot\n", f"\npip_url: -e {shlex.quote(str(ROOT))}\n"
    )
    assert definition != hub.read_text(encoding="utf-8")
    definition_file = project / "target-userpilot.yml"
    definition_file.write_text(definition, encoding="utf-8")
    meltano = Meltano(executable, project, env)
    meltano(
        "add", "--plugin-type", "loader", "--from-ref", "target-userpilot.yml", "target-userpilot"
    )

    config = json.loads(meltano("config", "print", "target-userpilot"))
    for name, value in ENV_SETTINGS.items():
        assert config[name] == value, (name, config[name])
    about = json.loads(meltano("invoke", "target-userpilot", "--about", "--format=json"))
    assert not {"add_record_metadata", "load_method", "batch_size_rows"} & set(
        about["settings"]["properties"]
    )
